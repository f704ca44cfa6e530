//! The Redis side of the cache: values under `prefix:cache:name:key`, invalidations on the
//! channel `prefix:cache:name:invalidate`.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::RedisHandle;

fn value_key(redis: &RedisHandle, cache: &str, key: &str) -> String {
    redis.key(&format!("cache:{cache}:{key}"))
}

fn channel(redis: &RedisHandle, cache: &str) -> String {
    redis.key(&format!("cache:{cache}:invalidate"))
}

async fn within<T>(redis: &RedisHandle, f: impl Future<Output = redis::RedisResult<T>>) -> anyhow::Result<T> {
    Ok(tokio::time::timeout(redis.timeout(), f).await.map_err(|_| anyhow::anyhow!("redis call timed out"))??)
}

pub(super) async fn get<V: DeserializeOwned>(redis: &RedisHandle, cache: &str, key: &str) -> anyhow::Result<Option<V>> {
    let mut c = redis.conn();
    let raw: Option<String> = within(redis, c.get(value_key(redis, cache, key))).await?;
    // A value we cannot read (an older format) is a miss, not an error.
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

pub(super) async fn set<V: Serialize>(
    redis: &RedisHandle,
    cache: &str,
    key: &str,
    value: &V,
    ttl: Duration,
) -> anyhow::Result<()> {
    let mut c = redis.conn();
    let text = serde_json::to_string(value)?;
    within(redis, c.set_ex::<_, _, ()>(value_key(redis, cache, key), text, ttl.as_secs().max(1))).await
}

pub(super) async fn delete_and_publish(redis: &RedisHandle, cache: &str, key: &str) -> anyhow::Result<()> {
    let mut c = redis.conn();
    let mut pipe = redis::pipe();
    pipe.del(value_key(redis, cache, key)).ignore().publish(channel(redis, cache), key).ignore();
    within(redis, pipe.query_async::<()>(&mut c)).await
}

pub(super) async fn subscribe(redis: &RedisHandle, cache: &str) -> anyhow::Result<redis::aio::PubSub> {
    let mut pubsub = within(redis, redis.client().get_async_pubsub()).await?;
    within(redis, pubsub.subscribe(channel(redis, cache))).await?;
    Ok(pubsub)
}

/// Runs `on_key(key, resubscribed)` for every invalidation until cancelled, subscribing
/// (again) with a pause whenever there is no subscription: `first` is `None` when Redis was
/// away at start.
pub(super) async fn listen<F, Fut>(
    redis: RedisHandle,
    cache: &'static str,
    first: Option<redis::aio::PubSub>,
    cancel: CancellationToken,
    on_key: F,
) where
    F: Fn(&str, bool) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut pubsub = first;
    let mut resubscribed = false;
    loop {
        let mut current = match pubsub.take() {
            Some(p) => p,
            None => match subscribe(&redis, cache).await {
                Ok(p) => {
                    resubscribed = true;
                    p
                }
                Err(e) => {
                    tracing::warn!(cache, error = %e, "cache invalidation subscription failed; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let mut messages = current.on_message();
        if resubscribed {
            on_key("", true).await;
            resubscribed = false;
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                msg = messages.next() => match msg {
                    Some(msg) => {
                        if let Ok(key) = msg.get_payload::<String>() {
                            on_key(&key, false).await;
                        }
                    }
                    None => break,
                },
            }
        }
        tracing::warn!(cache, "cache invalidation subscription dropped; reconnecting");
    }
}
