//! The stats API over the tracking rollups and day tables (admins): PV and UV of an object, a
//! module or everything over a day range (UV merged from the days' sketches), top objects, one
//! day hour by hour, and a funnel. UV from sketches is within ±4.9 % (three standard errors of
//! a 4,096-register HyperLogLog; see `flashback_core::hll`); hourly UV and funnels are exact.

use std::collections::HashMap;

use axum::extract::State;
use flashback_core::hll::Sketch;
use flashback_core::{Day, Role};
use flashback_store::track::{EventFilter, HourCount, Scope};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::Query;

/// Longest day range the rollup queries take.
const MAX_DAYS: u32 = 366;
/// Longest day range a funnel reads (it reads the day tables).
const MAX_FUNNEL_DAYS: u32 = 31;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stats)).routes(routes!(top)).routes(routes!(hourly)).routes(routes!(funnel))
}

/// Which events: an action, and optionally one module or one object.
#[derive(Debug)]
struct Selection {
    action: Option<String>,
    module: Option<String>,
    object_type: Option<String>,
    object_id: Option<String>,
}

macro_rules! selection_of {
    ($q:expr) => {
        Selection {
            action: $q.action.clone(),
            module: $q.module.clone(),
            object_type: $q.object_type.clone(),
            object_id: $q.object_id.clone(),
        }
    };
}

/// The query strings.
mod query {
    use serde::Deserialize;
    use utoipa::IntoParams;

    /// A day range and a selection.
    #[derive(Debug, Deserialize, IntoParams)]
    pub struct RangeQuery {
        /// First day, `YYYY-MM-DD`.
        #[param(format = Date)]
        pub(super) from: String,
        /// Last day, inclusive.
        #[param(format = Date)]
        pub(super) to: String,
        /// The action (`view`); required by stats and top.
        #[param(min_length = 1, max_length = 64)]
        pub(super) action: Option<String>,
        /// Only this module.
        #[param(min_length = 1, max_length = 64)]
        pub(super) module: Option<String>,
        /// Only this object's type (with `object_id`).
        #[param(min_length = 1, max_length = 32)]
        pub(super) object_type: Option<String>,
        /// Only this object (with `object_type`).
        #[param(min_length = 1, max_length = 64)]
        pub(super) object_id: Option<String>,
        /// Top-N: how many objects (1–100, default 10).
        #[param(minimum = 1, maximum = 100)]
        pub(super) limit: Option<u32>,
        /// Funnel: the actions in order, comma-separated (default `view,add_to_cart,order`).
        pub(super) steps: Option<String>,
    }

    /// Query of one day.
    #[derive(Debug, Deserialize, IntoParams)]
    pub struct DayQuery {
        /// The day, `YYYY-MM-DD`.
        #[param(format = Date)]
        pub(super) day: String,
        /// The action (`view`).
        #[param(min_length = 1, max_length = 64)]
        pub(super) action: Option<String>,
        /// Only this module.
        #[param(min_length = 1, max_length = 64)]
        pub(super) module: Option<String>,
        /// Only this object's type (with `object_id`).
        #[param(min_length = 1, max_length = 32)]
        pub(super) object_type: Option<String>,
        /// Only this object (with `object_type`).
        #[param(min_length = 1, max_length = 64)]
        pub(super) object_id: Option<String>,
    }
}

use query::{DayQuery, RangeQuery};

/// One day's figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayView {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Events.
    pub pv: i64,
    /// Distinct visitors (estimated).
    pub uv: u64,
}

/// PV and UV over a range.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
    /// The action counted.
    pub action: String,
    /// `object`, `module` or `all`.
    pub scope: &'static str,
    /// The object (`type:id`), the module, or empty.
    pub key: String,
    /// Events over the range (exact).
    pub pv: i64,
    /// Distinct visitors over the range (merged sketches).
    pub uv: u64,
    /// Bound on UV's relative error (0.049: within ±4.9 %).
    pub uv_relative_error: f64,
    /// Each day with events.
    pub days: Vec<DayView>,
}

/// An object with its figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopObject {
    /// Its type.
    pub object_type: String,
    /// Its id.
    pub object_id: String,
    /// Events over the range.
    pub pv: i64,
    /// Distinct visitors (estimated).
    pub uv: u64,
}

/// The top objects.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopView {
    /// Most events first.
    pub objects: Vec<TopObject>,
}

/// One day, hour by hour (all 24, empty hours as zero).
#[derive(Debug, Serialize, ToSchema)]
pub struct HourlyView {
    /// The day.
    pub day: String,
    /// The action counted.
    pub action: String,
    /// Hours 0–23 from the day's start.
    #[schema(value_type = Vec<Object>)]
    pub hours: Vec<HourCount>,
}

