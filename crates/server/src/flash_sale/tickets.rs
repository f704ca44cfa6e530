//! Tickets: where an accepted purchase is.

use axum::extract::State;
use flashback_store::{FlashReservation, ReservationStatus};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::Path;

/// A ticket: a purchase and where it is.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketView {
    /// The ticket id (the reservation id).
    pub ticket_id: String,
    pub sale_id: String,
    pub quantity: i64,
    /// `queued` (reserved; its order is being created), `ordered` (see `order_id`) or
    /// `released` (given back: the order went unpaid or was cancelled).
    #[schema(pattern = "^(queued|ordered|released)$")]
    pub status: &'static str,
    /// The order, once created.
    pub order_id: Option<String>,
}

impl TicketView {
    fn with_status(r: &FlashReservation, status: &'static str) -> Self {
        Self {
            ticket_id: r.id.to_string(),
            sale_id: r.sale_id.to_string(),
            quantity: r.quantity,
            status,
            order_id: r.order_id.map(|o| o.to_string()),
        }
    }
}

impl From<&FlashReservation> for TicketView {
    fn from(r: &FlashReservation) -> Self {
        let status = match r.status {
            ReservationStatus::Reserved => "queued",
            ReservationStatus::Ordered => "ordered",
            ReservationStatus::Released => "released",
        };
        Self::with_status(r, status)
    }
}

/// Where your purchase is: queued, ordered (with the order id) or released.
#[utoipa::path(get, path = "/api/v1/flash-sales/tickets/{id}", tag = "flash-sales", security(("bearer" = [])),
    params(("id" = String, Path, description = "Ticket id")),
    responses((status = 200, body = TicketView), (status = 404, body = Problem), (status = 503, body = Problem)))]
pub async fn ticket(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TicketView>, Problem> {
    let not_found = || Problem::not_found("ticket_not_found", "ticket");
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let stored = state.store.flash_reservation(id).await.map_err(|e| Problem::from_store(&e))?;
    let r = match stored {
        Some(r) => r,
        // Accepted, not yet in the store (the redis engine imports a few milliseconds later).
        None => state
            .flash
            .engine
            .in_flight(id)
            .await
            .map_err(|_| Problem::unavailable("overloaded", "tickets cannot be read right now; retry shortly"))?
            .ok_or_else(not_found)?,
    };
    if r.user_id != caller.id {
        return Err(not_found());
    }
    Ok(axum::Json(TicketView::from(&r)))
}
