//! File plumbing for backups: copies that hash what they write and sync it, atomic writes,
//! and the checks on paths a manifest names.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

/// Bytes read or written per step.
const CHUNK: usize = 1 << 20;

/// What a copy wrote: its size and SHA-256 (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// Copies everything `from` yields into a new file at `to` (creating its folder), syncs it,
/// and returns its size and hash.
pub fn copy_into(from: &mut impl Read, to: &Path) -> anyhow::Result<Written> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    // Backups and restored files hold keys and every user's data: owner only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(to).with_context(|| format!("creating {}", to.display()))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = from.read(&mut buf).with_context(|| format!("reading the source of {}", to.display()))?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else { break };
        out.write_all(chunk).with_context(|| format!("writing {}", to.display()))?;
        hash.update(chunk);
        bytes = bytes.checked_add(n as u64).context("file size overflows")?;
    }
    out.sync_all().with_context(|| format!("syncing {}", to.display()))?;
    Ok(Written { bytes, sha256: hex::encode(hash.finalize()) })
}

/// Copies the file `from` to `to` (see [`copy_into`]).
pub fn copy_file(from: &Path, to: &Path) -> anyhow::Result<Written> {
    let mut src = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    copy_into(&mut src, to)
}

/// The size and SHA-256 of a file.
pub fn hash_file(path: &Path) -> anyhow::Result<Written> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else { break };
        hash.update(chunk);
        bytes = bytes.checked_add(n as u64).context("file size overflows")?;
    }
    Ok(Written { bytes, sha256: hex::encode(hash.finalize()) })
}

/// Makes a directory's entries (new names, renames) durable.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing the directory {}", dir.display()))
}

/// Writes `bytes` to `path` through a temporary name and a rename, so a reader finds the whole
/// file or none.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = with_suffix(path, ".tmp");
    let _ = std::fs::remove_file(&tmp);
    copy_into(&mut &bytes[..], &tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    path.parent().map_or(Ok(()), sync_dir)
}

/// `path` with `suffix` added to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// Creates `dir` (and its parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Whether `dir` is missing or holds nothing.
pub fn is_empty_or_missing(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", dir.display()))),
    }
}

/// Checks a path read from a manifest: relative, `/`-separated, no `..`, nothing odd. A
/// manifest is input, and a restore must never write outside the directory it restores into.
pub fn safe_relative(path: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(path);
    let plain = !path.is_empty()
        && !path.contains('\\')
        && p.components().all(|c| matches!(c, Component::Normal(n) if n.to_str().is_some()));
    anyhow::ensure!(plain, "the manifest names the file {path:?}, which is not a plain relative path");
    Ok(p.to_owned())
}

/// `path` relative to `base` as a `/`-separated string, if it lies inside `base`.
pub fn relative_to(path: &Path, base: &Path) -> Option<String> {
    let rest = path.strip_prefix(base).ok()?;
    let parts: Option<Vec<&str>> = rest
        .components()
        .map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .collect();
    parts.filter(|p| !p.is_empty()).map(|p| p.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_hashes_what_it_wrote() {
        let dir = tempfile::tempdir().expect("dir");
        let to = dir.path().join("a/b.bin");
        let w = copy_into(&mut &b"abc"[..], &to).expect("copy");
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(w.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(w.bytes, 3);
        assert_eq!(hash_file(&to).expect("hash"), w);
        assert!(copy_into(&mut &b"x"[..], &to).is_err(), "never overwrites");
    }

    #[test]
    fn only_plain_relative_paths_pass() {
        for ok in ["flashback.db", "track-queue/00000000000000000001.seg", "mysql/shard-0.sql"] {
            assert!(safe_relative(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a", "a\\b", "a//b/.."] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
        let base = Path::new("/data");
        assert_eq!(relative_to(Path::new("/data/sub/x.db"), base).as_deref(), Some("sub/x.db"));
        assert_eq!(relative_to(Path::new("/elsewhere/x.db"), base), None);
    }
}
