//! The embedded tracking queue: a [`Journal`] under the data directory, one frame per pushed
//! batch, so a request hears "accepted" only once its batch is on disk and many requests share
//! one fsync.
//!
//! The writer reads frames from its cursor, which it stores in the tracking store in the same
//! transaction as the events, so after a crash it resumes exactly where its last commit ended;
//! segments wholly before the cursor are deleted.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flashback_store::track::{QueueCursor, TrackEvent};

use super::TrackConfig;
use super::queue::{Pulled, PushError, Receipt, TrackQueue, decode, encode};
use crate::journal::{Journal, Pos};

fn pos(c: QueueCursor) -> Pos {
    Pos { segment: u64::try_from(c.segment).unwrap_or(1), position: u64::try_from(c.position).unwrap_or(0) }
}

fn cursor(p: Pos) -> QueueCursor {
    QueueCursor {
        segment: i64::try_from(p.segment).unwrap_or(i64::MAX),
        position: i64::try_from(p.position).unwrap_or(i64::MAX),
    }
}

/// The embedded queue.
#[derive(Debug)]
pub struct LocalQueue {
    journal: Journal,
    backlog: AtomicU64,
    max_backlog: u64,
}

impl LocalQueue {
    /// Opens the log in `dir`, resuming after `cursor` (where the store says the writer got).
    /// `Ok(None)` when another process holds the directory (a server, while a CLI command runs).
    pub fn open(dir: &Path, cursor: Option<QueueCursor>, config: &TrackConfig) -> anyhow::Result<Option<Self>> {
        let Some((journal, backlog)) = Journal::open(dir, "track-queue", cursor.map(pos), config.segment_bytes)? else {
            return Ok(None);
        };
        Ok(Some(Self { journal, backlog: AtomicU64::new(backlog), max_backlog: config.max_backlog_events }))
    }
}

#[async_trait]
impl TrackQueue for LocalQueue {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn readiness(&self) -> Option<Result<(), String>> {
        Some(if self.journal.failed() {
            Err("a journal write failed: tracking events are refused until a restart".into())
        } else {
            Ok(())
        })
    }

    async fn push(&self, events: &[TrackEvent]) -> Result<(), PushError> {
        let n = events.len() as u64;
        let reserved = self
            .backlog
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| (b + n <= self.max_backlog).then_some(b + n));
        if reserved.is_err() {
            return Err(PushError::Full);
        }
        let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
        if let Err(e) = self.journal.append(&encode(events), count).await {
            self.backlog.fetch_sub(n, Ordering::AcqRel);
            return Err(PushError::Unavailable(e.into()));
        }
        Ok(())
    }

    async fn pull(&self, max_events: usize, wait: Duration) -> anyhow::Result<Option<Pulled>> {
        let Some(frames) = self.journal.read(max_events, wait).await? else { return Ok(None) };
        let mut events = Vec::new();
        for payload in &frames.payloads {
            events.extend(decode(payload)?);
        }
        Ok(Some(Pulled {
            events,
            cursor: Some(cursor(frames.to)),
            receipt: Receipt::Local { from: cursor(frames.from) },
        }))
    }

    async fn ack(&self, pulled: &Pulled) -> anyhow::Result<()> {
        let n = pulled.events.len() as u64;
        let _ = self.backlog.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| Some(b.saturating_sub(n)));
        if let Some(c) = pulled.cursor {
            self.journal.release(pos(c)).await?;
        }
        Ok(())
    }

    async fn nack(&self, pulled: &Pulled) -> anyhow::Result<()> {
        if let Receipt::Local { from } = pulled.receipt {
            self.journal.rewind(pos(from)).await;
        }
        Ok(())
    }

    async fn backlog(&self) -> anyhow::Result<u64> {
        Ok(self.backlog.load(Ordering::Acquire))
    }
}

/// Stands in for the log when another process holds it: nothing is queued or read here.
#[derive(Debug)]
pub struct HeldElsewhere;

#[async_trait]
impl TrackQueue for HeldElsewhere {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn readiness(&self) -> Option<Result<(), String>> {
        Some(Err("another process holds data_dir/track-queue: tracking events are refused".into()))
    }

    async fn push(&self, _events: &[TrackEvent]) -> Result<(), PushError> {
        Err(PushError::Unavailable(anyhow::anyhow!("another process holds the tracking queue directory")))
    }

    async fn pull(&self, _max_events: usize, wait: Duration) -> anyhow::Result<Option<Pulled>> {
        tokio::time::sleep(wait).await;
        Ok(None)
    }

    async fn ack(&self, _pulled: &Pulled) -> anyhow::Result<()> {
        Ok(())
    }

    async fn nack(&self, _pulled: &Pulled) -> anyhow::Result<()> {
        Ok(())
    }

    async fn backlog(&self) -> anyhow::Result<u64> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TrackConfig {
        TrackConfig { segment_bytes: 1024 * 1024, ..TrackConfig::default() }
    }

    fn batch(from: u128, n: u128) -> Vec<TrackEvent> {
        (from..from + n)
            .map(|i| TrackEvent {
                id: i,
                ts_ms: 1,
                received_ms: 1,
                user_id: None,
                visitor: format!("a:{i}"),
                module: "m".into(),
                action: "view".into(),
                object_type: "sku".into(),
                object_id: "x".repeat(60),
                properties: None,
            })
            .collect()
    }

    #[tokio::test]
    async fn batches_come_back_in_order_and_the_backlog_counts_events_until_acknowledged() {
        let dir = tempfile::tempdir().expect("dir");
        let q = LocalQueue::open(dir.path(), None, &config()).expect("open").expect("lock");
        for b in 0..50 {
            q.push(&batch(b * 100, 100)).await.expect("push");
        }
        assert_eq!(q.backlog().await.expect("backlog"), 5_000);
        let first = q.pull(1_000, Duration::from_millis(50)).await.expect("pull").expect("some");
        assert_eq!(first.events.iter().map(|e| e.id).collect::<Vec<_>>(), (0..1_000).collect::<Vec<u128>>());
        // A pull whose write fails is handed back and read again.
        let second = q.pull(1_000, Duration::from_millis(50)).await.expect("pull").expect("some");
        q.nack(&second).await.expect("nack");
        let again = q.pull(1_000, Duration::from_millis(50)).await.expect("pull").expect("some");
        assert_eq!(again.events[0].id, second.events[0].id);
        q.ack(&first).await.expect("ack");
        q.ack(&again).await.expect("ack");
        assert_eq!(q.backlog().await.expect("backlog"), 3_000);
        let cursor = again.cursor.expect("cursor");
        drop(q);
        // Restart from the stored cursor: what was acknowledged is not read again.
        let q = LocalQueue::open(dir.path(), Some(cursor), &config()).expect("reopen").expect("lock");
        assert_eq!(q.backlog().await.expect("backlog"), 3_000);
        let next = q.pull(100, Duration::from_millis(50)).await.expect("pull").expect("some");
        assert_eq!(next.events[0].id, 2_000);
    }

    #[tokio::test]
    async fn a_full_backlog_refuses_a_push_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let small = TrackConfig { max_backlog_events: 150, ..config() };
        let q = LocalQueue::open(dir.path(), None, &small).expect("open").expect("lock");
        q.push(&batch(0, 100)).await.expect("push");
        assert!(matches!(q.push(&batch(100, 100)).await, Err(PushError::Full)));
        assert_eq!(q.backlog().await.expect("backlog"), 100);
        let pulled = q.pull(1_000, Duration::from_millis(50)).await.expect("pull").expect("some");
        assert_eq!(pulled.events.len(), 100);
    }
}
