//! Configuration: built-in defaults, then `flashback.toml` (if given), then `FLASHBACK_*`
//! environment variables, then command-line flags. Durations are typed, with units in the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

mod env;

/// Top-level sections; `FLASHBACK_<SECTION>_<KEY>` maps to `<section>.<key>`.
const SECTIONS: &[&str] = &[
    "store",
    "cache",
    "auth",
    "http",
    "catalog",
    "trade",
    "events",
    "flash_sale",
    "rebate",
    "track",
    "analytics",
    "breaker",
];

/// Everything an instance is configured with. `Debug` never shows a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// What this deployment is: `development` (the default), `staging` or `production`.
    /// Production refuses settings that only make sense in development (the simulated
    /// payment provider).
    pub environment: Environment,
    /// Address to serve HTTP on.
    pub listen: SocketAddr,
    /// Where SQLite files and the generated token key live.
    pub data_dir: PathBuf,
    /// This instance's node number (0–63) for id generation, unique per instance; random when absent.
    pub node_id: Option<u16>,
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter (`info`, `flashback=debug,sqlx=warn`); `RUST_LOG` overrides it.
    pub log_level: String,
    /// The relational store.
    pub store: StoreConfig,
    /// Caching and Redis.
    pub cache: CacheConfig,
    /// Accounts and tokens.
    pub auth: AuthConfig,
    /// The HTTP server's protections.
    pub http: HttpConfig,
    /// The product cache.
    pub catalog: CatalogConfig,
    /// Orders, shards, payments and points.
    pub trade: TradeConfig,
    /// Where domain events go beyond this process.
    pub events: EventsConfig,
    /// Flash sales: the reserve engine and the admission funnel.
    pub flash_sale: FlashSaleConfig,
    /// Rebates: commission splits, holds, withdrawals, and the affiliate networks.
    pub rebate: RebateConfig,
    /// Behaviour tracking: ingest limits, the queue, the writer and retention.
    pub track: crate::track::TrackConfig,
    /// Real-time analytics and the live dashboard.
    pub analytics: crate::analytics::AnalyticsConfig,
    /// Circuit breakers in front of every dependency.
    pub breaker: BreakerConfig,
    /// `FLASHBACK_*` environment variables that name no key and were left out (for a warning
    /// once logging is up).
    #[serde(skip)]
    pub ignored_env: Vec<String>,
}

/// When a dependency's breaker opens and how long it fails fast before probing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open a breaker.
    pub failures_to_open: u32,
    /// How long an open breaker fails fast before one call probes the dependency.
    #[serde(rename = "open_ms", with = "millis")]
    pub open: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failures_to_open: 5, open: Duration::from_secs(1) }
    }
}

impl BreakerConfig {
    /// The settings every breaker is made with.
    pub fn settings(&self) -> flashback_core::breaker::BreakerSettings {
        flashback_core::breaker::BreakerSettings { failures_to_open: self.failures_to_open, open_for: self.open }
    }
}

