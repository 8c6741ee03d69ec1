//! The ingest agent role: everything a `strata ingest-agent` process is, started from one
//! [`Settings`] value — the task loop over the ingest queue (a worker's loop, with
//! [`IngestRunner`] in place of the engine) and the metrics and health endpoint — and stopped
//! by draining: no new landing starts, and those under way stop after the chunk they are
//! committing, reporting a transient failure so that another agent lands the rest.
//!
//! `strata ingest-agent` is [`start`] and a signal handler; embedded runs and tests start
//! agents in-process with [`start_on`] over any [`JobQueue`].

use std::sync::Arc;
use std::time::Duration;

use strata_amqp::AmqpQueue;
use strata_core::queue::{JobQueue, QueueError};
use strata_core::settings::Settings;
use strata_telemetry::http::RunningEndpoint;
use strata_worker::metrics::WorkerMetrics;
use strata_worker::{TaskLoop, WorkerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::run::Draining;
use crate::task::IngestRunner;

/// Why an ingest agent cannot start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The broker cannot be reached, or consuming failed.
    #[error("the broker: {0}")]
    Queue(#[from] QueueError),
    /// The task loop ended abnormally.
    #[error("the ingest agent's task loop failed: {0}")]
    Crashed(String),
    /// The metrics endpoint's address cannot be bound, or its token file read (the
    /// worker's endpoint, which the agent shares).
    #[error(transparent)]
    Metrics(#[from] WorkerError),
}

/// A running ingest agent.
pub struct RunningAgent<Q: JobQueue> {
    /// Its id, slots and queue (for [`RunningAgent::describe`]).
    config: TaskLoop,
    queue: Arc<Q>,
    stop: watch::Sender<bool>,
    tasks: JoinHandle<Result<(), QueueError>>,
    endpoint: Option<RunningEndpoint>,
}

/// Starts an ingest agent on the broker its settings name.
///
/// # Errors
/// Returns an error when the broker cannot be reached or the metrics endpoint cannot start.
pub async fn start(settings: &Settings) -> Result<RunningAgent<AmqpQueue>, AgentError> {
    let queue = Arc::new(AmqpQueue::connect(&settings.broker.url).await?);
    start_on(queue, settings).await
}

/// Starts an ingest agent taking ingest tasks from `queue`.
///
/// # Errors
/// Returns an error when the metrics endpoint cannot start.
pub async fn start_on<Q: JobQueue>(
    queue: Arc<Q>,
    settings: &Settings,
) -> Result<RunningAgent<Q>, AgentError> {
    let mut tasks = agent_loop(settings);
    let metrics = WorkerMetrics::new(tasks.slots);
    let endpoint = strata_worker::process::metrics_endpoint(&settings.metrics, &metrics).await?;
    let config = tasks.clone();
    tasks.metrics = Some(metrics);
    let (stop, stopped) = watch::channel(false);
    let runner = IngestRunner {
        draining: Draining::on(stopped.clone()),
    };
    let handle = tokio::spawn(strata_worker::serve_with(
        queue.clone(),
        tasks,
        Arc::new(runner),
        stopped,
    ));
    if let Some(endpoint) = &endpoint {
        endpoint.readiness.set(true);
    }
    Ok(RunningAgent {
        config,
        queue,
        stop,
        tasks: handle,
        endpoint,
    })
}

/// The task loop of an agent from the process settings.
pub fn agent_loop(settings: &Settings) -> TaskLoop {
    let agent = &settings.ingest_agent;
    TaskLoop {
        worker_id: agent
            .id
            .clone()
            .unwrap_or_else(strata_worker::process::default_process_id),
        slots: agent.slots.max(1),
        task_queue: settings.broker.ingest_queue.clone(),
        heartbeat_interval: Duration::from_millis(agent.heartbeat_interval_ms.max(10)),
        metrics: None,
    }
}

impl<Q: JobQueue> RunningAgent<Q> {
    /// The agent's id in run records and logs.
    pub fn id(&self) -> &str {
        &self.config.worker_id
    }

    /// Where the metrics and health endpoint listens, when there is one.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.as_ref().map(|endpoint| endpoint.address)
    }

    /// A line saying what the agent does, for its log.
    pub fn describe(&self) -> String {
        let endpoint = self.endpoint.as_ref().map_or_else(String::new, |endpoint| {
            format!(", metrics and health at http://{}", endpoint.address)
        });
        format!(
            "ingest agent {}: {} slots, taking ingest tasks from {}{endpoint}",
            self.config.worker_id, self.config.slots, self.config.task_queue
        )
    }

    /// Drains the agent: no new landing starts; those under way stop after their current chunk
    /// and report, so that the coordinator hands the rest to another agent.
    ///
    /// # Errors
    /// Returns an error when the task loop had failed.
    pub async fn stop(self) -> Result<(), AgentError> {
        // Draining: not ready for new work while the landings under way finish.
        if let Some(endpoint) = &self.endpoint {
            endpoint.readiness.set(false);
        }
        let _ = self.stop.send(true);
        self.finish().await
    }

    /// Waits until the task loop ends by itself (its queue closed), then stops the endpoint.
    ///
    /// # Errors
    /// Returns an error when the task loop failed.
    pub async fn finish(self) -> Result<(), AgentError> {
        let outcome = match self.tasks.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(AgentError::Queue(err)),
            Err(err) => Err(AgentError::Crashed(err.to_string())),
        };
        if let Some(endpoint) = self.endpoint {
            endpoint.stop().await;
        }
        drop(self.queue);
        outcome
    }
}
