//! The purchase path: the admission funnel in front of the engine's atomic reserve step.
//!
//! In order, cheapest first, each refusal counted in `flashback_flash_admission_total{reason}`:
//! global rate → per-sale rate → per-buyer rate → per-IP rate (all per instance) → the
//! cluster-wide global and per-sale rates (in Redis, when configured) → the local sold-out
//! flag → the sale's window → the purchase token (when the sale requires one) → the engine
//! (limit, stock, durability). Only a durable reservation is answered `202` with its ticket,
//! or — when the engine's answer was lost and could not be settled — a `pending` ticket that
//! settles later (see [`super::redis_reserve`]); a `503` always means nothing was taken.
//!
//! A purchase with an `Idempotency-Key` ([`super::replay`]) is first looked up by its key, so
//! a retry of one that went through gets its ticket before the sold-out flag or the window
//! could refuse it.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flashback_core::SaleId;
use flashback_store::{FlashReservation, FlashSale, ReservationStatus, SaleState};
use governor::clock::Clock;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::cluster_limit::Verdict;
use super::engine::{Refusal, Reserved};
use super::replay::{self, PurchaseKey};
use super::tickets::TicketView;
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::client_ip::ClientIp;
use crate::http::extract::Path;
use crate::metrics::ReasonLabel;
use crate::trade::now_ms;

pub use super::runtime::{FlashRuntime, PurchaseToken, TOKEN_HEADER};

/// An optional body: how many units (default 1).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseBody {
    /// Units, 1 to the sale's per-user limit (at most 100).
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: Option<i64>,
}

pub(super) fn refuse(state: &AppState, reason: &'static str, problem: Problem) -> Problem {
    state.metrics.flash_admission.get_or_create(&ReasonLabel { reason }).inc();
    problem
}

fn too_many(state: &AppState, reason: &'static str, wait: Duration) -> Problem {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    refuse(
        state,
        reason,
        Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many purchase attempts").retry_after(secs),
    )
}

pub(super) async fn sale(state: &AppState, id: SaleId) -> Result<Option<FlashSale>, Problem> {
    let flash = &state.flash;
    if let Some(s) = flash.sales.get(&id).await {
        return Ok(Some(s));
    }
    let found = state.store.flash_sale(id).await.map_err(|e| Problem::from_store(&e))?;
    if let Some(s) = &found {
        flash.sales.insert(id, s.clone()).await;
    }
    Ok(found)
}

/// Try to buy. `202` means the reservation is durable (or, with status `pending`, that its
/// outcome is being settled); poll the ticket for the order.
#[utoipa::path(post, path = "/api/v1/flash-sales/{id}/purchase", tag = "flash-sales", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sale id"),
        ("x-purchase-token" = Option<String>, Header, description = "Required when the sale requires tokens"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,128}$", description = "Optional; 1–128 visible ASCII characters, \
            unique per purchase. A retry with the same key (same sale, same quantity) answers 202 with the \
            same ticket and `Idempotent-Replayed: true` instead of buying again, on any instance and after \
            restarts; the same key with another sale or quantity is 422 `idempotency_key_reused`.")),
    request_body(content = PurchaseBody, description = "Optional; quantity defaults to 1"),
    responses((status = 202, body = TicketView, description = "Reserved (`queued`), a replay of the key's \
            purchase, or `pending`: the engine's answer was lost in a stall; the ticket settles to `queued` \
            or `cancelled`"),
        (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 410, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem),
        (status = 503, body = Problem, description = "Nothing was taken; retry after `Retry-After`")))]