/// Rebates: commission splits, holds, withdrawals, and the affiliate networks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RebateConfig {
    /// The buyer's share of a commission by tier, in basis points (1/100 of a percent).
    pub standard_bp: u32,
    /// Silver tier.
    pub silver_bp: u32,
    /// Gold tier.
    pub gold_bp: u32,
    /// The inviter's share.
    pub inviter_bp: u32,
    /// The commission the platform pays on its own orders, in basis points of what was paid
    /// (split like a network's; 0 turns platform rebates off).
    pub platform_commission_bp: u32,
    /// The inviter's inviter's share.
    pub grand_inviter_bp: u32,
    /// The buyer's share for items of a category, whatever the tier (`{"数码" = 3000}`).
    pub category_bp: std::collections::HashMap<String, u32>,
    /// How long settled rebates stay pending before they can be withdrawn (returns and
    /// post-settlement refunds come in this window).
    #[serde(rename = "hold_ms", with = "millis")]
    pub hold: Duration,
    /// The smallest withdrawal, in minor units.
    pub withdraw_min_minor: i64,
    /// Withdrawal requests one user may make per day (UTC).
    pub withdraw_daily_count: u32,
    /// How often due holds are released and the feeds polled.
    #[serde(rename = "sweep_interval_ms", with = "millis")]
    pub sweep_interval: Duration,
    /// HMAC key networks sign postbacks with; absent: postbacks are refused.
    #[serde(serialize_with = "secret_opt::serialize")]
    pub postback_secret: Option<SecretString>,
    /// HMAC key that turns a click's client address into the `ip_hash` stored with it (the
    /// address itself is never stored), at least 32 bytes; absent: `data_dir/click.key`.
    /// Instances must share it for their hashes to agree.
    #[serde(serialize_with = "secret_opt::serialize")]
    pub click_secret: Option<SecretString>,
    /// How far a postback's timestamp may be from our clock.
    #[serde(rename = "postback_tolerance_ms", with = "millis")]
    pub postback_tolerance: Duration,
    /// The Taobao Open Platform gateway to poll (`https://eco.taobao.com/router/rest`);
    /// absent: no polling.
    pub taobao_url: Option<String>,
    /// The TOP app key.
    pub taobao_app_key: String,
    /// The TOP app secret.
    #[serde(serialize_with = "secret_opt::serialize")]
    pub taobao_app_secret: Option<SecretString>,
    /// Longest window per feed request (TOP allows 3 h).
    #[serde(rename = "taobao_window_ms", with = "millis")]
    pub taobao_window: Duration,
    /// How far each window reaches back into the previous one, for rows reported late.
    #[serde(rename = "taobao_overlap_ms", with = "millis")]
    pub taobao_overlap: Duration,
    /// On the first poll, how far back to start.
    #[serde(rename = "taobao_lookback_ms", with = "millis")]
    pub taobao_lookback: Duration,
    /// How often the feeds are polled.
    #[serde(rename = "taobao_poll_interval_ms", with = "millis")]
    pub taobao_poll_interval: Duration,
    /// Order rows a feed poll applies per database transaction: pages are gathered up to this
    /// many rows, and each batch is prepared while the one before is written.
    pub ingest_batch_rows: usize,
}

impl Default for RebateConfig {
    fn default() -> Self {
        Self {
            standard_bp: 5_000,
            silver_bp: 6_000,
            gold_bp: 7_000,
            inviter_bp: 1_000,
            platform_commission_bp: 300,
            grand_inviter_bp: 500,
            category_bp: std::collections::HashMap::new(),
            hold: Duration::from_secs(15 * 24 * 3600),
            withdraw_min_minor: 100,
            withdraw_daily_count: 3,
            sweep_interval: Duration::from_secs(5),
            postback_secret: None,
            click_secret: None,
            postback_tolerance: Duration::from_secs(300),
            taobao_url: None,
            taobao_app_key: String::new(),
            taobao_app_secret: None,
            taobao_window: Duration::from_secs(3 * 3600),
            taobao_overlap: Duration::from_secs(20 * 60),
            taobao_lookback: Duration::from_secs(3 * 24 * 3600),
            taobao_poll_interval: Duration::from_secs(60),
            ingest_batch_rows: 5_000,
        }
    }
}

impl RebateConfig {
    /// The split policy these rates describe.
    pub fn policy(&self) -> Result<flashback_core::SplitPolicy, flashback_core::ParseError> {
        use flashback_core::BasisPoints as Bp;
        let overrides = self
            .category_bp
            .iter()
            .map(|(k, v)| Ok((k.clone(), Bp::new(*v)?)))
            .collect::<Result<_, flashback_core::ParseError>>()?;
        flashback_core::SplitPolicy::new(
            [Bp::new(self.standard_bp)?, Bp::new(self.silver_bp)?, Bp::new(self.gold_bp)?],
            Bp::new(self.inviter_bp)?,
            Bp::new(self.grand_inviter_bp)?,
            overrides,
        )
    }
}

