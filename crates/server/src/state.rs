//! The state every handler shares, and how it is built from configuration.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use flashback_core::{CategoryId, IdGenerator, MerchantId, OrderId, ProductId, UserId};
use flashback_infra::{CacheSettings, RedisHandle};
use flashback_store::{ShardOptions, Shards, Store, StoreOptions, WriteIds};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthService, LoginLimiter, PasswordHasherPool, TokenKeys};
use crate::catalog::ProductCache;
use crate::config::Config;
use crate::metrics::Metrics;

/// Shared by every request: one `Arc`, so a clone (axum makes one per extractor and per
/// middleware that takes the state) is one atomic increment, not one per service — under a
/// purchase storm the per-field clones and drops were ~9 % of the server's CPU, both cores
/// bouncing the same reference counts. Fields are reached through `Deref`.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What an instance runs on: configuration, stores, caches, runtimes (see [`AppState`]).
#[derive(Debug)]
pub struct Services {
    /// The configuration the instance started with.
    pub config: Arc<Config>,
    /// The relational store (catalog, accounts, stock).
    pub store: Arc<dyn Store>,
    /// The order shards.
    pub shards: Shards,
    /// Payments, injected faults and the trade core's keys.
    pub trade: Arc<crate::trade::TradeRuntime>,
    /// Redis, when configured.
    pub redis: Option<RedisHandle>,
    /// This instance's id for as long as it runs (a random UUID): who holds a lease.
    pub instance: String,
    /// RabbitMQ, when configured (`events.amqp_url`).
    pub bus: Option<flashback_infra::bus::RabbitBus>,
    /// Id generation.
    pub ids: Arc<Ids>,
    /// The node number in those ids, leased from the store.
    pub node: Arc<crate::node::NodeLease>,
    /// Tokens, hashing, login limits.
    pub auth: Arc<AuthService>,
    /// Product detail cache.
    pub products: ProductCache,
    /// Public flash-sale views, cached briefly.
    pub sale_views: crate::flash_sale::SaleViews,
    /// The flash-sale funnel and engine.
    pub flash: Arc<crate::flash_sale::purchase::FlashRuntime>,
    /// Rebate settings.
    pub rebate: Arc<crate::rebate::RebateRuntime>,
    /// The circuit breaker of every dependency (the affiliate network's lives with its poller).
    pub breakers: Vec<Arc<flashback_core::breaker::Breaker>>,
    /// Where withdrawals are paid, behind its breaker.
    pub payouts: Arc<crate::outbound::GuardedPayouts>,
    /// Behaviour tracking: the ingest queue and its writer.
    pub track: Arc<crate::track::Tracking>,
    /// Real-time analytics: live aggregates and their subscribers.
    pub analytics: Arc<crate::analytics::Live>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the instance begins shutting down; background tasks watch it.
    pub shutdown: CancellationToken,
    /// False once shutdown begins, so /readyz turns load balancers away first.
    pub accepting: Arc<AtomicBool>,
    /// Cancelled to end the drain at once (a second stop signal).
    pub skip_drain: CancellationToken,
}

/// This instance's id generator, with one method per kind of id.
#[derive(Debug)]
pub struct Ids(IdGenerator);

fn now_unix_ms() -> u64 {
    u64::try_from(crate::trade::now_ms()).unwrap_or(0)
}

impl Ids {
    fn raw(&self) -> i64 {
        self.0.next_at(now_unix_ms())
    }

    /// A new account id.
    pub fn user(&self) -> UserId {
        UserId::new(self.raw()).unwrap_or_else(|_| unreachable!("generated ids are positive"))
    }

    /// A new merchant id.
    pub fn merchant(&self) -> MerchantId {
        MerchantId::new(self.raw()).unwrap_or_else(|_| unreachable!("generated ids are positive"))
    }

