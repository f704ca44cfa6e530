//! Behaviour tracking: `POST /api/v1/track` queues events durably, a writer drains the queue
//! into daily tables and rollups, and the stats API reads them.
//!
//! The endpoint does only what must happen before "accepted": parse, validate, correct the
//! clock, drop bots and repeats, and append the batch to a durable queue (a local segmented log
//! embedded; a Redis stream or a RabbitMQ queue scaled out). Everything else (day tables,
//! rollups, sketches) is the writer's, in large transactions, so a traffic spike fills the
//! queue instead of the database's lock queue.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flashback_infra::{RabbitBus, RedisHandle};
use flashback_store::track::TrackStore;
use flashback_store::{StoreOptions, redact_url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::config::Config;

mod dedup;
mod ingest;
pub mod queue;
mod queue_local;
pub mod queue_rabbit;
pub mod queue_redis;
mod stats;
mod writer;

pub use ingest::Ingest;
pub use writer::{apply_retention, drain_once};

/// Which queue sits between the endpoint and the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// A segmented log file under the data directory, fsynced by group commit (embedded).
    Local,
    /// A Redis stream read by a consumer group (needs `cache.redis_url`).
    Redis,
    /// A durable RabbitMQ queue with publisher confirms (needs `events.amqp_url`).
    Rabbitmq,
}

/// Behaviour tracking: ingest limits, the queue, the writer and retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackConfig {
    /// `local`, `redis` or `rabbitmq`.
    pub queue: QueueKind,
    /// Where day tables and rollups live: `mysql://…` or `sqlite:…`. Absent: `store.url` when
    /// that is MariaDB/MySQL, else `data_dir/track.db`.
    #[serde(serialize_with = "crate::config::secret_opt::serialize")]
    pub store_url: Option<SecretString>,
    /// Events one request may carry.
    pub max_batch_events: usize,
    /// Largest request body (compressed, as sent); larger is 413.
    pub max_body_bytes: usize,
    /// Largest body after gzip decompression; larger is 413.
    pub max_decompressed_bytes: usize,
    /// Largest `properties` object of one event, as JSON text; larger is 400.
    pub max_properties_bytes: usize,
    /// Events per second one client IP may send (a burst of as many); beyond is 429.
    pub per_client_per_sec: u32,
    /// How long an event id is remembered at ingest to drop repeats.
    #[serde(rename = "dedup_window_ms", with = "crate::config::millis")]
    pub dedup_window: Duration,
    /// At most this many ids remembered; when reached the window shortens (the day tables
    /// still refuse a repeated id).
    pub dedup_capacity: usize,
    /// Client times further ahead of the server than this are taken as the server's time.
    #[serde(rename = "max_future_skew_ms", with = "crate::config::millis")]
    pub max_future_skew: Duration,
    /// Events older than this (after skew correction) are dropped as `too_late`.
    #[serde(rename = "max_late_ms", with = "crate::config::millis")]
    pub max_late: Duration,
    /// Days start this many minutes after UTC midnight (480 for China Standard Time).
    pub day_offset_minutes: i32,
    /// Events queued and not yet written beyond which ingest answers 503.
    pub max_backlog_events: u64,
    /// Events the writer takes per transaction at most.
    pub writer_batch_events: usize,
    /// How long the writer waits for events when the queue is empty.
    #[serde(rename = "writer_idle_ms", with = "crate::config::millis")]
    pub writer_idle: Duration,
    /// Day tables older than this many days are dropped.
    pub retention_days: u32,
    /// A user agent containing any of these (case-insensitive) is a bot; its events are
    /// dropped and counted.
    pub bot_user_agents: Vec<String>,
    /// The local queue starts a new segment file past this size.
    pub segment_bytes: u64,
}

