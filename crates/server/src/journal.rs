//! An append-only journal of segment files under the data directory, with group commit: one
//! thread appends and fsyncs, and every entry that arrived while it was syncing goes into the
//! next write and shares the next fsync, so many callers pay for one sync and each hears "done"
//! only once its entry is on disk. The embedded tracking queue and the `memory` flash-sale
//! engine's reservations are both kept in one.
//!
//! A frame is `len u32 | count u32 | crc32 u32 | payload` (little-endian); `count` is how many
//! records the caller packed into the payload (the journal does not look inside). A reader
//! reads frames from its position up to the durable end; the owner says when everything
//! before a position is safe elsewhere, and segments wholly before it are deleted. At open the
//! tail is checked and a torn last frame (a crash mid-append, never acknowledged) is cut off.
//!
//! Fail-stop: after a failed write or fsync the journal refuses every later append (what the
//! kernel kept of that write is unknowable, as PostgreSQL learned); a restart reads what is
//! really on disk.
//!
//! Written here rather than taken from a crate: the persistent-queue crates we looked at either
//! fsync per message or not at all, and this one must group-commit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const HEADER_BYTES: usize = 12;
const HEADER: u64 = HEADER_BYTES as u64;
/// Bytes one group write gathers at most.
const GROUP_BYTES: usize = 16 * 1024 * 1024;
/// How long a busy journal waits for more appends before it syncs a group (PostgreSQL's
/// `commit_delay`, MySQL's `binlog_group_commit_sync_delay`): it stops waiting once as many
/// appends as the last group carried have come. On this project's 2-core VM an fdatasync
/// costs ~0.15 ms, so without a wait 64 buyers shared ~2,600 syncs a second, ~8 per sync,
/// and each sync is a VM exit plus two context switches.
const GATHER: Duration = Duration::from_micros(500);
/// How often a gathering journal looks for more appends.
const GATHER_POLL: Duration = Duration::from_micros(100);

/// A place in the journal: a segment and a byte offset in it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// The segment's number (its file name).
    pub segment: u64,
    /// Bytes into the segment.
    pub position: u64,
}

struct Append {
    frame: Vec<u8>,
    done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
}

#[derive(Debug)]
struct Shared {
    /// The end of what is durable.
    end: Mutex<Pos>,
    notify: tokio::sync::Notify,
    /// Set by the first failed write; no append succeeds after it.
    failed: AtomicBool,
}

impl Shared {
    fn end(&self) -> Pos {
        self.end.lock().map(|e| *e).unwrap_or_default()
    }
}

/// Where the reader reads, with the open segment file.
#[derive(Debug, Default)]
struct Reader {
    pos: Pos,
    file: Option<(u64, File)>,
}

/// Frames read from the journal, in the order appended.
#[derive(Debug)]
pub struct Frames {
    /// Each frame's payload.
    pub payloads: Vec<Vec<u8>>,
    /// Where the first frame starts (to read them again).
    pub from: Pos,
    /// Where the last frame ends.
    pub to: Pos,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    /// Held open for its lock: one process appends to and reads a journal directory.
    _lock: File,
    dir: PathBuf,
    label: &'static str,
    appender: mpsc::Sender<Append>,
    shared: Arc<Shared>,
    reader: tokio::sync::Mutex<Reader>,
    /// No segment before this one is left: a release that does not pass it has nothing to do.
    first_kept: AtomicU64,
}

/// The file of `segment` in a journal directory.
pub(crate) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.seg"))
}

/// The segments present in a journal directory, oldest first.
pub(crate) fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
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

