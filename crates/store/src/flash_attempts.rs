//! Flash purchases looked up by the buyer's idempotency key, and purchases whose outcome was in
//! doubt when they were answered.
//!
//! An attempt is in doubt when the engine's reserve step was sent but its answer never came
//! (Redis stalled past its timeout) and the fence that would settle it could not be confirmed
//! either: the buyer is told `202` with a *pending* ticket, and the attempt is recorded here so
//! that any instance, after any restart, can settle it later (fence it in the engine, then see
//! whether its reservation exists) and say honestly what became of it.

use async_trait::async_trait;
use flashback_core::UserId;

use crate::{FlashReservation, StoreError, StoreResult};

/// What became of an attempt answered as pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptState {
    /// Not settled yet: the engine has not confirmed either way.
    Pending,
    /// Its reservation exists (read the reservation for where it is now).
    Reserved,
    /// It was fenced before it ran: nothing was taken, and nothing ever will be under its id.
    Cancelled,
}

impl AttemptState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Pending => "pending",
            AttemptState::Reserved => "reserved",
            AttemptState::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "pending" => Ok(AttemptState::Pending),
            "reserved" => Ok(AttemptState::Reserved),
            "cancelled" => Ok(AttemptState::Cancelled),
            other => Err(StoreError::Corrupt { table: "flash_attempts", reason: format!("unknown state {other}") }),
        }
    }
}

/// An attempt answered as pending: what it asked for (as the reservation it would have made)
/// and what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashAttempt {
    /// The attempt; its id is the ticket id the buyer was given.
    pub reservation: FlashReservation,
    /// Settled or not.
    pub state: AttemptState,
}

/// Keys and attempts in doubt, in the catalog store.
#[async_trait]
pub trait FlashAttemptStore: Send + Sync {
    /// The buyer's reservation made under `key` (of any sale), if any.
    async fn flash_reservation_by_key(&self, user: UserId, key: &str) -> StoreResult<Option<FlashReservation>>;
    /// Records an attempt answered as pending (idempotent by id: a second record is ignored).
    async fn record_flash_attempt(&self, attempt: &FlashReservation) -> StoreResult<()>;
    /// One recorded attempt.
    async fn flash_attempt(&self, id: i64) -> StoreResult<Option<FlashAttempt>>;
    /// Settles a pending attempt (compare-and-set from pending); false if it was not pending.
    async fn settle_flash_attempt(&self, id: i64, state: AttemptState) -> StoreResult<bool>;
    /// Attempts still pending, oldest first.
    async fn pending_flash_attempts(&self, limit: u32) -> StoreResult<Vec<FlashReservation>>;
    /// Deletes up to `limit` settled attempts last changed before `settled_before_ms` (pending
    /// ones stay, whatever their age); how many it deleted.
    async fn prune_flash_attempts(&self, settled_before_ms: i64, limit: u32) -> StoreResult<u64>;
}

/// A recorded attempt as selected: id, sale, buyer, quantity, state, created, key.
pub(crate) type AttemptRow = (i64, i64, i64, i64, String, i64, Option<String>);

pub(crate) fn attempt((id, sale, user, quantity, state, created, key): AttemptRow) -> StoreResult<FlashAttempt> {
    let reservation = crate::sql_flash::reservation((id, sale, user, quantity, "reserved".into(), None, created, key))
        .map_err(|e| match e {
            StoreError::Corrupt { reason, .. } => StoreError::Corrupt { table: "flash_attempts", reason },
            other => other,
        })?;
    Ok(FlashAttempt { reservation, state: AttemptState::parse(&state)? })
}

/// Implements [`FlashAttemptStore`] for a catalog store type with `writer()`; `$keep_existing`
/// ends an `INSERT` so that a row whose key exists is left alone.
macro_rules! impl_flash_attempt_store {
    ($store:ty, $keep_existing:literal) => {
        #[async_trait::async_trait]
        impl $crate::FlashAttemptStore for $store {
            async fn flash_reservation_by_key(
                &self,
                user: flashback_core::UserId,
                key: &str,
            ) -> $crate::StoreResult<Option<$crate::FlashReservation>> {
                Self::flash_by_key(self.writer()?, user, key).await
            }

            async fn record_flash_attempt(&self, a: &$crate::FlashReservation) -> $crate::StoreResult<()> {
                $crate::retry_deadlocks(|| async {
                    sqlx::query(concat!(
                        "INSERT INTO flash_attempts (id, sale_id, user_id, quantity, idempotency_key, state, \
                         created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                        $keep_existing
                    ))
                    .bind(a.id)
                    .bind(a.sale_id.get())
                    .bind(a.user_id.get())
                    .bind(a.quantity)
                    .bind(a.idempotency_key.as_deref())
                    .bind(a.created_at_ms)
                    .bind($crate::now_ms())
                    .execute(self.writer()?)
                    .await?;
                    Ok(())
                })
                .await
            }

            async fn flash_attempt(&self, id: i64) -> $crate::StoreResult<Option<$crate::FlashAttempt>> {
                let row: Option<$crate::flash_attempts::AttemptRow> = sqlx::query_as(
                    "SELECT id, sale_id, user_id, quantity, state, created_at_ms, CAST(idempotency_key AS CHAR) \
                     FROM flash_attempts WHERE id = ?",
                )
                .bind(id)
                .fetch_optional(self.writer()?)
                .await?;
                row.map($crate::flash_attempts::attempt).transpose()
            }

            async fn settle_flash_attempt(&self, id: i64, state: $crate::AttemptState) -> $crate::StoreResult<bool> {
                $crate::retry_deadlocks(|| async {
                    let done = sqlx::query(
                        "UPDATE flash_attempts SET state = ?, updated_at_ms = ? WHERE id = ? AND state = 'pending'",
                    )
                    .bind(state.as_str())
                    .bind($crate::now_ms())
                    .bind(id)
                    .execute(self.writer()?)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
                .await
            }

            async fn pending_flash_attempts(&self, limit: u32) -> $crate::StoreResult<Vec<$crate::FlashReservation>> {
                let rows: Vec<$crate::flash_attempts::AttemptRow> = sqlx::query_as(
                    "SELECT id, sale_id, user_id, quantity, state, created_at_ms, CAST(idempotency_key AS CHAR) \
                     FROM flash_attempts WHERE state = 'pending' ORDER BY id LIMIT ?",
                )
                .bind(i64::from(limit))
                .fetch_all(self.writer()?)
                .await?;
                rows.into_iter().map(|r| $crate::flash_attempts::attempt(r).map(|a| a.reservation)).collect()
            }

            async fn prune_flash_attempts(&self, settled_before_ms: i64, limit: u32) -> $crate::StoreResult<u64> {
                $crate::retry_deadlocks(|| async {
                    // The inner select is wrapped: MariaDB takes no LIMIT in an IN subquery.
                    let done = sqlx::query(
                        "DELETE FROM flash_attempts WHERE id IN (SELECT id FROM (SELECT id FROM flash_attempts \
                         WHERE state <> 'pending' AND updated_at_ms < ? ORDER BY id LIMIT ?) AS old)",
                    )
                    .bind(settled_before_ms)
                    .bind(i64::from(limit))
                    .execute(self.writer()?)
                    .await?;
                    Ok(done.rows_affected())
                })
                .await
            }
        }
    };
}

pub(crate) use impl_flash_attempt_store;
