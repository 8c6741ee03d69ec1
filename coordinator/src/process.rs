//! The coordinator role: the gRPC `PipelineService` (with health and reflection, bearer
//! tokens, optional TLS), the run store under the data folder, submitted runs executed on the
//! broker's workers, unfinished runs resumed — started from one [`Settings`] value and stopped
//! gracefully.
//!
//! `strata coordinator` is [`start`] and a signal handler; tests start whole coordinators
//! in-process with [`start_on`] over any [`JobQueue`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use strata_amqp::AmqpQueue;
use strata_core::queue::JobQueue;
use strata_core::settings::{RunDefaults, Settings};
use strata_engine::exchange::ClusterSecret;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::metrics::CoordinatorMetrics;
use crate::prepare::RunSpec;
use crate::service::{Pipeline, ServiceConfig, TlsFiles, Tokens, serve};
use crate::store::RedbStore;
use strata_telemetry::http::RunningEndpoint;

/// Why a coordinator cannot start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The broker cannot be reached.
    #[error("the broker: {0}")]
    Queue(#[from] strata_core::queue::QueueError),
    /// The run store cannot be opened or read.
    #[error("the run store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// No usable cluster secret: the workers' Flight servers would refuse the coordinator.
    #[error(transparent)]
    Secret(#[from] strata_engine::exchange::SecretError),
    /// A setting is unusable (a token file, TLS files).
    #[error("{0}")]
    Settings(String),
    /// The API cannot listen.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address asked for.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Server(String),
    /// The metrics endpoint's address cannot be bound, or its token file read.
    #[error("the metrics endpoint: {0}")]
    Metrics(String),
}

/// A running coordinator.
pub struct RunningCoordinator<Q: JobQueue> {
    address: SocketAddr,
    tls: bool,
    task_queue: String,
    data_dir: std::path::PathBuf,
    resumed: Vec<String>,
    queue: Arc<Q>,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<Result<(), String>>,
    /// The metrics and health endpoint with its queue-depth poller, when configured.
    endpoint: Option<(RunningEndpoint, JoinHandle<()>)>,
}

/// How often the depths of the task and ingest queues are read for `strata_task_queue_depth`.
const QUEUE_DEPTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the endpoint of `settings.metrics`, when it has an address, and a task that keeps
/// the task queue's depth in `metrics`.
async fn metrics_endpoint<Q: JobQueue>(
    settings: &Settings,
    metrics: &CoordinatorMetrics,
    queue: Arc<Q>,
) -> Result<Option<(RunningEndpoint, JoinHandle<()>)>, CoordinatorError> {
    let Some(listen) = &settings.metrics.listen else {
        return Ok(None);
    };
    let failed =
        |err: &dyn std::fmt::Display| CoordinatorError::Metrics(format!("{listen}: {err}"));
    let token = settings.metrics.token().map_err(|err| failed(&err))?;
    let token = token.map(|token| token.expose().to_string());
    let endpoint = strata_telemetry::http::start(listen, metrics.registry.clone(), token)
        .await
        .map_err(|err| failed(&err))?;
    let metrics = metrics.clone();
    let queues = [
        settings.broker.task_queue.clone(),
        settings.broker.ingest_queue.clone(),
    ];
    let poller = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(QUEUE_DEPTH_INTERVAL);
        loop {
            ticks.tick().await;
            for name in &queues {
                match queue.depth(name).await {
                    Ok(depth) => metrics.queue_depth(name, depth),
                    Err(err) => {
                        tracing::debug!(queue = %name, error = %err, "cannot read a queue's depth")
                    }
                }
            }
        }
    });
    Ok(Some((endpoint, poller)))
}

/// Starts a coordinator on the broker its settings name. `env` is the process environment:
/// only the variables `coordinator.env_allowlist` names reach submitted projects.
///
/// # Errors
/// Returns an error when the broker, the run store, the listen address or a setting fails.
pub async fn start(
    settings: &Settings,
    env: &BTreeMap<String, String>,
) -> Result<RunningCoordinator<AmqpQueue>, CoordinatorError> {
    let queue = Arc::new(AmqpQueue::connect(&settings.broker.url).await?);
    start_on(queue, settings, env).await
}

/// Starts a coordinator publishing tasks on `queue`.
///
/// # Errors
/// Returns an error when the run store, the listen address or a setting fails.
pub async fn start_on<Q: JobQueue>(
    queue: Arc<Q>,
    settings: &Settings,
    env: &BTreeMap<String, String>,
) -> Result<RunningCoordinator<Q>, CoordinatorError> {
    let coordinator = &settings.coordinator;
    let mut config = service_config(settings, env)?;
    let metrics = CoordinatorMetrics::new();
    let endpoint = metrics_endpoint(settings, &metrics, queue.clone()).await?;
    config.metrics = Some(metrics);
    let tokens = tokens(settings)?;
    let tls = match (&coordinator.tls_cert, &coordinator.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        _ => {
            return Err(CoordinatorError::Settings(String::from(
                "TLS needs both coordinator.tls_cert and coordinator.tls_key",
            )));
        }
    };
    std::fs::create_dir_all(&coordinator.data_dir).map_err(|err| {
        CoordinatorError::Settings(format!(
            "cannot create the data folder {}: {err}",
            coordinator.data_dir.display()
        ))
    })?;
    let store = Arc::new(RedbStore::open(&coordinator.data_dir.join("runs.redb"))?);
    let pipeline = Pipeline::new(queue.clone(), store, config);
    let resumed = pipeline.resume_unfinished()?;
    let listen_error = |source| CoordinatorError::Listen {
        address: coordinator.listen.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&coordinator.listen)
        .await
        .map_err(listen_error)?;
    let address = listener.local_addr().map_err(listen_error)?;
    let (shutdown, stopped) = oneshot::channel::<()>();
    let has_tls = tls.is_some();
    let server = tokio::spawn(async move {
        serve(pipeline, tokens, tls, listener, async move {
            let _ = stopped.await;
        })
        .await
        .map_err(|err| err.to_string())
    });
    if let Some((endpoint, _)) = &endpoint {
        endpoint.readiness.set(true);
    }
    Ok(RunningCoordinator {
        endpoint,
        address,
        tls: has_tls,
        task_queue: settings.broker.task_queue.clone(),
        data_dir: coordinator.data_dir.clone(),
        resumed,
        queue,
        shutdown,
        server,
    })
}

