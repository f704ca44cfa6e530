//! The data directory, checked before anything is opened in it, with errors that say which
//! path, what is wrong with it and what to do, instead of a database driver's error code.

use std::path::Path;

use anyhow::bail;

use crate::config::Config;

const CHOOSE: &str = "or choose another directory with --data-dir or FLASHBACK_DATA_DIR";

/// Makes sure `dir` is a directory this process can write to, creating it if absent.
pub fn ensure_writable(dir: &Path) -> anyhow::Result<()> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            bail!("data directory {shown}: a file is in its place, not a directory; move the file, {CHOOSE}")
        }
        Ok(_) => {}
        Err(_) => {
            if let Err(e) = std::fs::create_dir_all(dir) {
                bail!("data directory {shown}: cannot create it ({e}); create it yourself, {CHOOSE}");
            }
        }
    }
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bail!(
            "data directory {shown}: this user cannot write to it ({e}); give the user running flashback write \
             access (chown/chmod), {CHOOSE}"
        ),
    }
}

/// Whether the configuration keeps the catalog store in a SQLite file under the data directory.
fn embedded_store_file(config: &Config) -> Option<std::path::PathBuf> {
    use secrecy::ExposeSecret;
    match &config.store.url {
        None => Some(config.data_dir.join("flashback.db")),
        Some(url) => {
            let url = url.expose_secret();
            url.starts_with("sqlite:").then(|| flashback_store::sqlite_path(url, &config.data_dir))
        }
    }
}

/// Prepares the data directory for a server or a tool that may create a store in it.
pub fn prepare(config: &Config) -> anyhow::Result<()> {
    let embedded = embedded_store_file(config).is_some() || config.trade.shard_urls.is_empty();
    let needs_keys = config.auth.token_secret.is_none()
        || config.trade.payment_secret.is_none()
        || config.flash_sale.token_secret.is_none()
        || config.rebate.click_secret.is_none();
    if embedded || needs_keys { ensure_writable(&config.data_dir) } else { Ok(()) }
}

/// For commands that read an existing store (audits, backups): refuses a configuration whose
/// embedded store does not exist, rather than creating an empty one and reporting on that.
pub fn require_store(config: &Config) -> anyhow::Result<()> {
    let Some(file) = embedded_store_file(config) else { return Ok(()) };
    if file.is_file() {
        return Ok(());
    }
    bail!(
        "no Flashback store at {}: run this where the server keeps its data, pass --data-dir DIR or set \
         FLASHBACK_DATA_DIR (or store.url) to the server's; `flashback migrate` creates an empty store",
        file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_place_of_the_directory_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, b"x").unwrap();
        let e = ensure_writable(&file).unwrap_err().to_string();
        assert!(e.contains(&file.display().to_string()) && e.contains("a file is in its place"), "{e}");
        let nested = file.join("below");
        let e = ensure_writable(&nested).unwrap_err().to_string();
        assert!(e.contains("cannot create it"), "{e}");
    }

    #[test]
    fn a_missing_directory_is_created_and_a_missing_store_is_refused_for_readers() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("new").join("data");
        ensure_writable(&data).unwrap();
        assert!(data.is_dir());
        let config = Config { data_dir: data.clone(), ..Config::default() };
        let e = require_store(&config).unwrap_err().to_string();
        assert!(e.contains("no Flashback store at") && e.contains("flashback.db"), "{e}");
        std::fs::write(data.join("flashback.db"), b"").unwrap();
        require_store(&config).unwrap();
    }
}
