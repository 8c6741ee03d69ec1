//! The job queue between the coordinator and workers: the [`JobQueue`] trait, its in-memory
//! implementation ([`MemoryQueue`], used in embedded mode and tests) and a [`conformance`]
//! suite every implementation must pass (the AMQP one runs it against a real RabbitMQ).
//!
//! Semantics follow RabbitMQ with quorum queues and manual acknowledgements:
//!
//! - a consumer holds at most `prefetch` unacknowledged deliveries;
//! - a delivery is settled exactly once: [`Delivery::ack`], [`Delivery::retry_after`]
//!   (republished after a delay with the attempt header incremented) or
//!   [`Delivery::dead_letter`] (moved to [`DEAD_LETTER_QUEUE`] with the reason in a header);
//! - deliveries not settled when their consumer goes away are delivered again, marked
//!   `redelivered`; after [`DELIVERY_LIMIT`] deliveries a message is dead-lettered instead
//!   (RabbitMQ's `x-delivery-limit`), so a message that crashes workers cannot loop forever.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Queue of tasks for workers.
pub const TASK_QUEUE: &str = "strata.tasks";
/// Queue of ingest tasks for ingest agents.
pub const INGEST_QUEUE: &str = "strata.ingest";
/// Queue of results and heartbeats for the coordinator.
pub const RESULT_QUEUE: &str = "strata.results";
/// Where messages that cannot be processed end, with the reason in [`REASON_HEADER`].
pub const DEAD_LETTER_QUEUE: &str = "strata.dead";
/// Header naming why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-strata-reason";
/// Header naming the queue a dead-lettered message came from.
pub const ORIGIN_HEADER: &str = "x-strata-origin-queue";
/// Header counting attempts of a retried message (1 for the first).
pub const ATTEMPT_HEADER: &str = "x-strata-attempt";
/// Header marking a message on a result queue as a heartbeat (value [`HEARTBEAT`]) rather
/// than a result.
pub const KIND_HEADER: &str = "x-strata-kind";
/// The [`KIND_HEADER`] value of heartbeats.
pub const HEARTBEAT: &str = "heartbeat";
/// Header naming the task a heartbeat is about.
pub const TASK_HEADER: &str = "x-strata-task";
/// Deliveries after which an unsettled message is dead-lettered.
pub const DELIVERY_LIMIT: u32 = 5;

/// Errors of a queue implementation.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker or connection failed; the operation may succeed if retried.
    #[error("queue unavailable: {reason}")]
    Unavailable {
        /// What went wrong.
        reason: String,
    },
    /// The queue was closed; no more deliveries will come.
    #[error("queue '{queue}' is closed")]
    Closed {
        /// The queue.
        queue: String,
    },
}

/// `Result` of queue operations.
pub type QueueResult<T> = std::result::Result<T, QueueError>;

/// A message to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The payload (a protobuf message for tasks and results).
    pub body: Vec<u8>,
    /// Headers: trace context (`traceparent`), attempt, dead-letter reason.
    pub headers: BTreeMap<String, String>,
}

impl Message {
    /// Creates a message with a body and no headers.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: body.into(),
            headers: BTreeMap::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.insert(name.to_string(), value.into());
        self
    }
}

/// How a delivery was settled, reported to the implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Processed; remove it.
    Ack,
    /// Publish again after the delay, with the attempt header incremented.
    RetryAfter(Duration),
    /// Move to the dead-letter queue with this reason.
    DeadLetter(String),
}

/// Settles deliveries for a queue implementation.
pub trait Settler: Send + Sync {
    /// Settles the delivery `tag` of `queue`. Called at most once per delivery.
    ///
    /// # Errors
    /// Returns an error when the broker cannot be reached; the message is then delivered again.
    fn settle(
        &self,
        queue: &str,
        tag: u64,
        settlement: Settlement,
    ) -> impl Future<Output = QueueResult<()>> + Send;
}

/// A message handed to a consumer. Dropping it unsettled makes it available again once its
/// consumer is gone. Settle it before dropping its consumer: with a broker, settling goes
/// through the consumer's channel, which closes with the consumer.
#[derive(Debug)]
pub struct Delivery<S: Settler> {
    /// The message.
    pub message: Message,
    /// True when the message was delivered before and not settled.
    pub redelivered: bool,
    /// How many times it has been delivered, this time included.
    pub delivery_count: u32,
    queue: String,
    tag: u64,
    settler: Arc<S>,
}

