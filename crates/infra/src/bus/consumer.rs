//! Consumers: a durable queue bound to the events exchange, bounded prefetch, manual acks,
//! retries counted in a header, and dead-lettering after the last attempt.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::{FutureExt, StreamExt, TryStreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Confirmation};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::connection::RabbitBus;
use super::error::{BusError, BusResult, HandlerError, timed};
use super::message::{self, Delivery};

/// A running consumer. Dropping it leaves the consumer running until its token is cancelled.
#[derive(Debug)]
pub struct Subscription {
    queue: String,
    task: JoinHandle<BusResult<()>>,
}

impl Subscription {
    /// The full name of its queue (`<prefix>.<name>`).
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Whether it has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for it to stop: `Ok` after its token was cancelled, the error that ended it
    /// otherwise. A panic inside it is resumed here.
    pub async fn wait(self) -> BusResult<()> {
        match self.task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        }
    }

    /// Kills it on the spot, as a crash would: handlers in flight are dropped unfinished and
    /// their deliveries are never settled, so the broker redelivers them (flagged
    /// `redelivered`) once the channel is gone.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// The first pause after a handler found a dependency unavailable; it doubles up to
/// [`TRANSIENT_MAX_PAUSE`], so a dependency that returns is used again within a second.
const TRANSIENT_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest pause between tries of an event waiting for a dependency.
const TRANSIENT_MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

struct Ctx {
    channel: Channel,
    cancel: CancellationToken,
    queue: String,
    max_attempts: u32,
    bus: RabbitBus,
}

impl RabbitBus {
    /// Starts consuming events from the durable queue `<prefix>.<queue_name>`, declared here
    /// (with `x-dead-letter-exchange` = `<prefix>.dead`) and bound to `<prefix>.events` with each
    /// of `binding_keys` (topic patterns: `order.paid`, `order.*`, `#`).
    ///
    /// At most `prefetch` deliveries are unacked at once, and as many handlers run at once.
    /// When `handler` returns `Ok`, the delivery is acked. When it fails because a dependency is
    /// unavailable ([`HandlerError::is_transient`]), that is not the event's fault: the handler
    /// runs again after a pause that doubles from 100 ms up to 1 s, holding the delivery, for as
    /// long as it takes (the consumer, at `prefetch` held deliveries, takes no more meanwhile),
    /// and no attempt is counted. When it fails otherwise (or panics), after the
    /// retry delay a copy with [`ATTEMPT_HEADER`](super::ATTEMPT_HEADER) one higher is published
    /// straight to this queue, confirmed, and the original acked; once `max_attempts` attempts
    /// have failed the delivery is rejected without requeue and dead-letters to
    /// `<prefix>.dead-letters`. A message that is not a well-formed event dead-letters at once.
    /// Retries go to the back of the queue, so they overtake nothing but may be overtaken.
    ///
    /// Delivery is at least once: the relay may publish an event twice, and a consumer that
    /// crashes before acking gets it again. The handler makes its effect idempotent, typically
    /// with [`apply_once`](super::apply_once):
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use std::sync::atomic::{AtomicU64, Ordering};
    /// # use flashback_infra::bus::{RabbitBus, apply_once, BusResult, Delivery, Subscription};
    /// # use flashback_store::{OrderShard, StoreError};
    /// # async fn example(bus: RabbitBus, shard: Arc<dyn OrderShard>, paid_total: Arc<AtomicU64>,
    /// #     cancel: tokio_util::sync::CancellationToken) -> BusResult<Subscription> {
    /// bus.consume("analytics", &["order.paid"], 16, 5, move |d: Delivery| {
    ///     let (shard, paid_total) = (Arc::clone(&shard), Arc::clone(&paid_total));
    ///     async move {
    ///         apply_once(shard.as_ref(), "analytics", d.event_id, || async {
    ///             paid_total.fetch_add(1, Ordering::Relaxed); // the effect
    ///             Ok::<_, StoreError>(())
    ///         })
    ///         .await
    ///         .map(|_applied| ())
    ///     }
    /// }, cancel).await
    /// # }
    /// ```
    ///
    /// When `cancel` fires the consumer takes no more deliveries, lets handlers in flight finish
    /// (for at most the call timeout; unfinished ones are redelivered later), closes its channel
    /// and ends with `Ok`. It ends with an error if the broker cancels it or its channel fails;
    /// whoever started it starts it again, on a new bus if the connection is gone.
    pub async fn consume<H, Fut, E>(
        &self,
        queue_name: &str,
        binding_keys: &[&str],
        prefetch: u16,
        max_attempts: u32,
        handler: H,
        cancel: CancellationToken,
    ) -> BusResult<Subscription>
    where
        H: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: HandlerError + Send + 'static,
    {
        if prefetch == 0 || max_attempts == 0 {
            return Err(BusError::Invalid("prefetch and max_attempts must be at least 1".into()));
        }
        let queue = self.queue_name(queue_name);
        let queue_short = ShortString::try_new(queue.as_str()).map_err(|e| BusError::Invalid(e.to_string()))?;
        let t = self.settings().call_timeout;
        let channel = self.open_channel().await?;
        // Confirms on this channel cover the retry copies it publishes.
        timed("confirm select", t, channel.confirm_select(ConfirmSelectOptions::default())).await?;
        let mut args = FieldTable::default();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dead_exchange().into()));
        let declare = channel.queue_declare(queue_short.clone(), QueueDeclareOptions::durable(), args);
        timed("declare queue", t, declare).await?;
        for key in binding_keys {
            let key = ShortString::try_new(*key).map_err(|e| BusError::Invalid(e.to_string()))?;
            let exchange = self.events_exchange().into();
            let bind = channel.queue_bind(
                queue_short.clone(),
                exchange,
                key,
                QueueBindOptions::default(),
                FieldTable::default(),
            );
            timed("bind queue", t, bind).await?;
        }
        timed("qos", t, channel.basic_qos(prefetch, BasicQosOptions::default())).await?;
        let consumer =
            channel.basic_consume(queue_short, "".into(), BasicConsumeOptions::default(), FieldTable::default());
        let consumer = timed("consume", t, consumer).await?;
        tracing::info!(bus.queue = %queue, prefetch, max_attempts, "consumer started");
        let ctx =
            Arc::new(Ctx { channel, cancel: cancel.clone(), queue: queue.clone(), max_attempts, bus: self.clone() });
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            let work = consumer
                .map_err(BusError::from)
                .take_until(cancel.clone().cancelled_owned())
                .try_for_each_concurrent(usize::from(prefetch), |d| {
                    let (ctx, handler) = (Arc::clone(&ctx), Arc::clone(&handler));
                    async move { settle(&ctx, handler.as_ref(), d).await }
                });
            let grace = async {
                cancel.cancelled().await;
                tokio::time::sleep(t).await;
            };
            let result = tokio::select! {
                r = work => r,
                () = grace => {
                    tracing::warn!(bus.queue = %ctx.queue, "handlers still running at shutdown; they will be redelivered");
                    Ok(())
                }
            };
            let closed = timed("close channel", t, ctx.channel.close(200, "OK".into())).await;
            match result {
                Err(e) => Err(e),
                Ok(()) if cancel.is_cancelled() => closed,
                Ok(()) => Err(BusError::ConsumerCancelled { queue: ctx.queue.clone() }),
            }
        });
        Ok(Subscription { queue, task })
    }
}

