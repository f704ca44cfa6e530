//! Redis: a point-in-time snapshot taken with `redis-cli --rdb` (the server forks and streams
//! its RDB file, as a replica's first sync does), checked with `redis-check-rdb`.
//!
//! Taken first, before any database: reservations the `redis` flash-sale engine accepted and
//! tracking batches in the Redis queue are then either still in the snapshot's stream or were
//! stored (and acknowledged) before the databases were read.

use std::path::Path;

use anyhow::Context;

use super::files;
use super::manifest::{Entry, Kind};

/// The snapshot's name inside a backup.
pub const FILE: &str = "redis/dump.rdb";

/// Takes a snapshot of the Redis at `url` into `to/redis/dump.rdb`.
pub async fn snapshot(url: &str, to: &Path) -> anyhow::Result<Entry> {
    let u = url::Url::parse(url).map_err(|e| anyhow::anyhow!("cache.redis_url: not a URL ({e})"))?;
    anyhow::ensure!(u.scheme() == "redis", "cache.redis_url: backup reaches Redis over redis:// only");
    let dest = to.join(FILE);
    std::fs::create_dir_all(to.join("redis"))?;
    let partial = files::with_suffix(&dest, ".partial");
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.kill_on_drop(true)
        .args(["-h", u.host_str().unwrap_or("127.0.0.1")])
        .args(["-p", &u.port().unwrap_or(6379).to_string()]);
    if !u.username().is_empty() {
        cmd.args(["--user", u.username()]);
    }
    if let Some(p) = u.password() {
        // From the environment, not the command line that `ps` shows.
        cmd.env("REDISCLI_AUTH", p);
    }
    let out =
        cmd.arg("--rdb").arg(&partial).output().await.context("running redis-cli (Debian: apt install redis-tools)")?;
    anyhow::ensure!(
        out.status.success(),
        "redis-cli --rdb: {}{}",
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    std::fs::rename(&partial, &dest)?;
    let written = files::hash_file(&dest)?;
    Ok(Entry::new(FILE.into(), Kind::RedisRdb, written))
}

/// Checks a snapshot's structure with `redis-check-rdb`: `Ok(None)` when it passed,
/// `Ok(Some(note))` when the tool is not installed, an error naming the file when it failed.
pub async fn check(file: &Path) -> anyhow::Result<Option<String>> {
    let out = match tokio::process::Command::new("redis-check-rdb").arg(file).kill_on_drop(true).output().await {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some("redis-check-rdb is not installed: the Redis snapshot was only hashed".into()));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("running redis-check-rdb")),
    };
    anyhow::ensure!(
        out.status.success(),
        "backup file {FILE}: redis-check-rdb found it broken: {}",
        String::from_utf8_lossy(&out.stdout).lines().rev().take(3).collect::<Vec<_>>().join(" / ")
    );
    Ok(None)
}
