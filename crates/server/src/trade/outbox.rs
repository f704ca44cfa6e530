//! The embedded outbox dispatcher: delivers each shard's events, oldest first, to in-process
//! subscribers, and marks them dispatched once every interested subscriber has handled them.
//!
//! Delivery is at least once; subscribers make their effects idempotent (compare-and-set on
//! reservations, points keyed by a reference), so a redelivery after a crash changes nothing.
//! An event whose subscriber keeps failing stays pending and is retried every tick; it is
//! logged at error level from its fifth failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flashback_core::{OrderId, Points, UserId};
use flashback_store::{OrderShard, OutboxEvent};
use serde_json::Value;

use super::TradeError;
use crate::AppState;

/// Something that reacts to domain events.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// A stable name (used as the consumer id).
    fn name(&self) -> &'static str;
    /// The event types it handles (also its queue's routing keys on RabbitMQ).
    fn event_types(&self) -> &'static [&'static str];
    /// Whether it handles events of this type.
    fn wants(&self, event_type: &str) -> bool {
        self.event_types().contains(&event_type)
    }
    /// Applies the event; must be idempotent.
    async fn handle(&self, state: &AppState, event: &OutboxEvent, body: &Value) -> Result<(), TradeError>;
    /// Whether the embedded dispatcher may hand it a shard's whole batch at once, ahead of the
    /// other subscribers (for effects that do not depend on theirs, such as analytics).
    fn batches(&self) -> bool {
        false
    }
    /// Applies several events (oldest first); answers each one's outcome. Must be idempotent.
    async fn handle_batch(&self, state: &AppState, events: &[(&OutboxEvent, &Value)]) -> Vec<Result<(), TradeError>> {
        let mut out = Vec::with_capacity(events.len());
        for (event, body) in events {
            out.push(self.handle(state, event, body).await);
        }
        out
    }
}

fn order_id(body: &Value) -> Result<OrderId, TradeError> {
    body["order"]["id"]
        .as_str()
        .and_then(|s| OrderId::parse(s).ok())
        .ok_or_else(|| TradeError::Unexpected(anyhow::anyhow!("event without order id")))
}

/// Finishes the stock side of each order change (the guarantee behind the synchronous step
/// that usually did it already).
#[derive(Debug)]
pub struct StockSteps;

