//! The coordinator over a queue whose publishes fail: a run whose task publishes fail for a
//! while still finishes (each publish is tried again after a backoff), and a run whose
//! publishes never succeed ends with the node failed and the broker's error — it never waits
//! forever. Before the scheduler kept its retries, a failed delayed publish was dropped and the
//! run hung.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use prost::Message as _;
use strata_coordinator::prepare::{RunSpec, prepare};
use strata_coordinator::{Coordinator, NodeStatus, RunRecord};
use strata_core::queue::{
    ATTEMPT_HEADER, Consumer, JobQueue, MemoryQueue, Message, QueueError, QueueResult,
};
use strata_proto::v1::{FailureClass, Task, TaskResult};

const TASKS: &str = "strata-test.failing-publishes.tasks";

/// The in-memory queue, except that the first `failures` publishes to the task queue fail.
struct FlakyQueue {
    inner: MemoryQueue,
    failures: AtomicU32,
}

impl JobQueue for FlakyQueue {
    type Consumer = <MemoryQueue as JobQueue>::Consumer;

    async fn publish(&self, queue: &str, message: Message) -> QueueResult<()> {
        if queue == TASKS
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
        {
            return Err(QueueError::Unavailable {
                reason: String::from("scripted broker outage"),
            });
        }
        self.inner.publish(queue, message).await
    }

    async fn consume(&self, queue: &str, prefetch: usize) -> QueueResult<Self::Consumer> {
        self.inner.consume(queue, prefetch).await
    }

    async fn delete(&self, queue: &str) -> QueueResult<()> {
        self.inner.delete(queue).await
    }

    async fn depth(&self, queue: &str) -> QueueResult<usize> {
        self.inner.depth(queue).await
    }

    async fn exists(&self, queue: &str) -> QueueResult<bool> {
        self.inner.exists(queue).await
    }
}

/// Answers every task on the task queue with a passing result, as a worker would.
async fn answer_tasks(queue: Arc<FlakyQueue>) {
    let Ok(mut consumer) = queue.inner.consume(TASKS, 4).await else {
        return;
    };
    while let Ok(Some(delivery)) = consumer.next().await {
        let task = Task::decode(delivery.message.body.as_slice()).unwrap();
        let attempt = delivery.message.headers[ATTEMPT_HEADER].parse().unwrap();
        let result = TaskResult {
            run_id: task.run_id.clone(),
            task_id: task.task_id.clone(),
            attempt,
            worker_id: String::from("scripted"),
            failure_class: FailureClass::Unspecified as i32,
            ..TaskResult::default()
        };
        queue
            .inner
            .publish(&task.reply_to, Message::new(result.encode_to_vec()))
            .await
            .unwrap();
        delivery.ack().await.unwrap();
    }
}

/// Runs the project's one singular test over a queue whose first `failures` task publishes
/// fail.
async fn run_with_failures(failures: u32) -> RunRecord {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("dbt_project.yml"),
        "name: flaky\nversion: '1.0'\nconfig-version: 2\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tests/nothing_fails.sql"),
        "select 1 as x where 1 = 0\n",
    )
    .unwrap();
    let spec = RunSpec {
        command: String::from("test"),
        ..RunSpec::new(dir.path().to_path_buf())
    };
    let mut request = prepare(&spec, &BTreeMap::new()).await.unwrap().request;
    request.retry_backoff = Duration::from_millis(10);
    let queue = Arc::new(FlakyQueue {
        inner: MemoryQueue::new(),
        failures: AtomicU32::new(failures),
    });
    let responder = tokio::spawn(answer_tasks(queue.clone()));
    let coordinator = Coordinator::new(queue.clone()).with_task_queue(TASKS);
    let run = coordinator.run(&request, "run-flaky", |_| {});
    let record = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ended instead of waiting forever")
        .unwrap();
    queue.inner.close();
    let _ = responder.await;
    record
}

#[tokio::test]
async fn publishes_that_fail_for_a_while_are_tried_again() {
    let record = run_with_failures(2).await;
    assert!(record.success, "{record:?}");
    assert_eq!(record.nodes[0].status, NodeStatus::Pass);
}

#[tokio::test]
async fn publishes_that_never_succeed_fail_the_node_with_the_brokers_error() {
    let record = run_with_failures(u32::MAX).await;
    assert!(!record.success);
    let node = &record.nodes[0];
    assert_eq!(node.status, NodeStatus::Fail);
    let error = node.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("cannot publish task") && error.contains("scripted broker outage"),
        "{error}"
    );
}
