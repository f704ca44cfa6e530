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
//!
//! A lost connection does not end the queue: a call that finds its channel closed opens a new
//! one on the bus (which connects again), declaring the queue again and, for the consumer,
//! subscribing again. Messages taken on the old channel and not yet acked go back to the queue
//! when it closes, so settling them afterwards fails with [`BusError::ChannelClosed`]: they
//! will be delivered again.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Acker, BasicProperties, Channel, Confirmation, Consumer};

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

/// How to settle one message taken from a [`WorkQueue`]: bound to the channel it came on, so
/// a message from a channel since closed is never confused with another on a newer channel.
#[derive(Debug, Clone)]
pub struct WorkTag(Acker);

/// A message taken from a [`WorkQueue`], to be acked or nacked by its tag.
#[derive(Debug)]
pub struct WorkItem {
    /// Settles this message.
    pub tag: WorkTag,
    /// The bytes published.
    pub payload: Vec<u8>,
    /// The item count given at publish ([`COUNT_HEADER`]); 1 when absent.
    pub items: u64,
}

/// A durable, bounded work queue named `<prefix>.<name>`, with its own confirm channel for
/// publishing and a consumer channel with a prefetch, each opened again when found closed. It
/// starts consuming on the first [`next`](Self::next), so an instance that only publishes
/// holds no messages back. Dropping it closes both channels, so whatever it took and did not
/// ack goes back to the queue.
#[derive(Debug)]
pub struct WorkQueue {
    bus: RabbitBus,
    name: String,
    max_length: u32,
    prefetch: u16,
    publisher: tokio::sync::Mutex<Option<Channel>>,
    consumer: tokio::sync::Mutex<Option<(Channel, Consumer)>>,
    call_timeout: Duration,
    confirm_timeout: Duration,
}

fn short(s: &str) -> BusResult<ShortString> {
    ShortString::try_new(s).map_err(|e| BusError::Invalid(format!("queue {s:?}: {e}")))
}

impl RabbitBus {
    /// Declares the durable queue `<prefix>.<name>` holding at most `max_length` ready
    /// messages (publishes beyond are nacked); it is consumed with `prefetch` unacked messages
    /// at most, from the first [`WorkQueue::next`]. While the broker is away it is declared on
    /// first use instead.
    pub async fn work_queue(&self, name: &str, max_length: u32, prefetch: u16) -> BusResult<WorkQueue> {
        if max_length == 0 || prefetch == 0 {
            return Err(BusError::Invalid("max_length and prefetch must be at least 1".into()));
        }
        let full = self.queue_name(name);
        short(&full)?;
        let queue = WorkQueue {
            bus: self.clone(),
            name: full,
            max_length,
            prefetch,
            publisher: tokio::sync::Mutex::new(None),
            consumer: tokio::sync::Mutex::new(None),
            call_timeout: self.settings().call_timeout,
            confirm_timeout: self.settings().confirm_timeout,
        };
        match queue.publisher().await {
            Ok(_) => tracing::info!(bus.queue = %queue.name, max_length, prefetch, "work queue open"),
            // The broker is away (an instance starting during an outage): the queue is
            // declared by the first publish or read once it answers.
            Err(e) if e.is_broker_failure() => {
                tracing::warn!(bus.queue = %queue.name, error = %e, "work queue not declared yet; will be on first use");
            }
            Err(e) => return Err(e),
        }
        Ok(queue)
    }
}

