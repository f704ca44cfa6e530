//! Applying what a network reports about an order line: attribute it, split its commission,
//! and move the ledger from the position the row holds to the one the report calls for —
//! one compare-and-set of the row plus one balanced transaction, retried on a lost race.
//!
//! Every source (a polled feed, a postback, the platform's own orders) normalises its input
//! to a [`LineReport`] first; this module is the one place rows and money change.

use std::collections::{BTreeMap, HashMap};

use flashback_core::rebate::lifecycle::{
    Beneficiaries, Holding, NetworkStatus, Report, commission_for, moves, state_for, supersedes,
};
use flashback_core::{Account, Money, Split, Tier, UserId};
use flashback_store::{Applied, NewTxn, Posting, RebateOrder, RebateProfile, RebateReject, Store};

use crate::AppState;
use crate::rebate::RebateError;

/// One report of one order line, normalised from any source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineReport {
    /// The source (`taobao`, `postback`, `platform`).
    pub source: String,
    /// The line item key (`trade_id`).
    pub line_key: String,
    /// The order it belongs to (`trade_parent_id`).
    pub parent_key: String,
    /// The item.
    pub item_id: String,
    /// Its title.
    pub item_title: String,
    /// Its category, if the network says.
    pub category: Option<String>,
    /// The tracking id the network attributed the order to (`special_id`, `relation_id`, …).
    pub tracking: Option<String>,
    /// The buyer, when the source knows them directly (the platform's own orders).
    pub buyer: Option<UserId>,
    /// The status and amounts.
    pub report: Report,
    /// What the buyer paid.
    pub paid: Money,
    /// When the buyer clicked.
    pub click_ms: Option<i64>,
    /// When the buyer paid.
    pub paid_at_ms: Option<i64>,
}

/// What applying a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The row changed (created, or moved on) and the ledger with it.
    Applied,
    /// A duplicate or stale report: nothing changed.
    Ignored,
}

/// The source of the platform's own orders: the platform pays their rebates itself.
pub const PLATFORM: &str = "platform";

/// Who pays a source's commissions.
pub fn payer(source: &str) -> Account {
    if source == PLATFORM { Account::RebateExpense } else { Account::Receivable }
}

/// The longest key and text we keep from a network.
const MAX_KEY: usize = 64;

/// Checks what no network may send us; refusals are recorded for review by the caller.
pub fn validate(r: &LineReport) -> Result<(), String> {
    let key_ok = |k: &str| !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_graphic());
    if !key_ok(&r.source) || !key_ok(&r.line_key) || !key_ok(&r.parent_key) {
        return Err("line key, parent key and source: 1 to 64 printable characters".into());
    }
    if r.item_id.len() > MAX_KEY || r.item_title.chars().count() > 255 {
        return Err("item id or title too long".into());
    }
    if r.tracking.as_ref().is_some_and(|t| t.len() > MAX_KEY) {
        return Err("tracking id too long".into());
    }
    let rp = &r.report;
    // A commission above what the buyer paid is absurd (rates are at most 100%).
    if rp.estimate > r.paid || rp.settled > r.paid {
        return Err(format!("commission above the price paid ({})", r.paid.minor()));
    }
    if rp.refunded > rp.settled.max(rp.estimate) {
        return Err("refunded commission above the commission".into());
    }
    if rp.modified_ms <= 0 {
        return Err("modification time missing".into());
    }
    Ok(())
}

/// The record of a refused input.
fn reject_of(state: &AppState, source: &str, line_key: Option<&str>, reason: &str, payload: &str) -> RebateReject {
    RebateReject {
        id: state.ids.write_ids().event,
        source: source.chars().take(32).collect(),
        line_key: line_key.map(|k| k.chars().take(64).collect()),
        reason: reason.to_owned(),
        payload: payload.to_owned(),
        at_ms: crate::trade::now_ms(),
    }
}

/// Keeps a refused input for review.
pub async fn reject(state: &AppState, source: &str, line_key: Option<&str>, reason: &str, payload: &str) {
    state.metrics.rebate_rejected.get_or_create(&crate::metrics::ReasonLabel { reason: "invalid" }).inc();
    let r = reject_of(state, source, line_key, reason, payload);
    if let Err(e) = state.store.record_reject(&r).await {
        tracing::warn!(error = %e, reason, "could not record a rejected rebate input");
    }
}

