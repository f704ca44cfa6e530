//! The embedded store's writer of rebate batches: a batch's rows, ledger transactions, balances,
//! entries and reviewed inputs in one SQLite transaction, run on one thread straight through
//! SQLite's C API (`rusqlite`, on the handle of the store's own writer connection, locked for
//! the duration) instead of one `sqlx` round trip per statement.
//!
//! Why: through `sqlx` each statement is a message to the connection's worker thread, its
//! arguments are copied twice on the way and every returned row comes back as a message; the
//! writer thread spent a third of a batch waiting for the next statement (measured with perf
//! on `flashback-bench rebate`). Here each statement is prepared once per batch and stepped
//! once per row with its arguments bound in place, and `changes()` says whether a row was
//! written, so nothing needs `RETURNING`.
//!
//! The outcome is the generic writer's (`sql_rebate`, which MySQL/MariaDB keep): every row's
//! compare-and-set, the ledger transactions of the rows written (once per key), the balances
//! and chains of the accounts they name, and the inputs kept for review — or nothing.

use std::collections::{BTreeMap, HashMap};

use flashback_core::{Account, UserId};
use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{Connection, ToSql, params, params_from_iter};

use crate::ledger::{LedgerError, NewTxn, Posting};
use crate::sql_ledger::{Chain, checked_unguarded, deltas, entry_rows, link};
use crate::{Applied, RebateChange, RebateOrder, RebateReject, StoreError};

fn failed(e: rusqlite::Error) -> LedgerError {
    LedgerError::Store(StoreError::Embedded(e))
}

