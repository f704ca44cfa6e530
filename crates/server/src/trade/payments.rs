//! Payments: a provider trait, the built-in simulated provider, and the signed notification
//! endpoint the provider calls back.
//!
//! Notifications are verified (HMAC-SHA256 over `"{timestamp}.{body}"` with the shared key,
//! and a timestamp within five minutes), applied at most once per payment (compare-and-set on
//! the payment's state, then on the order's), and safe to repeat: providers retry until they
//! get a 2xx, and every step picks up where an earlier attempt stopped. A payment for an order
//! that is no longer waiting (expired, cancelled) is refunded, never fulfilled.

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use flashback_core::{Money, OrderId, OrderState, Transition};
use flashback_store::PaymentState;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::lifecycle::{Actor, apply, visible_order};
use super::views::PaymentView;
use super::{TradeError, now_ms};
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::Path;

/// Header carrying the notification's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "x-flashback-timestamp";
/// Header carrying `v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-flashback-signature";
/// How far a notification's timestamp may be from our clock.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// A payment the provider created.
#[derive(Debug, Clone)]
pub struct ProviderPayment {
    /// The provider's id for it.
    pub payment_id: String,
    /// Where the buyer pays.
    pub pay_url: String,
}

/// A payment provider (Alipay, WeChat Pay, a card processor …).
#[async_trait]
pub trait PaymentProvider: Send + Sync + std::fmt::Debug {
    /// Creates a payment of `amount` for `order`; the provider will notify us when it is paid.
    async fn create(&self, order: OrderId, amount: Money) -> anyhow::Result<ProviderPayment>;
    /// Gives a paid payment back in full.
    async fn refund(&self, payment_id: &str, amount: Money) -> anyhow::Result<()>;
    /// Where the buyer pays an existing payment, if the provider has such a page.
    fn pay_url(&self, _payment_id: &str) -> Option<String> {
        None
    }
}

/// No provider (`trade.payment_provider = "none"`): payments cannot be started.
#[derive(Debug)]
pub struct NoProvider;

#[async_trait]
impl PaymentProvider for NoProvider {
    async fn create(&self, _: OrderId, _: Money) -> anyhow::Result<ProviderPayment> {
        anyhow::bail!("no payment provider is configured (trade.payment_provider = \"none\")")
    }

    async fn refund(&self, _: &str, _: Money) -> anyhow::Result<()> {
        anyhow::bail!("no payment provider is configured (trade.payment_provider = \"none\")")
    }
}

/// What the provider tells us.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// Unique per notification attempt (providers repeat it on retries).
    pub notification_id: String,
    /// The provider's payment id.
    pub payment_id: String,
    /// The order paid for.
    #[schema(value_type = String)]
    pub order_id: OrderId,
    /// The amount paid.
    #[schema(value_type = i64)]
    pub amount_minor: Money,
    /// Always `succeeded` for now.
    pub status: String,
}

/// `v1=<hex>` signature of `"{timestamp}.{body}"`.
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn verify(key: &[u8], headers: &HeaderMap, body: &[u8], now_secs: i64) -> Result<(), TradeError> {
    let bad = |detail: &str| TradeError::Notification("invalid_signature", detail.to_owned());
    let ts: i64 = headers
        .get(TIMESTAMP_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("missing or malformed timestamp"))?;
    let given = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| bad("missing signature"))?;
    let expected = sign(key, ts, body);
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err(bad("signature does not match"));
    }
    if now_secs.abs_diff(ts) > SIGNATURE_TOLERANCE_SECS.unsigned_abs() {
        return Err(TradeError::Notification(
            "stale_signature",
            "the notification is too old or from the future".into(),
        ));
    }
    Ok(())
}

fn view(state: &AppState, payment_id: String, order: OrderId, amount: Money, st: PaymentState) -> PaymentView {
    PaymentView {
        pay_url: state.trade.provider.pay_url(&payment_id),
        payment_id,
        order_id: order,
        amount_minor: amount,
        state: st.as_str(),
    }
}

/// Start paying an unpaid order (its buyer). Asking again returns the same open payment.
#[utoipa::path(post, path = "/api/v1/orders/{id}/payments", tag = "trade", security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses((status = 201, body = PaymentView), (status = 200, body = PaymentView), (status = 404, body = Problem),
        (status = 409, body = Problem),
        (status = 503, body = Problem, description = "the payment provider is unavailable or none is configured")))]
pub async fn create_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let order = visible_order(&state, &caller, &id, Actor::Buyer).await?;
    if order.state != OrderState::PendingPayment {
        return Err(TradeError::WrongState(order.state.as_str()).into());
    }
    let shard = state.shards.for_order(order.id);
    let open = shard.order_payments(order.id).await.map_err(TradeError::from)?;
    if let Some(p) = open.into_iter().find(|p| p.state == PaymentState::Created) {
        return Ok((StatusCode::OK, axum::Json(view(&state, p.payment_id, p.order_id, p.amount, p.state))));
    }
    let created =
        state.trade.provider.create(order.id, order.payable).await.map_err(|e| TradeError::Provider(e.to_string()))?;
    shard.create_payment(&created.payment_id, order.id, order.payable).await.map_err(TradeError::from)?;
    let created = view(&state, created.payment_id, order.id, order.payable, PaymentState::Created);
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// What a notification did.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotifyResult {
    /// `paid` or `refunded`.
    pub result: &'static str,
}

