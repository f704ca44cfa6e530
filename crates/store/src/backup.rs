//! Backups proven by a restore: each successful `flashback backup verify` is recorded, and
//! every instance reads the newest for its "last verified backup" gauge.

use async_trait::async_trait;

use crate::StoreResult;

/// One successful verification of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupVerification {
    /// The row's id (an application-made id).
    pub id: i64,
    /// When the verification finished, Unix ms.
    pub verified_at_ms: i64,
    /// When the verified backup was taken, Unix ms (from its manifest).
    pub backup_created_ms: i64,
    /// Where the backup was read from (a directory), for the operator.
    pub location: String,
    /// Files in the backup.
    pub files: i64,
    /// Their total size.
    pub bytes: i64,
}

/// Verified backups, in the catalog store.
#[async_trait]
pub trait BackupStore: Send + Sync {
    /// Records a successful verification.
    async fn record_backup_verification(&self, verification: &BackupVerification) -> StoreResult<()>;
    /// When the newest successful verification finished (Unix ms), or `None` if none has.
    async fn last_backup_verified_ms(&self) -> StoreResult<Option<i64>>;
}

/// Implements [`BackupStore`] for a catalog store type with `writer()` and `reader()` (each
/// its pool, or unavailable while the store's breaker is open); the statements are the same
/// on both backends.
macro_rules! impl_backup_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::BackupStore for $store {
            async fn record_backup_verification(&self, v: &$crate::BackupVerification) -> $crate::StoreResult<()> {
                $crate::retry_deadlocks(|| async {
                    sqlx::query(
                        "INSERT INTO backup_verifications \
                         (id, verified_at_ms, backup_created_ms, location, files, bytes) VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(v.id)
                    .bind(v.verified_at_ms)
                    .bind(v.backup_created_ms)
                    .bind(&v.location)
                    .bind(v.files)
                    .bind(v.bytes)
                    .execute(self.writer()?)
                    .await?;
                    Ok(())
                })
                .await
            }

            async fn last_backup_verified_ms(&self) -> $crate::StoreResult<Option<i64>> {
                let (newest,): (Option<i64>,) = sqlx::query_as("SELECT MAX(verified_at_ms) FROM backup_verifications")
                    .fetch_one(self.reader()?)
                    .await?;
                Ok(newest)
            }
        }
    };
}

pub(crate) use impl_backup_store;
