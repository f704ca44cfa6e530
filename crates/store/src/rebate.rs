//! Rebates in the catalog store: profiles (tier, inviter), tracking ids, one row per
//! commissionable order line, and rejected input kept for review.

use async_trait::async_trait;
use flashback_core::rebate::lifecycle::RebateState;
use flashback_core::{Tier, UserId};
use serde::Serialize;

use crate::{LedgerError, NewTxn, StoreResult};

/// A user's rebate profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RebateProfile {
    /// The user.
    pub user_id: UserId,
    /// Their tier.
    pub tier: Tier,
    /// Who invited them, if anyone.
    pub inviter_id: Option<UserId>,
}

/// The kinds of tracking id a network may return on an order row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackingKind {
    /// Taobao's member id (`special_id`).
    SpecialId,
    /// Taobao's channel id (`relation_id`).
    RelationId,
    /// Our own sub-id, embedded in links for networks without member ids.
    SubId,
}

impl TrackingKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackingKind::SpecialId => "special_id",
            TrackingKind::RelationId => "relation_id",
            TrackingKind::SubId => "sub_id",
        }
    }
}

/// One commissionable order line as we hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebateOrder {
    /// The network (`taobao`, `postback:<network>`, `platform`).
    pub source: String,
    /// The network's line-item key (`trade_id`).
    pub line_key: String,
    /// The network's order (`trade_parent_id`).
    pub parent_key: String,
    /// The buyer, once attributed.
    pub user_id: Option<UserId>,
    /// The buyer's inviter when attributed.
    pub inviter_id: Option<UserId>,
    /// The inviter's inviter.
    pub grand_inviter_id: Option<UserId>,
    /// The tracking id the network returned, if any.
    pub tracking: Option<String>,
    /// The item.
    pub item_id: String,
    /// Its title.
    pub item_title: String,
    /// Its category, for split overrides.
    pub category: Option<String>,
    /// Our state.
    pub state: RebateState,
    /// The network's status as reported (`paid`, `received`, `settled`, `invalid`).
    pub network_status: String,
    /// What the buyer paid.
    pub paid_minor: i64,
    /// The estimated commission.
    pub estimate_minor: i64,
    /// The settled commission.
    pub settled_minor: i64,
    /// Commission refunded after settlement.
    pub refunded_minor: i64,
    /// The commission this row holds in the ledger.
    pub commission_minor: i64,
    /// The buyer's share of it.
    pub buyer_share: i64,
    /// The inviter's share.
    pub inviter_share: i64,
    /// The inviter's inviter's share.
    pub grand_share: i64,
    /// The platform's share (rounding remainders and unattributed shares included).
    pub platform_share: i64,
    /// Whether the shares sit in available (else pending) balances.
    pub shares_available: bool,
    /// When the buyer clicked, as the network reports.
    pub click_ms: Option<i64>,
    /// When the buyer paid.
    pub paid_at_ms: Option<i64>,
    /// When the network settled.
    pub settled_at_ms: Option<i64>,
    /// When the shares become available (settled + hold).
    pub available_at_ms: Option<i64>,
    /// The network's modification time of the last report applied.
    pub network_modified_ms: i64,
    /// Bumped by every change; changes are compare-and-set on it.
    pub version: i64,
    /// First seen.
    pub created_at_ms: i64,
    /// Last changed.
    pub updated_at_ms: i64,
}

/// A tracked link: `/r/<code>` redirects to `target_url` (the network's link with the
/// user's tracking embedded) and records the click.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// The short code.
    pub code: String,
    /// Whose link.
    pub user_id: UserId,
    /// The item it leads to.
    pub item_id: String,
    /// Where it redirects.
    pub target_url: String,
    /// Made at.
    pub created_at_ms: i64,
}

/// One click on a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Click {
    /// Its id.
    pub id: i64,
    /// The link.
    pub code: String,
    /// The link's owner.
    pub user_id: UserId,
    /// The item.
    pub item_id: String,
    /// When.
    pub at_ms: i64,
    /// A keyed hash of the client address.
    pub ip_hash: String,
    /// The user agent (truncated).
    pub user_agent: String,
}

/// What [`RebateStore::apply_rebate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The row and its ledger transaction were written.
    Done,
    /// The row changed since it was read (another writer won); read it again and retry.
    Conflict,
}

/// One row change of a batch: the next version, the version it replaces (`None`: new), and the
/// ledger transaction for the difference.
#[derive(Debug, Clone)]
pub struct RebateChange {
    /// The next version.
    pub row: RebateOrder,
    /// The version it replaces.
    pub expected: Option<i64>,
    /// What it moves in the ledger.
    pub txn: Option<NewTxn>,
}

