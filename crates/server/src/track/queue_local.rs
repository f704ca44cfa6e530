//! The embedded tracking queue: an append-only log of segment files under the data directory.
//! One thread appends and fsyncs; every batch that arrived while it was syncing goes into the
//! next write and shares the next fsync (group commit), so many requests pay for one sync and
//! a request hears "accepted" only once its batch is on disk.
//!
//! A frame is `len u32 | events u32 | crc32 u32 | payload` (little-endian). The writer reads
//! frames from its cursor, which it stores in the tracking store in the same transaction as the
//! events, so after a crash it resumes exactly where its last commit ended; segments wholly
//! before the cursor are deleted. At open the tail is checked and a torn last frame (a crash
//! mid-append, never acknowledged) is cut off.
//!
//! Written here rather than taken from a crate: the persistent-queue crates we looked at either
//! fsync per message or not at all, and this one must group-commit and share its cursor with
//! the store's transaction.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use flashback_store::track::{QueueCursor, TrackEvent};

use super::TrackConfig;
use super::queue::{Pulled, PushError, Receipt, TrackQueue, decode, encode};

const HEADER: u64 = 12;
/// Bytes one group write gathers at most.
const GROUP_BYTES: usize = 16 * 1024 * 1024;

struct Append {
    frame: Vec<u8>,
    done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    segment: u64,
    position: u64,
}

impl Pos {
    fn cursor(self) -> QueueCursor {
        QueueCursor {
            segment: i64::try_from(self.segment).unwrap_or(i64::MAX),
            position: i64::try_from(self.position).unwrap_or(i64::MAX),
        }
    }

    fn from_cursor(c: QueueCursor) -> Self {
        Self { segment: u64::try_from(c.segment).unwrap_or(1), position: u64::try_from(c.position).unwrap_or(0) }
    }
}

#[derive(Debug)]
struct Shared {
    /// The end of what is durable.
    end: Mutex<Pos>,
    notify: tokio::sync::Notify,
    backlog: AtomicU64,
}

impl Shared {
    fn end(&self) -> Pos {
        self.end.lock().map(|e| *e).unwrap_or_default()
    }
}

/// Where the writer reads, with the open segment file.
#[derive(Debug, Default)]
struct Reader {
    pos: Pos,
    file: Option<(u64, File)>,
}

/// The embedded queue.
#[derive(Debug)]
pub struct LocalQueue {
    /// Held open for its lock: one process appends to and reads a queue directory.
    _lock: File,
    dir: PathBuf,
    appender: mpsc::Sender<Append>,
    shared: Arc<Shared>,
    reader: tokio::sync::Mutex<Reader>,
    max_backlog: u64,
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.seg"))
}

fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|n| n.parse().ok()) {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn frame(events: &[TrackEvent]) -> Vec<u8> {
    let payload = encode(events);
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&u32::try_from(events.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads the frame at `file`'s position: (events in it, payload), or `None` if there is no
/// whole, intact frame there.
fn read_frame(file: &mut File, limit: u64, at: u64) -> std::io::Result<Option<(u32, Vec<u8>)>> {
    if at + HEADER > limit {
        return Ok(None);
    }
    let mut header = [0u8; 12];
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let count = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if at + HEADER + u64::from(len) > limit {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    Ok(Some((count, payload)))
}

/// Checks `segment` from `from`: returns where its intact frames end and how many events they
/// hold; cuts off anything after (a torn append).
fn recover_segment(dir: &Path, segment: u64, from: u64) -> std::io::Result<(u64, u64)> {
    let path = segment_path(dir, segment);
    let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
    let len = file.metadata()?.len();
    let (mut at, mut events) = (from.min(len), 0u64);
    while let Some((count, payload)) = read_frame(&mut file, len, at)? {
        at += HEADER + payload.len() as u64;
        events += u64::from(count);
    }
    if at < len {
        tracing::warn!(segment, kept = at, cut = len - at, "tracking queue: cutting off a torn tail");
        file.set_len(at)?;
        file.sync_all()?;
    }
    Ok((at, events))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalQueue {
    /// Opens the log in `dir`, resuming after `cursor` (where the store says the writer got).
    /// `Ok(None)` when another process holds the directory (a server, while a CLI command runs).
    pub fn open(dir: &Path, cursor: Option<QueueCursor>, config: &TrackConfig) -> anyhow::Result<Option<Self>> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let mut existing = segments(dir)?;
        let start = match cursor {
            Some(c) => Pos::from_cursor(c),
            None => Pos { segment: existing.first().copied().unwrap_or(1), position: 0 },
        };
        for &old in existing.iter().filter(|&&s| s < start.segment) {
            std::fs::remove_file(segment_path(dir, old))?;
        }
        existing.retain(|&s| s >= start.segment);
        if existing.is_empty() {
            File::create(segment_path(dir, start.segment))?.sync_all()?;
            sync_dir(dir)?;
            existing.push(start.segment);
        }
        let mut backlog = 0;
        let mut end = Pos::default();
        for &segment in &existing {
            let from = if segment == start.segment { start.position } else { 0 };
            let (stop, events) = recover_segment(dir, segment, from)?;
            backlog += events;
            end = Pos { segment, position: stop };
        }
        let shared = Arc::new(Shared {
            end: Mutex::new(end),
            notify: tokio::sync::Notify::new(),
            backlog: AtomicU64::new(backlog),
        });
        let file = OpenOptions::new().append(true).open(segment_path(dir, end.segment))?;
        let (tx, rx) = mpsc::channel();
        let appender =
            Appender { dir: dir.to_owned(), end, file, segment_bytes: config.segment_bytes, shared: shared.clone() };
        std::thread::Builder::new().name("track-queue".into()).spawn(move || appender.run(&rx))?;
        tracing::info!(dir = %dir.display(), backlog, "tracking queue open");
        Ok(Some(Self {
            _lock: lock,
            dir: dir.to_owned(),
            appender: tx,
            shared,
            reader: tokio::sync::Mutex::new(Reader { pos: start, file: None }),
            max_backlog: config.max_backlog_events,
        }))
    }

    fn read(dir: &Path, mut reader: Reader, end: Pos, max_events: usize) -> std::io::Result<(Reader, Vec<TrackEvent>)> {
        let mut events = Vec::new();
        while events.len() < max_events && reader.pos < end {
            if reader.file.as_ref().is_none_or(|(s, _)| *s != reader.pos.segment) {
                reader.file = Some((reader.pos.segment, File::open(segment_path(dir, reader.pos.segment))?));
            }
            let Some((_, file)) = reader.file.as_mut() else { break };
            let limit = if reader.pos.segment == end.segment { end.position } else { file.metadata()?.len() };
            match read_frame(file, limit, reader.pos.position)? {
                Some((_, payload)) => {
                    reader.pos.position += HEADER + payload.len() as u64;
                    events.extend(decode(&payload).map_err(std::io::Error::other)?);
                }
                // A finished segment: the next one starts at 0.
                None if reader.pos.segment < end.segment => {
                    reader.pos = Pos { segment: reader.pos.segment + 1, position: 0 };
                }
                None => {
                    return Err(std::io::Error::other(format!(
                        "tracking queue: no intact frame at {:?} before the durable end {:?}",
                        reader.pos, end
                    )));
                }
            }
        }
        Ok((reader, events))
    }
}

struct Appender {
    dir: PathBuf,
    end: Pos,
    file: File,
    segment_bytes: u64,
    shared: Arc<Shared>,
}

impl Appender {
    fn run(mut self, rx: &mpsc::Receiver<Append>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            let mut bytes = group[0].frame.len();
            while bytes < GROUP_BYTES {
                match rx.try_recv() {
                    Ok(a) => {
                        bytes += a.frame.len();
                        group.push(a);
                    }
                    Err(_) => break,
                }
            }
            let result = self.append(&group, bytes);
            if result.is_ok() {
                self.shared.notify.notify_one();
            }
            for a in group {
                let _ =
                    a.done.send(result.as_ref().map(|_| ()).map_err(|e| std::io::Error::new(e.kind(), e.to_string())));
            }
        }
    }

    fn append(&mut self, group: &[Append], bytes: usize) -> std::io::Result<()> {
        if self.end.position > 0 && self.end.position + bytes as u64 > self.segment_bytes {
            let next = self.end.segment + 1;
            let file = OpenOptions::new().create(true).append(true).open(segment_path(&self.dir, next))?;
            sync_dir(&self.dir)?;
            self.file = file;
            self.end = Pos { segment: next, position: 0 };
        }
        let mut buf = Vec::with_capacity(bytes);
        for a in group {
            buf.extend_from_slice(&a.frame);
        }
        let written = self.file.write_all(&buf).and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Drop whatever part made it; nobody was told it did.
            let _ = self.file.set_len(self.end.position);
            return Err(e);
        }
        self.end.position += buf.len() as u64;
        if let Ok(mut end) = self.shared.end.lock() {
            *end = self.end;
        }
        Ok(())
    }
}

#[async_trait]
impl TrackQueue for LocalQueue {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn push(&self, events: &[TrackEvent]) -> Result<(), PushError> {
        let n = events.len() as u64;
        let reserved = self
            .shared
            .backlog
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| (b + n <= self.max_backlog).then_some(b + n));
        if reserved.is_err() {
            return Err(PushError::Full);
        }
        let (done, durable) = tokio::sync::oneshot::channel();
        let sent = self.appender.send(Append { frame: frame(events), done });
        let result = match sent {
            Ok(()) => durable.await.map_err(|_| anyhow::anyhow!("the tracking queue's appender stopped")),
            Err(_) => Err(anyhow::anyhow!("the tracking queue's appender stopped")),
        };
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.shared.backlog.fetch_sub(n, Ordering::AcqRel);
                Err(PushError::Unavailable(e.into()))
            }
            Err(e) => {
                self.shared.backlog.fetch_sub(n, Ordering::AcqRel);
                Err(PushError::Unavailable(e))
            }
        }
    }

    async fn pull(&self, max_events: usize, wait: Duration) -> anyhow::Result<Option<Pulled>> {
        let mut guard = self.reader.lock().await;
        let notified = self.shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if guard.pos >= self.shared.end() {
            let _ = tokio::time::timeout(wait, notified).await;
        }
        let end = self.shared.end();
        if guard.pos >= end {
            return Ok(None);
        }
        let from = guard.pos;
        let dir = self.dir.clone();
        let reader = std::mem::take(&mut *guard);
        let (reader, events) =
            tokio::task::spawn_blocking(move || Self::read(&dir, reader, end, max_events.max(1))).await??;
        let cursor = reader.pos.cursor();
        *guard = reader;
        Ok(Some(Pulled { events, cursor: Some(cursor), receipt: Receipt::Local { from: from.cursor() } }))
    }

    async fn ack(&self, pulled: &Pulled) -> anyhow::Result<()> {
        let n = pulled.events.len() as u64;
        let _ = self.shared.backlog.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| Some(b.saturating_sub(n)));
        if let Some(c) = pulled.cursor {
            let upto = Pos::from_cursor(c).segment;
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                for old in segments(&dir)?.into_iter().filter(|&s| s < upto) {
                    std::fs::remove_file(segment_path(&dir, old))?;
                }
                Ok(())
            })
            .await??;
        }
        Ok(())
    }

    async fn nack(&self, pulled: &Pulled) -> anyhow::Result<()> {
        if let Receipt::Local { from } = pulled.receipt {
            let mut guard = self.reader.lock().await;
            *guard = Reader { pos: Pos::from_cursor(from), file: None };
        }
        Ok(())
    }

    async fn backlog(&self) -> anyhow::Result<u64> {
        Ok(self.shared.backlog.load(Ordering::Acquire))
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

    async fn pull_all(q: &LocalQueue) -> (Vec<u128>, Vec<Pulled>) {
        let (mut ids, mut pulls) = (Vec::new(), Vec::new());
        while let Some(p) = q.pull(1_000, Duration::from_millis(50)).await.expect("pull") {
            ids.extend(p.events.iter().map(|e| e.id));
            pulls.push(p);
        }
        (ids, pulls)
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_every_acknowledged_batch_reads_back() {
        let dir = tempfile::tempdir().expect("dir");
        let q = LocalQueue::open(dir.path(), None, &config()).expect("open").expect("lock");
        for b in 0..3 {
            q.push(&batch(b * 10, 10)).await.expect("push");
        }
        drop(q);
        // A crash mid-append leaves half a frame behind.
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).expect("segment");
        f.write_all(&[200, 0, 0, 0, 10, 0]).expect("garbage");
        drop(f);
        let q = LocalQueue::open(dir.path(), None, &config()).expect("reopen").expect("lock");
        assert_eq!(q.backlog().await.expect("backlog"), 30);
        q.push(&batch(100, 5)).await.expect("push after recovery");
        let (ids, _) = pull_all(&q).await;
        let expected: Vec<u128> = (0..30).chain(100..105).collect();
        assert_eq!(ids, expected);
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_a_held_queue() {
        let dir = tempfile::tempdir().expect("dir");
        let first = LocalQueue::open(dir.path(), None, &config()).expect("open");
        assert!(first.is_some());
        assert!(LocalQueue::open(dir.path(), None, &config()).expect("open").is_none());
        drop(first);
        assert!(LocalQueue::open(dir.path(), None, &config()).expect("open").is_some());
    }

    #[tokio::test]
    async fn segments_roll_resume_from_the_cursor_and_go_once_acknowledged() {
        let dir = tempfile::tempdir().expect("dir");
        let q = LocalQueue::open(dir.path(), None, &config()).expect("open").expect("lock");
        // About 3 MiB in 100-event batches: at least three segments.
        for b in 0..200 {
            q.push(&batch(b * 100, 100)).await.expect("push");
        }
        assert!(segments(dir.path()).expect("list").len() >= 3);
        let first = q.pull(5_000, Duration::from_millis(50)).await.expect("pull").expect("some");
        assert_eq!(first.events.len(), 5_000);
        q.ack(&first).await.expect("ack");
        let cursor = first.cursor.expect("cursor");
        // A pull whose write fails is handed back and read again.
        let second = q.pull(1_000, Duration::from_millis(50)).await.expect("pull").expect("some");
        q.nack(&second).await.expect("nack");
        let again = q.pull(1_000, Duration::from_millis(50)).await.expect("pull").expect("some");
        assert_eq!(again.events[0].id, second.events[0].id);
        drop((second, again, q));
        // Restart from the stored cursor: what was acknowledged is not read again.
        let q = LocalQueue::open(dir.path(), Some(cursor), &config()).expect("reopen").expect("lock");
        assert_eq!(q.backlog().await.expect("backlog"), 15_000);
        let (ids, pulls) = pull_all(&q).await;
        assert_eq!(ids, (5_000..20_000).collect::<Vec<u128>>());
        for p in &pulls {
            q.ack(p).await.expect("ack");
        }
        assert_eq!(q.backlog().await.expect("backlog"), 0);
        assert_eq!(segments(dir.path()).expect("list").len(), 1, "only the segment being written remains");
    }
}
