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

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use flashback_core::{Account, UserId};
use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};

use crate::ledger::{LedgerError, NewTxn, Posting};
use crate::rebate_list::{Places, RowList};
use crate::sql_ledger::{Chain, changes_json, checked_unguarded, deltas, entry_rows, heads_json, link, returned_chain};
use crate::{Applied, RebateChange, RebateOrder, RebateReject, StoreError};

/// Ledger entries per insert statement (eight values each; SQLite takes up to 32,766).
const ENTRIES_PER_STATEMENT: usize = 64;

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
                "INSERT INTO rebate_orders ({}, {}) VALUES ({}) ON CONFLICT DO NOTHING",
                crate::sql_rebate::ORDER_COLUMNS,
                crate::rebate_list::LINK_COLUMNS,
                vec!["?"; 42].join(", ")
            ))
            .map_err(failed)?;
        let mut owned = db.prepare(crate::sql_rebate::UPDATE_OWNED).map_err(failed)?;
        let mut unowned = db.prepare(crate::sql_rebate::UPDATE_UNOWNED).map_err(failed)?;
        let mut joining = db.prepare(crate::sql_rebate::UPDATE_JOINING).map_err(failed)?;
        let mut lists = Lists::new(db)?;
        let mut values: Vec<ToSqlOutput<'_>> = Vec::with_capacity(45);
        for item in items {
            let r = &item.row;
            values.clear();
            push_row(&mut values, r).map_err(failed)?;
            let user = r.user_id.map(UserId::get);
            let written = match item.expected {
                // A row another writer inserted first (or twice in this batch) is not written.
                None => {
                    let places = lists.place(r)?;
                    push_places(&mut values, &places);
                    let n = insert.execute(params_from_iter(&values)).map_err(failed)?;
                    if n != 1 {
                        lists.unplace(r, places);
                    }
                    n
                }
                Some(version) => {
                    // The insert's list is (source, line_key, the columns, created_at_ms,
                    // updated_at_ms); an update sets the columns and updated_at_ms (and, when
                    // the row joins a list, its place), then matches the key, the version it
                    // replaces and the buyer it had.
                    let updated = values.pop();
                    values.pop();
                    values.extend(updated);
                    values.rotate_left(2);
                    values.push(ToSqlOutput::from(version));
                    match user {
                        None => unowned.execute(params_from_iter(&values)).map_err(failed)?,
                        Some(u) => {
                            values.push(ToSqlOutput::from(u));
                            let n = owned.execute(params_from_iter(&values)).map_err(failed)?;
                            values.pop();
                            if n == 1 {
                                n
                            } else {
                                // Its first buyer: it joins the lists of everyone it pays.
                                let places = lists.place(r)?;
                                let key = values.split_off(values.len() - 3);
                                push_places(&mut values, &places);
                                values.extend(key);
                                let n = joining.execute(params_from_iter(&values)).map_err(failed)?;
                                if n != 1 {
                                    lists.unplace(r, places);
                                }
                                n
                            }
                        }
                    }
                }
            };
            if written == 1 {
                outcomes.push(Applied::Done);
                txns.extend(item.txn.as_ref());
            } else {
                outcomes.push(Applied::Conflict);
            }
        }
        lists.save()?;
    }
    post(db, &txns)?;
    Ok(outcomes)
}

/// Appends a row's places ([`crate::rebate_list::LINK_COLUMNS`]), nulls where nobody holds
/// a role.
fn push_places(values: &mut Vec<ToSqlOutput<'_>>, places: &Places) {
    let text = |t: Option<&String>| ToSqlOutput::Owned(t.map_or(Value::Null, |t| Value::Text(t.clone())));
    let int = |i: Option<i64>| ToSqlOutput::Owned(i.map_or(Value::Null, Value::Integer));
    for place in places {
        let prev = place.as_ref().and_then(|p| p.1.as_ref());
        values.extend([
            int(place.as_ref().map(|p| p.0)),
            text(prev.map(|p| &p.0)),
            text(prev.map(|p| &p.1)),
            int(prev.map(|p| p.2.code())),
        ]);
    }
}

/// The lists a batch changes, read when first needed and written back once at the end (the
/// batch holds SQLite's write lock throughout).
struct Lists<'c> {
    read: rusqlite::Statement<'c>,
    db: &'c Connection,
    lists: HashMap<i64, RowList>,
}

impl<'c> Lists<'c> {
    fn new(db: &'c Connection) -> Result<Self, LedgerError> {
        let read = db
            .prepare("SELECT listed, head_source, head_line_key, head_role FROM rebate_lists WHERE user_id = ?")
            .map_err(failed)?;
        Ok(Self { read, db, lists: HashMap::new() })
    }

