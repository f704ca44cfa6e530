//! Withdrawals, written once for both backends (see `sql.rs` for why a macro).

use flashback_core::UserId;

use crate::{StoreError, Withdrawal, WithdrawalState};

pub(crate) const COLUMNS: &str = "id, user_id, amount_minor, payee, state, transfer_no, reason, reviewer_id, \
     provider_ref, created_at_ms, updated_at_ms";

pub(crate) type Row = (i64, i64, i64, String, String, String, Option<String>, Option<i64>, Option<String>, i64, i64);

pub(crate) fn withdrawal(r: Row) -> Result<Withdrawal, StoreError> {
    let bad = |reason: String| StoreError::Corrupt { table: "withdrawals", reason };
    Ok(Withdrawal {
        id: r.0,
        user_id: UserId::new(r.1).map_err(|e| bad(e.to_string()))?,
        amount_minor: r.2,
        payee: r.3,
        state: WithdrawalState::parse(&r.4).ok_or_else(|| bad(format!("state {}", r.4)))?,
        transfer_no: r.5,
        reason: r.6,
        reviewer_id: r.7.map(UserId::new).transpose().map_err(|e| bad(e.to_string()))?,
        provider_ref: r.8,
        created_at_ms: r.9,
        updated_at_ms: r.10,
    })
}

/// Implements [`crate::WithdrawalStore`] for a catalog store type with `writer()` and the
/// ledger's `post_in`.
macro_rules! impl_withdrawal_store {
    ($store:ty, $db:ty) => {
        impl $store {
            async fn request_once(
                &self,
                w: &$crate::Withdrawal,
                day: i64,
                daily_limit: u32,
                hold: &$crate::NewTxn,
            ) -> Result<(), $crate::WithdrawRefusal> {
                let mut tx = self.writer().map_err($crate::LedgerError::from)?.begin().await.map_err($crate::LedgerError::from)?;
                // One request per user at a time: lock the user's available-balance row first
                // (a no-op write), so the count below and the hold are decided in turn.
                sqlx::query("UPDATE ledger_accounts SET balance = balance WHERE name = ?")
                    .bind(flashback_core::Account::Available(w.user_id).name())
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::LedgerError::from)?;
                let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM withdrawals WHERE user_id = ? AND day = ?")
                    .bind(w.user_id.get())
                    .bind(day)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err($crate::LedgerError::from)?;
                if used >= i64::from(daily_limit) {
                    return Err($crate::WithdrawRefusal::DailyLimit);
                }
                // The next slot of the day is unique: a racing request that counted the same
                // number fails here and counts again.
                sqlx::query(
                    "INSERT INTO withdrawals (id, user_id, amount_minor, payee, state, day, day_slot, transfer_no, \
                     reason, reviewer_id, provider_ref, created_at_ms, updated_at_ms) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?)",
                )
                .bind(w.id)
                .bind(w.user_id.get())
                .bind(w.amount_minor)
                .bind(&w.payee)
                .bind(w.state.as_str())
                .bind(day)
                .bind(used + 1)
                .bind(&w.transfer_no)
                .bind(w.created_at_ms)
                .bind(w.updated_at_ms)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::LedgerError::Store($crate::error::on_write(e, "withdrawal slot", "user")))?;
                match Self::post_in(&mut tx, hold).await {
                    Ok($crate::Posted::New) => {}
                    Ok($crate::Posted::Existing) => {
                        return Err($crate::LedgerError::Unbalanced(format!("{}: hold already posted", hold.key)).into());
                    }
                    Err($crate::LedgerError::Overdraft(_)) => return Err($crate::WithdrawRefusal::Overdraft),
                    Err(e) => return Err(e.into()),
                }
                tx.commit().await.map_err($crate::LedgerError::from)?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::WithdrawalStore for $store {
            async fn request_withdrawal(
                &self,
                w: &$crate::Withdrawal,
                day: i64,
                daily_limit: u32,
                hold: &$crate::NewTxn,
            ) -> Result<(), $crate::WithdrawRefusal> {
                // A conflict on the day's counter means another request of the same day won the
                // insert; the next attempt sees it.
                let raced = |e: &$crate::WithdrawRefusal| {
                    use $crate::Retryable;
                    e.is_retryable()
                        || matches!(
                            e,
                            $crate::WithdrawRefusal::Ledger($crate::LedgerError::Store($crate::StoreError::Conflict(_)))
                        )
                };
                $crate::retry_when(raced, || self.request_once(w, day, daily_limit, hold)).await
            }

            async fn move_withdrawal(
                &self,
                m: $crate::WithdrawalMove<'_>,
            ) -> Result<Option<$crate::Withdrawal>, $crate::LedgerError> {
                $crate::retry_deadlocks(|| async {
                    let mut tx = self.writer()?.begin().await?;
                    let moved = sqlx::query(
                        "UPDATE withdrawals SET state = ?, reason = COALESCE(?, reason), reviewer_id = COALESCE(?, reviewer_id), \
                         provider_ref = COALESCE(?, provider_ref), updated_at_ms = ? WHERE id = ? AND state = ?",
                    )
                    .bind(m.to.as_str())
                    .bind(m.reason)
                    .bind(m.reviewer.map(flashback_core::UserId::get))
                    .bind(m.provider_ref)
                    .bind($crate::now_ms())
                    .bind(m.id)
                    .bind(m.from.as_str())
                    .execute(&mut *tx)
                    .await?;
                    if moved.rows_affected() != 1 {
                        return Ok(None);
                    }
                    if let Some(txn) = m.txn {
                        Self::post_in(&mut tx, txn).await?;
                    }
                    let sql = format!("SELECT {} FROM withdrawals WHERE id = ?", $crate::sql_withdraw::COLUMNS);
                    let row: $crate::sql_withdraw::Row = sqlx::query_as(&sql).bind(m.id).fetch_one(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(Some($crate::sql_withdraw::withdrawal(row)?))
                })
                .await
            }

            async fn withdrawal(&self, id: i64) -> $crate::StoreResult<Option<$crate::Withdrawal>> {
                let sql = format!("SELECT {} FROM withdrawals WHERE id = ?", $crate::sql_withdraw::COLUMNS);
                let row: Option<$crate::sql_withdraw::Row> =
                    sqlx::query_as(&sql).bind(id).fetch_optional(self.writer()?).await?;
                row.map($crate::sql_withdraw::withdrawal).transpose()
            }

            async fn withdrawals(
                &self,
                user: Option<flashback_core::UserId>,
                state: Option<$crate::WithdrawalState>,
                before: Option<i64>,
                limit: u32,
            ) -> $crate::StoreResult<Vec<$crate::Withdrawal>> {
                let sql = format!(
                    "SELECT {} FROM withdrawals WHERE (? IS NULL OR user_id = ?) AND (? IS NULL OR state = ?) \
                     AND id < ? ORDER BY id DESC LIMIT ?",
                    $crate::sql_withdraw::COLUMNS
                );
                let (u, s) = (user.map(flashback_core::UserId::get), state.map($crate::WithdrawalState::as_str));
                let rows: Vec<$crate::sql_withdraw::Row> = sqlx::query_as(&sql)
                    .bind(u)
                    .bind(u)
                    .bind(s)
                    .bind(s)
                    .bind(before.unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(self.writer()?)
                    .await?;
                rows.into_iter().map($crate::sql_withdraw::withdrawal).collect()
            }
        }
    };
}

pub(crate) use impl_withdrawal_store;
