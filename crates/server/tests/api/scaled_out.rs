//! The scaled-out mode against real MariaDB and Redis: two instances sharing one database and
//! one Redis, with L2 caching and cross-instance invalidation.

use std::time::{Duration, Instant};

use flashback_core::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backends, TestApp, settle};

const SUITE: &str = "MySQL + Redis API";

async fn two_instances(b: &Backends) -> (TestApp, TestApp) {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestApp::start(b.config(d1.path()), d1).await;
    let b = TestApp::start(b.config(d2.path()), d2).await;
    (a, b)
}

fn source(res: &reqwest::Response) -> String {
    res.headers()["x-cache"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_dependencies_are_checked_for_readiness() {
    let Some(b) = Backends::get(SUITE).await else { return };
    let (one, two) = two_instances(&b).await;
    let ready: Value = one.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    let names: Vec<&str> = ready["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    // The tracking queue is each instance's own journal here (track.queue = local).
    assert_eq!(names, ["store", "shard-0", "shard-1", "redis", "track_queue", "node_lease"]);
    assert_eq!(ready["checks"][0]["detail"], "mysql");
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_products_through_redis_and_invalidate_each_other() {
    let Some(b) = Backends::get(SUITE).await else { return };
    let (one, two) = two_instances(&b).await;
    let cat = one.category("Shared").await;
    let m = one.token_for("sharedshop", Role::Merchant).await;
    let p = one.product(&m, &cat, "S1", 5).await;
    settle().await;
    let path = format!("/api/v1/products/{}", p["id"].as_str().unwrap());

    // Instance one loads it from MySQL and fills Redis; instance two then finds it in Redis.
    assert_eq!(source(&one.get(&path).await), "miss");
    assert!(b.redis_keys().iter().any(|k| k.contains(":cache:product:")), "{:?}", b.redis_keys());
    assert_eq!(source(&two.get(&path).await), "hit");
    assert_eq!(two.metric(r#"flashback_cache_hits_total{cache="product",level="l2"}"#).await, 1.0);
    assert_eq!(source(&two.get(&path).await), "hit");
    assert_eq!(two.metric(r#"flashback_cache_hits_total{cache="product",level="l1"}"#).await, 1.0);

    // A write on instance one reaches instance two's in-process copy through pub/sub.
    let res = one.send(Method::PATCH, &path, Some(&m), &json!({"title": "Renamed on one"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let started = Instant::now();
    loop {
        let seen: Value = two.get(&path).await.json().await.unwrap();
        if seen["title"] == "Renamed on one" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "instance two never saw the write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(two.metric(r#"flashback_cache_invalidations_total{cache="product",level="remote"}"#).await >= 1.0);
    // A token issued by one instance works on the other (shared key, no store round trip).
    assert_eq!(two.get_as("/api/v1/me", &m).await.status(), StatusCode::OK);
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mysql_unreachable_the_last_copy_is_served_stale() {
    let Some(b) = Backends::get(SUITE).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = b.config(dir.path());
    config.catalog.cache_l1_ttl = Duration::from_millis(100);
    let app = TestApp::start(config, dir).await;
    let cat = app.category("Outage").await;
    let m = app.token_for("outageshop", Role::Merchant).await;
    let p = app.product(&m, &cat, "O1", 5).await;
    settle().await;
    let path = format!("/api/v1/products/{}", p["id"].as_str().unwrap());
    let fresh: Value = app.get(&path).await.json().await.unwrap();

    app.state.store.close().await;
    // Redis still has a copy, which is served as a normal hit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(source(&app.get(&path).await), "hit");
    // With the Redis copy gone too, only the stale in-process copy remains.
    let mut conn = redis::Client::open(b.redis_url.as_str()).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("DEL").arg(b.redis_keys()).query(&mut conn).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = app.get(&path).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(source(&res), "stale");
    assert_eq!(res.json::<Value>().await.unwrap(), fresh);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_land_on_their_buyers_mariadb_shard_and_merge_back_in_listings() {
    let Some(b) = Backends::get(SUITE).await else { return };
    let (one, two) = two_instances(&b).await;
    let cat = one.category("Sharded").await;
    let m = one.token_for("shardshop", Role::Merchant).await;
    let p = one.product(&m, &cat, "SH1", 50).await;
    let product = p["id"].as_str().unwrap();
    let mut ids = Vec::new();
    for i in 0..8 {
        let buyer = one.token_for(&format!("shardbuyer{i}"), Role::User).await;
        // Alternate instances: the shards, not the instance, hold the orders.
        let app = if i % 2 == 0 { &one } else { &two };
        let res = app
            .client
            .post(app.url("/api/v1/orders"))
            .bearer_auth(&buyer)
            .header("idempotency-key", "s")
            .json(&json!({"lines": [{"product_id": product, "quantity": 2}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let id: flashback_core::OrderId = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
        ids.push(id);
    }
    let mut per_shard = [0, 0];
    for (i, shard) in one.state.shards.all().iter().enumerate() {
        for id in &ids {
            if shard.order(*id).await.unwrap().is_some() {
                per_shard[i] += 1;
                assert_eq!(usize::from(id.gene()) % 2, i, "an order lives on the shard its id names");
            }
        }
    }
    assert_eq!(per_shard[0] + per_shard[1], 8);
    assert!(per_shard[0] > 0 && per_shard[1] > 0, "both shard databases hold orders: {per_shard:?}");
    let listed: Value = two.get_as("/api/v1/merchant/orders?limit=100", &m).await.json().await.unwrap();
    let mut expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    expected.reverse();
    let got: Vec<String> =
        listed["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got, expected);
    let report = flashback_server::trade::audit::audit(&one.state).await.unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.stock[product], (34, 16, 0));
    one.shutdown().await;
    two.shutdown().await;
}

/// Orders 3 of `product` as `buyer` on `on`, pays through `other`, ships and completes it;
/// returns the order id.
async fn buy_to_completion(
    on: &TestApp,
    other: &TestApp,
    product: &str,
    buyer: &str,
    merchant: &str,
    key: &str,
) -> String {
    let res = on
        .client
        .post(on.url("/api/v1/orders"))
        .bearer_auth(buyer)
        .header("idempotency-key", key)
        .json(&json!({"lines": [{"product_id": product, "quantity": 3}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let pay: Value =
        on.post(&format!("/api/v1/orders/{id}/payments"), Some(buyer), &json!({})).await.json().await.unwrap();
    assert_eq!(other.post(pay["pay_url"].as_str().unwrap(), None, &json!({})).await.status(), StatusCode::ACCEPTED);
    assert_eq!(
        other.post(&format!("/api/v1/orders/{id}/ship"), Some(merchant), &json!({})).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        on.post(&format!("/api/v1/orders/{id}/complete"), Some(buyer), &json!({})).await.status(),
        StatusCode::OK
    );
    id
}

/// Waits (at most 15 s) until `buyer`'s points balance reads `balance` on `app`.
async fn points_reach(app: &TestApp, buyer: &str, balance: i64) {
    let started = Instant::now();
    loop {
        let points: Value = app.get_as("/api/v1/me/points", buyer).await.json().await.unwrap();
        if points["balance"] == balance {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "points never reached {balance}: {points}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rabbitmq_order_events_reach_their_consumers_once_across_instances() {
    let Some(b) = Backends::get(SUITE).await else { return };
    let Some(amqp) = b.amqp_url.clone() else {
        flashback_store::testing::note_skipped("RabbitMQ API", crate::helpers::AMQP_URL_VAR);
        return;
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = TestApp::start(b.config_with_bus(d1.path()), d1).await;
    let two = TestApp::start(b.config_with_bus(d2.path()), d2).await;
    let ready: Value = one.get("/readyz").await.json().await.unwrap();
    assert!(ready["checks"].as_array().unwrap().iter().any(|c| c["name"] == "rabbitmq" && c["status"] == "up"));
    assert_eq!(ready["status"], "ready");

    let cat = one.category("Bused").await;
    let m = one.token_for("busshop", Role::Merchant).await;
    let p = one.product(&m, &cat, "BUS1", 10).await;
    let buyer = one.token_for("busbuyer", Role::User).await;
    let product = p["id"].as_str().unwrap();
    // 3 × 1999 paid → 59 points, awarded by whichever instance consumed order.completed, once.
    let id = buy_to_completion(&one, &two, product, &buyer, &m, "bus-1").await;
    points_reach(&two, &buyer, 59).await;

    // The broker drops every connection (a restart, a cut network): readiness connects again,
    // the consumers are started again, and the next order's events arrive as before.
    flashback_infra::testing::drop_connections_at_broker(&b.redis_prefix);
    for app in [&one, &two] {
        let ready: Value = app.get("/readyz").await.json().await.unwrap();
        assert_eq!((&ready["checks"][2]["status"], &ready["status"]), (&json!("up"), &json!("ready")), "{ready}");
    }
    buy_to_completion(&two, &one, product, &buyer, &m, "bus-2").await;
    points_reach(&one, &buyer, 118).await;

    let order: flashback_core::OrderId = id.parse().unwrap();
    let shard = one.state.shards.for_order(order);
    let started = Instant::now();
    while !shard.outbox_pending(100).await.unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the outbox never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let points: Value = one.get_as("/api/v1/me/points", &buyer).await.json().await.unwrap();
    assert_eq!(points["balance"], 118, "awarded once per order, not once per instance");
    let report = flashback_server::trade::audit::audit(&one.state).await.unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.stock[product], (4, 0, 6));

    one.shutdown().await;
    two.shutdown().await;
    let bus = flashback_infra::bus::RabbitBus::connect(&amqp, &b.redis_prefix).await.unwrap();
    assert_eq!(bus.message_count(&bus.dead_letter_queue()).await.unwrap(), 0, "nothing dead-lettered");
    bus.delete_topology(&["stock", "points"]).await.unwrap();
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_flash_engine_never_oversells_across_two_instances_on_mariadb() {
    let Some(b) = Backends::get(SUITE).await else { return };
    let (one, two) = two_instances(&b).await;
    let (one, two) = (std::sync::Arc::new(one), std::sync::Arc::new(two));
    crate::flash_purchase::crowd(vec![std::sync::Arc::clone(&one), std::sync::Arc::clone(&two)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_flash_engine_never_oversells_across_two_instances_on_mariadb() {
    let Some(b) = Backends::get(SUITE).await else { return };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let redis = |dir: &std::path::Path, node: u16| {
        let mut c = b.config(dir);
        c.flash_sale.engine = flashback_server::config::FlashEngine::Redis;
        c.node_id = Some(node);
        c
    };
    let one = std::sync::Arc::new(TestApp::start(redis(d1.path(), 1), d1).await);
    let two = std::sync::Arc::new(TestApp::start(redis(d2.path(), 2), d2).await);
    crate::flash_purchase::crowd(vec![std::sync::Arc::clone(&one), std::sync::Arc::clone(&two)]).await;
}

/// Who holds the lease on `job` in this test's Redis, if anyone.
fn lease_holder(b: &Backends, job: &str) -> Option<String> {
    let client = redis::Client::open(b.redis_url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("GET").arg(format!("{}:lease:{job}", b.redis_prefix)).query(&mut conn).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_at_a_time_sweeps_and_a_clean_stop_hands_the_job_over() {
    let Some(b) = Backends::get(SUITE).await else { return };
    let (one, two) = two_instances(&b).await;
    let started = Instant::now();
    let holder = loop {
        if let Some(h) = lease_holder(&b, "sweeper") {
            break h;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no instance took the sweeper's lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (holding, other) = if holder == one.state.instance { (one, two) } else { (two, one) };
    assert_eq!(holder, holding.state.instance, "the holder is one of the two instances");
    // It keeps it round after round while it runs, and each instance's metrics say which.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lease_holder(&b, "sweeper").as_deref(), Some(holding.state.instance.as_str()));
    for (app, held) in [(&holding, 1), (&other, 0)] {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        let line = format!("flashback_lease_held{{job=\"sweeper\"}} {held}");
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in:\n{metrics}");
    }

    holding.shutdown().await;
    let started = Instant::now();
    while lease_holder(&b, "sweeper").as_deref() != Some(other.state.instance.as_str()) {
        // Given up at shutdown, so the other instance takes it at its next round, well before
        // the lease could have expired by itself.
        assert!(started.elapsed() < Duration::from_secs(10), "the other instance never took the sweeper over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    other.shutdown().await;
    assert_eq!(lease_holder(&b, "sweeper"), None, "given up at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_holder_until_it_is_given_up_or_expires() {
    use flashback_server::lease::Lease;
    let Some(b) = Backends::get(SUITE).await else { return };
    let redis = flashback_infra::RedisHandle::connect(
        &b.redis_url,
        &b.redis_prefix,
        Duration::from_secs(1),
        Default::default(),
    )
    .await
    .unwrap();
    let (a, other) = (
        Lease::new(Some(&redis), "job", "a", Duration::from_secs(30)),
        Lease::new(Some(&redis), "job", "b", Duration::from_secs(30)),
    );
    assert!(a.hold().await, "a free lease is taken");
    assert!(!other.hold().await, "and then held by one holder only");
    assert!(a.hold().await, "its holder extends it");
    other.release().await;
    assert!(!other.hold().await, "someone else's release gives nothing up");
    a.release().await;
    assert!(other.hold().await, "given up, it is free for the next");
    assert!(!a.hold().await);
    other.release().await;

    // A holder that stops extending (a crash) loses it after its time to live.
    let (crashed, next) = (
        Lease::new(Some(&redis), "short", "crashed", Duration::from_millis(300)),
        Lease::new(Some(&redis), "short", "next", Duration::from_millis(300)),
    );
    assert!(crashed.hold().await);
    assert!(!next.hold().await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(next.hold().await, "taken over once expired");
    next.release().await;

    // Embedded, the one instance always holds it.
    assert!(Lease::new(None, "job", "solo", Duration::from_secs(1)).hold().await);
    assert_eq!(b.redis_keys(), Vec::<String>::new(), "nothing left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_figures_are_the_whole_clusters_on_every_instance() {
    let Some(b) = Backends::get(SUITE).await else { return };
    let (one, two) = two_instances(&b).await;
    let cat = one.category("Live").await;
    let m = one.token_for("liveshop", Role::Merchant).await;
    let p = one.product(&m, &cat, "LIVE1", 20).await;
    let product = p["id"].as_str().unwrap();
    let mut paid = 0;
    for i in 0..3 {
        let buyer = one.token_for(&format!("livebuyer{i}"), Role::User).await;
        buy_to_completion(&one, &two, product, &buyer, &m, &format!("live-{i}")).await;
        paid += 1;
    }
    // Whichever instance counted each payment, both show every one of them in their seconds.
    for app in [&one, &two] {
        let started = Instant::now();
        loop {
            let snap = flashback_server::analytics::snapshot::build(&app.state).await.unwrap();
            let seconds: i64 = snap.seconds.iter().map(|s| s.paid_orders).sum();
            if snap.scope == "cluster" && seconds == paid {
                assert_eq!(snap.seconds.iter().map(|s| s.gmv_minor).sum::<i64>(), paid * 3 * 1999);
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "cluster seconds never reached {paid}: {seconds}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    one.shutdown().await;
    two.shutdown().await;
}
