//! Orders from reservations, made asynchronously in batches: each waiting reservation becomes
//! one order on its buyer's shard, at the sale price, with the normal payment deadline. A pass
//! writes each shard's orders in one transaction (one commit for up to [`BATCH`] orders, not one
//! per order: while a storm runs, the orders share the disk and the CPU with it).
//!
//! Exactly one order per reservation: the order is written under the idempotency key
//! `flash:<reservation id>`, so a retry after a crash finds the order it made instead of making
//! another, and only then is the reservation marked `ordered` (compare-and-set).

use std::collections::HashMap;
use std::time::Duration;

use flashback_core::{OrderId, OrderState, Quantity, SaleId};
use flashback_store::{FlashReservation, FlashSale, NewOrder, Order, OrderLine, Product};

use crate::AppState;
use crate::trade::{TradeError, now_ms};

/// A reservation's id with its order and the order's event id, waiting to be written.
type Pending = (i64, (NewOrder, i64));

/// Reservations turned into orders per pass.
pub const BATCH: u32 = 500;

/// One pass: every waiting reservation (up to [`BATCH`]) becomes its order. Returns how many.
pub async fn create_orders_once(state: &AppState) -> Result<usize, TradeError> {
    use futures::StreamExt as _;
    let waiting = state.store.reservations_to_order(BATCH).await?;
    // Each sale and its product are read once per pass, not once per order.
    let mut goods: HashMap<SaleId, (FlashSale, Product)> = HashMap::new();
    for r in &waiting {
        if goods.contains_key(&r.sale_id) {
            continue;
        }
        let sale = state.store.flash_sale(r.sale_id).await?.ok_or(TradeError::Invalid("sale vanished".into()))?;
        let product =
            state.store.product(sale.product_id).await?.ok_or(TradeError::Invalid("product vanished".into()))?;
        goods.insert(r.sale_id, (sale, product));
    }
    let mut by_shard: HashMap<usize, Vec<Pending>> = HashMap::new();
    for r in &waiting {
        let Some((sale, product)) = goods.get(&r.sale_id) else { continue };
        match order_for(state, r, sale, product) {
            Ok(new) => by_shard
                .entry(state.shards.index_for_buyer(r.user_id))
                .or_default()
                .push((r.id, (new, state.ids.write_ids().event))),
            Err(e) => tracing::warn!(reservation.id = r.id, error = %e, "flash reservation cannot become an order"),
        }
    }
    let made: Vec<(i64, OrderId)> = futures::stream::iter(by_shard)
        .map(|(shard, batch)| write_batch(state, shard, batch))
        .buffer_unordered(state.config.flash_sale.order_concurrency)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    // One catalog transaction marks the whole pass (the embedded store has one writer, which
    // accepted purchases need too).
    state.store.mark_reservations_ordered(&made).await?;
    Ok(made.len())
}

/// Writes one shard's orders of a pass; on failure none are made and the next pass retries them.
async fn write_batch(state: &AppState, shard: usize, batch: Vec<Pending>) -> Vec<(i64, OrderId)> {
    let (reservations, orders): (Vec<i64>, Vec<(NewOrder, i64)>) = batch.into_iter().unzip();
    let Some(target) = state.shards.all().get(shard) else { return Vec::new() };
    match target.create_orders(&orders).await {
        Ok(ids) => reservations.into_iter().zip(ids).collect(),
        Err(e) => {
            tracing::warn!(shard, orders = orders.len(), error = %e, "flash orders not created yet; will retry");
            Vec::new()
        }
    }
}