impl<S: Settler> Delivery<S> {
    /// A delivery of `message` from `queue`, settled through `settler` by `tag` (for queue
    /// implementations).
    pub fn new(
        message: Message,
        redelivered: bool,
        delivery_count: u32,
        queue: &str,
        tag: u64,
        settler: Arc<S>,
    ) -> Self {
        Self {
            message,
            redelivered,
            delivery_count,
            queue: queue.to_string(),
            tag,
            settler,
        }
    }

    /// Marks the message processed.
    ///
    /// # Errors
    /// Returns an error when the broker cannot be reached.
    pub async fn ack(self) -> QueueResult<()> {
        self.settler
            .settle(&self.queue, self.tag, Settlement::Ack)
            .await
    }

    /// Publishes the message again after `delay` with its attempt header incremented.
    ///
    /// # Errors
    /// Returns an error when the broker cannot be reached.
    pub async fn retry_after(self, delay: Duration) -> QueueResult<()> {
        self.settler
            .settle(&self.queue, self.tag, Settlement::RetryAfter(delay))
            .await
    }

    /// Moves the message to the dead-letter queue with a reason.
    ///
    /// # Errors
    /// Returns an error when the broker cannot be reached.
    pub async fn dead_letter(self, reason: impl Into<String>) -> QueueResult<()> {
        self.settler
            .settle(&self.queue, self.tag, Settlement::DeadLetter(reason.into()))
            .await
    }

    /// The attempt number from the attempt header (1 when absent).
    pub fn attempt(&self) -> u32 {
        self.message
            .headers
            .get(ATTEMPT_HEADER)
            .and_then(|value| value.parse().ok())
            .unwrap_or(1)
    }
}

/// A stream of deliveries from one queue.
pub trait Consumer: Send {
    /// The settler its deliveries use.
    type Settler: Settler;

    /// Waits for the next delivery; `None` once the queue is closed.
    ///
    /// # Errors
    /// Returns an error when the broker cannot be reached.
    fn next(&mut self)
    -> impl Future<Output = QueueResult<Option<Delivery<Self::Settler>>>> + Send;
}

/// A durable work queue with acknowledgements, delayed retries and dead-lettering.
pub trait JobQueue: Send + Sync + 'static {
    /// The consumer type.
    type Consumer: Consumer;

    /// Publishes a message; returns once the queue has accepted it (publisher confirm).
    /// Safe to retry: a duplicate publish gives a duplicate message, which the commit
    /// protocol tolerates.
    ///
    /// # Errors
    /// Returns an error when the message was not accepted.
    fn publish(
        &self,
        queue: &str,
        message: Message,
    ) -> impl Future<Output = QueueResult<()>> + Send;

    /// Starts a consumer holding at most `prefetch` unsettled deliveries.
    ///
    /// # Errors
    /// Returns an error when the broker cannot be reached.
    fn consume(
        &self,
        queue: &str,
        prefetch: usize,
    ) -> impl Future<Output = QueueResult<Self::Consumer>> + Send;

    /// Deletes a queue and what it holds (a run's own result queue, once the run is over).
    ///
    /// # Errors
    /// Returns an error when the broker cannot be reached.
    fn delete(&self, queue: &str) -> impl Future<Output = QueueResult<()>> + Send;

    /// Returns the number of messages ready for delivery (not in flight).
    ///
    /// # Errors
    /// Returns an error when the broker cannot be reached.
    fn depth(&self, queue: &str) -> impl Future<Output = QueueResult<usize>> + Send;

    /// True when the queue exists (without creating it). A worker asks this of a task's
    /// result queue: once the run is over or cancelled, the coordinator has deleted it.
    ///
    /// # Errors
    /// Returns an error when the broker cannot be reached.
    fn exists(&self, queue: &str) -> impl Future<Output = QueueResult<bool>> + Send;
}

#[derive(Debug, Default)]
struct QueueState {
    ready: VecDeque<Stored>,
    /// In-flight deliveries by tag, with the consumer holding them.
    unsettled: HashMap<u64, (Stored, u64)>,
}

#[derive(Debug, Clone)]
struct Stored {
    message: Message,
    delivery_count: u32,
}

