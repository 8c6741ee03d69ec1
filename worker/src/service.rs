//! The worker's main loop: take tasks from the queue (at most `slots` at a time), run them,
//! publish each result, and acknowledge the task only after the result was accepted — so a
//! worker that dies at any point leaves its task to be delivered again.

use std::sync::Arc;

use prost::Message as _;
use strata_core::queue::{
    ATTEMPT_HEADER, Consumer, Delivery, HEARTBEAT, JobQueue, KIND_HEADER, Message, RESULT_QUEUE,
    Settler, TASK_HEADER,
};
use strata_proto::v1::Task;
use tokio::sync::{Semaphore, watch};

use crate::execution::{ExecutionConfig, run_task};
use crate::metrics::WorkerMetrics;

/// Settings of one worker process (or in-process worker in embedded mode).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Identifies the worker in results and logs.
    pub worker_id: String,
    /// Tasks run at the same time.
    pub slots: usize,
    /// The queue tasks come from ([`TASK_QUEUE`](strata_core::queue::TASK_QUEUE) unless a
    /// pool of workers has its own).
    pub task_queue: String,
    /// The execution engine's settings.
    pub execution: ExecutionConfig,
    /// How often a running task tells the coordinator it is alive.
    pub heartbeat_interval: std::time::Duration,
    /// Where the worker counts its tasks, when it serves metrics.
    pub metrics: Option<WorkerMetrics>,
}

/// Serves tasks until `stop` turns true or the queue closes; tasks already started finish.
///
/// # Errors
/// Returns the queue's error when consuming fails.
pub async fn serve<Q: JobQueue>(
    queue: Arc<Q>,
    config: WorkerConfig,
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
        running.spawn(async move {
            handle(queue.as_ref(), &config, delivery).await;
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    Ok(())
}

async fn handle<Q: JobQueue, S: Settler>(queue: &Q, config: &WorkerConfig, delivery: Delivery<S>) {
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
    let run = run_task(&config.execution, &task, attempt, &config.worker_id);
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
