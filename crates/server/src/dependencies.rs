//! Redis and RabbitMQ, reached at start if they answer. An instance starts while either is
//! away (degraded, as it would run if they went away later) and uses it once it answers:
//! both handles connect on their next call. Only a malformed URL or bad settings stop it.

use anyhow::Context;
use flashback_infra::RedisHandle;
use flashback_infra::bus::RabbitBus;
use secrecy::ExposeSecret;

use crate::config::Config;

/// The Redis handle when `cache.redis_url` is set.
pub async fn redis(config: &Config) -> anyhow::Result<Option<RedisHandle>> {
    let Some(url) = &config.cache.redis_url else { return Ok(None) };
    let c = &config.cache;
    let redis = RedisHandle::new(url.expose_secret(), &c.redis_prefix, c.redis_timeout, config.breaker.settings())
        .context("cache.redis_url")?;
    if let Err(e) = redis.ping().await {
        tracing::warn!(error = %e, "redis does not answer; starting without it (degraded) and using it once it does");
    }
    Ok(Some(redis))
}

/// The RabbitMQ bus when `events.amqp_url` is set.
pub async fn bus(config: &Config) -> anyhow::Result<Option<RabbitBus>> {
    let Some(url) = &config.events.amqp_url else { return Ok(None) };
    let mut settings = flashback_infra::BusSettings::new(url.expose_secret(), &config.events.exchange_prefix);
    settings.breaker = config.breaker.settings();
    let bus = RabbitBus::new(settings).context("events settings")?;
    if let Err(e) = bus.ensure_connected().await {
        tracing::warn!(error = %e, "RabbitMQ does not answer; starting without it (degraded) and using it once it does");
    }
    Ok(Some(bus))
}
