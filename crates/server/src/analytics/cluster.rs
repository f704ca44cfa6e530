//! Live figures of the whole cluster: scaled out, each instance counts only the events it
//! consumed and the requests it served, so every second it publishes its own figures to Redis
//! and the dashboard sums every instance's.
//!
//! - `<prefix>:live:sec:<unix second>`: a hash, one field per instance (`paid_orders,gmv`),
//!   each instance writing its whole figure for each of the last `seconds_kept` seconds (an
//!   overwrite, so publishing twice never counts twice), expiring with the window.
//! - `<prefix>:live:counters:<instance>`: the instance's admission and tracking counters as
//!   JSON, expiring after [`COUNTERS_TTL`] so an instance that is gone drops out; instances
//!   announce themselves in the sorted set `<prefix>:live:instances` (scored by last publish).

use std::collections::BTreeMap;
use std::time::Duration;

use flashback_infra::RedisHandle;
use redis::AsyncCommands;

use super::seconds::SecondPoint;

/// How often every instance publishes.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How long an instance's counters outlive its last publish.
const COUNTERS_TTL: Duration = Duration::from_secs(10);

/// One instance's counters: admission outcomes and tracking, by reason.
pub type Counters = BTreeMap<String, BTreeMap<String, u64>>;

/// The cluster's figures in Redis, as seen by one instance.
#[derive(Debug, Clone)]
pub struct ClusterFigures {
    redis: RedisHandle,
    instance: String,
    seconds_kept: u32,
}

impl ClusterFigures {
    /// Figures for instance `instance`, keeping `seconds_kept` seconds.
    pub fn new(redis: RedisHandle, instance: String, seconds_kept: u32) -> Self {
        Self { redis, instance, seconds_kept }
    }

    fn second_key(&self, at_ms: i64) -> String {
        self.redis.key(&format!("live:sec:{}", at_ms.div_euclid(1000)))
    }

    fn counters_key(&self, instance: &str) -> String {
        self.redis.key(&format!("live:counters:{instance}"))
    }

    /// Publishes this instance's seconds (`series`, as its ring holds them) and counters in one
    /// round trip.
    pub async fn publish(&self, series: &[SecondPoint], counters: &Counters, now_ms: i64) -> anyhow::Result<()> {
        let window = u64::from(self.seconds_kept) + 60;
        let mut pipe = redis::pipe();
        for p in series.iter().filter(|p| p.paid_orders != 0 || p.gmv_minor != 0) {
            let key = self.second_key(p.at_ms);
            pipe.hset(&key, &self.instance, format!("{},{}", p.paid_orders, p.gmv_minor)).ignore();
            pipe.expire(&key, i64::try_from(window).unwrap_or(i64::MAX)).ignore();
        }
        let counters_key = self.counters_key(&self.instance);
        pipe.set_ex(&counters_key, serde_json::to_string(counters)?, COUNTERS_TTL.as_secs()).ignore();
        let instances = self.redis.key("live:instances");
        pipe.zadd(&instances, &self.instance, now_ms).ignore();
        let stale = now_ms - i64::try_from(COUNTERS_TTL.as_millis()).unwrap_or(i64::MAX);
        pipe.zrembyscore(&instances, "-inf", stale).ignore();
        pipe.query_async::<()>(&mut self.redis.conn()).await?;
        Ok(())
    }

    /// Every instance's seconds in `[from_ms, to_ms)` summed, oldest first.
    pub async fn seconds(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<SecondPoint>> {
        let seconds: Vec<i64> = (from_ms.div_euclid(1000)..=(to_ms - 1).div_euclid(1000)).collect();
        let mut pipe = redis::pipe();
        for s in &seconds {
            pipe.hvals(self.second_key(s * 1000));
        }
        let values: Vec<Vec<String>> = pipe.query_async(&mut self.redis.conn()).await?;
        Ok(seconds
            .iter()
            .zip(values)
            .map(|(s, per_instance)| {
                let mut p = SecondPoint { at_ms: s * 1000, ..SecondPoint::default() };
                for v in per_instance {
                    let (orders, gmv) = v.split_once(',').unwrap_or(("0", "0"));
                    p.paid_orders = p.paid_orders.saturating_add(orders.parse().unwrap_or(0));
                    p.gmv_minor = p.gmv_minor.saturating_add(gmv.parse().unwrap_or(0));
                }
                p
            })
            .collect())
    }

    /// Every live instance's counters summed.
    pub async fn counters(&self) -> anyhow::Result<Counters> {
        let mut conn = self.redis.conn();
        let instances: Vec<String> = conn.zrange(self.redis.key("live:instances"), 0, -1).await?;
        let mut total = Counters::new();
        if instances.is_empty() {
            return Ok(total);
        }
        let keys: Vec<String> = instances.iter().map(|i| self.counters_key(i)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        for one in values.into_iter().flatten().filter_map(|v| serde_json::from_str::<Counters>(&v).ok()) {
            for (group, reasons) in one {
                let sums = total.entry(group).or_default();
                for (reason, n) in reasons {
                    let sum = sums.entry(reason).or_default();
                    *sum = sum.saturating_add(n);
                }
            }
        }
        Ok(total)
    }
}