/// Writes one batch in one transaction on `db`; rolls back on any error.
pub(crate) fn write(
    db: &Connection,
    items: &[RebateChange],
    review: &[RebateReject],
) -> Result<Vec<Applied>, LedgerError> {
    db.execute_batch("BEGIN IMMEDIATE").map_err(failed)?;
    match write_in(db, items, review) {
        Ok(outcomes) => {
            db.execute_batch("COMMIT").map_err(failed)?;
            Ok(outcomes)
        }
        Err(e) => {
            // A failed COMMIT or statement leaves the transaction open; close it either way.
            let _ = db.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn write_in(db: &Connection, items: &[RebateChange], review: &[RebateReject]) -> Result<Vec<Applied>, LedgerError> {
    if !review.is_empty() {
        let mut insert = db
            .prepare(
                "INSERT INTO rebate_rejects (id, source, line_key, reason, payload, at_ms) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .map_err(failed)?;
        for r in review {
            let (reason, payload) = crate::sql_rebate::clipped(r);
            insert.execute(params![r.id, r.source, r.line_key, reason, payload, r.at_ms]).map_err(failed)?;
        }
    }
    let mut outcomes = Vec::with_capacity(items.len());
    let mut txns: Vec<&NewTxn> = Vec::new();
    {
        let mut insert = db
            .prepare(&format!(
                "INSERT INTO rebate_orders ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                crate::sql_rebate::ORDER_COLUMNS,
                vec!["?"; 30].join(", ")
            ))
            .map_err(failed)?;
        let mut update = db.prepare(crate::sql_rebate::UPDATE_ROW).map_err(failed)?;
        let mut values: Vec<ToSqlOutput<'_>> = Vec::with_capacity(31);
        for item in items {
            let r = &item.row;
            values.clear();
            push_row(&mut values, r).map_err(failed)?;
            let written = match item.expected {
                // A row another writer inserted first (or twice in this batch) is not written.
                None => insert.execute(params_from_iter(&values)).map_err(failed)?,
                Some(version) => {
                    // The insert's list is (source, line_key, the columns, created_at_ms,
                    // updated_at_ms); the update sets the columns and updated_at_ms, then
                    // matches the key and the version it replaces.
                    let updated = values.pop();
                    values.pop();
                    values.extend(updated);
                    values.rotate_left(2);
                    values.push(ToSqlOutput::from(version));
                    update.execute(params_from_iter(&values)).map_err(failed)?
                }
            };
            if written == 1 {
                outcomes.push(Applied::Done);
                txns.extend(item.txn.as_ref());
            } else {
                outcomes.push(Applied::Conflict);
            }
        }
    }
    post(db, &txns)?;
    Ok(outcomes)
}

/// Appends a row's values in [`crate::sql_rebate::ORDER_COLUMNS`] order, borrowed where they
/// can be.
fn push_row<'a>(values: &mut Vec<ToSqlOutput<'a>>, r: &'a RebateOrder) -> rusqlite::Result<()> {
    let id = |u: Option<UserId>| ToSqlOutput::Owned(u.map_or(Value::Null, |u| Value::Integer(u.get())));
    values.extend([
        r.source.to_sql()?,
        r.line_key.to_sql()?,
        r.parent_key.to_sql()?,
        id(r.user_id),
        id(r.inviter_id),
        id(r.grand_inviter_id),
        r.tracking.to_sql()?,
        r.item_id.to_sql()?,
        r.item_title.to_sql()?,
        r.category.to_sql()?,
        ToSqlOutput::from(r.state.as_str()),
        r.network_status.to_sql()?,
        r.paid_minor.to_sql()?,
        r.estimate_minor.to_sql()?,
        r.settled_minor.to_sql()?,
        r.refunded_minor.to_sql()?,
        r.commission_minor.to_sql()?,
        r.buyer_share.to_sql()?,
        r.inviter_share.to_sql()?,
        r.grand_share.to_sql()?,
        r.platform_share.to_sql()?,
        ToSqlOutput::from(i64::from(r.shares_available)),
        r.click_ms.to_sql()?,
        r.paid_at_ms.to_sql()?,
        r.settled_at_ms.to_sql()?,
        r.available_at_ms.to_sql()?,
        r.network_modified_ms.to_sql()?,
        r.version.to_sql()?,
        r.created_at_ms.to_sql()?,
        r.updated_at_ms.to_sql()?,
    ]);
    Ok(())
}

/// Posts unguarded transactions: each once per key, balances aggregated per account, entries
/// linked onto their accounts' chains.
fn post(db: &Connection, txns: &[&NewTxn]) -> Result<(), LedgerError> {
    if txns.is_empty() {
        return Ok(());
    }
    let mut applied: Vec<(&NewTxn, Vec<Posting>)> = Vec::with_capacity(txns.len());
    {
        let mut insert = db
            .prepare(
                "INSERT INTO ledger_txns (id, idem_key, kind, reference, created_at_ms) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT DO NOTHING",
            )
            .map_err(failed)?;
        for txn in txns {
            let postings = checked_unguarded(txn)?;
            // A key posted before (or twice in this batch): the first is the one written.
            if insert.execute(params![txn.id, txn.key, txn.kind, txn.reference, txn.at_ms]).map_err(failed)? == 1 {
                applied.push((txn, postings));
            }
        }
    }
    let at = txns.iter().map(|t| t.at_ms).max().unwrap_or(0);
    let mut chains = move_balances(db, deltas(applied.iter().flat_map(|(_, p)| p.iter())), at)?;
    let rows: Vec<(i64, i32, i64, &Posting)> =
        applied.iter().flat_map(|(txn, postings)| entry_rows(txn, postings)).collect();
    let linked = link(&rows, &mut chains)?;
    let mut insert = db
        .prepare(
            "INSERT INTO ledger_entries (txn_id, seq, account_id, amount, created_at_ms, chain_no, prev_txn_id, \
             prev_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .map_err(failed)?;
    for (txn, seq, account, amount, at, no, prev) in &linked {
        insert
            .execute(params![txn, seq, account, amount, at, no, prev.map(|p| p.0), prev.map(|p| p.1)])
            .map_err(failed)?;
    }
    let mut heads = db
        .prepare("UPDATE ledger_accounts SET entry_count = ?, head_txn_id = ?, head_seq = ? WHERE id = ?")
        .map_err(failed)?;
    for chain in chains.values() {
        if let Some((txn, seq)) = chain.head {
            heads.execute(params![chain.count, txn, seq, chain.id]).map_err(failed)?;
        }
    }
    Ok(())
}

/// Adds each account's change to its balance, creating accounts on first use, in account-name
/// order; returns each account's chain as it stood.
fn move_balances(
    db: &Connection,
    deltas: BTreeMap<String, (Account, i64)>,
    at_ms: i64,
) -> Result<HashMap<Account, Chain>, LedgerError> {
    let mut upsert = db
        .prepare(
            "INSERT INTO ledger_accounts (name, balance, updated_at_ms) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET balance = balance + excluded.balance, updated_at_ms = excluded.updated_at_ms \
             RETURNING id, entry_count, head_txn_id, head_seq",
        )
        .map_err(failed)?;
    let mut chains = HashMap::with_capacity(deltas.len());
    for (name, (account, delta)) in deltas {
        let chain = upsert
            .query_row(params![name, delta, at_ms], |r| Ok(Chain::of(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(failed)?;
        chains.insert(account, chain);
    }
    Ok(chains)
}
