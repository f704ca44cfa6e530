//! The shared Redis connection through outages, against a `redis-server` of the test's own
//! (started from Debian's package on a free loopback port; the machine's Redis is not touched):
//! while Redis is away calls fail fast behind the breaker, and once it is back it is used again
//! within two seconds, whether it was killed and restarted or frozen and thawed.
//!
//! Runs with the backend suites (`FLASHBACK_TEST_REDIS_URL` set), since it needs
//! `redis-server` installed like they need a Redis.

use std::time::{Duration, Instant};

use flashback_core::breaker::{BreakerSettings, BreakerState};
use flashback_harness::redis::RedisServer;
use flashback_infra::RedisHandle;
use flashback_store::testing::note_skipped;

const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// The bound: a dependency that returns is used again within this.
const BACK_WITHIN: Duration = Duration::from_secs(2);

async fn set_and_get(redis: &RedisHandle, value: &str) -> redis::RedisResult<String> {
    let mut c = redis.conn();
    redis::cmd("SET").arg(redis.key("probe")).arg(value).query_async::<()>(&mut c).await?;
    redis::cmd("GET").arg(redis.key("probe")).query_async(&mut c).await
}

/// Calls every 20 ms until one succeeds; how long that took. Panics after `limit`.
async fn time_until_used(redis: &RedisHandle, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if set_and_get(redis, "back").await.as_deref() == Ok("back") {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "redis not used again within {limit:?}: {:?}", redis.breaker());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls until the breaker opens (each failing), then checks that calls fail fast.
async fn fails_fast_while_away(redis: &RedisHandle) {
    for _ in 0..20 {
        assert!(set_and_get(redis, "x").await.is_err(), "redis is away: calls fail");
        if redis.breaker().state() == BreakerState::Open {
            break;
        }
    }
    assert_eq!(redis.breaker().state(), BreakerState::Open, "repeated failures open the breaker");
    let started = Instant::now();
    let err = set_and_get(redis, "x").await.expect_err("open: no call goes out");
    assert!(started.elapsed() < CALL_TIMEOUT, "an open breaker fails fast, took {:?}", started.elapsed());
    assert!(err.is_io_error(), "reads as unavailable to callers: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_comes_back_is_used_again_within_two_seconds_after_a_kill_or_a_freeze() {
    if std::env::var("FLASHBACK_TEST_REDIS_URL").map_or(true, |v| v.trim().is_empty()) {
        note_skipped("Redis outage", "FLASHBACK_TEST_REDIS_URL");
        return;
    }
    let mut server = RedisServer::start();
    let settings = BreakerSettings { failures_to_open: 3, open_for: Duration::from_secs(1) };
    let redis = RedisHandle::connect(&server.url(), "outage-test", CALL_TIMEOUT, settings).await.expect("connect");
    assert_eq!(set_and_get(&redis, "before").await.expect("up"), "before");
    let mut c = redis.conn();
    redis::cmd("SET").arg(redis.key("durable")).arg("acknowledged").query_async::<()>(&mut c).await.expect("set");

    // Killed: connections drop, connecting is refused.
    server.kill();
    fails_fast_while_away(&redis).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // an outage longer than the open period
    server.restart();
    let took = time_until_used(&redis, BACK_WITHIN).await;
    assert_eq!(redis.breaker().state(), BreakerState::Closed);
    eprintln!("back after a kill in {took:?}");
    // What Redis acknowledged before the kill survived it (appendfsync always).
    let kept: String = redis::cmd("GET").arg(redis.key("durable")).query_async(&mut c).await.expect("get");
    assert_eq!(kept, "acknowledged");

    // Frozen: the connection stays open but nothing answers (a stalled host).
    server.freeze();
    fails_fast_while_away(&redis).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.thaw();
    let took = time_until_used(&redis, BACK_WITHIN).await;
    assert_eq!(redis.breaker().state(), BreakerState::Closed);
    eprintln!("back after a freeze in {took:?}");
}
