//! Secret keys an instance makes for itself when configuration gives none: 32 random bytes in
//! a file under the data directory, readable by its owner only, reused on every start.

use std::path::Path;

use rand::RngCore;

/// The key in `data_dir/name`, made on first use. `setting` names the configuration key that
/// replaces it (and that several instances must share).
pub fn key_file(data_dir: &Path, name: &str, setting: &str) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join(name);
    if let Ok(existing) = std::fs::read(&path)
        && existing.len() >= 32
    {
        return Ok(existing);
    }
    std::fs::create_dir_all(data_dir)?;
    let mut key = vec![0u8; 32];
    rand::rng().fill_bytes(&mut key);
    write_private(&path, &key)?;
    tracing::info!(path = %path.display(), "generated a key; set {setting} to share one across instances");
    Ok(key)
}

/// Writes a file only its owner can read.
#[cfg(unix)]
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

/// Writes a file (no permission bits on this platform).
#[cfg(not(unix))]
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = key_file(dir.path(), "k.key", "x").unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(key_file(dir.path(), "k.key", "x").unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("k.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
