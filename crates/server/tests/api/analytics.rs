//! Real-time analytics through the API: exact GMV and order counts from paid orders, one count
//! per event however often it is delivered, a restart that neither loses nor double counts,
//! flash-sale stock, pending rebates, the live stream, bad input and who may look.

use std::time::Duration;

use flashback_core::Role;
use flashback_server::analytics::consumer::Consumer;
use flashback_server::trade::outbox::{self, Subscriber};
use flashback_store::OutboxEvent;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

/// A merchant with two products (price 1999 each) and an admin token.
async fn shop(app: &TestApp, name: &str) -> (String, String, String) {
    let cat = app.category(&format!("{name} things")).await;
    let merchant = app.token_for(name, Role::Merchant).await;
    let a = app.product(&merchant, &cat, &format!("{name}-A"), 1000).await;
    let b = app.product(&merchant, &cat, &format!("{name}-B"), 1000).await;
    let admin = app.token_for(&format!("{name}-admin"), Role::Admin).await;
    (a["id"].as_str().unwrap().to_owned(), b["id"].as_str().unwrap().to_owned(), admin)
}

/// Places and pays an order of `lines` (product, quantity); answers its total.
pub async fn paid_order(app: &TestApp, buyer: &str, lines: &[(&str, i64)]) -> i64 {
    let lines: Vec<Value> = lines.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect();
    let res = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(buyer)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({ "lines": lines }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let order: Value = res.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    let res = app.post(&format!("/api/v1/orders/{id}/payments"), Some(buyer), &json!({})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let payment: Value = res.json().await.unwrap();
    let res = app.post(payment["pay_url"].as_str().unwrap(), None, &json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    order["total_minor"].as_i64().unwrap()
}

async fn json_of(app: &TestApp, path: &str, token: &str) -> Value {
    let res = app.get_as(path, token).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    res.json().await.unwrap()
}

/// A paid-order event as the outbox writes it.
fn paid_event(id: i64, at_ms: i64, product: &str, quantity: i64) -> (OutboxEvent, Value) {
    let body = json!({
        "id": id.to_string(), "type": "order.paid", "occurred_at_ms": at_ms, "previous_state": "pending_payment",
        "order": {"id": "1", "buyer_id": "2", "merchant_id": "3", "state": "paid", "total_minor": 1999 * quantity,
            "points_used": 0, "payable_minor": 1999 * quantity, "created_at_ms": at_ms,
            "lines": [{"product_id": product, "sku": "SYN-1", "quantity": quantity, "unit_price_minor": 1999}]}
    });
    let event = OutboxEvent {
        id,
        event_type: "order.paid".into(),
        aggregate_id: 1,
        payload: body.to_string(),
        created_at_ms: at_ms,
    };
    (event, body)
}

#[tokio::test]
async fn paid_orders_come_out_as_exact_gmv_order_counts_and_top_skus() {
    let app = TestApp::spawn().await;
    let (a, b, admin) = shop(&app, "gmvshop").await;
    let buyer = app.token_for("gmvbuyer", Role::User).await;
    let mut gmv = 0;
    gmv += paid_order(&app, &buyer, &[(&a, 2)]).await;
    gmv += paid_order(&app, &buyer, &[(&a, 1), (&b, 3)]).await;
    gmv += paid_order(&app, &buyer, &[(&b, 1)]).await;
    // An unpaid order and a cancelled one add no GMV.
    let res = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&buyer)
        .header("idempotency-key", "unpaid-1")
        .json(&json!({"lines": [{"product_id": a, "quantity": 5}]}))
        .send()
        .await
        .unwrap();
    let unpaid: Value = res.json().await.unwrap();
    let id = unpaid["id"].as_str().unwrap();
    assert_eq!(
        app.post(&format!("/api/v1/orders/{id}/cancel"), Some(&buyer), &json!({})).await.status(),
        StatusCode::OK
    );
    outbox::drain(&app.state).await.unwrap();
    assert_eq!(gmv, 7 * 1999);

    let summary = json_of(&app, "/api/v1/analytics/summary", &admin).await;
    let t = &summary["totals"];
    assert_eq!(
        (t["paid_orders"].as_i64(), t["gmv_minor"].as_i64(), t["units"].as_i64()),
        (Some(3), Some(gmv), Some(7))
    );
    assert_eq!(t["cancelled_orders"], 1);
    let top = &summary["top_skus"];
    assert_eq!((top[0]["sku"].as_str(), top[0]["units"].as_i64()), (Some("GMVSHOP-B"), Some(4)));
    assert_eq!((top[1]["sku"].as_str(), top[1]["gmv_minor"].as_i64()), (Some("GMVSHOP-A"), Some(3 * 1999)));

    // The minute and second series add up to the same figures.
    let minutes = json_of(&app, "/api/v1/analytics/gmv?granularity=minute", &admin).await;
    let sum = |s: &Value, f: &str| s["points"].as_array().unwrap().iter().map(|p| p[f].as_i64().unwrap()).sum::<i64>();
    assert_eq!((sum(&minutes, "gmv_minor"), sum(&minutes, "paid_orders")), (gmv, 3));
    assert_eq!(minutes["points"].as_array().unwrap().len(), 60);
    let seconds = json_of(&app, "/api/v1/analytics/gmv?granularity=second", &admin).await;
    assert_eq!((sum(&seconds, "gmv_minor"), sum(&seconds, "paid_orders")), (gmv, 3));
    let top = json_of(&app, "/api/v1/analytics/top-skus?limit=1", &admin).await;
    assert_eq!(top.as_array().unwrap().len(), 1);

    // The platform's own rebates are pending for the buyer.
    let me: Value = app.get_as("/api/v1/me", &buyer).await.json().await.unwrap();
    let mine =
        json_of(&app, &format!("/api/v1/analytics/pending-rebates?user_id={}", me["id"].as_str().unwrap()), &admin)
            .await;
    let all = json_of(&app, "/api/v1/analytics/pending-rebates", &admin).await;
    assert!(mine["total_minor"].as_i64().unwrap() > 0, "{mine}");
    assert_eq!(all["total_minor"], mine["total_minor"]);
    assert_eq!(all["top"][0]["user_id"], me["id"]);
    assert_eq!(all["top"][0]["username"], me["username"], "the dashboard shows who, not a number");
    assert_eq!(mine["top"][0]["username"], me["username"]);
    app.shutdown().await;
}

#[tokio::test]
async fn an_event_delivered_twice_counts_once_and_a_restart_neither_loses_nor_double_counts() {
    let app = TestApp::spawn().await;
    let (a, _, admin) = shop(&app, "twiceshop").await;
    let buyer = app.token_for("twicebuyer", Role::User).await;
    let gmv = paid_order(&app, &buyer, &[(&a, 2)]).await;
    outbox::drain(&app.state).await.unwrap();
    let now = flashback_server::trade::now_ms();
    let (event, body) = paid_event(7_000_000_001, now, &a, 3);
    for _ in 0..3 {
        Consumer.handle(&app.state, &event, &body).await.unwrap();
    }
    let totals = |s: Value| (s["totals"]["paid_orders"].as_i64().unwrap(), s["totals"]["gmv_minor"].as_i64().unwrap());
    let before = totals(json_of(&app, "/api/v1/analytics/summary", &admin).await);
    assert_eq!(before, (2, gmv + 3 * 1999));
    // (The background dispatcher and the drain may both have delivered the real event.)
    let (applied, duplicates) = app.state.analytics.consumed();
    assert!(applied == 2 && duplicates >= 2, "applied {applied}, duplicates {duplicates}");

    // Restart on the same data: the counts are all there, and an old event delivered again
    // (as after a crash between counting and marking it dispatched) still counts once.
    let dir = app.shutdown_keeping_data().await;
    let app = TestApp::spawn_in(dir).await;
    let admin = app.login("twiceshop-admin", "twiceshop-admin-password").await.json::<Value>().await.unwrap();
    let admin = admin["token"].as_str().unwrap().to_owned();
    outbox::drain(&app.state).await.unwrap();
    Consumer.handle(&app.state, &event, &body).await.unwrap();
    assert_eq!(totals(json_of(&app, "/api/v1/analytics/summary", &admin).await), before);
    // New orders after the restart add to the old figures.
    let buyer = app.login("twicebuyer", "twicebuyer-password").await.json::<Value>().await.unwrap();
    let more = paid_order(&app, buyer["token"].as_str().unwrap(), &[(&a, 1)]).await;
    outbox::drain(&app.state).await.unwrap();
    assert_eq!(totals(json_of(&app, "/api/v1/analytics/summary", &admin).await), (3, before.1 + more));
    app.shutdown().await;
}

#[tokio::test]
async fn flash_sales_show_their_stock_and_sell_through() {
    let app = TestApp::spawn().await;
    let (a, _, admin) = shop(&app, "flashpanel").await;
    let merchant = app.login("flashpanel", "flashpanel-password").await.json::<Value>().await.unwrap();
    let now = flashback_server::trade::now_ms();
    let body = json!({"product_id": a, "sale_price_minor": 100, "stock": 8, "per_user_limit": 2,
        "starts_at": now - 1000, "ends_at": now + 600_000, "require_token": false});
    let res = app.post("/api/v1/flash-sales", merchant["token"].as_str(), &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let sale: Value = res.json().await.unwrap();
    let buyer = app.token_for("flashpanelbuyer", Role::User).await;
    let path = format!("/api/v1/flash-sales/{}/purchase", sale["id"].as_str().unwrap());
    assert_eq!(app.post(&path, Some(&buyer), &json!({})).await.status(), StatusCode::ACCEPTED);
    let panels = json_of(&app, "/api/v1/analytics/flash-sales", &admin).await;
    let p = &panels[0];
    assert_eq!(p["sale_id"], sale["id"]);
    assert_eq!((p["stock"].as_i64(), p["sold"].as_i64(), p["remaining"].as_i64()), (Some(8), Some(1), Some(7)));
    assert_eq!(p["sell_through_bp"], 1250);
    assert_eq!(p["sku"], "FLASHPANEL-A");
    app.shutdown().await;
}

/// Reads from an SSE response until one whole `snapshot` event has arrived.
async fn next_snapshot(res: &mut reqwest::Response, buf: &mut String) -> Value {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                assert!(event.contains("event: snapshot"), "{event}");
                return serde_json::from_str(data).unwrap();
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), res.chunk()).await.expect("a snapshot in time");
        buf.push_str(std::str::from_utf8(&chunk.unwrap().expect("stream open")).unwrap());
    }
}