/// The report with what a refund already clawed back: order feeds do not repeat refunds, and
/// what was clawed back stays clawed back.
fn with_stored_refund(line: &LineReport, stored: Option<&RebateOrder>) -> LineReport {
    let mut merged = line.clone();
    if let Some(r) = stored
        && r.refunded_minor > merged.report.refunded.minor()
    {
        merged.report.refunded = money(r.refunded_minor);
    }
    merged
}

/// A new row naming a tracking id we never issued: kept (the commission is still ours until
/// someone claims it) but flagged for review.
fn unknown_tracking(
    state: &AppState,
    stored: Option<&RebateOrder>,
    who: &Beneficiaries,
    line: &LineReport,
    now_ms: i64,
) -> Option<RebateReject> {
    let code = line.tracking.as_ref().filter(|_| stored.is_none() && who.buyer.is_none())?;
    Some(RebateReject {
        id: state.ids.write_ids().event,
        source: line.source.clone(),
        line_key: Some(line.line_key.clone()),
        reason: format!("unknown tracking id {code}: the row stays with the platform until claimed"),
        payload: line.line_key.clone(),
        at_ms: now_ms,
    })
}

/// Records flagged rows for review, in one statement, and counts them.
async fn flag(state: &AppState, flagged: &[RebateReject]) {
    if flagged.is_empty() {
        return;
    }
    let n = u64::try_from(flagged.len()).unwrap_or(u64::MAX);
    state
        .metrics
        .rebate_rejected
        .get_or_create(&crate::metrics::ReasonLabel { reason: "unknown_tracking_id" })
        .inc_by(n);
    if let Err(e) = state.store.record_rejects(flagged).await {
        tracing::warn!(error = %e, rows = flagged.len(), "could not record rows flagged for review");
    }
}

/// Who shares a row and at which tier: the tracking id's owner, their inviter and the
/// inviter's inviter.
async fn attribute(store: &dyn Store, tracking: Option<&str>) -> Result<(Beneficiaries, Tier), RebateError> {
    let Some(code) = tracking else { return Ok((Beneficiaries::default(), Tier::Standard)) };
    let Some(buyer) = store.tracking_owner(code).await? else {
        return Ok((Beneficiaries::default(), Tier::Standard));
    };
    beneficiaries_of(store, buyer).await
}

/// A buyer's beneficiaries and tier, from their profile.
pub async fn beneficiaries_of(store: &dyn Store, buyer: UserId) -> Result<(Beneficiaries, Tier), RebateError> {
    let people = people_of(store, &[], vec![buyer]).await?;
    Ok(people.of(buyer))
}

/// Who a batch of rows may name, looked up in a few queries: the owners of its tracking ids and
/// the profiles of its buyers and of their inviters.
#[derive(Debug, Default)]
struct People {
    owners: HashMap<String, UserId>,
    profiles: HashMap<UserId, RebateProfile>,
}

impl People {
    /// A buyer's beneficiaries (their inviter and the inviter's inviter) and tier.
    fn of(&self, buyer: UserId) -> (Beneficiaries, Tier) {
        let profile = self.profiles.get(&buyer);
        let tier = profile.map_or(Tier::Standard, |p| p.tier);
        let inviter = profile.and_then(|p| p.inviter_id);
        let grand_inviter =
            inviter.and_then(|i| self.profiles.get(&i)).and_then(|p| p.inviter_id).filter(|g| *g != buyer);
        (Beneficiaries { buyer: Some(buyer), inviter, grand_inviter }, tier)
    }
}

async fn people_of(store: &dyn Store, codes: &[String], mut buyers: Vec<UserId>) -> Result<People, RebateError> {
    let owners: HashMap<String, UserId> = store.tracking_owners(codes).await?.into_iter().collect();
    buyers.extend(owners.values().copied());
    buyers.sort_unstable();
    buyers.dedup();
    let mut profiles: HashMap<UserId, RebateProfile> =
        store.rebate_profiles(&buyers).await?.into_iter().map(|p| (p.user_id, p)).collect();
    let mut inviters: Vec<UserId> =
        profiles.values().filter_map(|p| p.inviter_id).filter(|i| !profiles.contains_key(i)).collect();
    inviters.sort_unstable();
    inviters.dedup();
    if !inviters.is_empty() {
        profiles.extend(store.rebate_profiles(&inviters).await?.into_iter().map(|p| (p.user_id, p)));
    }
    Ok(People { owners, profiles })
}

