//! Embedded: SQLite files snapshotted at one instant and copied while the server writes.
//!
//! Each file gets a connection of its own whose read transaction pins a snapshot (WAL lets
//! the server write on meanwhile), and SQLite's online backup API copies the pages of that
//! snapshot. A group of files (the catalog and the order shards, whose sagas span them) must
//! be pinned at one instant, or a reservation and its order could land on either side of the
//! cut. Taking every file's write lock would give that instant, but a server transaction that
//! read before it writes then fails at once with `SQLITE_BUSY` (SQLite never waits for a lock
//! when a reader upgrades), so this side takes no lock: it reads each file's
//! `PRAGMA data_version` (which moves whenever another connection commits), pins every file,
//! reads the versions again, and tries again until no file changed in between. Then each
//! file's snapshot equals its state at the first pin: one instant. The caller's step runs in
//! that window too (the backup opens the journals' segments there; see `journals`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use super::files;
use super::manifest::{Entry, Kind};
use super::plan::SqliteFile;

/// How long a read may wait for SQLite (a reader waits only while the WAL is recovered).
const BUSY_WAIT: Duration = Duration::from_secs(2);
/// How long the backup looks for an instant with no commit in the group before it gives up.
const QUIET_SEARCH: Duration = Duration::from_secs(20);

/// Read snapshots of a group of files, all of one instant.
#[derive(Debug)]
pub struct Pinned {
    files: Vec<(SqliteFile, Connection)>,
}

fn open(file: &SqliteFile) -> anyhow::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(&file.path, flags)
        .with_context(|| format!("opening {} (is the data directory complete?)", file.path.display()))?;
    c.busy_timeout(BUSY_WAIT)?;
    Ok(c)
}

fn data_version(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row("PRAGMA data_version", [], |r| r.get(0))
}

/// Pins a read snapshot of every file of `group` at one instant and runs `in_window` in that
/// instant (see the module documentation); returns both.
pub fn pin<T>(group: &[SqliteFile], mut in_window: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<(Pinned, T)> {
    for f in group {
        anyhow::ensure!(f.path.is_file(), "{} is missing from the data directory", f.path.display());
    }
    let probes = group.iter().map(open).collect::<anyhow::Result<Vec<_>>>()?;
    let readers = group.iter().map(open).collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let before = probes.iter().map(data_version).collect::<rusqlite::Result<Vec<_>>>()?;
        let during = in_window()?;
        for (f, c) in group.iter().zip(&readers) {
            c.execute_batch("BEGIN")?;
            c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))
                .with_context(|| format!("reading {}", f.name))?;
        }
        let after = probes.iter().map(data_version).collect::<rusqlite::Result<Vec<_>>>()?;
        if before == after {
            tracing::debug!(attempts, files = group.len(), "backup: snapshots pinned");
            let files = group.iter().cloned().zip(readers).collect();
            return Ok((Pinned { files }, during));
        }
        drop(during);
        for c in &readers {
            c.execute_batch("ROLLBACK")?;
        }
        if started.elapsed() > QUIET_SEARCH {
            anyhow::bail!(
                "no instant without a commit across {} in {} s ({attempts} tries): try again when the store is less busy",
                group.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "),
                QUIET_SEARCH.as_secs()
            );
        }
        // A little apart, so the next try does not fall in step with the server's commits.
        std::thread::sleep(Duration::from_micros(rand::random_range(200..2_000)));
    }
}

impl Pinned {
    /// Copies every pinned snapshot into `to` under its name; returns their entries.
    pub fn copy_to(self, to: &Path) -> anyhow::Result<Vec<Entry>> {
        let mut entries = Vec::with_capacity(self.files.len());
        for (file, source) in self.files {
            let dest = to.join(&file.name);
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let partial = files::with_suffix(&dest, ".partial");
            copy_one(&source, &partial).with_context(|| format!("copying {}", file.name))?;
            source.execute_batch("COMMIT")?;
            std::fs::rename(&partial, &dest)?;
            let written = files::hash_file(&dest)?;
            entries.push(Entry::new(file.name.clone(), Kind::Sqlite, written).with_role(&file.role));
        }
        if let Some(first) = entries.first() {
            files::sync_dir(to.join(&first.path).parent().unwrap_or(to))?;
        }
        Ok(entries)
    }
}

