//! The consumer side of exactly-once effects: skipping events a consumer has already processed.

use flashback_store::{OrderShard, StoreError};

/// Runs `effect` unless `consumer` has already processed event `event_id`; returns whether it
/// ran now.
///
/// The record comes first ([`OrderShard::record_processed`] is an insert-if-absent keyed by
/// `(consumer, event_id)`), so the effect runs at most once per consumer however often the
/// event is delivered: with the bus's at-least-once delivery, exactly once. That holds as long
/// as the effect cannot fail once the record is written: a failure after it is returned (and
/// the event retried), but the retry finds the record and skips the effect. So use this for
/// effects that cannot fail halfway (an in-memory or cache update, a counter), and make an
/// effect that can fail idempotent on its own instead (a compare-and-set, a write keyed by the
/// event id, like `add_points` with the event id as its reference), where a repeat is harmless.
///
/// Record in the shard that owns the event (`shards.for_order(delivery.aggregate_id)`), so the
/// record and the event live and go away together.
pub async fn apply_once<F, Fut, E>(shard: &dyn OrderShard, consumer: &str, event_id: i64, effect: F) -> Result<bool, E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: From<StoreError>,
{
    if !shard.record_processed(consumer, event_id).await? {
        tracing::debug!(event.id = event_id, consumer, "event already processed; skipped");
        return Ok(false);
    }
    effect().await?;
    Ok(true)
}