fn money(minor: i64) -> Money {
    Money::from_minor(minor).unwrap_or(Money::ZERO)
}

/// What a stored row holds in the ledger.
pub fn held(row: &RebateOrder) -> (Holding, Beneficiaries) {
    let holding = Holding {
        commission: money(row.commission_minor),
        payer: payer(&row.source),
        split: Split {
            buyer: money(row.buyer_share),
            inviter: money(row.inviter_share),
            grand_inviter: money(row.grand_share),
            platform: money(row.platform_share),
        },
        available: row.shares_available,
    };
    let who = Beneficiaries { buyer: row.user_id, inviter: row.inviter_id, grand_inviter: row.grand_inviter_id };
    (holding, who)
}

/// The report a stored row was built from (to re-evaluate it: holds passing, claims).
pub fn stored_report(row: &RebateOrder) -> Report {
    let status = match row.network_status.as_str() {
        "received" => NetworkStatus::Received,
        "settled" => NetworkStatus::Settled,
        "invalid" => NetworkStatus::Invalid,
        _ => NetworkStatus::Paid,
    };
    Report {
        status,
        estimate: money(row.estimate_minor),
        settled: money(row.settled_minor),
        refunded: money(row.refunded_minor),
        modified_ms: row.network_modified_ms,
        settled_at_ms: row.settled_at_ms,
    }
}

fn status_name(s: NetworkStatus) -> &'static str {
    match s {
        NetworkStatus::Paid => "paid",
        NetworkStatus::Received => "received",
        NetworkStatus::Settled => "settled",
        NetworkStatus::Invalid => "invalid",
    }
}

/// How a row changes: attribution (kept once made), report, and the time.
struct Change<'a> {
    line: &'a LineReport,
    who: Beneficiaries,
    tier: Tier,
    now_ms: i64,
}

/// Builds the next version of the row and the ledger transaction for the difference.
fn next_version(state: &AppState, stored: Option<&RebateOrder>, c: &Change<'_>) -> (RebateOrder, Option<NewTxn>) {
    let hold_ms = i64::try_from(state.config.rebate.hold.as_millis()).unwrap_or(i64::MAX);
    let report = &c.line.report;
    let new_state = state_for(report, c.now_ms, hold_ms);
    let commission = commission_for(report, new_state);
    let inviters = usize::from(c.who.inviter.is_some()) + usize::from(c.who.grand_inviter.is_some());
    let split = state.rebate.policy.split(commission, c.tier, c.line.category.as_deref(), inviters);
    let target = Holding {
        commission,
        payer: payer(&c.line.source),
        split,
        available: new_state == flashback_core::rebate::lifecycle::RebateState::Available,
    };
    let from: BTreeMap<Account, i64> = stored
        .map(|r| {
            let (h, w) = held(r);
            h.position(w)
        })
        .unwrap_or_default();
    let to = target.position(c.who);
    let entries = moves(&from, &to);
    let version = stored.map_or(1, |r| r.version + 1);
    let settled_at = report.settled_at_ms;
    // Unattributed shares are the platform's (that is what the position holds).
    let platform_share =
        [(c.who.buyer, split.buyer), (c.who.inviter, split.inviter), (c.who.grand_inviter, split.grand_inviter)]
            .iter()
            .filter(|(u, _)| u.is_none())
            .fold(split.platform.minor(), |acc, (_, m)| acc + m.minor());
    let keep = |u: Option<UserId>, m: Money| if u.is_some() { m.minor() } else { 0 };
    let row = RebateOrder {
        source: c.line.source.clone(),
        line_key: c.line.line_key.clone(),
        parent_key: c.line.parent_key.clone(),
        user_id: c.who.buyer,
        inviter_id: c.who.inviter,
        grand_inviter_id: c.who.grand_inviter,
        tracking: c.line.tracking.clone(),
        item_id: c.line.item_id.clone(),
        item_title: c.line.item_title.clone(),
        category: c.line.category.clone(),
        state: new_state,
        network_status: status_name(report.status).to_owned(),
        paid_minor: c.line.paid.minor(),
        estimate_minor: report.estimate.minor(),
        settled_minor: report.settled.minor(),
        refunded_minor: report.refunded.minor(),
        commission_minor: commission.minor(),
        buyer_share: keep(c.who.buyer, split.buyer),
        inviter_share: keep(c.who.inviter, split.inviter),
        grand_share: keep(c.who.grand_inviter, split.grand_inviter),
        platform_share,
        shares_available: target.available,
        click_ms: c.line.click_ms,
        paid_at_ms: c.line.paid_at_ms,
        settled_at_ms: settled_at,
        available_at_ms: settled_at.map(|s| s.saturating_add(hold_ms)),
        network_modified_ms: report.modified_ms,
        version,
        created_at_ms: stored.map_or(c.now_ms, |r| r.created_at_ms),
        updated_at_ms: c.now_ms,
    };
    let txn = (!entries.is_empty()).then(|| NewTxn {
        id: state.ids.write_ids().event,
        key: format!("rebate:{}:{}:v{version}:{}", row.source, row.line_key, new_state.as_str()),
        kind: format!("rebate.{}", new_state.as_str()),
        reference: format!("{}:{}", row.source, row.line_key),
        postings: entries.into_iter().map(|(account, amount)| Posting { account, amount }).collect(),
        no_overdraft: Vec::new(),
        at_ms: c.now_ms,
    });
    (row, txn)
}

