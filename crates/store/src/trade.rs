//! The trade side of storage: stock reservations (in the catalog store) and order shards.

use async_trait::async_trait;
use flashback_core::{
    Cursor, MerchantId, Money, OrderId, OrderState, PageLimit, Points, ProductId, Quantity, Sku, Title, Transition,
    UserId,
};
use serde::{Deserialize, Serialize};

use crate::{StoreError, StoreResult};

/// What one order line reserved: the product as it was when the stock was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedLine {
    /// The product.
    pub product_id: ProductId,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// Its SKU code.
    pub sku: Sku,
    /// Its title.
    pub title: Title,
    /// Its list price per unit.
    pub unit_price: Money,
    /// Units reserved.
    pub quantity: Quantity,
}

/// Why stock could not be reserved; nothing was reserved.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// No such product.
    #[error("unknown product {0}")]
    UnknownProduct(ProductId),
    /// The product is off shelf.
    #[error("product {0} is off shelf")]
    OffShelf(ProductId),
    /// Not enough stock for this line.
    #[error("insufficient stock for product {0}")]
    InsufficientStock(ProductId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReserveError {
    fn from(e: sqlx::Error) -> Self {
        ReserveError::Store(e.into())
    }
}

/// A reservation's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    /// Taken from stock for an unpaid order.
    Held,
    /// The order was paid: the units are sold.
    Sold,
    /// Given back to stock (cancelled, expired, refunded before shipping, orphaned).
    Released,
}

/// One reservation row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The order it is for.
    pub order_id: OrderId,
    /// The product.
    pub product_id: ProductId,
    /// Units.
    pub quantity: Quantity,
    /// Its state.
    pub state: ReservationState,
    /// When it was made, Unix ms.
    pub created_at_ms: i64,
}

/// Stock reservations, the catalog side of placing an order.
#[async_trait]
pub trait StockStore: Send + Sync {
    /// Reserves every line for `order` in one transaction, one conditional decrement per line;
    /// all or nothing. Reserving again for the same order returns what was reserved and takes
    /// nothing more.
    async fn reserve(&self, order: OrderId, lines: &[(ProductId, Quantity)])
    -> Result<Vec<ReservedLine>, ReserveError>;
    /// Gives the order's held (or, with `sold_too`, also sold) units back to stock, each
    /// reservation exactly once. Returns the units released by this call.
    async fn release(&self, order: OrderId, sold_too: bool) -> StoreResult<i64>;
    /// Marks the order's held units sold. Returns how many reservations moved.
    async fn settle(&self, order: OrderId) -> StoreResult<u64>;
    /// The order's reservations.
    async fn reservations(&self, order: OrderId) -> StoreResult<Vec<Reservation>>;
    /// Orders with reservations still held and made before `before_ms`, oldest first.
    async fn held_orders(&self, before_ms: i64, limit: u32) -> StoreResult<Vec<OrderId>>;
    /// Units per product in each reservation state, and available stock: for audits.
    async fn stock_summary(&self) -> StoreResult<Vec<StockSummary>>;
}

/// Per-product totals, for the stock audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockSummary {
    /// The product.
    pub product_id: ProductId,
    /// Available units.
    pub available: i64,
    /// Units held for unpaid orders.
    pub held: i64,
    /// Units sold.
    pub sold: i64,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product.
    pub product_id: ProductId,
    /// Its SKU then.
    pub sku: Sku,
    /// Its title then.
    pub title: Title,
    /// Units.
    pub quantity: Quantity,
    /// Price per unit then.
    pub unit_price: Money,
}

/// An order with its lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Its id (carries the buyer's gene).
    pub id: OrderId,
    /// Who bought.
    pub buyer: UserId,
    /// Who sells.
    pub merchant: MerchantId,
    /// Where it is.
    pub state: OrderState,
    /// Its lines.
    pub lines: Vec<OrderLine>,
    /// Sum of the lines.
    pub total: Money,
    /// Points redeemed (one point = one minor unit).
    pub points_used: Points,
    /// What the buyer pays: total minus points.
    pub payable: Money,
    /// Unpaid after this (Unix ms), it expires.
    pub expires_at_ms: i64,
    /// Placed, Unix ms.
    pub created_at_ms: i64,
    /// Last changed, Unix ms.
    pub updated_at_ms: i64,
    /// The flash-sale reservation this order was made from, if any.
    #[serde(default)]
    pub flash_reservation: Option<i64>,
}

/// An order to write.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// The order, in state `pending_payment`.
    pub order: Order,
    /// The client's idempotency key and a hash of its request, if it sent one.
    pub idempotency: Option<(String, String)>,
}

