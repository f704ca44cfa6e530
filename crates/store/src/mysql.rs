//! The scaled-out backend: MySQL-compatible servers (tested on MariaDB), one pool per database.
//! The catalog store is one database; each order shard is another, optionally with a read replica.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, Pool};

use std::sync::Arc;

use flashback_core::breaker::{Breaker, BreakerSettings, Permit};

use crate::gate::Gate;
use crate::{Store, StoreError, StoreOptions, StoreResult};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/mysql");
static SHARD_MIGRATOR: Migrator = sqlx::migrate!("migrations/mysql-shard");

fn connect_options(url: &str) -> StoreResult<MySqlConnectOptions> {
    let url = url.replacen("mariadb://", "mysql://", 1);
    Ok(MySqlConnectOptions::from_str(&url)?.charset("utf8mb4"))
}

fn pool_options(options: &StoreOptions) -> MySqlPoolOptions {
    MySqlPoolOptions::new().max_connections(options.max_connections.max(1)).acquire_timeout(options.acquire_timeout)
}

pub(crate) async fn connect(url: &str, options: &StoreOptions) -> StoreResult<MySqlPool> {
    Ok(pool_options(options).connect_with(connect_options(url)?).await?)
}

/// A pool that opens its first connection when a query needs it, so a server that is down at
/// start does not stop the instance; until it answers, acquiring fails as unavailable.
fn connect_lazy(url: &str, options: &StoreOptions) -> StoreResult<MySqlPool> {
    Ok(pool_options(options).connect_lazy_with(connect_options(url)?))
}

async fn migrate(pool: &MySqlPool, migrator: &Migrator) -> StoreResult<()> {
    // The migrator takes a named lock, so instances starting together migrate once.
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => StoreError::from(e),
        other => StoreError::Config(format!("migrations: {other}")),
    })
}

/// The catalog store in a MySQL or MariaDB database.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    gate: Gate,
}

impl MySqlStore {
    /// Connects to the database the URL names (`mysql://user:pass@host:port/db`).
    pub async fn connect(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        Ok(Self { pool: connect(url, options).await?, gate: Gate::new("store".into(), options.breaker) })
    }

    pub(crate) fn writer(&self) -> StoreResult<&Pool<MySql>> {
        self.gate.check()?;
        Ok(&self.pool)
    }

    pub(crate) fn reader(&self) -> StoreResult<&Pool<MySql>> {
        self.writer()
    }
}

