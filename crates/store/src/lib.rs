//! Storage traits in business terms, and their two real implementations: SQLite files for the
//! embedded default and MySQL-compatible servers for scaling out.
//!
//! Business code holds an `Arc<dyn Store>` and never asks which backend it has. Both backends
//! pass one conformance suite (`conformance`, behind the feature of the same name), and each
//! owns its migrations, which [`Store::migrate`] applies at start and on `flashback migrate`.

mod analytics;
mod backup;
mod error;
mod flash;
mod flash_attempts;
mod flash_fence;
mod gate;
mod ledger;
mod model;
mod mysql;
mod node_lease;
mod rebate;
mod rebate_list;
mod rebate_list_sql;
mod retry;
mod shards;
mod sql;
mod sql_analytics;
mod sql_flash;
mod sql_ledger;
mod sql_rebate;
mod sql_shard;
mod sql_stock;
mod sql_withdraw;
mod sqlite;
mod sqlite_batch;
pub mod track;
mod trade;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod replica_harness;
#[cfg(feature = "conformance")]
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flashback_core::{
    CategoryId, Cursor, MerchantId, PageLimit, ProductId, ProductStatus, Regions, Stock, Title, UserId, Username,
};

pub use analytics::{AnalyticsStore, MinuteRollup, RollupDelta, SkuDelta, SkuTotal};
pub use backup::{BackupStore, BackupVerification};
pub use error::StoreError;
pub use flash::{
    FlashReservation, FlashSale, FlashSaleStore, NewFlashSale, ReservationStatus, SaleState, SqlReserveRefusal,
};
pub use flash_attempts::{AttemptState, FlashAttempt, FlashAttemptStore};
pub use ledger::{LedgerAudit, LedgerError, LedgerLine, LedgerStore, NewTxn, Posted, Posting, Wallet};
pub use model::{
    Category, Inventory, Merchant, NewProduct, NewUser, Product, ProductFilter, ProductPatch, User, UserCredentials,
};
pub use mysql::{MySqlShard, MySqlStore};
pub use node_lease::{NodeHolder, NodeLeaseStore};
pub use rebate::{
    Applied, Click, Link, RebateChange, RebateOrder, RebateProfile, RebateReject, RebateStore, TrackingKind,
    WithdrawRefusal, Withdrawal, WithdrawalMove, WithdrawalState, WithdrawalStore,
};
pub use rebate_list::{ListedRebate, RebateCursor, RebateRole};
pub use retry::Retryable;
pub(crate) use retry::{retry_deadlocks, retry_when};
pub use shards::{ShardOptions, Shards, open_shards};
pub use sql_rebate::{ORDER_COLUMNS as REBATE_ORDER_COLUMNS, push_order as push_rebate_order};
pub use sqlite::{SqliteShard, SqliteStore, path_from_url as sqlite_path, writer_connect_options};
pub use trade::{
    Created, NewOrder, Order, OrderFilter, OrderLine, OrderShard, OutboxEvent, Payment, PaymentState, Read,
    Reservation, ReservationState, ReserveError, ReservedLine, StockStore, StockSummary, WriteIds, order_event_payload,
};

/// Shorthand for storage results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Accounts.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores a new account; [`StoreError::Conflict`]`("username")` if the name is taken.
    async fn create_user(&self, new: NewUser) -> StoreResult<User>;
    /// The account with this id.
    async fn user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// The account with this name, with its password hash, for logging in.
    async fn credentials(&self, username: &Username) -> StoreResult<Option<UserCredentials>>;
}

