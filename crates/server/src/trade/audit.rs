//! `flashback audit trade`: checks the stock, reservation and points invariants against a live
//! store and reports every violation.
//!
//! - Every order's reservations match its lines and its state: held while unpaid, sold once
//!   paid (and still sold after a refund from shipped), released when cancelled.
//! - No held reservation outlives its saga (no order, or an order that is no longer unpaid)
//!   past `trade.orphan_after_ms`.
//! - Stock is never negative, and units are conserved per product: the checker reports
//!   available + held + sold so callers that know the stock put in can compare.
//! - Every points balance equals the sum of its ledger entries.

use std::collections::HashMap;

use flashback_core::{Cursor, OrderState, PageLimit, ProductId};
use flashback_store::{Order, OrderFilter, Read, ReservationState};
use serde::Serialize;

use super::{TradeError, now_ms};
use crate::AppState;

/// The result of an audit.
#[derive(Debug, Default, Serialize)]
pub struct AuditReport {
    /// Orders checked.
    pub orders: u64,
    /// Orders per state.
    pub by_state: HashMap<&'static str, u64>,
    /// Units per product: (available, held, sold).
    pub stock: HashMap<String, (i64, i64, i64)>,
    /// Every broken invariant, one line each.
    pub violations: Vec<String>,
}

async fn all_orders(state: &AppState) -> Result<Vec<Order>, TradeError> {
    let mut out = Vec::new();
    let limit = PageLimit::try_from(100).unwrap_or_default();
    for shard in state.shards.all() {
        let mut cursor = None;
        loop {
            let page = shard.orders(OrderFilter::default(), cursor, limit, Read::Primary).await?;
            let Some(last) = page.last() else { break };
            cursor = Some(Cursor { before_id: last.id.get() });
            out.extend(page);
        }
    }
    Ok(out)
}

/// Runs every check.
pub async fn audit(state: &AppState) -> Result<AuditReport, TradeError> {
    let mut report = AuditReport::default();
    for s in state.store.stock_summary().await? {
        if s.available < 0 || s.held < 0 || s.sold < 0 {
            report.violations.push(format!("product {}: negative stock {s:?}", s.product_id));
        }
        report.stock.insert(s.product_id.to_string(), (s.available, s.held, s.sold));
    }
    let orders = all_orders(state).await?;
    report.orders = orders.len() as u64;
    for order in &orders {
        *report.by_state.entry(order.state.as_str()).or_default() += 1;
        if order.flash_reservation.is_some() {
            // Its units come from a flash sale's stock; `flashback audit flash-sale` checks it.
            continue;
        }
        let reservations = state.store.reservations(order.id).await?;
        let by_product: HashMap<ProductId, _> = reservations.iter().map(|r| (r.product_id, r)).collect();
        let expected = match order.state {
            OrderState::PendingPayment => Some(ReservationState::Held),
            OrderState::Paid | OrderState::Shipped | OrderState::Completed => Some(ReservationState::Sold),
            OrderState::Cancelled => Some(ReservationState::Released),
            OrderState::Refunded => None, // released if refunded before shipping, sold after
        };
        for line in &order.lines {
            match by_product.get(&line.product_id) {
                None => report
                    .violations
                    .push(format!("order {}: no reservation for product {}", order.id, line.product_id)),
                Some(r) if r.quantity != line.quantity => report.violations.push(format!(
                    "order {}: reserved {} of product {} but the line says {}",
                    order.id,
                    r.quantity.get(),
                    line.product_id,
                    line.quantity.get()
                )),
                Some(r) if expected.is_some_and(|e| e != r.state) => report.violations.push(format!(
                    "order {} is {} but its reservation of product {} is {:?}",
                    order.id, order.state, line.product_id, r.state
                )),
                Some(r) if order.state == OrderState::Refunded && r.state == ReservationState::Held => {
                    report.violations.push(format!("order {} is refunded but still holds stock", order.id));
                }
                Some(_) => {}
            }
        }
        if reservations.len() != order.lines.len() {
            report.violations.push(format!(
                "order {}: {} reservations for {} lines",
                order.id,
                reservations.len(),
                order.lines.len()
            ));
        }
    }
    let orphan_after = i64::try_from(state.config.trade.orphan_after.as_millis()).unwrap_or(i64::MAX);
    let known: std::collections::HashSet<_> = orders.iter().map(|o| o.id).collect();
    for id in state.store.held_orders(now_ms().saturating_sub(orphan_after), 100_000).await? {
        if !known.contains(&id) {
            report.violations.push(format!("reservation for order {id} holds stock but the order does not exist"));
        }
    }
    for shard in state.shards.all() {
        for (user, balance, ledger) in shard.points_mismatches().await? {
            report.violations.push(format!("user {user}: points balance {balance} but ledger sums to {ledger}"));
        }
    }
    Ok(report)
}