fn frame(payload: &[u8], count: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What lies at the start of a buffer.
enum Parsed<'a> {
    /// A whole, intact frame: its count and payload.
    Frame(u32, &'a [u8]),
    /// Not enough bytes for the frame: it needs this many in all.
    Short(u64),
    /// A whole frame whose checksum does not match.
    Bad,
}

fn word(buf: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(b) = buf.get(at..at + 4) {
        w.copy_from_slice(b);
    }
    u32::from_le_bytes(w)
}

/// A length read from disk as a buffer size (saturating: an absurd one then fails to fit).
fn to_len(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn parse_frame(buf: &[u8]) -> Parsed<'_> {
    if (buf.len() as u64) < HEADER {
        return Parsed::Short(HEADER);
    }
    let (len, count, crc) = (word(buf, 0), word(buf, 4), word(buf, 8));
    let total = HEADER + u64::from(len);
    match buf.get(HEADER_BYTES..to_len(total)) {
        None => Parsed::Short(total),
        Some(payload) if crc32fast::hash(payload) == crc => Parsed::Frame(count, payload),
        Some(_) => Parsed::Bad,
    }
}

/// Reads the frame at `at`: (its count, its payload), or `None` if there is no whole, intact
/// frame there before `limit`.
fn read_frame(file: &File, limit: u64, at: u64) -> std::io::Result<Option<(u32, Vec<u8>)>> {
    if at + HEADER > limit {
        return Ok(None);
    }
    let mut buf = vec![0u8; HEADER_BYTES];
    file.read_exact_at(&mut buf, at)?;
    if let Parsed::Short(total) = parse_frame(&buf) {
        if at + total > limit {
            return Ok(None);
        }
        buf.resize(to_len(total), 0);
        file.read_exact_at(&mut buf, at)?;
    }
    Ok(match parse_frame(&buf) {
        Parsed::Frame(count, payload) => Some((count, payload.to_vec())),
        Parsed::Short(_) | Parsed::Bad => None,
    })
}

/// Checks `segment` from `from`: returns where its intact frames end and the records they
/// hold; cuts off anything after (a torn append).
fn recover_segment(dir: &Path, label: &str, segment: u64, from: u64) -> std::io::Result<(u64, u64)> {
    let path = segment_path(dir, segment);
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let len = file.metadata()?.len();
    let (mut at, mut records) = (from.min(len), 0u64);
    while let Some((count, payload)) = read_frame(&file, len, at)? {
        at += HEADER + payload.len() as u64;
        records += u64::from(count);
    }
    if at < len {
        tracing::warn!(journal = label, segment, kept = at, cut = len - at, "journal: cutting off a torn tail");
        file.set_len(at)?;
        file.sync_all()?;
    }
    Ok((at, records))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Opens the journal in `dir`, reading from `start` (the first segment when `None`); also
    /// returns how many records lie after it. `Ok(None)` when another process holds the
    /// directory (a server, while a CLI command runs). Segments before `start` are deleted.
    pub fn open(
        dir: &Path,
        label: &'static str,
        start: Option<Pos>,
        segment_bytes: u64,
    ) -> anyhow::Result<Option<(Self, u64)>> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let mut existing = segments(dir)?;
        let start = start.unwrap_or(Pos { segment: existing.first().copied().unwrap_or(1), position: 0 });
        for &old in existing.iter().filter(|&&s| s < start.segment) {
            std::fs::remove_file(segment_path(dir, old))?;
        }
        existing.retain(|&s| s >= start.segment);
        if existing.is_empty() {
            File::create(segment_path(dir, start.segment))?.sync_all()?;
            sync_dir(dir)?;
            existing.push(start.segment);
        }
        let mut records = 0;
        let mut end = Pos::default();
        for &segment in &existing {
            let from = if segment == start.segment { start.position } else { 0 };
            let (stop, n) = recover_segment(dir, label, segment, from)?;
            records += n;
            end = Pos { segment, position: stop };
        }
        // A start past the durable end (a store whose cursor is newer than this journal: copies
        // restored in the wrong order, or a journal that lost its tail) would leave the reader
        // waiting for the end to pass it and then reading from the middle of a later frame,
        // which fails every read from then on. Everything before the end is before the start,
        // so it is stored already: read on from the end.
        let start = if start > end {
            tracing::warn!(
                journal = label,
                ?start,
                ?end,
                "journal: the start is past the durable end; reading from the end"
            );
            end
        } else {
            start
        };
        let shared = Arc::new(Shared {
            end: Mutex::new(end),
            notify: tokio::sync::Notify::new(),
            failed: AtomicBool::new(false),
        });
        let file = OpenOptions::new().append(true).open(segment_path(dir, end.segment))?;
        let (tx, rx) = mpsc::channel();
        let appender = Appender {
            dir: dir.to_owned(),
            end,
            file,
            segment_bytes,
            shared: shared.clone(),
            completer: Completer::spawn(),
        };
        std::thread::Builder::new().name(label.into()).spawn(move || appender.run(&rx))?;
        tracing::info!(journal = label, dir = %dir.display(), records, "journal open");
        let journal = Self {
            _lock: lock,
            dir: dir.to_owned(),
            label,
            appender: tx,
            shared,
            reader: tokio::sync::Mutex::new(Reader { pos: start, file: None }),
            first_kept: AtomicU64::new(start.segment),
        };
        Ok(Some((journal, records)))
    }

    /// Appends `payload` (holding `count` records); returns once it is durable.
    pub async fn append(&self, payload: &[u8], count: u32) -> std::io::Result<()> {
        let stopped = || std::io::Error::other(format!("the {} journal's appender stopped", self.label));
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(std::io::Error::other(format!(
                "the {} journal failed a write; restart to recover",
                self.label
            )));
        }
        let (done, durable) = tokio::sync::oneshot::channel();
        self.appender.send(Append { frame: frame(payload, count), done }).map_err(|_| stopped())?;
        durable.await.map_err(|_| stopped())?
    }

    /// Whole frames holding about `max_records` records at most (at least one frame), waiting up
    /// to `wait` when nothing new is durable; `None` when nothing came.
    pub async fn read(&self, max_records: usize, wait: Duration) -> anyhow::Result<Option<Frames>> {
        let mut guard = self.reader.lock().await;
        let notified = self.shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if guard.pos >= self.shared.end() && !wait.is_zero() {
            let _ = tokio::time::timeout(wait, notified).await;
        }
        let end = self.shared.end();
        if guard.pos >= end {
            return Ok(None);
        }
        let from = guard.pos;
        let (dir, label) = (self.dir.clone(), self.label);
        let reader = std::mem::take(&mut *guard);
        let (reader, payloads) =
            tokio::task::spawn_blocking(move || read_frames(&dir, label, reader, end, max_records.max(1))).await??;
        let to = reader.pos;
        *guard = reader;
        Ok(Some(Frames { payloads, from, to }))
    }

    /// Reads again from `from` (what was read after it was not kept).
    pub async fn rewind(&self, from: Pos) {
        *self.reader.lock().await = Reader { pos: from, file: None };
    }

    /// Everything before `upto` is kept elsewhere: deletes the segments wholly before it.
    pub async fn release(&self, upto: Pos) -> anyhow::Result<()> {
        // Owners release after every batch; only a batch that crossed into a later segment
        // frees a file, so the directory is listed once per segment, not once per batch.
        if upto.segment <= self.first_kept.load(Ordering::Acquire) {
            return Ok(());
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for old in segments(&dir)?.into_iter().filter(|&s| s < upto.segment) {
                std::fs::remove_file(segment_path(&dir, old))?;
            }
            Ok(())
        })
        .await??;
        self.first_kept.fetch_max(upto.segment, Ordering::AcqRel);
        Ok(())
    }

    /// Whether a write or fsync failed: no append succeeds until a restart.
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// The segment files present (for tests and operators).
    pub fn segment_count(&self) -> std::io::Result<usize> {
        segments(&self.dir).map(|s| s.len())
    }
}

