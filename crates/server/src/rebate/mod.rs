//! Rebates (淘客返利): order lines reported by affiliate networks are attributed to our
//! users, their commission split by tier and referrals, and followed through the ledger from
//! estimate to settlement, availability and withdrawal — or to invalidation and reversal.
//!
//! - `ingest`: the one place a report changes a row and the ledger.
//! - the routes here: a user's rebates and wallet, their rebate profile (inviter), and the
//!   back office's binding of network tracking ids.

pub mod audit;
pub mod ingest;
pub mod links;
pub mod platform;
pub mod postback;
pub mod reconcile;
pub mod taobao;
pub mod views;
pub mod withdraw;
pub mod withdraw_list;

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use flashback_core::rebate::lifecycle::RebateState;
use flashback_core::{Role, SplitPolicy, Tier, UserId};
use flashback_store::{LedgerError, ListedRebate, RebateCursor, RebateProfile, StoreError, TrackingKind, Wallet};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::{Json, Path, Query};
use views::{RebateQuery, RoleName};

/// The rebate settings every handler needs.
#[derive(Debug)]
pub struct RebateRuntime {
    /// How commissions are split.
    pub policy: SplitPolicy,
    /// Postback signatures already applied (replays are answered, not applied).
    pub seen: postback::SeenSignatures,
    /// Key of the client-address hashes kept with clicks.
    pub click_key: Vec<u8>,
}

/// Why a rebate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RebateError {
    /// Input no network or client may send.
    #[error("{0}")]
    Invalid(String),
    /// Lost too many races for one row; try again.
    #[error("the row is changing too fast; retry")]
    Busy,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ledger refused a posting.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<RebateError> for Problem {
    fn from(e: RebateError) -> Self {
        match e {
            RebateError::Invalid(detail) => Problem::invalid(detail),
            RebateError::Busy => Problem::unavailable("busy", "the row is changing; retry shortly").retry_after(1),
            RebateError::Store(e) => Problem::from_store(&e),
            RebateError::Ledger(LedgerError::Overdraft(_)) => {
                Problem::new(StatusCode::CONFLICT, "insufficient_balance", "your available balance is too low")
            }
            RebateError::Ledger(LedgerError::Store(e)) => Problem::from_store(&e),
            RebateError::Ledger(e @ LedgerError::Unbalanced(_)) => {
                tracing::error!(error = %e, "an unbalanced ledger transaction was built");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

/// The rebate routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(my_rebates))
        .routes(routes!(my_wallet))
        .routes(routes!(my_profile, join))
        .routes(routes!(bind_tracking_id))
        .routes(routes!(withdraw::request, withdraw_list::mine))
        .routes(routes!(withdraw_list::all))
        .routes(routes!(withdraw::review))
        .routes(routes!(postback::receive))
        .routes(routes!(links::create))
        .routes(routes!(links::follow))
        .routes(routes!(links::claim))
        .routes(routes!(reconcile::run))
        .routes(routes!(rejects))
}

/// One order line you are paid from, in one role.
#[derive(Debug, Serialize, ToSchema)]
pub struct RebateView {
    pub source: String,
    pub line_key: String,
    pub parent_key: String,
    pub item_id: String,
    pub item_title: String,
    /// Whose share you are paid: `buyer` (you bought it), `inviter` (you invited the buyer)
    /// or `grand_inviter` (you invited the buyer's inviter).
    pub role: RoleName,
    /// `estimated`, `received`, `settled`, `available`, `invalid` or `reversed`.
    pub state: &'static str,
    /// What the buyer paid, in minor units.
    pub paid_minor: i64,
    /// The commission the network reports (estimate until settled), in minor units.
    pub commission_minor: i64,
    /// Your share of it in this role, in minor units (zero once invalid or reversed).
    pub rebate_minor: i64,
    /// When your share becomes available (settled rows).
    pub available_at_ms: Option<i64>,
    pub updated_at_ms: i64,
}

impl From<&ListedRebate> for RebateView {
    fn from(e: &ListedRebate) -> Self {
        let r = &e.row;
        Self {
            source: r.source.clone(),
            line_key: r.line_key.clone(),
            parent_key: r.parent_key.clone(),
            item_id: r.item_id.clone(),
            item_title: r.item_title.clone(),
            role: e.role.into(),
            state: r.state.as_str(),
            paid_minor: r.paid_minor,
            commission_minor: r.commission_minor,
            rebate_minor: e.share(),
            available_at_ms: (r.state == RebateState::Settled).then_some(r.available_at_ms).flatten(),
            updated_at_ms: r.updated_at_ms,
        }
    }
}

/// A page of rebates.
#[derive(Debug, Serialize, ToSchema)]
pub struct RebatePage {
    pub items: Vec<RebateView>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// The rows you are paid from, newest first by when each became yours: a row you bought from
/// when it is reported with your tracking id or claimed, a row your invitee (or theirs) bought
/// from when it became theirs. Visible as soon as a network reports it.
#[utoipa::path(get, path = "/api/v1/me/rebates", tag = "rebates", security(("bearer" = [])), params(RebateQuery),
    responses((status = 200, body = RebatePage), (status = 400, body = Problem)))]
pub async fn my_rebates(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RebateQuery>,
) -> Result<axum::Json<RebatePage>, Problem> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Problem::bad_request("invalid_query", "limit: 1 to 100"));
    }
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            RebateCursor::parse(c).ok_or_else(|| Problem::bad_request("invalid_query", "cursor: not one we issued"))
        })
        .transpose()?;
    let rows = state.store.rebates_of(caller.id, after.as_ref(), limit).await.map_err(|e| Problem::from_store(&e))?;
    let next_cursor = (rows.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .then(|| rows.last().map(|r| r.cursor().to_string()))
        .flatten();
    Ok(axum::Json(RebatePage { items: rows.iter().map(RebateView::from).collect(), next_cursor }))
}

