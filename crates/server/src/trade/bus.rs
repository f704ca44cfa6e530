//! Scaled out: the outbox goes to RabbitMQ instead of the in-process dispatcher. Every
//! instance runs the relay for every shard (publisher confirms make a double publish harmless,
//! and consumers dedupe) and one consumer per built-in subscriber; instances share each
//! subscriber's queue, so each event is handled by one of them.
//!
//! A consumer skips an event its subscriber already processed (the `processed_messages` record
//! on the order's shard), applies it, then records it. The effects are idempotent themselves,
//! so a crash between applying and recording only repeats a no-op.

use std::sync::Arc;
use std::time::Duration;

use flashback_core::OrderId;
use flashback_infra::bus::{Delivery, RabbitBus};
use flashback_store::OutboxEvent;
use tokio::task::JoinHandle;

use super::TradeError;
use super::outbox::{Subscriber, subscribers};
use crate::AppState;

/// Starts the relay and the consumers; they stop on shutdown.
pub fn spawn(state: &AppState, bus: &RabbitBus) -> Vec<JoinHandle<()>> {
    let mut tasks =
        vec![bus.spawn_relay(state.shards.all().to_vec(), Duration::from_millis(100), state.shutdown.clone())];
    for sub in subscribers() {
        tasks.push(tokio::spawn(supervise(state.clone(), bus.clone(), sub)));
    }
    tasks
}

/// Keeps one subscriber's consumer running, starting it again after it fails.
async fn supervise(state: AppState, bus: RabbitBus, sub: Arc<dyn Subscriber>) {
    let cancel = state.shutdown.clone();
    let events = &state.config.events;
    loop {
        let handler = {
            let (state, sub) = (state.clone(), Arc::clone(&sub));
            move |d: Delivery| handle(state.clone(), Arc::clone(&sub), d)
        };
        match bus
            .consume(sub.name(), sub.event_types(), events.prefetch, events.max_attempts, handler, cancel.clone())
            .await
        {
            Ok(subscription) => {
                if let Err(e) = subscription.wait().await {
                    tracing::warn!(subscriber = sub.name(), error = %e, "event consumer stopped; starting it again");
                }
            }
            Err(e) => tracing::warn!(subscriber = sub.name(), error = %e, "could not start event consumer; retrying"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn handle(state: AppState, sub: Arc<dyn Subscriber>, d: Delivery) -> Result<(), TradeError> {
    let order = OrderId::new(d.aggregate_id).map_err(|e| TradeError::Unexpected(e.into()))?;
    let shard = state.shards.for_order(order);
    if shard.was_processed(sub.name(), d.event_id).await? {
        return Ok(());
    }
    let body: serde_json::Value = serde_json::from_str(&d.payload).map_err(|e| TradeError::Unexpected(e.into()))?;
    let event = OutboxEvent {
        id: d.event_id,
        event_type: d.event_type.clone(),
        aggregate_id: d.aggregate_id,
        payload: d.payload.clone(),
        created_at_ms: body["occurred_at_ms"].as_i64().unwrap_or(0),
    };
    sub.handle(&state, &event, &body).await?;
    shard.record_processed(sub.name(), d.event_id).await?;
    Ok(())
}