/// Bytes the reader takes from a segment per read (a frame larger than this is read whole).
const READ_BYTES: u64 = 1 << 20;

fn read_frames(
    dir: &Path,
    label: &str,
    mut reader: Reader,
    end: Pos,
    max_records: usize,
) -> std::io::Result<(Reader, Vec<Vec<u8>>)> {
    let (mut payloads, mut records) = (Vec::new(), 0usize);
    let mut buf = Vec::new();
    while records < max_records && reader.pos < end {
        if reader.file.as_ref().is_none_or(|(s, _)| *s != reader.pos.segment) {
            reader.file = Some((reader.pos.segment, File::open(segment_path(dir, reader.pos.segment))?));
        }
        let Some((_, file)) = reader.file.as_ref() else { break };
        let limit = if reader.pos.segment == end.segment { end.position } else { file.metadata()?.len() };
        // One read for a range of frames, not a seek and two reads per frame: a flash-sale
        // reservation is a 40-byte frame of its own.
        let available = limit.saturating_sub(reader.pos.position);
        let mut want = available.min(READ_BYTES);
        let mut taken = 0u64;
        for _ in 0..2 {
            buf.resize(to_len(want), 0);
            file.read_exact_at(&mut buf, reader.pos.position)?;
            let mut rest = buf.as_slice();
            while records < max_records {
                let Parsed::Frame(count, payload) = parse_frame(rest) else { break };
                payloads.push(payload.to_vec());
                records += count as usize;
                let size = HEADER_BYTES + payload.len();
                taken += size as u64;
                rest = rest.get(size..).unwrap_or_default();
            }
            match parse_frame(&buf) {
                // The first frame is larger than the range read: read it whole.
                Parsed::Short(total) if taken == 0 && total > want && total <= available => want = total,
                _ => break,
            }
        }
        if taken > 0 {
            reader.pos.position += taken;
        } else if reader.pos.segment < end.segment {
            // A finished segment: the next one starts at 0.
            reader.pos = Pos { segment: reader.pos.segment + 1, position: 0 };
        } else {
            return Err(std::io::Error::other(format!(
                "{label} journal: no intact frame at {:?} before the durable end {end:?}",
                reader.pos
            )));
        }
    }
    Ok((reader, payloads))
}

