//! [`AmqpQueue`]: Strata's [`JobQueue`] on RabbitMQ, the queue of the distributed mode.
//!
//! Topology, declared idempotently by whoever touches a queue first:
//! - every work queue (`strata.tasks`, `strata.results`, …) is a durable **quorum** queue with
//!   `x-delivery-limit` (a message that keeps crashing its consumers stops after
//!   [`DELIVERY_LIMIT`] deliveries) and dead-letters, at least once, into
//!   [`DEAD_LETTER_QUEUE`];
//! - a delayed retry goes through `<queue>.retry.<ms>ms`, a quorum queue whose messages expire
//!   after the delay and dead-letter back into `<queue>` (the broker's own timer: nothing is
//!   lost if the publisher dies meanwhile); idle retry queues delete themselves;
//! - [`DEAD_LETTER_QUEUE`] keeps what could not be processed. Messages Strata dead-letters carry
//!   the reason in [`REASON_HEADER`]; for those the broker dead-lettered (delivery limit), the
//!   consumer fills it in from `x-death`.
//!
//! Publishing waits for the publisher confirm. Consumers use manual acknowledgements with a
//! prefetch; each has its own channel, closed when the consumer is dropped, so what it held
//! and did not settle is delivered again. A dropped connection is re-established with
//! exponential backoff, by publishers and consumers alike.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use strata_core::queue::{
    ATTEMPT_HEADER, Consumer, DEAD_LETTER_QUEUE, DELIVERY_LIMIT, Delivery, JobQueue, Message,
    ORIGIN_HEADER, QueueError, QueueResult, REASON_HEADER, RESULT_QUEUE, Settlement, Settler,
};
use tokio::sync::Mutex as AsyncMutex;

/// Pauses between reconnection attempts: from 100 ms, doubling, at most 5 s.
const RECONNECT: strata_core::retry::Backoff =
    strata_core::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// How long a publish keeps trying to reach the broker before it reports an error.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(60);
/// How long a run's result queue lives without a consumer.
const RUN_QUEUE_IDLE: Duration = Duration::from_secs(3600);
/// How long an unused retry queue lives after its delay.
const RETRY_QUEUE_IDLE: Duration = Duration::from_secs(60);

/// The job queue on a RabbitMQ broker.
#[derive(Clone)]
pub struct AmqpQueue {
    inner: Arc<Inner>,
}

struct Inner {
    uri: String,
    /// The connection and the confirm-mode channel publishes go through; `None` after a failure.
    link: AsyncMutex<Option<Link>>,
    closed: AtomicBool,
}

#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    publisher: Channel,
}

fn unavailable(context: &str, err: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable {
        reason: format!("{context}: {err}"),
    }
}

impl AmqpQueue {
    /// Connects to the broker at `uri` (`amqp://user:password@host:port/vhost`).
    ///
    /// # Errors
    /// Returns an error when the broker cannot be reached.
    pub async fn connect(uri: &str) -> QueueResult<AmqpQueue> {
        let queue = AmqpQueue {
            inner: Arc::new(Inner {
                uri: with_heartbeat(uri),
                link: AsyncMutex::new(None),
                closed: AtomicBool::new(false),
            }),
        };
        queue.link().await?;
        Ok(queue)
    }