/// Applies one report: creates or moves the row and the ledger, or ignores a stale or
/// duplicate report. Invalid input is refused (the caller records it).
pub async fn apply(state: &AppState, line: &LineReport) -> Result<Outcome, RebateError> {
    validate(line).map_err(RebateError::Invalid)?;
    let hold_ms = i64::try_from(state.config.rebate.hold.as_millis()).unwrap_or(i64::MAX);
    for _ in 0..8 {
        let now_ms = crate::trade::now_ms();
        let stored = state.store.rebate_order(&line.source, &line.line_key).await?;
        let merged = with_stored_refund(line, stored.as_ref());
        let line = &merged;
        if !supersedes(stored.as_ref().map(|r| (r.state, r.network_modified_ms)), &line.report, now_ms, hold_ms) {
            return Ok(Outcome::Ignored);
        }
        // Attribution sticks: once a row has a buyer (by tracking id or a claim) it keeps it.
        let (who, tier) = match stored.as_ref().and_then(|r| r.user_id).or(line.buyer) {
            Some(buyer) => beneficiaries_of(state.store.as_ref(), buyer).await?,
            None => attribute(state.store.as_ref(), line.tracking.as_deref()).await?,
        };
        if let Some(f) = unknown_tracking(state, stored.as_ref(), &who, line, now_ms) {
            flag(state, &[f]).await;
        }
        let change = Change { line, who, tier, now_ms };
        let (row, txn) = next_version(state, stored.as_ref(), &change);
        match state.store.apply_rebate(&row, stored.as_ref().map(|r| r.version), txn.as_ref()).await? {
            Applied::Done => {
                state
                    .metrics
                    .rebate_rows
                    .get_or_create(&crate::metrics::ReasonLabel { reason: row.state.as_str() })
                    .inc();
                return Ok(Outcome::Applied);
            }
            Applied::Conflict => continue,
        }
    }
    Err(RebateError::Busy)
}

/// The report a stored row stands on, as a line (to re-apply it with a change).
pub fn line_of(row: &RebateOrder) -> LineReport {
    LineReport {
        source: row.source.clone(),
        line_key: row.line_key.clone(),
        parent_key: row.parent_key.clone(),
        item_id: row.item_id.clone(),
        item_title: row.item_title.clone(),
        category: row.category.clone(),
        tracking: row.tracking.clone(),
        buyer: row.user_id,
        report: stored_report(row),
        paid: money(row.paid_minor),
        click_ms: row.click_ms,
        paid_at_ms: row.paid_at_ms,
    }
}

/// Re-evaluates a stored row with a new attribution or at a later time (holds passing,
/// claims); returns whether it changed.
pub async fn reevaluate(state: &AppState, row: &RebateOrder, buyer: Option<UserId>) -> Result<bool, RebateError> {
    let line = line_of(row);
    let (who, tier) = match buyer.or(row.user_id) {
        Some(b) => beneficiaries_of(state.store.as_ref(), b).await?,
        None => (Beneficiaries::default(), Tier::Standard),
    };
    let change = Change { line: &line, who, tier, now_ms: crate::trade::now_ms() };
    let (next, txn) = next_version(state, Some(row), &change);
    if next.state == row.state && next.user_id == row.user_id && txn.is_none() {
        return Ok(false);
    }
    Ok(state.store.apply_rebate(&next, Some(row.version), txn.as_ref()).await? == Applied::Done)
}

