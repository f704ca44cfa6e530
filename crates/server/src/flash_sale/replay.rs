//! `Idempotency-Key` on purchases, with the rules `POST /orders` applies: 1–128 visible ASCII
//! characters, scoped to the buyer, case-sensitive. A retry with the same key, sale and
//! quantity is answered `202` with the same ticket and `Idempotent-Replayed: true`; the same
//! key with another sale or quantity is `422 idempotency_key_reused`.
//!
//! The key is optional here (a purchase without one behaves as it always did). It is written
//! with the reservation in the engine's one atomic step; a retry is looked up in the store
//! first (reservations recorded, on any instance, before any restart), then in the engine
//! (reservations not imported yet), and the engine's reserve step checks it once more.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flashback_core::{IdempotencyKey, SaleId, UserId};
use flashback_store::FlashReservation;

use super::engine::Refusal;
use super::purchase::refuse;
use super::tickets::TicketView;
use crate::AppState;
use crate::http::Problem;
use crate::metrics::ReasonLabel;

/// The header, as `POST /api/v1/orders` reads it.
pub const KEY_HEADER: &str = "idempotency-key";

/// The `Idempotency-Key` header's value, if sent (read alone, like the purchase token).
#[derive(Debug)]
pub struct PurchaseKey(pub Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for PurchaseKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(KEY_HEADER).cloned()))
    }
}

/// The key, if one was sent: `400 invalid_idempotency_key` unless it is 1–128 visible ASCII
/// characters (the codes and rules of `POST /orders`).
pub fn parse_key(raw: Option<&HeaderValue>) -> Result<Option<IdempotencyKey>, Problem> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.to_str().map_err(|_| Problem::bad_request("invalid_idempotency_key", "not visible ASCII"))?;
    IdempotencyKey::parse(text).map(Some).map_err(|e| Problem::bad_request("invalid_idempotency_key", e.to_string()))
}

/// The buyer's purchase made under `key`: from the store, else from the engine (an engine that
/// does not answer counts as not knowing it: the reserve step checks the key again).
pub async fn earlier(state: &AppState, user: UserId, key: &str) -> Result<Option<FlashReservation>, Problem> {
    let stored = state.store.flash_reservation_by_key(user, key).await.map_err(|e| Problem::from_store(&e))?;
    if stored.is_some() {
        return Ok(stored);
    }
    match state.flash.engine.by_key(user, key).await {
        Ok(found) => Ok(found),
        Err(Refusal::KeyBusy) => Err(refuse(state, "key_busy", key_busy())),
        Err(e) => {
            // The reserve step checks the key again, atomically: go on without this look.
            tracing::debug!(error = ?e, "the flash engine cannot look up an idempotency key now");
            Ok(None)
        }
    }
}

/// The answer to a purchase whose key already names `earlier`: the same ticket if it asked for
/// the same (sale and quantity), else `422`.
pub fn answer(state: &AppState, earlier: &FlashReservation, sale: SaleId, quantity: i64) -> Result<Response, Problem> {
    if earlier.sale_id != sale || earlier.quantity != quantity {
        return Err(refuse(
            state,
            "invalid",
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different purchase (another sale or quantity)",
            ),
        ));
    }
    state.metrics.flash_admission.get_or_create(&ReasonLabel { reason: "replayed" }).inc();
    let mut res = (StatusCode::ACCEPTED, axum::Json(TicketView::from(earlier))).into_response();
    res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(res)
}

/// A purchase with the same key is being made right now.
pub fn key_busy() -> Problem {
    Problem::new(StatusCode::CONFLICT, "purchase_in_progress", "a purchase with this Idempotency-Key is in progress")
        .retry_after(1)
}