    /// Closes the connection; consumers end and publishing fails from now on.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Some(link) = self.inner.link.lock().await.take() {
            let _ = link.connection.close(200, "closing".into()).await;
        }
    }

    /// The number of ready messages in `queue`, or `None` when it does not exist (a passive
    /// declare; `declare_first` declares the queue beforehand, so it always exists).
    async fn inspect(&self, queue: &str, declare_first: bool) -> QueueResult<Option<u32>> {
        let link = self.link().await?;
        if declare_first {
            declare(&link.publisher, queue).await?;
        }
        // A passive declare fails with 404 on a missing queue and closes its channel: use a
        // channel of its own.
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|err| unavailable("opening a channel", err))?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(declared) => {
                let _ = channel.close(200, "done".into()).await;
                Ok(Some(declared.message_count()))
            }
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(unavailable(&format!("inspecting queue {queue}"), err)),
        }
    }

    /// Deletes queues (for tests and tear-down); missing queues are not an error.
    ///
    /// # Errors
    /// Returns an error when the broker cannot be reached.
    pub async fn delete_queues(&self, names: &[&str]) -> QueueResult<()> {
        for name in names {
            let link = self.link().await?;
            let channel = link
                .connection
                .create_channel()
                .await
                .map_err(|err| unavailable("opening a channel", err))?;
            let _ = channel
                .queue_delete((*name).into(), QueueDeleteOptions::default())
                .await;
            let _ = channel.close(200, "done".into()).await;
        }
        Ok(())
    }

    /// The current link, connecting first when there is none.
    async fn link(&self) -> QueueResult<Link> {
        let mut guard = self.inner.link.lock().await;
        if let Some(link) = guard.as_ref()
            && link.connection.status().connected()
            && link.publisher.status().connected()
        {
            return Ok(link.clone());
        }
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(QueueError::Closed {
                queue: String::from("*"),
            });
        }
        let connection = Connection::connect(&self.inner.uri, ConnectionProperties::default())
            .await
            .map_err(|err| {
                unavailable(&format!("connecting to {}", redact(&self.inner.uri)), err)
            })?;
        let publisher = connection
            .create_channel()
            .await
            .map_err(|err| unavailable("opening a channel", err))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|err| unavailable("enabling publisher confirms", err))?;
        declare_work_queue(&publisher, DEAD_LETTER_QUEUE).await?;
        let link = Link {
            connection: Arc::new(connection),
            publisher,
        };
        *guard = Some(link.clone());
        Ok(link)
    }

    /// Forgets a failed link so that the next operation reconnects.
    async fn drop_link(&self) {
        if let Some(link) = self.inner.link.lock().await.take() {
            let _ = link.connection.close(320, "reconnecting".into()).await;
        }
    }

    /// Publishes once: declares the queue and waits for the broker's confirm.
    async fn publish_once(&self, queue: &str, message: &Message) -> QueueResult<()> {
        let link = self.link().await?;
        declare(&link.publisher, queue).await?;
        let confirm = link
            .publisher
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &message.body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(to_field_table(&message.headers)),
            )
            .await
            .map_err(|err| unavailable(&format!("publishing to {queue}"), err))?
            .await
            .map_err(|err| unavailable(&format!("confirming a publish to {queue}"), err))?;
        if confirm.is_nack() {
            return Err(unavailable(
                &format!("publishing to {queue}"),
                "the broker refused the message (nack)",
            ));
        }
        Ok(())
    }

    /// Publishes with retries over reconnections, for up to [`PUBLISH_PATIENCE`].
    async fn publish_patiently(&self, queue: &str, message: &Message) -> QueueResult<()> {
        let started = tokio::time::Instant::now();
        let mut delays = RECONNECT.delays();
        loop {
            match self.publish_once(queue, message).await {
                Ok(()) => return Ok(()),
                Err(err @ QueueError::Closed { .. }) => return Err(err),
                Err(err) if started.elapsed() >= PUBLISH_PATIENCE => return Err(err),
                Err(err) => {
                    tracing::warn!(%err, "publish failed; reconnecting");
                    self.drop_link().await;
                    tokio::time::sleep(delays.next().unwrap_or(RECONNECT.max)).await;
                }
            }
        }
    }
}

/// AMQP heartbeats every [`AMQP_HEARTBEAT_SECS`] unless the URI sets its own: a process that
/// stops (SIGSTOP, a frozen VM) misses them, the broker closes its connection and hands its
/// unacknowledged tasks to other workers within seconds instead of minutes.
fn with_heartbeat(uri: &str) -> String {
    if uri.contains("heartbeat=") {
        uri.to_string()
    } else if uri.contains('?') {
        format!("{uri}&heartbeat={AMQP_HEARTBEAT_SECS}")
    } else {
        format!("{uri}?heartbeat={AMQP_HEARTBEAT_SECS}")
    }
}

/// The AMQP heartbeat interval asked of the broker.
const AMQP_HEARTBEAT_SECS: u32 = 5;

/// The URI without its password, for messages.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &uri[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &uri[..scheme_end + 3], &uri[at..])
        }
        _ => uri.to_string(),
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

fn to_field_table(headers: &BTreeMap<String, String>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(ShortString::from(name.as_str()), long_string(value));
    }
    table
}