/// Ids, made by the caller, for the rows a write may add: its outbox event and its points
/// ledger entry.
#[derive(Debug, Clone, Copy)]
pub struct WriteIds {
    /// The outbox event's id.
    pub event: i64,
    /// The points ledger entry's id, if the write moves points.
    pub entry: i64,
}

/// What `create_order` did.
#[derive(Debug, Clone)]
pub enum Created {
    /// The order was written.
    New(Order),
    /// The idempotency key was used before, for this order; `request_hash` is what it was
    /// used with.
    Existing {
        /// The earlier order.
        order: Order,
        /// The hash of the earlier request.
        request_hash: String,
    },
}

/// An event waiting in (or sent from) a shard's outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Unique event id (time-ordered within its shard).
    pub id: i64,
    /// `order.created`, `order.paid`, …
    pub event_type: String,
    /// The order it is about.
    pub aggregate_id: i64,
    /// The JSON body (see docs/EVENTS.md).
    pub payload: String,
    /// When it was written, Unix ms.
    pub created_at_ms: i64,
}

/// Filters for order listings; listings are newest first by id.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderFilter {
    /// Only this buyer.
    pub buyer: Option<UserId>,
    /// Only this merchant.
    pub merchant: Option<MerchantId>,
    /// Only this state.
    pub state: Option<OrderState>,
    /// Placed at or after, Unix ms.
    pub from_ms: Option<i64>,
    /// Placed before, Unix ms.
    pub to_ms: Option<i64>,
}

/// Where a read may be served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The primary: sees every committed write (a buyer reading their own orders).
    Primary,
    /// A replica if the shard has one, falling back to the primary when the replica fails;
    /// may lag (merchant and back-office lists).
    ReplicaOk,
}

/// One order shard: orders, points, idempotency keys and the outbox of its buyers.
#[async_trait]
pub trait OrderShard: Send + Sync + std::fmt::Debug {
    /// `sqlite` or `mysql`.
    fn backend(&self) -> &'static str;
    /// Applies pending shard migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// A cheap round trip to the primary (feeding its circuit breaker, scaled out).
    async fn ping(&self) -> StoreResult<()>;
    /// Closes every connection.
    async fn close(&self);
    /// The circuit breakers in front of its primary and replica (none for SQLite), for metrics.
    fn breakers(&self) -> Vec<std::sync::Arc<flashback_core::breaker::Breaker>> {
        Vec::new()
    }