pub async fn purchase(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    PurchaseToken(token): PurchaseToken,
    PurchaseKey(key): PurchaseKey,
    body: Bytes,
) -> Result<Response, Problem> {
    let flash = &state.flash;
    // The limiter's own clock: building a clock per request costs a CPUID instruction,
    // which traps to the hypervisor on a virtual machine.
    let now = flash.global.clock().now();
    if let Err(n) = flash.global.check() {
        return Err(too_many(&state, "rate_global", n.wait_time_from(now)));
    }
    let not_found = || Problem::not_found("sale_not_found", "flash sale");
    let sale_id = SaleId::parse(&id).map_err(|_| not_found())?;
    if let Err(n) = flash.per_sale.check_key(&sale_id) {
        return Err(too_many(&state, "rate_sale", n.wait_time_from(now)));
    }
    if let Err(n) = flash.per_user.check_key(&caller.id) {
        return Err(too_many(&state, "rate_user", n.wait_time_from(now)));
    }
    if let Err(n) = flash.per_ip.check_key(&ip) {
        return Err(too_many(&state, "rate_ip", n.wait_time_from(now)));
    }
    if let Some(cluster) = &flash.cluster {
        match cluster.check(sale_id).await {
            Verdict::Admit => {}
            Verdict::Wait(wait) => return Err(too_many(&state, "rate_cluster", wait)),
            Verdict::Unavailable => {
                state.metrics.flash_admission.get_or_create(&ReasonLabel { reason: "cluster_limit_unavailable" }).inc();
            }
        }
    }
    let key = replay::parse_key(key.as_ref()).map_err(|p| refuse(&state, "invalid", p))?;
    let quantity = if let Some(key) = &key {
        // A retry of a purchase that went through is answered with its ticket, whatever has
        // happened to the sale since (sold out, ended).
        let quantity = quantity(&state, &body)?;
        if let Some(earlier) = replay::earlier(&state, caller.id, key.as_str()).await? {
            return replay::answer(&state, &earlier, sale_id, quantity);
        }
        quantity
    } else {
        // Before the body and the sale are read: once sold out, most attempts end here.
        if flash.sold_out.contains_key(&sale_id) {
            return Err(refuse(&state, "sold_out", sold_out()));
        }
        quantity(&state, &body)?
    };
    let sale = sale(&state, sale_id).await?.ok_or_else(not_found)?;
    let now_ms = now_ms();
    if now_ms < sale.starts_at_ms {
        let wait = u64::try_from(sale.starts_at_ms.saturating_sub(now_ms).saturating_add(999) / 1000).unwrap_or(1);
        return Err(refuse(
            &state,
            "not_started",
            Problem::new(StatusCode::CONFLICT, "sale_not_started", "the sale has not started").retry_after(wait),
        ));
    }
    if now_ms >= sale.ends_at_ms || sale.state == SaleState::Ended {
        return Err(refuse(&state, "ended", ended()));
    }
    if sale.require_token {
        let given = token.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
        if !bool::from(flash.token(sale.id, caller.id).as_bytes().ct_eq(given.as_bytes())) {
            return Err(refuse(
                &state,
                "token",
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "purchase_token_required",
                    "send the purchase token issued for you",
                ),
            ));
        }
    }
    if !(1..=sale.per_user_limit).contains(&quantity) {
        return Err(refuse(&state, "invalid", Problem::invalid(format!("quantity: 1 to {}", sale.per_user_limit))));
    }
    let reservation = FlashReservation {
        id: state.ids.write_ids().event,
        sale_id: sale.id,
        user_id: caller.id,
        quantity,
        status: ReservationStatus::Reserved,
        order_id: None,
        created_at_ms: now_ms,
        idempotency_key: key.map(String::from),
    };
    match flash.engine.reserve(&sale, reservation.clone(), now_ms).await {
        Ok(Reserved::New) => {
            state.metrics.flash_admission.get_or_create(&ReasonLabel { reason: "accepted" }).inc();
            Ok((StatusCode::ACCEPTED, axum::Json(TicketView::from(&reservation))).into_response())
        }
        Ok(Reserved::Earlier(earlier)) => replay::answer(&state, &earlier, sale.id, quantity),
        Ok(Reserved::Pending) => {
            state.metrics.flash_admission.get_or_create(&ReasonLabel { reason: "pending" }).inc();
            Ok((StatusCode::ACCEPTED, axum::Json(TicketView::pending(&reservation))).into_response())
        }
        Err(Refusal::SoldOut) => {
            flash.sold_out.insert(sale.id, ()).await;
            Err(refuse(&state, "sold_out", sold_out()))
        }
        Err(Refusal::LimitReached) => Err(refuse(
            &state,
            "limit",
            Problem::new(StatusCode::CONFLICT, "limit_reached", format!("at most {} per buyer", sale.per_user_limit)),
        )),
        Err(Refusal::Closed) => Err(refuse(&state, "ended", ended())),
        Err(Refusal::KeyBusy) => Err(refuse(&state, "key_busy", replay::key_busy())),
        Err(Refusal::Unavailable(why)) => {
            tracing::warn!(sale.id = %sale.id, error = %why, "flash reserve unavailable");
            Err(refuse(&state, "unavailable", Problem::unavailable("overloaded", "the sale is busy; retry shortly")))
        }
    }
}

/// The units asked for: the optional body's `quantity`, 1 without one.
fn quantity(state: &AppState, body: &Bytes) -> Result<i64, Problem> {
    if body.is_empty() {
        return Ok(1);
    }
    let b: PurchaseBody =
        serde_json::from_slice(body).map_err(|e| refuse(state, "invalid", Problem::invalid(e.to_string())))?;
    // No sale allows more than 100 a buyer (its own limit is checked once it is read).
    match b.quantity.unwrap_or(1) {
        q @ 1..=super::MAX_PER_USER => Ok(q),
        _ => Err(refuse(state, "invalid", Problem::invalid("quantity: 1 to the sale's per-user limit (at most 100)"))),
    }
}

fn sold_out() -> Problem {
    Problem::new(StatusCode::CONFLICT, "sold_out", "no units left (some may come back if orders go unpaid)")
}

fn ended() -> Problem {
    Problem::new(StatusCode::GONE, "sale_ended", "the sale has ended")
}
