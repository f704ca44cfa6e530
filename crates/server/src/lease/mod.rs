//! Leases for periodic work that one instance of a cluster should do at a time: the sweeper
//! (unpaid-order expiry, ending sales), the rebate sweep (releasing holds, retrying payouts)
//! and the affiliate-network poller.
//!
//! Every step of that work is conditional (compare-and-set on the row it changes; payouts are
//! idempotent on the transfer number), so two instances doing it at once repeat each other's
//! no-ops rather than doing harm. The lease is about cost: N instances sweeping every shard
//! every second, or N pollers spending the affiliate network's API quota. Hence:
//!
//! - embedded (no Redis), the one instance always holds it;
//! - with Redis, a key `<prefix>:lease:<job>` names the holder and expires after the lease's
//!   time to live; the holder extends it each round and gives it up at shutdown, so another
//!   instance takes over within one time to live of a crash, at once after a clean stop;
//! - when Redis cannot answer, the instance does the work anyway (fails open, logged): safe for
//!   the reason above, and better than no instance sweeping while Redis is away.

use std::time::Duration;

use flashback_infra::RedisHandle;
use prometheus_client::metrics::gauge::Gauge;
use redis::Script;

use crate::AppState;
use crate::metrics::JobLabel;

/// A lease on one job, for one instance.
pub struct Lease {
    /// Redis and the lease's key there; `None` embedded (always held).
    redis: Option<(RedisHandle, String)>,
    job: &'static str,
    holder: String,
    ttl: Duration,
    hold: Script,
    release: Script,
    /// `flashback_lease_held{job}`, when the lease reports to an instance's metrics.
    held: Option<Gauge>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("job", &self.job).field("holder", &self.holder).field("ttl", &self.ttl).finish()
    }
}

impl Lease {
    /// The lease on `job` for `holder` (an id unique to this instance), held `ttl` from each
    /// round; on `redis` when given, else always held.
    pub fn new(redis: Option<&RedisHandle>, job: &'static str, holder: &str, ttl: Duration) -> Self {
        Self {
            redis: redis.map(|r| (r.clone(), r.key(&format!("lease:{job}")))),
            job,
            holder: holder.to_owned(),
            ttl: ttl.max(Duration::from_millis(1)),
            hold: Script::new(include_str!("hold.lua")),
            release: Script::new(include_str!("release.lua")),
            held: None,
        }
    }

    /// The lease on `job`, run every `interval`, for this instance: on its Redis if any, held
    /// by its id for three rounds (so a holder that misses a round or two keeps it, and a
    /// crashed holder's job waits at most three rounds, at least five seconds), reported as
    /// `flashback_lease_held{job}`.
    pub fn of(state: &AppState, job: &'static str, interval: Duration) -> Self {
        let ttl = interval.saturating_mul(3).max(Duration::from_secs(5));
        let mut lease = Self::new(state.redis.as_ref(), job, &state.instance, ttl);
        lease.held = Some(state.metrics.leases_held.get_or_create(&JobLabel { job }).clone());
        lease
    }

    /// Whether this instance should do the job's round now: takes the lease if it is free,
    /// extends it if this instance holds it. `true` when Redis cannot answer (see the module).
    pub async fn hold(&self) -> bool {
        let held = self.ask().await;
        if let Some(g) = &self.held {
            g.set(i64::from(held));
        }
        held
    }

    async fn ask(&self) -> bool {
        let Some((redis, key)) = &self.redis else { return true };
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut c = redis.conn();
        let mut call = self.hold.key(key);
        call.arg(&self.holder).arg(ttl_ms);
        match tokio::time::timeout(redis.timeout(), call.invoke_async::<i64>(&mut c)).await {
            Ok(Ok(held)) => held == 1,
            Ok(Err(e)) => {
                tracing::warn!(lease.job = self.job, error = %e, "lease unavailable; doing the job anyway");
                true
            }
            Err(_) => {
                tracing::warn!(lease.job = self.job, "lease timed out; doing the job anyway");
                true
            }
        }
    }

    /// Gives the lease up if this instance holds it, so another takes the job at once.
    pub async fn release(&self) {
        if let Some(g) = &self.held {
            g.set(0);
        }
        let Some((redis, key)) = &self.redis else { return };
        let mut c = redis.conn();
        let mut call = self.release.key(key);
        call.arg(&self.holder);
        if let Ok(Err(e)) = tokio::time::timeout(redis.timeout(), call.invoke_async::<i64>(&mut c)).await {
            tracing::warn!(lease.job = self.job, error = %e, "could not give the lease up; it expires by itself");
        }
    }
}

/// The rounds of a periodic job leased on `job`: one every `interval`, skipping those when
/// another instance holds the lease, until shutdown.
///
/// ```ignore
/// let mut rounds = Rounds::new(&state, "sweeper", interval);
/// while rounds.next().await {
///     // this round's work
/// }
/// ```
pub struct Rounds {
    lease: Lease,
    tick: tokio::time::Interval,
    shutdown: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Rounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rounds").field("lease", &self.lease).finish_non_exhaustive()
    }
}

impl Rounds {
    /// Rounds every `interval` under this instance's lease on `job` ([`Lease::of`]).
    pub fn new(state: &AppState, job: &'static str, interval: Duration) -> Self {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { lease: Lease::of(state, job, interval), tick, shutdown: state.shutdown.clone() }
    }

    /// Waits for the next round this instance holds the lease for: `true` to do it, `false` at
    /// shutdown (the lease given up by then).
    pub async fn next(&mut self) -> bool {
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    self.lease.release().await;
                    return false;
                }
                _ = self.tick.tick() => {
                    if self.lease.hold().await {
                        return true;
                    }
                }
            }
        }
    }
}
