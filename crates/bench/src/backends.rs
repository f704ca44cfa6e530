//! Backends a self-started server uses besides its data dir: a unique Redis key prefix and,
//! for MariaDB, unique databases; each is made before the run and removed after it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::Connection;

/// How long a Redis or MariaDB call of the bench may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Order shards of a MariaDB store (must divide 1024).
const MYSQL_SHARDS: usize = 2;

static RUN: AtomicU32 = AtomicU32::new(0);

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    // Fixed width, so no prefix is the start of another one.
    format!("{}-{nanos:020}-{:04}", std::process::id(), RUN.fetch_add(1, Ordering::Relaxed) % 10_000)
}

/// Whether Redis at `url` answers PING within a few seconds.
pub async fn redis_answers(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url).with_context(|| format!("redis url {url}"))?;
    let mut conn = tokio::time::timeout(CALL_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .context("connecting to redis timed out")?
        .with_context(|| format!("connecting to redis at {url}"))?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await.context("redis PING")?;
    Ok(())
}

/// A Redis key prefix of one run.
#[derive(Debug)]
pub struct RedisPrefix {
    url: String,
    /// `bench-<pid>-<nanos>-<n>`.
    pub prefix: String,
}

impl RedisPrefix {
    /// A fresh prefix on the Redis at `url`, after checking that it answers.
    pub async fn new(url: &str) -> anyhow::Result<Self> {
        redis_answers(url).await?;
        Ok(Self { url: url.to_owned(), prefix: format!("bench-{}", unique_suffix()) })
    }

    /// Deletes every key under the prefix (SCAN MATCH + DEL); returns how many.
    pub async fn clean(&self) -> anyhow::Result<usize> {
        let client = redis::Client::open(self.url.as_str()).context("redis url")?;
        let mut conn = tokio::time::timeout(CALL_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .context("connecting to redis timed out")?
            .context("connecting to redis")?;
        let pattern = format!("{}*", self.prefix);
        let (mut cursor, mut deleted) = (0u64, 0usize);
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .context("redis SCAN")?;
            if !keys.is_empty() {
                let n: usize = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.context("redis DEL")?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// The MariaDB databases of one run: the store and its order shards.
#[derive(Debug)]
pub struct MysqlDatabases {
    /// The server URL without a database.
    server: url::Url,
    /// The store's URL.
    pub store_url: String,
    /// One URL per order shard.
    pub shard_urls: Vec<String>,
    /// Databases this run created and drops afterwards.
    created: Vec<String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 48 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl MysqlDatabases {
    /// The store and its shards for `url`: with a database name, it and `<db>_orders_<i>`
    /// (created if missing, kept); without one, unique databases created now and dropped by
    /// [`MysqlDatabases::drop_created`].
    pub async fn prepare(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).with_context(|| format!("--store-url {url}"))?;
        if !matches!(parsed.scheme(), "mysql" | "mariadb") {
            bail!("--store-url must be mysql://… or mariadb://… (SQLite is the default without it)");
        }
        let mut server = parsed.clone();
        server.set_path("");
        let given = parsed.path().trim_start_matches('/').to_owned();
        let (store, fresh) = if given.is_empty() {
            (format!("flashback_bench_{}", unique_suffix().replace('-', "_")), true)
        } else {
            anyhow::ensure!(valid_name(&given), "--store-url: database name {given:?} must be letters, digits, _");
            (given, false)
        };
        let shards: Vec<String> = (0..MYSQL_SHARDS).map(|i| format!("{store}_orders_{i}")).collect();
        let mut conn = tokio::time::timeout(CALL_TIMEOUT, sqlx::MySqlConnection::connect(server.as_str()))
            .await
            .context("connecting to MariaDB timed out")?
            .with_context(|| format!("connecting to MariaDB at {}", redacted(&server)))?;
        let mut created = Vec::new();
        for name in std::iter::once(&store).chain(&shards) {
            let sql = if fresh {
                format!("CREATE DATABASE `{name}`")
            } else {
                format!("CREATE DATABASE IF NOT EXISTS `{name}`")
            };
            sqlx::query(&sql).execute(&mut conn).await.with_context(|| format!("creating database {name}"))?;
            if fresh {
                created.push(name.clone());
            }
        }
        conn.close().await.ok();
        let url_for = |db: &str| {
            let mut u = server.clone();
            u.set_path(&format!("/{db}"));
            u.to_string()
        };
        Ok(Self {
            store_url: url_for(&store),
            shard_urls: shards.iter().map(|s| url_for(s)).collect(),
            server,
            created,
        })
    }

    /// Drops the databases this run created.
    pub async fn drop_created(&self) -> anyhow::Result<()> {
        if self.created.is_empty() {
            return Ok(());
        }
        let mut conn = tokio::time::timeout(CALL_TIMEOUT, sqlx::MySqlConnection::connect(self.server.as_str()))
            .await
            .context("connecting to MariaDB timed out")?
            .context("connecting to MariaDB")?;
        for name in &self.created {
            sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                .execute(&mut conn)
                .await
                .with_context(|| format!("dropping database {name}"))?;
        }
        conn.close().await.ok();
        Ok(())
    }

    /// The store's database name, for the report.
    pub fn describe(&self) -> String {
        let db = self.store_url.rsplit('/').next().unwrap_or_default();
        format!("mariadb {}/{db}", redacted(&self.server).trim_end_matches('/'))
    }
}

/// The URL with its password replaced.
fn redacted(u: &url::Url) -> String {
    let mut u = u.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("redacted"));
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_none_starts_another() {
        let (a, b) = (unique_suffix(), unique_suffix());
        assert_ne!(a, b);
        assert!(!a.starts_with(&b) && !b.starts_with(&a), "{a} {b}");
    }

    #[test]
    fn only_plain_database_names_are_accepted() {
        assert!(valid_name("flashback_bench_1"));
        assert!(!valid_name("x`; DROP DATABASE y"));
        assert!(!valid_name(""));
    }

    #[test]
    fn passwords_are_redacted_in_reports() {
        let u = url::Url::parse("mysql://root:hunter2@db:3306/x").unwrap();
        assert!(!redacted(&u).contains("hunter2"));
    }
}
