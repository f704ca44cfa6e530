//! The queue between the tracking endpoint and its writer: a push is durable when it returns,
//! a pull hands out whole pushed batches, and a batch stays queued until it is acknowledged
//! after the writer's transaction commits (at least once; the store's dedup makes it once).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flashback_infra::{RabbitBus, RedisHandle};
use flashback_store::track::{QueueCursor, TrackEvent, TrackStore};

use super::{QueueKind, TrackConfig};

/// Why a batch was not queued.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The backlog is at its bound; the client should retry later (503 + Retry-After).
    #[error("the tracking queue is full")]
    Full,
    /// The queue cannot be reached or did not confirm the write.
    #[error("the tracking queue is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

/// What a pulled batch needs to be acknowledged or handed back.
#[derive(Debug, Clone)]
pub enum Receipt {
    /// The local log: where this batch started (to read it again after a failed write).
    Local {
        /// The position of its first frame.
        from: QueueCursor,
    },
    /// Redis stream entry ids.
    Redis(Vec<String>),
    /// RabbitMQ deliveries, each bound to the channel it came on.
    Rabbit(Vec<flashback_infra::bus::WorkTag>),
}

/// Events pulled from the queue, in the order pushed.
#[derive(Debug)]
pub struct Pulled {
    /// The events of every batch pulled.
    pub events: Vec<TrackEvent>,
    /// For the local log: the position after the last batch, stored with the events so a
    /// restart resumes exactly there.
    pub cursor: Option<QueueCursor>,
    /// How to acknowledge.
    pub receipt: Receipt,
}

/// A durable queue of tracking batches.
#[async_trait]
pub trait TrackQueue: Send + Sync + std::fmt::Debug {
    /// `local`, `redis` or `rabbitmq`.
    fn kind(&self) -> &'static str;
    /// Appends one batch; returns once it is durable.
    async fn push(&self, events: &[TrackEvent]) -> Result<(), PushError>;
    /// Up to about `max_events` events (whole batches), waiting up to `wait` when none are
    /// queued; `None` when none came.
    async fn pull(&self, max_events: usize, wait: Duration) -> anyhow::Result<Option<Pulled>>;
    /// Removes a pulled batch for good (its events are stored).
    async fn ack(&self, pulled: &Pulled) -> anyhow::Result<()>;
    /// Hands a pulled batch back to be pulled again (its write failed).
    async fn nack(&self, pulled: &Pulled) -> anyhow::Result<()>;
    /// Events queued and not yet acknowledged (for a shared queue, by every instance).
    async fn backlog(&self) -> anyhow::Result<u64>;
    /// For readiness: the state the queue keeps on this instance, if any (`None`: nothing
    /// local to check; a shared queue's server is checked on its own).
    fn readiness(&self) -> Option<Result<(), String>> {
        None
    }
}

/// The name the local log's cursor is stored under in the tracking store.
pub const LOCAL_CURSOR: &str = "local-queue";

/// A batch's bytes on the queue (JSON of the events; short field names keep it small).
pub fn encode(events: &[TrackEvent]) -> Vec<u8> {
    serde_json::to_vec(events).unwrap_or_default()
}

/// A batch back from its bytes.
pub fn decode(bytes: &[u8]) -> anyhow::Result<Vec<TrackEvent>> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Opens the configured queue.
pub async fn open(
    config: &TrackConfig,
    data_dir: &Path,
    store: &TrackStore,
    redis: Option<&RedisHandle>,
    bus: Option<&RabbitBus>,
) -> anyhow::Result<Arc<dyn TrackQueue>> {
    Ok(match config.queue {
        QueueKind::Local => {
            let cursor = store.cursor(LOCAL_CURSOR).await?;
            let dir = data_dir.join("track-queue");
            match super::queue_local::LocalQueue::open(&dir, cursor, config)? {
                Some(queue) => Arc::new(queue),
                None => {
                    tracing::warn!(dir = %dir.display(), "another process holds the tracking queue; this one will not queue events");
                    Arc::new(super::queue_local::HeldElsewhere)
                }
            }
        }
        QueueKind::Redis => {
            let Some(redis) = redis else { anyhow::bail!("track.queue = redis needs cache.redis_url") };
            Arc::new(super::queue_redis::RedisQueue::open(redis, data_dir, config).await?)
        }
        QueueKind::Rabbitmq => {
            let Some(bus) = bus else { anyhow::bail!("track.queue = rabbitmq needs events.amqp_url") };
            Arc::new(super::queue_rabbit::RabbitQueue::open(bus, config).await?)
        }
    })
}
