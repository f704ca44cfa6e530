//! Flash sales: creation carving stock, public views, bad input, and the return of unsold
//! units when a sale ends.

use std::time::{Duration, Instant};

use flashback_core::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

fn now_ms() -> i64 {
    flashback_server::trade::now_ms()
}

async fn product(app: &TestApp, merchant: &str, stock: i64) -> String {
    let cat = app.category("Flash goods").await;
    app.product(merchant, &cat, "FS-1", stock).await["id"].as_str().unwrap().to_owned()
}

async fn available(app: &TestApp, product: &str) -> i64 {
    let p: Value = app.get(&format!("/api/v1/products/{product}")).await.json().await.unwrap();
    p["available"].as_i64().unwrap()
}

fn sale(product: &str, stock: i64, ends_in_ms: i64) -> Value {
    json!({
        "product_id": product, "sale_price_minor": 990, "stock": stock, "per_user_limit": 2,
        "starts_at": now_ms() - 1_000, "ends_at": now_ms() + ends_in_ms
    })
}

#[tokio::test]
async fn a_sale_carves_its_stock_and_the_public_sees_what_remains() {
    let app = TestApp::spawn().await;
    let m = app.token_for("flashmerchant", Role::Merchant).await;
    let p = product(&app, &m, 10).await;
    let res = app.post("/api/v1/flash-sales", Some(&m), &sale(&p, 4, 60_000)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(
        (created["stock"].as_i64(), created["remaining"].as_i64(), created["status"].as_str()),
        (Some(4), Some(4), Some("active"))
    );
    assert_eq!(available(&app, &p).await, 6, "the sale's units left the product's inventory");

    let id = created["id"].as_str().unwrap();
    let res = app.get(&format!("/api/v1/flash-sales/{id}")).await;
    assert_eq!(res.headers()["cache-control"], "public, max-age=1");
    let shown: Value = res.json().await.unwrap();
    assert_eq!(shown["remaining"], 4);
    assert_eq!(shown["sale_price_minor"], 990);
    let listed: Value = app.get("/api/v1/flash-sales?state=open").await.json().await.unwrap();
    assert_eq!(listed["items"][0]["id"], created["id"]);
    let upcoming = json!({"product_id": p, "sale_price_minor": 1, "stock": 1, "per_user_limit": 1,
        "starts_at": "2099-01-01T00:00:00Z", "ends_at": "2099-01-02T00:00:00Z"});
    let res = app.post("/api/v1/flash-sales", Some(&m), &upcoming).await;
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "upcoming");
    app.shutdown().await;
}

#[tokio::test]
async fn bad_sales_get_stable_codes_and_carve_nothing() {
    let app = TestApp::spawn().await;
    let m = app.token_for("flashstrict", Role::Merchant).await;
    let rival = app.token_for("flashrival", Role::Merchant).await;
    let user = app.token_for("flashuser", Role::User).await;
    let p = product(&app, &m, 10).await;
    let with = |k: &str, v: Value| {
        let mut b = sale(&p, 2, 60_000);
        b[k] = v;
        b
    };
    let now = now_ms();
    for (body, status, code) in [
        (with("stock", json!(0)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("stock", json!(11)), StatusCode::CONFLICT, "insufficient_stock"),
        (with("per_user_limit", json!(0)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("per_user_limit", json!(101)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("ends_at", json!(now - 10)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("ends_at", json!(now + 8 * 24 * 3600 * 1000)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("starts_at", json!("next tuesday")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("sale_price_minor", json!(-1)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("product_id", json!("12345")), StatusCode::NOT_FOUND, "product_not_found"),
        (with("discount", json!(50)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
    ] {
        assert_problem(app.post("/api/v1/flash-sales", Some(&m), &body).await, status, code).await;
    }
    assert_problem(
        app.post("/api/v1/flash-sales", Some(&rival), &sale(&p, 1, 60_000)).await,
        StatusCode::FORBIDDEN,
        "not_owner",
    )
    .await;
    assert_problem(
        app.post("/api/v1/flash-sales", Some(&user), &sale(&p, 1, 60_000)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_problem(
        app.post("/api/v1/flash-sales", None, &sale(&p, 1, 60_000)).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    assert_problem(app.get("/api/v1/flash-sales/nope").await, StatusCode::NOT_FOUND, "sale_not_found").await;
    assert_problem(app.get("/api/v1/flash-sales?state=gone").await, StatusCode::BAD_REQUEST, "invalid_query").await;
    assert_eq!(available(&app, &p).await, 10, "nothing carved");
    let listed: Value = app.get("/api/v1/flash-sales").await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    app.shutdown().await;
}

#[tokio::test]
async fn an_ended_sale_returns_its_unsold_units_to_the_product() {
    let app = TestApp::spawn_with(|c| {
        c.trade.sweep_interval = Duration::from_millis(50);
        // Sales end once no purchase can still be in flight: the request timeout past their end.
        c.http.request_timeout = Duration::from_millis(300);
    })
    .await;
    let m = app.token_for("flashender", Role::Merchant).await;
    let p = product(&app, &m, 10).await;
    let created: Value = app.post("/api/v1/flash-sales", Some(&m), &sale(&p, 7, 800)).await.json().await.unwrap();
    crate::helpers::settle().await;
    assert_eq!(available(&app, &p).await, 3);
    let cached = app.get(&format!("/api/v1/products/{p}")).await;
    assert_eq!(cached.headers()["x-cache"], "hit", "the product detail is cached before the sale ends");
    let id = created["id"].as_str().unwrap();
    let started = Instant::now();
    loop {
        let s = app.state.store.flash_sale(id.parse().unwrap()).await.unwrap().unwrap();
        if s.state == flashback_store::SaleState::Ended {
            assert_eq!(s.returned_units, 7);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the sale never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shown: Value = app.get(&format!("/api/v1/flash-sales/{id}")).await.json().await.unwrap();
    assert_eq!((shown["status"].as_str(), shown["remaining"].as_i64()), (Some("ended"), Some(0)));
    assert_eq!(available(&app, &p).await, 10, "every unsold unit is back, once");
    app.shutdown().await;
}