/// One step of a funnel.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunnelStep {
    /// The action.
    pub action: String,
    /// Visitors who did every step so far, in order.
    pub visitors: u64,
}

/// A funnel.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunnelView {
    /// The steps in order.
    pub steps: Vec<FunnelStep>,
}

fn day(field: &str, s: &str) -> Result<Day, Problem> {
    Day::parse(s).map_err(|_| Problem::bad_request("invalid_day", format!("{field}: must be a date as YYYY-MM-DD")))
}

/// A top list's length (1–100, default 10); checked wherever it is sent.
fn limit(raw: Option<u32>) -> Result<u32, Problem> {
    let limit = raw.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(Problem::bad_request("invalid_query", "limit: must be 1–100"));
    }
    Ok(limit)
}

fn range(from: &str, to: &str, max: u32) -> Result<(Day, Day), Problem> {
    let (from, to) = (day("from", from)?, day("to", to)?);
    match from.span_to(to) {
        0 => Err(Problem::bad_request("invalid_range", "from must not be after to")),
        n if n > max => Err(Problem::bad_request("range_too_long", format!("at most {max} days at once"))),
        _ => Ok((from, to)),
    }
}

fn action(s: &Selection) -> Result<String, Problem> {
    s.action
        .clone()
        .filter(|a| !a.is_empty() && a.chars().count() <= 64)
        .ok_or_else(|| Problem::bad_request("invalid_query", "action: required (1–64 bytes)"))
}

fn filter(s: &Selection) -> Result<EventFilter, Problem> {
    for (name, value, max) in
        [("module", &s.module, 64), ("object_type", &s.object_type, 32), ("object_id", &s.object_id, 64)]
    {
        if value.as_ref().is_some_and(|v| v.is_empty() || v.chars().count() > max) {
            return Err(Problem::bad_request("invalid_query", format!("{name}: 1 to {max} characters")));
        }
    }
    let object = match (&s.object_type, &s.object_id) {
        (Some(t), Some(id)) => Some((t.clone(), id.clone())),
        (None, None) => None,
        _ => return Err(Problem::bad_request("invalid_query", "object_type and object_id go together")),
    };
    if object.is_some() && s.module.is_some() {
        return Err(Problem::bad_request("invalid_query", "choose a module or an object, not both"));
    }
    Ok(EventFilter { module: s.module.clone(), object })
}

fn scope_of(f: &EventFilter) -> (Scope, String) {
    match (&f.module, &f.object) {
        (_, Some((t, id))) => (Scope::Object, format!("{t}:{id}")),
        (Some(m), None) => (Scope::Module, m.clone()),
        (None, None) => (Scope::All, String::new()),
    }
}

fn store_error(e: &flashback_store::StoreError) -> Problem {
    Problem::from_store(e)
}

/// PV and UV of everything, a module or an object over a day range.
#[utoipa::path(get, path = "/api/v1/track/stats", tag = "tracking", params(RangeQuery), security(("bearer" = [])),
    responses((status = 200, body = StatsView), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
) -> Result<axum::Json<StatsView>, Problem> {
    caller.require(&[Role::Admin])?;
    let (from, to) = range(&q.from, &q.to, MAX_DAYS)?;
    limit(q.limit)?;
    let action = action(&selection_of!(q))?;
    let (scope, key) = scope_of(&filter(&selection_of!(q))?);
    let counts = state.track.store.counts(scope, &key, &action, from, to).await.map_err(|e| store_error(&e))?;
    let mut all = Sketch::default();
    let days = counts
        .iter()
        .map(|c| {
            all.merge(&c.sketch);
            DayView { day: c.day.to_string(), pv: c.pv, uv: c.sketch.estimate() }
        })
        .collect();
    Ok(axum::Json(StatsView {
        from: from.to_string(),
        to: to.to_string(),
        action,
        scope: scope.as_str(),
        key,
        pv: counts.iter().map(|c| c.pv).sum(),
        uv: all.estimate(),
        uv_relative_error: Sketch::RELATIVE_ERROR_BOUND,
        days,
    }))
}

