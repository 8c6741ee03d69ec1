//! The worker role: everything a worker process is, started from one [`Settings`] value —
//! the task loop over the broker, the Flight server for shuffle outputs (which admits only
//! callers with the cluster secret), the shuffle folder — and stopped by draining: running
//! tasks finish, no new ones start, the Flight server stops, the shuffle folder goes.
//!
//! `strata worker` is [`start`] and a signal handler; tests start whole workers in-process
//! with [`start_on`] over any [`JobQueue`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strata_amqp::AmqpQueue;
use strata_core::queue::JobQueue;
use strata_core::settings::Settings;
use strata_engine::EngineConfig;
use strata_engine::exchange::{ClusterSecret, SecretError};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::execution::{ExecutionConfig, ShuffleService};
use crate::metrics::WorkerMetrics;
use crate::service::{TaskLoop, WorkerConfig, serve};
use crate::shuffle::{ShuffleFlightService, ShuffleStore};
use strata_telemetry::http::RunningEndpoint;

/// Why a worker cannot start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// No usable cluster secret: the Flight server would be open to anyone.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The broker cannot be reached, or consuming failed.
    #[error("the broker: {0}")]
    Queue(#[from] strata_core::queue::QueueError),
    /// The Flight server cannot listen.
    #[error("cannot listen for Flight on {address}: {source}")]
    Listen {
        /// The address asked for.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The task loop ended abnormally.
    #[error("the worker's task loop failed: {0}")]
    Crashed(String),
    /// The metrics endpoint's address cannot be bound, or its token file read.
    #[error("the metrics endpoint: {0}")]
    Metrics(String),
}

/// A running worker.
pub struct RunningWorker<Q: JobQueue> {
    id: String,
    slots: usize,
    task_queue: String,
    memory_limit_mib: usize,
    address: String,
    queue: Arc<Q>,
    stop: watch::Sender<bool>,
    tasks: JoinHandle<Result<(), strata_core::queue::QueueError>>,
    flight_stop: oneshot::Sender<()>,
    flight: JoinHandle<Result<(), tonic::transport::Error>>,
    shuffle_dir: PathBuf,
    /// The metrics and health endpoint, when one is configured.
    endpoint: Option<RunningEndpoint>,
}

/// Starts the endpoint of `settings` serving `metrics`, when it has an address (the worker's
/// and the ingest agent's).
///
/// # Errors
/// When the address cannot be bound or the token file read.
pub async fn metrics_endpoint(
    settings: &strata_core::settings::MetricsSettings,
    metrics: &WorkerMetrics,
) -> Result<Option<RunningEndpoint>, WorkerError> {
    let Some(listen) = &settings.listen else {
        return Ok(None);
    };
    let failed = |err: &dyn std::fmt::Display| WorkerError::Metrics(format!("{listen}: {err}"));
    let token = settings.token().map_err(|err| failed(&err))?;
    let token = token.map(|token| token.expose().to_string());
    strata_telemetry::http::start(listen, metrics.registry.clone(), token)
        .await
        .map(Some)
        .map_err(|err| failed(&err))
}

/// Starts a worker on the broker its settings name.
///
/// # Errors
/// Returns an error when the broker cannot be reached, the Flight address cannot be bound, or
/// no cluster secret is configured.
pub async fn start(settings: &Settings) -> Result<RunningWorker<AmqpQueue>, WorkerError> {
    let queue = Arc::new(AmqpQueue::connect(&settings.broker.url).await?);
    start_on(queue, settings).await
}

/// Starts a worker taking tasks from `queue`.
///
/// # Errors
/// Returns an error when the Flight address cannot be bound or no cluster secret is
/// configured.
pub async fn start_on<Q: JobQueue>(
    queue: Arc<Q>,
    settings: &Settings,
) -> Result<RunningWorker<Q>, WorkerError> {
    let secret = ClusterSecret::from_settings(&settings.cluster)?;
    let worker = &settings.worker;
    let listen_error = |source| WorkerError::Listen {
        address: worker.flight_listen.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&worker.flight_listen)
        .await
        .map_err(listen_error)?;
    let port = listener.local_addr().map_err(listen_error)?.port();
    let address = match &worker.flight_advertise {
        Some(advertise) if advertise.contains(':') => advertise.clone(),
        Some(host) => format!("{host}:{port}"),
        None => format!("{}:{port}", host_name()),
    };
    let shuffle_dir = worker
        .shuffle_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("strata-shuffle-{}-{port}", std::process::id()));
    let store = Arc::new(ShuffleStore::new(&shuffle_dir));
    let mut config = worker_config(settings, Some(secret.clone()));
    let metrics = WorkerMetrics::new(config.tasks.slots);
    let endpoint = metrics_endpoint(&settings.metrics, &metrics).await?;
    config.tasks.metrics = Some(metrics);
    config.execution.shuffle = Some(ShuffleService {
        store: store.clone(),
        address: address.clone(),
    });
    let (flight_stop, flight_stopped) = oneshot::channel::<()>();
    let flight = tokio::spawn(ShuffleFlightService::new(store, secret).serve(
        listener,
        async move {
            let _ = flight_stopped.await;
        },
    ));
    let (stop, stopped) = watch::channel(false);
    let tasks = tokio::spawn(serve(queue.clone(), config.clone(), stopped));
    if let Some(endpoint) = &endpoint {
        endpoint.readiness.set(true);
    }
    Ok(RunningWorker {
        id: config.tasks.worker_id,
        slots: config.tasks.slots,
        task_queue: config.tasks.task_queue,
        memory_limit_mib: config.execution.engine.memory_limit_bytes >> 20,
        address,
        queue,
        stop,
        tasks,
        flight_stop,
        flight,
        shuffle_dir,
        endpoint,
    })
}

