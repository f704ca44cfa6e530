//! `manifest.json`: what a backup holds (each file's kind, size and SHA-256), written last, so
//! a backup without one is incomplete and a file that differs from it was altered or cut.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::files::{self, Written};

/// The manifest's name inside a backup directory.
pub const NAME: &str = "manifest.json";
/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// What a file in a backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A SQLite database, restored to the same path under the data directory.
    Sqlite,
    /// A journal segment (`flash-journal/`, `track-queue/`).
    Journal,
    /// A key or small state file from the data directory (`token.key`, ...).
    Key,
    /// A `mariadb-dump` of one database (its `role` says which).
    MysqlDump,
    /// A Redis snapshot (`redis-cli --rdb`).
    RedisRdb,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it lies, relative to the backup directory (and, for data-directory files, to the
    /// data directory).
    pub path: String,
    /// What it is.
    pub kind: Kind,
    /// For databases: `main`, `shard-<i>`, `track`, or `other` (a further SQLite file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// For dumps: the database it was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Size.
    pub bytes: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

impl Entry {
    /// An entry for a file just written.
    pub fn new(path: String, kind: Kind, written: Written) -> Self {
        Self { path, kind, role: None, database: None, bytes: written.bytes, sha256: written.sha256 }
    }

    /// The same, naming the database role.
    pub fn with_role(mut self, role: &str) -> Self {
        self.role = Some(role.to_owned());
        self
    }
}

/// The manifest of one backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The version of `flashback` that took it.
    pub flashback_version: String,
    /// When it was taken, Unix ms (when the snapshot began).
    pub created_at_ms: i64,
    /// The same, RFC 3339.
    pub created: String,
    /// The main store's backend: `sqlite` or `mysql`.
    pub backend: String,
    /// Every file, in the order taken.
    pub files: Vec<Entry>,
}

impl Manifest {
    /// Total bytes of the files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).fold(0, u64::saturating_add)
    }

    /// The files of one kind.
    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &Entry> {
        self.files.iter().filter(move |f| f.kind == kind)
    }

    /// How many order shards the backup holds (SQLite files or dumps).
    pub fn shard_count(&self) -> usize {
        self.files.iter().filter(|f| f.role.as_deref().is_some_and(|r| r.starts_with("shard-"))).count()
    }

    /// Writes `dir/manifest.json` (atomically).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(self)?;
        files::write_atomically(&dir.join(NAME), &text)
    }

    /// Reads `dir/manifest.json` and checks its shape (not yet the files).
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(NAME);
        let text = std::fs::read(&path)
            .with_context(|| format!("reading {} (a backup without its manifest is incomplete)", path.display()))?;
        let m: Self =
            serde_json::from_slice(&text).with_context(|| format!("{} is not a valid manifest", path.display()))?;
        anyhow::ensure!(
            m.format == FORMAT,
            "{}: format {} (this build reads format {FORMAT})",
            path.display(),
            m.format
        );
        let mut seen = std::collections::HashSet::new();
        for f in &m.files {
            files::safe_relative(&f.path)?;
            anyhow::ensure!(f.path != NAME && seen.insert(f.path.as_str()), "the manifest names {} twice", f.path);
            let hex_ok =
                f.sha256.len() == 64 && f.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            anyhow::ensure!(hex_ok, "the manifest's SHA-256 of {} is malformed", f.path);
        }
        Ok(m)
    }

    /// Reads the manifest and checks every file it names against it: present, same size, same
    /// SHA-256. The error names the first file that differs.
    pub fn read_checked(dir: &Path) -> anyhow::Result<Self> {
        let m = Self::read(dir)?;
        for f in &m.files {
            let path = dir.join(&f.path);
            let meta = std::fs::metadata(&path)
                .with_context(|| format!("backup file {}: missing (the manifest lists it)", f.path))?;
            anyhow::ensure!(
                meta.len() == f.bytes,
                "backup file {}: {} bytes, the manifest says {} (truncated or altered)",
                f.path,
                meta.len(),
                f.bytes
            );
            let actual = files::hash_file(&path)?;
            anyhow::ensure!(
                actual.sha256 == f.sha256,
                "backup file {}: SHA-256 {} differs from the manifest's {} (altered or corrupted)",
                f.path,
                actual.sha256,
                f.sha256
            );
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path) -> Manifest {
        let w = files::copy_into(&mut &b"hello"[..], &dir.join("token.key")).expect("write");
        Manifest {
            format: FORMAT,
            flashback_version: "0.0.0".into(),
            created_at_ms: 1,
            created: "1970-01-01T00:00:00.001Z".into(),
            backend: "sqlite".into(),
            files: vec![Entry::new("token.key".into(), Kind::Key, w)],
        }
    }

    #[test]
    fn a_manifest_reads_back_and_catches_a_changed_or_cut_file() {
        let dir = tempfile::tempdir().expect("dir");
        manifest(dir.path()).write(dir.path()).expect("write");
        assert_eq!(Manifest::read_checked(dir.path()).expect("clean").files.len(), 1);
        std::fs::write(dir.path().join("token.key"), b"hellO").expect("alter");
        let e = Manifest::read_checked(dir.path()).expect_err("altered").to_string();
        assert!(e.contains("token.key") && e.contains("SHA-256"), "{e}");
        std::fs::write(dir.path().join("token.key"), b"hell").expect("cut");
        let e = Manifest::read_checked(dir.path()).expect_err("cut").to_string();
        assert!(e.contains("token.key") && e.contains("4 bytes"), "{e}");
        std::fs::remove_file(dir.path().join("token.key")).expect("remove");
        let e = Manifest::read_checked(dir.path()).expect_err("missing").to_string();
        assert!(e.contains("token.key") && e.contains("missing"), "{e}");
    }

    #[test]
    fn a_manifest_naming_a_path_outside_the_backup_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let mut m = manifest(dir.path());
        m.files[0].path = "../token.key".into();
        m.write(dir.path()).expect("write");
        assert!(Manifest::read(dir.path()).is_err());
        std::fs::remove_file(dir.path().join(NAME)).expect("remove");
        assert!(Manifest::read(dir.path()).expect_err("none").to_string().contains("incomplete"));
    }
}