    /// A new category id.
    pub fn category(&self) -> CategoryId {
        CategoryId::new(self.raw()).unwrap_or_else(|_| unreachable!("generated ids are positive"))
    }

    /// A new order id for `buyer` (carries the buyer's gene).
    pub fn order(&self, buyer: UserId) -> OrderId {
        self.0.next_order_at(now_unix_ms(), buyer)
    }

    /// Ids for the outbox event and points entry of one write.
    pub fn write_ids(&self) -> WriteIds {
        WriteIds { event: self.raw(), entry: self.raw() }
    }

    /// A new flash-sale id.
    pub fn sale(&self) -> flashback_core::SaleId {
        flashback_core::SaleId::new(self.raw()).unwrap_or_else(|_| unreachable!("generated ids are positive"))
    }

    /// A new product id.
    pub fn product(&self) -> ProductId {
        ProductId::new(self.raw()).unwrap_or_else(|_| unreachable!("generated ids are positive"))
    }
}

impl AppState {
    /// The state of a command-line tool run beside the servers: like [`build`](Self::build),
    /// but with any free node number, never a server's configured `node_id`.
    pub async fn build_for_tool(mut config: Config) -> anyhow::Result<Self> {
        config.node_id = None;
        Self::build(config).await
    }

    /// Opens the store (running migrations), leases a node number, connects Redis and
    /// RabbitMQ if configured (or carries on without them while they are away), and builds
    /// the rest.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store_options = StoreOptions {
            url: config.store.url.as_ref().map(|u| u.expose_secret().to_owned()),
            data_dir: config.data_dir.clone(),
            max_connections: config.store.max_connections,
            acquire_timeout: config.store.acquire_timeout,
            breaker: config.breaker.settings(),
        };
        crate::data_dir::prepare(&config)?;
        let store = flashback_store::open(&store_options).await.context(match &store_options.url {
            Some(_) => "opening the store at store.url".to_owned(),
            None => format!("opening the store in the data directory {}", config.data_dir.display()),
        })?;
        let shard_options = ShardOptions {
            count: config.trade.shards,
            urls: config.trade.shard_urls.iter().map(|u| u.expose_secret().to_owned()).collect(),
            replica_urls: config
                .trade
                .replica_urls
                .iter()
                .map(|u| Some(u.expose_secret().to_owned()).filter(|u| !u.is_empty()))
                .collect(),
            store: store_options.clone(),
        };
        let shards = flashback_store::open_shards(&shard_options)
            .await
            .context("opening the order shards (trade.shard_urls, or trade.shards files in the data directory)")?;
        let trade =
            Arc::new(crate::trade::TradeRuntime::new(&config.trade, &config.data_dir, config.breaker.settings())?);
        let redis = crate::dependencies::redis(&config).await?;
        let bus = crate::dependencies::bus(&config).await?;
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let lease = Arc::new(crate::node::NodeLease::take(Arc::clone(&store), config.node_id, &instance).await?);
        let node = lease.node();
        let ids = Arc::new(Ids(IdGenerator::new(node)?));
        let flash = {
            use crate::flash_sale::engine::{Engine, MemoryEngine, SqlEngine};
            use crate::flash_sale::redis_engine::RedisEngine;
            let key = match &config.flash_sale.token_secret {
                Some(s) => s.expose_secret().as_bytes().to_vec(),
                None => crate::keys::key_file(&config.data_dir, "flash.key", "flash_sale.token_secret")?,
            };
            let engine: Arc<dyn Engine> = match (config.flash_sale.engine, &redis) {
                (crate::config::FlashEngine::Memory, _) => {
                    MemoryEngine::start(Arc::clone(&store), &config.data_dir, config.flash_sale.storm_imports_per_sec)
                        .await
                        .context("starting the memory flash-sale engine")?
                }
                (crate::config::FlashEngine::Sql, _) => Arc::new(SqlEngine::new(Arc::clone(&store))),
                (crate::config::FlashEngine::Redis, Some(r)) => RedisEngine::new(r.clone(), Arc::clone(&store), node)
                    .await
                    .context("starting the redis flash-sale engine")?,
                (crate::config::FlashEngine::Redis, None) => {
                    anyhow::bail!("flash_sale.engine: redis needs cache.redis_url")
                }
            };
            let cluster = redis.as_ref().and_then(|r| {
                crate::flash_sale::cluster_limit::ClusterLimits::new(
                    r.clone(),
                    config.flash_sale.cluster_global_per_sec,
                    config.flash_sale.cluster_per_sale_per_sec,
                )
            });
            Arc::new(crate::flash_sale::purchase::FlashRuntime::new(&config.flash_sale, engine, cluster, key))
        };
        let metrics = Arc::new(Metrics::new());
        let breakers = store.breakers().into_iter().chain(shards.all().iter().flat_map(|s| s.breakers()));
        let payouts = Arc::new(crate::outbound::GuardedPayouts::new(
            Arc::new(crate::rebate::withdraw::SimulatedAlipay::default()),
            config.breaker.settings(),
        ));
        let breakers = breakers.chain(bus.iter().map(|b| Arc::clone(b.breaker())));
        let breakers = breakers.chain([Arc::clone(trade.provider.breaker()), Arc::clone(payouts.breaker())]);
        let breakers: Vec<_> = breakers.chain(redis.iter().map(|r| Arc::clone(r.breaker()))).collect();
        for breaker in &breakers {
            metrics.watch_breaker(breaker);
        }
        let tokens = TokenKeys::load(config.auth.token_secret.as_ref(), &config.data_dir, config.auth.token_ttl)?;
        if config.auth.token_secret.is_none() && config.store.url.is_some() {
            tracing::warn!("auth.token_secret is not set: tokens from this instance will not verify on others");
        }
        let auth = Arc::new(AuthService {
            tokens,
            hasher: PasswordHasherPool::new(config.auth.argon2_memory_kib, config.auth.argon2_iterations)?,
            limiter: LoginLimiter::new(config.auth.login_per_account_per_minute, config.auth.login_per_ip_per_minute),
        });
        let c = &config.catalog;
        let settings = CacheSettings {
            capacity: c.cache_capacity,
            l1_ttl: c.cache_l1_ttl,
            l2_ttl: c.cache_l2_ttl,
            negative_ttl: c.cache_negative_ttl,
            stale_ttl: c.cache_stale_ttl,
            stale_retry: c.cache_stale_retry,
            double_delete_delay: c.cache_double_delete_delay,
        };
        let rebate = Arc::new(crate::rebate::RebateRuntime {
            policy: config.rebate.policy().context("rebate split rates")?,
            seen: crate::rebate::postback::seen_signatures(config.rebate.postback_tolerance),
            click_key: match &config.rebate.click_secret {
                Some(s) => s.expose_secret().as_bytes().to_vec(),
                None => crate::keys::key_file(&config.data_dir, "click.key", "rebate.click_secret")?,
            },
        });
        let track = crate::track::Tracking::build(&config, redis.as_ref(), bus.as_ref()).await.context("tracking")?;
        let analytics = crate::analytics::Live::build(&config, redis.as_ref(), &instance).await.context("analytics")?;
        let products = ProductCache::new("product", settings, redis.clone(), metrics.cache.clone());
        Ok(Self(Arc::new(Services {
            config: Arc::new(config),
            store,
            shards,
            trade,
            redis,
            instance,
            bus,
            ids,
            node: lease,
            auth,
            products,
            sale_views: crate::flash_sale::view_cache(),
            flash,
            rebate,
            payouts,
            breakers,
            track,
            analytics,
            metrics,
            shutdown: CancellationToken::new(),
            accepting: Arc::new(AtomicBool::new(true)),
            skip_drain: CancellationToken::new(),
        })))
    }
}