/// Releases every hold that has passed: settled rows become available. Returns how many.
pub async fn release_due(state: &AppState) -> Result<usize, RebateError> {
    let mut released = 0;
    loop {
        let due = state.store.rebates_due(crate::trade::now_ms(), 500).await?;
        let mut moved = 0;
        for row in &due {
            if reevaluate(state, row, None).await? {
                moved += 1;
            }
        }
        released += moved;
        // A short page is the last; a page where nothing moved would only repeat itself.
        if due.len() < 500 || moved == 0 {
            return Ok(released);
        }
    }
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BatchReport {
    /// Rows created or moved on.
    pub applied: usize,
    /// Stale or duplicate reports.
    pub ignored: usize,
    /// Refused reports (recorded for review).
    pub rejected: usize,
}

impl std::ops::AddAssign for BatchReport {
    fn add_assign(&mut self, other: Self) {
        self.applied += other.applied;
        self.ignored += other.ignored;
        self.rejected += other.rejected;
    }
}

/// A batch read and built, ready to be written: every row change with its ledger
/// transaction, and the inputs to keep for review.
#[derive(Debug, Default)]
pub struct Prepared {
    changes: Vec<flashback_store::RebateChange>,
    /// The report behind each change, to apply on its own if the row moved meanwhile.
    sources: Vec<LineReport>,
    /// Refused reports and rows flagged for review, recorded with the batch.
    review: Vec<RebateReject>,
    /// How many of `review` are flagged rows (the rest were refused).
    flagged: usize,
    report: BatchReport,
}

impl Prepared {
    /// The rows the batch writes.
    fn keys(&self) -> std::collections::HashSet<(String, String)> {
        self.changes.iter().map(|c| (c.row.source.clone(), c.row.line_key.clone())).collect()
    }
}

/// Reads what a batch needs and builds its changes: the stored rows in one query, the
/// tracking ids' owners and the buyers' profiles in a few more. Reads the last committed
/// state; a row written after that fails its compare-and-set in [`write`] and is applied
/// again on its own. Refused reports are kept with the batch, not written here.
pub async fn prepare(state: &AppState, lines: &[LineReport]) -> Result<Prepared, RebateError> {
    let mut out = Prepared::default();
    let hold_ms = i64::try_from(state.config.rebate.hold.as_millis()).unwrap_or(i64::MAX);
    let now_ms = crate::trade::now_ms();
    let mut valid = Vec::with_capacity(lines.len());
    for line in lines {
        match validate(line) {
            Ok(()) => valid.push(line),
            Err(why) => {
                out.report.rejected += 1;
                out.review.push(reject_of(state, &line.source, Some(&line.line_key), &why, &line.line_key));
            }
        }
    }
    let mut by_source: HashMap<&str, Vec<String>> = HashMap::new();
    for line in &valid {
        by_source.entry(line.source.as_str()).or_default().push(line.line_key.clone());
    }
    let mut current: HashMap<(String, String), RebateOrder> = HashMap::new();
    for (source, keys) in by_source {
        for row in state.store.rebate_orders_by_keys(source, &keys).await? {
            current.insert((row.source.clone(), row.line_key.clone()), row);
        }
    }
    // Everyone the batch may name, before any row is built.
    let mut codes: Vec<String> = valid.iter().filter_map(|l| l.tracking.clone()).collect();
    codes.sort_unstable();
    codes.dedup();
    let buyers: Vec<UserId> =
        valid.iter().filter_map(|l| l.buyer).chain(current.values().filter_map(|r| r.user_id)).collect();
    let people = people_of(state.store.as_ref(), &codes, buyers).await?;
    let mut flagged = Vec::new();
    for line in valid {
        let key = (line.source.clone(), line.line_key.clone());
        let stored = current.get(&key);
        let merged = with_stored_refund(line, stored);
        if !supersedes(stored.map(|r| (r.state, r.network_modified_ms)), &merged.report, now_ms, hold_ms) {
            out.report.ignored += 1;
            continue;
        }
        // Attribution sticks: once a row has a buyer it keeps it.
        let buyer = stored
            .and_then(|r| r.user_id)
            .or(merged.buyer)
            .or_else(|| merged.tracking.as_ref().and_then(|code| people.owners.get(code).copied()));
        let (who, tier) = buyer.map_or((Beneficiaries::default(), Tier::Standard), |b| people.of(b));
        flagged.extend(unknown_tracking(state, stored, &who, &merged, now_ms));
        let change = Change { line: &merged, who, tier, now_ms };
        let (row, txn) = next_version(state, stored, &change);
        let expected = stored.map(|r| r.version);
        current.insert(key, row.clone());
        out.changes.push(flashback_store::RebateChange { row, expected, txn });
        out.sources.push(line.clone());
    }
    out.flagged = flagged.len();
    out.review.extend(flagged);
    Ok(out)
}

/// Writes a prepared batch: every row's compare-and-set, the ledger transactions of those
/// written and the inputs kept for review, in one database transaction. A row another writer
/// changed meanwhile is applied again on its own. Same outcome as [`apply`] on each report in
/// order.
pub async fn write(state: &AppState, batch: Prepared) -> Result<BatchReport, RebateError> {
    let Prepared { changes, sources, review, flagged, mut report } = batch;
    let outcomes = state.store.apply_rebates(&changes, &review).await?;
    let count = |reason: &'static str, n: usize| {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        state.metrics.rebate_rejected.get_or_create(&crate::metrics::ReasonLabel { reason }).inc_by(n);
    };
    count("invalid", review.len() - flagged);
    count("unknown_tracking_id", flagged);
    let mut by_state: BTreeMap<&'static str, u64> = BTreeMap::new();
    for ((outcome, line), change) in outcomes.iter().zip(&sources).zip(&changes) {
        match outcome {
            Applied::Done => {
                report.applied += 1;
                *by_state.entry(change.row.state.as_str()).or_default() += 1;
            }
            // Another writer changed the row meanwhile: apply this report on its own.
            Applied::Conflict => match apply(state, line).await? {
                Outcome::Applied => report.applied += 1,
                Outcome::Ignored => report.ignored += 1,
            },
        }
    }
    for (reason, n) in by_state {
        state.metrics.rebate_rows.get_or_create(&crate::metrics::ReasonLabel { reason }).inc_by(n);
    }
    Ok(report)
}

