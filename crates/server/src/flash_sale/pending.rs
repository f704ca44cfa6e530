//! Purchases answered `pending`, for every engine that can lose a reserve step's answer
//! (`redis`, `sql`): recording the attempt so that any instance can settle it, recording how
//! it settled, and the periodic pass that settles what is still pending and prunes what was
//! settled long ago. How an attempt is fenced is the engine's own ([`Engine::settle`]).

use std::time::Duration;

use flashback_store::{AttemptState, FlashReservation, Store};

use super::engine::{Engine, Refusal, Reserved};

/// How often the periodic pass runs.
pub const SETTLE_EVERY: Duration = Duration::from_secs(10);
/// Pending attempts settled per pass.
const SETTLE_BATCH: u32 = 100;
/// Settled attempts pruned per pass.
const PRUNE_BATCH: u32 = 1_000;
/// How long a settled in-doubt attempt stays readable (its ticket says `cancelled` or points at
/// its reservation) before it is pruned: a week, far past any buyer's polling.
const ATTEMPTS_KEPT_MS: i64 = 7 * 24 * 3_600_000;

/// The step's answer was lost and its fence could not settle it (`why`): records the attempt as
/// pending and answers so.
pub(super) async fn answer_pending(
    store: &dyn Store,
    r: &FlashReservation,
    why: &(dyn std::fmt::Display + Sync),
) -> Reserved {
    tracing::warn!(reservation.id = r.id, error = %why, "flash reserve in doubt; answered pending");
    if let Err(e) = store.record_flash_attempt(r).await {
        // Still honest: if it reserved, its ticket finds the reservation; if not, nothing was
        // taken and the ticket is not found.
        tracing::warn!(reservation.id = r.id, error = %e, "could not record a pending flash attempt");
    }
    Reserved::Pending
}

/// Records what the engine's fence decided for attempt `id`.
pub(super) async fn record_settled(store: &dyn Store, id: i64, reserved: bool) {
    let state = if reserved { AttemptState::Reserved } else { AttemptState::Cancelled };
    if let Err(e) = store.settle_flash_attempt(id, state).await {
        // The fence decided it; the record only says so, and the next read says so again.
        tracing::warn!(reservation.id = id, error = %e, "could not record a settled flash attempt");
    }
}

/// Settles the attempts recorded as pending (oldest first, a batch at a time); how many it
/// settled.
pub(super) async fn settle_pending(engine: &dyn Engine, store: &dyn Store) -> Result<usize, Refusal> {
    let pending = store.pending_flash_attempts(SETTLE_BATCH).await.map_err(|e| Refusal::Unavailable(e.to_string()))?;
    let mut settled = 0;
    for attempt in &pending {
        engine.settle(attempt).await?;
        settled += 1;
    }
    Ok(settled)
}

/// One periodic pass: settles pending attempts and prunes old settled ones; failures are
/// logged and left to the next pass.
pub(super) async fn tend(engine: &dyn Engine, store: &dyn Store) {
    match settle_pending(engine, store).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(attempts = n, "flash purchases answered pending were settled"),
        Err(e) => tracing::warn!(error = ?e, "settling pending flash purchases failed; will retry"),
    }
    let settled_before = crate::trade::now_ms().saturating_sub(ATTEMPTS_KEPT_MS);
    match store.prune_flash_attempts(settled_before, PRUNE_BATCH).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(attempts = n, "settled flash attempts past their keeping were pruned"),
        Err(e) => tracing::warn!(error = %e, "pruning settled flash attempts failed; will retry"),
    }
}
