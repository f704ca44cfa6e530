//! `flashback audit flash-sale <id>`: the sale's invariants against the live stores.
//!
//! - Units: reserved + ordered ≤ stock; while open, what the engine may still sell is
//!   stock − (reserved + ordered); once ended, returned + reserved + ordered = stock. With the
//!   `sql` engine its counter must equal stock − (reserved + ordered) while the sale is open.
//! - No buyer holds more than the per-user limit.
//! - Every accepted reservation is exactly one order or one recorded release: an `ordered`
//!   reservation's order exists, names it, and is not cancelled; a `released` one's order (if it
//!   got one) is cancelled or refunded; `reserved` ones are still queued and only counted.

use std::collections::HashMap;

use flashback_core::{OrderState, SaleId};
use flashback_store::{ReservationStatus, SaleState};
use serde::Serialize;

use crate::AppState;
use crate::config::FlashEngine;
use crate::trade::TradeError;

/// The result of a flash-sale audit.
#[derive(Debug, Default, Serialize)]
pub struct FlashAudit {
    /// Units carved out for the sale.
    pub stock: i64,
    /// Units in reservations still waiting for their order.
    pub queued: i64,
    /// Units in reservations that became orders.
    pub ordered: i64,
    /// Units given back.
    pub released: i64,
    /// Units returned to inventory when the sale ended (plus later releases).
    pub returned: i64,
    /// Every broken invariant.
    pub violations: Vec<String>,
}

/// Runs every check for one sale.
pub async fn audit(state: &AppState, id: SaleId) -> Result<FlashAudit, TradeError> {
    let sale = state.store.flash_sale(id).await?.ok_or_else(|| TradeError::Invalid(format!("no flash sale {id}")))?;
    let reservations = state.store.sale_reservations(id).await?;
    let mut a = FlashAudit { stock: sale.stock, returned: sale.returned_units, ..FlashAudit::default() };
    let mut per_user: HashMap<_, i64> = HashMap::new();
    for r in &reservations {
        match r.status {
            ReservationStatus::Reserved => a.queued += r.quantity,
            ReservationStatus::Ordered => a.ordered += r.quantity,
            ReservationStatus::Released => a.released += r.quantity,
        }
        if r.status != ReservationStatus::Released {
            *per_user.entry(r.user_id).or_default() += r.quantity;
        }
        let order = match r.order_id {
            Some(o) => state.shards.for_order(o).order(o).await?,
            None => None,
        };
        match (r.status, &order) {
            (ReservationStatus::Ordered, None) => {
                a.violations.push(format!("reservation {} is ordered but its order is missing", r.id))
            }
            (ReservationStatus::Ordered, Some(o)) if o.flash_reservation != Some(r.id) => {
                a.violations.push(format!("order {} does not name reservation {}", o.id, r.id));
            }
            (ReservationStatus::Ordered, Some(o)) if o.state == OrderState::Cancelled => {
                a.violations.push(format!("order {} is cancelled but reservation {} still holds units", o.id, r.id));
            }
            (ReservationStatus::Released, Some(o))
                if !matches!(o.state, OrderState::Cancelled | OrderState::Refunded) =>
            {
                a.violations.push(format!("reservation {} was released but its order {} is {}", r.id, o.id, o.state));
            }
            _ => {}
        }
    }
    let held = a.queued + a.ordered;
    if held > sale.stock {
        a.violations.push(format!("oversold: {held} units held of {}", sale.stock));
    }
    // At the end, returned = stock − held; each later release moves units from held to
    // returned, so the sum stays the stock.
    if sale.state == SaleState::Ended && sale.returned_units + held != sale.stock {
        a.violations.push(format!("ended sale: returned {} + held {held} ≠ stock {}", sale.returned_units, sale.stock));
    }
    if sale.state == SaleState::Open && state.config.flash_sale.engine == FlashEngine::Sql {
        let counter = state.store.sale_remaining_counter(id).await?;
        if counter + held != sale.stock {
            a.violations.push(format!("sql counter {counter} + held {held} ≠ stock {}", sale.stock));
        }
    }
    if sale.state == SaleState::Open
        && let Some(book) = engine_book(state, id).await?
        && book.remaining + book.in_flight + held != sale.stock
    {
        a.violations.push(format!(
            "{} book: {} left + {} not yet recorded + held {held} ≠ stock {}",
            state.flash.engine.name(),
            book.remaining,
            book.in_flight,
            sale.stock
        ));
    }
    for (user, n) in per_user {
        if n > sale.per_user_limit {
            a.violations.push(format!("user {user} holds {n}, above the limit of {}", sale.per_user_limit));
        }
    }
    Ok(a)
}

/// An engine's own book of a sale, read when it agrees with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EngineBook {
    remaining: i64,
    in_flight: i64,
}

/// Reads the engine's book with the store's held units in between, until two reads agree
/// (purchases or imports racing the audit move units between the two): the book to compare.
async fn engine_book(state: &AppState, id: SaleId) -> Result<Option<EngineBook>, TradeError> {
    let read = || async {
        state
            .flash
            .engine
            .book(id)
            .await
            .map(|b| b.map(|(remaining, in_flight)| EngineBook { remaining, in_flight }))
            .map_err(|e| TradeError::Unexpected(anyhow::anyhow!("the engine did not answer: {e:?}")))
    };
    let mut last = read().await?;
    for _ in 0..20 {
        let held = state.store.sale_taken_units(id).await?;
        let again = read().await?;
        let settled = state.store.sale_taken_units(id).await?;
        if again == last && held == settled {
            return Ok(again);
        }
        last = again;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(last)
}
