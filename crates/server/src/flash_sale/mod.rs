//! Flash sales: merchants carve a sale's stock out of a product's inventory; the public lists
//! sales and reads one with its remaining stock; ended sales give their unsold units back.
//!
//! The purchase path (admission funnel, engines, asynchronous orders) builds on this.

pub mod audit;
pub mod cluster_limit;
pub mod engine;
pub mod memory_engine;
mod memory_import;
pub mod memory_record;
pub mod orders;
mod pending;
pub mod purchase;
pub mod redis_engine;
mod redis_reserve;
pub mod replay;
pub mod runtime;
pub mod sql_engine;
pub mod tickets;
pub mod token;
pub mod views;

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use flashback_core::{Cursor, PageLimit, Role, SaleId};
use flashback_store::{FlashSale, NewFlashSale, SaleState, StoreError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::{Json, Path, Query};
use crate::trade::now_ms;
use views::{CreateSale, SalePage, SaleQuery, SaleView};

/// How long a sale's public view (its remaining stock) may lag.
pub const VIEW_TTL: Duration = Duration::from_secs(1);
/// The most units any sale lets one buyer take (its own `per_user_limit` is 1 to this).
pub const MAX_PER_USER: i64 = 100;
/// The longest a sale may run: its stock is out of the product's inventory meanwhile.
pub const MAX_DURATION_MS: i64 = 7 * 24 * 3600 * 1000;
/// No sale starts or ends before 2000-01-01T00:00:00Z: an earlier time is a client's mistake
/// (seconds for milliseconds, a zero, `i64::MIN`).
pub const EARLIEST_MS: i64 = 946_684_800_000;
/// Nor after 9999-12-31T23:59:59.999Z, the last time RFC 3339 (a four-digit year) can write:
/// every sale's times can be shown.
pub const LATEST_MS: i64 = 253_402_300_799_999;

/// How much longer a paced worker rests after a step that did `done` items in `took`, so that
/// its items take 1 / `per_sec` seconds each (`per_sec` 0: no pacing). The order worker and
/// the `memory` engine's importer both follow a storm at their pace this way (peak shaving).
pub(crate) fn paced_rest(done: usize, per_sec: u32, took: Duration) -> Duration {
    if per_sec == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(done as f64 / f64::from(per_sec)).saturating_sub(took)
}

/// The public views of sales, each cached for [`VIEW_TTL`].
pub type SaleViews = moka::future::Cache<SaleId, SaleView>;

/// A cache of sale views.
pub fn view_cache() -> SaleViews {
    moka::future::Cache::builder().max_capacity(10_000).time_to_live(VIEW_TTL).build()
}

/// The flash-sale routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_sale, list_sales))
        .routes(routes!(get_sale))
        .routes(routes!(purchase::purchase))
        .routes(routes!(token::token))
        .routes(routes!(tickets::ticket))
}

fn invalid(detail: impl Into<std::borrow::Cow<'static, str>>) -> Problem {
    Problem::invalid(detail)
}

/// Create a flash sale (the product's merchant, or an admin). Its stock is taken from the
/// product's available inventory at once; unsold units return when the sale ends.
#[utoipa::path(post, path = "/api/v1/flash-sales", tag = "flash-sales", security(("bearer" = [])), request_body = CreateSale,
    responses((status = 201, body = SaleView), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn create_sale(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateSale>,
) -> Result<impl IntoResponse, Problem> {
    caller.require(&[Role::Merchant, Role::Admin])?;
    let now = now_ms();
    let (starts, ends) = body.window(now).map_err(invalid)?;
    if !(1..=1_000_000).contains(&body.stock) {
        return Err(invalid("stock: 1 to 1,000,000 units"));
    }
    if !(1..=MAX_PER_USER).contains(&body.per_user_limit) {
        return Err(invalid("per_user_limit: 1 to 100 units"));
    }
    let product = state
        .store
        .product(body.product_id)
        .await
        .map_err(|e| Problem::from_store(&e))?
        .ok_or_else(|| Problem::not_found("product_not_found", "product"))?;
    if caller.role == Role::Merchant && caller.merchant != Some(product.merchant_id) {
        return Err(Problem::new(StatusCode::FORBIDDEN, "not_owner", "this product belongs to another merchant"));
    }
    let new = NewFlashSale {
        id: state.ids.sale(),
        merchant_id: product.merchant_id,
        product_id: product.id,
        sale_price: body.sale_price_minor,
        stock: body.stock,
        per_user_limit: body.per_user_limit,
        starts_at_ms: starts,
        ends_at_ms: ends,
        require_token: body.require_token,
    };
    let sale = state.store.create_sale(new).await.map_err(|e| match e {
        StoreError::ConditionFailed(_) => Problem::new(
            StatusCode::CONFLICT,
            "insufficient_stock",
            format!("the product has {} units available", product.inventory.available.get()),
        ),
        StoreError::NotFound(_) => Problem::not_found("product_not_found", "product"),
        other => Problem::from_store(&other),
    })?;
    state.products.invalidate(&product.id, None).await;
    Ok((StatusCode::CREATED, axum::Json(SaleView::new(&sale, 0, now))))
}

/// Flash sales, newest first.
#[utoipa::path(get, path = "/api/v1/flash-sales", tag = "flash-sales", params(SaleQuery),
    responses((status = 200, body = SalePage), (status = 400, body = Problem)))]