/// The flash-sale reserve engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashEngine {
    /// In process, durable by group commit (embedded, one instance).
    Memory,
    /// A Lua step in Redis that reserves and queues atomically (many instances; needs
    /// `cache.redis_url`).
    Redis,
    /// One conditional-update transaction per attempt (small sales; the baseline).
    Sql,
}

/// Flash sales: the reserve engine and the admission funnel (rates per instance).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlashSaleConfig {
    /// `memory`, `redis` or `sql`.
    pub engine: FlashEngine,
    /// Purchase attempts per second this instance admits in all.
    pub global_per_sec: u32,
    /// Purchase attempts per second this instance admits for one sale.
    pub per_sale_per_sec: u32,
    /// Purchase attempts per second the whole cluster admits in all, kept in Redis (when
    /// `cache.redis_url` is set; 0 turns it off).
    pub cluster_global_per_sec: u32,
    /// Purchase attempts per second the whole cluster admits for one sale (0: off).
    pub cluster_per_sale_per_sec: u32,
    /// Purchase attempts per second one buyer may make.
    pub per_user_per_sec: u32,
    /// Order shards written at once by the flash order worker (each shard's orders of a pass,
    /// up to 500, are one transaction). Low on purpose: reservations queue up during a storm
    /// and orders follow at a steady pace (peak shaving), leaving the CPU to purchases.
    pub order_concurrency: usize,
    /// Orders per second the flash order worker makes at most while this instance is
    /// accepting purchases (0: no limit). The peak shaver: during a storm reservations wait in
    /// the queue (each durable, its ticket `queued`) while orders follow at this pace, so making
    /// them does not take the CPU and disk that accepting purchases needs; after the storm the
    /// queue drains as fast as the shards take it.
    pub storm_orders_per_sec: u32,
    /// Reservations per second the `memory` engine's importer moves from its journal into the
    /// store at most while this instance is accepting purchases (0: no limit). Each is durable
    /// in the journal already; the importer keeps ahead of the paced order worker and catches
    /// up once the storm is over, or at once when the backlog nears its bound.
    pub storm_imports_per_sec: u32,
    /// Purchase attempts per second one client IP may make.
    pub per_ip_per_sec: u32,
    /// How long before a sale's start purchase tokens are issued (sales that require them).
    #[serde(rename = "token_window_ms", with = "millis")]
    pub token_window: Duration,
    /// HMAC key for purchase tokens, at least 32 bytes; absent: `data_dir/flash.key`.
    #[serde(serialize_with = "secret_opt::serialize")]
    pub token_secret: Option<SecretString>,
}

impl Default for FlashSaleConfig {
    fn default() -> Self {
        Self {
            engine: FlashEngine::Memory,
            global_per_sec: 100_000,
            per_sale_per_sec: 50_000,
            cluster_global_per_sec: 200_000,
            cluster_per_sale_per_sec: 100_000,
            per_user_per_sec: 5,
            order_concurrency: 4,
            storm_orders_per_sec: 1_000,
            storm_imports_per_sec: 2_000,
            per_ip_per_sec: 200,
            token_window: Duration::from_secs(300),
            token_secret: None,
        }
    }
}

/// Where domain events go beyond this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// `amqp://user:pass@host:5672/vhost`: relay the outbox to RabbitMQ and consume from it.
    /// Absent: the in-process dispatcher delivers events.
    #[serde(serialize_with = "secret_opt::serialize")]
    pub amqp_url: Option<SecretString>,
    /// Prefix of the exchanges and queues (`<prefix>.events`, `<prefix>.dead-letters`, …).
    pub exchange_prefix: String,
    /// Unacknowledged deliveries one consumer holds at once.
    pub prefetch: u16,
    /// Attempts before a failing event goes to the dead-letter queue.
    pub max_attempts: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { amqp_url: None, exchange_prefix: "flashback".into(), prefetch: 32, max_attempts: 5 }
    }
}

