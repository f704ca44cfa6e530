//! The flash-sale runtime every purchase goes through: the funnel's limiters, the local
//! sold-out flags, cached sale definitions, the purchase-token key and the engine.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::request::Parts;
use flashback_core::{SaleId, UserId};
use flashback_store::FlashSale;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::engine::Engine;

/// Header carrying a purchase token, for sales that require one.
pub const TOKEN_HEADER: &str = "x-purchase-token";

/// The purchase token header's value, if sent (read alone: axum's `HeaderMap` extractor copies
/// every header of every purchase).
#[derive(Debug)]
pub struct PurchaseToken(pub Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for PurchaseToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(TOKEN_HEADER).cloned()))
    }
}

/// The funnel's limiters, the sold-out flags and the engine.
#[derive(Debug)]
pub struct FlashRuntime {
    /// The reserve engine.
    pub engine: std::sync::Arc<dyn Engine>,
    /// The limits shared by the cluster, when Redis is configured.
    pub(super) cluster: Option<super::cluster_limit::ClusterLimits>,
    pub(super) global: DefaultDirectRateLimiter,
    pub(super) per_sale: DefaultKeyedRateLimiter<SaleId>,
    pub(super) per_user: DefaultKeyedRateLimiter<UserId>,
    pub(super) per_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Sales known sold out here; forgotten after a second, or at once when stock comes back.
    pub sold_out: moka::future::Cache<SaleId, ()>,
    /// Sale definitions, cached briefly so the hot path does not read the store.
    pub sales: moka::future::Cache<SaleId, FlashSale>,
    token_key: Vec<u8>,
    pub(super) token_window_ms: i64,
}

fn brief<V: Clone + Send + Sync + 'static>(ttl: Duration) -> moka::future::Cache<SaleId, V> {
    moka::future::Cache::builder().max_capacity(100_000).time_to_live(ttl).build()
}

fn per_second(n: u32) -> Quota {
    let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(n).allow_burst(n)
}

impl FlashRuntime {
    /// The funnel for `config`, in front of `engine`.
    pub fn new(
        config: &crate::config::FlashSaleConfig,
        engine: std::sync::Arc<dyn Engine>,
        cluster: Option<super::cluster_limit::ClusterLimits>,
        token_key: Vec<u8>,
    ) -> Self {
        Self {
            engine,
            cluster,
            global: RateLimiter::direct(per_second(config.global_per_sec)),
            per_sale: RateLimiter::keyed(per_second(config.per_sale_per_sec)),
            per_user: RateLimiter::keyed(per_second(config.per_user_per_sec)),
            per_ip: RateLimiter::keyed(per_second(config.per_ip_per_sec)),
            sold_out: brief(Duration::from_secs(1)),
            sales: brief(Duration::from_secs(1)),
            token_key,
            token_window_ms: i64::try_from(config.token_window.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The purchase token of `user` for `sale`.
    pub fn token(&self, sale: SaleId, user: UserId) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.token_key).unwrap_or_else(|_| unreachable!("any key length"));
        mac.update(format!("{sale}:{user}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Forgets idle limiter keys; run periodically.
    pub fn prune(&self) {
        self.per_sale.retain_recent();
        self.per_user.retain_recent();
        self.per_ip.retain_recent();
    }
}
