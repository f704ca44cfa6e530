//! The relay: moves each shard's pending outbox events onto the events exchange, confirmed.
//!
//! Delivery is **at least once**. An event is marked dispatched only after the broker has
//! confirmed it (so it sits on disk in every durable queue bound for its type); a relay that
//! dies between the confirm and the mark, a mark that fails, or two instances relaying the same
//! shard at once all publish the event again. Consumers therefore dedupe by event id (see
//! [`apply_once`](super::apply_once)). Within one relay, events of a shard are published in
//! outbox order on one channel, so a queue receives them in order; retries of failed events
//! (see the consumer) are the exception.
//!
//! Events whose type no queue is bound for are dropped by the broker, as a topic exchange
//! does: a consumer declares its durable queue (by calling `consume` once) before it relies on
//! receiving anything, and from then on the queue holds events while the consumer is away.

use std::sync::Arc;
use std::time::Duration;

use flashback_store::{OrderShard, OutboxEvent};
use lapin::Confirmation;
use lapin::options::BasicPublishOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::connection::RabbitBus;
use super::error::{BusError, BusResult, timed};
use super::message;

impl RabbitBus {
    /// Publishes `events` to `<prefix>.events` (persistent, routing key = event type,
    /// `message_id` = event id) and waits, within the confirm timeout, for the broker to confirm
    /// every one. A nack or a timeout is an error; some of the events may have been taken by
    /// the broker all the same. Marks nothing: [`relay_once`](Self::relay_once) does that.
    pub async fn publish_events(&self, events: &[OutboxEvent]) -> BusResult<()> {
        let settings = self.settings();
        let channel = self.publisher().await?;
        let exchange = self.events_exchange();
        let mut confirms = Vec::with_capacity(events.len());
        for event in events {
            let props = message::properties(event)?;
            let key = props.kind().clone().unwrap_or_default();
            let publish = channel.basic_publish(
                exchange.as_str().into(),
                key,
                BasicPublishOptions::default(),
                event.payload.as_bytes(),
                props,
            );
            confirms.push((event.id, timed("publish", settings.call_timeout, publish).await?));
        }
        let waits = confirms.into_iter().map(|(id, confirm)| async move { (id, confirm.await) });
        let outcomes = timed("confirm", settings.confirm_timeout, async {
            Ok::<_, BusError>(futures::future::join_all(waits).await)
        })
        .await?;
        for (event_id, outcome) in outcomes {
            match outcome? {
                Confirmation::Ack(_) => {}
                Confirmation::Nack(_) => return Err(BusError::Nacked { event_id }),
                Confirmation::NotRequested => {
                    return Err(BusError::Invalid("publisher confirms are off on the relay channel".into()));
                }
            }
        }
        Ok(())
    }

    /// Relays up to `limit` of the shard's pending events, oldest first: publishes them, waits
    /// for every confirm, then marks them dispatched. Returns how many were marked. On any
    /// error nothing is marked, and the next round publishes the same events again.
    pub async fn relay_once(&self, shard: &dyn OrderShard, limit: u32) -> BusResult<usize> {
        let events = shard.outbox_pending(limit).await?;
        if events.is_empty() {
            return Ok(0);
        }
        self.publish_events(&events).await?;
        // A crash here republishes the batch on restart: at least once, never lost.
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        shard.mark_dispatched(&ids).await?;
        tracing::debug!(relay.events = ids.len(), "relayed outbox events");
        Ok(ids.len())
    }

    /// Relays every shard until `cancel` fires: a round over all shards, then again at once if
    /// any shard had a full batch, otherwise after `interval`. After an error it waits with
    /// exponential backoff (from `interval`, at least 100 ms, up to `max_backoff`); a lost
    /// connection is made again by the bus on the next round. A shard whose store fails does
    /// not hold up the others within a round.
    pub fn spawn_relay(
        &self,
        shards: Vec<Arc<dyn OrderShard>>,
        interval: Duration,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let bus = self.clone();
        tokio::spawn(async move {
            let settings = bus.settings().clone();
            let mut failures: u32 = 0;
            while !cancel.is_cancelled() {
                let pause = match relay_round(&bus, &shards, settings.relay_batch, &cancel).await {
                    Ok(true) => {
                        failures = 0;
                        continue;
                    }
                    Ok(false) => {
                        failures = 0;
                        interval
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %e, relay.failures = failures, "outbox relay failed; will retry");
                        backoff(interval, settings.max_backoff, failures)
                    }
                };
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
        })
    }
}

/// One pass over every shard; true if some shard had a full batch (more may be waiting).
async fn relay_round(
    bus: &RabbitBus,
    shards: &[Arc<dyn OrderShard>],
    batch: u32,
    cancel: &CancellationToken,
) -> BusResult<bool> {
    let mut busy = false;
    let mut store_error = None;
    for shard in shards {
        if cancel.is_cancelled() {
            break;
        }
        match bus.relay_once(shard.as_ref(), batch).await {
            Ok(n) => busy |= u32::try_from(n).map_or(true, |n| n >= batch),
            Err(e) if e.is_broker_failure() => return Err(e),
            Err(e) => {
                store_error.get_or_insert(e);
            }
        }
    }
    store_error.map_or(Ok(busy), Err)
}

/// `interval` (at least 100 ms) doubled per consecutive failure after the first, capped.
fn backoff(interval: Duration, max: Duration, failures: u32) -> Duration {
    let base = interval.max(Duration::from_millis(100));
    base.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(max.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_interval_and_stops_at_the_cap() {
        let (i, max) = (Duration::from_millis(200), Duration::from_secs(1));
        let steps: Vec<u128> = (1..=5).map(|n| backoff(i, max, n).as_millis()).collect();
        assert_eq!(steps, [200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(Duration::ZERO, max, 1), Duration::from_millis(100));
        assert_eq!(backoff(i, max, u32::MAX), max);
    }
}