    /// The order placed earlier with this buyer's idempotency key, and that request's hash.
    async fn idempotent(&self, buyer: UserId, key: &str) -> StoreResult<Option<(Order, String)>>;
    /// Writes the order, its lines, its idempotency key, the points redemption (conditional on
    /// the balance) and its `order.created` event in one transaction.
    /// [`StoreError::ConditionFailed`]`("points")` when the balance is short.
    async fn create_order(&self, new: NewOrder, ids: WriteIds) -> StoreResult<Created>;
    /// Writes many orders that redeem no points — each with its lines, its idempotency key and
    /// its `order.created` event (id given beside it) — in one transaction: one commit for the
    /// whole batch instead of one per order (the flash-sale order worker's passes).
    ///
    /// An order whose idempotency key was claimed before (by an earlier batch, another
    /// instance's, or an earlier order of this batch) is not written; the id of the order that
    /// holds the key is returned in its place, so a batch retried after a crash writes nothing
    /// twice. Returns one order id per input, in input order.
    /// [`StoreError::ConditionFailed`]`("points")` if an order redeems points (that takes the
    /// balance check of [`OrderShard::create_order`]); nothing is written then.
    async fn create_orders(&self, batch: &[(NewOrder, i64)]) -> StoreResult<Vec<OrderId>>;
    /// One order, from the primary.
    async fn order(&self, id: OrderId) -> StoreResult<Option<Order>>;
    /// Orders matching `filter`, newest first, with ids below the cursor's.
    async fn orders(
        &self,
        filter: OrderFilter,
        after: Option<Cursor>,
        limit: PageLimit,
        read: Read,
    ) -> StoreResult<Vec<Order>>;
    /// Moves the order by `t` if its state allows (compare-and-set on the state), returning
    /// points on cancellation and writing the transition's event, all in one transaction.
    /// [`StoreError::ConditionFailed`]`("state")` if the order is in a state `t` does not leave.
    /// With `from`, only from that state. Cancellation and refund return the points the order
    /// redeemed.
    async fn transition(
        &self,
        id: OrderId,
        t: Transition,
        from: Option<OrderState>,
        ids: WriteIds,
    ) -> StoreResult<Order>;
    /// Unpaid orders whose deadline is before `now_ms`.
    async fn expired(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<OrderId>>;

    /// A user's points balance.
    async fn points(&self, user: UserId) -> StoreResult<Points>;
    /// Adds points once per `reference`; returns whether this call applied them.
    async fn add_points(
        &self,
        entry_id: i64,
        user: UserId,
        amount: Points,
        reason: &str,
        reference: &str,
    ) -> StoreResult<bool>;
    /// Sum of ledger entries and sum of balances, per user, where they differ: for audits.
    async fn points_mismatches(&self) -> StoreResult<Vec<(UserId, i64, i64)>>;

    /// Records a payment the provider created for an order; false if the id is known.
    async fn create_payment(&self, payment_id: &str, order: OrderId, amount: Money) -> StoreResult<bool>;
    /// Every payment of an order, oldest first.
    async fn order_payments(&self, order: OrderId) -> StoreResult<Vec<Payment>>;
    /// A payment by the provider's id.
    async fn payment(&self, payment_id: &str) -> StoreResult<Option<Payment>>;
    /// Moves a payment from one state to another (compare-and-set); false if it was not in `from`.
    async fn set_payment_state(&self, payment_id: &str, from: PaymentState, to: PaymentState) -> StoreResult<bool>;

    /// Up to `limit` undispatched events, oldest first.
    async fn outbox_pending(&self, limit: u32) -> StoreResult<Vec<OutboxEvent>>;
    /// Marks events dispatched.
    async fn mark_dispatched(&self, ids: &[i64]) -> StoreResult<()>;
    /// Whether `consumer` has recorded `event_id` as processed.
    async fn was_processed(&self, consumer: &str, event_id: i64) -> StoreResult<bool>;
    /// Records that `consumer` processed `event_id`; false if it already had.
    async fn record_processed(&self, consumer: &str, event_id: i64) -> StoreResult<bool>;
}

/// A payment's state, as the provider reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Created, not yet paid.
    Created,
    /// Paid.
    Succeeded,
    /// Paid and given back.
    Refunded,
}

impl PaymentState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Created => "created",
            PaymentState::Succeeded => "succeeded",
            PaymentState::Refunded => "refunded",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [PaymentState::Created, PaymentState::Succeeded, PaymentState::Refunded].into_iter().find(|p| p.as_str() == s)
    }
}

/// A payment of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// The provider's id.
    pub payment_id: String,
    /// The order paid for.
    pub order_id: OrderId,
    /// The amount.
    pub amount: Money,
    /// Its state.
    pub state: PaymentState,
}

impl Payment {
    pub(crate) fn from_row(payment_id: String, order: i64, amount: i64, state: &str) -> StoreResult<Self> {
        let bad = |r: String| StoreError::Corrupt { table: "payments", reason: r };
        Ok(Payment {
            payment_id,
            order_id: OrderId::new(order).map_err(|e| bad(e.to_string()))?,
            amount: Money::from_minor(amount).map_err(|e| bad(e.to_string()))?,
            state: PaymentState::parse(state).ok_or_else(|| bad(format!("unknown state {state}")))?,
        })
    }
}

/// The JSON body of an order event (schema in docs/EVENTS.md).
pub fn order_event_payload(
    event_id: i64,
    event_type: &str,
    order: &Order,
    previous: Option<OrderState>,
    at_ms: i64,
) -> String {
    let lines: Vec<serde_json::Value> = order
        .lines
        .iter()
        .map(|l| {
            serde_json::json!({
                "product_id": l.product_id.to_string(),
                "sku": l.sku.as_str(),
                "quantity": l.quantity.get(),
                "unit_price_minor": l.unit_price.minor(),
            })
        })
        .collect();
    serde_json::json!({
        "id": event_id.to_string(),
        "type": event_type,
        "occurred_at_ms": at_ms,
        "previous_state": previous.map(OrderState::as_str),
        "order": {
            "id": order.id.to_string(),
            "buyer_id": order.buyer.to_string(),
            "merchant_id": order.merchant.to_string(),
            "state": order.state.as_str(),
            "total_minor": order.total.minor(),
            "points_used": order.points_used.get(),
            "payable_minor": order.payable.minor(),
            "created_at_ms": order.created_at_ms,
            "flash_reservation_id": order.flash_reservation.map(|r| r.to_string()),
            "lines": lines,
        }
    })
    .to_string()
}