crate::sql::impl_sql_store!(MySqlStore, MySql);
crate::sql_stock::impl_stock_store!(MySqlStore, MySql);
crate::sql_flash::impl_flash_store!(MySqlStore, MySql, " ON DUPLICATE KEY UPDATE id = id");
crate::flash_attempts::impl_flash_attempt_store!(MySqlStore, " ON DUPLICATE KEY UPDATE id = id");
// `INSERT IGNORE` affects 0 rows on a duplicate key (an upsert would report the row as
// found); keys are length-checked first, so it cannot hide a truncation.
crate::sql_withdraw::impl_withdrawal_store!(MySqlStore, MySql);
crate::sql_rebate::impl_rebate_store!(
    MySqlStore,
    MySql,
    "INSERT INTO rebate_profiles (user_id, tier, inviter_id, created_at_ms) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE user_id = user_id",
    "INSERT INTO sync_cursors (name, position_ms, updated_at_ms) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE name = name",
    "INSERT INTO rebate_lists (user_id, listed) SELECT j.u, 0 FROM JSON_TABLE(?, '$[*]' COLUMNS (u BIGINT PATH '$')) AS j \
     ON DUPLICATE KEY UPDATE listed = listed RETURNING user_id, listed, head_source, head_line_key, CAST(head_role AS SIGNED)",
    "UPDATE JSON_TABLE(?, '$[*]' COLUMNS (source VARCHAR(32) COLLATE utf8mb4_unicode_ci PATH '$[0]', \
     line_key VARCHAR(64) COLLATE utf8mb4_unicode_ci PATH '$[1]', \
     n0 BIGINT PATH '$[2]', ps0 VARCHAR(32) PATH '$[3]', pk0 VARCHAR(64) PATH '$[4]', pr0 SMALLINT PATH '$[5]', \
     n1 BIGINT PATH '$[6]', ps1 VARCHAR(32) PATH '$[7]', pk1 VARCHAR(64) PATH '$[8]', pr1 SMALLINT PATH '$[9]', \
     n2 BIGINT PATH '$[10]', ps2 VARCHAR(32) PATH '$[11]', pk2 VARCHAR(64) PATH '$[12]', pr2 SMALLINT PATH '$[13]')) AS j \
     STRAIGHT_JOIN rebate_orders r ON r.source = j.source AND r.line_key = j.line_key \
     SET r.list_no = j.n0, r.prev_source = j.ps0, r.prev_line_key = j.pk0, r.prev_role = j.pr0, \
     r.inv_list_no = j.n1, r.inv_prev_source = j.ps1, r.inv_prev_line_key = j.pk1, r.inv_prev_role = j.pr1, \
     r.grand_list_no = j.n2, r.grand_prev_source = j.ps2, r.grand_prev_line_key = j.pk2, r.grand_prev_role = j.pr2",
    "UPDATE rebate_lists l JOIN JSON_TABLE(?, '$[*]' COLUMNS (u BIGINT PATH '$[0]', n BIGINT PATH '$[1]', \
     s VARCHAR(32) PATH '$[2]', k VARCHAR(64) PATH '$[3]', r SMALLINT PATH '$[4]')) AS j ON l.user_id = j.u \
     SET l.listed = j.n, l.head_source = j.s, l.head_line_key = j.k, l.head_role = j.r"
);
crate::sql_rebate::impl_sqlx_rebate_batch!(
    MySqlStore,
    MySql,
    "INSERT IGNORE INTO rebate_orders (source, line_key, parent_key, user_id, inviter_id, grand_inviter_id, tracking, item_id, item_title, category, state, network_status, paid_minor, estimate_minor, settled_minor, refunded_minor, commission_minor, buyer_share, inviter_share, grand_share, platform_share, shares_available, click_ms, paid_at_ms, settled_at_ms, available_at_ms, network_modified_ms, version, created_at_ms, updated_at_ms) ",
    " RETURNING source, line_key"
);
crate::backup::impl_backup_store!(MySqlStore);
crate::node_lease::impl_node_lease_store!(MySqlStore, "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)");
crate::sql_analytics::impl_analytics_store!(
    MySqlStore,
    MySql,
    "INSERT IGNORE INTO analytics_applied (event_id, applied_at_ms) VALUES (?, ?)",
    "INSERT INTO analytics_minutes (minute_ms, paid_orders, gmv_minor, units, cancelled_orders, refunded_orders, refunded_minor) \
     VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE paid_orders = paid_orders + VALUES(paid_orders), \
     gmv_minor = gmv_minor + VALUES(gmv_minor), units = units + VALUES(units), \
     cancelled_orders = cancelled_orders + VALUES(cancelled_orders), \
     refunded_orders = refunded_orders + VALUES(refunded_orders), refunded_minor = refunded_minor + VALUES(refunded_minor)",
    "INSERT INTO analytics_sku_minutes (minute_ms, product_id, sku, units, gmv_minor) VALUES (?, ?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE units = units + VALUES(units), gmv_minor = gmv_minor + VALUES(gmv_minor)"
);
crate::sql_ledger::impl_ledger_store!(
    MySqlStore,
    MySql,
    "INSERT IGNORE INTO ledger_txns (id, idem_key, kind, reference, created_at_ms) VALUES (?, ?, ?, ?, ?)",
    "INSERT INTO ledger_accounts (name, balance, updated_at_ms) \
     SELECT j.account, j.delta, ? FROM JSON_TABLE(?, '$[*]' COLUMNS (account VARCHAR(191) PATH '$[0]', delta BIGINT PATH '$[1]')) AS j \
     ON DUPLICATE KEY UPDATE balance = balance + VALUES(balance), updated_at_ms = VALUES(updated_at_ms) \
     RETURNING id, name, entry_count, head_txn_id, head_seq",
    "INSERT IGNORE INTO ledger_txns (id, idem_key, kind, reference, created_at_ms) ",
    " RETURNING idem_key",
    "UPDATE ledger_accounts a JOIN JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH '$[0]', n BIGINT PATH '$[1]', \
     txn BIGINT PATH '$[2]', seq INT PATH '$[3]')) AS j ON a.id = j.id \
     SET a.entry_count = j.n, a.head_txn_id = j.txn, a.head_seq = j.seq"
);