impl<Q: JobQueue> RunningWorker<Q> {
    /// The worker's id in run records and logs.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The address its Flight server advertises.
    pub fn flight_address(&self) -> &str {
        &self.address
    }

    /// A line saying what the worker does, for its log.
    pub fn describe(&self) -> String {
        let endpoint = self.endpoint.as_ref().map_or_else(String::new, |endpoint| {
            format!(", metrics and health at http://{}", endpoint.address)
        });
        format!(
            "worker {}: {} slots, {} MiB per task, taking tasks from {}, shuffle outputs served at {}{endpoint}",
            self.id, self.slots, self.memory_limit_mib, self.task_queue, self.address
        )
    }

    /// Where the metrics and health endpoint listens, when there is one.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.as_ref().map(|endpoint| endpoint.address)
    }

    /// Drains the worker: running tasks finish and report, no new task starts; the map
    /// outputs it holds are served until their runs remove them (at most [`DRAIN_LINGER`]);
    /// then the Flight server stops and the shuffle folder is deleted.
    ///
    /// # Errors
    /// Returns an error when the task loop had failed.
    pub async fn stop(self) -> Result<(), WorkerError> {
        // Draining: not ready for new work, while the tasks under way finish.
        if let Some(endpoint) = &self.endpoint {
            endpoint.readiness.set(false);
        }
        let _ = self.stop.send(true);
        self.finish().await
    }

    /// Waits until the task loop ends by itself (its queue closed), then cleans up like
    /// [`RunningWorker::stop`].
    ///
    /// # Errors
    /// Returns an error when the task loop failed.
    pub async fn finish(self) -> Result<(), WorkerError> {
        let outcome = match self.tasks.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(WorkerError::Queue(err)),
            Err(err) => Err(WorkerError::Crashed(err.to_string())),
        };
        linger_while_outputs_held(&self.shuffle_dir).await;
        let _ = self.flight_stop.send(());
        let _ = self.flight.await;
        if let Some(endpoint) = self.endpoint {
            endpoint.stop().await;
        }
        let _ = std::fs::remove_dir_all(&self.shuffle_dir);
        drop(self.queue);
        outcome
    }
}

/// How long a drained worker goes on serving the map outputs it still holds, at most.
const DRAIN_LINGER: Duration = Duration::from_secs(600);

/// Waits, at most [`DRAIN_LINGER`], until the shuffle store holds no map output: a drained
/// worker's outputs are read by reduce tasks still to come, and leaving with them would make
/// the run compute them again. Each run's coordinator removes its outputs when the run ends.
async fn linger_while_outputs_held(shuffle_dir: &std::path::Path) {
    let holds_outputs =
        || std::fs::read_dir(shuffle_dir).is_ok_and(|mut entries| entries.next().is_some());
    let deadline = tokio::time::Instant::now() + DRAIN_LINGER;
    if holds_outputs() {
        tracing::info!("drained: serving the map outputs still held until their runs end");
    }
    while holds_outputs() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The settings of an in-process worker without a Flight server (embedded mode, where one
/// task already uses every core and nothing is shuffled).
pub fn embedded_config(settings: &Settings, id: &str, slots: usize) -> WorkerConfig {
    let mut settings = settings.clone();
    settings.worker.slots = slots;
    let mut config = worker_config(&settings, None);
    config.tasks.worker_id = id.to_string();
    config
}

/// The task loop's settings from the process settings.
pub(crate) fn worker_config(settings: &Settings, secret: Option<ClusterSecret>) -> WorkerConfig {
    let worker = &settings.worker;
    let slots = worker.slots.max(1);
    WorkerConfig {
        tasks: TaskLoop {
            worker_id: worker.id.clone().unwrap_or_else(default_process_id),
            slots,
            task_queue: settings.broker.task_queue.clone(),
            heartbeat_interval: Duration::from_millis(worker.heartbeat_interval_ms.max(10)),
            metrics: None,
        },
        execution: ExecutionConfig {
            engine: EngineConfig::new(&settings.engine, slots),
            target_file_size: settings.engine.target_file_size_mib.max(1) << 20,
            shuffle: None,
            fetch_timeout: Duration::from_secs(worker.fetch_timeout_secs.max(1)),
            cluster_secret: secret,
        },
    }
}

/// A process's id when its settings name none: the host name and the process id.
pub fn default_process_id() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// This machine's name: `HOSTNAME`, else `/etc/hostname`, else `localhost`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_string())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| String::from("localhost"))
}
