//! Real-time analytics: aggregates of the domain events, the live stream and the dashboard.
//!
//! Orders and payments arrive as outbox events ([`consumer::Consumer`], at least once); each
//! one's minute rollup is written with its event id in one transaction, so a redelivery or a
//! restart counts it once. Per-second figures live in memory ([`seconds::Seconds`]), filled
//! only by events the store accepted as new. Flash-sale stock and pending rebates are read from
//! their own durable tables (reservations, the ledger), which are exact already.

pub mod api;
pub mod cluster;
pub mod consumer;
pub mod dashboard;
pub mod error;
pub mod seconds;
pub mod snapshot;
pub mod stream;
pub mod views;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::config::{Config, millis};

/// Real-time analytics and the live dashboard (`[analytics]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// How often the live snapshot is computed and pushed to `/api/v1/live` clients.
    #[serde(rename = "snapshot_interval_ms", with = "millis")]
    pub snapshot_interval: Duration,
    /// Live stream clients at once; more are answered 503 `live_too_many_clients`.
    pub max_clients: usize,
    /// Seconds of per-second figures kept in memory (the `second` series reaches this far back).
    pub seconds_kept: u32,
    /// Offset of the business day from UTC, minutes ("today" starts at local midnight; 480 for
    /// China Standard Time).
    pub utc_offset_minutes: i32,
    /// Longest range a `minute` series or a top-SKU list may span.
    #[serde(rename = "max_range_ms", with = "millis")]
    pub max_range: Duration,
    /// How long the ids of applied events are remembered for deduplication. A redelivery later
    /// than this would count again; the outbox redelivers within seconds.
    #[serde(rename = "dedup_retention_ms", with = "millis")]
    pub dedup_retention: Duration,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            snapshot_interval: Duration::from_secs(1),
            max_clients: 64,
            seconds_kept: 300,
            utc_offset_minutes: 0,
            max_range: Duration::from_secs(7 * 24 * 3600),
            dedup_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Live aggregates of one instance: per-second figures, the latest snapshot and its clients.
#[derive(Debug)]
pub struct Live {
    config: AnalyticsConfig,
    seconds: seconds::Seconds,
    latest: watch::Sender<Arc<str>>,
    clients: Arc<Semaphore>,
    applied: AtomicU64,
    duplicates: AtomicU64,
    /// Scaled out: every instance's figures in Redis.
    cluster: Option<cluster::ClusterFigures>,
}

impl Live {
    /// Builds the aggregates from `[analytics]`; with `redis`, this instance (`instance`)
    /// publishes its figures there and shows the cluster's.
    pub async fn build(
        config: &Config,
        redis: Option<&flashback_infra::RedisHandle>,
        instance: &str,
    ) -> anyhow::Result<Arc<Self>> {
        let c = config.analytics.clone();
        anyhow::ensure!(c.seconds_kept >= 60, "analytics.seconds_kept: at least 60");
        anyhow::ensure!(c.max_clients >= 1, "analytics.max_clients: at least 1");
        anyhow::ensure!(!c.snapshot_interval.is_zero(), "analytics.snapshot_interval_ms: more than 0");
        anyhow::ensure!((-720..=840).contains(&c.utc_offset_minutes), "analytics.utc_offset_minutes: -720 to 840");
        Ok(Arc::new(Self {
            seconds: seconds::Seconds::new(c.seconds_kept),
            latest: watch::channel(Arc::from("")).0,
            clients: Arc::new(Semaphore::new(c.max_clients)),
            applied: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            cluster: redis.map(|r| cluster::ClusterFigures::new(r.clone(), instance.to_owned(), c.seconds_kept)),
            config: c,
        }))
    }

    /// The settings it runs with.
    pub fn config(&self) -> &AnalyticsConfig {
        &self.config
    }

    /// Every instance's figures, when scaled out on Redis.
    pub fn cluster(&self) -> Option<&cluster::ClusterFigures> {
        self.cluster.as_ref()
    }