fn header_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_string()),
        AMQPValue::LongLongInt(number) => Some(number.to_string()),
        AMQPValue::LongInt(number) => Some(number.to_string()),
        AMQPValue::ShortInt(number) => Some(number.to_string()),
        AMQPValue::LongUInt(number) => Some(number.to_string()),
        AMQPValue::ShortUInt(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Queue arguments of a work queue: quorum, delivery limit, at-least-once dead-lettering.
fn work_queue_arguments(queue: &str) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), long_string("quorum"));
    if queue != DEAD_LETTER_QUEUE {
        // RabbitMQ counts the deliveries that came back unsettled: a limit of N-1 returns
        // means N deliveries in all, as in the in-memory queue.
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(DELIVERY_LIMIT - 1).unwrap_or(i32::MAX)),
        );
        arguments.insert("x-dead-letter-exchange".into(), long_string(""));
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            long_string(DEAD_LETTER_QUEUE),
        );
        arguments.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        arguments.insert("x-overflow".into(), long_string("reject-publish"));
    }
    // A run's own result queue: the coordinator deletes it at the end, but a late heartbeat or
    // duplicate result would declare it again; unused, it deletes itself.
    if queue.starts_with(RESULT_QUEUE) && queue.len() > RESULT_QUEUE.len() {
        arguments.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(i64::try_from(RUN_QUEUE_IDLE.as_millis()).unwrap_or(i64::MAX)),
        );
    }
    arguments
}

async fn declare_work_queue(channel: &Channel, queue: &str) -> QueueResult<()> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            work_queue_arguments(queue),
        )
        .await
        .map(|_| ())
        .map_err(|err| unavailable(&format!("declaring queue {queue}"), err))
}

/// Declares the queue a message goes to: a retry queue (by its name) or a work queue.
async fn declare(channel: &Channel, queue: &str) -> QueueResult<()> {
    match parse_retry_queue(queue) {
        Some((target, delay)) => declare_retry_queue(channel, target, delay).await,
        None => declare_work_queue(channel, queue).await,
    }
}

/// True for the broker's 404 NOT_FOUND (a passive declare of a missing queue).
fn is_not_found(err: &lapin::Error) -> bool {
    matches!(err.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

fn retry_queue_name(target: &str, delay: Duration) -> String {
    format!("{target}.retry.{}ms", delay.as_millis())
}

fn parse_retry_queue(queue: &str) -> Option<(&str, Duration)> {
    let (target, delay) = queue.rsplit_once(".retry.")?;
    let millis: u64 = delay.strip_suffix("ms")?.parse().ok()?;
    Some((target, Duration::from_millis(millis)))
}

async fn declare_retry_queue(channel: &Channel, target: &str, delay: Duration) -> QueueResult<()> {
    let name = retry_queue_name(target, delay);
    let millis = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    let idle = i64::try_from(RETRY_QUEUE_IDLE.as_millis()).unwrap_or(i64::MAX);
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), long_string("quorum"));
    arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(millis));
    arguments.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt(millis.saturating_add(idle)),
    );
    arguments.insert("x-dead-letter-exchange".into(), long_string(""));
    arguments.insert("x-dead-letter-routing-key".into(), long_string(target));
    arguments.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    arguments.insert("x-overflow".into(), long_string("reject-publish"));
    // The target must exist before messages expire into it.
    declare_work_queue(channel, target).await?;
    channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .map(|_| ())
        .map_err(|err| unavailable(&format!("declaring retry queue {name}"), err))
}

impl JobQueue for AmqpQueue {
    type Consumer = AmqpConsumer;

    async fn publish(&self, queue: &str, message: Message) -> QueueResult<()> {
        self.publish_patiently(queue, &message).await
    }

    async fn consume(&self, queue: &str, prefetch: usize) -> QueueResult<AmqpConsumer> {
        let mut consumer = AmqpConsumer {
            queue: self.clone(),
            name: queue.to_string(),
            prefetch: u16::try_from(prefetch.max(1)).unwrap_or(u16::MAX),
            current: None,
        };
        // The broker may refuse for a moment (restarting, a queue leader moving): keep trying
        // for a while before giving up.
        let started = tokio::time::Instant::now();
        let mut delays = RECONNECT.delays();
        loop {
            match consumer.subscribe().await {
                Ok(()) => return Ok(consumer),
                Err(err @ QueueError::Closed { .. }) => return Err(err),
                Err(err) if started.elapsed() >= PUBLISH_PATIENCE => return Err(err),
                Err(err) => {
                    tracing::warn!(queue, %err, "cannot consume yet; retrying");
                    self.drop_link().await;
                    tokio::time::sleep(delays.next().unwrap_or(RECONNECT.max)).await;
                }
            }
        }
    }