/// Orders, shards, payments and points.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TradeConfig {
    /// Embedded: how many SQLite order shards (`orders-<i>.db`); must divide 1024.
    pub shards: u16,
    /// Scaled out: one MySQL URL per order shard, in order; overrides `shards`.
    #[serde(serialize_with = "secret_list::serialize")]
    pub shard_urls: Vec<SecretString>,
    /// Scaled out: per shard (same order as `shard_urls`), the URL of a read replica of that
    /// shard's database, or "" for none. Merchant and back-office lists read replicas.
    #[serde(serialize_with = "secret_list::serialize")]
    pub replica_urls: Vec<SecretString>,
    /// How long an order may stay unpaid before it expires.
    #[serde(rename = "payment_timeout_ms", with = "millis")]
    pub payment_timeout: Duration,
    /// How often expired orders and orphaned reservations are swept.
    #[serde(rename = "sweep_interval_ms", with = "millis")]
    pub sweep_interval: Duration,
    /// A held reservation whose order does not exist this long after it was made is an orphan
    /// (a saga that died midway) and is released.
    #[serde(rename = "orphan_after_ms", with = "millis")]
    pub orphan_after: Duration,
    /// HMAC key shared with the payment provider for its notifications (at least 32 bytes).
    /// Absent: generated once into `data_dir/payment.key` (the built-in simulator reads it too).
    #[serde(serialize_with = "secret_opt::serialize")]
    pub payment_secret: Option<SecretString>,
    /// Who takes payments: `simulated` (the built-in stand-in: a signed pay link marks the
    /// payment paid without money moving; refused in production) or `none` (orders can be
    /// placed but not paid: paying answers 503 `payment_provider_unavailable`).
    pub payment_provider: PaymentProviderKind,
    /// How long after a payment is created the built-in simulated provider reports it paid;
    /// 0 leaves payment to `POST /api/v1/payments/simulated/{id}/complete`.
    #[serde(rename = "simulated_payment_delay_ms", with = "millis")]
    pub simulated_payment_delay: Duration,
    /// Points awarded per 100 minor units paid, when an order completes.
    pub points_per_100_minor: u32,
}

/// What a deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer's machine, demos and tests.
    Development,
    /// A rehearsal of production.
    Staging,
    /// Real shoppers and real money.
    Production,
}

/// Who takes payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentProviderKind {
    /// The built-in stand-in provider, for development, demos and tests.
    Simulated,
    /// None: payments cannot be started.
    None,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-friendly, for terminals.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The relational store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `mysql://user:password@host:3306/db`; absent means SQLite under `data_dir`.
    #[serde(serialize_with = "secret_opt::serialize")]
    pub url: Option<SecretString>,
    /// Pool size (MySQL), or read pool size (SQLite).
    pub max_connections: u32,
    /// How long to wait for a pooled connection before failing as unavailable.
    #[serde(rename = "acquire_timeout_ms", with = "millis")]
    pub acquire_timeout: Duration,
}

/// Caching and Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// `redis://host:6379/0`; absent means in-process caching only.
    #[serde(serialize_with = "secret_opt::serialize")]
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key and channel, so deployments can share a server.
    pub redis_prefix: String,
    /// How long any Redis call may take before it is treated as failed.
    #[serde(rename = "redis_timeout_ms", with = "millis")]
    pub redis_timeout: Duration,
}

/// Accounts and tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HMAC key for access tokens, at least 32 bytes. Absent: generated once and kept in
    /// `data_dir/token.key` (fine for one instance; several instances must share one key).
    #[serde(serialize_with = "secret_opt::serialize")]
    pub token_secret: Option<SecretString>,
    /// How long an access token is valid.
    #[serde(rename = "token_ttl_ms", with = "millis")]
    pub token_ttl: Duration,
    /// argon2id memory cost in KiB (OWASP: 19456).
    pub argon2_memory_kib: u32,
    /// argon2id iterations (OWASP: 2).
    pub argon2_iterations: u32,
    /// Logins allowed per account per minute (a short burst of the same size is allowed).
    pub login_per_account_per_minute: u32,
    /// Logins allowed per client IP per minute.
    pub login_per_ip_per_minute: u32,
}

