//! `GET /api/v1/analytics/...`: the rollups for operators (admins only).

use axum::extract::State;
use flashback_core::{Account, Role, UserId};
use serde::Deserialize;

use super::error::AnalyticsError;
use super::snapshot::{self, FlashPanel, Pending, PendingUser};
use super::views::{self, Granularity, Series, SeriesPoint, Summary, TopSku};
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::Query;

const MINUTE: i64 = 60_000;

fn limit(raw: Option<u32>, default: u32) -> Result<u32, AnalyticsError> {
    let l = raw.unwrap_or(default);
    if (1..=100).contains(&l) { Ok(l) } else { Err(AnalyticsError::BadLimit) }
}

/// Times a range may name: from the Unix epoch to the end of year 9999, Unix ms. Anything
/// else is refused before any work is sized by it.
pub const TIMES: std::ops::RangeInclusive<i64> = 0..=253_402_300_799_999;

/// `[from_ms, to_ms)`, within [`TIMES`] and at most `max_ms` long. Defaults: `to_ms` now,
/// `from_ms` the start of the `points`-th `step` before the one holding `to_ms` (so `points`
/// whole steps, none before the epoch).
fn range(
    from: Option<i64>,
    to: Option<i64>,
    step: i64,
    points: i64,
    max_ms: i64,
) -> Result<(i64, i64), AnalyticsError> {
    if from.into_iter().chain(to).any(|t| !TIMES.contains(&t)) {
        return Err(AnalyticsError::TimeOutOfRange);
    }
    let to = to.unwrap_or_else(|| crate::trade::now_ms() + 1);
    let from = from.unwrap_or_else(|| {
        let back = step.saturating_mul(points - 1);
        ((to - 1).div_euclid(step) * step).saturating_sub(back).max(*TIMES.start())
    });
    if to <= from {
        return Err(AnalyticsError::BadRange);
    }
    match to.checked_sub(from) {
        Some(span) if span <= max_ms => Ok((from, to)),
        _ => Err(AnalyticsError::RangeTooLong(max_ms)),
    }
}

fn max_range(state: &AppState) -> i64 {
    i64::try_from(state.analytics.config().max_range.as_millis()).unwrap_or(i64::MAX)
}

/// Which day.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// `YYYY-MM-DD` in the business day's offset (default today).
    #[param(format = Date)]
    pub day: Option<String>,
}

/// A day's totals and top SKUs (default today).
#[utoipa::path(get, path = "/api/v1/analytics/summary", tag = "operations", security(("bearer" = [])),
    params(SummaryQuery), responses((status = 200, body = Summary), (status = 400, body = Problem),
        (status = 403, body = Problem)))]
pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<SummaryQuery>,
) -> Result<axum::Json<Summary>, Problem> {
    caller.require(&[Role::Admin])?;
    let live = &state.analytics;
    let from_ms = match q.day.as_deref() {
        None => live.day_start(crate::trade::now_ms()),
        Some(d) => {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            let date = time::Date::parse(d, format).map_err(|_| AnalyticsError::BadDay)?;
            let midnight = date.midnight().assume_utc().unix_timestamp() * 1000;
            midnight - i64::from(live.config().utc_offset_minutes) * MINUTE
        }
    };
    let to_ms = from_ms + 1440 * MINUTE;
    let totals = state.store.rollup_total(from_ms, to_ms).await.map_err(AnalyticsError::from)?;
    let top_skus = views::top_skus(state.store.top_skus(from_ms, to_ms, 10).await.map_err(AnalyticsError::from)?);
    Ok(axum::Json(Summary { from_ms, to_ms, totals, top_skus }))
}

/// A series' range.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// `second` or `minute` (default).
    pub granularity: Option<Granularity>,
    /// Start, Unix ms (default: 60 points before `to_ms`).
    #[param(minimum = 0, maximum = 253_402_300_799_999_i64)]
    pub from_ms: Option<i64>,
    /// End, exclusive, Unix ms (default now).
    #[param(minimum = 0, maximum = 253_402_300_799_999_i64)]
    pub to_ms: Option<i64>,
}

/// GMV and paid orders per second (recent, from memory) or per minute (from the rollups).
#[utoipa::path(get, path = "/api/v1/analytics/gmv", tag = "operations", security(("bearer" = [])),
    params(SeriesQuery), responses((status = 200, body = Series), (status = 400, body = Problem),
        (status = 403, body = Problem)))]