/// Merchants, categories, products and their inventory.
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// Creates the merchant run by `owner`; [`StoreError::Conflict`]`("merchant")` if it has one.
    async fn create_merchant(&self, id: MerchantId, owner: UserId, name: Title) -> StoreResult<Merchant>;
    /// The merchant with this id.
    async fn merchant(&self, id: MerchantId) -> StoreResult<Option<Merchant>>;
    /// The merchant run by this account.
    async fn merchant_of(&self, owner: UserId) -> StoreResult<Option<Merchant>>;

    /// Creates a category; [`StoreError::Conflict`]`("category")` if the name is taken.
    async fn create_category(&self, id: CategoryId, name: Title) -> StoreResult<Category>;
    /// All categories, by name.
    async fn categories(&self) -> StoreResult<Vec<Category>>;

    /// Creates a product and its inventory row in one transaction.
    /// [`StoreError::Conflict`]`("sku")` if the merchant has the SKU already;
    /// [`StoreError::MissingReference`] if the category or merchant does not exist.
    async fn create_product(&self, new: NewProduct) -> StoreResult<Product>;
    /// The product with this id, with its inventory.
    async fn product(&self, id: ProductId) -> StoreResult<Option<Product>>;
    /// Products matching `filter`, newest first, starting after `after`, at most `limit`.
    async fn products(
        &self,
        filter: ProductFilter,
        after: Option<Cursor>,
        limit: PageLimit,
    ) -> StoreResult<Vec<Product>>;
    /// Changes the fields `patch` names of a product owned by `merchant`.
    async fn update_product(&self, id: ProductId, merchant: MerchantId, patch: ProductPatch) -> StoreResult<Product>;
    /// Puts a product on or off shelf.
    async fn set_status(&self, id: ProductId, merchant: MerchantId, status: ProductStatus) -> StoreResult<Product>;
    /// Sets stock and regions. With `expected_version`, only if nobody changed the inventory
    /// since that version ([`StoreError::ConditionFailed`]`("version")` otherwise).
    async fn set_inventory(
        &self,
        id: ProductId,
        merchant: MerchantId,
        available: Stock,
        regions: Regions,
        expected_version: Option<i64>,
    ) -> StoreResult<Product>;
    /// Adds `delta` (which may be negative) to available stock in one conditional write;
    /// [`StoreError::ConditionFailed`]`("stock")` if the result would leave `0..=Stock::MAX`.
    async fn adjust_stock(&self, id: ProductId, merchant: MerchantId, delta: i64) -> StoreResult<Product>;
}

/// Everything a Flashback instance stores, plus the operations on the store itself.
#[async_trait]
pub trait Store:
    UserStore
    + CatalogStore
    + StockStore
    + FlashSaleStore
    + FlashAttemptStore
    + LedgerStore
    + RebateStore
    + WithdrawalStore
    + AnalyticsStore
    + BackupStore
    + NodeLeaseStore
    + std::fmt::Debug
{
    /// `"sqlite"` or `"mysql"`, for logs and health output.
    fn backend(&self) -> &'static str;
    /// Applies this backend's pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// One cheap round trip, for readiness checks. Scaled out it also feeds the circuit
    /// breaker in front of the database: two failed pings in a row make every call fail fast
    /// as unavailable until one succeeds.
    async fn ping(&self) -> StoreResult<()>;
    /// Closes every connection; later calls fail with [`StoreError::Unavailable`].
    async fn close(&self);
    /// The circuit breakers in front of its servers (none for SQLite files), for metrics.
    fn breakers(&self) -> Vec<Arc<flashback_core::breaker::Breaker>> {
        Vec::new()
    }
}

/// How to reach the store; built by the server from its configuration.
#[derive(Clone)]
pub struct StoreOptions {
    /// `mysql://…` (or `mariadb://…`) for a MySQL-compatible server; `None` or `sqlite:` for
    /// SQLite files under `data_dir`.
    pub url: Option<String>,
    /// Where SQLite files live.
    pub data_dir: PathBuf,
    /// Most connections in the pool (MySQL) or in the read pool (SQLite; writes use one).
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing as unavailable.
    pub acquire_timeout: Duration,
    /// The circuit breakers' open period (scaled out; they open after two failed pings).
    pub breaker: flashback_core::breaker::BreakerSettings,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("data_dir", &self.data_dir)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// A connection URL with its password replaced, safe to log.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable url>".to_owned(),
    }
}

/// Opens the store the options point at and applies its migrations.
pub async fn open(options: &StoreOptions) -> StoreResult<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match options.url.as_deref() {
        Some(u) if u.starts_with("mysql://") || u.starts_with("mariadb://") => {
            Arc::new(MySqlStore::connect(u, options).await?)
        }
        Some(u) if u.starts_with("sqlite:") => {
            Arc::new(SqliteStore::open(&sqlite::path_from_url(u, &options.data_dir), options).await?)
        }
        Some(_) => return Err(StoreError::Config("store.url must start with mysql://, mariadb:// or sqlite:".into())),
        None => Arc::new(SqliteStore::open(&options.data_dir.join("flashback.db"), options).await?),
    };
    store.migrate().await?;
    Ok(store)
}

/// The wall clock in Unix milliseconds, as stored in `*_at_ms` columns.
pub(crate) fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
