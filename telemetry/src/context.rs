//! W3C trace context (`traceparent`) between processes: the coordinator hands each task its
//! span's context in the task message, a reducer hands a mapper its span's in the Flight
//! call's metadata, and the receiving side parents its spans to it.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A parsed `traceparent` (`00-<trace id>-<span id>-<flags>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace, 32 hex digits.
    pub trace_id: TraceId,
    /// The parent span, 16 hex digits.
    pub span_id: SpanId,
    /// Whether the parent was sampled.
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` header value; `None` when it is not one.
    pub fn parse(text: &str) -> Option<TraceParent> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then_some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The header value.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    fn span_context(&self) -> SpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            self.trace_id,
            self.span_id,
            flags,
            true,
            TraceState::default(),
        )
    }
}

/// The `traceparent` of `span`, when it is recorded by an exporting pipeline.
pub fn span_traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        TraceParent {
            trace_id: span_context.trace_id(),
            span_id: span_context.span_id(),
            sampled: span_context.is_sampled(),
        }
        .header()
    })
}

/// The `traceparent` of the current span, when it is recorded.
pub fn current_traceparent() -> Option<String> {
    span_traceparent(&tracing::Span::current())
}

/// Makes `span` the child of the remote span `traceparent` names (a span of another process,
/// or a run's trace resumed after a restart). Returns false when `traceparent` is not one, or
/// the span has already started.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) -> bool {
    let Some(parent) = TraceParent::parse(traceparent) else {
        return false;
    };
    let context = opentelemetry::Context::new().with_remote_span_context(parent.span_context());
    span.set_parent(context).is_ok()
}

/// Makes now the end of `span`. tracing-opentelemetry ends a span when it was last exited, so a
/// span that lives across many awaits or stream items (a node, a task, a Flight stream) is
/// entered whenever its work moves on, and once at its end.
pub fn end_now(span: &tracing::Span) {
    span.in_scope(|| ());
}

/// Links `span` to the remote span `traceparent` names (a span it follows from, in another
/// trace or process). Returns false when `traceparent` is not one.
pub fn link_to(span: &tracing::Span, traceparent: &str) -> bool {
    match TraceParent::parse(traceparent) {
        Some(parent) => {
            span.add_link(parent.span_context());
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_refused() {
        let text = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let parent = TraceParent::parse(text).unwrap();
        assert!(parent.sampled);
        assert_eq!(parent.header(), text);
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01",
            "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}
