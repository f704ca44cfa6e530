//! Purchase tokens, for sales that require one.

use axum::extract::State;
use axum::http::StatusCode;
use flashback_core::SaleId;
use serde::Serialize;
use utoipa::ToSchema;

use super::purchase::sale;
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::Path;
use crate::trade::now_ms;

/// A purchase token, issued to a signed-in buyer within `flash_sale.token_window_ms` before
/// the start of a sale that requires one.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Send as `X-Purchase-Token`.
    pub token: String,
}

/// Get your purchase token for a sale that requires one.
#[utoipa::path(post, path = "/api/v1/flash-sales/{id}/token", tag = "flash-sales", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sale id")),
    responses((status = 200, body = TokenView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TokenView>, Problem> {
    let not_found = || Problem::not_found("sale_not_found", "flash sale");
    let sale_id = SaleId::parse(&id).map_err(|_| not_found())?;
    let sale = sale(&state, sale_id).await?.ok_or_else(not_found)?;
    let now = now_ms();
    if !sale.require_token {
        return Err(Problem::new(StatusCode::CONFLICT, "token_not_required", "this sale needs no purchase token"));
    }
    let issued_from = sale.starts_at_ms.saturating_sub(state.flash.token_window_ms);
    if now < issued_from {
        let wait = u64::try_from(issued_from.saturating_sub(now).saturating_add(999) / 1000).unwrap_or(1);
        return Err(Problem::new(StatusCode::CONFLICT, "token_not_yet", "tokens are issued shortly before the start")
            .retry_after(wait));
    }
    if now >= sale.ends_at_ms {
        return Err(Problem::new(StatusCode::GONE, "sale_ended", "the sale has ended"));
    }
    Ok(axum::Json(TokenView { token: state.flash.token(sale.id, caller.id) }))
}