/// Balances in minor units.
#[derive(Debug, Serialize, ToSchema)]
pub struct WalletView {
    /// Earned, not yet payable.
    pub pending_minor: i64,
    /// Payable; negative after a reversal took more than was left (withdrawals wait until it
    /// recovers).
    pub available_minor: i64,
    /// Held for withdrawals in review or being paid.
    pub withdrawing_minor: i64,
}

impl From<Wallet> for WalletView {
    fn from(w: Wallet) -> Self {
        Self { pending_minor: w.pending, available_minor: w.available, withdrawing_minor: w.withdrawing }
    }
}

/// Your wallet.
#[utoipa::path(get, path = "/api/v1/me/wallet", tag = "rebates", security(("bearer" = [])),
    responses((status = 200, body = WalletView)))]
pub async fn my_wallet(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<WalletView>, Problem> {
    let w = state.store.wallet(caller.id).await.map_err(|e| Problem::from_store(&e))?;
    Ok(axum::Json(w.into()))
}

/// A rebate profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileView {
    /// `standard`, `silver` or `gold`.
    pub tier: &'static str,
    /// Who invited you.
    pub inviter_id: Option<String>,
    /// Your invite code (give it to friends: you earn a share of their rebates).
    pub invite_code: String,
}

fn profile_view(p: Option<RebateProfile>, me: UserId) -> ProfileView {
    ProfileView {
        tier: p.map_or(Tier::Standard, |p| p.tier).as_str(),
        inviter_id: p.and_then(|p| p.inviter_id).map(|i| i.to_string()),
        invite_code: me.to_string(),
    }
}

/// Your rebate profile.
#[utoipa::path(get, path = "/api/v1/me/rebate-profile", tag = "rebates", security(("bearer" = [])),
    responses((status = 200, body = ProfileView)))]
pub async fn my_profile(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<ProfileView>, Problem> {
    let p = state.store.rebate_profile(caller.id).await.map_err(|e| Problem::from_store(&e))?;
    Ok(axum::Json(profile_view(p, caller.id)))
}

/// Joining the rebate program, optionally with an inviter's code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// The inviter's invite code (their user id); set once, never changed.
    #[schema(value_type = Option<crate::http::schema::Id>)]
    pub invite_code: Option<String>,
}

