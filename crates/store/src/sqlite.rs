//! The embedded backend: SQLite files in WAL mode, each with one writer connection and a read
//! pool. The catalog store and every order shard is one file.
//!
//! SQLite allows one writer at a time. Rather than let many pooled connections race for the
//! write lock (and fail with `SQLITE_BUSY` when a read transaction tries to upgrade), all
//! writes to a file share a single connection and queue for it in the pool, while reads run in
//! parallel on their own read-only connections, which WAL lets proceed during a write.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use crate::{Store, StoreError, StoreOptions, StoreResult};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
static SHARD_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite-shard");

/// The file a `sqlite:` URL names; a relative path is taken relative to the data directory.
pub fn path_from_url(url: &str, data_dir: &Path) -> PathBuf {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = Path::new(path);
    if path.is_absolute() { path.to_owned() } else { data_dir.join(path) }
}

/// How every connection to a store file is opened.
fn connect_options(path: &Path) -> StoreResult<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        // 8 KiB pages for files created from now on (a file keeps the size it was made with):
        // a batch of ledger entries or rebate rows touches fewer, fuller pages, and each page
        // written to the WAL costs a frame header, a checksum and a hash-table slot whatever
        // its size. Measured on the rebate bench's schema: ~25 % more rows and postings per
        // second than 4 KiB with the checkpoint interval below (docs/BENCHMARKS.md).
        .page_size(8192)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        // sqlx runs each connection on a worker thread that hands result rows to the async
        // side through a bounded channel (50 by default): a batch's `RETURNING` of 500 keys
        // would make the two threads take turns every 50 rows.
        .row_buffer_size(1024))
}

/// The writer's settings on top of [`connect_options`].
///
/// Every commit on the writer syncs the WAL to disk before it returns (FULL), so an answer
/// that says "done" (an order, a payment, an accepted flash-sale reservation) survives a power
/// cut, not only a process crash. Batched writers (the flash-sale group commit) pay one sync
/// per batch.
fn writer_options(base: SqliteConnectOptions) -> SqliteConnectOptions {
    base.synchronous(SqliteSynchronous::Full)
        // A 64 MiB page cache (SQLite's default is 2 MiB): large ledgers and rebate tables
        // keep their index pages in memory instead of re-reading them per insert.
        .pragma("cache_size", "-65536")
        // Checkpoint every 4,000 pages (32 MiB of WAL) instead of 1,000: pages that every batch
        // touches again (the hot ends of indexes, account rows) are copied back once per
        // checkpoint, so fewer checkpoints copy fewer pages per commit.
        .pragma("wal_autocheckpoint", "4000")
}

/// The settings the store's writer opens `path` with, for tools that measure the store's
/// floor on a copy of its schema (`flashback-bench rebate`).
pub fn writer_connect_options(path: &Path) -> StoreResult<SqliteConnectOptions> {
    Ok(writer_options(connect_options(path)?))
}

/// One SQLite file: a single writer connection and a pool of read-only ones.
#[derive(Debug, Clone)]
pub(crate) struct SqlitePools {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqlitePools {
    pub(crate) async fn open(path: &Path, options: &StoreOptions) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        }
        let base = connect_options(path)?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(writer_options(base.clone()))
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(base.read_only(true).pragma("cache_size", "-16384"))
            .await?;
        Ok(Self { writer, reader })
    }

    /// The writer and the read pool.
    pub(crate) fn into_parts(self) -> (SqlitePool, SqlitePool) {
        (self.writer, self.reader)
    }

    async fn migrate(&self, migrator: &Migrator) -> StoreResult<()> {
        migrator.run(&self.writer).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => StoreError::from(e),
            other => StoreError::Config(format!("migrations: {other}")),
        })
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// The catalog store in one SQLite file under the data directory.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pools: SqlitePools,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub async fn open(path: &Path, options: &StoreOptions) -> StoreResult<Self> {
        Ok(Self { pools: SqlitePools::open(path, options).await? })
    }

    pub(crate) fn writer(&self) -> StoreResult<&Pool<Sqlite>> {
        Ok(&self.pools.writer)
    }

    pub(crate) fn reader(&self) -> StoreResult<&Pool<Sqlite>> {
        Ok(&self.pools.reader)
    }

    /// Writes a batch of rebate row changes (see [`crate::RebateStore::apply_rebates`]) on the
    /// writer's own connection, straight through SQLite's C API (`sqlite_batch` says why).
    async fn write_rebate_batch(
        &self,
        items: &[crate::RebateChange],
        review: &[crate::RebateReject],
    ) -> Result<Vec<crate::Applied>, crate::LedgerError> {
        let mut conn = self.writer()?.acquire().await?;
        let mut handle = conn.lock_handle().await?;
        let db = borrow_handle(&mut handle)?;
        // Synchronous work of tens of milliseconds: let the runtime move its other tasks off
        // this thread meanwhile, where it can.
        let multi_thread =
            tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
        let written = if multi_thread {
            tokio::task::block_in_place(|| crate::sqlite_batch::write(&db, items, review))
        } else {
            crate::sqlite_batch::write(&db, items, review)
        };
        drop(db);
        drop(handle);
        written
    }
}

