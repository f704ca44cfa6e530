//! The circuit breaker in front of a MySQL server's pool: while health checks fail, calls fail
//! fast as unavailable instead of each waiting out the pool's acquire timeout.

use std::sync::Arc;
use std::time::Duration;

use flashback_core::breaker::{Breaker, BreakerSettings};
use sqlx::MySqlPool;

use crate::{StoreError, StoreResult};

/// How long one health check may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A breaker fed by health checks ([`Gate::probe`], run about once a second by the server's
/// monitor and by readiness): two failed checks in a row open it, the first good one closes it.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    breaker: Arc<Breaker>,
}

impl Gate {
    /// A closed gate for the dependency `name` (`store`, `shard-0`, …).
    pub(crate) fn new(name: String, settings: BreakerSettings) -> Self {
        Self { breaker: Breaker::new(name, BreakerSettings { failures_to_open: 2, ..settings }) }
    }

    /// `Ok` while calls may go to the server; unavailable while the breaker is open.
    pub(crate) fn check(&self) -> StoreResult<()> {
        if self.breaker.is_closed() { Ok(()) } else { Err(StoreError::unavailable()) }
    }

    /// One `SELECT 1` on `pool` within [`PROBE_TIMEOUT`], past the gate; its outcome feeds the
    /// breaker.
    pub(crate) async fn probe(&self, pool: &MySqlPool) -> StoreResult<()> {
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::from(e)),
            Err(_) => Err(StoreError::unavailable()),
        };
        // Only "cannot reach it" counts: an error of the server's own is an answer.
        self.breaker.record(!matches!(&outcome, Err(e) if e.is_unavailable()));
        outcome
    }

    /// The breaker, for metrics.
    pub(crate) fn breaker(&self) -> Arc<Breaker> {
        Arc::clone(&self.breaker)
    }
}