    async fn delete(&self, queue: &str) -> QueueResult<()> {
        self.delete_queues(&[queue]).await
    }

    async fn exists(&self, queue: &str) -> QueueResult<bool> {
        Ok(self.inspect(queue, false).await?.is_some())
    }

    async fn depth(&self, queue: &str) -> QueueResult<usize> {
        Ok(self.inspect(queue, true).await?.unwrap_or(0) as usize)
    }
}

/// One subscription: its channel, the stream of deliveries, and the settler of its deliveries.
struct Subscription {
    channel: Channel,
    stream: lapin::Consumer,
    settler: Arc<AmqpSettler>,
}

/// Deliveries from one queue, on a channel of its own.
pub struct AmqpConsumer {
    queue: AmqpQueue,
    name: String,
    prefetch: u16,
    current: Option<Subscription>,
}

impl AmqpConsumer {
    async fn subscribe(&mut self) -> QueueResult<()> {
        let link = self.queue.link().await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|err| unavailable("opening a channel", err))?;
        declare(&channel, &self.name).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|err| unavailable("setting the prefetch", err))?;
        let stream = channel
            .basic_consume(
                self.name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|err| unavailable(&format!("consuming from {}", self.name), err))?;
        let settler = Arc::new(AmqpSettler {
            queue: self.queue.clone(),
            channel: channel.clone(),
            held: Mutex::new(HashMap::new()),
        });
        self.current = Some(Subscription {
            channel,
            stream,
            settler,
        });
        Ok(())
    }

    /// Subscribes again after a failure, waiting longer after each failed attempt.
    async fn resubscribe(&mut self) -> QueueResult<()> {
        let mut delays = RECONNECT.delays();
        loop {
            if self.queue.inner.closed.load(Ordering::SeqCst) {
                return Err(QueueError::Closed {
                    queue: self.name.clone(),
                });
            }
            self.queue.drop_link().await;
            match self.subscribe().await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    tracing::warn!(queue = %self.name, %err, "cannot consume; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(RECONNECT.max)).await;
                }
            }
        }
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        // Closing the channel hands back every delivery it held unsettled.
        if let Some(subscription) = self.current.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = subscription
                    .channel
                    .close(200, "consumer dropped".into())
                    .await;
            });
        }
    }
}

impl Consumer for AmqpConsumer {
    type Settler = AmqpSettler;

    async fn next(&mut self) -> QueueResult<Option<Delivery<AmqpSettler>>> {
        loop {
            if self.queue.inner.closed.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let Some(subscription) = self.current.as_mut() else {
                match self.resubscribe().await {
                    Ok(()) => continue,
                    Err(QueueError::Closed { .. }) => return Ok(None),
                    Err(err) => return Err(err),
                }
            };
            match subscription.stream.next().await {
                Some(Ok(delivery)) => {
                    let settler = subscription.settler.clone();
                    return Ok(Some(self.wrap(delivery, settler)));
                }
                Some(Err(err)) => {
                    tracing::warn!(queue = %self.name, %err, "consumer failed; resubscribing");
                    self.current = None;
                }
                None => {
                    // Cancelled by the broker (queue deleted, node restarted): subscribe again.
                    self.current = None;
                }
            }
        }
    }
}

