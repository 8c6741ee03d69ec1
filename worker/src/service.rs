//! The task loop of workers and ingest agents: take tasks from the queue (at most `slots` at a
//! time), run them, publish each result, and acknowledge the task only after the result was
//! accepted — so a process that dies at any point leaves its task to be delivered again.

use std::sync::Arc;

use prost::Message as _;
use strata_core::queue::{
    ATTEMPT_HEADER, Consumer, Delivery, HEARTBEAT, JobQueue, KIND_HEADER, Message, RESULT_QUEUE,
    Settler, TASK_HEADER,
};
use strata_proto::v1::{Task, TaskResult};
use tokio::sync::{Semaphore, watch};

use crate::execution::{ExecutionConfig, run_task};
use crate::metrics::WorkerMetrics;

/// What a task loop does with each task it takes: a worker runs it on the engine, an ingest
/// agent lands a source. The loop around it (slots, heartbeats, results, acknowledgement,
/// draining) is the same for every role.
pub trait TaskRunner: Send + Sync + 'static {
    /// Runs one attempt of `task` on `worker_id` and reports its result; a failure is a
    /// result too, with its class and message.
    fn run(
        &self,
        task: &Task,
        attempt: u32,
        worker_id: &str,
    ) -> impl std::future::Future<Output = TaskResult> + Send;
}

impl TaskRunner for ExecutionConfig {
    fn run(
        &self,
        task: &Task,
        attempt: u32,
        worker_id: &str,
    ) -> impl std::future::Future<Output = TaskResult> + Send {
        run_task(self, task, attempt, worker_id)
    }
}

/// How a process takes tasks from its queue, whatever it does with them.
#[derive(Debug, Clone)]
pub struct TaskLoop {
    /// Identifies the process in results and logs.
    pub worker_id: String,
    /// Tasks run at the same time.
    pub slots: usize,
    /// The queue tasks come from ([`TASK_QUEUE`](strata_core::queue::TASK_QUEUE) for
    /// workers unless a pool of workers has its own; the ingest queue for ingest agents).
    pub task_queue: String,
    /// How often a running task tells the coordinator it is alive.
    pub heartbeat_interval: std::time::Duration,
    /// Where the process counts its tasks, when it serves metrics.
    pub metrics: Option<WorkerMetrics>,
}

/// Settings of one worker process (or in-process worker in embedded mode).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How it takes tasks.
    pub tasks: TaskLoop,
    /// The execution engine's settings.
    pub execution: ExecutionConfig,
}

/// Serves tasks on the engine until `stop` turns true or the queue closes; tasks already
/// started finish.
///
/// # Errors
/// Returns the queue's error when consuming fails.
pub async fn serve<Q: JobQueue>(
    queue: Arc<Q>,
    config: WorkerConfig,
    stop: watch::Receiver<bool>,
) -> Result<(), strata_core::queue::QueueError> {
    serve_with(queue, config.tasks, Arc::new(config.execution), stop).await
}

/// Serves tasks with `runner` until `stop` turns true or the queue closes; tasks already
/// started finish (the drain of `strata worker` and `strata ingest-agent`).
///
/// # Errors
/// Returns the queue's error when consuming fails.
pub async fn serve_with<Q: JobQueue, R: TaskRunner>(
    queue: Arc<Q>,
    config: TaskLoop,
    runner: Arc<R>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), strata_core::queue::QueueError> {
    let slots = Arc::new(Semaphore::new(config.slots.max(1)));
    let mut consumer = queue
        .consume(&config.task_queue, config.slots.max(1))
        .await?;
    let mut running = tokio::task::JoinSet::new();
    loop {
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery?,
            _ = stop.changed() => None,
        };
        let Some(delivery) = delivery else { break };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let queue = queue.clone();
        let config = config.clone();
        let runner = runner.clone();
        running.spawn(async move {
            handle(queue.as_ref(), &config, runner.as_ref(), delivery).await;
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    Ok(())
}

async fn handle<Q: JobQueue, R: TaskRunner, S: Settler>(
    queue: &Q,
    config: &TaskLoop,
    runner: &R,
    delivery: Delivery<S>,
) {
    let task = match Task::decode(delivery.message.body.as_slice()) {
        Ok(task) if !task.task_id.is_empty() => task,
        Ok(_) => {
            let _ = delivery.dead_letter("malformed task: no task_id").await;
            return;
        }
        Err(err) => {
            let _ = delivery
                .dead_letter(format!("malformed task: not a strata.v1.Task ({err})"))
                .await;
            return;
        }
    };
    let attempt = delivery.attempt();
    let reply_to = if task.reply_to.is_empty() {
        RESULT_QUEUE
    } else {
        task.reply_to.as_str()
    };
    // While the task runs, heartbeats tell the coordinator this worker still works on it: a
    // worker that hangs (or is stopped) without losing its connection is noticed by their
    // absence, since the broker would never hand its task to anyone else.
    let _busy = config.metrics.as_ref().map(WorkerMetrics::busy);
    let started = std::time::Instant::now();
    let run = runner.run(&task, attempt, &config.worker_id);
    tokio::pin!(run);
    // The first beat goes out at once: it tells the coordinator the task was taken.
    let mut beats = tokio::time::interval(
        config
            .heartbeat_interval
            .max(std::time::Duration::from_millis(10)),
    );
    let result = loop {
        tokio::select! {
            result = &mut run => break result,
            _ = beats.tick() => {
                // The coordinator deletes a run's result queue when the run ends or is
                // cancelled: a task of such a run is dropped, running or not. (A broker that
                // cannot answer is no reason to stop.)
                if !task.reply_to.is_empty()
                    && matches!(queue.exists(reply_to).await, Ok(false))
                {
                    tracing::info!(task = %task.task_id, run = %task.run_id, "dropping a task of a run that is over or cancelled");
                    let _ = delivery.ack().await;
                    return;
                }
                let beat = Message::new(Vec::new())
                    .with_header(KIND_HEADER, HEARTBEAT)
                    .with_header(TASK_HEADER, task.task_id.clone())
                    .with_header(ATTEMPT_HEADER, attempt.to_string());
                let _ = queue.publish(reply_to, beat).await;
            }
        }
    };
    if let Some(metrics) = &config.metrics {
        metrics.finished(&task, &result, started.elapsed());
    }
    let mut message = Message::new(result.encode_to_vec());
    for (name, value) in &delivery.message.headers {
        message = message.with_header(name, value.clone());
    }
    // Ack only after the result is safe on the queue; otherwise the task comes back.
    if queue.publish(reply_to, message).await.is_ok() {
        let _ = delivery.ack().await;
    }
}
