//! A read-through cache in levels: in-process L1 (moka) → Redis L2 (when configured) → store.
//!
//! - **Single flight**: concurrent misses of one key run one load; the others wait for it.
//! - **Negative caching**: a missing row is remembered for a short, separate TTL.
//! - **Invalidation** on every write: L1 and L2 are cleared, other instances are told over
//!   Redis pub/sub, and the clear is repeated after a short delay ("delayed double delete") so a
//!   load that read the old row just before the write cannot leave it cached.
//! - **Stale on error**: the last good copy of each key is kept (bounded, for `stale_ttl`); when
//!   the store is unavailable it is served, flagged [`Source::Stale`], and reused for
//!   `stale_retry` before the store is tried again, so an outage never becomes a retry storm.

mod l2;
mod metrics;

use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flashback_store::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use metrics::CacheMetrics;

use crate::RedisHandle;

/// Sizes and lifetimes of one cache.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Most entries held in process.
    pub capacity: u64,
    /// How long a found value stays in L1.
    pub l1_ttl: Duration,
    /// How long a value stays in Redis.
    pub l2_ttl: Duration,
    /// How long "does not exist" is remembered.
    pub negative_ttl: Duration,
    /// How long the last good copy is kept for serving stale during an outage.
    pub stale_ttl: Duration,
    /// While the store is down, how long a stale serve is reused before the store is retried.
    pub stale_retry: Duration,
    /// Delay before the second delete of an invalidation.
    pub double_delete_delay: Duration,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// In-process cache (including waiting on another request's load of the same key).
    L1,
    /// Redis.
    L2,
    /// Loaded from the store just now.
    Store,
    /// The last good copy, served because the store is unavailable.
    Stale,
}

impl Source {
    /// `hit`, `miss` or `stale`, for an `X-Cache` response header.
    pub fn header_value(self) -> &'static str {
        match self {
            Source::L1 | Source::L2 => "hit",
            Source::Store => "miss",
            Source::Stale => "stale",
        }
    }
}

/// A cache answer: the value (`None` if it does not exist) and where it came from.
#[derive(Debug, Clone)]
pub struct Cached<V> {
    /// The value, shared.
    pub value: Option<Arc<V>>,
    /// Where it came from.
    pub source: Source,
}

enum Slot<V> {
    Found(Arc<V>),
    Missing,
    Stale(Arc<V>),
}

// By hand: the derive would demand `V: Clone`, but only the `Arc` is cloned.
impl<V> Clone for Slot<V> {
    fn clone(&self) -> Self {
        match self {
            Slot::Found(v) => Slot::Found(Arc::clone(v)),
            Slot::Missing => Slot::Missing,
            Slot::Stale(v) => Slot::Stale(Arc::clone(v)),
        }
    }
}

struct SlotExpiry {
    fresh: Duration,
    negative: Duration,
    stale_retry: Duration,
}

impl SlotExpiry {
    fn ttl<V>(&self, slot: &Slot<V>) -> Duration {
        match slot {
            Slot::Found(_) => self.fresh,
            Slot::Missing => self.negative,
            Slot::Stale(_) => self.stale_retry,
        }
    }
}

impl<K, V> moka::Expiry<K, Slot<V>> for SlotExpiry {
    fn expire_after_create(&self, _: &K, slot: &Slot<V>, _: Instant) -> Option<Duration> {
        Some(self.ttl(slot))
    }

    fn expire_after_update(&self, _: &K, slot: &Slot<V>, _: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(self.ttl(slot))
    }
}

/// A named read-through cache of `V` by `K`. Cloning is cheap; clones share everything.
pub struct ReadThroughCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for ReadThroughCache<K, V> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<K, V> std::fmt::Debug for ReadThroughCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadThroughCache").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

struct Inner<K, V> {
    name: &'static str,
    settings: CacheSettings,
    l1: moka::future::Cache<K, Slot<V>>,
    last_good: moka::future::Cache<K, Arc<V>>,
    l2: Option<RedisHandle>,
    metrics: CacheMetrics,
}

