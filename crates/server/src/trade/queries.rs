//! Order queries: a buyer's own (one shard), one order, and merchant and back-office lists
//! across every shard, merged by id (which orders by time) under one keyset cursor.

use axum::extract::State;
use flashback_core::{Cursor, PageLimit, Role};
use flashback_store::{Order, OrderFilter, Read};
use futures::future::try_join_all;

use super::TradeError;
use super::lifecycle::{Actor, visible_order};
use super::views::{OrderPage, OrderQuery, OrderView, PointsView};
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::{Path, Query};

fn bad_query(detail: impl Into<std::borrow::Cow<'static, str>>) -> Problem {
    Problem::bad_request("invalid_query", detail)
}

/// Parses a time bound: Unix milliseconds or RFC 3339.
fn time_ms(field: &str, raw: &str) -> Result<i64, Problem> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    crate::catalog::views::parse_rfc3339_ms(raw)
        .ok_or_else(|| bad_query(format!("{field}: Unix milliseconds or an RFC 3339 time")))
}

fn parse(q: &OrderQuery) -> Result<(OrderFilter, Option<Cursor>, PageLimit), Problem> {
    let filter = OrderFilter {
        state: q
            .state
            .as_deref()
            .map(str::parse::<flashback_core::OrderState>)
            .transpose()
            .map_err(|e| bad_query(e.to_string()))?,
        from_ms: q.from.as_deref().map(|v| time_ms("from", v)).transpose()?,
        to_ms: q.to.as_deref().map(|v| time_ms("to", v)).transpose()?,
        ..OrderFilter::default()
    };
    let cursor = q.cursor.as_deref().map(Cursor::decode).transpose().map_err(|e| bad_query(e.to_string()))?;
    let limit = q.limit.map(PageLimit::try_from).transpose().map_err(|e| bad_query(e.to_string()))?.unwrap_or_default();
    Ok((filter, cursor, limit))
}

fn page(mut orders: Vec<Order>, limit: PageLimit) -> OrderPage {
    orders.sort_by_key(|o| std::cmp::Reverse(o.id));
    orders.truncate(usize::from(limit.get()));
    let next_cursor = (orders.len() == usize::from(limit.get()))
        .then(|| orders.last().map(|o| Cursor { before_id: o.id.get() }.encode()))
        .flatten();
    OrderPage { items: orders.iter().map(OrderView::from).collect(), next_cursor }
}

/// Orders matching `filter` on every shard, newest first. Each shard returns at most `limit`
/// rows below the cursor; the merge keeps the newest `limit`. The cost is one indexed query per
/// shard per page: fine for tens of shards. At larger scale a merchant-side copy of the order
/// index (fed by order events, keyed by merchant) replaces the fan-out.
pub async fn across_shards(
    state: &AppState,
    filter: OrderFilter,
    cursor: Option<Cursor>,
    limit: PageLimit,
) -> Result<OrderPage, TradeError> {
    let pages =
        try_join_all(state.shards.all().iter().map(|s| s.orders(filter, cursor, limit, Read::ReplicaOk))).await?;
    Ok(page(pages.into_iter().flatten().collect(), limit))
}

/// Your orders, newest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "trade", security(("bearer" = [])), params(OrderQuery),
    responses((status = 200, body = OrderPage), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn my_orders(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<OrderQuery>,
) -> Result<axum::Json<OrderPage>, Problem> {
    let (mut filter, cursor, limit) = parse(&q)?;
    filter.buyer = Some(caller.id);
    // A buyer always sees their own new orders: read the primary.
    let rows = state
        .shards
        .for_buyer(caller.id)
        .orders(filter, cursor, limit, Read::Primary)
        .await
        .map_err(TradeError::from)?;
    Ok(axum::Json(page(rows, limit)))
}

/// One order: its buyer, its merchant or an admin may read it.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "trade", security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem)))]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<OrderView>, Problem> {
    let order = visible_order(&state, &caller, &id, Actor::Any).await?;
    Ok(axum::Json(OrderView::from(&order)))
}

/// Your merchant's orders across every shard, newest first.
#[utoipa::path(get, path = "/api/v1/merchant/orders", tag = "trade", security(("bearer" = [])), params(OrderQuery),
    responses((status = 200, body = OrderPage), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn merchant_orders(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<OrderQuery>,
) -> Result<axum::Json<OrderPage>, Problem> {
    caller.require(&[Role::Merchant])?;
    let merchant = caller
        .merchant
        .ok_or_else(|| Problem::new(axum::http::StatusCode::FORBIDDEN, "forbidden", "this account runs no merchant"))?;
    let (mut filter, cursor, limit) = parse(&q)?;
    filter.merchant = Some(merchant);
    Ok(axum::Json(across_shards(&state, filter, cursor, limit).await?))
}

/// Every order across every shard, newest first (admins).
#[utoipa::path(get, path = "/api/v1/admin/orders", tag = "trade", security(("bearer" = [])), params(OrderQuery),
    responses((status = 200, body = OrderPage), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn all_orders(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<OrderQuery>,
) -> Result<axum::Json<OrderPage>, Problem> {
    caller.require(&[Role::Admin])?;
    let (filter, cursor, limit) = parse(&q)?;
    Ok(axum::Json(across_shards(&state, filter, cursor, limit).await?))
}

/// Your points balance.
#[utoipa::path(get, path = "/api/v1/me/points", tag = "trade", security(("bearer" = [])),
    responses((status = 200, body = PointsView), (status = 401, body = Problem)))]
pub async fn my_points(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<PointsView>, Problem> {
    let balance = state.shards.for_buyer(caller.id).points(caller.id).await.map_err(TradeError::from)?;
    Ok(axum::Json(PointsView { balance }))
}