pub async fn gmv(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<SeriesQuery>,
) -> Result<axum::Json<Series>, Problem> {
    caller.require(&[Role::Admin])?;
    let granularity = q.granularity.unwrap_or(Granularity::Minute);
    let points = match granularity {
        Granularity::Second => {
            let kept = i64::from(state.analytics.config().seconds_kept) * 1000;
            let (from, to) = range(q.from_ms, q.to_ms, 1000, 60, kept)?;
            let series = state.analytics.seconds().series(from, to);
            series
                .into_iter()
                .map(|p| SeriesPoint { at_ms: p.at_ms, paid_orders: p.paid_orders, gmv_minor: p.gmv_minor })
                .collect()
        }
        Granularity::Minute => {
            let (from, to) = range(q.from_ms, q.to_ms, MINUTE, 60, max_range(&state))?;
            let rows = state.store.rollup_minutes(from, to).await.map_err(AnalyticsError::from)?;
            snapshot::fill_minutes(rows, from, to)
                .into_iter()
                .map(|m| SeriesPoint { at_ms: m.minute_ms, paid_orders: m.paid_orders, gmv_minor: m.gmv_minor })
                .collect()
        }
    };
    Ok(axum::Json(Series { granularity, points }))
}

/// A top list's range and length.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// Start, Unix ms (default: start of today).
    #[param(minimum = 0, maximum = 253_402_300_799_999_i64)]
    pub from_ms: Option<i64>,
    /// End, exclusive, Unix ms (default now).
    #[param(minimum = 0, maximum = 253_402_300_799_999_i64)]
    pub to_ms: Option<i64>,
    /// 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// The best-selling products by value over a range (default today).
#[utoipa::path(get, path = "/api/v1/analytics/top-skus", tag = "operations", security(("bearer" = [])),
    params(TopQuery), responses((status = 200, body = [TopSku]), (status = 400, body = Problem),
        (status = 403, body = Problem)))]
pub async fn top_skus(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<TopQuery>,
) -> Result<axum::Json<Vec<TopSku>>, Problem> {
    caller.require(&[Role::Admin])?;
    let limit = limit(q.limit, 10)?;
    let now = crate::trade::now_ms();
    let from = q.from_ms.or(Some(state.analytics.day_start(now)));
    let (from, to) = range(from, q.to_ms, 1, 1, max_range(&state))?;
    Ok(axum::Json(views::top_skus(state.store.top_skus(from, to, limit).await.map_err(AnalyticsError::from)?)))
}

/// A list's length.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// Open flash sales with stock, units sold and sell-through, newest first.
#[utoipa::path(get, path = "/api/v1/analytics/flash-sales", tag = "operations", security(("bearer" = [])),
    params(LimitQuery), responses((status = 200, body = [FlashPanel]), (status = 400, body = Problem),
        (status = 403, body = Problem)))]
pub async fn flash_sales(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<LimitQuery>,
) -> Result<axum::Json<Vec<FlashPanel>>, Problem> {
    caller.require(&[Role::Admin])?;
    let limit = limit(q.limit, 20)?;
    Ok(axum::Json(snapshot::flash_panels(&state, limit).await.map_err(AnalyticsError::from)?))
}

/// Whose pending rebates.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PendingQuery {
    /// Only this user (their pending balance).
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub user_id: Option<String>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// Pending rebates: the total and the users with the most, or one user's.
#[utoipa::path(get, path = "/api/v1/analytics/pending-rebates", tag = "operations", security(("bearer" = [])),
    params(PendingQuery), responses((status = 200, body = Pending), (status = 400, body = Problem),
        (status = 403, body = Problem)))]
pub async fn pending_rebates(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PendingQuery>,
) -> Result<axum::Json<Pending>, Problem> {
    caller.require(&[Role::Admin])?;
    let limit = limit(q.limit, 20)?;
    if let Some(u) = q.user_id.as_deref() {
        let user = UserId::parse(u).map_err(|_| AnalyticsError::BadUser)?;
        let pending = state.store.balance(Account::Pending(user)).await.map_err(AnalyticsError::from)?;
        let username =
            state.store.user(user).await.map_err(AnalyticsError::from)?.map(|u| u.username.as_str().to_owned());
        let top = vec![PendingUser { user_id: user.to_string(), username, pending_minor: pending }];
        return Ok(axum::Json(Pending { total_minor: pending, top }));
    }
    Ok(axum::Json(snapshot::pending(&state, limit).await.map_err(AnalyticsError::from)?))
}
