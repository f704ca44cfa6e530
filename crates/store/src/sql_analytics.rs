//! Analytics rollups, written once for both backends (see `sql.rs` for why a macro). What the
//! dialects spell differently (insert-if-absent, add-on-conflict) comes in as statements.

use flashback_core::UserId;

use crate::{MinuteRollup, StoreError};

pub(crate) const MINUTE_COLUMNS: &str =
    "minute_ms, paid_orders, gmv_minor, units, cancelled_orders, refunded_orders, refunded_minor";

pub(crate) type MinuteRow = (i64, i64, i64, i64, i64, i64, i64);

pub(crate) fn minute(r: MinuteRow) -> MinuteRollup {
    MinuteRollup {
        minute_ms: r.0,
        paid_orders: r.1,
        gmv_minor: r.2,
        units: r.3,
        cancelled_orders: r.4,
        refunded_orders: r.5,
        refunded_minor: r.6,
    }
}

/// `user:<id>:pending` → the user.
pub(crate) fn pending_owner(account: &str) -> Result<UserId, StoreError> {
    account
        .strip_prefix("user:")
        .and_then(|rest| rest.strip_suffix(":pending"))
        .and_then(|id| UserId::parse(id).ok())
        .ok_or_else(|| StoreError::Corrupt { table: "ledger_accounts", reason: format!("account {account}") })
}

/// Implements [`crate::AnalyticsStore`] for a catalog store type with `writer()` and `reader()`.
/// `$applied` inserts `(event_id, applied_at_ms)` unless present (0 rows affected then);
/// `$minute` and `$sku` insert a row or add its counts to the existing one.
macro_rules! impl_analytics_store {
    ($store:ty, $db:ty, $applied:expr, $minute:expr, $sku:expr) => {
        #[async_trait::async_trait]
        impl $crate::AnalyticsStore for $store {
            async fn apply_rollups(&self, deltas: &[$crate::RollupDelta]) -> $crate::StoreResult<Vec<bool>> {
                $crate::retry_deadlocks(|| async {
                    let mut tx = self.writer()?.begin().await?;
                    let mut fresh = Vec::with_capacity(deltas.len());
                    for d in deltas {
                        let new = sqlx::query($applied)
                            .bind(d.event_id)
                            .bind($crate::now_ms())
                            .execute(&mut *tx)
                            .await?
                            .rows_affected()
                            == 1;
                        fresh.push(new);
                        if !new {
                            continue;
                        }
                        sqlx::query($minute)
                            .bind(d.minute_ms)
                            .bind(d.paid_orders)
                            .bind(d.gmv_minor)
                            .bind(d.units)
                            .bind(d.cancelled_orders)
                            .bind(d.refunded_orders)
                            .bind(d.refunded_minor)
                            .execute(&mut *tx)
                            .await?;
                        for s in &d.skus {
                            sqlx::query($sku)
                                .bind(d.minute_ms)
                                .bind(s.product_id)
                                .bind(&s.sku)
                                .bind(s.units)
                                .bind(s.gmv_minor)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(fresh)
                })
                .await
            }

            async fn rollup_minutes(&self, from_ms: i64, to_ms: i64) -> $crate::StoreResult<Vec<$crate::MinuteRollup>> {
                let sql = format!(
                    "SELECT {} FROM analytics_minutes WHERE minute_ms >= ? AND minute_ms < ? ORDER BY minute_ms",
                    $crate::sql_analytics::MINUTE_COLUMNS
                );
                let rows: Vec<$crate::sql_analytics::MinuteRow> =
                    sqlx::query_as(&sql).bind(from_ms).bind(to_ms).fetch_all(self.reader()?).await?;
                Ok(rows.into_iter().map($crate::sql_analytics::minute).collect())
            }

            async fn rollup_total(&self, from_ms: i64, to_ms: i64) -> $crate::StoreResult<$crate::MinuteRollup> {
                let row: $crate::sql_analytics::MinuteRow = sqlx::query_as(
                    "SELECT CAST(? AS SIGNED), CAST(COALESCE(SUM(paid_orders), 0) AS SIGNED), \
                     CAST(COALESCE(SUM(gmv_minor), 0) AS SIGNED), CAST(COALESCE(SUM(units), 0) AS SIGNED), \
                     CAST(COALESCE(SUM(cancelled_orders), 0) AS SIGNED), \
                     CAST(COALESCE(SUM(refunded_orders), 0) AS SIGNED), \
                     CAST(COALESCE(SUM(refunded_minor), 0) AS SIGNED) \
                     FROM analytics_minutes WHERE minute_ms >= ? AND minute_ms < ?",
                )
                .bind(from_ms)
                .bind(from_ms)
                .bind(to_ms)
                .fetch_one(self.reader()?)
                .await?;
                Ok($crate::sql_analytics::minute(row))
            }

            async fn top_skus(&self, from_ms: i64, to_ms: i64, limit: u32) -> $crate::StoreResult<Vec<$crate::SkuTotal>> {
                let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(
                    "SELECT product_id, MAX(sku), CAST(SUM(units) AS SIGNED) AS u, CAST(SUM(gmv_minor) AS SIGNED) AS g \
                     FROM analytics_sku_minutes WHERE minute_ms >= ? AND minute_ms < ? \
                     GROUP BY product_id ORDER BY g DESC, u DESC, product_id LIMIT ?",
                )
                .bind(from_ms)
                .bind(to_ms)
                .bind(i64::from(limit))
                .fetch_all(self.reader()?)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(product_id, sku, units, gmv_minor)| $crate::SkuTotal { product_id, sku, units, gmv_minor })
                    .collect())
            }

            async fn pending_rebates(&self, limit: u32) -> $crate::StoreResult<(i64, Vec<(flashback_core::UserId, i64)>)> {
                let total: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(balance), 0) AS SIGNED) FROM ledger_accounts WHERE name LIKE 'user:%:pending'",
                )
                .fetch_one(self.reader()?)
                .await?;
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT name, balance FROM ledger_accounts WHERE name LIKE 'user:%:pending' AND balance <> 0 \
                     ORDER BY balance DESC, name LIMIT ?",
                )
                .bind(i64::from(limit))
                .fetch_all(self.reader()?)
                .await?;
                let users = rows
                    .into_iter()
                    .map(|(a, b)| Ok(($crate::sql_analytics::pending_owner(&a)?, b)))
                    .collect::<$crate::StoreResult<Vec<_>>>()?;
                Ok((total, users))
            }

            async fn prune_applied(&self, before_ms: i64) -> $crate::StoreResult<u64> {
                $crate::retry_deadlocks(|| async {
                    let done = sqlx::query("DELETE FROM analytics_applied WHERE applied_at_ms < ?")
                        .bind(before_ms)
                        .execute(self.writer()?)
                        .await?;
                    Ok(done.rows_affected())
                })
                .await
            }
        }
    };
}

pub(crate) use impl_analytics_store;