#[derive(Debug, Default)]
struct MemoryState {
    queues: HashMap<String, QueueState>,
    next_tag: u64,
    next_consumer: u64,
    closed: bool,
}

#[derive(Debug, Default)]
struct MemoryInner {
    state: Mutex<MemoryState>,
    changed: Notify,
}

/// The in-memory queue of embedded mode: same semantics as the broker, in one process.
#[derive(Debug, Clone, Default)]
pub struct MemoryQueue {
    inner: Arc<MemoryInner>,
}

impl MemoryQueue {
    /// Creates an empty queue set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes every queue: consumers get `None` once the ready messages are drained.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn push(&self, queue: &str, stored: Stored) {
        self.lock()
            .queues
            .entry(queue.to_string())
            .or_default()
            .ready
            .push_back(stored);
        self.inner.changed.notify_waiters();
    }
}

impl Settler for MemoryQueue {
    async fn settle(&self, queue: &str, tag: u64, settlement: Settlement) -> QueueResult<()> {
        let stored = {
            let mut state = self.lock();
            state
                .queues
                .get_mut(queue)
                .and_then(|q| q.unsettled.remove(&tag))
                .map(|(stored, _)| stored)
        };
        self.inner.changed.notify_waiters();
        let Some(stored) = stored else { return Ok(()) };
        match settlement {
            Settlement::Ack => Ok(()),
            Settlement::DeadLetter(reason) => {
                let message = stored
                    .message
                    .with_header(REASON_HEADER, reason)
                    .with_header(ORIGIN_HEADER, queue);
                self.push(
                    DEAD_LETTER_QUEUE,
                    Stored {
                        message,
                        delivery_count: 0,
                    },
                );
                Ok(())
            }
            Settlement::RetryAfter(delay) => {
                let attempt = stored
                    .message
                    .headers
                    .get(ATTEMPT_HEADER)
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(1);
                let message = stored
                    .message
                    .with_header(ATTEMPT_HEADER, (attempt + 1).to_string());
                let queue_name = queue.to_string();
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    this.push(
                        &queue_name,
                        Stored {
                            message,
                            delivery_count: 0,
                        },
                    );
                });
                Ok(())
            }
        }
    }
}

/// A consumer of a [`MemoryQueue`].
#[derive(Debug)]
pub struct MemoryConsumer {
    queue: MemoryQueue,
    name: String,
    prefetch: usize,
    id: u64,
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        // Like a closed AMQP channel: unsettled deliveries go back to the front of the queue.
        let mut state = self.queue.lock();
        if let Some(queue) = state.queues.get_mut(&self.name) {
            let mine: Vec<u64> = queue
                .unsettled
                .iter()
                .filter(|(_, (_, owner))| *owner == self.id)
                .map(|(tag, _)| *tag)
                .collect();
            let mut returned: Vec<(u64, Stored)> = mine
                .into_iter()
                .filter_map(|tag| {
                    queue
                        .unsettled
                        .remove(&tag)
                        .map(|(stored, _)| (tag, stored))
                })
                .collect();
            returned.sort_by_key(|(tag, _)| std::cmp::Reverse(*tag));
            for (_, stored) in returned {
                queue.ready.push_front(stored);
            }
        }
        drop(state);
        self.queue.inner.changed.notify_waiters();
    }
}

impl Consumer for MemoryConsumer {
    type Settler = MemoryQueue;

    async fn next(&mut self) -> QueueResult<Option<Delivery<MemoryQueue>>> {
        loop {
            let notified = self.queue.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut dead: Option<Stored> = None;
            {
                let mut state = self.queue.lock();
                let closed = state.closed;
                let tag = state.next_tag + 1;
                let queue = state.queues.entry(self.name.clone()).or_default();
                let held = queue
                    .unsettled
                    .values()
                    .filter(|(_, owner)| *owner == self.id)
                    .count();
                if held < self.prefetch {
                    if let Some(mut stored) = queue.ready.pop_front() {
                        stored.delivery_count += 1;
                        if stored.delivery_count > DELIVERY_LIMIT {
                            dead = Some(stored);
                        } else {
                            let delivery = Delivery {
                                message: stored.message.clone(),
                                redelivered: stored.delivery_count > 1,
                                delivery_count: stored.delivery_count,
                                queue: self.name.clone(),
                                tag,
                                settler: Arc::new(self.queue.clone()),
                            };
                            queue.unsettled.insert(tag, (stored, self.id));
                            state.next_tag = tag;
                            return Ok(Some(delivery));
                        }
                    } else if closed {
                        return Ok(None);
                    }
                }
            }
            if let Some(stored) = dead {
                let message = stored
                    .message
                    .with_header(
                        REASON_HEADER,
                        format!("delivered {DELIVERY_LIMIT} times without being settled"),
                    )
                    .with_header(ORIGIN_HEADER, self.name.clone());
                self.queue.push(
                    DEAD_LETTER_QUEUE,
                    Stored {
                        message,
                        delivery_count: 0,
                    },
                );
                continue;
            }
            notified.await;
        }
    }
}

