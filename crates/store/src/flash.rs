//! Flash sales as stored: the sale (with the stock carved out of its product) and the
//! reservations that are the durable record of every accepted purchase.

use async_trait::async_trait;
use flashback_core::{Cursor, MerchantId, Money, OrderId, PageLimit, ProductId, SaleId, UserId};
use serde::{Deserialize, Serialize};

use crate::{StoreError, StoreResult};

/// Whether a sale still sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    /// Created and not yet ended (it may not have started).
    Open,
    /// Ended; its unsold units went back to the product's inventory.
    Ended,
}

impl SaleState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SaleState::Open => "open",
            SaleState::Ended => "ended",
        }
    }

    pub(crate) fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "open" => Ok(SaleState::Open),
            "ended" => Ok(SaleState::Ended),
            other => Err(StoreError::Corrupt { table: "flash_sales", reason: format!("unknown state {other}") }),
        }
    }
}

/// A flash sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashSale {
    /// Its id.
    pub id: SaleId,
    /// The merchant running it.
    pub merchant_id: MerchantId,
    /// The product (SKU) on sale.
    pub product_id: ProductId,
    /// The price during the sale.
    pub sale_price: Money,
    /// Units carved out of the product's inventory for the sale.
    pub stock: i64,
    /// Units a single buyer may take.
    pub per_user_limit: i64,
    /// Selling starts, Unix ms.
    pub starts_at_ms: i64,
    /// Selling ends, Unix ms.
    pub ends_at_ms: i64,
    /// Whether buyers need a purchase token issued shortly before the start.
    pub require_token: bool,
    /// Open or ended.
    pub state: SaleState,
    /// Units returned to inventory when it ended.
    pub returned_units: i64,
    /// Created, Unix ms.
    pub created_at_ms: i64,
}

/// A sale to create; its `stock` is taken from the product's available inventory.
#[derive(Debug, Clone)]
pub struct NewFlashSale {
    /// Its id, made by the caller.
    pub id: SaleId,
    /// The merchant running it (the product's merchant).
    pub merchant_id: MerchantId,
    /// The product on sale.
    pub product_id: ProductId,
    /// The sale price.
    pub sale_price: Money,
    /// Units to carve out, at least 1.
    pub stock: i64,
    /// Units per buyer, at least 1.
    pub per_user_limit: i64,
    /// Start, Unix ms.
    pub starts_at_ms: i64,
    /// End, Unix ms, after the start.
    pub ends_at_ms: i64,
    /// Purchase tokens required.
    pub require_token: bool,
}

/// Where an accepted purchase is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Accepted and durable; its order is being created.
    Reserved,
    /// Its order exists.
    Ordered,
    /// Given back to the sale (its order expired unpaid, or was cancelled).
    Released,
}

impl ReservationStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Reserved => "reserved",
            ReservationStatus::Ordered => "ordered",
            ReservationStatus::Released => "released",
        }
    }

    pub(crate) fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "reserved" => Ok(ReservationStatus::Reserved),
            "ordered" => Ok(ReservationStatus::Ordered),
            "released" => Ok(ReservationStatus::Released),
            other => Err(StoreError::Corrupt { table: "flash_reservations", reason: format!("unknown state {other}") }),
        }
    }
}

/// An accepted flash-sale purchase: the durable record engines recover from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashReservation {
    /// Its id (the client's ticket id).
    pub id: i64,
    /// The sale.
    pub sale_id: SaleId,
    /// The buyer.
    pub user_id: UserId,
    /// Units.
    pub quantity: i64,
    /// Where it is.
    pub status: ReservationStatus,
    /// Its order, once created.
    pub order_id: Option<OrderId>,
    /// Accepted, Unix ms.
    pub created_at_ms: i64,
    /// The buyer's `Idempotency-Key`, if the purchase sent one: written with the reservation,
    /// never apart from it, and unique per buyer (a retry finds this reservation by it).
    pub idempotency_key: Option<String>,
}

/// Why the `sql` engine's reserve step did not reserve: nothing was taken, except after
/// [`SqlReserveRefusal::InDoubt`].
#[derive(Debug, thiserror::Error)]
pub enum SqlReserveRefusal {
    /// No units left (or the sale is closed).
    #[error("sold out")]
    SoldOut,
    /// The buyer would exceed the per-user limit.
    #[error("limit reached")]
    LimitReached,
    /// The store failed before the commit, or the commit failed and the fence found no
    /// reservation: nothing was taken.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The commit's answer was lost and the fence could not say whether it took effect: the
    /// reservation may exist. [`FlashSaleStore::sql_reservation_settled`] says later.
    #[error("the reserve's outcome is in doubt ({lost}); the fence failed: {fence}")]
    InDoubt {
        /// Why the commit failed.
        lost: StoreError,
        /// Why the fence failed.
        fence: StoreError,
    },
}

