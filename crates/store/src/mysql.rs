//! The scaled-out backend: MySQL-compatible servers (tested on MariaDB), one pool per database.
//! The catalog store is one database; each order shard is another.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, Pool};

use crate::{Store, StoreError, StoreOptions, StoreResult};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/mysql");
static SHARD_MIGRATOR: Migrator = sqlx::migrate!("migrations/mysql-shard");

async fn connect(url: &str, options: &StoreOptions) -> StoreResult<MySqlPool> {
    let url = url.replacen("mariadb://", "mysql://", 1);
    let connect = MySqlConnectOptions::from_str(&url)?.charset("utf8mb4");
    Ok(MySqlPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await?)
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
}

impl MySqlStore {
    /// Connects to the database the URL names (`mysql://user:pass@host:port/db`).
    pub async fn connect(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        Ok(Self { pool: connect(url, options).await? })
    }

    pub(crate) fn writer(&self) -> &Pool<MySql> {
        &self.pool
    }

    pub(crate) fn reader(&self) -> &Pool<MySql> {
        &self.pool
    }
}

crate::sql::impl_sql_store!(MySqlStore, MySql);
crate::sql_stock::impl_stock_store!(MySqlStore, MySql);

#[async_trait]
impl Store for MySqlStore {
    fn backend(&self) -> &'static str {
        "mysql"
    }

    async fn migrate(&self) -> StoreResult<()> {
        migrate(&self.pool, &MIGRATOR).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// One order shard in its own MySQL or MariaDB database.
#[derive(Debug, Clone)]
pub struct MySqlShard {
    pool: MySqlPool,
}

impl MySqlShard {
    const BACKEND: &'static str = "mysql";

    /// Connects to the shard database the URL names.
    pub async fn connect(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        Ok(Self { pool: connect(url, options).await? })
    }

    pub(crate) fn writer(&self) -> &Pool<MySql> {
        &self.pool
    }

    pub(crate) fn reader(&self) -> &Pool<MySql> {
        &self.pool
    }

    fn has_replica(&self) -> bool {
        false
    }

    async fn run_migrations(&self) -> StoreResult<()> {
        migrate(&self.pool, &SHARD_MIGRATOR).await
    }

    async fn close_pools(&self) {
        self.pool.close().await;
    }
}

crate::sql_shard::impl_order_shard!(MySqlShard, MySql);