#[tokio::test]
async fn the_live_stream_sends_a_snapshot_at_once_then_every_interval_to_a_bounded_number_of_admins() {
    let app = TestApp::spawn_with(|c| {
        c.analytics.max_clients = 1;
        c.analytics.snapshot_interval = Duration::from_millis(200);
    })
    .await;
    let (a, _, admin) = shop(&app, "liveshop").await;
    let buyer = app.token_for("livebuyer", Role::User).await;
    let mut res = app.get(&format!("/api/v1/live?access_token={admin}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut buf = String::new();
    let first = next_snapshot(&mut res, &mut buf).await;
    assert_eq!(first["today"]["paid_orders"], 0);
    for key in ["seconds", "minutes", "top_skus", "flash_sales", "pending_rebates", "tracking", "admission"] {
        assert!(!first[key].is_null(), "snapshot has {key}");
    }
    // A second client is one too many.
    let res2 = app.get_as("/api/v1/live", &admin).await;
    assert_problem(res2, StatusCode::SERVICE_UNAVAILABLE, "live_too_many_clients").await;

    let gmv = paid_order(&app, &buyer, &[(&a, 2)]).await;
    outbox::drain(&app.state).await.unwrap();
    let mut seen = 0;
    for _ in 0..20 {
        let s = next_snapshot(&mut res, &mut buf).await;
        seen = s["today"]["gmv_minor"].as_i64().unwrap();
        if seen == gmv {
            break;
        }
    }
    assert_eq!(seen, gmv, "the stream shows the payment");
    drop(res);
    // The slot frees when the client goes away.
    let mut again = None;
    for _ in 0..50 {
        let res = app.get_as("/api/v1/live", &admin).await;
        if res.status() == StatusCode::OK {
            again = Some(res);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a new client is admitted once the old one left");
    drop(again);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_parameters_get_stable_codes_and_only_admins_may_look() {
    let app = TestApp::spawn().await;
    let admin = app.token_for("badadmin", Role::Admin).await;
    let user = app.token_for("baduser", Role::User).await;
    let cases = [
        ("/api/v1/analytics/gmv?from_ms=10&to_ms=5", "analytics_bad_range"),
        ("/api/v1/analytics/gmv?granularity=second&from_ms=0&to_ms=1000000000", "analytics_range_too_long"),
        ("/api/v1/analytics/gmv?from_ms=0&to_ms=900000000000", "analytics_range_too_long"),
        ("/api/v1/analytics/gmv?granularity=hour", "invalid_query"),
        ("/api/v1/analytics/gmv?from_ms=yesterday", "invalid_query"),
        ("/api/v1/analytics/top-skus?limit=0", "analytics_bad_limit"),
        ("/api/v1/analytics/top-skus?limit=101", "analytics_bad_limit"),
        ("/api/v1/analytics/summary?day=2026-13-01", "analytics_bad_day"),
        ("/api/v1/analytics/summary?when=today", "invalid_query"),
        ("/api/v1/analytics/pending-rebates?user_id=abc", "analytics_bad_user"),
        ("/api/v1/analytics/flash-sales?limit=1000", "analytics_bad_limit"),
    ];
    for (path, code) in cases {
        assert_problem(app.get_as(path, &admin).await, StatusCode::BAD_REQUEST, code).await;
    }
    let summary = json_of(&app, "/api/v1/analytics/summary?day=2026-11-11", &admin).await;
    assert_eq!(summary["totals"]["paid_orders"], 0);
    let paths = [
        "/api/v1/analytics/summary",
        "/api/v1/analytics/gmv",
        "/api/v1/analytics/top-skus",
        "/api/v1/analytics/flash-sales",
        "/api/v1/analytics/pending-rebates",
        "/api/v1/live",
    ];
    for path in paths {
        assert_problem(app.get_as(path, &user).await, StatusCode::FORBIDDEN, "forbidden").await;
        assert_problem(app.get(path).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }
    let res = app.get(&format!("/api/v1/live?access_token={user}")).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_problem(app.get("/api/v1/live?access_token=forged").await, StatusCode::UNAUTHORIZED, "invalid_token").await;
    // The query token is for the stream only.
    let res = app.get(&format!("/api/v1/analytics/summary?access_token={admin}")).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_demo_traffic_generator_places_and_pays_orders_until_shutdown() {
    let app = TestApp::spawn().await;
    flashback_server::demo::load(&app.state).await.unwrap();
    let admin = app.login("admin", "admin-password").await.json::<Value>().await.unwrap();
    let admin = admin["token"].as_str().unwrap().to_owned();
    outbox::drain(&app.state).await.unwrap();
    let before = json_of(&app, "/api/v1/analytics/summary", &admin).await["totals"]["paid_orders"].as_i64().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = flashback_server::demo::traffic::spawn(app.url(""), stop.clone());
    let started = std::time::Instant::now();
    let mut paid = before;
    while paid < before + 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "the generator paid {} orders", paid - before);
        tokio::time::sleep(Duration::from_millis(200)).await;
        outbox::drain(&app.state).await.unwrap();
        paid = json_of(&app, "/api/v1/analytics/summary", &admin).await["totals"]["paid_orders"].as_i64().unwrap();
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("it stops on shutdown").unwrap();
    app.shutdown().await;
}
