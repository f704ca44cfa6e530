//! The scaled-out backend: a MySQL-compatible server (tested on MariaDB) through one pool.

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, Pool};
use std::str::FromStr;

use crate::{Store, StoreError, StoreOptions, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");

/// A MySQL or MariaDB database.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
}

impl MySqlStore {
    /// Connects to the database the URL names (`mysql://user:pass@host:port/db`).
    pub async fn connect(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        let url = url.replacen("mariadb://", "mysql://", 1);
        let connect = MySqlConnectOptions::from_str(&url)?.charset("utf8mb4");
        let pool = MySqlPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(Self { pool })
    }

    pub(crate) fn writer(&self) -> &Pool<MySql> {
        &self.pool
    }

    pub(crate) fn reader(&self) -> &Pool<MySql> {
        &self.pool
    }
}

crate::sql::impl_sql_store!(MySqlStore, MySql);

#[async_trait]
impl Store for MySqlStore {
    fn backend(&self) -> &'static str {
        "mysql"
    }

    async fn migrate(&self) -> StoreResult<()> {
        // The migrator takes a named lock, so instances starting together migrate once.
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => StoreError::from(e),
            other => StoreError::Config(format!("migrations: {other}")),
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
