//! The built-in simulated payment provider, for development, demos and tests: it "takes"
//! payments without money moving. Completing one (after `trade.simulated_payment_delay_ms`, or
//! through its pay link) sends a signed notification over HTTP to our own notify endpoint, as
//! a real provider would.
//!
//! Its pay link is a capability: `/api/v1/payments/simulated/{id}/complete?sig=…`, signed with
//! the payment key and handed only to the buyer who started the payment, so knowing a payment
//! id is not enough to mark an order paid. The route exists only while
//! `trade.payment_provider = "simulated"`, which the server announces with a warning at start
//! and refuses in `environment = "production"`.

use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use flashback_core::{Money, OrderId};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::payments::{Notification, PaymentProvider, ProviderPayment, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use super::{TradeError, now_ms};
use crate::AppState;
use crate::http::Problem;
use crate::http::extract::{Path, Query};

/// The stand-in provider.
#[derive(Debug, Clone)]
pub struct SimulatedProvider {
    key: Vec<u8>,
    notify_url: std::sync::Arc<OnceLock<String>>,
    delay: Duration,
    client: reqwest::Client,
}

impl SimulatedProvider {
    /// A provider signing with `key`, completing payments after `delay` (zero: only through
    /// the pay link).
    pub fn new(key: Vec<u8>, delay: Duration) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        Self { key, notify_url: std::sync::Arc::default(), delay, client }
    }

    /// Where notifications go; set once the server knows its address.
    pub fn set_notify_url(&self, url: String) {
        let _ = self.notify_url.set(url);
    }

    /// The signed pay link of a payment.
    pub fn pay_url(&self, payment_id: &str) -> String {
        format!("/api/v1/payments/simulated/{payment_id}/complete?sig={}", self.link_signature(payment_id))
    }

    fn link_signature(&self, payment_id: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"simulated-pay-link:");
        mac.update(payment_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `sig` is this payment's pay-link signature (compared in constant time).
    fn link_is_valid(&self, payment_id: &str, sig: &str) -> bool {
        bool::from(self.link_signature(payment_id).as_bytes().ct_eq(sig.as_bytes()))
    }

    /// Sends the success notification for a payment, retrying a few times with backoff.
    pub async fn complete(&self, payment_id: &str, order: OrderId, amount: Money) -> anyhow::Result<()> {
        let url = self.notify_url.get().ok_or_else(|| anyhow::anyhow!("notify url not set"))?;
        let note = Notification {
            notification_id: uuid::Uuid::new_v4().to_string(),
            payment_id: payment_id.to_owned(),
            order_id: order,
            amount_minor: amount,
            status: "succeeded".into(),
        };
        let body = serde_json::to_vec(&note)?;
        let mut last = anyhow::anyhow!("not sent");
        for attempt in 0..5u32 {
            let ts = now_ms() / 1000;
            let sent = self
                .client
                .post(url)
                .header("content-type", "application/json")
                .header(TIMESTAMP_HEADER, ts.to_string())
                .header(SIGNATURE_HEADER, sign(&self.key, ts, &body))
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(res) if res.status().is_success() => return Ok(()),
                Ok(res) => last = anyhow::anyhow!("notify answered {}", res.status()),
                Err(e) => last = e.into(),
            }
            tokio::time::sleep(Duration::from_millis(100) * 2u32.pow(attempt)).await;
        }
        Err(last)
    }
}

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    async fn create(&self, order: OrderId, amount: Money) -> anyhow::Result<ProviderPayment> {
        let payment_id = format!("sim_{}", uuid::Uuid::new_v4().simple());
        if !self.delay.is_zero() {
            let (this, id) = (self.clone(), payment_id.clone());
            tokio::spawn(async move {
                tokio::time::sleep(this.delay).await;
                if let Err(e) = this.complete(&id, order, amount).await {
                    tracing::warn!(payment.id = %id, error = %e, "simulated payment notification failed");
                }
            });
        }
        Ok(ProviderPayment { pay_url: self.pay_url(&payment_id), payment_id })
    }

    async fn refund(&self, payment_id: &str, amount: Money) -> anyhow::Result<()> {
        tracing::info!(payment.id = payment_id, amount_minor = amount.minor(), "simulated refund");
        Ok(())
    }

    fn pay_url(&self, payment_id: &str) -> Option<String> {
        Some(SimulatedProvider::pay_url(self, payment_id))
    }
}

/// The pay link's signature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayLink {
    /// The signature the pay link carries (hex).
    pub sig: Option<String>,
}

/// The simulated provider's pay page (its pay link, as `pay_url` gives it): completes the
/// payment, which makes the provider send its signed notification to us. Mounted only while
/// `trade.payment_provider = "simulated"`.
#[utoipa::path(post, path = "/api/v1/payments/simulated/{payment_id}/complete", tag = "trade",
    params(("payment_id" = String, Path, description = "Simulated payment id"),
        ("sig" = Option<String>, Query, description = "The pay link's signature (hex)")),
    responses((status = 202, description = "the provider will notify"),
        (status = 403, body = Problem, description = "the link's signature is missing or wrong"),
        (status = 404, body = Problem)))]
pub async fn complete(
    State(state): State<AppState>,
    Path(payment_id): Path<String>,
    Query(link): Query<PayLink>,
) -> Result<StatusCode, Problem> {
    let simulator = &state.trade.simulator;
    if !link.sig.as_deref().is_some_and(|sig| simulator.link_is_valid(&payment_id, sig)) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "invalid_pay_link",
            "the pay link's signature is missing or wrong; use the pay_url the payment was created with",
        ));
    }
    let payment = find_payment(&state, &payment_id).await?.ok_or(TradeError::PaymentNotFound)?;
    simulator
        .complete(&payment.payment_id, payment.order_id, payment.amount)
        .await
        .map_err(|e| TradeError::Provider(e.to_string()))?;
    Ok(StatusCode::ACCEPTED)
}

/// Payment ids do not say their shard, so look in each (this route serves the simulator only).
async fn find_payment(state: &AppState, payment_id: &str) -> Result<Option<flashback_store::Payment>, TradeError> {
    for shard in state.shards.all() {
        if let Some(p) = shard.payment(payment_id).await? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pay_link_is_valid_only_for_its_payment_and_key() {
        let sim = SimulatedProvider::new(b"a-key-of-at-least-thirty-two-bytes!!".to_vec(), Duration::ZERO);
        let other = SimulatedProvider::new(b"another-key-of-thirty-two-bytes!!!!".to_vec(), Duration::ZERO);
        let url = sim.pay_url("sim_1");
        let sig = url.split_once("?sig=").map(|(_, s)| s).unwrap();
        assert!(sim.link_is_valid("sim_1", sig));
        assert!(!sim.link_is_valid("sim_2", sig));
        assert!(!other.link_is_valid("sim_1", sig));
        assert!(!sim.link_is_valid("sim_1", ""));
    }
}