/// A group's outcome, copied for each of its callers.
type Outcome = Result<(), (std::io::ErrorKind, String)>;

/// Tells a synced group's callers from a task on the async runtime: one cross-thread wake per
/// group (this task's) instead of the appender thread waking each caller's task itself.
struct Completer(tokio::sync::mpsc::UnboundedSender<(Vec<Append>, Outcome)>);

impl Completer {
    /// `None` outside a runtime (the appender then tells callers itself).
    fn spawn() -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<Append>, Outcome)>();
        runtime.spawn(async move {
            while let Some((group, outcome)) = rx.recv().await {
                tell(group, &outcome);
            }
        });
        Some(Self(tx))
    }
}

fn tell(group: Vec<Append>, outcome: &Outcome) {
    for a in group {
        let _ = a.done.send(outcome.clone().map_err(|(kind, e)| std::io::Error::new(kind, e)));
    }
}

struct Appender {
    completer: Option<Completer>,
    dir: PathBuf,
    end: Pos,
    file: File,
    segment_bytes: u64,
    shared: Arc<Shared>,
}

impl Appender {
    fn run(mut self, rx: &mpsc::Receiver<Append>) {
        // How many appends the last group carried: a busy journal waits a little for as many
        // again before it syncs; a lone caller does not wait at all.
        let mut last = 0usize;
        while let Ok(first) = rx.recv() {
            let deadline = Instant::now() + if last > 1 { GATHER } else { Duration::ZERO };
            let mut group = vec![first];
            let mut bytes = group[0].frame.len();
            while bytes < GROUP_BYTES {
                match rx.try_recv() {
                    Ok(a) => {
                        bytes += a.frame.len();
                        group.push(a);
                    }
                    Err(mpsc::TryRecvError::Empty) if group.len() < last => {
                        // Polled, not woken per append: a waiting receiver makes every send a
                        // futex wake and a context switch of this thread.
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        std::thread::sleep(left.min(GATHER_POLL));
                    }
                    Err(_) => break,
                }
            }
            last = group.len();
            let result = if self.shared.failed.load(Ordering::Acquire) {
                Err(std::io::Error::other("the journal failed a write earlier"))
            } else {
                self.append(&group, bytes)
            };
            match &result {
                Ok(()) => self.shared.notify.notify_one(),
                Err(_) => self.shared.failed.store(true, Ordering::Release),
            }
            let outcome = result.map_err(|e| (e.kind(), e.to_string()));
            match &self.completer {
                // The runtime is gone (shutting down): tell them from here.
                Some(c) => {
                    if let Err(tokio::sync::mpsc::error::SendError((group, outcome))) = c.0.send((group, outcome)) {
                        tell(group, &outcome);
                    }
                }
                None => tell(group, &outcome),
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
            tracing::error!(error = %e, "journal write failed; no further appends until a restart");
            return Err(e);
        }
        self.end.position += buf.len() as u64;
        if let Ok(mut end) = self.shared.end.lock() {
            *end = self.end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, start: Option<Pos>) -> (Journal, u64) {
        Journal::open(dir, "test", start, 1024 * 1024).expect("open").expect("lock")
    }

    async fn read_all(j: &Journal) -> (Vec<Vec<u8>>, Option<Pos>) {
        let (mut all, mut to) = (Vec::new(), None);
        while let Some(f) = j.read(1_000, Duration::from_millis(20)).await.expect("read") {
            all.extend(f.payloads);
            to = Some(f.to);
        }
        (all, to)
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_every_acknowledged_frame_reads_back() {
        let dir = tempfile::tempdir().expect("dir");
        let (j, _) = open(dir.path(), None);
        for b in 0u8..3 {
            j.append(&[b; 10], 10).await.expect("append");
        }
        drop(j);
        // A crash mid-append leaves half a frame behind.
        let mut f = OpenOptions::new().append(true).open(segment_path(dir.path(), 1)).expect("segment");
        f.write_all(&[200, 0, 0, 0, 10, 0]).expect("garbage");
        drop(f);
        let (j, records) = open(dir.path(), None);
        assert_eq!(records, 30);
        j.append(&[9; 4], 4).await.expect("append after recovery");
        let (all, _) = read_all(&j).await;
        assert_eq!(all, vec![vec![0; 10], vec![1; 10], vec![2; 10], vec![9; 4]]);
    }

    #[tokio::test]
    async fn frames_larger_than_one_read_and_many_small_ones_read_back_in_order_and_by_count() {
        let dir = tempfile::tempdir().expect("dir");
        // Segments of 8 MiB: the big frames do not roll them, so one read range holds many
        // small frames and a big frame spans more than one read.
        let (j, _) = Journal::open(dir.path(), "test", None, 8 << 20).expect("open").expect("lock");
        let mut expected = Vec::new();
        for i in 0..3_000u32 {
            let payload = if i % 1_000 == 500 {
                vec![(i % 251) as u8; usize::try_from(READ_BYTES).expect("fits") + 12_345]
            } else {
                i.to_le_bytes().to_vec()
            };
            j.append(&payload, 1).await.expect("append");
            expected.push(payload);
        }
        // A bounded read stops at its count, and the next read goes on from there.
        let first = j.read(7, Duration::ZERO).await.expect("read").expect("frames");
        assert_eq!(first.payloads, expected[..7]);
        let (rest, _) = read_all(&j).await;
        assert_eq!(rest.len(), expected.len() - 7);
        assert!(rest == expected[7..], "every frame after the first read, in order, byte for byte");
    }

    #[tokio::test]
    async fn a_start_past_the_durable_end_reads_on_from_the_end() {
        let dir = tempfile::tempdir().expect("dir");
        let (j, _) = open(dir.path(), None);
        for b in 0u8..3 {
            j.append(&[b; 10], 1).await.expect("append");
        }
        let (_, end) = read_all(&j).await;
        let end = end.expect("read something");
        drop(j);
        // A cursor stored after frames this copy of the journal never got: inside the last
        // segment, and in a segment that does not exist at all.
        for start in
            [Pos { segment: end.segment, position: end.position + 100 }, Pos { segment: end.segment + 3, position: 40 }]
        {
            let (j, records) = open(dir.path(), Some(start));
            assert_eq!(records, 0, "nothing after the start");
            for b in 10u8..14 {
                j.append(&[b; 30], 1).await.expect("append");
            }
            let (all, _) = read_all(&j).await;
            assert_eq!(all, (10u8..14).map(|b| vec![b; 30]).collect::<Vec<_>>(), "from {start:?}");
        }
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_a_held_journal() {
        let dir = tempfile::tempdir().expect("dir");
        let first = Journal::open(dir.path(), "test", None, 1 << 20).expect("open");
        assert!(first.is_some());
        assert!(Journal::open(dir.path(), "test", None, 1 << 20).expect("open").is_none());
        drop(first);
        assert!(Journal::open(dir.path(), "test", None, 1 << 20).expect("open").is_some());
    }

    #[tokio::test]
    async fn segments_roll_rewind_resume_and_go_once_released() {
        let dir = tempfile::tempdir().expect("dir");
        let (j, _) = open(dir.path(), None);
        // 200 frames of 16 KiB: at least three segments of 1 MiB.
        for b in 0..200u32 {
            let mut payload = vec![0u8; 16 * 1024];
            payload[..4].copy_from_slice(&b.to_le_bytes());
            j.append(&payload, 1).await.expect("append");
        }
        assert!(j.segment_count().expect("list") >= 3);
        let first = j.read(100, Duration::from_millis(20)).await.expect("read").expect("some");
        assert_eq!(first.payloads.len(), 100);
        j.release(first.to).await.expect("release");
        let second = j.read(10, Duration::from_millis(20)).await.expect("read").expect("some");
        j.rewind(second.from).await;
        let again = j.read(10, Duration::from_millis(20)).await.expect("read").expect("some");
        assert_eq!(again.payloads, second.payloads, "a rewound read reads the same frames");
        drop((second, again, j));
        // Reopened at the released position: what was released is not read again.
        let (j, records) = open(dir.path(), Some(first.to));
        assert_eq!(records, 100);
        let (all, to) = read_all(&j).await;
        let numbers: Vec<u32> = all.iter().map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]])).collect();
        assert_eq!(numbers, (100..200).collect::<Vec<u32>>());
        j.release(to.expect("read something")).await.expect("release");
        assert_eq!(j.segment_count().expect("list"), 1, "only the segment being written remains");
    }
}