#[async_trait]
impl Subscriber for StockSteps {
    fn name(&self) -> &'static str {
        "stock"
    }

    fn event_types(&self) -> &'static [&'static str] {
        &["order.paid", "order.cancelled", "order.refunded"]
    }

    async fn handle(&self, state: &AppState, event: &OutboxEvent, body: &Value) -> Result<(), TradeError> {
        let id = order_id(body)?;
        match event.event_type.as_str() {
            "order.paid" => {
                state.store.settle(id).await?;
            }
            "order.cancelled" => {
                state.store.release(id, false).await?;
                give_back_flash(state, body).await?;
            }
            // Refunded before shipping: the goods go back on sale; after shipping they do not.
            "order.refunded" if body["previous_state"] == "paid" => {
                state.store.release(id, true).await?;
                give_back_flash(state, body).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

async fn give_back_flash(state: &AppState, body: &Value) -> Result<(), TradeError> {
    if let Some(r) = body["order"]["flash_reservation_id"].as_str().and_then(|s| s.parse::<i64>().ok()) {
        crate::flash_sale::orders::give_back(state, r).await?;
    }
    Ok(())
}

/// Awards points when an order completes, once per order. Never on the order's path: a failure
/// here delays only the points.
#[derive(Debug)]
pub struct PointsAward;

#[async_trait]
impl Subscriber for PointsAward {
    fn name(&self) -> &'static str {
        "points"
    }

    fn event_types(&self) -> &'static [&'static str] {
        &["order.completed"]
    }

    async fn handle(&self, state: &AppState, _event: &OutboxEvent, body: &Value) -> Result<(), TradeError> {
        let id = order_id(body)?;
        let buyer = body["order"]["buyer_id"]
            .as_str()
            .and_then(|s| UserId::parse(s).ok())
            .ok_or_else(|| TradeError::Unexpected(anyhow::anyhow!("event without buyer")))?;
        let paid = body["order"]["payable_minor"].as_i64().unwrap_or(0);
        let award = paid / 100 * i64::from(state.config.trade.points_per_100_minor);
        if award > 0 {
            let points = Points::new(award).map_err(|e| TradeError::Unexpected(e.into()))?;
            let entry = state.ids.write_ids().entry;
            state.shards.for_buyer(buyer).add_points(entry, buyer, points, "award", &format!("award:{id}")).await?;
        }
        Ok(())
    }
}

/// The built-in subscribers.
pub fn subscribers() -> Vec<Arc<dyn Subscriber>> {
    vec![
        Arc::new(StockSteps),
        Arc::new(PointsAward),
        Arc::new(crate::rebate::platform::PlatformRebates),
        Arc::new(crate::analytics::consumer::Consumer),
    ]
}

/// Delivers one batch from one shard; returns how many events were marked dispatched.
pub async fn dispatch_once(
    state: &AppState,
    shard: &Arc<dyn OrderShard>,
    subscribers: &[Arc<dyn Subscriber>],
    failures: &mut HashMap<i64, u32>,
) -> Result<usize, TradeError> {
    let events = shard.outbox_pending(200).await?;
    let bodies: Vec<Value> = events.iter().map(|e| serde_json::from_str(&e.payload).unwrap_or(Value::Null)).collect();
    let mut failed = std::collections::HashSet::new();
    for sub in subscribers.iter().filter(|s| s.batches()) {
        let mine: Vec<_> = events.iter().zip(&bodies).filter(|(e, _)| sub.wants(&e.event_type)).collect();
        if mine.is_empty() {
            continue;
        }
        for ((event, _), result) in mine.iter().zip(sub.handle_batch(state, &mine).await) {
            if let Err(e) = result {
                failed.insert(event.id);
                note_failure(failures, event.id, sub.name(), &e);
            }
        }
    }
    let mut done = Vec::with_capacity(events.len());
    for (event, body) in events.iter().zip(&bodies) {
        let mut ok = !failed.contains(&event.id);
        for sub in subscribers.iter().filter(|s| !s.batches() && s.wants(&event.event_type)) {
            if let Err(e) = sub.handle(state, event, body).await {
                ok = false;
                note_failure(failures, event.id, sub.name(), &e);
            }
        }
        if ok {
            failures.remove(&event.id);
            done.push(event.id);
        }
    }
    shard.mark_dispatched(&done).await?;
    Ok(done.len())
}

fn note_failure(failures: &mut HashMap<i64, u32>, event: i64, subscriber: &str, e: &TradeError) {
    if flashback_infra::bus::HandlerError::is_transient(e) {
        // The store is away: no fault of the event's, and the dispatcher backs off.
        tracing::debug!(event.id = event, subscriber, error = %e, "event waits for the store");
        return;
    }
    let n = failures.entry(event).or_insert(0);
    *n += 1;
    if *n >= 5 {
        tracing::error!(event.id = event, subscriber, failures = *n, error = %e, "event keeps failing");
    } else {
        tracing::warn!(event.id = event, subscriber, error = %e, "event failed; will retry");
    }
}

/// Dispatches until every shard's outbox is empty (or an event keeps failing); returns how
/// many events were delivered. For tests and tools that need the queue drained now.
pub async fn drain(state: &AppState) -> Result<usize, TradeError> {
    let subscribers = subscribers();
    let mut failures = HashMap::new();
    let mut total = 0;
    loop {
        let mut delivered = 0;
        for shard in state.shards.all() {
            delivered += dispatch_once(state, shard, &subscribers, &mut failures).await?;
        }
        total += delivered;
        if delivered == 0 {
            return Ok(total);
        }
    }
}

/// The longest pause between dispatch rounds while a store is unavailable.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Dispatches every shard's outbox until shutdown, polling each `interval` (and at once after
/// a full batch). While a shard cannot be reached the pause doubles up to [`MAX_PAUSE`], so
/// an outage costs few attempts and a store that returns is used again within a second.
pub fn spawn(state: &AppState, interval: Duration) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let subscribers = subscribers();
        let mut failures = HashMap::new();
        let mut pause = interval;
        loop {
            let (mut busy, mut away) = (false, false);
            for shard in state.shards.all() {
                match dispatch_once(&state, shard, &subscribers, &mut failures).await {
                    Ok(n) => busy |= n >= 200,
                    Err(e) if flashback_infra::bus::HandlerError::is_transient(&e) => away = true,
                    Err(e) => tracing::warn!(error = %e, "outbox dispatch failed; will retry"),
                }
            }
            pause = if away { (pause * 2).clamp(interval, MAX_PAUSE.max(interval)) } else { interval };
            if busy && !away {
                continue;
            }
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    })
}