/// The HTTP server's protections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request still running after this is answered 503 (408 if it is still waiting for the
    /// client's body).
    #[serde(rename = "request_timeout_ms", with = "millis")]
    pub request_timeout: Duration,
    /// A connection that has not sent a whole request head this long after it opened (or after
    /// its last answer; on HTTP/2, with no request in flight that long) is closed.
    #[serde(rename = "header_read_timeout_ms", with = "millis")]
    pub header_read_timeout: Duration,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// Requests in flight at once; more are shed with 503 and `Retry-After`.
    pub max_concurrency: usize,
    /// How long shutdown waits for requests in flight.
    #[serde(rename = "shutdown_grace_ms", with = "millis")]
    pub shutdown_grace: Duration,
    /// On a stop signal, how long the instance goes on serving (not ready, every response
    /// `Connection: close`) before it closes its listener, so load balancers move away first.
    #[serde(rename = "drain_delay_ms", with = "millis")]
    pub drain_delay: Duration,
    /// Take the client IP from the last `X-Forwarded-For` entry (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
}

/// The product cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Products held in process.
    pub cache_capacity: u64,
    /// How long a product stays in the in-process cache.
    #[serde(rename = "cache_l1_ttl_ms", with = "millis")]
    pub cache_l1_ttl: Duration,
    /// How long a product stays in Redis.
    #[serde(rename = "cache_l2_ttl_ms", with = "millis")]
    pub cache_l2_ttl: Duration,
    /// How long "no such product" is remembered.
    #[serde(rename = "cache_negative_ttl_ms", with = "millis")]
    pub cache_negative_ttl: Duration,
    /// How long the last good copy is kept to serve while the store is down.
    #[serde(rename = "cache_stale_ttl_ms", with = "millis")]
    pub cache_stale_ttl: Duration,
    /// While the store is down, how long a stale copy is reused before retrying the store.
    #[serde(rename = "cache_stale_retry_ms", with = "millis")]
    pub cache_stale_retry: Duration,
    /// After a write, the cached copy is deleted at once and again after this delay, so a read
    /// that loaded the old row just before the write cannot leave it cached.
    #[serde(rename = "cache_double_delete_delay_ms", with = "millis")]
    pub cache_double_delete_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            environment: Environment::Development,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            node_id: None,
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
            store: StoreConfig::default(),
            cache: CacheConfig::default(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            catalog: CatalogConfig::default(),
            trade: TradeConfig::default(),
            events: EventsConfig::default(),
            flash_sale: FlashSaleConfig::default(),
            rebate: RebateConfig::default(),
            track: crate::track::TrackConfig::default(),
            analytics: crate::analytics::AnalyticsConfig::default(),
            breaker: BreakerConfig::default(),
            ignored_env: Vec::new(),
        }
    }
}

impl Default for TradeConfig {
    fn default() -> Self {
        Self {
            shards: 4,
            shard_urls: Vec::new(),
            replica_urls: Vec::new(),
            payment_timeout: Duration::from_secs(15 * 60),
            sweep_interval: Duration::from_secs(1),
            orphan_after: Duration::from_secs(60),
            payment_secret: None,
            payment_provider: PaymentProviderKind::Simulated,
            simulated_payment_delay: Duration::ZERO,
            points_per_100_minor: 1,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 8, acquire_timeout: Duration::from_secs(3) }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { redis_url: None, redis_prefix: "flashback".into(), redis_timeout: Duration::from_millis(250) }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_secret: None,
            token_ttl: Duration::from_secs(3600),
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            login_per_account_per_minute: 10,
            login_per_ip_per_minute: 60,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_limit_bytes: 1024 * 1024,
            max_concurrency: 1024,
            shutdown_grace: Duration::from_secs(20),
            drain_delay: Duration::from_secs(5),
            trust_forwarded_for: false,
        }
    }
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            cache_capacity: 100_000,
            cache_l1_ttl: Duration::from_secs(30),
            cache_l2_ttl: Duration::from_secs(300),
            cache_negative_ttl: Duration::from_secs(5),
            cache_stale_ttl: Duration::from_secs(3600),
            cache_stale_retry: Duration::from_secs(1),
            cache_double_delete_delay: Duration::from_millis(500),
        }
    }
}

