//! The HTTP endpoint of the coordinator and of each worker: `/metrics` (Prometheus text
//! exposition, behind a bearer token) and the Kubernetes probes `/healthz` (the process is up)
//! and `/readyz` (it takes work: a draining worker is not ready).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};

/// Whether the process takes work (`/readyz`).
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Marks the process ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the endpoint serves.
#[derive(Clone)]
pub struct Endpoint {
    /// The process's metrics.
    pub registry: Registry,
    /// Its readiness.
    pub readiness: Arc<Readiness>,
    /// The bearer token `/metrics` requires; without one `/metrics` refuses every scrape
    /// (the probes need none: they tell nothing but up and ready).
    pub token: Option<String>,
}

/// Serves `endpoint` on `listener` until `shutdown` completes.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoint: Endpoint,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Arc::new(endpoint));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// An endpoint serving in the background.
pub struct RunningEndpoint {
    /// The address it listens on.
    pub address: std::net::SocketAddr,
    /// Its readiness, for the process to set.
    pub readiness: Arc<Readiness>,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningEndpoint {
    /// Stops serving.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.served.await;
    }
}

/// Binds `listen` and serves `registry` there (not ready until the process says so).
///
/// # Errors
/// When the address cannot be bound.
pub async fn start(
    listen: &str,
    registry: Registry,
    token: Option<String>,
) -> std::io::Result<RunningEndpoint> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let readiness = Arc::new(Readiness::default());
    let endpoint = Endpoint {
        registry,
        readiness: readiness.clone(),
        token,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve(listener, endpoint, async move {
        let _ = stopped.await;
    }));
    Ok(RunningEndpoint {
        address,
        readiness,
        stop,
        served,
    })
}

async fn ready(State(endpoint): State<Arc<Endpoint>>) -> Response {
    if endpoint.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting or draining\n",
        )
            .into_response()
    }
}

async fn metrics(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap) -> Response {
    let Some(token) = &endpoint.token else {
        return (
            StatusCode::UNAUTHORIZED,
            "no metrics token is configured (metrics.token or metrics.token_file)\n",
        )
            .into_response();
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !offered.is_some_and(|offered| constant_time_eq(offered.as_bytes(), token.as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response();
    }
    let mut families = endpoint.registry.gather();
    families.extend(dropped_spans_families());
    let mut body = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&families, &mut body) {
        return (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            TextEncoder::new().format_type().to_string(),
        )],
        body,
    )
        .into_response()
}

/// `strata_spans_dropped_total{reason}`: the spans this process ended but did not deliver
/// to the collector (see [`crate::dropped_spans`]); served by every role's endpoint.
fn dropped_spans_families() -> Vec<prometheus::proto::MetricFamily> {
    let Ok(counter) = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "strata_spans_dropped_total",
            "Spans ended but not delivered to the OTLP collector, by reason (queue_full, export_failed).",
        ),
        &["reason"],
    ) else {
        return Vec::new();
    };
    let dropped = crate::dropped_spans();
    counter
        .with_label_values(&["queue_full"])
        .inc_by(dropped.queue_full);
    counter
        .with_label_values(&["export_failed"])
        .inc_by(dropped.export_failed);
    prometheus::core::Collector::collect(&counter)
}

/// Compares two secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metrics_need_the_token_and_readiness_follows_the_process() {
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("strata_test_total", "a test counter").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc_by(3);
        let readiness = Arc::new(Readiness::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let endpoint = Endpoint {
            registry,
            readiness: readiness.clone(),
            token: Some(String::from("s3cret")),
        };
        tokio::spawn(serve(listener, endpoint, std::future::pending()));
        let get = |path: &str, token: Option<&str>| {
            let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
            if let Some(token) = token {
                request.push_str(&format!("Authorization: Bearer {token}\r\n"));
            }
            request.push_str("\r\n");
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).await.unwrap();
                response
            }
        };
        assert!(get("/healthz", None).await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz", None).await.starts_with("HTTP/1.1 503"));
        readiness.set(true);
        assert!(get("/readyz", None).await.starts_with("HTTP/1.1 200"));
        assert!(get("/metrics", None).await.starts_with("HTTP/1.1 401"));
        assert!(
            get("/metrics", Some("wrong"))
                .await
                .starts_with("HTTP/1.1 401")
        );
        let scraped = get("/metrics", Some("s3cret")).await;
        assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
        assert!(scraped.contains("strata_test_total 3"), "{scraped}");
        assert!(
            scraped.contains("strata_spans_dropped_total{reason=\"queue_full\"}"),
            "{scraped}"
        );
    }
}
