//! A bounded, durable work queue on the default exchange: producers publish persistent
//! messages with publisher confirms, one consumer per instance takes them with a prefetch and
//! acks each after its work is done (for queues that are not event subscriptions, such as the
//! tracking queue).
//!
//! The queue is declared with `x-max-length` (in messages) and `x-overflow: reject-publish`,
//! so when it is full the broker nacks the publish and nothing already queued is dropped.
//! RabbitMQ counts only *ready* messages against the bound: messages delivered to a consumer
//! and not yet acked do not count. Queue arguments are fixed at declaration: to change the
//! bound, delete the queue (or set a policy) — redeclaring with other arguments fails.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Consumer};

use super::connection::RabbitBus;
use super::error::{BusError, BusResult, timed};
use super::message::{PERSISTENT, int_header};

/// The header carrying how many items a message holds (for backlog estimates).
pub const COUNT_HEADER: &str = "x-items";

/// What the broker said to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Confirmed: the message is on disk in the queue.
    Stored,
    /// Nacked: the queue is at its bound (`reject-publish`); nothing was stored.
    Refused,
    /// Returned unroutable: the queue does not exist (deleted under us).
    Unroutable,
}

/// A message taken from a [`WorkQueue`], to be acked or nacked by its tag.
#[derive(Debug)]
pub struct WorkItem {
    /// The delivery tag on the queue's consumer channel.
    pub tag: u64,
    /// The bytes published.
    pub payload: Vec<u8>,
    /// The item count given at publish ([`COUNT_HEADER`]); 1 when absent.
    pub items: u64,
}

/// A durable, bounded work queue named `<prefix>.<name>`, with its own confirm channel for
/// publishing and a consumer channel with a prefetch. It starts consuming on the first
/// [`next`](Self::next), so an instance that only publishes holds no messages back. Dropping
/// it closes both channels, so whatever it took and did not ack goes back to the queue.
#[derive(Debug)]
pub struct WorkQueue {
    name: String,
    publisher: Channel,
    consumer_channel: Channel,
    deliveries: tokio::sync::Mutex<Option<Consumer>>,
    call_timeout: Duration,
    confirm_timeout: Duration,
}

fn short(s: &str) -> BusResult<ShortString> {
    ShortString::try_new(s).map_err(|e| BusError::Invalid(format!("queue {s:?}: {e}")))
}

impl RabbitBus {
    /// Declares the durable queue `<prefix>.<name>` holding at most `max_length` ready
    /// messages (publishes beyond are nacked) and starts consuming it with `prefetch`
    /// unacked messages at most.
    pub async fn work_queue(&self, name: &str, max_length: u32, prefetch: u16) -> BusResult<WorkQueue> {
        if max_length == 0 || prefetch == 0 {
            return Err(BusError::Invalid("max_length and prefetch must be at least 1".into()));
        }
        let full = self.queue_name(name);
        let queue = short(&full)?;
        let t = self.settings().call_timeout;
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(i64::from(max_length)));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        let publisher = self.open_channel().await?;
        timed("confirm select", t, publisher.confirm_select(ConfirmSelectOptions::default())).await?;
        let declare = publisher.queue_declare(queue.clone(), QueueDeclareOptions::durable(), args);
        timed("declare queue", t, declare).await?;
        let consumer_channel = self.open_channel().await?;
        timed("qos", t, consumer_channel.basic_qos(prefetch, BasicQosOptions::default())).await?;
        tracing::info!(bus.queue = %full, max_length, prefetch, "work queue open");
        Ok(WorkQueue {
            name: full,
            publisher,
            consumer_channel,
            deliveries: tokio::sync::Mutex::new(None),
            call_timeout: t,
            confirm_timeout: self.settings().confirm_timeout,
        })
    }
}

impl WorkQueue {
    /// The full queue name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes one persistent message holding `items` items and waits for the broker's
    /// confirm (within the confirm timeout).
    pub async fn publish(&self, payload: &[u8], items: u64) -> BusResult<Published> {
        let mut headers = FieldTable::default();
        headers.insert(COUNT_HEADER.into(), AMQPValue::LongLongInt(i64::try_from(items).unwrap_or(i64::MAX)));
        let props = BasicProperties::default().with_delivery_mode(PERSISTENT).with_headers(headers);
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let publish = self.publisher.basic_publish("".into(), short(&self.name)?, options, payload, props);
        let confirm = timed("publish", self.call_timeout, publish).await?;
        match timed("confirm", self.confirm_timeout, confirm).await? {
            Confirmation::Ack(None) => Ok(Published::Stored),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => Ok(Published::Unroutable),
            Confirmation::Nack(None) => Ok(Published::Refused),
            Confirmation::NotRequested => Err(BusError::Invalid("publisher confirms are off".into())),
        }
    }

    /// The next message, waiting up to `wait` (zero: only one already delivered); `None`
    /// when none came.
    pub async fn next(&self, wait: Duration) -> BusResult<Option<WorkItem>> {
        let mut guard = self.deliveries.lock().await;
        let deliveries = match &mut *guard {
            Some(d) => d,
            None => {
                let consume = self.consumer_channel.basic_consume(
                    short(&self.name)?,
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                );
                guard.insert(timed("consume", self.call_timeout, consume).await?)
            }
        };
        let delivery = match tokio::time::timeout(wait, deliveries.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => return Err(BusError::ConsumerCancelled { queue: self.name.clone() }),
            Ok(Some(d)) => d?,
        };
        let items = int_header(delivery.properties.headers().as_ref(), COUNT_HEADER).unwrap_or(1);
        Ok(Some(WorkItem {
            tag: delivery.delivery_tag,
            payload: delivery.data,
            items: u64::try_from(items).unwrap_or(1),
        }))
    }

    /// Removes the messages with these tags for good.
    pub async fn ack(&self, tags: &[u64]) -> BusResult<()> {
        for &tag in tags {
            timed("ack", self.call_timeout, self.consumer_channel.basic_ack(tag, BasicAckOptions::default())).await?;
        }
        Ok(())
    }

    /// Hands the messages with these tags back to the queue (redelivered, to any consumer).
    pub async fn nack(&self, tags: &[u64]) -> BusResult<()> {
        let requeue = BasicNackOptions { requeue: true, multiple: false };
        for &tag in tags {
            timed("nack", self.call_timeout, self.consumer_channel.basic_nack(tag, requeue)).await?;
        }
        Ok(())
    }

    /// Messages ready in the queue (not counting those delivered and not yet acked).
    pub async fn ready(&self) -> BusResult<u32> {
        let passive = QueueDeclareOptions::default().passive();
        let declare = self.publisher.queue_declare(short(&self.name)?, passive, FieldTable::default());
        Ok(timed("declare queue", self.call_timeout, declare).await?.message_count())
    }

    /// Deletes the queue, messages and all (tests, decommissioning).
    pub async fn delete(&self) -> BusResult<()> {
        let delete = self.publisher.queue_delete(short(&self.name)?, QueueDeleteOptions::default());
        timed("delete queue", self.call_timeout, delete).await.map(|_| ())
    }
}
