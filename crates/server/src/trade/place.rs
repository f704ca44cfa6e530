//! Placing an order: a saga across the catalog store (stock) and the buyer's shard (order,
//! points, event).
//!
//! 1. A replayed `Idempotency-Key` returns the order it made (or 422 if the body differs).
//! 2. Reserve every line's stock in one catalog transaction, keyed by the new order id.
//! 3. Write the order, its lines, the points redemption and `order.created` in one shard
//!    transaction.
//! 4. If step 3 fails, release the reservation (compensation). If the process dies between
//!    2 and 3, the sweeper finds the held reservation without an order and releases it.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use flashback_core::{IdempotencyKey, Money, OrderState, Role};
use flashback_store::{Created, NewOrder, Order, OrderLine, StoreError};
use sha2::{Digest, Sha256};

use super::views::{OrderView, PlaceOrder};
use super::{TradeError, now_ms};
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::Json;

/// The most lines one order may have.
pub const MAX_LINES: usize = 50;

/// Place an order. Send an `Idempotency-Key` header: retrying with the same key and body
/// returns the same order (200, `Idempotent-Replayed: true`) instead of placing another.
#[utoipa::path(post, path = "/api/v1/orders", tag = "trade", security(("bearer" = [])), request_body = PlaceOrder,
    params(("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,128}$", description = "1–128 visible ASCII characters, unique per order attempt")),
    responses((status = 201, body = OrderView), (status = 200, body = OrderView, description = "replayed"),
        (status = 400, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn place_order(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<PlaceOrder>,
) -> Result<impl IntoResponse, Problem> {
    caller.require(&[Role::User, Role::Merchant, Role::Admin])?;
    let key = idempotency_key(&headers)?;
    let (order, replayed) = place(&state, caller, key, body).await?;
    let mut res = (if replayed { StatusCode::OK } else { StatusCode::CREATED }, axum::Json(OrderView::from(&order)))
        .into_response();
    if replayed {
        res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(res)
}

fn idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey, Problem> {
    let raw = headers
        .get("idempotency-key")
        .ok_or_else(|| Problem::bad_request("idempotency_key_required", "send an Idempotency-Key header"))?;
    let text = raw.to_str().map_err(|_| Problem::bad_request("invalid_idempotency_key", "not visible ASCII"))?;
    IdempotencyKey::parse(text).map_err(|e| Problem::bad_request("invalid_idempotency_key", e.to_string()))
}

/// A stable fingerprint of what was asked, to tell a replay from a different request.
fn request_hash(body: &PlaceOrder) -> String {
    let mut lines: Vec<(i64, i64)> = body.lines.iter().map(|l| (l.product_id.get(), l.quantity.get())).collect();
    lines.sort_unstable();
    let canonical = serde_json::json!({ "lines": lines, "points": body.points.get() }).to_string();
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn check_lines(body: &PlaceOrder) -> Result<(), TradeError> {
    if body.lines.is_empty() || body.lines.len() > MAX_LINES {
        return Err(TradeError::Invalid(format!("lines: 1 to {MAX_LINES} lines")));
    }
    let mut seen = HashSet::new();
    if !body.lines.iter().all(|l| seen.insert(l.product_id)) {
        return Err(TradeError::Invalid("lines: each product at most once; add up the quantities".into()));
    }
    Ok(())
}

/// Runs the saga; returns the order and whether it was a replay.
pub async fn place(
    state: &AppState,
    caller: Caller,
    key: IdempotencyKey,
    body: PlaceOrder,
) -> Result<(Order, bool), TradeError> {
    check_lines(&body)?;
    let buyer = caller.id;
    let shard = state.shards.for_buyer(buyer);
    let hash = request_hash(&body);
    if let Some((order, earlier)) = shard.idempotent(buyer, key.as_str()).await? {
        return if earlier == hash { Ok((order, true)) } else { Err(TradeError::KeyReused) };
    }

    let order_id = state.ids.order(buyer);
    let wanted: Vec<_> = body.lines.iter().map(|l| (l.product_id, l.quantity)).collect();
    let reserved = state.store.reserve(order_id, &wanted).await?;
    state.trade.faults.check("place.after_reserve")?;

    let written = write_order(state, order_id, buyer, &reserved, &body, key, hash).await;
    match written {
        Ok(result) => {
            state.trade.faults.check("place.after_create")?;
            Ok(result)
        }
        Err(e) => {
            // Compensation. If this fails too, the sweeper releases the orphan later.
            if let Err(release) = state.store.release(order_id, false).await {
                tracing::warn!(order.id = %order_id, error = %release, "compensation failed; the sweeper will release");
            }
            Err(e)
        }
    }
}

async fn write_order(
    state: &AppState,
    order_id: flashback_core::OrderId,
    buyer: flashback_core::UserId,
    reserved: &[flashback_store::ReservedLine],
    body: &PlaceOrder,
    key: IdempotencyKey,
    hash: String,
) -> Result<(Order, bool), TradeError> {
    let merchant = reserved.first().map(|l| l.merchant_id).ok_or_else(|| TradeError::Invalid("no lines".into()))?;
    if reserved.iter().any(|l| l.merchant_id != merchant) {
        return Err(TradeError::Invalid("lines: all products of one order must come from one merchant".into()));
    }
    let mut total = Money::ZERO;
    for l in reserved {
        let line =
            l.unit_price.checked_mul(l.quantity.get()).ok_or_else(|| TradeError::Invalid("total too large".into()))?;
        total = total.checked_add(line).ok_or_else(|| TradeError::Invalid("total too large".into()))?;
    }
    let points_value = Money::from_minor(body.points.get()).map_err(|e| TradeError::Invalid(e.to_string()))?;
    let payable = total
        .checked_sub(points_value)
        .ok_or_else(|| TradeError::Invalid("points: more than the order's total".into()))?;
    let now = now_ms();
    let timeout = i64::try_from(state.config.trade.payment_timeout.as_millis()).unwrap_or(i64::MAX);
    let order = Order {
        id: order_id,
        buyer,
        merchant,
        state: OrderState::PendingPayment,
        lines: reserved
            .iter()
            .map(|l| OrderLine {
                product_id: l.product_id,
                sku: l.sku.clone(),
                title: l.title.clone(),
                quantity: l.quantity,
                unit_price: l.unit_price,
            })
            .collect(),
        total,
        points_used: body.points,
        payable,
        expires_at_ms: now.saturating_add(timeout),
        created_at_ms: now,
        updated_at_ms: now,
        flash_reservation: None,
    };
    let new = NewOrder { order, idempotency: Some((key.as_str().to_owned(), hash.clone())) };
    match state.shards.for_buyer(buyer).create_order(new, state.ids.write_ids()).await {
        Ok(Created::New(order)) => Ok((order, false)),
        Ok(Created::Existing { order, request_hash }) => {
            // A concurrent request with the same key won; ours gives its stock back.
            state.store.release(order_id, false).await?;
            if request_hash == hash { Ok((order, true)) } else { Err(TradeError::KeyReused) }
        }
        Err(StoreError::ConditionFailed("points")) => Err(TradeError::InsufficientPoints),
        Err(e) => Err(e.into()),
    }
}
