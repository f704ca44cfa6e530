//! Running a whole transaction again when the database aborted it to break a deadlock or a
//! serialization conflict, as InnoDB and every MVCC database ask of their clients.
//!
//! Every write path of the SQL stores goes through [`retry_deadlocks`] (or [`retry_when`], for
//! paths that also lose an application-level race the next attempt sees the winner of). Each
//! attempt is a whole transaction, so nothing half-applies; when the attempts run out the
//! error stays retryable and the server answers `503` with `Retry-After` (nothing was done).

use std::time::Duration;

use crate::{LedgerError, ReserveError, SqlReserveRefusal, StoreError, WithdrawRefusal};

/// How many attempts a contended transaction gets in all.
const ATTEMPTS: u32 = 8;
/// The first back-off; each later one doubles, up to [`MAX_BACKOFF`], with full jitter so
/// transactions that collided do not collide again in step.
const FIRST_BACKOFF: Duration = Duration::from_millis(4);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// An error that may say "the database rolled this transaction back; run it again".
pub trait Retryable {
    /// Whether running the whole transaction again is the remedy.
    fn is_retryable(&self) -> bool;
}

impl Retryable for StoreError {
    fn is_retryable(&self) -> bool {
        StoreError::is_retryable(self)
    }
}

impl Retryable for LedgerError {
    fn is_retryable(&self) -> bool {
        matches!(self, LedgerError::Store(e) if e.is_retryable())
    }
}

impl Retryable for ReserveError {
    fn is_retryable(&self) -> bool {
        matches!(self, ReserveError::Store(e) if e.is_retryable())
    }
}

impl Retryable for SqlReserveRefusal {
    fn is_retryable(&self) -> bool {
        matches!(self, SqlReserveRefusal::Store(e) if e.is_retryable())
    }
}

impl Retryable for WithdrawRefusal {
    fn is_retryable(&self) -> bool {
        matches!(self, WithdrawRefusal::Ledger(e) if e.is_retryable())
    }
}

/// Runs `attempt` (a whole transaction) again while the database aborts it to break a
/// deadlock or a serialization conflict.
pub(crate) async fn retry_deadlocks<T, E, F, Fut>(attempt: F) -> Result<T, E>
where
    E: Retryable + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_when(E::is_retryable, attempt).await
}

/// Runs `attempt` (a whole transaction) again while it fails with an error `again` says a new
/// attempt can get past: a deadlock, or a race the next attempt sees the winner of.
pub(crate) async fn retry_when<T, E, F, Fut>(again: impl Fn(&E) -> bool, mut attempt: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if again(&e) && tries < ATTEMPTS => {
                tracing::debug!(tries, error = %e, "transaction lost a race or a deadlock; retrying");
                tokio::time::sleep(backoff(tries)).await;
                tries += 1;
            }
            other => return other,
        }
    }
}

/// A random wait up to `FIRST_BACKOFF × 2^(tries-1)`, at most [`MAX_BACKOFF`].
fn backoff(tries: u32) -> Duration {
    let cap = FIRST_BACKOFF.saturating_mul(1 << tries.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let cap_us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rand::random_range(cap_us / 4..=cap_us))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn deadlock() -> StoreError {
        StoreError::Conflict("stand-in for a deadlock")
    }

    #[tokio::test]
    async fn a_retryable_failure_is_run_again_until_it_succeeds_or_the_attempts_run_out() {
        let calls = AtomicU32::new(0);
        let ok: Result<u32, StoreError> = retry_when(
            |e| matches!(e, StoreError::Conflict(_)),
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 3 { Err(deadlock()) } else { Ok(n) }
            },
        )
        .await;
        assert_eq!(ok.expect("third attempt"), 3);

        calls.store(0, Ordering::SeqCst);
        let failed: Result<(), StoreError> = retry_when(
            |e| matches!(e, StoreError::Conflict(_)),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(deadlock())
            },
        )
        .await;
        assert!(failed.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test]
    async fn other_failures_are_answered_at_once() {
        let calls = AtomicU32::new(0);
        let r: Result<(), StoreError> = retry_deadlocks(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Conflict("not a deadlock"))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn back_off_grows_and_stays_bounded() {
        for tries in 1..40 {
            assert!(backoff(tries) <= MAX_BACKOFF);
        }
        assert!(backoff(1) <= FIRST_BACKOFF);
    }
}
