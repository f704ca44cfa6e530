//! Listing withdrawals: a user's own, and every user's for review (admins), in keyset pages
//! newest first with a state filter.

use axum::extract::State;
use flashback_core::{Role, UserId};
use flashback_store::WithdrawalState;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::withdraw::WithdrawalView;
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::Query;

/// Listing filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WithdrawalQuery {
    /// Only this state: `requested`, `approved`, `paid`, `rejected` or `failed`, or `all`.
    /// Your own list shows all by default; the review list, `requested`.
    #[param(pattern = "^(requested|approved|paid|rejected|failed|all)?$")]
    pub state: Option<String>,
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub cursor: Option<String>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// A page of withdrawals, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalPage {
    pub items: Vec<WithdrawalView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

async fn list(
    state: &AppState,
    user: Option<UserId>,
    q: &WithdrawalQuery,
    default_state: Option<WithdrawalState>,
) -> Result<WithdrawalPage, Problem> {
    let bad = |d: &str| Problem::bad_request("invalid_query", d.to_owned());
    let st = match q.state.as_deref() {
        None => default_state,
        Some("all") => None,
        Some(s) => Some(
            WithdrawalState::parse(s)
                .ok_or_else(|| bad("state: requested, approved, paid, rejected, failed or all"))?,
        ),
    };
    let before = q
        .cursor
        .as_deref()
        .map(|b| b.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| bad("cursor: not one we issued")))
        .transpose()?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(bad("limit: 1 to 100"));
    }
    let rows = state.store.withdrawals(user, st, before, limit).await.map_err(|e| Problem::from_store(&e))?;
    let full = rows.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = full.then(|| rows.last().map(|w| w.id.to_string())).flatten();
    Ok(WithdrawalPage { items: rows.iter().map(WithdrawalView::from).collect(), next_cursor })
}

/// Your withdrawals, newest first, in every state unless `state` says one.
#[utoipa::path(get, path = "/api/v1/me/withdrawals", tag = "rebates", security(("bearer" = [])),
    params(WithdrawalQuery), responses((status = 200, body = WithdrawalPage), (status = 400, body = Problem)))]
pub async fn mine(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<WithdrawalQuery>,
) -> Result<axum::Json<WithdrawalPage>, Problem> {
    Ok(axum::Json(list(&state, Some(caller.id), &q, None).await?))
}

/// Withdrawals of every user (admins), newest first: those waiting for review (`requested`)
/// unless `state` says another, or `all`.
#[utoipa::path(get, path = "/api/v1/admin/withdrawals", tag = "rebates", security(("bearer" = [])),
    params(WithdrawalQuery), responses((status = 200, body = WithdrawalPage), (status = 400, body = Problem)))]
pub async fn all(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<WithdrawalQuery>,
) -> Result<axum::Json<WithdrawalPage>, Problem> {
    caller.require(&[Role::Admin])?;
    Ok(axum::Json(list(&state, None, &q, Some(WithdrawalState::Requested)).await?))
}