/// The reservation's order, under its idempotency key; the caller writes it.
fn order_for(
    state: &AppState,
    r: &FlashReservation,
    sale: &FlashSale,
    product: &Product,
) -> Result<NewOrder, TradeError> {
    let quantity = Quantity::new(r.quantity).map_err(|e| TradeError::Invalid(e.to_string()))?;
    let total = sale.sale_price.checked_mul(r.quantity).ok_or_else(|| TradeError::Invalid("total too large".into()))?;
    let now = now_ms();
    let timeout = i64::try_from(state.config.trade.payment_timeout.as_millis()).unwrap_or(i64::MAX);
    let order = Order {
        id: state.ids.order(r.user_id),
        buyer: r.user_id,
        merchant: sale.merchant_id,
        state: OrderState::PendingPayment,
        lines: vec![OrderLine {
            product_id: product.id,
            sku: product.sku.clone(),
            title: product.title.clone(),
            quantity,
            unit_price: sale.sale_price,
        }],
        total,
        points_used: flashback_core::Points::ZERO,
        payable: total,
        expires_at_ms: now.saturating_add(timeout),
        created_at_ms: now,
        updated_at_ms: now,
        flash_reservation: Some(r.id),
    };
    Ok(NewOrder { order, idempotency: Some((format!("flash:{}", r.id), "flash".into())) })
}

/// Gives a flash order's units back to its sale (expired, cancelled, or refunded before
/// shipping), once, and lets the sale sell them again at once.
pub async fn give_back(state: &AppState, reservation: i64) -> Result<(), TradeError> {
    if let Some(r) = state.store.release_reservation(reservation).await? {
        if let Err(e) = state.flash.engine.returned(&r).await {
            // The store has released it; the engine's reconciliation returns the units later.
            tracing::warn!(reservation.id = r.id, error = ?e, "flash units not yet back in the engine's book");
        }
        state.flash.sold_out.invalidate(&r.sale_id).await;
        state.sale_views.invalidate(&r.sale_id).await;
        tracing::debug!(reservation.id = r.id, sale.id = %r.sale_id, units = r.quantity, "flash units returned");
    }
    Ok(())
}

/// Makes orders from reservations until shutdown: at once after a full batch, else every 50 ms.
///
/// Peak shaving: while this instance is accepting purchases (its count of accepted purchases
/// grew since the last pass), a pass of n orders takes at least n / `storm_orders_per_sec`
/// seconds, so the purchase path keeps the CPU and the disk; once the storm is over the queue
/// drains as fast as the shards take it.
pub fn spawn(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let pace = state.config.flash_sale.storm_orders_per_sec;
        let mut accepted = accepted_here(&state);
        loop {
            let started = tokio::time::Instant::now();
            let made = match create_orders_once(&state).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "flash order pass failed; will retry");
                    0
                }
            };
            let now_accepted = accepted_here(&state);
            let storming = now_accepted != accepted;
            accepted = now_accepted;
            let rest = pause(made, storming, pace, started.elapsed());
            if rest.is_zero() {
                continue;
            }
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                () = tokio::time::sleep(rest) => {}
            }
        }
    })
}

/// Purchases this instance has accepted since it started: the admission metric's count.
fn accepted_here(state: &AppState) -> u64 {
    state.metrics.flash_admission.get_or_create(&crate::metrics::ReasonLabel { reason: "accepted" }).get()
}

/// How long the worker waits after a pass that made `made` orders in `took`: not at all after
/// a full batch, 50 ms after a partial one (the queue is empty), and while `storming` long
/// enough that the pass's orders take 1 / `pace` seconds each (`pace` 0: no pacing).
fn pause(made: usize, storming: bool, pace: u32, took: Duration) -> Duration {
    let rest = if made >= BATCH as usize { Duration::ZERO } else { Duration::from_millis(50) };
    if storming { rest.max(super::paced_rest(made, pace, took)) } else { rest }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_follow_a_storm_at_the_pace_and_drain_at_once_after_it() {
        let ms = Duration::from_millis;
        // After the storm (or with no pace) a full batch is followed at once.
        assert_eq!(pause(500, false, 1_000, ms(40)), Duration::ZERO);
        assert_eq!(pause(500, true, 0, ms(40)), Duration::ZERO);
        // During it, 500 orders at 1,000/s take half a second, the pass's own time included.
        assert_eq!(pause(500, true, 1_000, ms(40)), ms(460));
        assert_eq!(pause(500, true, 1_000, ms(700)), Duration::ZERO);
        // A partial batch means the queue is empty: the usual 50 ms, or the pace if longer.
        assert_eq!(pause(10, false, 1_000, ms(1)), ms(50));
        assert_eq!(pause(100, true, 1_000, ms(10)), ms(90));
        assert_eq!(pause(0, true, 1_000, ms(1)), ms(50));
    }
}
