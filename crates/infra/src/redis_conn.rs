//! One Redis connection per instance, shared by every feature, with a key prefix, a timeout on
//! every call, a circuit breaker, and a reconnect that follows Redis back within a second.
//!
//! Not `redis::aio::ConnectionManager`: its reconnect backs off with `backon`'s defaults (a 1 s
//! first delay growing by the configured factor, up to 60 s), and every call waits on that
//! attempt, so after a 20 s outage an instance went on failing for up to 90 s. Here a call that
//! finds no live connection makes one (one caller at a time, within the timeout), and the
//! breaker decides how often that is tried while Redis stays away.

use std::sync::Arc;
use std::time::Duration;

use flashback_core::breaker::{Breaker, BreakerSettings};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// A handle on Redis: clones share the connection, the breaker and the settings.
#[derive(Clone)]
pub struct RedisHandle {
    shared: Arc<Shared>,
    link: Arc<Link>,
}

struct Shared {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    breaker: Arc<Breaker>,
}

/// One multiplexed connection, replaced when it breaks.
struct Link {
    current: std::sync::Mutex<Option<MultiplexedConnection>>,
    /// Held while connecting, so concurrent callers make one connection, not one each.
    connecting: tokio::sync::Mutex<()>,
    /// How long one call may take on this link.
    timeout: Duration,
}

impl Link {
    fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self { current: Default::default(), connecting: Default::default(), timeout })
    }

    fn get(&self) -> Option<MultiplexedConnection> {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, conn: Option<MultiplexedConnection>) {
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = conn;
    }
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("prefix", &self.shared.prefix)
            .field("timeout", &self.shared.timeout)
            .field("breaker", &self.shared.breaker)
            .finish()
    }
}

impl RedisHandle {
    /// Connects to `url`; every key this handle's users make starts with `prefix:`. Fails if
    /// Redis does not answer within four timeouts.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration, breaker: BreakerSettings) -> anyhow::Result<Self> {
        let handle = Self::new(url, prefix, timeout, breaker)?;
        let first = tokio::time::timeout(timeout * 4, handle.open(&handle.link))
            .await
            .map_err(|_| anyhow::anyhow!("timed out connecting to redis"))??;
        handle.link.set(Some(first));
        Ok(handle)
    }

    /// A handle on `url` that connects on its first call, so an instance can start while Redis
    /// is away and use it once it answers. Fails only on a malformed URL.
    pub fn new(url: &str, prefix: &str, timeout: Duration, breaker: BreakerSettings) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let shared =
            Arc::new(Shared { client, prefix: prefix.to_owned(), timeout, breaker: Breaker::new("redis", breaker) });
        Ok(Self { shared, link: Link::new(timeout) })
    }

    /// A connection for commands (the shared one; cheap).
    pub fn conn(&self) -> RedisConn {
        RedisConn { handle: self.clone() }
    }

    /// A connection of its own whose calls may take `timeout`, for blocking reads
    /// (`XREADGROUP … BLOCK`) that must not hold up the shared connection. Same breaker.
    pub fn dedicated(&self, timeout: Duration) -> RedisConn {
        RedisConn { handle: Self { shared: Arc::clone(&self.shared), link: Link::new(timeout) } }
    }

    /// The client, for connections of other kinds (pub/sub subscribers).
    pub fn client(&self) -> &redis::Client {
        &self.shared.client
    }

    /// The breaker in front of every call.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.shared.breaker
    }

    /// `prefix:part`, the full name of a key or channel.
    pub fn key(&self, part: &str) -> String {
        format!("{}:{part}", self.shared.prefix)
    }

    /// How long any one Redis call may take.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// `PING`, within the timeout (through the breaker, so it fails fast while Redis is known
    /// to be down, and is the probe once the open period has passed).
    pub async fn ping(&self) -> anyhow::Result<()> {
        let pong: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        anyhow::ensure!(pong == "PONG", "unexpected ping reply {pong:?}");
        Ok(())
    }

    /// A new connection for `link`, within its timeout.
    async fn open(&self, link: &Link) -> RedisResult<MultiplexedConnection> {
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(self.shared.timeout).set_response_timeout(link.timeout);
        self.shared.client.get_multiplexed_async_connection_with_config(&config).await
    }

    /// The link's live connection, making one if there is none.
    async fn live(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.link.get() {
            return Ok(conn);
        }
        let _one_at_a_time = self.link.connecting.lock().await;
        if let Some(conn) = self.link.get() {
            return Ok(conn);
        }
        let conn = self.open(&self.link).await?;
        self.link.set(Some(conn.clone()));
        Ok(conn)
    }

    /// Runs one call through the breaker and the link's timeout, replacing the connection when
    /// the call shows it broken.
    async fn call<T, F>(&self, run: impl FnOnce(MultiplexedConnection) -> F) -> RedisResult<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let Some(permit) = self.shared.breaker.permit() else {
            return Err(RedisError::from((ErrorKind::IoError, "redis circuit open")));
        };
        let outcome = tokio::time::timeout(self.link.timeout, async {
            let conn = self.live().await?;
            run(conn).await
        })
        .await
        .unwrap_or_else(|_| Err(RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))));
        match &outcome {
            Err(e) if dependency_failed(e) => {
                // A broken connection goes at once; a timeout only when probing, since one
                // slow call says little about the calls sharing the connection.
                if !e.is_timeout() || self.shared.breaker.state() != flashback_core::breaker::BreakerState::Closed {
                    self.link.set(None);
                }
                permit.failure();
            }
            _ => permit.success(),
        }
        outcome
    }

    /// Creates consumer group `group` on `stream` (and the stream), reading from its start;
    /// a group that already exists is fine. Readers call it again when a read answers
    /// `NOGROUP` ([`is_no_group`]): Redis was away at start, or came back without its data.
    pub async fn ensure_group(&self, stream: &str, group: &str) -> RedisResult<()> {
        let created: RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn())
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Warns, naming `what` may be lost, unless Redis keeps every write on disk before it
    /// answers (`appendonly yes`, `appendfsync always`) and never evicts (`noeviction`).
    /// Says nothing when `CONFIG` is not allowed (often renamed away on managed Redis).
    pub async fn warn_if_not_durable(&self, what: &str) {
        let mut c = self.conn();
        for (name, wanted) in [("appendonly", "yes"), ("appendfsync", "always"), ("maxmemory-policy", "noeviction")] {
            let reply: RedisResult<std::collections::HashMap<String, String>> =
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

/// Whether `e` says the stream or its consumer group does not exist (see
/// [`RedisHandle::ensure_group`]).
pub fn is_no_group(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

/// Whether `e` says Redis did not answer (or cannot serve yet), rather than answering with an
/// error about the call itself.
fn dependency_failed(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(e.kind(), ErrorKind::BusyLoadingError | ErrorKind::TryAgain | ErrorKind::ClusterDown)
}

/// What [`RedisHandle::conn`] gives: use it like any async Redis connection
/// (`cmd.query_async(&mut conn)`, `script.invoke_async(&mut conn)`). Every call goes through the
/// handle's breaker and timeout.
#[derive(Clone, Debug)]
pub struct RedisConn {
    handle: RedisHandle,
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.handle.call(move |mut c| async move { c.req_packed_command(cmd).await }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.handle.call(move |mut c| async move { c.req_packed_commands(cmd, offset, count).await }))
    }

    fn get_db(&self) -> i64 {
        self.handle.shared.client.get_connection_info().redis.db
    }
}
