//! Product detail through the cache: hits, invalidation, negative caching, single flight and
//! stale serving while the store is unreachable.

use std::sync::Arc;
use std::time::Duration;

use flashback_core::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, settle};

const HITS_L1: &str = r#"flashback_cache_hits_total{cache="product",level="l1"}"#;
const MISSES: &str = r#"flashback_cache_misses_total{cache="product"}"#;
const STALE: &str = r#"flashback_cache_stale_total{cache="product"}"#;
const NEGATIVE: &str = r#"flashback_cache_negative_hits_total{cache="product"}"#;

async fn app_with_product(tweak: impl FnOnce(&mut flashback_server::Config)) -> (TestApp, String, String) {
    let app = TestApp::spawn_with(tweak).await;
    let cat = app.category("Cached").await;
    let m = app.token_for("cacheshop", Role::Merchant).await;
    let p = app.product(&m, &cat, "C1", 9).await;
    settle().await;
    (app, format!("/api/v1/products/{}", p["id"].as_str().unwrap()), m)
}

fn cache_header(res: &reqwest::Response) -> String {
    res.headers()["x-cache"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_product_read_twice_is_served_from_cache_the_second_time() {
    let (app, path, _) = app_with_product(|_| {}).await;
    let first = app.get(&path).await;
    assert_eq!(cache_header(&first), "miss");
    let first: Value = first.json().await.unwrap();
    let second = app.get(&path).await;
    assert_eq!(cache_header(&second), "hit");
    assert_eq!(second.json::<Value>().await.unwrap(), first);
    assert_eq!(app.metric(MISSES).await, 1.0);
    assert_eq!(app.metric(HITS_L1).await, 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn every_write_invalidates_the_cached_product() {
    let (app, path, m) = app_with_product(|_| {}).await;
    app.get(&path).await;
    assert_eq!(cache_header(&app.get(&path).await), "hit");
    for (method, suffix, body) in [
        (Method::PATCH, "", json!({"title": "Fresh title"})),
        (Method::PUT, "/status", json!({"status": "off_shelf"})),
        (Method::PUT, "/inventory", json!({"available": 4})),
        (Method::POST, "/inventory/adjustments", json!({"delta": 2})),
    ] {
        let res = app.send(method, &format!("{path}{suffix}"), Some(&m), &body).await;
        assert_eq!(res.status(), StatusCode::OK);
        let written: Value = res.json().await.unwrap();
        let read = app.get(&path).await;
        assert_eq!(cache_header(&read), "miss", "after {suffix:?} the next read goes to the store");
        assert_eq!(read.json::<Value>().await.unwrap(), written);
        settle().await;
    }
    let last: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(
        (last["title"].as_str(), last["status"].as_str(), last["available"].as_i64()),
        (Some("Fresh title"), Some("off_shelf"), Some(6))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_missing_product_is_remembered_briefly() {
    let app = TestApp::spawn().await;
    assert_problem(app.get("/api/v1/products/4242").await, StatusCode::NOT_FOUND, "product_not_found").await;
    assert_problem(app.get("/api/v1/products/4242").await, StatusCode::NOT_FOUND, "product_not_found").await;
    assert_eq!(app.metric(MISSES).await, 1.0);
    assert_eq!(app.metric(NEGATIVE).await, 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_reads_of_a_cold_product_load_it_once() {
    let (app, path, _) = app_with_product(|_| {}).await;
    let app = Arc::new(app);
    let reads: Vec<_> = (0..32)
        .map(|_| {
            let (app, path) = (Arc::clone(&app), path.clone());
            tokio::spawn(async move { app.get(&path).await.status() })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(app.metric(MISSES).await, 1.0, "one load for 32 concurrent reads");
}

#[tokio::test]
async fn the_stale_copy_is_served_and_flagged_while_the_store_is_unreachable() {
    let (app, path, _) = app_with_product(|c| c.catalog.cache_l1_ttl = Duration::from_millis(100)).await;
    let fresh: Value = app.get(&path).await.json().await.unwrap();
    app.state.store.close().await;
    tokio::time::sleep(Duration::from_millis(250)).await; // the L1 copy has expired

    for _ in 0..3 {
        let res = app.get(&path).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(cache_header(&res), "stale");
        assert_eq!(res.headers()["warning"], "110 - \"Response is Stale\"");
        assert_eq!(res.json::<Value>().await.unwrap(), fresh);
    }
    assert!(app.metric(STALE).await >= 3.0);
    // Only one store attempt was made: the stale copy is reused rather than retrying per request.
    assert_eq!(app.metric(MISSES).await, 2.0);

    let res = app.get("/api/v1/products/777").await;
    let retry = res.headers().get("retry-after").cloned();
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").await;
    assert_eq!(retry.unwrap(), "1");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json::<Value>().await.unwrap()["checks"][0]["status"], "down");
    app.shutdown().await;
}
