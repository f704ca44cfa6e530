//! Counters of what the caches serve, exported in /metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CacheLabel {
    pub cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LevelLabel {
    pub cache: &'static str,
    pub level: &'static str,
}

/// The cache counters; one set per process, labelled by cache name.
#[derive(Clone, Debug, Default)]
pub struct CacheMetrics {
    pub(crate) hits: Family<LevelLabel, Counter>,
    pub(crate) misses: Family<CacheLabel, Counter>,
    pub(crate) negative_hits: Family<CacheLabel, Counter>,
    pub(crate) stale: Family<CacheLabel, Counter>,
    pub(crate) l2_errors: Family<CacheLabel, Counter>,
    pub(crate) invalidations: Family<LevelLabel, Counter>,
}

impl CacheMetrics {
    /// Creates the counters and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "flashback_cache_hits",
            "Lookups answered from a cache level (l1 in process, l2 Redis, or coalesced onto a load in flight)",
            m.hits.clone(),
        );
        registry.register("flashback_cache_misses", "Lookups that had to load from the store", m.misses.clone());
        registry.register(
            "flashback_cache_negative_hits",
            "Lookups answered by a cached 'does not exist'",
            m.negative_hits.clone(),
        );
        registry.register(
            "flashback_cache_stale",
            "Lookups answered with a stale copy because the store was unavailable",
            m.stale.clone(),
        );
        registry.register(
            "flashback_cache_l2_errors",
            "Failed Redis L2 calls (served from the store)",
            m.l2_errors.clone(),
        );
        registry.register(
            "flashback_cache_invalidations",
            "Keys invalidated, by origin (local write or remote instance)",
            m.invalidations.clone(),
        );
        m
    }

    pub(crate) fn hit(&self, cache: &'static str, level: &'static str) {
        self.hits.get_or_create(&LevelLabel { cache, level }).inc();
    }

    pub(crate) fn count(family: &Family<CacheLabel, Counter>, cache: &'static str) {
        family.get_or_create(&CacheLabel { cache }).inc();
    }
}
