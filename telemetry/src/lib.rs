//! Telemetry of every Strata process: log lines (text or JSON, carrying the trace and span
//! ids), OpenTelemetry traces exported over OTLP when the standard `OTEL_*` variables (or the
//! settings) ask for them, and the W3C trace context that parents a worker's spans to the
//! coordinator's across processes.
//!
//! A process calls [`init`] once with its [`TelemetrySettings`] and keeps the returned
//! [`Telemetry`] until it exits; [`Telemetry::shutdown`] flushes the spans still queued. When
//! no endpoint is configured nothing is exported and spans cost only the `tracing` machinery.

mod context;
mod export;
pub mod http;
mod pipeline;
mod settings;

pub use context::{
    TraceParent, current_traceparent, end_now, link_to, set_remote_parent, span_traceparent,
};
pub use export::{DroppedSpans, QueueSettings, dropped_spans};
pub use pipeline::{Telemetry, TelemetryError, init};
pub use settings::{LogFormat, OtlpProtocol, OtlpSettings, TelemetrySettings};