impl JobQueue for MemoryQueue {
    type Consumer = MemoryConsumer;

    async fn publish(&self, queue: &str, message: Message) -> QueueResult<()> {
        if self.lock().closed {
            return Err(QueueError::Closed {
                queue: queue.to_string(),
            });
        }
        self.push(
            queue,
            Stored {
                message,
                delivery_count: 0,
            },
        );
        Ok(())
    }

    async fn consume(&self, queue: &str, prefetch: usize) -> QueueResult<MemoryConsumer> {
        let mut state = self.lock();
        // Consuming declares the queue, as on the broker.
        state.queues.entry(queue.to_string()).or_default();
        state.next_consumer += 1;
        Ok(MemoryConsumer {
            queue: self.clone(),
            name: queue.to_string(),
            prefetch: prefetch.max(1),
            id: state.next_consumer,
        })
    }

    async fn delete(&self, queue: &str) -> QueueResult<()> {
        self.lock().queues.remove(queue);
        Ok(())
    }

    async fn depth(&self, queue: &str) -> QueueResult<usize> {
        Ok(self.lock().queues.get(queue).map_or(0, |q| q.ready.len()))
    }

    async fn exists(&self, queue: &str) -> QueueResult<bool> {
        Ok(self.lock().queues.contains_key(queue))
    }
}

/// The behaviour every [`JobQueue`] must show. Each check takes a fresh queue with unique
/// queue names, so implementations backed by a shared broker can run it.
pub mod conformance {
    use std::time::Duration;

    use super::{
        ATTEMPT_HEADER, Consumer, DEAD_LETTER_QUEUE, JobQueue, Message, ORIGIN_HEADER,
        REASON_HEADER,
    };

    const WAIT: Duration = Duration::from_secs(10);

    async fn next<C: Consumer>(consumer: &mut C) -> super::Delivery<C::Settler> {
        tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("a delivery within the timeout")
            .expect("the queue works")
            .expect("the queue is open")
    }

    async fn nothing_within<C: Consumer>(consumer: &mut C, wait: Duration) -> bool {
        tokio::time::timeout(wait, consumer.next()).await.is_err()
    }

    /// Runs every check. `queue` names a queue unique to this run; the dead-letter queue is
    /// shared, so checks on it filter by their own queue name.
    pub async fn run_all<Q: JobQueue>(queue: &Q, name: &str) {
        publish_consume_ack(queue, &format!("{name}.ack")).await;
        prefetch_limits_unsettled_deliveries(queue, &format!("{name}.prefetch")).await;
        unsettled_deliveries_come_back_marked_redelivered(queue, &format!("{name}.redeliver"))
            .await;
        retry_after_delays_and_counts_attempts(queue, &format!("{name}.retry")).await;
        dead_letters_carry_their_reason(queue, &format!("{name}.dead")).await;
        competing_consumers_share_without_duplicates(queue, &format!("{name}.share")).await;
        poison_messages_are_dead_lettered(queue, &format!("{name}.poison")).await;
        delete_removes_messages(queue, &format!("{name}.delete")).await;
    }

    /// A deleted queue is gone with its messages; using the name again starts empty.
    pub async fn delete_removes_messages<Q: JobQueue>(queue: &Q, name: &str) {
        queue
            .publish(name, Message::new(b"old".to_vec()))
            .await
            .unwrap();
        assert_eq!(queue.depth(name).await.unwrap(), 1);
        assert!(queue.exists(name).await.unwrap());
        queue.delete(name).await.unwrap();
        assert!(
            !queue.exists(name).await.unwrap(),
            "a deleted queue is gone"
        );
        assert_eq!(queue.depth(name).await.unwrap(), 0);
        queue.delete(name).await.unwrap();
        assert!(!queue.exists(&format!("{name}.never")).await.unwrap());
        // Consuming declares a queue: a run's result queue exists once its coordinator listens.
        let consumer = queue.consume(name, 1).await.unwrap();
        assert!(queue.exists(name).await.unwrap());
        drop(consumer);
        queue.delete(name).await.unwrap();
    }