/// A rejected input, kept for review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebateReject {
    /// Its id.
    pub id: i64,
    /// Where it came from.
    pub source: String,
    /// The line it named, if it named one.
    pub line_key: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// What was sent (truncated).
    pub payload: String,
    /// When.
    pub at_ms: i64,
}

/// Rebates in the catalog store.
#[async_trait]
pub trait RebateStore: Send + Sync {
    /// A user's profile (`None` until they get one).
    async fn rebate_profile(&self, user: UserId) -> StoreResult<Option<RebateProfile>>;
    /// Creates or updates a profile's tier; the inviter is set only when the profile is
    /// created (an inviter never changes later).
    async fn upsert_rebate_profile(&self, profile: RebateProfile) -> StoreResult<RebateProfile>;
    /// Binds a tracking id to a user ([`crate::StoreError::Conflict`] if another user holds it).
    async fn bind_tracking_id(&self, code: &str, user: UserId, kind: TrackingKind, at_ms: i64) -> StoreResult<()>;
    /// The user a tracking id is bound to.
    async fn tracking_owner(&self, code: &str) -> StoreResult<Option<UserId>>;
    /// [`Self::tracking_owner`] for many ids in a few queries: the bound ones with their
    /// owners (any order; unbound ids are left out).
    async fn tracking_owners(&self, codes: &[String]) -> StoreResult<Vec<(String, UserId)>>;
    /// [`Self::rebate_profile`] for many users in a few queries (any order; users without a
    /// profile are left out).
    async fn rebate_profiles(&self, users: &[UserId]) -> StoreResult<Vec<RebateProfile>>;
    /// One row.
    async fn rebate_order(&self, source: &str, line_key: &str) -> StoreResult<Option<RebateOrder>>;
    /// Writes `row` — inserting it when `expected_version` is `None`, else only if the stored
    /// version still equals it — and posts `txn` in the same database transaction, so a row
    /// and the ledger never disagree. `row.version` must be the next version.
    async fn apply_rebate(
        &self,
        row: &RebateOrder,
        expected_version: Option<i64>,
        txn: Option<&NewTxn>,
    ) -> Result<Applied, LedgerError>;
    /// [`Self::apply_rebate`] for many rows in one database transaction: each row's
    /// compare-and-set, the ledger transactions of those that were written, and `review`
    /// (inputs refused or flagged while the batch was built, as [`Self::record_rejects`]),
    /// together.
    async fn apply_rebates(&self, items: &[RebateChange], review: &[RebateReject])
    -> Result<Vec<Applied>, LedgerError>;
    /// The stored rows among `keys` of one source (any order; absent keys are left out), as
    /// last committed: a read connection may answer while a write is in progress.
    async fn rebate_orders_by_keys(&self, source: &str, keys: &[String]) -> StoreResult<Vec<RebateOrder>>;
    /// The rows `user` is paid from, as their list holds them (`rebate_list.rs`): newest first
    /// by when each became theirs (a row joins the lists of its buyer and of the buyer's
    /// inviters when it first has a buyer), once per role they hold on it, after the entry
    /// `after` when given. A cursor that is not one of the user's entries gives nothing.
    async fn rebates_of(
        &self,
        user: UserId,
        after: Option<&crate::RebateCursor>,
        limit: u32,
    ) -> StoreResult<Vec<crate::ListedRebate>>;
    /// What is wrong with the users' lists of rebate rows (for `flashback audit ledger`):
    /// each list's entries must be numbered 1 to the last number it gave, each linked to the
    /// one numbered before it, the head the last; a row is listed exactly for those it pays,
    /// once it has a buyer. Together: one unbroken list per user of every row paying them.
    async fn rebate_list_breaks(&self) -> StoreResult<Vec<String>>;
    /// Settled rows whose hold has passed at `now_ms`, oldest first.
    async fn rebates_due(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<RebateOrder>>;
    /// Every row (for audits), in key order, after `after` (source, line key).
    async fn rebate_orders_page(&self, after: Option<(String, String)>, limit: u32) -> StoreResult<Vec<RebateOrder>>;
    /// The rows of one network order (its line items).
    async fn rebate_orders_of_parent(&self, source: &str, parent_key: &str) -> StoreResult<Vec<RebateOrder>>;
    /// Stores a tracked link ([`crate::StoreError::Conflict`] if the code exists).
    async fn create_link(&self, link: &Link) -> StoreResult<()>;
    /// One link.
    async fn link(&self, code: &str) -> StoreResult<Option<Link>>;
    /// Records a click on a link.
    async fn record_click(&self, click: &Click) -> StoreResult<()>;
    /// Whether `user` clicked a link to `item_id` between the two times.
    async fn clicked(&self, user: UserId, item_id: &str, from_ms: i64, to_ms: i64) -> StoreResult<bool>;
    /// Where a polled feed got to.
    async fn sync_cursor(&self, name: &str) -> StoreResult<Option<i64>>;
    /// Moves a feed's cursor (only forward).
    async fn advance_sync_cursor(&self, name: &str, position_ms: i64) -> StoreResult<()>;
    /// Keeps a rejected input for review.
    async fn record_reject(&self, reject: &RebateReject) -> StoreResult<()>;
    /// Keeps many rejected or flagged inputs for review, in one transaction.
    async fn record_rejects(&self, rejects: &[RebateReject]) -> StoreResult<()>;
    /// The most recent rejects.
    async fn recent_rejects(&self, limit: u32) -> StoreResult<Vec<RebateReject>>;
}

/// Where a withdrawal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WithdrawalState {
    /// Funds held, waiting for review.
    Requested,
    /// Approved; the payout is being made.
    Approved,
    /// Paid out.
    Paid,
    /// Refused by a reviewer; funds released.
    Rejected,
    /// The payout failed; funds released.
    Failed,
}