/// The payment provider's signed notification (not for clients).
#[utoipa::path(post, path = "/api/v1/payments/notify", tag = "trade", request_body = Notification,
    params(("x-flashback-timestamp" = i64, Header, description = "Unix seconds"),
        ("x-flashback-signature" = String, Header, description = "v1=<hex HMAC-SHA256 of \"{timestamp}.{body}\">")),
    responses((status = 200, body = NotifyResult), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn notify(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<NotifyResult>, Problem> {
    verify(&state.trade.payment_key, &headers, &body, now_ms() / 1000)?;
    let note: Notification =
        serde_json::from_slice(&body).map_err(|e| Problem::invalid(format!("notification: {e}")))?;
    if note.status != "succeeded" {
        return Err(TradeError::PaymentMismatch(format!("status {:?} is not handled", note.status)).into());
    }
    let result = apply_payment(&state, &note).await?;
    Ok(axum::Json(NotifyResult { result }))
}

/// Applies a verified success notification. Re-entrant: each step checks where an earlier
/// attempt (or a crash) left things.
async fn apply_payment(state: &AppState, note: &Notification) -> Result<&'static str, TradeError> {
    let shard = state.shards.for_order(note.order_id);
    let payment = shard.payment(&note.payment_id).await?.ok_or(TradeError::PaymentNotFound)?;
    if payment.order_id != note.order_id || payment.amount != note.amount_minor {
        return Err(TradeError::PaymentMismatch("order or amount differs from the payment on record".into()));
    }
    shard.set_payment_state(&payment.payment_id, PaymentState::Created, PaymentState::Succeeded).await?;
    state.trade.faults.check("pay.after_payment_recorded")?;
    for _ in 0..3 {
        let payment = shard.payment(&note.payment_id).await?.ok_or(TradeError::PaymentNotFound)?;
        if payment.state == PaymentState::Refunded {
            return Ok("refunded");
        }
        let order = shard.order(note.order_id).await?.ok_or(TradeError::OrderNotFound)?;
        match order.state {
            OrderState::PendingPayment => match apply(state, order.id, Transition::Pay, None).await {
                Ok(_) => return Ok("paid"),
                // Expiry or cancellation won the race; look again.
                Err(TradeError::WrongState(_)) => continue,
                Err(e) => return Err(e),
            },
            OrderState::Paid | OrderState::Shipped | OrderState::Completed => {
                // Paid before (this notification repeated, or a crash came after the order
                // step): make sure the stock step happened too.
                state.store.settle(order.id).await?;
                return Ok("paid");
            }
            OrderState::Cancelled | OrderState::Refunded => {
                refund_one(state, &payment.payment_id, payment.amount, order.id).await?;
                return Ok("refunded");
            }
        }
    }
    Err(TradeError::Unexpected(anyhow::anyhow!("order {} kept changing state", note.order_id)))
}

async fn refund_one(state: &AppState, payment_id: &str, amount: Money, order: OrderId) -> Result<(), TradeError> {
    state.trade.provider.refund(payment_id, amount).await.map_err(|e| TradeError::Provider(e.to_string()))?;
    let shard = state.shards.for_order(order);
    if shard.set_payment_state(payment_id, PaymentState::Succeeded, PaymentState::Refunded).await? {
        tracing::info!(order.id = %order, payment.id = payment_id, "payment refunded");
    }
    Ok(())
}

/// Refunds every succeeded payment of an order (after the order itself was refunded).
pub async fn refund_succeeded_payments(state: &AppState, order: OrderId) -> Result<(), TradeError> {
    let payments = state.shards.for_order(order).order_payments(order).await?;
    for p in payments.into_iter().filter(|p| p.state == PaymentState::Succeeded) {
        refund_one(state, &p.payment_id, p.amount, order).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_key_body_and_recent_time() {
        let key = b"a-key-of-at-least-thirty-two-bytes!!";
        let body = br#"{"payment_id":"p1"}"#;
        let now = 1_800_000_000;
        let mut headers = HeaderMap::new();
        headers.insert(TIMESTAMP_HEADER, now.to_string().parse().unwrap());
        headers.insert(SIGNATURE_HEADER, sign(key, now, body).parse().unwrap());
        assert!(verify(key, &headers, body, now).is_ok());
        assert!(verify(b"another-key-of-thirty-two-bytes!!!!", &headers, body, now).is_err());
        assert!(verify(key, &headers, br#"{"payment_id":"p2"}"#, now).is_err());
        assert!(matches!(
            verify(key, &headers, body, now + SIGNATURE_TOLERANCE_SECS + 1),
            Err(TradeError::Notification("stale_signature", _))
        ));
    }
}
