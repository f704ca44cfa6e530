//! The ledger, written once for both backends (see `sql.rs` for why a macro).
//!
//! The macro takes the statements the dialects spell differently: inserting a transaction row
//! unless its idempotency key exists (affecting 0 rows then), and adding to many account
//! balances at once, creating the accounts absent and returning every account's id, from one
//! JSON array bound as a single parameter (SQLite's `json_each`, MariaDB's `JSON_TABLE`): one
//! statement of constant text however many accounts a batch touches, prepared once.
//!
//! Entries name their account by its integer id (`ledger_accounts`): a text name in every
//! entry and again in the per-account index made that index the largest part of the ledger.

use std::collections::BTreeMap;

use flashback_core::Account;

use crate::ledger::{LedgerError, NewTxn, Posting, normal_delta};

/// Longest idempotency key and reference (the indexed column width).
pub(crate) const MAX_KEY: usize = 191;

/// Checks a transaction and returns its non-zero entries.
pub(crate) fn checked(txn: &NewTxn) -> Result<Vec<Posting>, LedgerError> {
    if txn.key.is_empty() || txn.key.len() > MAX_KEY || txn.reference.len() > MAX_KEY || txn.kind.len() > 32 {
        return Err(LedgerError::Unbalanced(format!("{}: key, reference or kind too long or empty", txn.key)));
    }
    txn.validated()
}

/// Balance changes per account (normal sign), in account-name order so concurrent
/// transactions lock rows in the same order.
pub(crate) fn deltas<'a>(postings: impl IntoIterator<Item = &'a Posting>) -> BTreeMap<String, (Account, i64)> {
    let mut out: BTreeMap<String, (Account, i64)> = BTreeMap::new();
    for p in postings {
        out.entry(p.account.name()).or_insert((p.account, 0)).1 += normal_delta(p);
    }
    out
}

/// The entry rows of a transaction: (transaction id, sequence, time, posting).
pub(crate) fn entry_rows<'a>(txn: &NewTxn, postings: &'a [Posting]) -> Vec<(i64, i32, i64, &'a Posting)> {
    postings.iter().enumerate().map(|(seq, p)| (txn.id, i32::try_from(seq).unwrap_or(i32::MAX), txn.at_ms, p)).collect()
}

