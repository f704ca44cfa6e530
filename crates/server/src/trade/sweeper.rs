//! The sweeper: expires unpaid orders past their deadline and finishes sagas that died
//! midway. Every step is a compare-and-set, so sweeps on several instances at once are safe
//! (they only repeat each other's no-ops).

use flashback_core::{OrderState, Transition};
use serde::Serialize;

use super::lifecycle::apply;
use super::{TradeError, now_ms};
use crate::AppState;
use crate::lease::Rounds;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Unpaid orders expired (stock and points returned).
    pub expired: u32,
    /// Reservations released because their order was never written.
    pub orphans_released: u32,
    /// Reservations released because their order was cancelled but the release had not run.
    pub cancellations_finished: u32,
    /// Reservations settled because their order was paid but the settle had not run.
    pub payments_finished: u32,
}

/// Runs one sweep over every shard, treating reservations older than
/// `trade.orphan_after_ms` as orphans.
pub async fn sweep_once(state: &AppState) -> Result<SweepReport, TradeError> {
    sweep(state, state.config.trade.orphan_after).await
}

/// Runs one sweep, treating held reservations older than `orphan_after` as orphans. Only
/// safe with an age longer than any saga can run (the request timeout bounds it), which is
/// why configuration enforces `orphan_after_ms` > `http.request_timeout_ms`; tests that have
/// stopped every saga pass zero.
pub async fn sweep(state: &AppState, orphan_after: std::time::Duration) -> Result<SweepReport, TradeError> {
    let mut report = SweepReport::default();
    let now = now_ms();
    for shard in state.shards.all() {
        for id in shard.expired(now, 500).await? {
            match apply(state, id, Transition::Expire, None).await {
                Ok(_) => report.expired += 1,
                Err(TradeError::WrongState(_)) => {} // paid or cancelled meanwhile
                Err(e) => tracing::warn!(order.id = %id, error = %e, "expiry failed; will retry"),
            }
        }
    }
    let orphan_after = i64::try_from(orphan_after.as_millis()).unwrap_or(i64::MAX);
    for id in state.store.held_orders(now.saturating_sub(orphan_after), 500).await? {
        match state.shards.for_order(id).order(id).await?.map(|o| o.state) {
            None => {
                if state.store.release(id, false).await? > 0 {
                    tracing::info!(order.id = %id, "released an orphaned reservation");
                    report.orphans_released += 1;
                }
            }
            Some(OrderState::Cancelled | OrderState::Refunded) => {
                if state.store.release(id, false).await? > 0 {
                    report.cancellations_finished += 1;
                }
            }
            Some(OrderState::Paid | OrderState::Shipped | OrderState::Completed) => {
                if state.store.settle(id).await? > 0 {
                    report.payments_finished += 1;
                }
            }
            Some(OrderState::PendingPayment) => {} // its deadline will come
        }
    }
    Ok(report)
}

/// Sweeps every `trade.sweep_interval_ms` until shutdown, on one instance of a cluster at a
/// time (the `sweeper` lease; see [`crate::lease`]).
pub fn spawn(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut rounds = Rounds::new(&state, "sweeper", state.config.trade.sweep_interval);
        while rounds.next().await {
            if let Err(e) = sweep_once(&state).await {
                tracing::warn!(error = %e, "sweep failed; will retry");
            }
            if let Err(e) = crate::flash_sale::end_due_sales(&state).await {
                tracing::warn!(error = %e, "ending flash sales failed; will retry");
            }
        }
    })
}
