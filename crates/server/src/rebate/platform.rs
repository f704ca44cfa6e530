//! The platform's own orders as a rebate source: the trade core's events (`order.paid`,
//! `order.completed`, `order.refunded`) become rows of source `platform`, attributed to the
//! buyer directly, with a commission of `rebate.platform_commission_bp` of what was paid. The
//! platform funds these rebates itself (the ledger's rebate-expense account, not a network's
//! receivable). Paid → estimated; completed → settled (then available after the hold);
//! refunded before completion → invalid; refunded after completion → reversed.
//!
//! Delivered by the outbox like every subscriber (at least once); the ingest path makes a
//! repeated event change nothing.

use async_trait::async_trait;
use flashback_core::rebate::lifecycle::{NetworkStatus, Report};
use flashback_core::{Money, UserId};
use flashback_store::OutboxEvent;
use serde_json::Value;

use super::ingest::{self, LineReport, PLATFORM};
use crate::AppState;
use crate::trade::TradeError;
use crate::trade::outbox::Subscriber;

/// Turns order events into platform rebate rows.
#[derive(Debug)]
pub struct PlatformRebates;

fn text(body: &Value, pointer: &str) -> Option<String> {
    body.pointer(pointer).and_then(Value::as_str).map(str::to_owned)
}

#[async_trait]
impl Subscriber for PlatformRebates {
    fn name(&self) -> &'static str {
        "rebates"
    }

    fn event_types(&self) -> &'static [&'static str] {
        &["order.paid", "order.completed", "order.refunded"]
    }

    async fn handle(&self, state: &AppState, event: &OutboxEvent, body: &Value) -> Result<(), TradeError> {
        if state.config.rebate.platform_commission_bp == 0 {
            return Ok(());
        }
        let bad = |what: &str| TradeError::Unexpected(anyhow::anyhow!("order event without {what}"));
        let order = text(body, "/order/id").ok_or_else(|| bad("id"))?;
        let buyer = text(body, "/order/buyer_id").and_then(|b| UserId::parse(&b).ok()).ok_or_else(|| bad("buyer"))?;
        let paid = Money::from_minor(body.pointer("/order/payable_minor").and_then(Value::as_i64).unwrap_or(0))
            .map_err(|e| TradeError::Unexpected(e.into()))?;
        let rate = flashback_core::BasisPoints::new(state.config.rebate.platform_commission_bp)
            .map_err(|e| TradeError::Unexpected(e.into()))?;
        let commission = rate.share_of(paid);
        let at = event.created_at_ms;
        let (status, settled, refunded) = match event.event_type.as_str() {
            "order.paid" => (NetworkStatus::Paid, Money::ZERO, Money::ZERO),
            "order.completed" => (NetworkStatus::Settled, commission, Money::ZERO),
            "order.refunded" if body["previous_state"] == "completed" => {
                (NetworkStatus::Settled, commission, commission)
            }
            "order.refunded" => (NetworkStatus::Invalid, Money::ZERO, Money::ZERO),
            _ => return Ok(()),
        };
        let settled_at = match (status, refunded.minor()) {
            (NetworkStatus::Settled, 0) => Some(at),
            // A refund after completion keeps the settlement time the completion recorded.
            (NetworkStatus::Settled, _) => {
                state.store.rebate_order(PLATFORM, &order).await?.and_then(|r| r.settled_at_ms).or(Some(at))
            }
            _ => None,
        };
        let line = LineReport {
            source: PLATFORM.into(),
            line_key: order.clone(),
            parent_key: order,
            item_id: text(body, "/order/lines/0/product_id").unwrap_or_default(),
            item_title: text(body, "/order/lines/0/sku").unwrap_or_default().chars().take(255).collect(),
            category: None,
            tracking: None,
            buyer: Some(buyer),
            report: Report {
                status,
                estimate: commission,
                settled,
                refunded,
                modified_ms: at,
                settled_at_ms: settled_at,
            },
            paid,
            click_ms: None,
            paid_at_ms: Some(at),
        };
        match ingest::apply(state, &line).await {
            Ok(_) => Ok(()),
            Err(super::RebateError::Invalid(why)) => {
                // Nothing a retry would fix: keep it for review and let the event go.
                ingest::reject(state, PLATFORM, Some(&line.line_key), &why, &body.to_string()).await;
                Ok(())
            }
            Err(super::RebateError::Store(e) | super::RebateError::Ledger(crate::rebate::LedgerError::Store(e))) => {
                Err(TradeError::Store(e))
            }
            Err(e) => Err(TradeError::Unexpected(anyhow::anyhow!("platform rebate: {e}"))),
        }
    }
}
