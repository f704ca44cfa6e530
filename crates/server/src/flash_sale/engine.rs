//! The atomic reserve step, behind one trait with an engine per deployment:
//!
//! - `memory` ([`MemoryEngine`]): books in process, each accepted reservation journaled (group
//!   commit) before it is answered, imported into the store in batches.
//! - `sql` ([`SqlEngine`]): one transaction per attempt: conditional decrement of the sale row,
//!   the buyer's total checked under that row's lock, the reservation row. The plain baseline.
//! - `redis` ([`super::redis_engine::RedisEngine`]): books in Redis, one Lua call per attempt.
//!
//! Idempotency keys: a purchase may carry the buyer's key. Every engine records it with the
//! reservation in the same atomic step (the journal record, the SQL transaction, the Lua call)
//! and answers a repeat of a key with the reservation it made ([`Reserved::Earlier`]), taking
//! nothing. Engines remember keys until a day after their sale ends; the store keeps them with
//! the reservation for good.

use std::sync::Arc;

use async_trait::async_trait;
use flashback_core::{SaleId, UserId};
use flashback_store::{FlashReservation, FlashSale};

pub use super::memory_engine::{IMPORT_BATCH, MAX_UNRECORDED, MemoryEngine, STORM_BACKLOG};
pub use super::sql_engine::SqlEngine;

/// How long after its sale ends an engine still remembers an idempotency key (the store
/// answers for it after that).
pub const KEY_GRACE_MS: i64 = 24 * 3600 * 1000;

/// Why a reserve step said no; nothing was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No units left.
    SoldOut,
    /// The buyer already holds the per-user limit.
    LimitReached,
    /// Outside the sale's window or the sale is closed.
    Closed,
    /// A purchase with the same idempotency key is being made right now; retry to see it.
    KeyBusy,
    /// Durable storage failed or is saturated, and it is certain that nothing was taken; try
    /// later.
    Unavailable(String),
}

/// What a reserve step that did not refuse did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// Reserved now; durable.
    New,
    /// The buyer's idempotency key already names this reservation (of this sale or another):
    /// nothing was taken.
    Earlier(FlashReservation),
    /// In doubt: the step was sent and its answer lost, and the fence that settles it was not
    /// confirmed either. The attempt is recorded as pending; it is settled later (reserved, or
    /// fenced before it ran) and its ticket says which.
    Pending,
}

/// One reserve engine.
#[async_trait]
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// `memory`, `redis` or `sql`.
    fn name(&self) -> &'static str;
    /// Checks the buyer's idempotency key (if the reservation carries one), the window, the
    /// buyer's limit and the stock, takes the stock, and makes the reservation (with its key)
    /// durable, all before returning [`Reserved::New`].
    async fn reserve(&self, sale: &FlashSale, reservation: FlashReservation, now_ms: i64) -> Result<Reserved, Refusal>;

    /// The buyer's reservation made under `key` that this engine remembers (it may not be in
    /// the store yet). [`Refusal::KeyBusy`] while one is being made.
    async fn by_key(&self, _user: UserId, _key: &str) -> Result<Option<FlashReservation>, Refusal> {
        Ok(None)
    }

    /// Settles an attempt that was answered as pending ([`Reserved::Pending`]): makes sure it
    /// can no longer run, then says whether its reservation exists (`true`) or it never ran
    /// and never will (`false`). An error: the engine cannot say yet.
    async fn settle(&self, _attempt: &FlashReservation) -> Result<bool, Refusal> {
        Err(Refusal::Unavailable(format!("the {} engine leaves no attempt in doubt", self.name())))
    }

    /// A reservation was released in the store (once): give its units back to the engine's
    /// own book, if it keeps one.
    async fn returned(&self, _released: &FlashReservation) -> Result<(), Refusal> {
        Ok(())
    }

    /// A reservation the engine accepted that the store does not hold yet (for tickets).
    async fn in_flight(&self, _id: i64) -> Result<Option<FlashReservation>, Refusal> {
        Ok(None)
    }

    /// The sale is over: stop selling, and say whether every accepted reservation is in the
    /// store (only then may the store count what is unsold and end the sale).
    async fn close(&self, _sale: SaleId) -> Result<bool, Refusal> {
        Ok(true)
    }

    /// The sale has ended: drop whatever the engine keeps for it.
    async fn forget(&self, _sale: SaleId) {}

    /// For audits: the units the engine's own book can still sell and the units it accepted
    /// that the store does not hold yet; `None` if it keeps no book for the sale.
    async fn book(&self, _sale: SaleId) -> Result<Option<(i64, i64)>, Refusal> {
        Ok(None)
    }

    /// For readiness: the state the engine keeps on this instance, if any (`None`: nothing
    /// local to check; its remote dependencies are checked on their own).
    fn readiness(&self) -> Option<Result<(), String>> {
        None
    }

    /// Accepted reservations kept only by the engine so far (not yet in the store), if it
    /// keeps any (for the backlog gauge).
    fn unrecorded(&self) -> Option<u64> {
        None
    }

    /// Tasks the engine runs until shutdown.
    fn background(self: Arc<Self>, _shutdown: tokio_util::sync::CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        Vec::new()
    }
}

pub(crate) fn in_window(sale: &FlashSale, now_ms: i64) -> bool {
    sale.state == flashback_store::SaleState::Open && sale.starts_at_ms <= now_ms && now_ms < sale.ends_at_ms
}

/// Until when (Unix ms) an engine remembers a key used for `sale`.
pub(crate) fn key_expiry(sale: &FlashSale) -> i64 {
    sale.ends_at_ms.saturating_add(KEY_GRACE_MS)
}
