//! An instance starts while Redis and RabbitMQ are both down: it comes up ready but degraded,
//! serves what needs neither, keeps its events, and uses each once it returns (flash engine
//! and tracking queue on Redis, events through RabbitMQ).

use std::time::{Duration, Instant};

use flashback_core::Role;
use flashback_harness::rabbitmq::RabbitMq;
use flashback_harness::redis::RedisServer;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{AMQP_URL_VAR, REDIS_URL_VAR, TestApp};

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

fn status_of(body: &Value, name: &str) -> String {
    let check = body["checks"].as_array().unwrap().iter().find(|c| c["name"] == name);
    check.map_or_else(|| "absent".to_owned(), |c| c["status"].as_str().unwrap_or("?").to_owned())
}

async fn readiness(app: &TestApp) -> (StatusCode, Value) {
    let res = app.get("/readyz").await;
    (res.status(), res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_starts_while_redis_and_rabbitmq_are_down_and_uses_them_once_they_return() {
    let configured = |var| std::env::var(var).is_ok_and(|v: String| !v.trim().is_empty());
    if !configured(REDIS_URL_VAR) || !configured(AMQP_URL_VAR) {
        flashback_store::testing::note_skipped("cold start during an outage", "FLASHBACK_TEST_REDIS_URL and _AMQP_URL");
        return;
    }
    let mut redis = RedisServer::start();
    let mut broker = tokio::task::spawn_blocking(RabbitMq::start).await.unwrap();
    redis.kill();
    broker.kill();
    let (redis_url, amqp_url) = (redis.url(), broker.url());
    let app = TestApp::spawn_with(|c| {
        c.cache.redis_url = Some(SecretString::from(redis_url));
        c.flash_sale.engine = flashback_server::config::FlashEngine::Redis;
        c.events.amqp_url = Some(SecretString::from(amqp_url));
        c.events.exchange_prefix = "coldstart".into();
        c.track.queue = flashback_server::track::QueueKind::Redis;
    })
    .await;

    let (status, body) = readiness(&app).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("degraded")), "{body}");
    assert_eq!((status_of(&body, "redis"), status_of(&body, "rabbitmq")), ("down".into(), "down".into()));
    assert_eq!(status_of(&body, "store"), "up");

    // What needs neither works: accounts, the catalog, orders (their events wait in the outbox).
    let m = app.token_for("coldmerchant", Role::Merchant).await;
    let buyer = app.token_for("coldbuyer", Role::User).await;
    let cat = app.category("Cold").await;
    let p = app.product(&m, &cat, "COLD-1", 100).await;
    let pid = p["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/api/v1/products/{pid}")).await.status(), StatusCode::OK);
    let order = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&buyer)
        .header("idempotency-key", "cold-1")
        .json(&json!({"lines": [{"product_id": pid, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), StatusCode::CREATED);
    within(Duration::from_secs(5), "the order's event waits in the outbox", async || {
        app.metric("flashback_outbox_pending").await >= 1.0
    })
    .await;
    // A purchase needs Redis on this engine: refused plainly, nothing taken.
    let now = flashback_server::trade::now_ms();
    let sale = json!({
        "product_id": pid, "sale_price_minor": 100, "stock": 10, "per_user_limit": 1,
        "starts_at": now, "ends_at": now + 600_000, "require_token": false
    });
    let res = app.post("/api/v1/flash-sales", Some(&m), &sale).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let sale = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let purchase = format!("/api/v1/flash-sales/{sale}/purchase");
    let res = app.client.post(app.url(&purchase)).bearer_auth(&buyer).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));

    let events = json!({"events": [{"anonymous_id": "cold-device", "module": "home", "action": "view",
                                     "object_type": "sku", "object_id": "1"}]});
    let res = app.post("/api/v1/track", None, &events).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "tracking queues on Redis here");

    // Redis returns: purchases go through, and the reservation becomes an order (the stream's
    // consumer group, which could not be made at start, is made by the importer).
    redis.restart();
    let mut ticket = String::new();
    let took = within(Duration::from_secs(2), "a purchase goes through", async || {
        let res = app.client.post(app.url(&purchase)).bearer_auth(&buyer).send().await.unwrap();
        if res.status() != StatusCode::ACCEPTED {
            return false;
        }
        ticket = res.json::<Value>().await.unwrap()["ticket_id"].as_str().unwrap().to_owned();
        true
    })
    .await;
    eprintln!("purchases accepted {took:?} after redis started");
    within(Duration::from_secs(10), "the reservation becomes an order", async || {
        let t: Value = app.get_as(&format!("/api/v1/flash-sales/tickets/{ticket}"), &buyer).await.json().await.unwrap();
        t["status"] == "ordered"
    })
    .await;

    // Tracking queues again, and the writer (whose stream group is made by its first read)
    // stores the batch.
    assert_eq!(app.post("/api/v1/track", None, &events).await.status(), StatusCode::ACCEPTED);
    within(Duration::from_secs(10), "the tracking batch is stored", async || {
        app.state.track.store.stored_events().await.unwrap() >= 1
    })
    .await;

    // RabbitMQ returns: the instance connects, declares its topology and relays the backlog.
    let _broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .unwrap();
    let took = within(Duration::from_secs(5), "ready, not degraded", async || {
        let (status, body) = readiness(&app).await;
        status == StatusCode::OK && body["status"] == "ready"
    })
    .await;
    eprintln!("ready {took:?} after rabbitmq started");
    within(Duration::from_secs(10), "the outbox drains through the broker", async || {
        app.metric("flashback_outbox_pending").await == 0.0
    })
    .await;
    app.shutdown().await;
}