/// Applies many reports at once: [`prepare`], then [`write`].
pub async fn apply_batch(state: &AppState, lines: &[LineReport]) -> Result<BatchReport, RebateError> {
    let batch = prepare(state, lines).await?;
    write(state, batch).await
}

/// Applies batches one after another, preparing each while the one before is being written
/// (the preparation is CPU and reads; the write is the database's single writer), so the two
/// overlap on separate cores. A batch that names a row the batch in flight writes waits for it
/// first: prepared from the state before, it would only lose its compare-and-set.
///
/// Batches are written in the order they are pushed; an error is returned by the `push` or
/// [`Pipeline::finish`] after it. A pipeline dropped unfinished lets its last write complete.
pub struct Pipeline {
    state: AppState,
    writing: Option<InFlight>,
    report: BatchReport,
}

/// The batch being written: the rows it writes and its task.
type InFlight =
    (std::collections::HashSet<(String, String)>, tokio::task::JoinHandle<Result<BatchReport, RebateError>>);

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("writing", &self.writing.is_some()).field("report", &self.report).finish()
    }
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new(state: &AppState) -> Self {
        Self { state: state.clone(), writing: None, report: BatchReport::default() }
    }

    /// Prepares `lines`, then starts writing them once the batch before is written.
    pub async fn push(&mut self, lines: &[LineReport]) -> Result<(), RebateError> {
        if let Some((keys, _)) = &self.writing
            && lines.iter().any(|l| keys.contains(&(l.source.clone(), l.line_key.clone())))
        {
            self.wait().await?;
        }
        let batch = prepare(&self.state, lines).await?;
        self.wait().await?;
        let keys = batch.keys();
        let state = self.state.clone();
        self.writing = Some((keys, tokio::spawn(async move { write(&state, batch).await })));
        Ok(())
    }

    /// Waits for the batch in flight.
    async fn wait(&mut self) -> Result<(), RebateError> {
        if let Some((_, handle)) = self.writing.take() {
            let done = match handle.await {
                Ok(done) => done?,
                // A bug in the write: let it surface where the pipeline is driven.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: the runtime is shutting down; nothing moved the cursor.
                Err(_) => return Err(RebateError::Busy),
            };
            self.report += done;
        }
        Ok(())
    }

    /// Waits for the last batch; what every batch did.
    pub async fn finish(mut self) -> Result<BatchReport, RebateError> {
        self.wait().await?;
        Ok(self.report)
    }
}