impl From<sqlx::Error> for SqlReserveRefusal {
    fn from(e: sqlx::Error) -> Self {
        SqlReserveRefusal::Store(e.into())
    }
}

/// Flash sales in the catalog store.
#[async_trait]
pub trait FlashSaleStore: Send + Sync {
    /// Creates the sale and carves its stock out of the product's inventory in one transaction
    /// ([`StoreError::ConditionFailed`]`("stock")` if the product has fewer units available;
    /// [`StoreError::NotFound`]`("product")` if the product is not the merchant's).
    async fn create_sale(&self, new: NewFlashSale) -> StoreResult<FlashSale>;
    /// One sale.
    async fn flash_sale(&self, id: SaleId) -> StoreResult<Option<FlashSale>>;
    /// Sales newest first, optionally only those in `state`.
    async fn flash_sales(
        &self,
        state: Option<SaleState>,
        after: Option<Cursor>,
        limit: PageLimit,
    ) -> StoreResult<Vec<FlashSale>>;
    /// Units of the sale held by reservations that were not released (reserved or ordered).
    async fn sale_taken_units(&self, id: SaleId) -> StoreResult<i64>;
    /// Open sales whose end is before `now_ms`.
    async fn sales_due_to_end(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<SaleId>>;
    /// Writes accepted reservations, all in one transaction (group commit). Idempotent by
    /// reservation id: a row already written is left as it is (the `redis` engine's importer
    /// may deliver an entry twice).
    async fn insert_reservations(&self, rows: &[FlashReservation]) -> StoreResult<()>;
    /// One reservation.
    async fn flash_reservation(&self, id: i64) -> StoreResult<Option<FlashReservation>>;
    /// Units per buyer held by the sale's reservations that were not released.
    async fn sale_book(&self, id: SaleId) -> StoreResult<Vec<(UserId, i64)>>;
    /// The `sql` engine's reserve step, in one transaction: a conditional decrement of the
    /// sale's `remaining` (only while open and inside its window), the buyer's total checked
    /// under that row lock, and the reservation row (with its idempotency key, if any).
    /// `Ok(None)`: reserved. `Ok(Some(earlier))`: the buyer's key already names `earlier`
    /// (of any sale); nothing was taken. A failed commit is never taken to mean "nothing was
    /// taken": the step then fences ([`Self::sql_reservation_settled`]) and answers with what
    /// the fence found, or [`SqlReserveRefusal::InDoubt`].
    async fn sql_reserve(
        &self,
        reservation: &FlashReservation,
        per_user_limit: i64,
        now_ms: i64,
    ) -> Result<Option<FlashReservation>, SqlReserveRefusal>;
    /// The fence after a `sql` reserve step whose commit's answer was lost: waits (a bounded
    /// while) until the transaction that wrote reservation `id` has ended, then says whether
    /// the reservation exists. Final once answered: the step never runs again. An error: the
    /// store cannot say yet.
    async fn sql_reservation_settled(&self, id: i64) -> StoreResult<bool>;

    /// Reservations still waiting for their order, oldest first.
    async fn reservations_to_order(&self, limit: u32) -> StoreResult<Vec<FlashReservation>>;
    /// Records the order made from a reservation (compare-and-set `reserved → ordered`);
    /// false if it was not waiting.
    async fn mark_reservation_ordered(&self, id: i64, order: OrderId) -> StoreResult<bool>;
    /// [`Self::mark_reservation_ordered`] for many, in one transaction (each still a
    /// compare-and-set); returns how many moved.
    async fn mark_reservations_ordered(&self, made: &[(i64, OrderId)]) -> StoreResult<u64>;
    /// Gives a reservation's units back, once (compare-and-set to `released`): to the sale
    /// while it is open (the `sql` engine's counter included), else to the product's inventory
    /// (counted in the sale's `returned_units`). Returns the reservation if this call released it.
    async fn release_reservation(&self, id: i64) -> StoreResult<Option<FlashReservation>>;
    /// Every reservation of a sale, for audits.
    async fn sale_reservations(&self, id: SaleId) -> StoreResult<Vec<FlashReservation>>;
    /// The sale's released reservations (few: unpaid orders), for engines that keep stock
    /// outside the store and must give those units back exactly once.
    async fn released_reservations(&self, id: SaleId) -> StoreResult<Vec<FlashReservation>>;
    /// The `sql` engine's counter of units not reserved.
    async fn sale_remaining_counter(&self, id: SaleId) -> StoreResult<i64>;

    /// Ends an open sale whose end has passed and returns its unsold units to the product's
    /// inventory, once (compare-and-set on the state). Returns the units returned, or `None` if
    /// it was not open or not yet over.
    async fn end_sale(&self, id: SaleId, now_ms: i64) -> StoreResult<Option<i64>>;
}