    /// The queues [`run_all`] uses, for implementations that clean up after it.
    pub fn queue_names(name: &str) -> Vec<String> {
        [
            "ack",
            "prefetch",
            "redeliver",
            "retry",
            "dead",
            "share",
            "poison",
            "delete",
        ]
        .iter()
        .map(|check| format!("{name}.{check}"))
        .collect()
    }

    /// Waits on `dead` (a consumer of the dead-letter queue) for the dead letter that came from
    /// queue `origin`, handing back the others. The consumer must outlive the delivery: a
    /// delivery is settled through its consumer's channel.
    async fn dead_letter_from<C: Consumer>(
        dead: &mut C,
        origin: &str,
    ) -> super::Delivery<C::Settler> {
        loop {
            let delivery = next(dead).await;
            if delivery
                .message
                .headers
                .get(ORIGIN_HEADER)
                .map(String::as_str)
                == Some(origin)
            {
                return delivery;
            }
            // Another check's dead letter on the shared queue: leave it for its owner.
            delivery
                .retry_after(Duration::from_millis(0))
                .await
                .unwrap();
        }
    }

    /// A message whose consumers all go away without settling it is delivered
    /// [`DELIVERY_LIMIT`](super::DELIVERY_LIMIT) times, then dead-lettered with a reason.
    pub async fn poison_messages_are_dead_lettered<Q: JobQueue>(queue: &Q, name: &str) {
        queue
            .publish(name, Message::new(b"crash".to_vec()))
            .await
            .unwrap();
        for _ in 0..super::DELIVERY_LIMIT {
            let mut consumer = queue.consume(name, 1).await.unwrap();
            let delivery = next(&mut consumer).await;
            assert_eq!(delivery.message.body, b"crash");
            drop(delivery);
            drop(consumer);
        }
        let mut consumer = queue.consume(name, 1).await.unwrap();
        assert!(
            nothing_within(&mut consumer, Duration::from_millis(500)).await,
            "the poison message must not be delivered again"
        );
        let mut dead = queue.consume(DEAD_LETTER_QUEUE, 10).await.unwrap();
        let delivery = dead_letter_from(&mut dead, name).await;
        assert_eq!(delivery.message.body, b"crash");
        let reason = &delivery.message.headers[REASON_HEADER];
        assert!(reason.contains("without being settled"), "{reason}");
        delivery.ack().await.unwrap();
    }

    /// A published message arrives once, with its headers, and is gone after `ack`.
    pub async fn publish_consume_ack<Q: JobQueue>(queue: &Q, name: &str) {
        queue
            .publish(
                name,
                Message::new(b"one".to_vec()).with_header("traceparent", "00-abc-01"),
            )
            .await
            .unwrap();
        queue
            .publish(name, Message::new(b"two".to_vec()))
            .await
            .unwrap();
        let mut consumer = queue.consume(name, 10).await.unwrap();
        let first = next(&mut consumer).await;
        assert_eq!(first.message.body, b"one");
        assert_eq!(
            first.message.headers.get("traceparent").map(String::as_str),
            Some("00-abc-01")
        );
        assert!(!first.redelivered);
        assert_eq!(first.attempt(), 1);
        first.ack().await.unwrap();
        let second = next(&mut consumer).await;
        assert_eq!(second.message.body, b"two");
        second.ack().await.unwrap();
        assert!(nothing_within(&mut consumer, Duration::from_millis(200)).await);
    }

    /// A consumer never holds more than `prefetch` unsettled deliveries.
    pub async fn prefetch_limits_unsettled_deliveries<Q: JobQueue>(queue: &Q, name: &str) {
        for index in 0..3u8 {
            queue
                .publish(name, Message::new(vec![index]))
                .await
                .unwrap();
        }
        let mut consumer = queue.consume(name, 2).await.unwrap();
        let first = next(&mut consumer).await;
        let _second = next(&mut consumer).await;
        assert!(
            nothing_within(&mut consumer, Duration::from_millis(300)).await,
            "a third delivery beyond prefetch 2"
        );
        first.ack().await.unwrap();
        let third = next(&mut consumer).await;
        assert_eq!(third.message.body, vec![2]);
    }