    /// Per-second figures.
    pub fn seconds(&self) -> &seconds::Seconds {
        &self.seconds
    }

    /// Counts one event handled: `new` if the store counted it, else a duplicate.
    pub(crate) fn note(&self, new: bool) {
        let counter = if new { &self.applied } else { &self.duplicates };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Events counted since start, and deliveries recognised as duplicates.
    pub fn consumed(&self) -> (u64, u64) {
        (self.applied.load(Ordering::Relaxed), self.duplicates.load(Ordering::Relaxed))
    }

    /// Start of the business day containing `now_ms`, Unix ms.
    pub fn day_start(&self, now_ms: i64) -> i64 {
        const DAY: i64 = 86_400_000;
        let offset = i64::from(self.config.utc_offset_minutes) * 60_000;
        (now_ms + offset).div_euclid(DAY) * DAY - offset
    }
}

/// The analytics routes: the rollup API, the live stream and the dashboard page.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(api::summary))
        .routes(routes!(api::gmv))
        .routes(routes!(api::top_skus))
        .routes(routes!(api::flash_sales))
        .routes(routes!(api::pending_rebates))
        .routes(routes!(stream::live))
        .merge(dashboard::routes())
}

/// The snapshot broadcaster, the pruning of old event ids and, scaled out, the publishing of
/// this instance's figures; they stop on shutdown.
pub fn spawn(state: &AppState) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(stream::broadcast(state.clone())), tokio::spawn(prune(state.clone()))];
    if state.analytics.cluster.is_some() {
        tasks.push(tokio::spawn(publish(state.clone())));
    }
    tasks
}

/// Every [`cluster::PUBLISH_EVERY`], this instance's seconds and counters to Redis.
async fn publish(state: AppState) {
    let Some(cluster) = state.analytics.cluster.clone() else { return };
    // The dashboard shows the last minute; a little more covers events counted late.
    let kept = i64::from(state.analytics.config.seconds_kept.min(90));
    loop {
        let now = crate::trade::now_ms();
        let series = state.analytics.seconds.series(now - kept * 1000 + 1000, now + 1);
        let counters = snapshot::local_counters(&state.metrics.encode());
        if let Err(e) = cluster.publish(&series, &counters, now).await {
            tracing::debug!(error = %e, "publishing live figures failed; will retry");
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(cluster::PUBLISH_EVERY) => {}
        }
    }
}

/// Forgets applied event ids older than `dedup_retention`, hourly.
async fn prune(state: AppState) {
    loop {
        let before = crate::trade::now_ms()
            - i64::try_from(state.analytics.config.dedup_retention.as_millis()).unwrap_or(i64::MAX / 2);
        match state.store.prune_applied(before).await {
            Ok(n) if n > 0 => tracing::info!(pruned = n, "forgot old analytics event ids"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning analytics event ids failed; will retry"),
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn live(offset_minutes: i32) -> Arc<Live> {
        let mut config = Config::default();
        config.analytics.utc_offset_minutes = offset_minutes;
        Live::build(&config, None, "test").await.unwrap()
    }

    #[tokio::test]
    async fn today_starts_at_local_midnight_of_the_configured_offset() {
        // 2026-11-11T17:30:00Z: still the 11th in UTC, already the 12th in UTC+8.
        let now = 1_794_418_200_000;
        assert_eq!(live(0).await.day_start(now), 1_794_355_200_000, "2026-11-11T00:00Z");
        assert_eq!(live(480).await.day_start(now), 1_794_412_800_000, "2026-11-12T00:00+08:00");
        assert_eq!(live(-300).await.day_start(now), 1_794_373_200_000, "2026-11-11T00:00-05:00");
    }

    #[tokio::test]
    async fn settings_out_of_range_are_refused() {
        let mut config = Config::default();
        config.analytics.max_clients = 0;
        assert!(Live::build(&config, None, "test").await.is_err());
        config.analytics.max_clients = 1;
        config.analytics.utc_offset_minutes = 900;
        assert!(Live::build(&config, None, "test").await.is_err());
    }
}
