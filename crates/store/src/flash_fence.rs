//! The fence after a `sql` reserve step whose commit failed (a dropped or reset connection, a
//! timeout): a read of the reservation's row that can only see the step's final outcome.
//!
//! - MySQL/MariaDB: the step's `INSERT` holds the row's lock until its transaction commits or
//!   rolls back, and a locking read of that row on another connection waits for the lock, so
//!   what it finds is final. The server rolls back the transaction of a connection that
//!   closed; one whose connection still looks open to the server keeps the lock until the
//!   server notices, so the wait is bounded ([`LOCK_WAIT_S`]) and running out of it is an
//!   error: the outcome is still in doubt.
//! - SQLite: every write goes through one connection; a read on it after the failed commit
//!   runs once that transaction has ended (committed, or rolled back when it was dropped).

use sqlx::{Acquire, MySqlConnection};

use crate::StoreResult;

/// How long the MySQL fence waits for the transaction it fences, in seconds.
pub(crate) const LOCK_WAIT_S: u32 = 2;

impl crate::MySqlStore {
    /// Whether reservation `id` exists, once any transaction writing it has ended.
    pub(crate) async fn reservation_fence(&self, id: i64) -> StoreResult<bool> {
        let mut conn = self.writer()?.acquire().await?;
        // It carries its own lock wait: closed afterwards rather than returned to the pool.
        conn.close_on_drop();
        locked_read(&mut conn, id).await
    }
}

async fn locked_read(conn: &mut MySqlConnection, id: i64) -> StoreResult<bool> {
    sqlx::query(&format!("SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_S}")).execute(&mut *conn).await?;
    let mut tx = conn.begin().await?;
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM flash_reservations WHERE id = ? LOCK IN SHARE MODE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.rollback().await?;
    Ok(found.is_some())
}

impl crate::SqliteStore {
    /// Whether reservation `id` exists, read on the writer after whatever ran on it before.
    pub(crate) async fn reservation_fence(&self, id: i64) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM flash_reservations WHERE id = ?")
            .bind(id)
            .fetch_optional(self.writer()?)
            .await?;
        Ok(found.is_some())
    }
}