/// The objects with the most events for an action over a day range.
#[utoipa::path(get, path = "/api/v1/track/top", tag = "tracking", params(RangeQuery), security(("bearer" = [])),
    responses((status = 200, body = TopView), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn top(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
) -> Result<axum::Json<TopView>, Problem> {
    caller.require(&[Role::Admin])?;
    let (from, to) = range(&q.from, &q.to, MAX_DAYS)?;
    let action = action(&selection_of!(q))?;
    let limit = limit(q.limit)?;
    if q.module.is_some() || q.object_id.is_some() {
        return Err(Problem::bad_request("invalid_query", "top takes an action and optionally an object_type"));
    }
    let prefix = q.object_type.as_ref().map(|t| format!("{t}:"));
    let store = &state.track.store;
    let rows =
        store.top(Scope::Object, &action, from, to, prefix.as_deref(), limit).await.map_err(|e| store_error(&e))?;
    let mut objects = Vec::with_capacity(rows.len());
    for (key, pv) in rows {
        let mut sketch = Sketch::default();
        for c in store.counts(Scope::Object, &key, &action, from, to).await.map_err(|e| store_error(&e))? {
            sketch.merge(&c.sketch);
        }
        let (object_type, object_id) = key.split_once(':').unwrap_or((key.as_str(), ""));
        objects.push(TopObject {
            object_type: object_type.to_owned(),
            object_id: object_id.to_owned(),
            pv,
            uv: sketch.estimate(),
        });
    }
    Ok(axum::Json(TopView { objects }))
}

/// One day hour by hour: events and exact distinct visitors.
#[utoipa::path(get, path = "/api/v1/track/hourly", tag = "tracking", params(DayQuery), security(("bearer" = [])),
    responses((status = 200, body = HourlyView), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn hourly(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<DayQuery>,
) -> Result<axum::Json<HourlyView>, Problem> {
    caller.require(&[Role::Admin])?;
    let d = day("day", &q.day)?;
    let action = action(&selection_of!(q))?;
    let f = filter(&selection_of!(q))?;
    let found = state.track.store.hourly(d, &action, &f).await.map_err(|e| store_error(&e))?;
    let mut hours: Vec<HourCount> = (0..24).map(|hour| HourCount { hour, pv: 0, uv: 0 }).collect();
    for h in found {
        if let Some(slot) = hours.get_mut(usize::from(h.hour)) {
            *slot = h;
        }
    }
    Ok(axum::Json(HourlyView { day: d.to_string(), action, hours }))
}

/// Visitors through each step of a funnel over a day range: a visitor counts at step k when
/// they did steps 1..k in that order (each at or after the previous one).
#[utoipa::path(get, path = "/api/v1/track/funnel", tag = "tracking", params(RangeQuery), security(("bearer" = [])),
    responses((status = 200, body = FunnelView), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn funnel(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
) -> Result<axum::Json<FunnelView>, Problem> {
    caller.require(&[Role::Admin])?;
    let (from, to) = range(&q.from, &q.to, MAX_FUNNEL_DAYS)?;
    limit(q.limit)?;
    let steps: Vec<String> =
        q.steps.as_deref().unwrap_or("view,add_to_cart,order").split(',').map(|s| s.trim().to_owned()).collect();
    if !(2..=5).contains(&steps.len()) || steps.iter().any(|s| s.is_empty() || s.len() > 64) {
        return Err(Problem::bad_request("invalid_query", "steps: 2–5 comma-separated actions"));
    }
    let f = filter(&selection_of!(q))?;
    let mut by_visitor: HashMap<String, Vec<(i64, usize)>> = HashMap::new();
    let mut d = from;
    while d <= to {
        for (visitor, action, ts) in state.track.store.steps(d, &steps, &f).await.map_err(|e| store_error(&e))? {
            if let Some(i) = steps.iter().position(|s| *s == action) {
                by_visitor.entry(visitor).or_default().push((ts, i));
            }
        }
        d = d.next();
    }
    Ok(axum::Json(FunnelView { steps: funnel_counts(&steps, by_visitor) }))
}

fn funnel_counts(steps: &[String], by_visitor: HashMap<String, Vec<(i64, usize)>>) -> Vec<FunnelStep> {
    let mut reached = vec![0u64; steps.len()];
    for (_, mut events) in by_visitor {
        events.sort_unstable();
        let mut stage = 0;
        for (_, step) in events {
            if step == stage {
                reached[stage] += 1;
                stage += 1;
                if stage == steps.len() {
                    break;
                }
            }
        }
    }
    steps.iter().zip(reached).map(|(action, visitors)| FunnelStep { action: action.clone(), visitors }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_funnel_counts_steps_taken_in_order() {
        let steps: Vec<String> = ["view", "cart", "order"].map(String::from).to_vec();
        let mut v = HashMap::new();
        v.insert("a".to_owned(), vec![(1, 0), (2, 1), (3, 2)]); // all three
        v.insert("b".to_owned(), vec![(5, 1), (6, 0)]); // cart before view: only the view counts
        v.insert("c".to_owned(), vec![(1, 0), (1, 0), (9, 2)]); // no cart: stops at view
        v.insert("d".to_owned(), vec![(4, 2), (5, 1)]); // never viewed
        let counts: Vec<u64> = funnel_counts(&steps, v).iter().map(|s| s.visitors).collect();
        assert_eq!(counts, vec![3, 1, 1]);
    }
}