/// Runs the handler on one delivery and acks, retries or dead-letters it.
async fn settle<H, Fut, E>(ctx: &Ctx, handler: &H, amqp: lapin::message::Delivery) -> BusResult<()>
where
    H: Fn(Delivery) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: HandlerError,
{
    let t = ctx.bus.settings().call_timeout;
    let delivery = match message::decode(&amqp) {
        Ok(d) => d,
        Err(reason) => {
            tracing::error!(bus.queue = %ctx.queue, reason, "not an event; dead-lettering it");
            return reject(ctx, &amqp).await;
        }
    };
    let (event_id, attempt) = (delivery.event_id, delivery.attempt);
    let mut pause = TRANSIENT_FIRST_PAUSE;
    let error = loop {
        let span = tracing::info_span!("bus.handle", event.id = event_id, event.r#type = %delivery.event_type, attempt);
        let outcome = AssertUnwindSafe(handler(delivery.clone())).catch_unwind().instrument(span).await;
        match outcome {
            Ok(Ok(())) => {
                let acked = timed("ack", t, amqp.acker.ack(BasicAckOptions::default())).await?;
                return if acked { Ok(()) } else { Err(BusError::ChannelClosed { queue: ctx.queue.clone() }) };
            }
            Ok(Err(e)) if e.is_transient() => {
                tracing::warn!(bus.queue = %ctx.queue, event.id = event_id, error = %e, pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                    "a dependency is unavailable; the event waits for it");
                tokio::select! {
                    // Left unacked: the broker gives it to a consumer again once the channel closes.
                    () = ctx.cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(TRANSIENT_MAX_PAUSE);
            }
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break "handler panicked".to_owned(),
        }
    };
    if attempt >= ctx.max_attempts {
        tracing::error!(bus.queue = %ctx.queue, event.id = event_id, attempt, error, "event failed its last attempt; dead-lettering it");
        return reject(ctx, &amqp).await;
    }
    tracing::warn!(bus.queue = %ctx.queue, event.id = event_id, attempt, error, "event failed; will retry");
    tokio::time::sleep(ctx.bus.settings().retry_delay).await;
    let copy = message::with_attempt(&amqp.properties, attempt + 1);
    let publish = ctx.channel.basic_publish(
        "".into(),
        ctx.queue.as_str().into(),
        BasicPublishOptions::default(),
        &amqp.data,
        copy,
    );
    let confirm = timed("publish", t, publish).await?;
    match timed("confirm", ctx.bus.settings().confirm_timeout, confirm).await? {
        Confirmation::Ack(_) => {}
        Confirmation::Nack(_) | Confirmation::NotRequested => return Err(BusError::Nacked { event_id }),
    }
    let acked = timed("ack", t, amqp.acker.ack(BasicAckOptions::default())).await?;
    if acked { Ok(()) } else { Err(BusError::ChannelClosed { queue: ctx.queue.clone() }) }
}

async fn reject(ctx: &Ctx, amqp: &lapin::message::Delivery) -> BusResult<()> {
    let t = ctx.bus.settings().call_timeout;
    let rejected = timed("reject", t, amqp.acker.reject(BasicRejectOptions { requeue: false })).await?;
    if rejected { Ok(()) } else { Err(BusError::ChannelClosed { queue: ctx.queue.clone() }) }
}