    /// Puts a row at the heads of the lists of everyone it pays (read when first needed): its
    /// places, to be taken back with [`Self::unplace`] if the row is not written after all.
    fn place(&mut self, row: &RebateOrder) -> Result<Places, LedgerError> {
        for user in crate::rebate_list::holders(row).into_iter().flatten() {
            if let Entry::Vacant(slot) = self.lists.entry(user) {
                let found = self
                    .read
                    .query_row([user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()
                    .map_err(failed)?;
                slot.insert(match found {
                    Some((n, s, k, role)) => RowList::of(n, s, k, role)?,
                    None => RowList::default(),
                });
            }
        }
        Ok(crate::rebate_list::place(row, &mut self.lists))
    }

    fn unplace(&mut self, row: &RebateOrder, places: Places) {
        crate::rebate_list::unplace(row, places, &mut self.lists);
    }

    fn save(self) -> Result<(), LedgerError> {
        let mut upsert = self
            .db
            .prepare(
                "INSERT INTO rebate_lists (user_id, listed, head_source, head_line_key, head_role) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (user_id) DO UPDATE SET listed = excluded.listed, head_source = excluded.head_source, \
                 head_line_key = excluded.head_line_key, head_role = excluded.head_role",
            )
            .map_err(failed)?;
        for (user, list) in &self.lists {
            if let Some((source, key, role)) = &list.head {
                upsert.execute(params![user, list.count, source, key, role.code()]).map_err(failed)?;
            }
        }
        Ok(())
    }
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
        let mut insert = db.prepare(crate::sqlite::INSERT_TXN).map_err(failed)?;
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
    // Many entries a statement: an entry is small and all of a batch's are new, so the
    // statement's own cost (binding, starting and ending it) would otherwise be most of an
    // entry's.
    let statement = |rows: usize| {
        format!(
            "INSERT INTO ledger_entries (txn_id, seq, account_id, amount, created_at_ms, chain_no, prev_txn_id, \
             prev_seq) VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; rows].join(", ")
        )
    };
    let mut full = db.prepare_cached(&statement(ENTRIES_PER_STATEMENT)).map_err(failed)?;
    let mut values: Vec<Value> = Vec::with_capacity(8 * ENTRIES_PER_STATEMENT);
    for chunk in linked.chunks(ENTRIES_PER_STATEMENT) {
        values.clear();
        for (txn, seq, account, amount, at, no, prev) in chunk {
            values.extend([
                Value::Integer(*txn),
                Value::Integer(i64::from(*seq)),
                Value::Integer(*account),
                Value::Integer(*amount),
                Value::Integer(*at),
                Value::Integer(*no),
                prev.map_or(Value::Null, |p| Value::Integer(p.0)),
                prev.map_or(Value::Null, |p| Value::Integer(i64::from(p.1))),
            ]);
        }
        if chunk.len() == ENTRIES_PER_STATEMENT {
            full.execute(params_from_iter(&values)).map_err(failed)?;
        } else {
            db.prepare(&statement(chunk.len())).map_err(failed)?.execute(params_from_iter(&values)).map_err(failed)?;
        }
    }
    db.execute(crate::sqlite::SET_HEADS, [heads_json(&chains)?]).map_err(failed)?;
    Ok(())
}

/// Adds each account's change to its balance, creating accounts on first use, in one
/// statement; returns each account's chain as it stood.
fn move_balances(
    db: &Connection,
    deltas: BTreeMap<String, (Account, i64)>,
    at_ms: i64,
) -> Result<HashMap<Account, Chain>, LedgerError> {
    let changes: Vec<(&str, i64)> = deltas.iter().map(|(name, (_, delta))| (name.as_str(), *delta)).collect();
    let mut upsert = db.prepare(crate::sqlite::ADD_BALANCES).map_err(failed)?;
    let mut rows = upsert.query(params![at_ms, changes_json(&changes)?]).map_err(failed)?;
    let mut chains = HashMap::with_capacity(deltas.len());
    while let Some(r) = rows.next().map_err(failed)? {
        let row = (
            r.get(0).map_err(failed)?,
            r.get(1).map_err(failed)?,
            r.get(2).map_err(failed)?,
            r.get(3).map_err(failed)?,
            r.get(4).map_err(failed)?,
        );
        let (account, chain) = returned_chain(&deltas, row)?;
        chains.insert(account, chain);
    }
    Ok(chains)
}
