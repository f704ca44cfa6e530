//! The test harness: spawn an app on port 0 against a fresh store, talk to it over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use flashback_core::{Password, Role, Title, Username};
use flashback_server::config::Config;
use flashback_server::{App, AppState, auth};
use flashback_store::testing::TestStore;
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The Redis server for backend suites, e.g. `redis://127.0.0.1:6379`.
pub const REDIS_URL_VAR: &str = "FLASHBACK_TEST_REDIS_URL";
/// The RabbitMQ broker for backend suites, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub const AMQP_URL_VAR: &str = "FLASHBACK_TEST_AMQP_URL";

/// A running instance.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    dir: Option<tempfile::TempDir>,
}

/// Cheap settings for tests: fast hashing, quiet logs, a fixed token key.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_owned(),
        log_level: "warn".into(),
        ..Config::default()
    };
    c.auth.token_secret = Some(SecretString::from("test-secret-of-at-least-thirty-two-bytes".to_owned()));
    c.auth.argon2_memory_kib = 64;
    c.auth.argon2_iterations = 1;
    c.auth.login_per_account_per_minute = 1000;
    c.auth.login_per_ip_per_minute = 1000;
    c.catalog.cache_double_delete_delay = DOUBLE_DELETE;
    // Nothing routes on a test instance's readiness; tests of the drain set their own.
    c.http.drain_delay = Duration::ZERO;
    c
}

/// The delayed second invalidation after a write, short in tests.
pub const DOUBLE_DELETE: Duration = Duration::from_millis(30);

/// Waits until every delayed invalidation of earlier writes has run.
pub async fn settle() {
    tokio::time::sleep(DOUBLE_DELETE * 3).await;
}

impl TestApp {
    /// An embedded (SQLite) instance with test defaults.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// An embedded instance, with `tweak` applied to the test configuration.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        Self::start(config, dir).await
    }

    /// An embedded instance whose data directory is `dir` (shared with a CLI run, say).
    pub async fn spawn_in(dir: tempfile::TempDir) -> Self {
        let config = test_config(dir.path());
        Self::start(config, dir).await
    }

    /// Starts an instance from a complete configuration.
    pub async fn start(config: Config, dir: tempfile::TempDir) -> Self {
        let app = App::build(config).await.expect("app builds");
        let addr = app.local_addr();
        let state = app.state.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self { addr, client: reqwest::Client::new(), state, stop: Some(stop), task: Some(task), dir: Some(dir) }
    }

    /// Begins a graceful shutdown and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("shutdown finishes")
                .expect("serve task")
                .expect("serve result");
        }
    }

    /// Waits (at most `limit`) for the instance to stop by itself; what serving returned, and
    /// the data directory.
    pub async fn stopped_by_itself(mut self, limit: Duration) -> (anyhow::Result<()>, tempfile::TempDir) {
        let task = self.task.take().expect("serving");
        let served = tokio::time::timeout(limit, task).await.expect("stops by itself").expect("serve task");
        (served, self.dir.take().expect("data dir"))
    }

    /// Shuts down gracefully and hands back the data directory, to start again on it.
    pub async fn shutdown_keeping_data(mut self) -> tempfile::TempDir {
        let dir = self.dir.take().expect("data dir");
        self.shutdown().await;
        dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }

    pub async fn get_as(&self, path: &str, token: &str) -> Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut req = self.client.request(method, self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.send(reqwest::Method::POST, path, token, body).await
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.post("/api/v1/auth/login", None, &json!({"username": username, "password": password})).await
    }

    /// Creates an account directly (as `flashback user add` does) and returns a token for it.
    pub async fn token_for(&self, username: &str, role: Role) -> String {
        let password = format!("{username}-password");
        auth::create_account(
            &self.state,
            Username::parse(username).expect("username"),
            Password::parse(password.clone()).expect("password"),
            role,
            (role == Role::Merchant).then(|| Title::parse(&format!("{username} shop")).expect("name")),
        )
        .await
        .expect("create account");
        let res = self.login(username, &password).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_owned()
    }

    /// Creates a category as a fresh admin and returns its id.
    pub async fn category(&self, name: &str) -> String {
        let admin = self.token_for(&format!("adm-{}", name.to_ascii_lowercase().replace(" ", "-")), Role::Admin).await;
        let res = self.post("/api/v1/categories", Some(&admin), &json!({"name": name})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned()
    }

    /// Creates a product as `merchant` and returns its JSON.
    pub async fn product(&self, merchant: &str, category: &str, sku: &str, stock: i64) -> Value {
        let body = json!({
            "sku": sku, "title": format!("Product {sku}"), "list_price_minor": 1999,
            "category_id": category, "available": stock, "regions": ["CN"],
            "images": ["https://img.example/a.jpg"]
        });
        let res = self.post("/api/v1/products", Some(merchant), &body).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
        res.json().await.expect("json")
    }

    /// The value of one sample in /metrics (0 when absent), e.g.
    /// `flashback_cache_hits_total{cache="product",level="l1"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().expect("number"))
    }
}