/// The writer connection's SQLite handle as a `rusqlite` connection, for as long as `handle`
/// keeps the connection locked.
#[allow(unsafe_code, reason = "the one place the store calls SQLite on a handle sqlx opened")]
fn borrow_handle(handle: &mut sqlx::sqlite::LockedSqliteHandle<'_>) -> StoreResult<rusqlite::Connection> {
    let raw = handle.as_raw_handle();
    // SAFETY: `raw` is the open connection of the writer; `handle` holds its lock, so sqlx's
    // worker runs nothing on it until the lock drops, and the caller drops the connection
    // returned here first. `from_handle` borrows the handle: dropping the `rusqlite`
    // connection finalizes only the statements it prepared and does not close the database.
    // Both crates link the same libsqlite3-sys (the workspace pins rusqlite for that).
    unsafe { rusqlite::Connection::from_handle(raw.as_ptr()) }.map_err(StoreError::Embedded)
}

crate::sql::impl_sql_store!(SqliteStore, Sqlite);
crate::sql_stock::impl_stock_store!(SqliteStore, Sqlite);
crate::sql_flash::impl_flash_store!(SqliteStore, Sqlite, " ON CONFLICT (id) DO NOTHING");
crate::flash_attempts::impl_flash_attempt_store!(SqliteStore, " ON CONFLICT (id) DO NOTHING");
crate::sql_withdraw::impl_withdrawal_store!(SqliteStore, Sqlite);
crate::sql_rebate::impl_rebate_store!(
    SqliteStore,
    Sqlite,
    "INSERT INTO rebate_profiles (user_id, tier, inviter_id, created_at_ms) VALUES (?, ?, ?, ?) ON CONFLICT (user_id) DO NOTHING",
    "INSERT INTO sync_cursors (name, position_ms, updated_at_ms) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
    "INSERT INTO rebate_lists (user_id, listed) SELECT value, 0 FROM json_each(?) WHERE true \
     ON CONFLICT (user_id) DO UPDATE SET listed = listed RETURNING user_id, listed, head_source, head_line_key, head_role",
    "UPDATE rebate_orders SET list_no = j.value ->> 2, prev_source = j.value ->> 3, prev_line_key = j.value ->> 4, \
     prev_role = j.value ->> 5, inv_list_no = j.value ->> 6, inv_prev_source = j.value ->> 7, \
     inv_prev_line_key = j.value ->> 8, inv_prev_role = j.value ->> 9, grand_list_no = j.value ->> 10, \
     grand_prev_source = j.value ->> 11, grand_prev_line_key = j.value ->> 12, grand_prev_role = j.value ->> 13 \
     FROM json_each(?) AS j WHERE rebate_orders.source = j.value ->> 0 AND rebate_orders.line_key = j.value ->> 1",
    "UPDATE rebate_lists SET listed = j.value ->> 1, head_source = j.value ->> 2, head_line_key = j.value ->> 3, \
     head_role = j.value ->> 4 FROM json_each(?) AS j WHERE rebate_lists.user_id = j.value ->> 0"
);
crate::backup::impl_backup_store!(SqliteStore);
crate::node_lease::impl_node_lease_store!(
    SqliteStore,
    "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)"
);
crate::sql_analytics::impl_analytics_store!(
    SqliteStore,
    Sqlite,
    "INSERT INTO analytics_applied (event_id, applied_at_ms) VALUES (?, ?) ON CONFLICT DO NOTHING",
    "INSERT INTO analytics_minutes (minute_ms, paid_orders, gmv_minor, units, cancelled_orders, refunded_orders, refunded_minor) \
     VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (minute_ms) DO UPDATE SET paid_orders = paid_orders + excluded.paid_orders, \
     gmv_minor = gmv_minor + excluded.gmv_minor, units = units + excluded.units, \
     cancelled_orders = cancelled_orders + excluded.cancelled_orders, \
     refunded_orders = refunded_orders + excluded.refunded_orders, refunded_minor = refunded_minor + excluded.refunded_minor",
    "INSERT INTO analytics_sku_minutes (minute_ms, product_id, sku, units, gmv_minor) VALUES (?, ?, ?, ?, ?) \
     ON CONFLICT (minute_ms, product_id) DO UPDATE SET units = units + excluded.units, gmv_minor = gmv_minor + excluded.gmv_minor"
);
/// A ledger transaction's row, unless its key was posted (then it changes nothing).
pub(crate) const INSERT_TXN: &str = "INSERT INTO ledger_txns (id, idem_key, kind, reference, created_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING";
/// Adds `[[account, delta], …]` (the second parameter) to the accounts' balances, creating those
/// absent, at the time given first; returns each account's id, name and chain as it stood.
pub(crate) const ADD_BALANCES: &str = "INSERT INTO ledger_accounts (name, balance, updated_at_ms) \
     SELECT value ->> 0, value ->> 1, ? FROM json_each(?) WHERE true \
     ON CONFLICT (name) DO UPDATE SET balance = balance + excluded.balance, updated_at_ms = excluded.updated_at_ms \
     RETURNING id, name, entry_count, head_txn_id, head_seq";
