//! Fresh, isolated stores for tests: a SQLite file in a temporary directory, or a new database
//! on the MySQL server `FLASHBACK_TEST_MYSQL_URL` names, dropped again when the test ends.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection;

use crate::{ShardOptions, Shards, Store, StoreOptions};

/// The environment variable naming the MySQL/MariaDB server for backend suites.
pub const MYSQL_URL_VAR: &str = "FLASHBACK_TEST_MYSQL_URL";

/// A store that lives as long as this value; its files or database go away on drop.
#[derive(Debug)]
pub struct TestStore {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// The options it was opened with (to open the same store again).
    pub options: StoreOptions,
    /// Two order shards beside it.
    pub shards: Shards,
    /// The options the shards were opened with.
    pub shard_options: ShardOptions,
    _guard: Guard,
}

/// How many order shards test stores have.
pub const TEST_SHARDS: u16 = 2;

#[derive(Debug)]
enum Guard {
    Dir(#[expect(dead_code, reason = "held only to delete the directory on drop")] tempfile::TempDir),
    MySql { server_url: String, databases: Vec<String> },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::MySql { server_url, databases } = self {
            drop_databases(server_url.clone(), std::mem::take(databases));
        }
    }
}

impl TestStore {
    /// Runs one statement on the store's database over a connection of its own, past the
    /// store's checks: for tests that break what the store keeps whole, to see it noticed.
    pub async fn tamper(&self, sql: &str) {
        match &self.options.url {
            Some(url) => {
                let mut c = sqlx::MySqlConnection::connect(url).await.expect("connect to the test database");
                sqlx::query(sql).execute(&mut c).await.expect("tampering statement");
                let _ = c.close().await;
            }
            None => {
                let file = self.options.data_dir.join("flashback.db");
                let options =
                    sqlx::sqlite::SqliteConnectOptions::new().filename(file).busy_timeout(Duration::from_secs(5));
                let mut c = sqlx::SqliteConnection::connect_with(&options).await.expect("open the test database");
                sqlx::query(sql).execute(&mut c).await.expect("tampering statement");
                let _ = c.close().await;
            }
        }
    }
}

/// Options for a test store: small pools, short timeouts.
pub fn test_options(url: Option<String>, data_dir: std::path::PathBuf) -> StoreOptions {
    StoreOptions {
        url,
        data_dir,
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
        breaker: Default::default(),
    }
}

/// A migrated SQLite store in a fresh temporary directory.
pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = test_options(None, dir.path().to_owned());
    let store = crate::open(&options).await.expect("open sqlite test store");
    let shard_options =
        ShardOptions { count: TEST_SHARDS, urls: Vec::new(), replica_urls: Vec::new(), store: options.clone() };
    let shards = crate::open_shards(&shard_options).await.expect("open sqlite shards");
    TestStore { store, options, shards, shard_options, _guard: Guard::Dir(dir) }
}

/// The test MySQL server's URL, or `None` (after saying once that `suite` is skipped).
pub fn mysql_server_url(suite: &str) -> Option<String> {
    match std::env::var(MYSQL_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().trim_end_matches('/').to_owned()),
        _ => {
            note_skipped(suite, MYSQL_URL_VAR);
            None
        }
    }
}

/// A migrated store in a new, uniquely named database on the test MySQL server, or `None`
/// when `FLASHBACK_TEST_MYSQL_URL` is unset.
pub async fn mysql(suite: &str) -> Option<TestStore> {
    let server_url = mysql_server_url(suite)?;
    let base = format!("fbt_{}", uuid::Uuid::new_v4().simple());
    let databases: Vec<String> =
        std::iter::once(base.clone()).chain((0..TEST_SHARDS).map(|i| format!("{base}_s{i}"))).collect();
    let mut admin = sqlx::MySqlConnection::connect(&server_url)
        .await
        .unwrap_or_else(|e| panic!("{MYSQL_URL_VAR} is set but the server does not answer: {e}"));
    for db in &databases {
        sqlx::query(&format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4"))
            .execute(&mut admin)
            .await
            .expect("create test database");
    }
    let _ = admin.close().await;
    let guard = Guard::MySql { server_url: server_url.clone(), databases: databases.clone() };
    let options = test_options(Some(format!("{server_url}/{base}")), std::env::temp_dir());
    let store = crate::open(&options).await.expect("open mysql test store");
    let shard_options = ShardOptions {
        count: TEST_SHARDS,
        urls: databases[1..].iter().map(|db| format!("{server_url}/{db}")).collect(),
        replica_urls: Vec::new(),
        store: options.clone(),
    };
    let shards = crate::open_shards(&shard_options).await.expect("open mysql shards");
    Some(TestStore { store, options, shards, shard_options, _guard: guard })
}

/// An empty database on the test MySQL server, dropped when this value is.
#[derive(Debug)]
pub struct EmptyDatabase {
    /// `mysql://…/<database>`.
    pub url: String,
    _guard: Guard,
}

/// A new, empty, uniquely named database on the test MySQL server (for tests that build a
/// schema step by step), or `None` when `FLASHBACK_TEST_MYSQL_URL` is unset.
pub async fn empty_mysql(suite: &str) -> Option<EmptyDatabase> {
    let server_url = mysql_server_url(suite)?;
    let db = format!("fbt_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::MySqlConnection::connect(&server_url)
        .await
        .unwrap_or_else(|e| panic!("{MYSQL_URL_VAR} is set but the server does not answer: {e}"));
    sqlx::query(&format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let _ = admin.close().await;
    Some(EmptyDatabase { url: format!("{server_url}/{db}"), _guard: Guard::MySql { server_url, databases: vec![db] } })
}

fn drop_databases(server_url: String, databases: Vec<String>) {
    // Drop runs inside the test's runtime, which cannot be blocked on; use a thread of our own.
    let done = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        rt.block_on(async {
            let mut c = sqlx::MySqlConnection::connect(&server_url).await.ok()?;
            // A test that panicked mid-transaction leaves that transaction's metadata locks
            // until its pool is dropped; without a bound the drop would wait for them forever
            // (MariaDB's default is a year) and hang the run instead of failing the test.
            sqlx::query("SET SESSION lock_wait_timeout = 10").execute(&mut c).await.ok()?;
            for db in databases {
                sqlx::query(&format!("DROP DATABASE IF EXISTS `{db}`")).execute(&mut c).await.ok()?;
            }
            c.close().await.ok()
        })
    });
    let _ = done.join();
}

/// Says on the terminal, once per suite and process, that a backend suite was skipped.
///
/// Written straight to stderr rather than through `eprintln!`, which the test harness captures
/// and hides for passing tests: a skipped suite must be visible in a passing run.
pub fn note_skipped(suite: &str, var: &str) {
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if said.iter().any(|s| s == suite) {
        return;
    }
    said.push(suite.to_owned());
    let _ = writeln!(std::io::stderr().lock(), "\nSKIPPED: {suite} backend suite ({var} is not set)");
}