/// Join the rebate program (once), naming who invited you.
#[utoipa::path(post, path = "/api/v1/me/rebate-profile", tag = "rebates", security(("bearer" = [])),
    request_body = JoinBody,
    responses((status = 200, body = ProfileView), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn join(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<JoinBody>,
) -> Result<axum::Json<ProfileView>, Problem> {
    let store_err = |e: StoreError| Problem::from_store(&e);
    let existing = state.store.rebate_profile(caller.id).await.map_err(store_err)?;
    let inviter = match body.invite_code.as_deref() {
        None => None,
        Some(code) => {
            let bad = || Problem::invalid("invite_code: not a member's code");
            let id = UserId::parse(code).map_err(|_| bad())?;
            if id == caller.id {
                return Err(Problem::invalid("invite_code: you cannot invite yourself"));
            }
            // Only an existing member can invite, and never into a loop.
            let inviter = state.store.rebate_profile(id).await.map_err(store_err)?.ok_or_else(bad)?;
            if inviter.inviter_id == Some(caller.id) {
                return Err(Problem::invalid("invite_code: your own invitee cannot invite you"));
            }
            Some(id)
        }
    };
    if let Some(p) = existing {
        if inviter.is_some() && p.inviter_id != inviter {
            return Err(Problem::new(StatusCode::CONFLICT, "already_joined", "your inviter is set once"));
        }
        return Ok(axum::Json(profile_view(Some(p), caller.id)));
    }
    let p = state
        .store
        .upsert_rebate_profile(RebateProfile { user_id: caller.id, tier: Tier::Standard, inviter_id: inviter })
        .await
        .map_err(store_err)?;
    Ok(axum::Json(profile_view(Some(p), caller.id)))
}

/// A network tracking id to bind to a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindBody {
    /// The user.
    #[schema(value_type = crate::http::schema::Id)]
    pub user_id: String,
    /// `special_id`, `relation_id` or `sub_id`.
    #[schema(value_type = crate::http::schema::TrackingKindName)]
    pub kind: String,
}

/// Bind a network-issued tracking id (a member's `special_id` or `relation_id`) to a user
/// (admins; done when the user authorises the network account).
#[utoipa::path(put, path = "/api/v1/admin/tracking-ids/{code}", tag = "rebates", security(("bearer" = [])),
    params(("code" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$", description = "The tracking id")), request_body = BindBody,
    responses((status = 204), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn bind_tracking_id(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    Json(body): Json<BindBody>,
) -> Result<StatusCode, Problem> {
    caller.require(&[Role::Admin])?;
    if code.is_empty() || code.len() > 64 || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Problem::invalid("code: 1 to 64 letters, digits, - or _"));
    }
    let user = UserId::parse(&body.user_id).map_err(|_| Problem::invalid("user_id: not a user id"))?;
    let kind = match body.kind.as_str() {
        "special_id" => TrackingKind::SpecialId,
        "relation_id" => TrackingKind::RelationId,
        "sub_id" => TrackingKind::SubId,
        _ => return Err(Problem::invalid("kind: special_id, relation_id or sub_id")),
    };
    state
        .store
        .user(user)
        .await
        .map_err(|e| Problem::from_store(&e))?
        .ok_or_else(|| Problem::invalid("user_id: no such user"))?;
    state.store.bind_tracking_id(&code, user, kind, crate::trade::now_ms()).await.map_err(|e| match e {
        StoreError::Conflict(_) => Problem::new(StatusCode::CONFLICT, "tracking_id_taken", "bound to another user"),
        other => Problem::from_store(&other),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// An input refused or flagged for review.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectView {
    pub id: String,
    pub source: String,
    pub line_key: Option<String>,
    pub reason: String,
    /// What was sent (truncated).
    pub payload: String,
    pub at_ms: i64,
}

/// The most recent rebate inputs refused or flagged for review (admins).
#[utoipa::path(get, path = "/api/v1/admin/rebate-rejects", tag = "rebates", security(("bearer" = [])),
    responses((status = 200, body = [RejectView]), (status = 403, body = Problem)))]
pub async fn rejects(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<RejectView>>, Problem> {
    caller.require(&[Role::Admin])?;
    let rows = state.store.recent_rejects(100).await.map_err(|e| Problem::from_store(&e))?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|r| RejectView {
                id: r.id.to_string(),
                source: r.source,
                line_key: r.line_key,
                reason: r.reason,
                payload: r.payload,
                at_ms: r.at_ms,
            })
            .collect(),
    ))
}

/// Releases due holds and retries payouts every `rebate.sweep_interval_ms` until shutdown, on
/// one instance of a cluster at a time (the `rebate-sweep` lease; see [`crate::lease`]).
pub fn spawn(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let interval = state.config.rebate.sweep_interval.max(Duration::from_millis(10));
        let mut rounds = crate::lease::Rounds::new(&state, "rebate-sweep", interval);
        while rounds.next().await {
            match ingest::release_due(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "rebate holds released"),
                Err(e) => tracing::warn!(error = %e, "releasing rebate holds failed; will retry"),
            }
            if let Err(e) = withdraw::retry_approved(&state).await {
                tracing::warn!(error = %e, "retrying payouts failed; will retry");
            }
        }
    })
}
