//! Calls to third parties we do not run (the payment provider, the payout provider), each
//! behind a timeout and a circuit breaker: while a provider is down, callers hear "unavailable"
//! at once instead of each waiting out the timeout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flashback_core::breaker::{Breaker, BreakerSettings};
use flashback_core::{Money, OrderId};

use crate::rebate::withdraw::{Payout, Payouts};
use crate::trade::payments::{PaymentProvider, ProviderPayment};

/// How long one call to a provider may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `call` through `breaker` within [`CALL_TIMEOUT`]; an error or a timeout counts as the
/// provider failing.
async fn guarded<T, E: std::fmt::Display>(
    breaker: &Breaker,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    let Some(permit) = breaker.permit() else {
        return Err(format!("{} circuit open", breaker.name()));
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => {
            permit.success();
            Ok(v)
        }
        Ok(Err(e)) => {
            permit.failure();
            Err(e.to_string())
        }
        Err(_) => {
            permit.failure();
            Err(format!("{} timed out", breaker.name()))
        }
    }
}

/// A payment provider behind the `payments` breaker.
#[derive(Debug)]
pub struct GuardedPayments {
    inner: Arc<dyn PaymentProvider>,
    breaker: Arc<Breaker>,
}

impl GuardedPayments {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn PaymentProvider>, settings: BreakerSettings) -> Self {
        Self { inner, breaker: Breaker::new("payments", settings) }
    }

    /// The breaker, for metrics.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }
}

#[async_trait]
impl PaymentProvider for GuardedPayments {
    async fn create(&self, order: OrderId, amount: Money) -> anyhow::Result<ProviderPayment> {
        guarded(&self.breaker, self.inner.create(order, amount)).await.map_err(anyhow::Error::msg)
    }

    async fn refund(&self, payment_id: &str, amount: Money) -> anyhow::Result<()> {
        guarded(&self.breaker, self.inner.refund(payment_id, amount)).await.map_err(anyhow::Error::msg)
    }

    fn pay_url(&self, payment_id: &str) -> Option<String> {
        self.inner.pay_url(payment_id)
    }
}

/// A payout provider behind the `payouts` breaker. A refused transfer is an answer (the
/// provider is up); only an unknown outcome counts as its failure.
#[derive(Debug)]
pub struct GuardedPayouts {
    inner: Arc<dyn Payouts>,
    breaker: Arc<Breaker>,
}

impl GuardedPayouts {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Payouts>, settings: BreakerSettings) -> Self {
        Self { inner, breaker: Breaker::new("payouts", settings) }
    }

    /// The breaker, for metrics.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }
}

#[async_trait]
impl Payouts for GuardedPayouts {
    async fn transfer(&self, transfer_no: &str, payee: &str, amount_minor: i64) -> Result<Payout, String> {
        guarded(&self.breaker, self.inner.transfer(transfer_no, payee, amount_minor)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Down;

    #[async_trait]
    impl Payouts for Down {
        async fn transfer(&self, _: &str, _: &str, _: i64) -> Result<Payout, String> {
            Err("connection refused".into())
        }
    }

    #[tokio::test]
    async fn a_provider_that_keeps_failing_is_not_called_while_its_breaker_is_open() {
        let settings = BreakerSettings { failures_to_open: 2, open_for: Duration::from_secs(60) };
        let payouts = GuardedPayouts::new(Arc::new(Down), settings);
        for _ in 0..2 {
            assert_eq!(payouts.transfer("t1", "p", 100).await, Err("connection refused".into()));
        }
        assert_eq!(payouts.transfer("t1", "p", 100).await, Err("payouts circuit open".into()));
    }
}
