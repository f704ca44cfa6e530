//! Real-time analytics as stored: per-minute rollups of the order events, per product for
//! top-SKU lists, and the ids of the events already counted (so a redelivery counts once).

use async_trait::async_trait;
use flashback_core::UserId;
use serde::{Deserialize, Serialize};

use crate::StoreResult;

/// What one order event adds to the minute it happened in. Money in minor units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupDelta {
    /// The event's id: the key that makes applying it idempotent.
    pub event_id: i64,
    /// Start of the minute (Unix ms, a multiple of 60 000) the event belongs to.
    pub minute_ms: i64,
    /// Paid orders (1 for `order.paid`).
    pub paid_orders: i64,
    /// Gross merchandise value added (the order's total at payment).
    pub gmv_minor: i64,
    /// Units sold.
    pub units: i64,
    /// Cancelled orders.
    pub cancelled_orders: i64,
    /// Refunded orders.
    pub refunded_orders: i64,
    /// Money refunded.
    pub refunded_minor: i64,
    /// Per product: what this event sold of it.
    pub skus: Vec<SkuDelta>,
}

/// Units and value of one product in one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuDelta {
    /// The product.
    pub product_id: i64,
    /// Its SKU (the merchant's code, kept for display).
    pub sku: String,
    /// Units.
    pub units: i64,
    /// Value (units × unit price), minor units.
    pub gmv_minor: i64,
}

/// The totals of one minute, or of a range of minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteRollup {
    /// Start of the minute (or of the range), Unix ms.
    pub minute_ms: i64,
    /// Paid orders.
    pub paid_orders: i64,
    /// Gross merchandise value paid, minor units.
    pub gmv_minor: i64,
    /// Units sold.
    pub units: i64,
    /// Cancelled orders.
    pub cancelled_orders: i64,
    /// Refunded orders.
    pub refunded_orders: i64,
    /// Money refunded, minor units.
    pub refunded_minor: i64,
}

/// One product's sales over a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuTotal {
    /// The product.
    pub product_id: i64,
    /// Its SKU.
    pub sku: String,
    /// Units sold.
    pub units: i64,
    /// Value sold, minor units.
    pub gmv_minor: i64,
}

/// Rollups of the domain events in the catalog store.
#[async_trait]
pub trait AnalyticsStore: Send + Sync {
    /// Applies every delta whose event was not applied before, all in one transaction: the
    /// event id is recorded with the increments it caused. Answers, per delta, whether it was
    /// new (`false`: already counted, nothing changed).
    async fn apply_rollups(&self, deltas: &[RollupDelta]) -> StoreResult<Vec<bool>>;
    /// The minutes in `[from_ms, to_ms)` that have any activity, oldest first.
    async fn rollup_minutes(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<MinuteRollup>>;
    /// The sum of the minutes in `[from_ms, to_ms)` (its `minute_ms` is `from_ms`).
    async fn rollup_total(&self, from_ms: i64, to_ms: i64) -> StoreResult<MinuteRollup>;
    /// The `limit` products with the most value sold in `[from_ms, to_ms)`.
    async fn top_skus(&self, from_ms: i64, to_ms: i64, limit: u32) -> StoreResult<Vec<SkuTotal>>;
    /// Rebates pending across all users, and the `limit` users with the most pending.
    async fn pending_rebates(&self, limit: u32) -> StoreResult<(i64, Vec<(UserId, i64)>)>;
    /// Forgets the ids of events applied before `before_ms`; answers how many.
    async fn prune_applied(&self, before_ms: i64) -> StoreResult<u64>;
}
