//! The double-entry ledger: append-only transactions of balanced entries, each applied once
//! per idempotency key, with balances derived from the entries.

use async_trait::async_trait;
use flashback_core::{Account, UserId};
use serde::Serialize;

use crate::{StoreError, StoreResult};

/// One entry of a transaction: a debit (positive) or a credit (negative) of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    /// The account.
    pub account: Account,
    /// Debit positive, credit negative, in minor units.
    pub amount: i64,
}

impl Posting {
    /// `amount` debited to `account`.
    pub fn debit(account: Account, amount: i64) -> Self {
        Self { account, amount }
    }

    /// `amount` credited to `account`.
    pub fn credit(account: Account, amount: i64) -> Self {
        Self { account, amount: -amount }
    }
}

/// A transaction to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTxn {
    /// A fresh id.
    pub id: i64,
    /// Applied at most once per key (e.g. `rebate:<source>:<line>:<transition>`).
    pub key: String,
    /// What kind of movement (`rebate.estimate`, `withdrawal.hold`, …), for statements.
    pub kind: String,
    /// What it is about (an order row, a withdrawal), for statements and audits.
    pub reference: String,
    /// The entries; they must sum to zero, and zero entries are dropped.
    pub postings: Vec<Posting>,
    /// Accounts whose balance (in its normal sign) must not end below zero: the posting is
    /// refused otherwise, changing nothing.
    pub no_overdraft: Vec<Account>,
    /// When.
    pub at_ms: i64,
}

/// What posting did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// Applied now.
    New,
    /// A transaction with this key was already applied; nothing changed.
    Existing,
}

/// Why a transaction was refused; nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The entries do not sum to zero (or there are none, or an amount is out of range).
    #[error("unbalanced transaction: {0}")]
    Unbalanced(String),
    /// The account would end below zero.
    #[error("insufficient balance in {}", .0.name())]
    Overdraft(Account),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        LedgerError::Store(e.into())
    }
}

/// Largest amount of one entry: far above any real movement, far below overflow of sums.
pub const MAX_ENTRY_MINOR: i64 = 1_000_000_000_000;

impl NewTxn {
    /// Checks the entries balance and drops zero ones.
    pub(crate) fn validated(&self) -> Result<Vec<Posting>, LedgerError> {
        let postings: Vec<Posting> = self.postings.iter().copied().filter(|p| p.amount != 0).collect();
        if postings.is_empty() {
            return Err(LedgerError::Unbalanced(format!("{}: no entries", self.key)));
        }
        if postings.iter().any(|p| p.amount.abs() > MAX_ENTRY_MINOR) {
            return Err(LedgerError::Unbalanced(format!("{}: an amount is out of range", self.key)));
        }
        let sum: i64 = postings.iter().map(|p| p.amount).sum();
        if sum != 0 {
            return Err(LedgerError::Unbalanced(format!("{}: entries sum to {sum}", self.key)));
        }
        Ok(postings)
    }
}

/// How a posting moves an account's balance in its normal sign.
pub(crate) fn normal_delta(p: &Posting) -> i64 {
    if p.account.credit_normal() { -p.amount } else { p.amount }
}

/// A user's three balances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Wallet {
    /// Earned, not yet payable.
    pub pending: i64,
    /// Payable (negative after a reversal took more than was left).
    pub available: i64,
    /// Held for withdrawals in review or being paid.
    pub withdrawing: i64,
}

/// One entry as stored, for statements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerLine {
    /// The transaction.
    pub txn_id: i64,
    /// Its kind.
    pub kind: String,
    /// What it is about.
    pub reference: String,
    /// The account.
    pub account: String,
    /// Debit positive, credit negative.
    pub amount: i64,
    /// When.
    pub at_ms: i64,
}

/// What `flashback audit ledger` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LedgerAudit {
    /// Transactions checked.
    pub transactions: u64,
    /// Entries checked.
    pub entries: u64,
    /// Accounts with a balance.
    pub accounts: u64,
    /// Sum over all entries (must be 0).
    pub total: i64,
    /// Every broken invariant.
    pub violations: Vec<String>,
}

/// The ledger, in the catalog store.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Posts one transaction atomically: once per key, balanced, and refused without change if
    /// an account in `no_overdraft` would end below zero.
    async fn post(&self, txn: &NewTxn) -> Result<Posted, LedgerError>;
    /// Posts many transactions in one database transaction (none may carry `no_overdraft`);
    /// returns what happened to each, in order.
    async fn post_batch(&self, txns: &[NewTxn]) -> Result<Vec<Posted>, LedgerError>;
    /// An account's balance in its normal sign (what a user is owed is positive).
    async fn balance(&self, account: Account) -> StoreResult<i64>;
    /// A user's pending, available and withdrawing balances.
    async fn wallet(&self, user: UserId) -> StoreResult<Wallet>;
    /// An account's entries, newest first (in the order they were posted); with `before_txn`
    /// (the transaction of the last entry shown), those posted before the account's entry in
    /// that transaction.
    async fn statement(&self, account: Account, before_txn: Option<i64>, limit: u32) -> StoreResult<Vec<LedgerLine>>;
    /// Every account's balance (normal sign), for audits.
    async fn balances(&self) -> StoreResult<Vec<(Account, i64)>>;
    /// Whether a transaction with this key was applied.
    async fn posted(&self, key: &str) -> StoreResult<bool>;
    /// Checks every invariant: each transaction balances and has entries, every balance equals
    /// the sum of its entries, user pending and withdrawing balances are never negative, and
    /// all entries sum to zero.
    async fn audit_ledger(&self) -> StoreResult<LedgerAudit>;
}
