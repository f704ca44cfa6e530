//! The journals of a live data directory (`flash-journal/`, `track-queue/`), copied while the
//! server holds them: it appends to them, and deletes a segment once everything in it is
//! stored elsewhere (the flash journal's reservations imported into `flashback.db`,
//! idempotently; the tracking batches written to `track.db` with the queue's read cursor).
//!
//! Embedded, the segments are opened in the window in which the SQLite snapshots of the store
//! the entries go to are pinned — a window in which that store took no commit (`snapshot`) —
//! and read after. So:
//! - An entry acknowledged before the backup began is in a segment opened then (read whole,
//!   even if the server deletes it meanwhile), or in one released earlier: released after its
//!   entries were stored by a commit before the window, so they are in the snapshot: the
//!   journal is taken as if copied before the snapshot began, and nothing released after the
//!   snapshot began can be missed.
//! - The snapshot's tracking cursor was committed before the window and no later one during
//!   it, so no segment from that cursor on is released before it is opened; read after the
//!   snapshot, the copy ends at or past the cursor, as if copied after the snapshot. A cursor past the end would make the journal read from the middle of a
//!   later frame: `Journal::open` now reads on from the end instead, which loses nothing.
//!
//! Scaled out, a MySQL dump's snapshot instant cannot be shared: the segments are opened
//! before the dump starts and those made since are added at the copy. A segment made and
//! released in between would leave a gap the stored cursor may point into; the copy then
//! fails and asks for another run (with 64 MiB segments, a whole segment written and stored
//! during one dump).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::files;
use super::manifest::{Entry, Kind};
use crate::journal::{segment_path, segments};

/// A journal's segments, held open.
#[derive(Debug)]
pub struct Held {
    name: &'static str,
    dir: PathBuf,
    open: BTreeMap<u64, File>,
}

/// Opens every segment of `data_dir/name`; `None` when the journal does not exist.
pub fn hold(data_dir: &Path, name: &'static str) -> anyhow::Result<Option<Held>> {
    let dir = data_dir.join(name);
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut open = BTreeMap::new();
    for segment in segments(&dir).with_context(|| format!("listing {}", dir.display()))? {
        match File::open(segment_path(&dir, segment)) {
            Ok(f) => {
                open.insert(segment, f);
            }
            // Released since the listing; segments go oldest first, so all before it went too
            // (stored elsewhere before the snapshot is pinned).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => open.clear(),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("opening a segment of {name}"))),
        }
    }
    Ok(Some(Held { name, dir, open }))
}

impl Held {
    /// Copies each held segment as it is now into `to/<name>/`. With `extend`, first adds the
    /// segments made since [`hold`] and checks there is no gap (see the module documentation).
    pub fn copy_to(mut self, to: &Path, extend: bool) -> anyhow::Result<Vec<Entry>> {
        let made_since = if extend { segments(&self.dir)? } else { Vec::new() };
        for segment in made_since {
            if self.open.contains_key(&segment) {
                continue;
            }
            match File::open(segment_path(&self.dir, segment)) {
                Ok(f) => {
                    self.open.insert(segment, f);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(anyhow::Error::new(e).context(format!("opening a segment of {}", self.name))),
            }
        }
        let numbers: Vec<u64> = self.open.keys().copied().collect();
        if let Some(gap) = numbers.windows(2).find(|w| w[1] != w[0] + 1) {
            anyhow::bail!(
                "the {} journal moved on by whole segments while the backup ran (segments after {} were written and \
                 released before they could be read): run the backup again",
                self.name,
                gap[0]
            );
        }
        let mut entries = Vec::with_capacity(self.open.len());
        for (segment, mut file) in self.open {
            let path = format!("{}/{segment:020}.seg", self.name);
            let written = files::copy_into(&mut file, &to.join(&path))?;
            entries.push(Entry::new(path, Kind::Journal, written));
        }
        files::sync_dir(&to.join(self.name))?;
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::journal::{Journal, Pos};

    async fn read_all(j: &Journal) -> (Vec<Vec<u8>>, Pos) {
        let (mut all, mut to) = (Vec::new(), Pos::default());
        while let Some(f) = j.read(1_000, Duration::from_millis(20)).await.expect("read") {
            all.extend(f.payloads);
            to = f.to;
        }
        (all, to)
    }

    fn frame(n: u32) -> Vec<u8> {
        let mut p = vec![0u8; 300];
        p[..4].copy_from_slice(&n.to_le_bytes());
        p
    }

    /// The order the backup takes: segments held in the window the cursor is pinned in, the
    /// writer goes on and releases the held segments, then the copy. Restored with the pinned cursor, the
    /// journal reads exactly the frames after it that were written by the time of the copy.
    #[tokio::test]
    async fn a_copy_after_the_pinned_cursor_holds_every_frame_after_it_even_released_ones() {
        let live = tempfile::tempdir().expect("live");
        let dir = live.path().join("track-queue");
        // 1 KiB segments: three frames each.
        let (j, _) = Journal::open(&dir, "test", None, 1024).expect("open").expect("lock");
        for n in 0..12 {
            j.append(&frame(n), 1).await.expect("append");
        }
        let stored = j.read(4, Duration::ZERO).await.expect("read").expect("frames");
        j.release(stored.to).await.expect("release");
        let held = hold(live.path(), "track-queue").expect("hold").expect("exists");
        // The snapshot is pinned here: the store's cursor is `pinned`.
        let pinned = stored.to;
        // The writer goes on, stores the rest and releases every segment before its cursor.
        let (_, cursor) = read_all(&j).await;
        j.release(cursor).await.expect("release");
        for n in 12..15 {
            j.append(&frame(n), 1).await.expect("append");
        }
        assert!(j.segment_count().expect("count") < held.open.len(), "segments were released while held");
        let out = tempfile::tempdir().expect("out");
        let entries = held.copy_to(out.path(), false).expect("copy");
        assert!(entries.iter().all(|e| e.path.starts_with("track-queue/") && e.kind == Kind::Journal));
        drop(j);

        let (restored, _) = Journal::open(&out.path().join("track-queue"), "test", Some(pinned), 1024)
            .expect("open the copy")
            .expect("lock");
        let (frames, _) = read_all(&restored).await;
        let numbers: Vec<u32> = frames.iter().map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]])).collect();
        // Frames 12.. went to a segment made after the pin: not needed, not copied.
        assert_eq!(numbers, (4..12).collect::<Vec<u32>>(), "every frame after the pinned cursor, once");
    }

    #[tokio::test]
    async fn a_segment_made_and_released_between_hold_and_copy_fails_the_copy() {
        let live = tempfile::tempdir().expect("live");
        let dir = live.path().join("flash-journal");
        let (j, _) = Journal::open(&dir, "test", None, 1024).expect("open").expect("lock");
        j.append(&frame(0), 1).await.expect("append");
        let held = hold(live.path(), "flash-journal").expect("hold").expect("exists");
        // Two whole segments written and released after the hold (the first stays held).
        for n in 1..9 {
            j.append(&frame(n), 1).await.expect("append");
        }
        let (_, to) = read_all(&j).await;
        j.release(to).await.expect("release");
        let out = tempfile::tempdir().expect("out");
        let e = held.copy_to(out.path(), true).expect_err("a gap").to_string();
        assert!(e.contains("flash-journal") && e.contains("run the backup again"), "{e}");
        assert!(hold(live.path(), "absent").expect("no journal").is_none());
    }
}
