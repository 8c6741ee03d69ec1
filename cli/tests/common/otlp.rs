//! An OTLP trace receiver for the tests: a tonic server implementing the collector's
//! `TraceService` from `opentelemetry-proto`, keeping every span it is sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

/// A span as received, with the service that sent it.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

impl Received {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// An attribute's value as text (numbers and booleans as they print).
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|attribute| attribute.key == key)
            .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
            .map(|value| match value {
                Value::StringValue(text) => text.clone(),
                Value::IntValue(number) => number.to_string(),
                Value::DoubleValue(number) => number.to_string(),
                Value::BoolValue(flag) => flag.to_string(),
                other => format!("{other:?}"),
            })
    }

    pub fn event_names(&self) -> Vec<String> {
        self.span
            .events
            .iter()
            .map(|event| event.name.clone())
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(
                    |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(name) => Some(name.clone()),
                        _ => None,
                    },
                )
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A receiver listening on a free local port.
pub struct Receiver {
    pub endpoint: String,
    collector: Collector,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        Receiver {
            endpoint,
            collector,
        }
    }

    /// A receiver of OTLP/HTTP (`POST /v1/traces`, protobuf) on a free local port; its
    /// endpoint is the base URL the exporter appends `/v1/traces` to.
    pub async fn start_http() -> Receiver {
        use prost::Message as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collector = Collector::default();
        let kept = collector.clone();
        let router = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(request) => {
                            let _ = kept.export(tonic::Request::new(request)).await;
                            (axum::http::StatusCode::OK, Vec::new())
                        }
                        Err(err) => (
                            axum::http::StatusCode::BAD_REQUEST,
                            err.to_string().into_bytes(),
                        ),
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver {
            endpoint,
            collector,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.collector.spans.lock().unwrap().clone()
    }

    /// The spans of trace `trace_id`, by span id.
    pub fn trace(&self, trace_id: &str) -> HashMap<String, Received> {
        self.spans()
            .into_iter()
            .filter(|span| span.trace_id() == trace_id)
            .map(|span| (span.span_id(), span))
            .collect()
    }
}

/// Whether `span`'s chain of parents within `trace` reaches the span `ancestor`.
pub fn descends_from(trace: &HashMap<String, Received>, span: &Received, ancestor: &str) -> bool {
    let mut current = span;
    for _ in 0..64 {
        let parent = current.parent_id();
        if parent == ancestor {
            return true;
        }
        match trace.get(&parent) {
            Some(next) => current = next,
            None => return false,
        }
    }
    false
}
