//! Tickets: where an accepted purchase is, including one answered while its outcome was in
//! doubt (`pending`), which a read settles when the engine can say (`queued` or `cancelled`).

use axum::extract::State;
use flashback_store::{AttemptState, FlashReservation, ReservationStatus};
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
    /// `queued` (reserved; its order is being created), `ordered` (see `order_id`),
    /// `released` (given back: the order went unpaid or was cancelled), `pending` (the engine's
    /// answer was lost in a stall: not yet known whether it reserved; read the ticket again) or
    /// `cancelled` (a pending purchase that never reserved: nothing was taken).
    #[schema(pattern = "^(queued|ordered|released|pending|cancelled)$")]
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

    /// A purchase answered while its outcome was in doubt.
    pub fn pending(attempt: &FlashReservation) -> Self {
        Self::with_status(attempt, "pending")
    }

    /// A pending purchase settled as never reserved.
    pub fn cancelled(attempt: &FlashReservation) -> Self {
        Self::with_status(attempt, "cancelled")
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

fn busy() -> Problem {
    Problem::unavailable("overloaded", "tickets cannot be read right now; retry shortly")
}

/// The reservation `id`, from the store or, not imported yet, from the engine.
async fn reservation(state: &AppState, id: i64) -> Result<Option<FlashReservation>, Problem> {
    if let Some(r) = state.store.flash_reservation(id).await.map_err(|e| Problem::from_store(&e))? {
        return Ok(Some(r));
    }
    state.flash.engine.in_flight(id).await.map_err(|_| busy())
}

/// Where your purchase is: queued, ordered (with the order id), released, pending or cancelled.
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
    let found = reservation(&state, id).await;
    if let Ok(Some(r)) = &found {
        return if r.user_id == caller.id { Ok(axum::Json(TicketView::from(r))) } else { Err(not_found()) };
    }
    // Not a reservation (yet): perhaps a purchase answered as pending.
    let attempt = state.store.flash_attempt(id).await.map_err(|e| Problem::from_store(&e))?;
    let Some(attempt) = attempt.filter(|a| a.reservation.user_id == caller.id) else {
        found?;
        return Err(not_found());
    };
    let a = &attempt.reservation;
    let reserved = match attempt.state {
        AttemptState::Cancelled => false,
        AttemptState::Reserved => true,
        AttemptState::Pending => match state.flash.engine.settle(a).await {
            Ok(reserved) => reserved,
            Err(e) => {
                tracing::debug!(ticket = id, error = ?e, "a pending flash purchase cannot be settled yet");
                return Ok(axum::Json(TicketView::pending(a)));
            }
        },
    };
    if !reserved {
        return Ok(axum::Json(TicketView::cancelled(a)));
    }
    // Reserved: read it where it is now (it may have been imported since the first read).
    let now = reservation(&state, id).await.ok().flatten();
    Ok(axum::Json(now.as_ref().map_or_else(|| TicketView::with_status(a, "queued"), TicketView::from)))
}
