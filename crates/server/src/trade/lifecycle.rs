//! Moving orders through their life: each step is a compare-and-set on the order's state in
//! its shard, followed by the matching stock step in the catalog store. Should the process die
//! between the two, the sweeper finishes the stock step (see `sweeper.rs`).

use axum::extract::State;
use flashback_core::{OrderId, OrderState, Role, Transition};
use flashback_store::{Order, StoreError};

use super::TradeError;
use super::views::OrderView;
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::Path;

/// Applies `t` to the order (only from `from`, if given) and then its stock consequence.
pub async fn apply(
    state: &AppState,
    id: OrderId,
    t: Transition,
    from: Option<OrderState>,
) -> Result<Order, TradeError> {
    let shard = state.shards.for_order(id);
    let order = match shard.transition(id, t, from, state.ids.write_ids()).await {
        Ok(order) => order,
        Err(StoreError::ConditionFailed(_)) => {
            let now = shard.order(id).await?.ok_or(TradeError::OrderNotFound)?;
            return Err(TradeError::WrongState(now.state.as_str()));
        }
        Err(StoreError::NotFound(_)) => return Err(TradeError::OrderNotFound),
        Err(e) => return Err(e.into()),
    };
    match (t, from) {
        (Transition::Pay, _) => {
            state.trade.faults.check("pay.after_order_paid")?;
            state.store.settle(id).await?;
        }
        (Transition::Cancel | Transition::Expire, _) => {
            state.trade.faults.check("cancel.after_order_cancelled")?;
            state.store.release(id, false).await?;
            if let Some(r) = order.flash_reservation {
                crate::flash_sale::orders::give_back(state, r).await?;
            }
        }
        (Transition::Refund, Some(OrderState::Paid)) => {
            // Refunded before shipping: the goods never left, so they go back on sale.
            state.trade.faults.check("refund.after_order_refunded")?;
            state.store.release(id, true).await?;
            if let Some(r) = order.flash_reservation {
                crate::flash_sale::orders::give_back(state, r).await?;
            }
        }
        _ => {}
    }
    Ok(order)
}

/// Who may act on an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The buyer (admins too).
    Buyer,
    /// The selling merchant (admins too).
    Seller,
    /// Buyer, seller or admin.
    Any,
}

/// The order, if `caller` may see it as `actor`; someone else's order is "not found".
pub async fn visible_order(state: &AppState, caller: &Caller, raw_id: &str, actor: Actor) -> Result<Order, TradeError> {
    let id = OrderId::parse(raw_id).map_err(|_| TradeError::OrderNotFound)?;
    let order = state.shards.for_order(id).order(id).await?.ok_or(TradeError::OrderNotFound)?;
    let is_buyer = order.buyer == caller.id;
    let is_seller = caller.role == Role::Merchant && caller.merchant == Some(order.merchant);
    let allowed = caller.role == Role::Admin
        || match actor {
            Actor::Buyer => is_buyer,
            Actor::Seller => is_seller,
            Actor::Any => is_buyer || is_seller,
        };
    if allowed { Ok(order) } else { Err(TradeError::OrderNotFound) }
}

async fn step(
    state: AppState,
    caller: Caller,
    id: String,
    actor: Actor,
    t: Transition,
) -> Result<axum::Json<OrderView>, Problem> {
    let order = visible_order(&state, &caller, &id, actor).await?;
    let moved = apply(&state, order.id, t, None).await?;
    Ok(axum::Json(OrderView::from(&moved)))
}

/// Cancel an unpaid order (its buyer): stock and points go back.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "trade", security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<OrderView>, Problem> {
    step(state, caller, id, Actor::Buyer, Transition::Cancel).await
}

/// Mark a paid order shipped (its merchant).
#[utoipa::path(post, path = "/api/v1/orders/{id}/ship", tag = "trade", security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn ship(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<OrderView>, Problem> {
    caller.require(&[Role::Merchant, Role::Admin])?;
    step(state, caller, id, Actor::Seller, Transition::Ship).await
}

/// Confirm receipt of a shipped order (its buyer); points are awarded asynchronously.
#[utoipa::path(post, path = "/api/v1/orders/{id}/complete", tag = "trade", security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<OrderView>, Problem> {
    step(state, caller, id, Actor::Buyer, Transition::Complete).await
}

/// Refund a paid or shipped order in full (its merchant, or an admin): the payment is given
/// back, redeemed points are returned, and stock is restored if it had not shipped.
#[utoipa::path(post, path = "/api/v1/orders/{id}/refund", tag = "trade", security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn refund(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<OrderView>, Problem> {
    caller.require(&[Role::Merchant, Role::Admin])?;
    let order = visible_order(&state, &caller, &id, Actor::Seller).await?;
    let from = match order.state {
        OrderState::Paid | OrderState::Shipped => order.state,
        other => return Err(TradeError::WrongState(other.as_str()).into()),
    };
    let refunded = apply(&state, order.id, Transition::Refund, Some(from)).await?;
    super::payments::refund_succeeded_payments(&state, order.id).await?;
    Ok(axum::Json(OrderView::from(&refunded)))
}
