//! The store's own floor for `flashback-bench rebate`: what the same rows cost to write with
//! none of the ingest's work.
//!
//! Rows: the rows the ingest stored, each with the ledger transaction a new row gets (a debit of the
//! payer, a credit per non-zero share), are written to a fresh copy of the schema (the store's
//! own migrations, its writer's SQLite settings: WAL, a synced commit, the page cache and the
//! checkpoint interval, foreign keys) through the same driver, with multi-row inserts of 500 and one transaction per batch —
//! but no parsing, lookups, splitting, duplicate detection, compare-and-set or balances. The
//! ingest cannot beat it on this disk; its ratio to it says how much of the time is ours.
//! Postings: then, into the same database (as large as the real one was at that point), the
//! transactions the ledger phase posts, as plain inserts of their rows and entries (no
//! duplicate detection, no balances).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use flashback_core::Account;
use flashback_store::{NewTxn, RebateOrder, StoreOptions};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{QueryBuilder, Sqlite};

/// One entry of a floor transaction.
struct Entry {
    txn: i64,
    seq: i32,
    account: Account,
    amount: i64,
}

/// The floor's database and the ids it gave the ledger accounts so far (an account is one
/// plain insert the first time an entry names it).
pub struct Floor {
    pool: sqlx::SqlitePool,
    accounts: HashMap<Account, i64>,
}

/// A floor transaction's row.
struct Txn {
    id: i64,
    key: String,
    kind: String,
    reference: String,
    at_ms: i64,
}

/// A fresh database with the store's schema under `dir`, opened with its SQLite settings.
pub async fn fresh(dir: &Path) -> anyhow::Result<Floor> {
    // The store's migrations make the schema.
    let options = StoreOptions {
        url: None,
        data_dir: dir.to_owned(),
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(10),
        breaker: Default::default(),
    };
    flashback_store::open(&options).await?.close().await;
    let connect = flashback_store::writer_connect_options(&dir.join("flashback.db"))?;
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(connect).await?;
    Ok(Floor { pool, accounts: HashMap::new() })
}

impl Floor {
    /// Closes the database.
    pub async fn close(self) {
        self.pool.close().await;
    }

    /// Inserts the accounts `entries` name for the first time.
    async fn insert_accounts(&mut self, tx: &mut sqlx::SqliteConnection, entries: &[Entry]) -> anyhow::Result<()> {
        let mut new: Vec<(i64, String)> = Vec::new();
        for e in entries {
            if !self.accounts.contains_key(&e.account) {
                let id = i64::try_from(self.accounts.len())? + 1;
                self.accounts.insert(e.account, id);
                new.push((id, e.account.name()));
            }
        }
        for part in new.chunks(500) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO ledger_accounts (id, name, balance, updated_at_ms) ");
            q.push_values(part, |mut b, (id, name)| {
                b.push_bind(*id).push_bind(name.clone()).push_bind(0_i64).push_bind(0_i64);
            });
            q.build().execute(&mut *tx).await?;
        }
        Ok(())
    }
}

/// Inserts transactions and their entries, 500 rows a statement.
async fn insert_ledger(
    tx: &mut sqlx::SqliteConnection,
    accounts: &HashMap<Account, i64>,
    txns: &[Txn],
    entries: &[Entry],
) -> anyhow::Result<()> {
    for part in txns.chunks(500) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO ledger_txns (id, idem_key, kind, reference, created_at_ms) ");
        q.push_values(part, |mut b, t| {
            b.push_bind(t.id)
                .push_bind(t.key.clone())
                .push_bind(t.kind.clone())
                .push_bind(t.reference.clone())
                .push_bind(t.at_ms);
        });
        q.build().execute(&mut *tx).await?;
    }
    for part in entries.chunks(500) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO ledger_entries (txn_id, seq, account_id, amount, created_at_ms) ");
        q.push_values(part, |mut b, e| {
            let account = accounts.get(&e.account).copied().unwrap_or(0);
            b.push_bind(e.txn).push_bind(e.seq).push_bind(account).push_bind(e.amount).push_bind(0_i64);
        });
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Writes `txns` in batches of `batch` as plain inserts (no duplicate detection, no
/// balances); returns entries per second.
pub async fn postings(floor: &mut Floor, txns: &[NewTxn], batch: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut postings = 0_usize;
    for chunk in txns.chunks(batch) {
        let rows: Vec<Txn> = chunk
            .iter()
            .map(|t| Txn {
                id: t.id,
                key: t.key.clone(),
                kind: t.kind.clone(),
                reference: t.reference.clone(),
                at_ms: t.at_ms,
            })
            .collect();
        let entries: Vec<Entry> = chunk
            .iter()
            .flat_map(|t| {
                t.postings.iter().enumerate().map(|(seq, p)| Entry {
                    txn: t.id,
                    seq: i32::try_from(seq).unwrap_or(i32::MAX),
                    account: p.account,
                    amount: p.amount,
                })
            })
            .collect();
        postings += entries.len();
        let mut tx = floor.pool.begin().await?;
        floor.insert_accounts(&mut tx, &entries).await?;
        insert_ledger(&mut tx, &floor.accounts, &rows, &entries).await?;
        tx.commit().await?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(if secs > 0.0 { postings as f64 / secs } else { 0.0 })
}

/// Writes `rows` (and their ledger transactions) in batches of `batch`; returns rows per
/// second.
pub async fn rows(floor: &mut Floor, rows: &[RebateOrder], batch: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut next_txn = 1_i64;
    for chunk in rows.chunks(batch) {
        let mut txns: Vec<Txn> = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        for row in chunk.iter().filter(|r| r.commission_minor > 0) {
            let id = next_txn;
            next_txn += 1;
            txns.push(Txn {
                id,
                key: format!("rebate:{}:{}:v{}:{}", row.source, row.line_key, row.version, row.state.as_str()),
                kind: format!("rebate.{}", row.state.as_str()),
                reference: format!("{}:{}", row.source, row.line_key),
                at_ms: row.updated_at_ms,
            });
            let shares = [
                (row.user_id.map(Account::Pending), row.buyer_share),
                (row.inviter_id.map(Account::Pending), row.inviter_share),
                (row.grand_inviter_id.map(Account::Pending), row.grand_share),
                (Some(Account::Revenue), row.platform_share),
            ];
            let mut seq = 0;
            let mut push = |account: Account, amount: i64| {
                entries.push(Entry { txn: id, seq, account, amount });
                seq += 1;
            };
            push(Account::Receivable, row.commission_minor);
            for (account, amount) in shares {
                if let Some(account) = account.filter(|_| amount != 0) {
                    push(account, -amount);
                }
            }
        }
        let mut tx = floor.pool.begin().await?;
        for part in chunk.chunks(500) {
            let mut q = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO rebate_orders ({}) ",
                flashback_store::REBATE_ORDER_COLUMNS
            ));
            q.push_values(part, flashback_store::push_rebate_order);
            q.build().execute(&mut *tx).await?;
        }
        floor.insert_accounts(&mut tx, &entries).await?;
        insert_ledger(&mut tx, &floor.accounts, &txns, &entries).await?;
        tx.commit().await?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(if secs > 0.0 { rows.len() as f64 / secs } else { 0.0 })
}