/// Invalid configuration; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Maps an environment key (after `FLASHBACK_`, lower-cased) to a config path:
/// `store_url` → `store.url`, `cache__redis_url` → `cache.redis_url`, `data_dir` → `data_dir`.
fn env_key_to_path(key: &str) -> String {
    let key = key.to_ascii_lowercase().replace("__", ".");
    for section in SECTIONS {
        if let Some(rest) = key.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
            return format!("{section}.{rest}");
        }
    }
    key
}

/// One line per problem, each starting with the lower-cased key and naming where it came from.
fn describe(errors: figment::Error) -> ConfigError {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_ascii_lowercase();
            let source = e.metadata.as_ref().map_or_else(String::new, |m| format!(" (from {})", m.name));
            if key.is_empty() { format!("{}{source}", e.kind) } else { format!("{key}: {}{source}", e.kind) }
        })
        .collect();
    ConfigError(lines.join("; "))
}

impl Config {
    /// Loads defaults, then `file` (if any), then `FLASHBACK_*` variables, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        let defaults = std::sync::Arc::new(
            serde_json::to_value(Config::default()).map_err(|e| ConfigError(format!("defaults: {e}")))?,
        );
        let ignored_env = env::unknown(&defaults, env_key_to_path);
        let env = Env::prefixed(env::PREFIX)
            .filter(move |k| !env::is_test_setting(k.as_str()) && env::is_key(&defaults, &env_key_to_path(k.as_str())))
            .map(|k| env_key_to_path(k.as_str()).into());
        let mut config: Config = figment.merge(env).extract().map_err(describe)?;
        config.validate()?;
        config.ignored_env = ignored_env;
        Ok(config)
    }

    /// Checks rules serde cannot express; each message starts with the key it is about.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: &str| Err(ConfigError(msg.to_owned()));
        if self.environment == Environment::Production && self.trade.payment_provider == PaymentProviderKind::Simulated
        {
            return fail(
                "trade.payment_provider: `simulated` marks orders paid without money moving and cannot run with \
                 environment = \"production\"; set trade.payment_provider = \"none\" or configure a real provider",
            );
        }
        if let Some(url) = &self.store.url {
            let u = url.expose_secret();
            if !(u.starts_with("mysql://") || u.starts_with("mariadb://") || u.starts_with("sqlite:")) {
                return fail("store.url: must start with mysql://, mariadb:// or sqlite:");
            }
        }
        if let Some(url) = &self.cache.redis_url
            && !(url.expose_secret().starts_with("redis://") || url.expose_secret().starts_with("rediss://"))
        {
            return fail("cache.redis_url: must start with redis:// or rediss://");
        }
        if let Some(url) = &self.events.amqp_url
            && !(url.expose_secret().starts_with("amqp://") || url.expose_secret().starts_with("amqps://"))
        {
            return fail("events.amqp_url: must start with amqp:// or amqps://");
        }
        if self.events.prefetch == 0 || self.events.max_attempts == 0 {
            return fail("events.prefetch / events.max_attempts: must be at least 1");
        }
        let f = &self.flash_sale;
        if f.global_per_sec == 0 || f.per_sale_per_sec == 0 || f.per_user_per_sec == 0 || f.per_ip_per_sec == 0 {
            return fail("flash_sale.*_per_sec: must be at least 1");
        }
        if !(1..=256).contains(&f.order_concurrency) {
            return fail("flash_sale.order_concurrency: 1 to 256");
        }
        if f.token_secret.as_ref().is_some_and(|s| s.expose_secret().len() < 32) {
            return fail("flash_sale.token_secret: must be at least 32 bytes");
        }
        if f.engine == FlashEngine::Memory
            && self.store.url.as_ref().is_some_and(|u| !u.expose_secret().starts_with("sqlite:"))
        {
            return fail(
                "flash_sale.engine: memory keeps stock in one process; with a MySQL store (several instances) use sql",
            );
        }
        if f.engine == FlashEngine::Redis && self.cache.redis_url.is_none() {
            return fail("flash_sale.engine: redis needs cache.redis_url");
        }
        if let Err(e) = self.rebate.policy() {
            return fail(&format!("rebate.*_bp: {e}"));
        }
        if self.rebate.platform_commission_bp > 10_000 {
            return fail("rebate.platform_commission_bp: at most 10000");
        }
        if self.rebate.withdraw_min_minor < 1 || self.rebate.withdraw_daily_count == 0 {
            return fail("rebate.withdraw_min_minor / rebate.withdraw_daily_count: must be at least 1");
        }
        let r = &self.rebate;
        if r.taobao_url.is_some() && (r.taobao_app_key.is_empty() || r.taobao_app_secret.is_none()) {
            return fail("rebate.taobao_app_key / rebate.taobao_app_secret: required with rebate.taobao_url");
        }
        if r.taobao_window < Duration::from_secs(60) || r.taobao_overlap >= r.taobao_window {
            return fail("rebate.taobao_window_ms: at least 60000 and longer than rebate.taobao_overlap_ms");
        }
        if self.rebate.postback_secret.as_ref().is_some_and(|s| s.expose_secret().len() < 32) {
            return fail("rebate.postback_secret: must be at least 32 bytes");
        }
        if self.node_id.is_some_and(|n| n > flashback_core::id::MAX_NODE) {
            return fail("node_id: must be 0 to 63");
        }
        if self.store.max_connections == 0 {
            return fail("store.max_connections: must be at least 1");
        }
        if self.rebate.click_secret.as_ref().is_some_and(|s| s.expose_secret().len() < 32) {
            return fail("rebate.click_secret: must be at least 32 bytes");
        }
        if self.auth.token_secret.as_ref().is_some_and(|s| s.expose_secret().len() < 32) {
            return fail("auth.token_secret: must be at least 32 bytes");
        }
        if self.auth.token_ttl < Duration::from_secs(60) {
            return fail("auth.token_ttl_ms: must be at least 60000");
        }
        if self.auth.argon2_memory_kib < 8 || self.auth.argon2_iterations == 0 {
            return fail("auth.argon2_memory_kib / auth.argon2_iterations: out of range");
        }
        if self.auth.login_per_account_per_minute == 0 || self.auth.login_per_ip_per_minute == 0 {
            return fail("auth.login_per_*_per_minute: must be at least 1");
        }
        if self.http.max_concurrency == 0 || self.http.body_limit_bytes == 0 {
            return fail("http.max_concurrency / http.body_limit_bytes: must be at least 1");
        }
        if self.breaker.failures_to_open == 0
            || self.breaker.open.is_zero()
            || self.breaker.open > Duration::from_secs(60)
        {
            return fail("breaker.failures_to_open / breaker.open_ms: at least 1, and open_ms at most 60000");
        }
        if self.http.drain_delay > Duration::from_secs(300) {
            return fail("http.drain_delay_ms: at most 300000");
        }
        if self.http.request_timeout.is_zero() {
            return fail("http.request_timeout_ms: must be at least 1");
        }
        if self.http.header_read_timeout.is_zero() || self.http.header_read_timeout > Duration::from_secs(3600) {
            return fail("http.header_read_timeout_ms: 1 to 3600000");
        }
        let t = &self.trade;
        let shard_count = if t.shard_urls.is_empty() { usize::from(t.shards) } else { t.shard_urls.len() };
        if shard_count == 0 || shard_count > 1024 || 1024 % shard_count != 0 {
            return fail("trade.shards / trade.shard_urls: the shard count must divide 1024 (1, 2, 4, ... 1024)");
        }
        if t.shard_urls
            .iter()
            .any(|u| !u.expose_secret().starts_with("mysql://") && !u.expose_secret().starts_with("mariadb://"))
        {
            return fail("trade.shard_urls: each must start with mysql:// or mariadb://");
        }
        let mysql_store = self.store.url.as_ref().is_some_and(|u| !u.expose_secret().starts_with("sqlite:"));
        if !t.shard_urls.is_empty() && !mysql_store {
            return fail("trade.shard_urls: needs a MySQL store.url too; embedded mode uses trade.shards");
        }
        if t.shard_urls.is_empty() && mysql_store {
            return fail("trade.shard_urls: a MySQL store.url needs one MySQL URL per order shard");
        }
        if !t.replica_urls.is_empty() && t.replica_urls.len() != t.shard_urls.len() {
            return fail(
                "trade.replica_urls: one entry per trade.shard_urls entry (\"\" for a shard without a replica)",
            );
        }
        if t.payment_secret.as_ref().is_some_and(|s| s.expose_secret().len() < 32) {
            return fail("trade.payment_secret: must be at least 32 bytes");
        }
        if t.orphan_after <= self.http.request_timeout {
            return fail(
                "trade.orphan_after_ms: must be longer than http.request_timeout_ms, or a slow saga's stock could be released under it",
            );
        }
        if t.payment_timeout < Duration::from_secs(1) || t.sweep_interval.is_zero() || t.orphan_after.is_zero() {
            return fail("trade.payment_timeout_ms / sweep_interval_ms / orphan_after_ms: out of range");
        }
        if self.catalog.cache_l1_ttl.is_zero() || self.catalog.cache_negative_ttl.is_zero() {
            return fail("catalog.cache_*_ttl_ms: must be at least 1");
        }
        self.track.validate().map_err(ConfigError)?;
        Ok(())
    }
}

