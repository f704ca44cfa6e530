//! High availability of one instance: a Redis outage leaves it ready but degraded and it uses
//! Redis again within two seconds of its return; a stop drains before it closes.

use std::time::{Duration, Instant};

use flashback_core::Role;
use flashback_harness::redis::RedisServer;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{REDIS_URL_VAR, TestApp};

/// The bound: a dependency that returns is used again within this.
const BACK_WITHIN: Duration = Duration::from_secs(2);

async fn readiness(app: &TestApp) -> (StatusCode, Value) {
    let res = app.get("/readyz").await;
    (res.status(), res.json().await.unwrap())
}

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or(&Value::Null)
}

async fn buy(app: &TestApp, token: &str, sale: &str) -> reqwest::Response {
    app.client.post(app.url(&format!("/api/v1/flash-sales/{sale}/purchase"))).bearer_auth(token).send().await.unwrap()
}

/// Polls `f` every 25 ms until it is true; how long that took. Panics after `limit`.
async fn within(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if f().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_without_unreadying_and_redis_is_used_again_within_two_seconds() {
    if std::env::var(REDIS_URL_VAR).map_or(true, |v| v.trim().is_empty()) {
        flashback_store::testing::note_skipped("Redis outage", REDIS_URL_VAR);
        return;
    }
    let mut redis = RedisServer::start();
    let url = redis.url();
    let app = TestApp::spawn_with(|c| {
        c.cache.redis_url = Some(SecretString::from(url));
        c.flash_sale.engine = flashback_server::config::FlashEngine::Redis;
    })
    .await;
    let (status, body) = readiness(&app).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ready")), "{body}");
    let m = app.token_for("hamerchant", Role::Merchant).await;
    let cat = app.category("Outage").await;
    let p = app.product(&m, &cat, "HA-1", 100).await;
    let now = flashback_server::trade::now_ms();
    let sale = json!({
        "product_id": p["id"], "sale_price_minor": 100, "stock": 50, "per_user_limit": 1,
        "starts_at": now, "ends_at": now + 600_000, "require_token": false
    });
    let res = app.post("/api/v1/flash-sales", Some(&m), &sale).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let sale: String = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let mut buyers = Vec::new();
    for i in 0..3 {
        buyers.push(app.token_for(&format!("habuyer{i}"), Role::User).await);
    }
    assert_eq!(buy(&app, &buyers[0], &sale).await.status(), StatusCode::ACCEPTED);

    redis.kill();
    // Ready, but degraded, and it says so in the body and in the metrics.
    within(Duration::from_secs(10), "readiness shows the outage", async || {
        let (status, body) = readiness(&app).await;
        status == StatusCode::OK && body["status"] == "degraded" && check(&body, "redis")["status"] == "down"
    })
    .await;
    assert_eq!(app.metric("flashback_degraded").await, 1.0);
    assert_eq!(app.metric("flashback_dependency_up{dependency=\"redis\"}").await, 0.0);
    assert_eq!(app.metric("flashback_dependency_up{dependency=\"store\"}").await, 1.0);
    // Purchases need Redis on this engine: refused as unavailable, with Retry-After, quickly.
    let started = Instant::now();
    let res = buy(&app, &buyers[1], &sale).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(2), "fails fast: {:?}", started.elapsed());
    // The catalog still serves from the store.
    assert_eq!(app.get(&format!("/api/v1/products/{}", p["id"].as_str().unwrap())).await.status(), StatusCode::OK);
    within(Duration::from_secs(10), "the breaker opens", async || {
        app.metric("flashback_breaker_state{dependency=\"redis\"}").await != 0.0
    })
    .await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    let took = within(BACK_WITHIN, "a purchase goes through again", async || {
        buy(&app, &buyers[1], &sale).await.status() == StatusCode::ACCEPTED
    })
    .await;
    eprintln!("purchases accepted again {took:?} after redis returned");
    within(BACK_WITHIN, "ready again", async || readiness(&app).await.1["status"] == "ready").await;
    assert_eq!(app.metric("flashback_degraded").await, 0.0);
    assert_eq!(app.metric("flashback_breaker_state{dependency=\"redis\"}").await, 0.0);
    assert_eq!(buy(&app, &buyers[2], &sale).await.status(), StatusCode::ACCEPTED);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_drains_first_then_closes_the_listener_and_lets_requests_in_flight_finish() {
    let app = TestApp::spawn_with(|c| c.http.drain_delay = Duration::from_millis(1500)).await;
    let addr = app.addr;
    let client = reqwest::Client::new();
    let res = client.get(app.url("/api/v1/categories")).send().await.unwrap();
    assert!(res.headers().get("connection").is_none(), "keep-alive while serving");
    let stopping = tokio::spawn(app.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Draining: not ready, still serving, each answer asks the client to close.
    let res = client.get(format!("http://{addr}/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "shutting_down");
    let res = client.get(format!("http://{addr}/api/v1/categories")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["connection"], "close");

    // After the drain the listener is gone.
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("stops").expect("cleanly");
    let refused = reqwest::Client::new().get(format!("http://{addr}/healthz")).send().await;
    assert!(refused.is_err(), "closed after the drain");
}