/// Implements [`crate::LedgerStore`] for a catalog store type with `writer()`.
macro_rules! impl_ledger_store {
    ($store:ty, $db:ty, $insert_txn:literal, $add_balances:literal, $insert_txns:literal, $returning_new:literal) => {
        impl $store {
            /// Inserts the transaction row; false if its key was already posted.
            async fn ledger_txn_row(
                tx: &mut sqlx::Transaction<'_, $db>,
                txn: &$crate::NewTxn,
            ) -> Result<bool, $crate::LedgerError> {
                let inserted = sqlx::query($insert_txn)
                    .bind(txn.id)
                    .bind(&txn.key)
                    .bind(&txn.kind)
                    .bind(&txn.reference)
                    .bind(txn.at_ms)
                    .execute(&mut **tx)
                    .await?;
                Ok(inserted.rows_affected() == 1)
            }

            /// Applies the balance changes of the entries about to be written and returns the
            /// id of every account they name, creating accounts on first use.
            async fn move_balances(
                tx: &mut sqlx::Transaction<'_, $db>,
                deltas: std::collections::BTreeMap<String, (flashback_core::Account, i64)>,
                guarded: &[flashback_core::Account],
                at_ms: i64,
            ) -> Result<std::collections::HashMap<flashback_core::Account, i64>, $crate::LedgerError> {
                let is_guarded = |account: &flashback_core::Account, delta: i64| delta < 0 && guarded.contains(account);
                // Unguarded changes (zero too: the entries need the account's id) in one
                // statement: `[[account, delta], …]` as JSON, in account order (the order rows
                // are locked in).
                let unguarded: Vec<(&str, i64)> = deltas
                    .iter()
                    .filter(|(_, (account, delta))| !is_guarded(account, *delta))
                    .map(|(name, (_, delta))| (name.as_str(), *delta))
                    .collect();
                let mut ids = std::collections::HashMap::with_capacity(deltas.len());
                if !unguarded.is_empty() {
                    let changes = serde_json::to_string(&unguarded)
                        .map_err(|e| $crate::LedgerError::Unbalanced(format!("balance changes: {e}")))?;
                    let rows: Vec<(i64, String)> =
                        sqlx::query_as($add_balances).bind(at_ms).bind(changes).fetch_all(&mut **tx).await?;
                    for (id, name) in rows {
                        let (account, _) = deltas.get(&name).ok_or_else(|| {
                            $crate::LedgerError::Unbalanced(format!("the database returned account {name}"))
                        })?;
                        ids.insert(*account, id);
                    }
                }
                for (name, (account, delta)) in deltas {
                    if is_guarded(&account, delta) {
                        // The conditional write: only if the balance stays at or above zero.
                        let moved = sqlx::query(
                            "UPDATE ledger_accounts SET balance = balance + ?, updated_at_ms = ? \
                             WHERE name = ? AND balance + ? >= 0",
                        )
                        .bind(delta)
                        .bind(at_ms)
                        .bind(&name)
                        .bind(delta)
                        .execute(&mut **tx)
                        .await?;
                        if moved.rows_affected() != 1 {
                            return Err($crate::LedgerError::Overdraft(account));
                        }
                        let id: i64 = sqlx::query_scalar("SELECT id FROM ledger_accounts WHERE name = ?")
                            .bind(&name)
                            .fetch_one(&mut **tx)
                            .await?;
                        ids.insert(account, id);
                    }
                }
                Ok(ids)
            }

            /// Inserts entries (transaction id, sequence, time, posting), 500 rows a statement,
            /// naming each account by the id [`Self::move_balances`] returned.
            async fn ledger_entries(
                tx: &mut sqlx::Transaction<'_, $db>,
                rows: &[(i64, i32, i64, &$crate::Posting)],
                ids: &std::collections::HashMap<flashback_core::Account, i64>,
            ) -> Result<(), $crate::LedgerError> {
                let mut bound = Vec::with_capacity(rows.len());
                for (txn, seq, at, p) in rows {
                    let id = ids.get(&p.account).copied().ok_or_else(|| {
                        $crate::LedgerError::Unbalanced(format!("account {} has no id", p.account.name()))
                    })?;
                    bound.push((*txn, *seq, id, p.amount, *at));
                }
                for chunk in bound.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO ledger_entries (txn_id, seq, account_id, amount, created_at_ms) ",
                    );
                    q.push_values(chunk, |mut b, (txn, seq, account, amount, at)| {
                        b.push_bind(*txn).push_bind(*seq).push_bind(*account).push_bind(*amount).push_bind(*at);
                    });
                    q.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Posts `txn` inside an open transaction (the caller commits).
            pub(crate) async fn post_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                txn: &$crate::NewTxn,
            ) -> Result<$crate::Posted, $crate::LedgerError> {
                let postings = $crate::sql_ledger::checked(txn)?;
                if !Self::ledger_txn_row(tx, txn).await? {
                    return Ok($crate::Posted::Existing);
                }
                let ids =
                    Self::move_balances(tx, $crate::sql_ledger::deltas(&postings), &txn.no_overdraft, txn.at_ms).await?;
                Self::ledger_entries(tx, &$crate::sql_ledger::entry_rows(txn, &postings), &ids).await?;
                Ok($crate::Posted::New)
            }

            async fn post_once(&self, txn: &$crate::NewTxn) -> Result<$crate::Posted, $crate::LedgerError> {
                let mut tx = self.writer().begin().await?;
                let posted = Self::post_in(&mut tx, txn).await?;
                if posted == $crate::Posted::New {
                    tx.commit().await?;
                }
                Ok(posted)
            }

            /// Posts many unguarded transactions inside an open transaction, balances aggregated.
            pub(crate) async fn post_many_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                txns: &[&$crate::NewTxn],
            ) -> Result<Vec<$crate::Posted>, $crate::LedgerError> {
                let mut checked = Vec::with_capacity(txns.len());
                for txn in txns {
                    if !txn.no_overdraft.is_empty() {
                        return Err($crate::LedgerError::Unbalanced(format!(
                            "{}: guarded postings go one at a time",
                            txn.key
                        )));
                    }
                    checked.push($crate::sql_ledger::checked(txn)?);
                }
                // The transaction rows in a few statements; the database says which keys were new.
                let mut new_keys: std::collections::HashSet<String> = std::collections::HashSet::new();
                for chunk in txns.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new($insert_txns);
                    q.push_values(chunk, |mut b, t| {
                        b.push_bind(t.id)
                            .push_bind(t.key.clone())
                            .push_bind(t.kind.clone())
                            .push_bind(t.reference.clone())
                            .push_bind(t.at_ms);
                    });
                    q.push($returning_new);
                    let keys: Vec<String> = q.build_query_scalar().fetch_all(&mut **tx).await?;
                    new_keys.extend(keys);
                }
                let mut outcomes = Vec::with_capacity(txns.len());
                let mut applied: Vec<(&$crate::NewTxn, Vec<$crate::Posting>)> = Vec::new();
                for (txn, postings) in txns.iter().zip(checked) {
                    // A key twice in one batch: the first is the one written.
                    if new_keys.remove(&txn.key) {
                        outcomes.push($crate::Posted::New);
                        applied.push((txn, postings));
                    } else {
                        outcomes.push($crate::Posted::Existing);
                    }
                }
                let at = txns.iter().map(|t| t.at_ms).max().unwrap_or(0);
                let deltas = $crate::sql_ledger::deltas(applied.iter().flat_map(|(_, p)| p.iter()));
                let ids = Self::move_balances(tx, deltas, &[], at).await?;
                let rows: Vec<(i64, i32, i64, &$crate::Posting)> =
                    applied.iter().flat_map(|(txn, postings)| $crate::sql_ledger::entry_rows(txn, postings)).collect();
                Self::ledger_entries(tx, &rows, &ids).await?;
                Ok(outcomes)
            }

            async fn post_batch_once(
                &self,
                txns: &[$crate::NewTxn],
            ) -> Result<Vec<$crate::Posted>, $crate::LedgerError> {
                let mut tx = self.writer().begin().await?;
                let refs: Vec<&$crate::NewTxn> = txns.iter().collect();
                let outcomes = Self::post_many_in(&mut tx, &refs).await?;
                tx.commit().await?;
                Ok(outcomes)
            }
        }

        #[async_trait::async_trait]
        impl $crate::LedgerStore for $store {
            async fn post(&self, txn: &$crate::NewTxn) -> Result<$crate::Posted, $crate::LedgerError> {
                let mut tries = 0;
                loop {
                    match self.post_once(txn).await {
                        Err($crate::LedgerError::Store(e)) if e.is_retryable() && tries < 3 => tries += 1,
                        other => return other,
                    }
                }
            }

            async fn post_batch(&self, txns: &[$crate::NewTxn]) -> Result<Vec<$crate::Posted>, $crate::LedgerError> {
                let mut tries = 0;
                loop {
                    match self.post_batch_once(txns).await {
                        Err($crate::LedgerError::Store(e)) if e.is_retryable() && tries < 3 => tries += 1,
                        other => return other,
                    }
                }
            }

            async fn balance(&self, account: flashback_core::Account) -> $crate::StoreResult<i64> {
                let b: Option<i64> = sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE name = ?")
                    .bind(account.name())
                    .fetch_optional(self.writer())
                    .await?;
                Ok(b.unwrap_or(0))
            }

            async fn wallet(&self, user: flashback_core::UserId) -> $crate::StoreResult<$crate::Wallet> {
                use flashback_core::Account;
                let names = [Account::Pending(user), Account::Available(user), Account::Withdrawing(user)].map(Account::name);
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT name, balance FROM ledger_accounts WHERE name IN (?, ?, ?)")
                        .bind(&names[0])
                        .bind(&names[1])
                        .bind(&names[2])
                        .fetch_all(self.writer())
                        .await?;
                let get = |n: &String| rows.iter().find(|(a, _)| a == n).map_or(0, |(_, b)| *b);
                Ok($crate::Wallet { pending: get(&names[0]), available: get(&names[1]), withdrawing: get(&names[2]) })
            }

            async fn statement(
                &self,
                account: flashback_core::Account,
                before_txn: Option<i64>,
                limit: u32,
            ) -> $crate::StoreResult<Vec<$crate::LedgerLine>> {
                let rows: Vec<(i64, String, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT e.txn_id, t.kind, t.reference, a.name, e.amount, e.created_at_ms \
                     FROM ledger_accounts a JOIN ledger_entries e ON e.account_id = a.id JOIN ledger_txns t ON t.id = e.txn_id \
                     WHERE a.name = ? AND e.txn_id < ? ORDER BY e.txn_id DESC, e.seq DESC LIMIT ?",
                )
                .bind(account.name())
                .bind(before_txn.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(self.writer())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(txn_id, kind, reference, account, amount, at_ms)| $crate::LedgerLine {
                        txn_id,
                        kind,
                        reference,
                        account,
                        amount,
                        at_ms,
                    })
                    .collect())
            }

            async fn balances(&self) -> $crate::StoreResult<Vec<(flashback_core::Account, i64)>> {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT name, balance FROM ledger_accounts").fetch_all(self.writer()).await?;
                rows.into_iter()
                    .map(|(name, b)| {
                        flashback_core::Account::parse(&name)
                            .map(|a| (a, b))
                            .map_err(|e| $crate::StoreError::Corrupt { table: "ledger_accounts", reason: e.to_string() })
                    })
                    .collect()
            }

            async fn posted(&self, key: &str) -> $crate::StoreResult<bool> {
                let n: Option<i64> = sqlx::query_scalar("SELECT id FROM ledger_txns WHERE idem_key = ?")
                    .bind(key)
                    .fetch_optional(self.writer())
                    .await?;
                Ok(n.is_some())
            }

            async fn audit_ledger(&self) -> $crate::StoreResult<$crate::LedgerAudit> {
                // One read transaction: a consistent snapshot on both backends.
                let mut tx = self.writer().begin().await?;
                let mut a = $crate::LedgerAudit::default();
                let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
                a.transactions = u64::try_from(count("SELECT COUNT(*) FROM ledger_txns").fetch_one(&mut *tx).await?)
                    .unwrap_or(0);
                a.entries = u64::try_from(count("SELECT COUNT(*) FROM ledger_entries").fetch_one(&mut *tx).await?)
                    .unwrap_or(0);
                let unbalanced: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT txn_id, CAST(SUM(amount) AS SIGNED) FROM ledger_entries GROUP BY txn_id HAVING SUM(amount) <> 0",
                )
                .fetch_all(&mut *tx)
                .await?;
                for (txn, sum) in unbalanced {
                    a.violations.push(format!("transaction {txn} does not balance: entries sum to {sum}"));
                }
                let empty: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM ledger_txns t WHERE NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.txn_id = t.id)",
                )
                .fetch_all(&mut *tx)
                .await?;
                for txn in empty {
                    a.violations.push(format!("transaction {txn} has no entries"));
                }
                // Sums per account id, named by the accounts table (no name: an entry names an
                // account that does not exist).
                let sums: Vec<(i64, Option<String>, i64)> = sqlx::query_as(
                    "SELECT s.account_id, a.name, s.total FROM \
                     (SELECT account_id, CAST(SUM(amount) AS SIGNED) AS total FROM ledger_entries GROUP BY account_id) s \
                     LEFT JOIN ledger_accounts a ON a.id = s.account_id",
                )
                .fetch_all(&mut *tx)
                .await?;
                let balances: Vec<(String, i64)> =
                    sqlx::query_as("SELECT name, balance FROM ledger_accounts").fetch_all(&mut *tx).await?;
                tx.commit().await?;
                a.accounts = u64::try_from(balances.len()).unwrap_or(0);
                let mut derived: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
                for (id, name, total) in sums {
                    match name {
                        Some(name) => {
                            derived.insert(name, total);
                        }
                        None => a.violations.push(format!("entries name account id {id}, which does not exist")),
                    }
                }
                a.total = derived.values().sum();
                if a.total != 0 {
                    a.violations.push(format!("all entries sum to {}, not 0", a.total));
                }
                for (name, balance) in &balances {
                    let Ok(account) = flashback_core::Account::parse(name) else {
                        a.violations.push(format!("unknown account {name}"));
                        continue;
                    };
                    let raw = derived.get(name).copied().unwrap_or(0);
                    let expected = if account.credit_normal() { -raw } else { raw };
                    if *balance != expected {
                        a.violations.push(format!("{name}: balance {balance} but its entries give {expected}"));
                    }
                    if matches!(account, flashback_core::Account::Pending(_) | flashback_core::Account::Withdrawing(_))
                        && *balance < 0
                    {
                        a.violations.push(format!("{name} is negative: {balance}"));
                    }
                }
                Ok(a)
            }
        }
    };
}

pub(crate) use impl_ledger_store;