impl WithdrawalState {
    /// Every state.
    pub const ALL: [WithdrawalState; 5] = [
        WithdrawalState::Requested,
        WithdrawalState::Approved,
        WithdrawalState::Paid,
        WithdrawalState::Rejected,
        WithdrawalState::Failed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawalState::Requested => "requested",
            WithdrawalState::Approved => "approved",
            WithdrawalState::Paid => "paid",
            WithdrawalState::Rejected => "rejected",
            WithdrawalState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.as_str() == s)
    }
}

/// A withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Withdrawal {
    /// Its id.
    pub id: i64,
    /// Whose.
    pub user_id: UserId,
    /// How much, in minor units.
    pub amount_minor: i64,
    /// Where to (an Alipay account).
    pub payee: String,
    /// Where it is.
    pub state: WithdrawalState,
    /// Our transfer number; the payout provider is idempotent on it.
    pub transfer_no: String,
    /// Why it was rejected or failed.
    pub reason: Option<String>,
    /// Who reviewed it.
    pub reviewer_id: Option<UserId>,
    /// The provider's reference once paid.
    pub provider_ref: Option<String>,
    /// Requested at.
    pub created_at_ms: i64,
    /// Last changed.
    pub updated_at_ms: i64,
}

/// Why a withdrawal request was refused; nothing was held.
#[derive(Debug, thiserror::Error)]
pub enum WithdrawRefusal {
    /// The user already made the day's allowed number of requests.
    #[error("daily withdrawal limit reached")]
    DailyLimit,
    /// The available balance is too low.
    #[error("insufficient balance")]
    Overdraft,
    /// The store failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A state change of a withdrawal.
#[derive(Debug, Clone)]
pub struct WithdrawalMove<'a> {
    /// Which.
    pub id: i64,
    /// Only from this state (compare-and-set).
    pub from: WithdrawalState,
    /// To this one.
    pub to: WithdrawalState,
    /// Why (rejections, failures).
    pub reason: Option<&'a str>,
    /// Who decided.
    pub reviewer: Option<UserId>,
    /// The provider's reference.
    pub provider_ref: Option<&'a str>,
    /// The ledger movement that goes with it, in the same transaction.
    pub txn: Option<&'a NewTxn>,
}

/// Withdrawals in the catalog store.
#[async_trait]
pub trait WithdrawalStore: Send + Sync {
    /// Records a request and holds its funds (`hold`, guarded against overdraft) in one
    /// transaction, within `daily_limit` requests for the user's UTC day `day`.
    async fn request_withdrawal(
        &self,
        w: &Withdrawal,
        day: i64,
        daily_limit: u32,
        hold: &NewTxn,
    ) -> Result<(), WithdrawRefusal>;
    /// Moves a withdrawal (compare-and-set on its state) and posts the move's ledger
    /// transaction in the same database transaction. `None` if it was not in `from`.
    async fn move_withdrawal(&self, m: WithdrawalMove<'_>) -> Result<Option<Withdrawal>, LedgerError>;
    /// One withdrawal.
    async fn withdrawal(&self, id: i64) -> StoreResult<Option<Withdrawal>>;
    /// Withdrawals newest first, optionally of one user and/or in one state, below `before`.
    async fn withdrawals(
        &self,
        user: Option<UserId>,
        state: Option<WithdrawalState>,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Withdrawal>>;
}