    /// Deliveries left unsettled by a consumer that goes away are delivered again.
    pub async fn unsettled_deliveries_come_back_marked_redelivered<Q: JobQueue>(
        queue: &Q,
        name: &str,
    ) {
        queue
            .publish(name, Message::new(b"task".to_vec()))
            .await
            .unwrap();
        {
            let mut consumer = queue.consume(name, 1).await.unwrap();
            let delivery = next(&mut consumer).await;
            assert!(!delivery.redelivered);
            drop(delivery);
        }
        let mut consumer = queue.consume(name, 1).await.unwrap();
        let again = next(&mut consumer).await;
        assert_eq!(again.message.body, b"task");
        assert!(again.redelivered);
        assert!(again.delivery_count >= 2);
        again.ack().await.unwrap();
    }

    /// `retry_after` brings the message back after the delay, with the attempt incremented.
    pub async fn retry_after_delays_and_counts_attempts<Q: JobQueue>(queue: &Q, name: &str) {
        queue
            .publish(name, Message::new(b"flaky".to_vec()))
            .await
            .unwrap();
        let mut consumer = queue.consume(name, 1).await.unwrap();
        let delivery = next(&mut consumer).await;
        let started = std::time::Instant::now();
        delivery
            .retry_after(Duration::from_millis(300))
            .await
            .unwrap();
        let retried = next(&mut consumer).await;
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "retried after {:?}",
            started.elapsed()
        );
        assert_eq!(retried.message.body, b"flaky");
        assert_eq!(
            retried
                .message
                .headers
                .get(ATTEMPT_HEADER)
                .map(String::as_str),
            Some("2")
        );
        assert_eq!(retried.attempt(), 2);
        retried.ack().await.unwrap();
    }

    /// `dead_letter` moves the message to the dead-letter queue with its reason and origin.
    pub async fn dead_letters_carry_their_reason<Q: JobQueue>(queue: &Q, name: &str) {
        queue
            .publish(name, Message::new(b"garbage".to_vec()))
            .await
            .unwrap();
        let mut consumer = queue.consume(name, 1).await.unwrap();
        next(&mut consumer)
            .await
            .dead_letter("malformed task: invalid wire type")
            .await
            .unwrap();
        let mut dead = queue.consume(DEAD_LETTER_QUEUE, 10).await.unwrap();
        let delivery = dead_letter_from(&mut dead, name).await;
        assert_eq!(delivery.message.body, b"garbage");
        assert_eq!(
            delivery
                .message
                .headers
                .get(REASON_HEADER)
                .map(String::as_str),
            Some("malformed task: invalid wire type")
        );
        delivery.ack().await.unwrap();
    }

    /// Two consumers on one queue get every message exactly once between them.
    pub async fn competing_consumers_share_without_duplicates<Q: JobQueue>(queue: &Q, name: &str) {
        const COUNT: u32 = 40;
        for index in 0..COUNT {
            queue
                .publish(name, Message::new(index.to_le_bytes().to_vec()))
                .await
                .unwrap();
        }
        let mut a = queue.consume(name, 3).await.unwrap();
        let mut b = queue.consume(name, 3).await.unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let mut from_a = 0;
        while seen.len() < COUNT as usize {
            tokio::select! {
                delivery = a.next() => {
                    let delivery = delivery.unwrap().unwrap();
                    assert!(seen.insert(delivery.message.body.clone()), "duplicate delivery");
                    from_a += 1;
                    delivery.ack().await.unwrap();
                }
                delivery = b.next() => {
                    let delivery = delivery.unwrap().unwrap();
                    assert!(seen.insert(delivery.message.body.clone()), "duplicate delivery");
                    delivery.ack().await.unwrap();
                }
                _ = tokio::time::sleep(WAIT) => panic!("stalled after {} messages", seen.len()),
            }
        }
        assert!(
            from_a > 0 && from_a < COUNT,
            "both consumers should get work, a got {from_a}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_queue_conforms() {
        conformance::run_all(&MemoryQueue::new(), "conformance").await;
    }
}
