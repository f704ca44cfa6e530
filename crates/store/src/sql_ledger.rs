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
//!
//! Each account's entries form a chain: an entry names the account's entry before it and its
//! place in the account's history, and the account row names its newest entry. A posting
//! learns the accounts' heads from the balance update that locks their rows, links its entries
//! after them, and moves the heads in one more statement; a statement walks the chain back.
//! Appending costs no index by account (on SQLite that index took a random page per entry,
//! rewritten whole at every commit by the WAL).

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

/// Checks a transaction posted in a batch: batches take no guarded accounts (a conditional
/// write needs its own statement), and it must balance; returns its non-zero entries.
pub(crate) fn checked_unguarded(txn: &NewTxn) -> Result<Vec<Posting>, LedgerError> {
    if !txn.no_overdraft.is_empty() {
        return Err(LedgerError::Unbalanced(format!("{}: guarded postings go one at a time", txn.key)));
    }
    checked(txn)
}

/// Balance changes per account (normal sign), in account-name order so concurrent
/// transactions lock rows in the same order.
pub(crate) fn deltas<'a>(postings: impl IntoIterator<Item = &'a Posting>) -> BTreeMap<String, (Account, i64)> {
    // Summed by account first: each account's name is built once, not once per posting.
    let mut by_account: std::collections::HashMap<Account, i64> = std::collections::HashMap::new();
    for p in postings {
        *by_account.entry(p.account).or_insert(0) += normal_delta(p);
    }
    by_account.into_iter().map(|(account, delta)| (account.name(), (account, delta))).collect()
}

/// The entry rows of a transaction: (transaction id, sequence, time, posting).
pub(crate) fn entry_rows<'a>(txn: &NewTxn, postings: &'a [Posting]) -> Vec<(i64, i32, i64, &'a Posting)> {
    postings.iter().enumerate().map(|(seq, p)| (txn.id, i32::try_from(seq).unwrap_or(i32::MAX), txn.at_ms, p)).collect()
}

/// Where an account's chain of entries ends, as the posting found it (its row locked) and
/// then as the posting leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chain {
    /// The account's id.
    pub(crate) id: i64,
    /// Entries in the chain.
    pub(crate) count: i64,
    /// The newest entry: (transaction, sequence).
    pub(crate) head: Option<(i64, i32)>,
}

/// An account row as the balance update returns it: id, name, entry count, head.
pub(crate) type ChainRow = (i64, String, i64, Option<i64>, Option<i32>);

impl Chain {
    pub(crate) fn of(id: i64, count: i64, txn: Option<i64>, seq: Option<i32>) -> Self {
        Self { id, count, head: txn.zip(seq) }
    }
}

/// One entry ready to insert: transaction, sequence, account id, amount, time, its place in the
/// account's chain and the entry before it.
pub(crate) type ChainedEntry = (i64, i32, i64, i64, i64, i64, Option<(i64, i32)>);

/// Links `rows` (in posting order) onto the accounts' chains: each entry follows the one
/// before it on its account. Returns the entries to insert; `chains` is left at the new heads.
pub(crate) fn link(
    rows: &[(i64, i32, i64, &Posting)],
    chains: &mut std::collections::HashMap<Account, Chain>,
) -> Result<Vec<ChainedEntry>, LedgerError> {
    let mut out = Vec::with_capacity(rows.len());
    for (txn, seq, at, p) in rows {
        let chain = chains
            .get_mut(&p.account)
            .ok_or_else(|| LedgerError::Unbalanced(format!("account {} has no id", p.account.name())))?;
        chain.count += 1;
        out.push((*txn, *seq, chain.id, p.amount, *at, chain.count, chain.head));
        chain.head = Some((*txn, *seq));
    }
    Ok(out)
}

/// Balance changes as the one JSON parameter of the balance upsert: `[[account, delta], …]`.
pub(crate) fn changes_json(changes: &[(&str, i64)]) -> Result<String, LedgerError> {
    serde_json::to_string(changes).map_err(|e| LedgerError::Unbalanced(format!("balance changes: {e}")))
}