impl Default for TrackConfig {
    fn default() -> Self {
        Self {
            queue: QueueKind::Local,
            store_url: None,
            max_batch_events: 1_000,
            max_body_bytes: 1024 * 1024,
            max_decompressed_bytes: 8 * 1024 * 1024,
            max_properties_bytes: 2_048,
            per_client_per_sec: 5_000,
            dedup_window: Duration::from_secs(600),
            dedup_capacity: 2_000_000,
            max_future_skew: Duration::from_secs(300),
            max_late: Duration::from_secs(3 * 86_400),
            day_offset_minutes: 0,
            max_backlog_events: 10_000_000,
            writer_batch_events: 20_000,
            writer_idle: Duration::from_millis(200),
            retention_days: 90,
            bot_user_agents: ["bot", "spider", "crawl", "slurp", "bingpreview", "headlesschrome", "python-requests"]
                .map(String::from)
                .to_vec(),
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

impl TrackConfig {
    /// Checks what serde cannot; each message starts with the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch_events == 0 || self.max_batch_events > 10_000 {
            return Err("track.max_batch_events: must be 1..=10000".into());
        }
        if self.per_client_per_sec == 0 {
            return Err("track.per_client_per_sec: must be positive".into());
        }
        if self.writer_batch_events < self.max_batch_events {
            return Err("track.writer_batch_events: must be at least track.max_batch_events".into());
        }
        if !(-720..=840).contains(&self.day_offset_minutes) {
            return Err("track.day_offset_minutes: must be within -720..=840".into());
        }
        if self.retention_days == 0 || u64::from(self.retention_days) * 86_400 < self.max_late.as_secs() + 86_400 {
            return Err("track.retention_days: must keep at least a day more than track.max_late_ms".into());
        }
        if self.segment_bytes < 1024 * 1024 {
            return Err("track.segment_bytes: must be at least 1 MiB".into());
        }
        Ok(())
    }

    /// The offset of a day's start from UTC midnight, in ms.
    pub fn day_offset_ms(&self) -> i64 {
        i64::from(self.day_offset_minutes) * 60_000
    }
}

/// The tracking pipeline of one instance: ingest checks, the queue and the store.
#[derive(Debug)]
pub struct Tracking {
    /// The checks before a batch is queued.
    pub ingest: Ingest,
    /// Where accepted batches wait for the writer.
    pub queue: Arc<dyn queue::TrackQueue>,
    /// Day tables and rollups.
    pub store: Arc<TrackStore>,
}

impl Tracking {
    /// Opens the tracking store and the configured queue.
    pub async fn build(
        config: &Config,
        redis: Option<&RedisHandle>,
        bus: Option<&RabbitBus>,
    ) -> anyhow::Result<Arc<Self>> {
        let t = &config.track;
        let url = match (&t.store_url, &config.store.url) {
            (Some(u), _) => Some(u.expose_secret().to_owned()),
            (None, Some(u)) if !u.expose_secret().starts_with("sqlite:") => Some(u.expose_secret().to_owned()),
            _ => None,
        };
        let options = StoreOptions {
            url: url.clone(),
            data_dir: config.data_dir.clone(),
            max_connections: config.store.max_connections,
            acquire_timeout: config.store.acquire_timeout,
            breaker: config.breaker.settings(),
        };
        let store = TrackStore::open(url.as_deref(), &options, t.day_offset_ms()).await.with_context(|| {
            format!("opening the tracking store ({})", url.as_deref().map_or("track.db".into(), redact_url))
        })?;
        let store = Arc::new(store);
        let queue = queue::open(t, &config.data_dir, &store, redis, bus).await.context("opening the tracking queue")?;
        Ok(Arc::new(Self { ingest: Ingest::new(t), queue, store }))
    }
}

/// The tracking routes: ingest, and the stats API.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ingest::track)).merge(stats::routes())
}

/// The writer and retention tasks.
pub fn spawn(state: &AppState) -> Vec<JoinHandle<()>> {
    vec![writer::spawn(state), writer::spawn_retention(state)]
}
