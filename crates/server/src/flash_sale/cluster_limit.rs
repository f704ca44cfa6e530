//! Cluster-wide purchase limits: the global and per-sale rates shared by every instance,
//! kept in Redis as GCRA state (one theoretical arrival time per limit) and checked for both
//! limits in one Lua call. The per-instance limiters stay in front, so an instance never
//! asks Redis about attempts it would refuse anyway.
//!
//! If Redis does not answer in time the attempt is let through (fail open: the local limits
//! still hold) and counted as `cluster_limit_unavailable`.

use std::time::Duration;

use flashback_core::SaleId;
use flashback_infra::RedisHandle;
use redis::Script;

/// A rate as GCRA parameters, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Rate {
    interval_us: u64,
    tolerance_us: u64,
}

impl Rate {
    /// `per_sec` attempts per second with a burst of as many.
    fn per_second(per_sec: u32) -> Option<Self> {
        let n = u64::from(per_sec);
        (n > 0).then(|| {
            let interval_us = (1_000_000 / n).max(1);
            Self { interval_us, tolerance_us: interval_us * (n - 1) }
        })
    }
}

/// What the cluster-wide limits said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within every limit.
    Admit,
    /// Over a limit: retry after this long.
    Wait(Duration),
    /// Redis did not answer; admitted on the local limits alone.
    Unavailable,
}

/// The cluster-wide limits.
pub struct ClusterLimits {
    redis: RedisHandle,
    global: Option<Rate>,
    per_sale: Option<Rate>,
    gcra: Script,
}

impl std::fmt::Debug for ClusterLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLimits").field("global", &self.global).field("per_sale", &self.per_sale).finish()
    }
}

impl ClusterLimits {
    /// Limits of `global_per_sec` attempts in all and `per_sale_per_sec` per sale across the
    /// cluster (0 turns one off); `None` if both are off.
    pub fn new(redis: RedisHandle, global_per_sec: u32, per_sale_per_sec: u32) -> Option<Self> {
        let (global, per_sale) = (Rate::per_second(global_per_sec), Rate::per_second(per_sale_per_sec));
        (global.is_some() || per_sale.is_some()).then(|| Self {
            redis,
            global,
            per_sale,
            gcra: Script::new(include_str!("lua/gcra.lua")),
        })
    }

    /// Checks (and on admission counts) one attempt on `sale`.
    pub async fn check(&self, sale: SaleId) -> Verdict {
        let mut call = self.gcra.prepare_invoke();
        for (key, rate) in [
            (self.redis.key("{flash-rate}:global"), self.global),
            (self.redis.key(&format!("{{flash-rate}}:sale:{sale}")), self.per_sale),
        ] {
            if let Some(rate) = rate {
                call.key(key).arg(rate.interval_us).arg(rate.tolerance_us);
            }
        }
        let mut c = self.redis.conn();
        match tokio::time::timeout(self.redis.timeout(), call.invoke_async::<u64>(&mut c)).await {
            Ok(Ok(0)) => Verdict::Admit,
            Ok(Ok(wait_us)) => Verdict::Wait(Duration::from_micros(wait_us)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cluster rate limit unavailable");
                Verdict::Unavailable
            }
            Err(_) => Verdict::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rate;

    #[test]
    fn a_rate_allows_a_burst_of_one_second() {
        let r = Rate::per_second(4).expect("on");
        assert_eq!((r.interval_us, r.tolerance_us), (250_000, 750_000));
        let one = Rate::per_second(1).expect("on");
        assert_eq!((one.interval_us, one.tolerance_us), (1_000_000, 0));
        assert!(Rate::per_second(0).is_none());
    }
}
