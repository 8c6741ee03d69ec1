//! Installing the process's subscriber: log lines to standard error, and spans to an OTLP
//! collector when one is configured.

use std::fmt;
use std::io::IsTerminal;

use opentelemetry::KeyValue;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter as _};
use tracing::Subscriber;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::export::CountingBatchProcessor;
use crate::settings::{LogFormat, OtlpProtocol, OtlpSettings, TelemetrySettings};

/// What can go wrong installing telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `STRATA_LOG` is not a filter.
    #[error("STRATA_LOG is not a valid filter: {0}")]
    Filter(String),
    /// The exporter could not be built (an endpoint that is not a URL, say).
    #[error("cannot export traces to {endpoint}: {message}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// A subscriber is already installed in this process.
    #[error("telemetry is already installed in this process")]
    AlreadyInstalled,
    /// The exporter's runtime could not start.
    #[error("cannot start the exporter's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// The process's telemetry; keep it until the process ends. Dropping it, or
/// [`Telemetry::shutdown`], flushes the queued spans (bounded by the export timeout).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Runs the exporter's gRPC or HTTP client, apart from the roles' own runtimes.
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.exporting())
            .finish()
    }
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("warning: traces not all exported at shutdown: {err}");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the process-wide subscriber: log lines filtered by `settings.log_filter` in
/// `settings.log_format`, each carrying its trace and span ids when traced, and an
/// OpenTelemetry layer exporting every span when `settings.otlp` is set.
///
/// # Errors
/// A bad filter, an exporter that cannot be built, or a subscriber already installed.
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    let filter = |text: &str| {
        EnvFilter::try_new(text).map_err(|err| TelemetryError::Filter(err.to_string()))
    };
    let logs = (!settings.log_filter.is_empty())
        .then(|| {
            let format = TraceIds {
                json: settings.log_format == LogFormat::Json,
                text: Format::default().with_ansi(std::io::stderr().is_terminal()),
            };
            Ok::<_, TelemetryError>(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .event_format(format)
                    .with_filter(filter(&settings.log_filter)?),
            )
        })
        .transpose()?;
    let (provider, runtime) = match &settings.otlp {
        Some(otlp) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("strata-otlp")
                .enable_all()
                .build()?;
            let provider = runtime.block_on(async { provider(settings, otlp) })?;
            (Some(provider), Some(runtime))
        }
        None => (None, None),
    };
    // Spans are exported whatever the log filter says; `strata` targets at debug and above,
    // as the spans of dependencies are not part of Strata's trace.
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("strata"))
            .with_error_records_to_exceptions(true)
            .with_filter(EnvFilter::new("warn,strata=debug,strata_worker=debug,strata_coordinator=debug,strata_engine=debug,strata_embedded=debug,strata_storage=debug"))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry { provider, runtime })
}

/// The tracer provider exporting to `otlp`; built inside the exporter's runtime.
fn provider(
    settings: &TelemetrySettings,
    otlp: &OtlpSettings,
) -> Result<SdkTracerProvider, TelemetryError> {
    let failed = |err: &dyn fmt::Display| TelemetryError::Exporter {
        endpoint: otlp.endpoint.clone(),
        message: err.to_string(),
    };
    let exporter = match otlp.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&otlp.endpoint)
            .with_timeout(otlp.timeout)
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(http_traces_url(&otlp.endpoint))
            .with_timeout(otlp.timeout)
            .with_headers(Default::default())
            .build(),
    }
    .map_err(|err| failed(&err))?;
    let resource = Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attributes(
            otlp.resource_attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .build();
    let mut exporter = exporter;
    // The processor below does not pass the provider's resource on: the exporter gets it here.
    exporter.set_resource(&resource);
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(otlp.sample_ratio)));
    let builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler)
        // Both transports export on the telemetry runtime: tonic's channel was built there and
        // hyper needs a runtime wherever it is called.
        .with_span_processor(CountingBatchProcessor::start(
            exporter,
            otlp.queue,
            otlp.timeout,
            &tokio::runtime::Handle::current(),
        ));
    Ok(builder.build())
}

/// The traces URL of an OTLP/HTTP endpoint: the signal path is appended to the base, as the
/// specification says for `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn http_traces_url(endpoint: &str) -> String {
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_string()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    }
}

/// The log line format: the usual text, or one JSON object per line; both with the trace
/// and span ids of the current span when it is traced.
struct TraceIds {
    json: bool,
    text: Format,
}

impl<S, N> FormatEvent<S, N> for TraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let ids = trace_ids(ctx);
        if self.json {
            return write_json(
                &mut writer,
                event,
                ids,
                ctx.lookup_current().map(|s| s.name()),
            );
        }
        if let Some((trace_id, span_id)) = &ids {
            write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
        }
        self.text.format_event(ctx, writer, event)
    }
}

/// The trace and span ids of the innermost span around the event that is traced (spans of
/// dependencies are not exported, so the event's own span may not be).
fn trace_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    ctx.event_scope()?.find_map(|span| {
        let context = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
        let otel_span = context.span();
        let span_context = otel_span.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
    })
}

fn write_json(
    writer: &mut Writer<'_>,
    event: &tracing::Event<'_>,
    ids: Option<(String, String)>,
    span: Option<&str>,
) -> fmt::Result {
    let metadata = event.metadata();
    let mut fields = JsonFields(serde_json::Map::new());
    event.record(&mut fields);
    let mut line = serde_json::Map::new();
    line.insert(
        "timestamp".into(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs_f64())
            .unwrap_or_default()
            .into(),
    );
    line.insert("level".into(), metadata.level().as_str().into());
    line.insert("target".into(), metadata.target().into());
    if let Some(span) = span {
        line.insert("span".into(), span.into());
    }
    if let Some((trace_id, span_id)) = ids {
        line.insert("trace_id".into(), trace_id.into());
        line.insert("span_id".into(), span_id.into());
    }
    line.extend(fields.0);
    writeln!(writer, "{}", serde_json::Value::Object(line))
}

/// An event's fields as JSON values.
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}