impl<K, V> ReadThroughCache<K, V>
where
    K: Clone + Eq + Hash + Display + FromStr + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A cache called `name` (in metrics, Redis keys and channels), with Redis as L2 if given.
    pub fn new(name: &'static str, settings: CacheSettings, l2: Option<RedisHandle>, metrics: CacheMetrics) -> Self {
        let expiry =
            SlotExpiry { fresh: settings.l1_ttl, negative: settings.negative_ttl, stale_retry: settings.stale_retry };
        let l1 = moka::future::Cache::builder().max_capacity(settings.capacity).expire_after(expiry).build();
        let last_good =
            moka::future::Cache::builder().max_capacity(settings.capacity).time_to_live(settings.stale_ttl).build();
        Self { inner: Arc::new(Inner { name, settings, l1, last_good, l2, metrics }) }
    }

    /// The value for `key`, from the nearest level that has it, running `load` (at most once
    /// at a time per key) when none does.
    pub async fn get<F>(&self, key: &K, load: F) -> Result<Cached<V>, Arc<StoreError>>
    where
        F: Future<Output = Result<Option<V>, StoreError>>,
    {
        let me = &self.inner;
        if let Some(slot) = me.l1.get(key).await {
            return Ok(self.served(slot, Source::L1));
        }
        let origin = Mutex::new(Source::L1);
        let entry = me
            .l1
            .entry(key.clone())
            .or_try_insert_with(async {
                let (slot, source) = self.fill(key, load).await?;
                *origin.lock().unwrap_or_else(|p| p.into_inner()) = source;
                Ok::<_, StoreError>(slot)
            })
            .await?;
        // Only the caller whose load filled the entry sees its origin; the others waited on it.
        let source = if entry.is_fresh() { *origin.lock().unwrap_or_else(|p| p.into_inner()) } else { Source::L1 };
        Ok(self.served(entry.into_value(), source))
    }

    /// Forgets `key` everywhere after a write; `latest`, if given, becomes the copy served stale.
    pub async fn invalidate(&self, key: &K, latest: Option<V>) {
        let me = &self.inner;
        if let Some(v) = latest {
            me.last_good.insert(key.clone(), Arc::new(v)).await;
        }
        self.forget(key, true).await;
        let this = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.inner.settings.double_delete_delay).await;
            this.forget(&key, true).await;
        });
    }

    /// Drops `key` from L1 (and, when `everywhere`, from L2 and other instances' L1).
    async fn forget(&self, key: &K, everywhere: bool) {
        let me = &self.inner;
        me.l1.invalidate(key).await;
        me.metrics
            .invalidations
            .get_or_create(&metrics::LevelLabel { cache: me.name, level: if everywhere { "local" } else { "remote" } })
            .inc();
        if everywhere
            && let Some(redis) = &me.l2
            && let Err(e) = l2::delete_and_publish(redis, me.name, &key.to_string()).await
        {
            CacheMetrics::count(&me.metrics.l2_errors, me.name);
            tracing::warn!(cache = me.name, error = %e, "could not invalidate in redis");
        }
    }

    fn served(&self, slot: Slot<V>, source: Source) -> Cached<V> {
        let me = &self.inner;
        match slot {
            Slot::Found(v) => {
                match source {
                    Source::L1 => me.metrics.hit(me.name, "l1"),
                    Source::L2 => me.metrics.hit(me.name, "l2"),
                    Source::Store | Source::Stale => {}
                }
                Cached { value: Some(v), source }
            }
            Slot::Missing => {
                if source == Source::L1 {
                    CacheMetrics::count(&me.metrics.negative_hits, me.name);
                }
                Cached { value: None, source }
            }
            Slot::Stale(v) => {
                CacheMetrics::count(&me.metrics.stale, me.name);
                Cached { value: Some(v), source: Source::Stale }
            }
        }
    }

    /// The load behind a miss: L2, then the store, then (if the store is down) the last good copy.
    async fn fill<F>(&self, key: &K, load: F) -> Result<(Slot<V>, Source), StoreError>
    where
        F: Future<Output = Result<Option<V>, StoreError>>,
    {
        let me = &self.inner;
        let text_key = key.to_string();
        if let Some(redis) = &me.l2 {
            match l2::get::<V>(redis, me.name, &text_key).await {
                Ok(Some(v)) => {
                    let v = Arc::new(v);
                    me.last_good.insert(key.clone(), Arc::clone(&v)).await;
                    return Ok((Slot::Found(v), Source::L2));
                }
                Ok(None) => {}
                Err(e) => {
                    CacheMetrics::count(&me.metrics.l2_errors, me.name);
                    tracing::debug!(cache = me.name, error = %e, "redis L2 read failed; reading the store");
                }
            }
        }
        CacheMetrics::count(&me.metrics.misses, me.name);
        match load.await {
            Ok(Some(v)) => {
                if let Some(redis) = &me.l2
                    && let Err(e) = l2::set(redis, me.name, &text_key, &v, me.settings.l2_ttl).await
                {
                    CacheMetrics::count(&me.metrics.l2_errors, me.name);
                    tracing::debug!(cache = me.name, error = %e, "redis L2 write failed");
                }
                let v = Arc::new(v);
                me.last_good.insert(key.clone(), Arc::clone(&v)).await;
                Ok((Slot::Found(v), Source::Store))
            }
            Ok(None) => Ok((Slot::Missing, Source::Store)),
            Err(e) if e.is_unavailable() => match me.last_good.get(key).await {
                Some(v) => {
                    tracing::warn!(cache = me.name, key = %key, "store unavailable; serving stale copy");
                    Ok((Slot::Stale(v), Source::Stale))
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Listens for other instances' invalidations until `cancel` fires. Returns once the first
    /// subscription is confirmed, so writes made after it returns are never missed; if Redis
    /// does not answer, at once, subscribing when it does (clearing L1 then, as after any
    /// lost subscription).
    pub async fn listen_for_invalidations(
        &self,
        cancel: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let Some(redis) = self.inner.l2.clone() else {
            return Ok(tokio::spawn(async {}));
        };
        let first = match l2::subscribe(&redis, self.inner.name).await {
            Ok(first) => Some(first),
            Err(e) => {
                tracing::warn!(cache = self.inner.name, error = %e, "cannot subscribe to invalidations yet; will retry");
                None
            }
        };
        let this = self.clone();
        Ok(tokio::spawn(async move {
            l2::listen(redis, this.inner.name, first, cancel, |key: &str, resubscribed| {
                let this = this.clone();
                let key = key.parse::<K>().ok();
                async move {
                    if resubscribed {
                        // Messages may have been missed while disconnected: start L1 afresh.
                        this.inner.l1.invalidate_all();
                    }
                    if let Some(key) = key {
                        this.forget(&key, false).await;
                    }
                }
            })
            .await;
        }))
    }
}
