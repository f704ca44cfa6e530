//! The outbox subscriber that turns order events into minute rollups (and per-second figures).
//!
//! `order.paid` adds a paid order, its total as GMV and its lines per product; `order.cancelled`
//! and `order.refunded` count as such (a refund's money is the order's total, the same basis as
//! GMV; GMV itself is gross and is not reduced). Each event lands in the minute it occurred in,
//! so where it is counted does not depend on when it was delivered. The embedded dispatcher
//! hands it each shard's whole batch (up to 200 events): one transaction and one sync per
//! batch instead of per event; through RabbitMQ it gets one event at a time.

use async_trait::async_trait;
use flashback_store::{OutboxEvent, RollupDelta, SkuDelta};
use serde_json::Value;

use crate::AppState;
use crate::trade::TradeError;
use crate::trade::outbox::Subscriber;

/// Counts order events into the analytics rollups, once per event id.
#[derive(Debug)]
pub struct Consumer;

/// The rollup increments one event causes; `None` for events analytics does not count.
pub fn delta(event: &OutboxEvent, body: &Value) -> Option<RollupDelta> {
    let order = &body["order"];
    let total = order["total_minor"].as_i64().unwrap_or(0);
    let at = body["occurred_at_ms"].as_i64().filter(|t| *t > 0).unwrap_or(event.created_at_ms);
    let mut d = RollupDelta { event_id: event.id, minute_ms: at.div_euclid(60_000) * 60_000, ..Default::default() };
    match event.event_type.as_str() {
        "order.paid" => {
            d.paid_orders = 1;
            d.gmv_minor = total;
            d.skus = order["lines"]
                .as_array()
                .map(|lines| {
                    lines
                        .iter()
                        .map(|l| {
                            let units = l["quantity"].as_i64().unwrap_or(0);
                            SkuDelta {
                                product_id: l["product_id"].as_str().and_then(|p| p.parse().ok()).unwrap_or(0),
                                sku: l["sku"].as_str().unwrap_or_default().chars().take(64).collect(),
                                units,
                                gmv_minor: units.saturating_mul(l["unit_price_minor"].as_i64().unwrap_or(0)),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            d.units = d.skus.iter().map(|s| s.units).sum();
        }
        "order.cancelled" => d.cancelled_orders = 1,
        "order.refunded" => {
            d.refunded_orders = 1;
            d.refunded_minor = total;
        }
        _ => return None,
    }
    Some(d)
}

/// When the event happened, Unix ms (for the per-second figures).
fn occurred(event: &OutboxEvent, body: &Value) -> i64 {
    body["occurred_at_ms"].as_i64().filter(|t| *t > 0).unwrap_or(event.created_at_ms)
}

#[async_trait]
impl Subscriber for Consumer {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn event_types(&self) -> &'static [&'static str] {
        &["order.paid", "order.cancelled", "order.refunded"]
    }

    async fn handle(&self, state: &AppState, event: &OutboxEvent, body: &Value) -> Result<(), TradeError> {
        self.handle_batch(state, &[(event, body)]).await.pop().unwrap_or(Ok(()))
    }

    fn batches(&self) -> bool {
        true
    }

    /// Counts a whole batch in one transaction (one commit, one sync, per dispatcher batch).
    async fn handle_batch(&self, state: &AppState, events: &[(&OutboxEvent, &Value)]) -> Vec<Result<(), TradeError>> {
        let counted: Vec<_> = events.iter().filter_map(|(e, b)| Some((delta(e, b)?, occurred(e, b)))).collect();
        let deltas: Vec<RollupDelta> = counted.iter().map(|(d, _)| d.clone()).collect();
        if deltas.is_empty() {
            return events.iter().map(|_| Ok(())).collect();
        }
        let fresh = match state.store.apply_rollups(&deltas).await {
            Ok(fresh) => fresh,
            Err(e) => {
                // Each event gets its own copy of the failure; an unavailable store stays one.
                let failure = |e: &flashback_store::StoreError| match e {
                    flashback_store::StoreError::Unavailable(_) => {
                        TradeError::Store(flashback_store::StoreError::unavailable())
                    }
                    other => TradeError::Unexpected(anyhow::anyhow!("analytics: {other}")),
                };
                return events.iter().map(|_| Err(failure(&e))).collect();
            }
        };
        for ((d, at), new) in counted.iter().zip(fresh) {
            state.analytics.note(new);
            if new && d.paid_orders > 0 {
                state.analytics.seconds().record(*at, d.paid_orders, d.gmv_minor);
            }
        }
        tracing::debug!(events = events.len(), counted = deltas.len(), "analytics counted a batch");
        events.iter().map(|_| Ok(())).collect()
    }
}