impl WorkQueue {
    /// The full queue name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The publishing channel, opened (confirms on, the queue declared) if there is none open.
    async fn publisher(&self) -> BusResult<Channel> {
        let mut guard = self.publisher.lock().await;
        if let Some(ch) = guard.as_ref().filter(|ch| ch.status().connected()) {
            return Ok(ch.clone());
        }
        let t = self.call_timeout;
        let ch = self.bus.open_channel().await?;
        timed("confirm select", t, ch.confirm_select(ConfirmSelectOptions::default())).await?;
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(i64::from(self.max_length)));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        timed("declare queue", t, ch.queue_declare(short(&self.name)?, QueueDeclareOptions::durable(), args)).await?;
        *guard = Some(ch.clone());
        Ok(ch)
    }

    /// Publishes one persistent message holding `items` items and waits for the broker's
    /// confirm (within the confirm timeout).
    pub async fn publish(&self, payload: &[u8], items: u64) -> BusResult<Published> {
        let mut headers = FieldTable::default();
        headers.insert(COUNT_HEADER.into(), AMQPValue::LongLongInt(i64::try_from(items).unwrap_or(i64::MAX)));
        let props = BasicProperties::default().with_delivery_mode(PERSISTENT).with_headers(headers);
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let publisher = self.publisher().await?;
        let publish = publisher.basic_publish("".into(), short(&self.name)?, options, payload, props);
        let confirm = timed("publish", self.call_timeout, publish).await?;
        match timed("confirm", self.confirm_timeout, confirm).await? {
            Confirmation::Ack(None) => Ok(Published::Stored),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => Ok(Published::Unroutable),
            Confirmation::Nack(None) => Ok(Published::Refused),
            Confirmation::NotRequested => Err(BusError::Invalid("publisher confirms are off".into())),
        }
    }

    /// The next message, waiting up to `wait` (zero: only one already delivered); `None`
    /// when none came. Subscribes first if this queue has no open consumer channel.
    pub async fn next(&self, wait: Duration) -> BusResult<Option<WorkItem>> {
        let mut guard = self.consumer.lock().await;
        if guard.as_ref().is_none_or(|(ch, _)| !ch.status().connected()) {
            *guard = None;
            // The queue is declared by the publisher channel; opening it first also makes a
            // queue deleted under us again.
            self.publisher().await?;
            let t = self.call_timeout;
            let ch = self.bus.open_channel().await?;
            timed("qos", t, ch.basic_qos(self.prefetch, BasicQosOptions::default())).await?;
            let consume =
                ch.basic_consume(short(&self.name)?, "".into(), BasicConsumeOptions::default(), FieldTable::default());
            let deliveries = timed("consume", t, consume).await?;
            *guard = Some((ch, deliveries));
        }
        let Some((_, deliveries)) = guard.as_mut() else { return Ok(None) };
        let delivery = match tokio::time::timeout(wait, deliveries.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => {
                *guard = None;
                return Err(BusError::ConsumerCancelled { queue: self.name.clone() });
            }
            Ok(Some(Err(e))) => {
                *guard = None;
                return Err(e.into());
            }
            Ok(Some(Ok(d))) => d,
        };
        let items = int_header(delivery.properties.headers().as_ref(), COUNT_HEADER).unwrap_or(1);
        Ok(Some(WorkItem {
            tag: WorkTag(delivery.acker),
            payload: delivery.data,
            items: u64::try_from(items).unwrap_or(1),
        }))
    }

    /// Removes these messages for good. Those whose channel has closed since they were taken
    /// are back in the queue already: the others are acked, then this fails with
    /// [`BusError::ChannelClosed`].
    pub async fn ack(&self, tags: &[WorkTag]) -> BusResult<()> {
        self.settle(tags, |a| a.ack(BasicAckOptions::default())).await
    }

    /// Hands these messages back to the queue (redelivered, to any consumer); those whose
    /// channel has closed are back already (and the call fails as [`ack`](Self::ack) does).
    pub async fn nack(&self, tags: &[WorkTag]) -> BusResult<()> {
        let requeue = BasicNackOptions { requeue: true, multiple: false };
        self.settle(tags, |a| a.nack(requeue)).await
    }

    async fn settle<'a, F, Fut>(&self, tags: &'a [WorkTag], how: F) -> BusResult<()>
    where
        F: Fn(&'a Acker) -> Fut,
        Fut: Future<Output = lapin::Result<bool>>,
    {
        let mut gone = false;
        for WorkTag(acker) in tags {
            gone |= !timed("settle", self.call_timeout, how(acker)).await?;
        }
        if gone { Err(BusError::ChannelClosed { queue: self.name.clone() }) } else { Ok(()) }
    }

    /// Messages ready in the queue (not counting those delivered and not yet acked).
    pub async fn ready(&self) -> BusResult<u32> {
        let passive = QueueDeclareOptions::default().passive();
        let publisher = self.publisher().await?;
        let declare = publisher.queue_declare(short(&self.name)?, passive, FieldTable::default());
        Ok(timed("declare queue", self.call_timeout, declare).await?.message_count())
    }

    /// Deletes the queue, messages and all (tests, decommissioning).
    pub async fn delete(&self) -> BusResult<()> {
        let publisher = self.publisher().await?;
        let delete = publisher.queue_delete(short(&self.name)?, QueueDeleteOptions::default());
        timed("delete queue", self.call_timeout, delete).await.map(|_| ())
    }
}