/// Asserts a problem+json answer with this status and code; returns the body.
pub async fn assert_problem(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "status");
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = res.json().await.expect("problem json");
    assert_eq!(body["code"], code, "code in {body}");
    assert_eq!(body["status"], status.as_u16());
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    body
}

/// A MySQL database and Redis prefix of its own, or `None` (suite skipped) when unset.
pub struct Backends {
    pub mysql: TestStore,
    pub redis_url: String,
    pub redis_prefix: String,
    /// The broker, when `FLASHBACK_TEST_AMQP_URL` is set; exchanges use `redis_prefix` too.
    pub amqp_url: Option<String>,
}

impl Backends {
    pub async fn get(suite: &str) -> Option<Self> {
        let redis_url = match std::env::var(REDIS_URL_VAR) {
            Ok(u) if !u.trim().is_empty() => u,
            _ => {
                flashback_store::testing::note_skipped(suite, REDIS_URL_VAR);
                return None;
            }
        };
        let mysql = flashback_store::testing::mysql(suite).await?;
        let redis_prefix = format!("fbt-{}", uuid::Uuid::new_v4().simple());
        let amqp_url = std::env::var(AMQP_URL_VAR).ok().filter(|u| !u.trim().is_empty());
        Some(Self { mysql, redis_url, redis_prefix, amqp_url })
    }

    /// A configuration pointing at these backends.
    pub fn config(&self, dir: &std::path::Path) -> Config {
        let mut c = test_config(dir);
        c.store.url = self.mysql.options.url.clone().map(SecretString::from);
        c.trade.shard_urls = self.mysql.shard_options.urls.iter().cloned().map(SecretString::from).collect();
        c.cache.redis_url = Some(SecretString::from(self.redis_url.clone()));
        c.cache.redis_prefix = self.redis_prefix.clone();
        c.flash_sale.engine = flashback_server::config::FlashEngine::Sql;
        // Instances of one deployment share the payment provider's key, as deploy/ sets it.
        c.trade.payment_secret = Some(SecretString::from("test-payment-secret-shared-by-every-instance".to_owned()));
        c
    }

    /// The same, with events going through RabbitMQ.
    pub fn config_with_bus(&self, dir: &std::path::Path) -> Config {
        let mut c = self.config(dir);
        c.events.amqp_url = self.amqp_url.clone().map(SecretString::from);
        c.events.exchange_prefix = self.redis_prefix.clone();
        c
    }

    /// Redis keys under this prefix right now.
    pub fn redis_keys(&self) -> Vec<String> {
        let client = redis::Client::open(self.redis_url.as_str()).expect("redis url");
        let mut conn = client.get_connection().expect("redis connection");
        redis::cmd("KEYS").arg(format!("{}:*", self.redis_prefix)).query(&mut conn).expect("keys")
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        drop_redis_keys(&self.redis_url, &self.redis_prefix);
    }
}

fn drop_redis_keys(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else { return };
    let Ok(mut conn) = client.get_connection() else { return };
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut conn).unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
    }
}

/// Redis alone, under a key prefix of its own (deleted on drop), for suites that keep the
/// embedded store: the `redis` flash-sale engine.
pub struct RedisOnly {
    pub url: String,
    pub prefix: String,
}

impl RedisOnly {
    /// `None` (and a SKIPPED note) when `FLASHBACK_TEST_REDIS_URL` is not set.
    pub fn get(suite: &str) -> Option<Self> {
        match std::env::var(REDIS_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => {
                Some(Self { url, prefix: format!("fbt-{}", uuid::Uuid::new_v4().simple()) })
            }
            _ => {
                flashback_store::testing::note_skipped(suite, REDIS_URL_VAR);
                None
            }
        }
    }

    /// Points `c` at this Redis with the `redis` flash-sale engine.
    pub fn apply(&self, c: &mut Config) {
        c.cache.redis_url = Some(SecretString::from(self.url.clone()));
        c.cache.redis_prefix = self.prefix.clone();
        c.flash_sale.engine = flashback_server::config::FlashEngine::Redis;
    }

    /// A connection, for tests that look inside.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url.as_str()).expect("redis url");
        client.get_multiplexed_async_connection().await.expect("redis connection")
    }
}

impl Drop for RedisOnly {
    fn drop(&mut self) {
        drop_redis_keys(&self.url, &self.prefix);
    }
}