impl<Q: JobQueue> RunningCoordinator<Q> {
    /// Where the metrics and health endpoint listens, when there is one.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.endpoint.as_ref().map(|(endpoint, _)| endpoint.address)
    }

    /// The address the API listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A line saying what the coordinator serves, for its log.
    pub fn describe(&self) -> String {
        format!(
            "coordinator: serving strata.v1.PipelineService on {}{}, tasks to {}, state in {}{}",
            self.address,
            if self.tls { " (TLS)" } else { "" },
            self.task_queue,
            self.data_dir.display(),
            if self.resumed.is_empty() {
                String::new()
            } else {
                format!(", resuming {}", self.resumed.join(", "))
            }
        ) + &self.metrics_address().map_or_else(String::new, |address| {
            format!(", metrics and health at http://{address}")
        })
    }

    /// Stops serving and waits for the server to end.
    ///
    /// # Errors
    /// Returns the server's error, when it failed.
    pub async fn stop(self) -> Result<(), CoordinatorError> {
        if let Some((endpoint, poller)) = self.endpoint {
            endpoint.readiness.set(false);
            poller.abort();
            endpoint.stop().await;
        }
        let _ = self.shutdown.send(());
        let outcome = match self.server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(CoordinatorError::Server(message)),
            Err(err) => Err(CoordinatorError::Server(err.to_string())),
        };
        drop(self.queue);
        outcome
    }
}

/// Runs one request as the coordinator of the cluster on the broker `settings` names (`strata
/// build --cluster`): this process plans, dispatches and commits; `strata worker` processes
/// anywhere do the work.
///
/// # Errors
/// Returns an error when the broker cannot be reached or fails, or the cluster secret is
/// unusable.
pub async fn run_on_broker(
    settings: &Settings,
    request: &crate::RunRequest,
    run_id: &str,
    on_event: impl FnMut(crate::RunEvent),
) -> Result<crate::RunRecord, CoordinatorError> {
    let secret = ClusterSecret::from_settings(&settings.cluster)?;
    let queue = Arc::new(AmqpQueue::connect(&settings.broker.url).await?);
    let record = crate::Coordinator::new(queue.clone())
        .with_task_queue(&settings.broker.task_queue)
        .with_ingest_queue(&settings.broker.ingest_queue)
        .with_cluster_secret(Some(secret))
        .run(request, run_id, on_event)
        .await;
    queue.close().await;
    record.map_err(|crate::RunError::Queue(err)| CoordinatorError::Queue(err))
}

/// The service's settings: the run defaults, and of the process environment only the
/// allowlisted variables.
fn service_config(
    settings: &Settings,
    env: &BTreeMap<String, String>,
) -> Result<ServiceConfig, CoordinatorError> {
    let coordinator = &settings.coordinator;
    let allowed = env
        .iter()
        .filter(|(name, _)| coordinator.env_allowlist.contains(name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let secret = ClusterSecret::from_settings(&settings.cluster)?;
    Ok(ServiceConfig {
        data_dir: coordinator.data_dir.clone(),
        task_queue: settings.broker.task_queue.clone(),
        ingest_queue: settings.broker.ingest_queue.clone(),
        max_concurrent_runs: coordinator.max_concurrent_runs.max(1),
        defaults: run_defaults(&coordinator.runs),
        env: allowed,
        cluster_secret: Some(secret),
        metrics: None,
    })
}

/// A submitted run's settings before its submission overrides them.
fn run_defaults(runs: &RunDefaults) -> RunSpec {
    RunSpec {
        warehouse: runs.warehouse.clone(),
        threads: runs.threads.max(1),
        shuffle_partitions: runs.shuffle_partitions,
        task_timeout_secs: runs.task_timeout_secs,
        retries: runs.retries,
        ..RunSpec::new(std::path::PathBuf::new())
    }
}

/// The bearer tokens: inline ones and those of the token file.
fn tokens(settings: &Settings) -> Result<Tokens, CoordinatorError> {
    let coordinator = &settings.coordinator;
    let mut tokens: Vec<String> = coordinator
        .tokens
        .iter()
        .map(|token| token.expose().to_string())
        .collect();
    if let Some(path) = &coordinator.token_file {
        tokens.extend(crate::service::read_tokens(path).map_err(|err| {
            CoordinatorError::Settings(format!(
                "cannot read the token file {}: {err}",
                path.display()
            ))
        })?);
    }
    Ok(Tokens::new(tokens))
}
