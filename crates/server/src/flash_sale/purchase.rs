//! The purchase path: the admission funnel in front of the engine's atomic reserve step.
//!
//! In order, cheapest first, each refusal counted in `flashback_flash_admission_total{reason}`:
//! global rate → per-sale rate → per-buyer rate → per-IP rate (all per instance) → the
//! cluster-wide global and per-sale rates (in Redis, when configured) → the local sold-out
//! flag → the sale's window → the purchase token (when the sale requires one) → the engine
//! (limit, stock, durability). Only a durable reservation is answered `202` with its ticket.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use flashback_core::{SaleId, UserId};
use flashback_store::{FlashReservation, FlashSale, ReservationStatus, SaleState};
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::cluster_limit::Verdict;
use super::engine::{Engine, Refusal};
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::client_ip::ClientIp;
use crate::http::extract::Path;
use crate::metrics::ReasonLabel;
use crate::trade::now_ms;

/// Header carrying a purchase token, for sales that require one.
pub const TOKEN_HEADER: &str = "x-purchase-token";

/// The purchase token header's value, if sent (read alone: axum's `HeaderMap` extractor copies
/// every header of every purchase).
#[derive(Debug)]
pub struct PurchaseToken(pub Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for PurchaseToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(TOKEN_HEADER).cloned()))
    }
}

/// The funnel's limiters, the sold-out flags and the engine.
#[derive(Debug)]
pub struct FlashRuntime {
    /// The reserve engine.
    pub engine: std::sync::Arc<dyn Engine>,
    /// The limits shared by the cluster, when Redis is configured.
    cluster: Option<super::cluster_limit::ClusterLimits>,
    global: DefaultDirectRateLimiter,
    per_sale: DefaultKeyedRateLimiter<SaleId>,
    per_user: DefaultKeyedRateLimiter<UserId>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Sales known sold out here; forgotten after a second, or at once when stock comes back.
    pub sold_out: moka::future::Cache<SaleId, ()>,
    /// Sale definitions, cached briefly so the hot path does not read the store.
    pub sales: moka::future::Cache<SaleId, FlashSale>,
    token_key: Vec<u8>,
    token_window_ms: i64,
}

fn brief<V: Clone + Send + Sync + 'static>(ttl: Duration) -> moka::future::Cache<SaleId, V> {
    moka::future::Cache::builder().max_capacity(100_000).time_to_live(ttl).build()
}

fn per_second(n: u32) -> Quota {
    let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(n).allow_burst(n)
}

impl FlashRuntime {
    /// The funnel for `config`, in front of `engine`.
    pub fn new(
        config: &crate::config::FlashSaleConfig,
        engine: std::sync::Arc<dyn Engine>,
        cluster: Option<super::cluster_limit::ClusterLimits>,
        token_key: Vec<u8>,
    ) -> Self {
        Self {
            engine,
            cluster,
            global: RateLimiter::direct(per_second(config.global_per_sec)),
            per_sale: RateLimiter::keyed(per_second(config.per_sale_per_sec)),
            per_user: RateLimiter::keyed(per_second(config.per_user_per_sec)),
            per_ip: RateLimiter::keyed(per_second(config.per_ip_per_sec)),
            sold_out: brief(Duration::from_secs(1)),
            sales: brief(Duration::from_secs(1)),
            token_key,
            token_window_ms: i64::try_from(config.token_window.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The purchase token of `user` for `sale`.
    pub fn token(&self, sale: SaleId, user: UserId) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.token_key).unwrap_or_else(|_| unreachable!("any key length"));
        mac.update(format!("{sale}:{user}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Forgets idle limiter keys; run periodically.
    pub fn prune(&self) {
        self.per_sale.retain_recent();
        self.per_user.retain_recent();
        self.per_ip.retain_recent();
    }
}

/// An optional body: how many units (default 1).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseBody {
    /// Units, 1 to the sale's per-user limit.
    pub quantity: Option<i64>,
}

/// A ticket: an accepted purchase whose order is being created.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketView {
    /// The ticket id (the reservation id).
    pub ticket_id: String,
    pub sale_id: String,
    pub quantity: i64,
    /// `queued` (order being created), `ordered` (see `order_id`) or `released`.
    pub status: &'static str,
    /// The order, once created.
    pub order_id: Option<String>,
}

impl From<&FlashReservation> for TicketView {
    fn from(r: &FlashReservation) -> Self {
        Self {
            ticket_id: r.id.to_string(),
            sale_id: r.sale_id.to_string(),
            quantity: r.quantity,
            status: match r.status {
                ReservationStatus::Reserved => "queued",
                ReservationStatus::Ordered => "ordered",
                ReservationStatus::Released => "released",
            },
            order_id: r.order_id.map(|o| o.to_string()),
        }
    }
}

fn refuse(state: &AppState, reason: &'static str, problem: Problem) -> Problem {
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

async fn sale(state: &AppState, id: SaleId) -> Result<Option<FlashSale>, Problem> {
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

/// Try to buy. `202` means the reservation is durable; poll the ticket for the order.
#[utoipa::path(post, path = "/api/v1/flash-sales/{id}/purchase", tag = "flash-sales", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sale id"),
        ("x-purchase-token" = Option<String>, Header, description = "Required when the sale requires tokens")),
    request_body(content = PurchaseBody, description = "Optional; quantity defaults to 1"),
    responses((status = 202, body = TicketView), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 410, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem),
        (status = 503, body = Problem)))]
pub async fn purchase(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    PurchaseToken(token): PurchaseToken,
    body: Bytes,
) -> Result<impl IntoResponse, Problem> {
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
    // Before the body and the sale are read: once sold out, most attempts end here.
    if flash.sold_out.contains_key(&sale_id) {
        return Err(refuse(&state, "sold_out", sold_out()));
    }
    let quantity = if body.is_empty() {
        1
    } else {
        let b: PurchaseBody =
            serde_json::from_slice(&body).map_err(|e| refuse(&state, "invalid", Problem::invalid(e.to_string())))?;
        b.quantity.unwrap_or(1)
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
        return Err(refuse(&state, "ended", Problem::new(StatusCode::GONE, "sale_ended", "the sale has ended")));
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
        idempotency_key: None,
    };
    match flash.engine.reserve(&sale, reservation.clone(), now_ms).await {
        Ok(()) => {
            state.metrics.flash_admission.get_or_create(&ReasonLabel { reason: "accepted" }).inc();
            Ok((StatusCode::ACCEPTED, axum::Json(TicketView::from(&reservation))))
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
        Err(Refusal::Closed) => {
            Err(refuse(&state, "ended", Problem::new(StatusCode::GONE, "sale_ended", "the sale has ended")))
        }
        Err(Refusal::Unavailable(why)) => {
            tracing::warn!(sale.id = %sale.id, error = %why, "flash reserve unavailable");
            Err(refuse(&state, "unavailable", Problem::unavailable("overloaded", "the sale is busy; retry shortly")))
        }
    }
}

fn sold_out() -> Problem {
    Problem::new(StatusCode::CONFLICT, "sold_out", "no units left (some may come back if orders go unpaid)")
}

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

/// Where your purchase is: queued, ordered (with the order id) or released.
#[utoipa::path(get, path = "/api/v1/flash-sales/tickets/{id}", tag = "flash-sales", security(("bearer" = [])),
    params(("id" = String, Path, description = "Ticket id")),
    responses((status = 200, body = TicketView), (status = 404, body = Problem)))]
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
