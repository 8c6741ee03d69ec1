//! Strata in one process.
//!
//! [`run`] is embedded mode — `strata run` / `build` / `ingest` on a laptop: the coordinator,
//! one in-process worker and one in-process ingest agent talking over the in-memory queue,
//! the distributed mode's code with nothing installed. [`InProcessCluster`] is the whole
//! distributed mode in one process — a coordinator service, N workers with their Flight
//! servers and an ingest agent over one queue — so that tests can drive a cluster without
//! starting processes.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use strata_coordinator::{Coordinator, RunError, RunEvent, RunRecord, RunRequest};
use strata_core::queue::{JobQueue, MemoryQueue};
use strata_core::settings::Settings;
use strata_worker::{RunningWorker, WorkerError};

/// Runs `request` in this process: the coordinator, a worker with `request.threads` slots and
/// an ingest agent with `ingest_agent.slots` over the in-memory queue, under the engine
/// settings of `settings`.
///
/// # Errors
/// Returns an error when the in-memory queue fails (it does not, short of a bug).
pub async fn run(
    settings: &Settings,
    request: &RunRequest,
    run_id: &str,
    on_event: impl FnMut(RunEvent),
) -> Result<RunRecord, RunError> {
    let queue = Arc::new(MemoryQueue::new());
    let task_queue = settings.broker.task_queue.clone();
    let config = strata_worker::process::embedded_config(settings, "embedded-0", request.threads);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(strata_worker::serve(queue.clone(), config, stopped.clone()));
    let mut agent = strata_ingest_agent::agent::agent_loop(settings);
    agent.worker_id = String::from("embedded-ingest-0");
    let ingest_queue = agent.task_queue.clone();
    let agent = tokio::spawn(strata_worker::serve_with(
        queue.clone(),
        agent,
        Arc::new(strata_ingest_agent::IngestRunner::default()),
        stopped,
    ));
    let record = Coordinator::new(queue.clone())
        .with_task_queue(&task_queue)
        .with_ingest_queue(&ingest_queue)
        .run(request, run_id, on_event)
        .await;
    let _ = stop.send(true);
    queue.close();
    let _ = worker.await;
    let _ = agent.await;
    record
}

/// Why an in-process cluster cannot start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A worker failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The coordinator failed.
    #[error(transparent)]
    Coordinator(#[from] strata_coordinator::CoordinatorError),
    /// The ingest agent failed.
    #[error(transparent)]
    Agent(#[from] strata_ingest_agent::AgentError),
}

/// A coordinator service, workers and an ingest agent in this process, over one queue.
pub struct InProcessCluster<Q: JobQueue> {
    queue: Arc<Q>,
    settings: Settings,
    coordinator: strata_coordinator::RunningCoordinator<Q>,
    workers: Vec<RunningWorker<Q>>,
    agent: strata_ingest_agent::RunningAgent<Q>,
}

impl InProcessCluster<MemoryQueue> {
    /// Starts a coordinator and `workers` workers over a new in-memory queue.
    ///
    /// # Errors
    /// Returns an error when a role cannot start (see [`InProcessCluster::start_on`]).
    pub async fn start(settings: &Settings, workers: usize) -> Result<Self, ClusterError> {
        InProcessCluster::start_on(Arc::new(MemoryQueue::new()), settings, workers).await
    }
}

impl<Q: JobQueue> InProcessCluster<Q> {
    /// Starts a coordinator, `workers` workers and one ingest agent over `queue`, each from
    /// `settings` (workers are named `<worker.id or "worker">-<n>`; listen addresses should
    /// use port 0).
    ///
    /// # Errors
    /// Returns an error when a role cannot start: no cluster secret, an address in use, an
    /// unusable data folder.
    pub async fn start_on(
        queue: Arc<Q>,
        settings: &Settings,
        workers: usize,
    ) -> Result<Self, ClusterError> {
        let mut running = Vec::new();
        for index in 0..workers {
            let mut own = settings.clone();
            let prefix = settings.worker.id.as_deref().unwrap_or("worker");
            own.worker.id = Some(format!("{prefix}-{index}"));
            running.push(strata_worker::start_on(queue.clone(), &own).await?);
        }
        let agent = strata_ingest_agent::start_on(queue.clone(), settings).await?;
        let coordinator =
            strata_coordinator::start_on(queue.clone(), settings, &BTreeMap::new()).await?;
        Ok(InProcessCluster {
            queue,
            settings: settings.clone(),
            coordinator,
            workers: running,
            agent,
        })
    }

    /// The coordinator's gRPC address.
    pub fn address(&self) -> SocketAddr {
        self.coordinator.address()
    }

    /// The workers' ids.
    pub fn worker_ids(&self) -> Vec<String> {
        self.workers
            .iter()
            .map(|worker| worker.id().to_string())
            .collect()
    }

    /// A coordinator (not the service) over the cluster's queue, calling the workers'
    /// Flight servers with the cluster secret — to run a request directly.
    pub fn coordinator(&self) -> Coordinator<Q> {
        let secret =
            strata_engine::exchange::ClusterSecret::from_settings(&self.settings.cluster).ok();
        Coordinator::new(self.queue.clone())
            .with_task_queue(&self.settings.broker.task_queue)
            .with_ingest_queue(&self.settings.broker.ingest_queue)
            .with_cluster_secret(secret)
    }

    /// Stops the coordinator, then drains every worker and the ingest agent.
    ///
    /// # Errors
    /// Returns the first role's error.
    pub async fn stop(self) -> Result<(), ClusterError> {
        self.coordinator.stop().await?;
        for worker in self.workers {
            worker.stop().await?;
        }
        self.agent.stop().await?;
        Ok(())
    }
}