/// Moves the accounts' chain heads to `[[id, count, txn, seq], …]`.
pub(crate) const SET_HEADS: &str = "UPDATE ledger_accounts SET entry_count = j.value ->> 1, \
     head_txn_id = j.value ->> 2, head_seq = j.value ->> 3 FROM json_each(?) AS j WHERE ledger_accounts.id = j.value ->> 0";

crate::sql_ledger::impl_ledger_store!(
    SqliteStore,
    Sqlite,
    INSERT_TXN,
    ADD_BALANCES,
    "INSERT INTO ledger_txns (id, idem_key, kind, reference, created_at_ms) ",
    " ON CONFLICT DO NOTHING RETURNING idem_key",
    SET_HEADS
);

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        self.pools.migrate(&MIGRATOR).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(self.writer()?).await?;
        sqlx::query("SELECT 1").execute(self.reader()?).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pools.close().await;
    }
}

/// One order shard in its own SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteShard {
    pools: SqlitePools,
}

impl SqliteShard {
    const BACKEND: &'static str = "sqlite";

    /// Opens (creating if needed) the shard file at `path`.
    pub async fn open(path: &Path, options: &StoreOptions) -> StoreResult<Self> {
        Ok(Self { pools: SqlitePools::open(path, options).await? })
    }

    pub(crate) fn writer(&self) -> StoreResult<&Pool<Sqlite>> {
        Ok(&self.pools.writer)
    }

    fn replica_read(&self) -> Option<(&Pool<Sqlite>, flashback_core::breaker::Permit<'_>)> {
        None
    }

    async fn probe(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pools.writer).await?;
        Ok(())
    }

    fn shard_breakers(&self) -> Vec<std::sync::Arc<flashback_core::breaker::Breaker>> {
        Vec::new()
    }

    async fn run_migrations(&self) -> StoreResult<()> {
        self.pools.migrate(&SHARD_MIGRATOR).await
    }

    async fn close_pools(&self) {
        self.pools.close().await;
    }
}

crate::sql_shard::impl_order_shard!(SqliteShard, Sqlite);