impl AmqpConsumer {
    fn wrap(
        &self,
        delivery: lapin::message::Delivery,
        settler: Arc<AmqpSettler>,
    ) -> Delivery<AmqpSettler> {
        let mut headers = BTreeMap::new();
        let mut returned = 0u32;
        let mut death: Option<(String, String)> = None;
        if let Some(table) = delivery.properties.headers() {
            for (name, value) in table.inner() {
                let name = name.as_str();
                if name == "x-delivery-count" {
                    returned = header_text(value)
                        .and_then(|count| count.parse().ok())
                        .unwrap_or(0);
                } else if name == "x-death" {
                    death = first_death(value);
                } else if let Some(text) = header_text(value) {
                    headers.insert(name.to_string(), text);
                }
            }
        }
        // Dead-lettered by the broker (delivery limit): say why in Strata's headers.
        if let Some((reason, origin)) = death
            && !headers.contains_key(REASON_HEADER)
        {
            let reason = if reason == "delivery_limit" {
                format!("delivered {DELIVERY_LIMIT} times without being settled (x-delivery-limit)")
            } else {
                format!("dead-lettered by the broker: {reason}")
            };
            headers.insert(REASON_HEADER.to_string(), reason);
            headers.insert(ORIGIN_HEADER.to_string(), origin);
        }
        let message = Message {
            body: delivery.data.clone(),
            headers,
        };
        let delivery_count = if delivery.redelivered {
            (returned + 1).max(2)
        } else {
            returned + 1
        };
        settler
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(delivery.delivery_tag, message.clone());
        Delivery::new(
            message,
            delivery.redelivered,
            delivery_count,
            &self.name,
            delivery.delivery_tag,
            settler,
        )
    }
}

/// The reason and queue of the first `x-death` entry.
fn first_death(value: &AMQPValue) -> Option<(String, String)> {
    let AMQPValue::FieldArray(entries) = value else {
        return None;
    };
    let AMQPValue::FieldTable(entry) = entries.as_slice().first()? else {
        return None;
    };
    let field = |key: &str| {
        entry
            .inner()
            .iter()
            .find(|(name, _)| name.as_str() == key)
            .and_then(|(_, value)| header_text(value))
    };
    Some((field("reason")?, field("queue").unwrap_or_default()))
}

/// Settles the deliveries of one subscription on its channel. A retry or dead letter is
/// published (and confirmed) before the original is acknowledged: a crash in between gives a
/// duplicate, never a loss.
pub struct AmqpSettler {
    queue: AmqpQueue,
    channel: Channel,
    /// The messages delivered and not yet settled, by delivery tag.
    held: Mutex<HashMap<u64, Message>>,
}

impl AmqpSettler {
    fn take(&self, tag: u64) -> Option<Message> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&tag)
    }

    async fn ack(&self, tag: u64) -> QueueResult<()> {
        self.channel
            .basic_ack(tag, BasicAckOptions::default())
            .await
            .map_err(|err| unavailable("acknowledging a delivery", err))
    }
}

impl Settler for AmqpSettler {
    async fn settle(&self, queue: &str, tag: u64, settlement: Settlement) -> QueueResult<()> {
        let message = self.take(tag);
        match settlement {
            Settlement::Ack => {}
            Settlement::RetryAfter(delay) => {
                let mut message = message.unwrap_or_default();
                let attempt: u32 = message
                    .headers
                    .get(ATTEMPT_HEADER)
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(1);
                message
                    .headers
                    .insert(ATTEMPT_HEADER.to_string(), (attempt + 1).to_string());
                let target = if delay.is_zero() {
                    queue.to_string()
                } else {
                    retry_queue_name(queue, delay)
                };
                self.queue.publish_patiently(&target, &message).await?;
            }
            Settlement::DeadLetter(reason) => {
                let message = message
                    .unwrap_or_default()
                    .with_header(REASON_HEADER, reason)
                    .with_header(ORIGIN_HEADER, queue);
                self.queue
                    .publish_patiently(DEAD_LETTER_QUEUE, &message)
                    .await?;
            }
        }
        self.ack(tag).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_queue_names_round_trip() {
        let name = retry_queue_name("strata.tasks", Duration::from_millis(1500));
        assert_eq!(name, "strata.tasks.retry.1500ms");
        assert_eq!(
            parse_retry_queue(&name),
            Some(("strata.tasks", Duration::from_millis(1500)))
        );
        assert_eq!(parse_retry_queue("strata.tasks"), None);
        assert_eq!(parse_retry_queue("a.retry.soon"), None);
    }

    #[test]
    fn connections_ask_for_heartbeats() {
        assert_eq!(
            with_heartbeat("amqp://h:5672/%2f"),
            "amqp://h:5672/%2f?heartbeat=5"
        );
        assert_eq!(
            with_heartbeat("amqp://h/%2f?x=1"),
            "amqp://h/%2f?x=1&heartbeat=5"
        );
        assert_eq!(
            with_heartbeat("amqp://h/?heartbeat=30"),
            "amqp://h/?heartbeat=30"
        );
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