/// The account and chain of a row the balance upsert returned, by the name it names.
pub(crate) fn returned_chain(
    deltas: &BTreeMap<String, (Account, i64)>,
    (id, name, count, txn, seq): ChainRow,
) -> Result<(Account, Chain), LedgerError> {
    let (account, _) =
        deltas.get(&name).ok_or_else(|| LedgerError::Unbalanced(format!("the database returned account {name}")))?;
    Ok((*account, Chain::of(id, count, txn, seq)))
}

/// The new heads as the one JSON parameter of the head update: `[[id, count, txn, seq], …]`.
pub(crate) fn heads_json(chains: &std::collections::HashMap<Account, Chain>) -> Result<String, LedgerError> {
    let heads: Vec<(i64, i64, i64, i32)> =
        chains.values().filter_map(|c| c.head.map(|(txn, seq)| (c.id, c.count, txn, seq))).collect();
    serde_json::to_string(&heads).map_err(|e| LedgerError::Unbalanced(format!("chain heads: {e}")))
}

/// Implements [`crate::LedgerStore`] for a catalog store type with `writer()`.
macro_rules! impl_ledger_store {
    ($store:ty, $db:ty, $insert_txn:expr, $add_balances:expr, $insert_txns:literal, $returning_new:literal, $set_heads:expr) => {
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
            /// chain of every account they name as it stood (its row now locked), creating
            /// accounts on first use.
            async fn move_balances(
                tx: &mut sqlx::Transaction<'_, $db>,
                deltas: std::collections::BTreeMap<String, (flashback_core::Account, i64)>,
                guarded: &[flashback_core::Account],
                at_ms: i64,
            ) -> Result<std::collections::HashMap<flashback_core::Account, $crate::sql_ledger::Chain>, $crate::LedgerError> {
                use $crate::sql_ledger::Chain;
                let is_guarded = |account: &flashback_core::Account, delta: i64| delta < 0 && guarded.contains(account);
                // Unguarded changes (zero too: the entries need the account's chain) in one
                // statement: `[[account, delta], …]` as JSON, in account order (the order rows
                // are locked in). It leaves the chain columns alone, so it returns them as the
                // posting found them.
                let unguarded: Vec<(&str, i64)> = deltas
                    .iter()
                    .filter(|(_, (account, delta))| !is_guarded(account, *delta))
                    .map(|(name, (_, delta))| (name.as_str(), *delta))
                    .collect();
                let mut chains = std::collections::HashMap::with_capacity(deltas.len());
                if !unguarded.is_empty() {
                    let changes = $crate::sql_ledger::changes_json(&unguarded)?;
                    let rows: Vec<$crate::sql_ledger::ChainRow> =
                        sqlx::query_as($add_balances).bind(at_ms).bind(changes).fetch_all(&mut **tx).await?;
                    for row in rows {
                        let (account, chain) = $crate::sql_ledger::returned_chain(&deltas, row)?;
                        chains.insert(account, chain);
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
                        let (id, count, txn, seq): (i64, i64, Option<i64>, Option<i32>) = sqlx::query_as(
                            "SELECT id, entry_count, head_txn_id, head_seq FROM ledger_accounts WHERE name = ?",
                        )
                        .bind(&name)
                        .fetch_one(&mut **tx)
                        .await?;
                        chains.insert(account, Chain::of(id, count, txn, seq));
                    }
                }
                Ok(chains)
            }

            /// Inserts entries (transaction id, sequence, time, posting), 500 rows a statement,
            /// each linked after the one before it on its account, and moves the accounts'
            /// heads to their last entry.
            async fn ledger_entries(
                tx: &mut sqlx::Transaction<'_, $db>,
                rows: &[(i64, i32, i64, &$crate::Posting)],
                mut chains: std::collections::HashMap<flashback_core::Account, $crate::sql_ledger::Chain>,
            ) -> Result<(), $crate::LedgerError> {
                let linked = $crate::sql_ledger::link(rows, &mut chains)?;
                for chunk in linked.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO ledger_entries (txn_id, seq, account_id, amount, created_at_ms, chain_no, \
                         prev_txn_id, prev_seq) ",
                    );
                    q.push_values(chunk, |mut b, (txn, seq, account, amount, at, no, prev)| {
                        b.push_bind(*txn)
                            .push_bind(*seq)
                            .push_bind(*account)
                            .push_bind(*amount)
                            .push_bind(*at)
                            .push_bind(*no)
                            .push_bind(prev.map(|p| p.0))
                            .push_bind(prev.map(|p| p.1));
                    });
                    q.build().execute(&mut **tx).await?;
                }
                if !linked.is_empty() {
                    sqlx::query($set_heads).bind($crate::sql_ledger::heads_json(&chains)?).execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// What is wrong with the accounts' chains of entries: each account's entries must be
            /// numbered 1 to its entry count, each linked to the one numbered before it on the same
            /// account, and its head must be the last. Together: one unbroken chain per account,
            /// holding every entry of the account, walked back from its head.
            async fn broken_chains(tx: &mut sqlx::Transaction<'_, $db>) -> $crate::StoreResult<Vec<String>> {
                const SHOWN: i64 = 100;
                let mut out = Vec::new();
                let counts: Vec<(String, i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>)> = sqlx::query_as(
                    "SELECT a.name, a.entry_count, s.n, s.lo, s.hi, s.d FROM ledger_accounts a LEFT JOIN \
                     (SELECT account_id, COUNT(*) AS n, MIN(chain_no) AS lo, MAX(chain_no) AS hi, \
                      COUNT(DISTINCT chain_no) AS d FROM ledger_entries GROUP BY account_id) s ON s.account_id = a.id \
                     WHERE COALESCE(s.n, 0) <> a.entry_count OR s.lo <> 1 OR s.hi <> s.n OR s.d <> s.n LIMIT ?",
                )
                .bind(SHOWN)
                .fetch_all(&mut **tx)
                .await?;
                for (name, count, n, lo, hi, distinct) in counts {
                    out.push(format!(
                        "{name}: says it has {count} entries in its chain; it has {} numbered {}..{} ({} distinct)",
                        n.unwrap_or(0),
                        lo.unwrap_or(0),
                        hi.unwrap_or(0),
                        distinct.unwrap_or(0)
                    ));
                }
                let heads: Vec<String> = sqlx::query_scalar(
                    "SELECT a.name FROM ledger_accounts a \
                     LEFT JOIN ledger_entries e ON e.txn_id = a.head_txn_id AND e.seq = a.head_seq \
                     WHERE (a.entry_count > 0 AND (e.txn_id IS NULL OR e.account_id <> a.id OR e.chain_no <> a.entry_count)) \
                     OR (a.entry_count = 0 AND a.head_txn_id IS NOT NULL) LIMIT ?",
                )
                .bind(SHOWN)
                .fetch_all(&mut **tx)
                .await?;
                for name in heads {
                    out.push(format!("{name}: its head is not its last entry"));
                }
                let links: Vec<(i64, i32)> = sqlx::query_as(
                    "SELECT e.txn_id, e.seq FROM ledger_entries e \
                     LEFT JOIN ledger_entries p ON p.txn_id = e.prev_txn_id AND p.seq = e.prev_seq \
                     WHERE (e.chain_no = 1 AND e.prev_txn_id IS NOT NULL) \
                     OR (e.chain_no <> 1 AND (p.txn_id IS NULL OR p.account_id <> e.account_id OR p.chain_no <> e.chain_no - 1)) \
                     LIMIT ?",
                )
                .bind(SHOWN)
                .fetch_all(&mut **tx)
                .await?;
                for (txn, seq) in links {
                    out.push(format!("entry {seq} of transaction {txn} does not follow its account's entry before it"));
                }
                Ok(out)
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
                let chains =
                    Self::move_balances(tx, $crate::sql_ledger::deltas(&postings), &txn.no_overdraft, txn.at_ms).await?;
                Self::ledger_entries(tx, &$crate::sql_ledger::entry_rows(txn, &postings), chains).await?;
                Ok($crate::Posted::New)
            }

            async fn post_once(&self, txn: &$crate::NewTxn) -> Result<$crate::Posted, $crate::LedgerError> {
                let mut tx = self.writer()?.begin().await?;
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
                let checked = txns.iter().map(|t| $crate::sql_ledger::checked_unguarded(t)).collect::<Result<Vec<_>, _>>()?;
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
                let chains = Self::move_balances(tx, deltas, &[], at).await?;
                let rows: Vec<(i64, i32, i64, &$crate::Posting)> =
                    applied.iter().flat_map(|(txn, postings)| $crate::sql_ledger::entry_rows(txn, postings)).collect();
                Self::ledger_entries(tx, &rows, chains).await?;
                Ok(outcomes)
            }

            async fn post_batch_once(
                &self,
                txns: &[$crate::NewTxn],
            ) -> Result<Vec<$crate::Posted>, $crate::LedgerError> {
                let mut tx = self.writer()?.begin().await?;
                let refs: Vec<&$crate::NewTxn> = txns.iter().collect();
                let outcomes = Self::post_many_in(&mut tx, &refs).await?;
                tx.commit().await?;
                Ok(outcomes)
            }
        }

        #[async_trait::async_trait]
        impl $crate::LedgerStore for $store {
            async fn post(&self, txn: &$crate::NewTxn) -> Result<$crate::Posted, $crate::LedgerError> {
                $crate::retry_deadlocks(|| self.post_once(txn)).await
            }

            async fn post_batch(&self, txns: &[$crate::NewTxn]) -> Result<Vec<$crate::Posted>, $crate::LedgerError> {
                $crate::retry_deadlocks(|| self.post_batch_once(txns)).await
            }

            async fn balance(&self, account: flashback_core::Account) -> $crate::StoreResult<i64> {
                let b: Option<i64> = sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE name = ?")
                    .bind(account.name())
                    .fetch_optional(self.writer()?)
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
                        .fetch_all(self.writer()?)
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
                // Where the walk starts: the account's head, or the entry before its (first)
                // entry in `before_txn`.
                let start: Option<(Option<i64>, Option<i32>)> = match before_txn {
                    None => sqlx::query_as("SELECT head_txn_id, head_seq FROM ledger_accounts WHERE name = ?")
                        .bind(account.name())
                        .fetch_optional(self.writer()?)
                        .await?,
                    Some(txn) => sqlx::query_as(
                        "SELECT e.prev_txn_id, e.prev_seq FROM ledger_entries e \
                         JOIN ledger_accounts a ON a.id = e.account_id \
                         WHERE e.txn_id = ? AND a.name = ? ORDER BY e.seq LIMIT 1",
                    )
                    .bind(txn)
                    .bind(account.name())
                    .fetch_optional(self.writer()?)
                    .await?,
                };
                let Some((Some(txn), Some(seq))) = start else { return Ok(Vec::new()) };
                if limit == 0 {
                    return Ok(Vec::new());
                }
                // One primary-key read per entry, back along the chain.
                let rows: Vec<(i64, String, String, String, i64, i64)> = sqlx::query_as(
                    "WITH RECURSIVE chain (txn_id, seq, n) AS ( \
                         SELECT CAST(? AS SIGNED), CAST(? AS SIGNED), CAST(1 AS SIGNED) \
                         UNION ALL \
                         SELECT e.prev_txn_id, e.prev_seq, c.n + 1 FROM chain c \
                         JOIN ledger_entries e ON e.txn_id = c.txn_id AND e.seq = c.seq \
                         WHERE e.prev_txn_id IS NOT NULL AND c.n < ?) \
                     SELECT e.txn_id, t.kind, t.reference, a.name, e.amount, e.created_at_ms \
                     FROM chain c JOIN ledger_entries e ON e.txn_id = c.txn_id AND e.seq = c.seq \
                     JOIN ledger_txns t ON t.id = e.txn_id JOIN ledger_accounts a ON a.id = e.account_id \
                     ORDER BY c.n",
                )
                .bind(txn)
                .bind(seq)
                .bind(i64::from(limit))
                .fetch_all(self.writer()?)
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
                    sqlx::query_as("SELECT name, balance FROM ledger_accounts").fetch_all(self.writer()?).await?;
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
                    .fetch_optional(self.writer()?)
                    .await?;
                Ok(n.is_some())
            }

            async fn audit_ledger(&self) -> $crate::StoreResult<$crate::LedgerAudit> {
                // One read transaction: a consistent snapshot on both backends.
                let mut tx = self.writer()?.begin().await?;
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
                a.violations.extend(Self::broken_chains(&mut tx).await?);
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