/// Copies the snapshot `source` holds into a new file at `dest`, whole and synced.
fn copy_one(source: &Connection, dest: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(dest);
    let mut target = Connection::open(dest)?;
    {
        let backup = rusqlite::backup::Backup::new(source, &mut target)?;
        // All pages in one step: the source's read transaction keeps its snapshot meanwhile.
        match backup.step(-1)? {
            rusqlite::backup::StepResult::Done => {}
            other => anyhow::bail!("the backup API stopped early ({other:?})"),
        }
    }
    target.close().map_err(|(_, e)| e)?;
    for side in ["-wal", "-shm", "-journal"] {
        let leftover = files::with_suffix(dest, side);
        anyhow::ensure!(!leftover.exists(), "{} was left behind", leftover.display());
    }
    #[cfg(unix)]
    std::fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::File::open(dest)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn file(dir: &Path, name: &str) -> SqliteFile {
        let path = dir.join(name);
        let c = Connection::open(&path).expect("create");
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER)").expect("schema");
        SqliteFile { name: name.into(), role: "other".into(), path }
    }

    fn sum(path: &Path) -> i64 {
        let c = Connection::open(path).expect("open copy");
        c.query_row("SELECT coalesce(sum(x), 0) FROM t", [], |r| r.get(0)).expect("sum")
    }

    #[test]
    fn copies_hold_what_was_committed_when_pinned_and_nothing_after() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (file(dir.path(), "a.db"), file(dir.path(), "b.db"));
        let writers = [Connection::open(&a.path).expect("a"), Connection::open(&b.path).expect("b")];
        for w in &writers {
            w.execute_batch("INSERT INTO t VALUES (1), (2)").expect("insert");
        }
        let (pinned, ()) = pin(&[a, b], || Ok(())).expect("pin");
        // The server writes on while the copy runs: none of it is in the copy.
        for w in &writers {
            w.execute_batch("INSERT INTO t VALUES (3); CREATE TABLE later (y)").expect("write on");
        }
        let out = tempfile::tempdir().expect("out");
        let entries = pinned.copy_to(out.path()).expect("copy");
        assert_eq!(entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["a.db", "b.db"]);
        for e in &entries {
            assert_eq!(sum(&out.path().join(&e.path)), 3, "{}: rows as pinned", e.path);
            let c = Connection::open(out.path().join(&e.path)).expect("open copy");
            let later: i64 = c
                .query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'later'", [], |r| r.get(0))
                .expect("schema");
            assert_eq!(later, 0);
        }
        let missing = SqliteFile { name: "gone.db".into(), role: "other".into(), path: dir.path().join("gone.db") };
        assert!(pin(&[missing], || Ok(())).expect_err("missing").to_string().contains("gone.db"));
    }

    /// A writer commits to `a`, then to `b`, over and over (a saga across two files): at any
    /// instant `b ≤ a ≤ b + 1`. Pins taken while it runs are all of one instant.
    #[test]
    fn pins_taken_under_cross_file_writes_are_one_instant() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (file(dir.path(), "a.db"), file(dir.path(), "b.db"));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = std::thread::spawn({
            let (a, b, stop) = (a.path.clone(), b.path.clone(), stop.clone());
            move || {
                let (wa, wb) = (Connection::open(a).expect("a"), Connection::open(b).expect("b"));
                // Commits microseconds apart (no fsync), with a pause now and then.
                for w in [&wa, &wb] {
                    w.execute_batch("PRAGMA synchronous = OFF").expect("fast commits");
                }
                let mut rounds = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    wa.execute_batch("INSERT INTO t VALUES (1)").expect("a");
                    wb.execute_batch("INSERT INTO t VALUES (1)").expect("b");
                    rounds += 1;
                    if rounds.is_multiple_of(64) {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }
                rounds
            }
        });
        for i in 0..40 {
            let (pinned, ()) = pin(&[a.clone(), b.clone()], || Ok(())).expect("pin");
            let out = dir.path().join(format!("copy-{i}"));
            pinned.copy_to(&out).expect("copy");
            let (sa, sb) = (sum(&out.join("a.db")), sum(&out.join("b.db")));
            assert!(sb <= sa && sa <= sb + 1, "copy {i}: a = {sa}, b = {sb} is no instant of the writer");
        }
        stop.store(true, Ordering::Relaxed);
        assert!(writer.join().expect("writer") > 30, "the writer ran while the pins were taken");
    }
}