#[async_trait]
impl Store for MySqlStore {
    fn backend(&self) -> &'static str {
        "mysql"
    }

    async fn migrate(&self) -> StoreResult<()> {
        migrate(&self.pool, &MIGRATOR).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.gate.probe(&self.pool).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn breakers(&self) -> Vec<Arc<Breaker>> {
        vec![self.gate.breaker()]
    }
}

/// One order shard in its own MySQL or MariaDB database, with an optional read replica.
///
/// Writes, single-order reads and migrations always use the primary. Listings that accept lag
/// ([`crate::Read::ReplicaOk`]) go to the replica when there is one, and fall back to the
/// primary when it is unavailable.
#[derive(Debug, Clone)]
pub struct MySqlShard {
    pool: MySqlPool,
    gate: Gate,
    replica: Option<(MySqlPool, Arc<Breaker>)>,
}
/// How long a read waits for a replica connection before falling back to the primary.
const REPLICA_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

impl MySqlShard {
    const BACKEND: &'static str = "mysql";

    /// Connects to shard number `index`'s database `url` names, and lazily to its read replica
    /// `replica` (the same database on a server replicating from the primary), if given. A
    /// replica that is down at start is not an error: reads meant for it go to the primary
    /// until it answers.
    pub async fn connect(url: &str, replica: Option<&str>, options: &StoreOptions, index: usize) -> StoreResult<Self> {
        let pool = connect(url, options).await?;
        let replica_options =
            StoreOptions { acquire_timeout: options.acquire_timeout.min(REPLICA_ACQUIRE_TIMEOUT), ..options.clone() };
        let replica = replica.map(|r| connect_lazy(r, &replica_options)).transpose()?;
        // One failed read is enough to send reads to the primary; a read after the open
        // period probes the replica again.
        let settings = BreakerSettings { failures_to_open: 1, ..options.breaker };
        let replica = replica.map(|pool| (pool, Breaker::new(format!("replica-{index}"), settings)));
        Ok(Self { pool, gate: Gate::new(format!("shard-{index}"), options.breaker), replica })
    }

    pub(crate) fn writer(&self) -> StoreResult<&Pool<MySql>> {
        self.gate.check()?;
        Ok(&self.pool)
    }

    /// The replica's pool and permission to read it, while it is not known to be down.
    fn replica_read(&self) -> Option<(&Pool<MySql>, Permit<'_>)> {
        let (pool, breaker) = self.replica.as_ref()?;
        Some((pool, breaker.permit()?))
    }

    async fn probe(&self) -> StoreResult<()> {
        self.gate.probe(&self.pool).await
    }

    fn shard_breakers(&self) -> Vec<Arc<Breaker>> {
        let mut all = vec![self.gate.breaker()];
        all.extend(self.replica.as_ref().map(|(_, b)| Arc::clone(b)));
        all
    }

    async fn run_migrations(&self) -> StoreResult<()> {
        // Only ever on the primary: the replica receives the schema changes by replication.
        migrate(&self.pool, &SHARD_MIGRATOR).await
    }

    async fn close_pools(&self) {
        self.pool.close().await;
        if let Some((replica, _)) = &self.replica {
            replica.close().await;
        }
    }
}

crate::sql_shard::impl_order_shard!(MySqlShard, MySql);
