//! One Redis connection per instance, shared by every feature, with a key prefix and timeouts.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// A multiplexed, self-reconnecting Redis connection plus the settings every caller needs.
///
/// Cloning is cheap; clones share the connection.
#[derive(Clone)]
pub struct RedisHandle {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle").field("prefix", &self.prefix).field("timeout", &self.timeout).finish()
    }
}

impl RedisHandle {
    /// Connects to `url`; every key this handle's users make starts with `prefix:`.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(2);
        let conn = tokio::time::timeout(timeout * 4, ConnectionManager::new_with_config(client.clone(), config))
            .await
            .map_err(|_| anyhow::anyhow!("timed out connecting to redis"))??;
        Ok(Self { client, conn, prefix: prefix.to_owned(), timeout })
    }

    /// A connection for commands (cheap clone of the shared one).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The client, for dedicated connections such as pub/sub subscribers.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// `prefix:part`, the full name of a key or channel.
    pub fn key(&self, part: &str) -> String {
        format!("{}:{part}", self.prefix)
    }

    /// How long any one Redis call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `PING`, within the timeout.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut c = self.conn();
        let pong: String = tokio::time::timeout(self.timeout, redis::cmd("PING").query_async(&mut c))
            .await
            .map_err(|_| anyhow::anyhow!("redis ping timed out"))??;
        anyhow::ensure!(pong == "PONG", "unexpected ping reply {pong:?}");
        Ok(())
    }

    /// Creates consumer group `group` on `stream` (and the stream), reading from its start;
    /// a group that already exists is fine.
    pub async fn ensure_group(&self, stream: &str, group: &str) -> anyhow::Result<()> {
        let mut c = self.conn();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(anyhow::anyhow!("creating consumer group {group} on {stream}: {e}")),
        }
    }

    /// Warns, naming `what` may be lost, unless Redis keeps every write on disk before it
    /// answers (`appendonly yes`, `appendfsync always`) and never evicts (`noeviction`).
    /// Says nothing when `CONFIG` is not allowed (often renamed away on managed Redis).
    pub async fn warn_if_not_durable(&self, what: &str) {
        let mut c = self.conn();
        for (name, wanted) in [("appendonly", "yes"), ("appendfsync", "always"), ("maxmemory-policy", "noeviction")] {
            let reply: redis::RedisResult<std::collections::HashMap<String, String>> =
                redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut c).await;
            match reply {
                Ok(map) if map.get(name).map(String::as_str) == Some(wanted) => {}
                Ok(map) => tracing::warn!(
                    setting = name,
                    value = map.get(name).map(String::as_str).unwrap_or("?"),
                    wanted,
                    "redis: {what} may not survive a Redis crash"
                ),
                Err(_) => return,
            }
        }
    }
}
