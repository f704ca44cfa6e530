//! The scaled-out tracking queue on RabbitMQ (`track.queue = "rabbitmq"`): the durable queue
//! `<events.exchange_prefix>.track`, shared by every instance, one persistent message per
//! pushed batch.
//!
//! - The bound is the broker's: the queue is declared with `x-overflow: reject-publish` and
//!   `x-max-length` = `track.max_backlog_events / track.max_batch_events` messages (at least
//!   1), so the events *ready* never pass `track.max_backlog_events` (batches are at most
//!   `max_batch_events` each). RabbitMQ does not count messages delivered and not yet acked,
//!   so while writers hold batches up to their prefetch more may sit in the queue. Arguments
//!   are fixed when the queue is first declared: after changing either key, delete the queue
//!   (when drained) or the declaration fails at start.
//! - Push publishes with publisher confirms and returns once the broker confirmed (the message
//!   is on disk in the durable queue). A nack — the queue is full — is `PushError::Full` (503
//!   with Retry-After); an unroutable return (the queue was deleted under us) or a timeout is
//!   `Unavailable`.
//! - Every instance consumes with a prefetch of `track.writer_batch_events /
//!   track.max_batch_events` messages, acks after the store commits, and nacks (requeue) on a
//!   failed write. It starts consuming at its first pull. A dead instance's unacked messages
//!   go back to the queue when its connection closes. Messages a writer holds (up to its
//!   prefetch) are not ready, so they are outside the broker's bound. Redelivery is harmless: the store drops event ids it holds.
//! - Backlog is an estimate: messages ready × the mean events per message this instance has
//!   seen (each message carries its count in the `x-items` header; before any, the batch
//!   bound), plus the events this instance has pulled and not yet acked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flashback_infra::RabbitBus;
use flashback_infra::bus::{Published, WorkItem, WorkQueue, WorkTag};
use flashback_store::track::TrackEvent;

use super::TrackConfig;
use super::queue::{Pulled, PushError, Receipt, TrackQueue, decode, encode};

/// The queue's short name (the full name is `<exchange_prefix>.track`).
pub const QUEUE: &str = "track";

/// The RabbitMQ queue.
#[derive(Debug)]
pub struct RabbitQueue {
    queue: WorkQueue,
    max_batch: u64,
    /// A message taken that did not fit the last pull; the next pull starts with it.
    carry: tokio::sync::Mutex<Option<WorkItem>>,
    in_flight: AtomicU64,
    seen_events: AtomicU64,
    seen_messages: AtomicU64,
}

/// `x-max-length` in messages for the configured bounds.
pub fn max_length(config: &TrackConfig) -> u32 {
    let batches = config.max_backlog_events / config.max_batch_events.max(1) as u64;
    u32::try_from(batches.max(1)).unwrap_or(u32::MAX)
}

/// The prefetch: as many batches as one writer transaction takes.
pub fn prefetch(config: &TrackConfig) -> u16 {
    let batches = config.writer_batch_events / config.max_batch_events.max(1);
    u16::try_from(batches.max(1)).unwrap_or(u16::MAX)
}

impl RabbitQueue {
    /// Declares the queue and starts consuming it.
    pub async fn open(bus: &RabbitBus, config: &TrackConfig) -> anyhow::Result<Self> {
        let queue = bus.work_queue(QUEUE, max_length(config), prefetch(config)).await?;
        Ok(Self {
            queue,
            max_batch: config.max_batch_events as u64,
            carry: tokio::sync::Mutex::new(None),
            in_flight: AtomicU64::new(0),
            seen_events: AtomicU64::new(0),
            seen_messages: AtomicU64::new(0),
        })
    }

    /// The full queue name.
    pub fn name(&self) -> &str {
        self.queue.name()
    }

    fn seen(&self, events: u64) {
        self.seen_events.fetch_add(events, Ordering::Relaxed);
        self.seen_messages.fetch_add(1, Ordering::Relaxed);
    }

    fn mean_events(&self) -> u64 {
        let messages = self.seen_messages.load(Ordering::Relaxed);
        if messages == 0 { self.max_batch } else { self.seen_events.load(Ordering::Relaxed).div_ceil(messages) }
    }

    /// Adds `item` to the pull, or drops it (acked, logged) when it cannot be read.
    async fn take(&self, item: WorkItem, events: &mut Vec<TrackEvent>, tags: &mut Vec<WorkTag>) -> anyhow::Result<()> {
        match decode(&item.payload) {
            Ok(batch) => {
                self.seen(batch.len() as u64);
                events.extend(batch);
                tags.push(item.tag);
            }
            Err(e) => {
                tracing::error!(error = %e, "unreadable tracking batch on the queue; dropped");
                self.queue.ack(&[item.tag]).await?;
            }
        }
        Ok(())
    }

    fn settle(&self, pulled: &Pulled) -> Vec<WorkTag> {
        let n = pulled.events.len() as u64;
        let _ = self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| Some(b.saturating_sub(n)));
        match &pulled.receipt {
            Receipt::Rabbit(tags) => tags.clone(),
            _ => Vec::new(),
        }
    }
}

#[async_trait]
impl TrackQueue for RabbitQueue {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    async fn push(&self, events: &[TrackEvent]) -> Result<(), PushError> {
        match self.queue.publish(&encode(events), events.len() as u64).await {
            Ok(Published::Stored) => {
                self.seen(events.len() as u64);
                Ok(())
            }
            Ok(Published::Refused) => Err(PushError::Full),
            Ok(Published::Unroutable) => {
                Err(PushError::Unavailable(anyhow::anyhow!("the queue {} does not exist", self.queue.name())))
            }
            Err(e) => Err(PushError::Unavailable(e.into())),
        }
    }

    async fn pull(&self, max_events: usize, wait: Duration) -> anyhow::Result<Option<Pulled>> {
        let mut carry = self.carry.lock().await;
        let (mut events, mut tags) = (Vec::new(), Vec::new());
        let first = match carry.take() {
            Some(item) => Some(item),
            None => self.queue.next(wait).await?,
        };
        let Some(first) = first else { return Ok(None) };
        self.take(first, &mut events, &mut tags).await?;
        // Then whatever is already delivered, while it fits.
        while let Some(item) = self.queue.next(Duration::ZERO).await? {
            if !tags.is_empty() && events.len() as u64 + item.items > max_events as u64 {
                *carry = Some(item);
                break;
            }
            self.take(item, &mut events, &mut tags).await?;
        }
        drop(carry);
        if tags.is_empty() {
            return Ok(None);
        }
        self.in_flight.fetch_add(events.len() as u64, Ordering::AcqRel);
        Ok(Some(Pulled { events, cursor: None, receipt: Receipt::Rabbit(tags) }))
    }

    async fn ack(&self, pulled: &Pulled) -> anyhow::Result<()> {
        let tags = self.settle(pulled);
        self.queue.ack(&tags).await?;
        Ok(())
    }

    async fn nack(&self, pulled: &Pulled) -> anyhow::Result<()> {
        let tags = self.settle(pulled);
        self.queue.nack(&tags).await?;
        Ok(())
    }

    async fn backlog(&self) -> anyhow::Result<u64> {
        let ready = u64::from(self.queue.ready().await?);
        Ok(ready * self.mean_events() + self.in_flight.load(Ordering::Acquire))
    }
}