pub async fn list_sales(
    State(state): State<AppState>,
    Query(q): Query<SaleQuery>,
) -> Result<axum::Json<SalePage>, Problem> {
    let bad = |d: String| Problem::bad_request("invalid_query", d);
    let sale_state = match q.state.as_deref() {
        None => None,
        Some("open") => Some(SaleState::Open),
        Some("ended") => Some(SaleState::Ended),
        Some(_) => return Err(bad("state: open or ended".into())),
    };
    let after = q.cursor.as_deref().map(Cursor::decode).transpose().map_err(|e| bad(e.to_string()))?;
    let limit = q.limit.map(PageLimit::try_from).transpose().map_err(|e| bad(e.to_string()))?.unwrap_or_default();
    let sales = state.store.flash_sales(sale_state, after, limit).await.map_err(|e| Problem::from_store(&e))?;
    let mut items = Vec::with_capacity(sales.len());
    for sale in &sales {
        items.push(view(&state, sale.id).await?.unwrap_or_else(|| SaleView::new(sale, 0, now_ms())));
    }
    let next_cursor = (sales.len() == usize::from(limit.get()))
        .then(|| sales.last().map(|s| Cursor { before_id: s.id.get() }.encode()))
        .flatten();
    Ok(axum::Json(SalePage { items, next_cursor }))
}

/// The public view of a sale, from the one-second cache.
async fn view(state: &AppState, id: SaleId) -> Result<Option<SaleView>, Problem> {
    if let Some(v) = state.sale_views.get(&id).await {
        return Ok(Some(v));
    }
    let Some(sale) = state.store.flash_sale(id).await.map_err(|e| Problem::from_store(&e))? else { return Ok(None) };
    let taken = taken_units(state, &sale).await.map_err(|e| Problem::from_store(&e))?;
    let v = SaleView::new(&sale, taken, now_ms());
    state.sale_views.insert(id, v.clone()).await;
    Ok(Some(v))
}

/// The units of `sale` taken so far. The engine's own book, when it keeps one, is ahead of the
/// store by the accepted reservations not imported yet; an engine that does not answer (Redis
/// down) leaves the store's count, which lags by those.
pub async fn taken_units(state: &AppState, sale: &FlashSale) -> Result<i64, StoreError> {
    match state.flash.engine.book(sale.id).await {
        Ok(Some((remaining, _))) => Ok(sale.stock.saturating_sub(remaining).max(0)),
        _ => state.store.sale_taken_units(sale.id).await,
    }
}

/// One sale with its remaining stock (which may lag by up to one second).
#[utoipa::path(get, path = "/api/v1/flash-sales/{id}", tag = "flash-sales",
    params(("id" = String, Path, description = "Sale id")),
    responses((status = 200, body = SaleView), (status = 404, body = Problem)))]
pub async fn get_sale(State(state): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, Problem> {
    let not_found = || Problem::not_found("sale_not_found", "flash sale");
    let id = SaleId::parse(&id).map_err(|_| not_found())?;
    let v = view(&state, id).await?.ok_or_else(not_found)?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=1"));
    Ok((headers, axum::Json(v)))
}

/// Ends every open sale past its end, returning unsold units to inventory; returns how many.
pub async fn end_due_sales(state: &AppState) -> Result<u32, StoreError> {
    // A purchase accepted just before the end may still be on its way to durable storage; a
    // request cannot outlive the request timeout, so wait that long past the end.
    let grace = i64::try_from(state.config.http.request_timeout.as_millis()).unwrap_or(i64::MAX);
    let now = now_ms().saturating_sub(grace);
    let mut ended = 0;
    for id in state.store.sales_due_to_end(now, 100).await? {
        match state.flash.engine.close(id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(sale.id = %id, "flash sale over; waiting for its last reservations to be recorded");
                continue;
            }
            Err(e) => {
                tracing::warn!(sale.id = %id, error = ?e, "flash sale over but its engine did not answer; will retry");
                continue;
            }
        }
        if let Some(units) = state.store.end_sale(id, now).await? {
            state.flash.engine.forget(id).await;
            tracing::info!(sale.id = %id, returned_units = units, "flash sale ended");
            state.sale_views.invalidate(&id).await;
            if let Some(sale) = state.store.flash_sale(id).await? {
                // The product's stock changed: its cached detail must not show the old number.
                state.products.invalidate(&sale.product_id, None).await;
            }
            ended += 1;
        }
    }
    Ok(ended)
}