/// `Duration` as integer milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Secrets are written out only as a placeholder, so a serialised config never leaks them.
pub(crate) mod secret_opt {
    use secrecy::SecretString;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            // Defaults never hold secrets; this branch only runs when a config is dumped.
            Some(_) => s.serialize_some("<redacted>"),
            None => s.serialize_none(),
        }
    }
}

/// A list of secrets is written out as placeholders.
mod secret_list {
    use secrecy::SecretString;
    use serde::Serializer;
    use serde::ser::SerializeSeq;

    pub fn serialize<S: Serializer>(v: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for _ in v {
            seq.serialize_element("<redacted>")?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_keys_map_to_sections() {
        assert_eq!(env_key_to_path("store_url"), "store.url");
        assert_eq!(env_key_to_path("cache_redis_url"), "cache.redis_url");
        assert_eq!(env_key_to_path("cache__redis_url"), "cache.redis_url");
        assert_eq!(env_key_to_path("data_dir"), "data_dir");
        assert_eq!(env_key_to_path("listen"), "listen");
        assert_eq!(env_key_to_path("AUTH_ARGON2_ITERATIONS"), "auth.argon2_iterations");
    }

    #[test]
    fn a_file_overrides_defaults_and_bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9999\"\n[store]\nmax_connections = 3\n").unwrap();
        let c = Config::load(Some(&file)).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.store.max_connections, 3);

        std::fs::write(&file, "[store]\nmax_conections = 3\n").unwrap();
        let e = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(e.contains("max_conections"), "{e}");

        std::fs::write(&file, "[store]\nurl = \"postgres://x\"\n").unwrap();
        let e = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(e.contains("store.url"), "{e}");
    }

    #[test]
    fn the_annotated_example_file_loads_and_holds_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flashback.example.toml");
        let loaded = Config::load(Some(&example)).unwrap();
        let json = |c: &Config| serde_json::to_value(c).unwrap();
        assert_eq!(json(&loaded), json(&Config::default()), "the example's values are the defaults");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let mut c = Config::default();
        c.auth.token_secret = Some(SecretString::from("super-secret-key-that-is-long-enough".to_owned()));
        c.store.url = Some(SecretString::from("mysql://root:hunter2@db/x".to_owned()));
        let shown = format!("{c:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
