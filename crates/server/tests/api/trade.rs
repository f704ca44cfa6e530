//! The trade core through the API: placing, paying, shipping, completing, cancelling,
//! refunding and expiring orders; idempotency; bad input; races; crashes mid-saga.

use std::sync::Arc;
use std::time::Duration;

use flashback_core::Role;
use flashback_server::trade::{audit, outbox, payments, sweeper};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

/// A merchant with one product (price 1999, `stock` units) and the app.
async fn shop(app: &TestApp, name: &str, stock: i64) -> (String, String) {
    let cat = app.category(&format!("{name} things")).await;
    let merchant = app.token_for(name, Role::Merchant).await;
    let p = app.product(&merchant, &cat, &format!("{name}-1"), stock).await;
    (merchant, p["id"].as_str().unwrap().to_owned())
}

async fn order(app: &TestApp, token: &str, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn one(product: &str, quantity: i64) -> Value {
    json!({"lines": [{"product_id": product, "quantity": quantity}]})
}

async fn available(app: &TestApp, product: &str) -> i64 {
    app.state.store.product(product.parse().unwrap()).await.unwrap().unwrap().inventory.available.get()
}

async fn state_of(app: &TestApp, token: &str, id: &str) -> String {
    let o: Value = app.get_as(&format!("/api/v1/orders/{id}"), token).await.json().await.unwrap();
    o["state"].as_str().unwrap().to_owned()
}

async fn pay(app: &TestApp, token: &str, id: &str) -> Value {
    let res = app.post(&format!("/api/v1/orders/{id}/payments"), Some(token), &json!({})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let payment: Value = res.json().await.unwrap();
    let res = app.post(payment["pay_url"].as_str().unwrap(), None, &json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    payment
}

async fn grant(app: &TestApp, token: &str, points: i64) {
    let me: Value = app.get_as("/api/v1/me", token).await.json().await.unwrap();
    let user = flashback_core::UserId::parse(me["id"].as_str().unwrap()).unwrap();
    let entry = app.state.ids.write_ids().entry;
    let points = flashback_core::Points::new(points).unwrap();
    app.state
        .shards
        .for_buyer(user)
        .add_points(entry, user, points, "grant", &format!("grant:{user}:{entry}"))
        .await
        .unwrap();
}

async fn assert_audit_clean(app: &TestApp) -> audit::AuditReport {
    let report = audit::audit(&app.state).await.unwrap();
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    report
}

#[tokio::test]
async fn an_order_goes_from_placed_to_completed_and_earns_points_once() {
    let app = TestApp::spawn().await;
    let (merchant, product) = shop(&app, "lifeshop", 10).await;
    let buyer = app.token_for("lifebuyer", Role::User).await;
    let res = order(&app, &buyer, "k-1", &one(&product, 2)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let placed: Value = res.json().await.unwrap();
    let id = placed["id"].as_str().unwrap();
    assert_eq!(
        (placed["state"].as_str(), placed["total_minor"].as_i64(), placed["payable_minor"].as_i64()),
        (Some("pending_payment"), Some(3998), Some(3998))
    );
    assert_eq!(placed["lines"][0]["unit_price_minor"], 1999);
    assert_eq!(available(&app, &product).await, 8);

    pay(&app, &buyer, id).await;
    assert_eq!(state_of(&app, &buyer, id).await, "paid");
    let ship = app.post(&format!("/api/v1/orders/{id}/ship"), Some(&merchant), &json!({})).await;
    assert_eq!(ship.status(), StatusCode::OK);
    let done = app.post(&format!("/api/v1/orders/{id}/complete"), Some(&buyer), &json!({})).await;
    assert_eq!(done.status(), StatusCode::OK);
    outbox::drain(&app.state).await.unwrap();
    outbox::drain(&app.state).await.unwrap();
    let points: Value = app.get_as("/api/v1/me/points", &buyer).await.json().await.unwrap();
    assert_eq!(points["balance"], 39, "1 point per 100 minor units paid, awarded once");
    assert_eq!(available(&app, &product).await, 8, "sold stock stays sold");
    assert_audit_clean(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_order_and_a_changed_body_is_refused() {
    let app = TestApp::spawn().await;
    let (_, product) = shop(&app, "idemshop", 10).await;
    let buyer = app.token_for("idembuyer", Role::User).await;
    let first: Value = order(&app, &buyer, "same-key", &one(&product, 1)).await.json().await.unwrap();
    let again = order(&app, &buyer, "same-key", &one(&product, 1)).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
    let changed = order(&app, &buyer, "same-key", &one(&product, 2)).await;
    assert_problem(changed, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    assert_eq!(available(&app, &product).await, 9, "one order's stock, taken once");
    // Another buyer's key space is their own.
    let other = app.token_for("idemother", Role::User).await;
    assert_eq!(order(&app, &other, "same-key", &one(&product, 1)).await.status(), StatusCode::CREATED);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_orders_get_stable_codes_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (merchant, product) = shop(&app, "strictshop", 5).await;
    let (_, elsewhere) = shop(&app, "othershop", 5).await;
    let off = {
        let cat = app.category("Off things").await;
        let p = app.product(&merchant, &cat, "OFF-1", 5).await;
        let id = p["id"].as_str().unwrap().to_owned();
        let res = app
            .send(
                Method::PUT,
                &format!("/api/v1/products/{id}/status"),
                Some(&merchant),
                &json!({"status": "off_shelf"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        id
    };
    let buyer = app.token_for("strictbuyer", Role::User).await;
    grant(&app, &buyer, 50).await;
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (json!({"lines": []}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (one(&product, 0), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (one(&product, -1), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (one(&product, 1000), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (one(&product, 6), StatusCode::CONFLICT, "insufficient_stock"),
        (one("12345", 1), StatusCode::UNPROCESSABLE_ENTITY, "unknown_product"),
        (one("not-an-id", 1), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (one(&off, 1), StatusCode::CONFLICT, "product_off_shelf"),
        (
            json!({"lines": [{"product_id": product, "quantity": 1}, {"product_id": product, "quantity": 1}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"lines": [{"product_id": product, "quantity": 1}, {"product_id": elsewhere, "quantity": 1}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"lines": [{"product_id": product, "quantity": 1}], "points": 51}),
            StatusCode::CONFLICT,
            "insufficient_points",
        ),
        (
            json!({"lines": [{"product_id": product, "quantity": 1}], "points": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"lines": [{"product_id": product, "quantity": 1}], "coupon": "FREE"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ];
    for (i, (body, status, code)) in cases.into_iter().enumerate() {
        assert_problem(order(&app, &buyer, &format!("bad-{i}"), &body).await, status, code).await;
    }
    grant(&app, &buyer, 5000).await;
    let too_many_points = json!({"lines": [{"product_id": product, "quantity": 1}], "points": 2000});
    assert_problem(
        order(&app, &buyer, "bad-points", &too_many_points).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;

    let res =
        app.client.post(app.url("/api/v1/orders")).bearer_auth(&buyer).json(&one(&product, 1)).send().await.unwrap();
    assert_problem(res, StatusCode::BAD_REQUEST, "idempotency_key_required").await;
    let res = order(&app, &buyer, "has space", &one(&product, 1)).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    let res = app
        .client
        .post(app.url("/api/v1/orders"))
        .header("idempotency-key", "x")
        .json(&one(&product, 1))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;

    assert_eq!((available(&app, &product).await, available(&app, &elsewhere).await), (5, 5), "no stock moved");
    let mine: Value = app.get_as("/api/v1/orders", &buyer).await.json().await.unwrap();
    assert_eq!(mine["items"], json!([]), "no order written");
    let points: Value = app.get_as("/api/v1/me/points", &buyer).await.json().await.unwrap();
    assert_eq!(points["balance"], 5050);
    assert_audit_clean(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn other_peoples_orders_are_not_found_and_wrong_steps_are_conflicts() {
    let app = TestApp::spawn().await;
    let (merchant, product) = shop(&app, "guardshop", 5).await;
    let (rival, _) = shop(&app, "rivalshop", 5).await;
    let buyer = app.token_for("guardbuyer", Role::User).await;
    let snoop = app.token_for("snoop", Role::User).await;
    let placed: Value = order(&app, &buyer, "g-1", &one(&product, 1)).await.json().await.unwrap();
    let id = placed["id"].as_str().unwrap();
    for (method, path, token) in [
        (Method::GET, format!("/api/v1/orders/{id}"), &snoop),
        (Method::POST, format!("/api/v1/orders/{id}/cancel"), &snoop),
        (Method::POST, format!("/api/v1/orders/{id}/payments"), &snoop),
        (Method::POST, format!("/api/v1/orders/{id}/ship"), &rival),
        (Method::GET, "/api/v1/orders/abc".to_owned(), &buyer),
        (Method::GET, "/api/v1/orders/12345".to_owned(), &buyer),
    ] {
        let res = app.send(method, &path, Some(token), &json!({})).await;
        assert_problem(res, StatusCode::NOT_FOUND, "order_not_found").await;
    }
    let ship = app.post(&format!("/api/v1/orders/{id}/ship"), Some(&merchant), &json!({})).await;
    assert_problem(ship, StatusCode::CONFLICT, "invalid_transition").await;
    let complete = app.post(&format!("/api/v1/orders/{id}/complete"), Some(&buyer), &json!({})).await;
    assert_problem(complete, StatusCode::CONFLICT, "invalid_transition").await;
    let refund = app.post(&format!("/api/v1/orders/{id}/refund"), Some(&merchant), &json!({})).await;
    assert_problem(refund, StatusCode::CONFLICT, "invalid_transition").await;
    let ship_as_buyer = app.post(&format!("/api/v1/orders/{id}/ship"), Some(&buyer), &json!({})).await;
    assert_problem(ship_as_buyer, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(state_of(&app, &buyer, id).await, "pending_payment");
    // The seller and an admin may read it.
    assert_eq!(app.get_as(&format!("/api/v1/orders/{id}"), &merchant).await.status(), StatusCode::OK);
    let admin = app.token_for("guardadmin", Role::Admin).await;
    assert_eq!(app.get_as(&format!("/api/v1/orders/{id}"), &admin).await.status(), StatusCode::OK);

    let cancel = app.post(&format!("/api/v1/orders/{id}/cancel"), Some(&buyer), &json!({})).await;
    assert_eq!(cancel.status(), StatusCode::OK);
    let again = app.post(&format!("/api/v1/orders/{id}/cancel"), Some(&buyer), &json!({})).await;
    assert_problem(again, StatusCode::CONFLICT, "invalid_transition").await;
    assert_eq!(available(&app, &product).await, 5);
    app.shutdown().await;
}

#[tokio::test]
async fn unpaid_orders_expire_returning_stock_and_points_and_a_late_payment_is_refunded() {
    let app = TestApp::spawn_with(|c| {
        c.trade.payment_timeout = Duration::from_secs(1);
        c.trade.sweep_interval = Duration::from_millis(50);
    })
    .await;
    let (_, product) = shop(&app, "expshop", 5).await;
    let buyer = app.token_for("expbuyer", Role::User).await;
    grant(&app, &buyer, 300).await;
    let body = json!({"lines": [{"product_id": product, "quantity": 2}], "points": 300});
    let placed: Value = order(&app, &buyer, "e-1", &body).await.json().await.unwrap();
    let id = placed["id"].as_str().unwrap();
    let payment: Value =
        app.post(&format!("/api/v1/orders/{id}/payments"), Some(&buyer), &json!({})).await.json().await.unwrap();
    assert_eq!(available(&app, &product).await, 3);

    let started = std::time::Instant::now();
    while state_of(&app, &buyer, id).await != "cancelled" {
        assert!(started.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The state flips first; the stock step follows it (same sweep), so wait for it, bounded.
    while available(&app, &product).await != 5 {
        assert!(started.elapsed() < Duration::from_secs(10), "stock never returned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(available(&app, &product).await, 5, "stock returned");
    let points: Value = app.get_as("/api/v1/me/points", &buyer).await.json().await.unwrap();
    assert_eq!(points["balance"], 300, "points returned");

    // The payment arrives after expiry: refunded, never fulfilled.
    let res = app.post(payment["pay_url"].as_str().unwrap(), None, &json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(state_of(&app, &buyer, id).await, "cancelled");
    let stored = app
        .state
        .shards
        .for_order(id.parse().unwrap())
        .payment(payment["payment_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, flashback_store::PaymentState::Refunded);
    assert_eq!(available(&app, &product).await, 5);
    assert_audit_clean(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn forged_stale_and_replayed_notifications_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, product) = shop(&app, "notishop", 5).await;
    let buyer = app.token_for("notibuyer", Role::User).await;
    let placed: Value = order(&app, &buyer, "n-1", &one(&product, 1)).await.json().await.unwrap();
    let id = placed["id"].as_str().unwrap();
    let payment: Value =
        app.post(&format!("/api/v1/orders/{id}/payments"), Some(&buyer), &json!({})).await.json().await.unwrap();
    let body = json!({
        "notification_id": "n-1", "payment_id": payment["payment_id"], "order_id": id,
        "amount_minor": 1999, "status": "succeeded"
    })
    .to_string();
    let key = app.state.trade.payment_key.clone();
    let now = flashback_server::trade::now_ms() / 1000;
    let send = |ts: i64, signature: String, body: String| {
        app.client
            .post(app.url("/api/v1/payments/notify"))
            .header("content-type", "application/json")
            .header(payments::TIMESTAMP_HEADER, ts.to_string())
            .header(payments::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
    };
    let forged = send(now, payments::sign(b"not-the-key-not-the-key-not-the-key", now, body.as_bytes()), body.clone());
    assert_problem(forged.await.unwrap(), StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let tampered = body.replace("1999", "1");
    let res = send(now, payments::sign(&key, now, body.as_bytes()), tampered).await.unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let old = now - 3600;
    let stale = send(old, payments::sign(&key, old, body.as_bytes()), body.clone()).await.unwrap();
    assert_problem(stale, StatusCode::UNAUTHORIZED, "stale_signature").await;
    let wrong_amount = body.replace("1999", "1");
    let res = send(now, payments::sign(&key, now, wrong_amount.as_bytes()), wrong_amount).await.unwrap();
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "payment_mismatch").await;
    assert_eq!(state_of(&app, &buyer, id).await, "pending_payment", "nothing changed so far");

    for _ in 0..3 {
        let res = send(now, payments::sign(&key, now, body.as_bytes()), body.clone()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.json::<Value>().await.unwrap()["result"], "paid");
    }
    assert_eq!(state_of(&app, &buyer, id).await, "paid");
    outbox::drain(&app.state).await.unwrap();
    let paid_events = app.state.shards.for_order(id.parse().unwrap()).outbox_pending(100).await.unwrap();
    assert!(paid_events.is_empty(), "the outbox drained");
    assert_eq!(available(&app, &product).await, 4);
    assert_audit_clean(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn many_buyers_racing_for_little_stock_never_oversell() {
    let app = Arc::new(TestApp::spawn().await);
    let (_, product) = shop(&app, "raceshop", 7).await;
    let mut buyers = Vec::new();
    for i in 0..24 {
        buyers.push(app.token_for(&format!("racer{i}"), Role::User).await);
    }
    let tasks: Vec<_> = buyers
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let (app, product) = (Arc::clone(&app), product.clone());
            tokio::spawn(async move { order(&app, &token, &format!("race-{i}"), &one(&product, 1)).await.status() })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 7);
    assert_eq!(available(&app, &product).await, 0);
    let report = assert_audit_clean(&app).await;
    assert_eq!(report.stock[&product], (0, 7, 0));
}

#[tokio::test]
async fn payment_and_expiry_racing_leave_each_order_in_one_state_with_stock_and_points_balanced() {
    let app = Arc::new(
        TestApp::spawn_with(|c| {
            c.trade.payment_timeout = Duration::from_secs(1);
            c.trade.sweep_interval = Duration::from_secs(3600);
        })
        .await,
    );
    let (_, product) = shop(&app, "payrace", 40).await;
    let mut placed = Vec::new();
    for i in 0..12 {
        let buyer = app.token_for(&format!("payracer{i}"), Role::User).await;
        grant(&app, &buyer, 100).await;
        let body = json!({"lines": [{"product_id": product, "quantity": 2}], "points": 100});
        let o: Value = order(&app, &buyer, "pr", &body).await.json().await.unwrap();
        let id = o["id"].as_str().unwrap().to_owned();
        let p: Value =
            app.post(&format!("/api/v1/orders/{id}/payments"), Some(&buyer), &json!({})).await.json().await.unwrap();
        placed.push((buyer, id, p["pay_url"].as_str().unwrap().to_owned()));
    }
    tokio::time::sleep(Duration::from_millis(1100)).await; // every order is now past its deadline
    let mut tasks = Vec::new();
    for (_, _, url) in &placed {
        let (app, url) = (Arc::clone(&app), url.clone());
        tasks.push(tokio::spawn(async move {
            app.post(&url, None, &json!({})).await;
        }));
    }
    for _ in 0..3 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            sweeper::sweep_once(&app.state).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    sweeper::sweep_once(&app.state).await.unwrap();
    outbox::drain(&app.state).await.unwrap();

    let (mut paid, mut cancelled) = (0, 0);
    for (buyer, id, _) in &placed {
        let points: Value = app.get_as("/api/v1/me/points", buyer).await.json().await.unwrap();
        match state_of(&app, buyer, id).await.as_str() {
            "paid" => {
                paid += 1;
                assert_eq!(points["balance"], 0, "redeemed points stay spent on a paid order");
            }
            "cancelled" => {
                cancelled += 1;
                assert_eq!(points["balance"], 100, "an expired order's points come back");
                let payments =
                    app.state.shards.for_order(id.parse().unwrap()).order_payments(id.parse().unwrap()).await.unwrap();
                assert!(
                    payments.iter().all(|p| p.state != flashback_store::PaymentState::Succeeded),
                    "a late payment is refunded"
                );
            }
            other => panic!("order {id} ended {other}"),
        }
    }
    assert_eq!(paid + cancelled, 12);
    let report = assert_audit_clean(&app).await;
    let (available, held, sold) = report.stock[&product];
    assert_eq!((available + held + sold, held, sold), (40, 0, 2 * paid), "units conserved");
}

#[tokio::test]
async fn a_crash_between_any_two_saga_steps_leaves_stock_and_points_whole_after_the_sweep() {
    let app = TestApp::spawn_with(|c| c.trade.sweep_interval = Duration::from_secs(3600)).await;
    let (merchant, product) = shop(&app, "crashshop", 100).await;
    let buyer = app.token_for("crashbuyer", Role::User).await;
    grant(&app, &buyer, 1000).await;
    let faults = &app.state.trade.faults;
    let body = json!({"lines": [{"product_id": product, "quantity": 1}], "points": 10});

    // Crash after reserving, before the order is written: an orphaned reservation.
    faults.arm("place.after_reserve");
    assert_problem(order(&app, &buyer, "c-1", &body).await, StatusCode::SERVICE_UNAVAILABLE, "crashed").await;
    // Crash after the order is written, before answering: the retry finds the order.
    faults.arm("place.after_create");
    assert_problem(order(&app, &buyer, "c-2", &body).await, StatusCode::SERVICE_UNAVAILABLE, "crashed").await;
    let retried = order(&app, &buyer, "c-2", &body).await;
    assert_eq!(retried.status(), StatusCode::OK, "the retry replays the order the crash left");
    let paid_id = retried.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    // Crashes inside payment: the provider retries its notification until it is answered.
    faults.arm("pay.after_payment_recorded");
    pay(&app, &buyer, &paid_id).await;
    assert_eq!(state_of(&app, &buyer, &paid_id).await, "paid");
    let o: Value = order(&app, &buyer, "c-3", &body).await.json().await.unwrap();
    let half_paid = o["id"].as_str().unwrap().to_owned();
    faults.arm("pay.after_order_paid");
    pay(&app, &buyer, &half_paid).await;
    // Crash after cancelling, before the stock goes back.
    let o: Value = order(&app, &buyer, "c-4", &body).await.json().await.unwrap();
    let cancelled = o["id"].as_str().unwrap().to_owned();
    faults.arm("cancel.after_order_cancelled");
    let res = app.post(&format!("/api/v1/orders/{cancelled}/cancel"), Some(&buyer), &json!({})).await;
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "crashed").await;
    // Crash after refunding a paid order, before its stock goes back.
    faults.arm("refund.after_order_refunded");
    let res = app.post(&format!("/api/v1/orders/{paid_id}/refund"), Some(&merchant), &json!({})).await;
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "crashed").await;

    // Recovery: the sweeper (once every saga has stopped) and the outbox finish the work.
    sweeper::sweep(&app.state, Duration::ZERO).await.unwrap();
    outbox::drain(&app.state).await.unwrap();
    let report = assert_audit_clean(&app).await;
    let (available, held, sold) = report.stock[&product];
    let states: Vec<String> = {
        let mut s = Vec::new();
        for id in [&paid_id, &half_paid, &cancelled] {
            s.push(state_of(&app, &buyer, id).await);
        }
        s
    };
    assert_eq!(states, ["refunded", "paid", "cancelled"]);
    assert_eq!((available, held, sold), (99, 0, 1), "only the paid order's unit is gone");
    let points: Value = app.get_as("/api/v1/me/points", &buyer).await.json().await.unwrap();
    assert_eq!(points["balance"], 990, "only the paid order's points are spent");
    app.shutdown().await;
}

#[tokio::test]
async fn merchant_and_admin_lists_merge_every_shard_under_one_cursor() {
    let app = TestApp::spawn().await;
    let (merchant, product) = shop(&app, "listshop", 100).await;
    let (other, other_product) = shop(&app, "listother", 100).await;
    let mut mine = Vec::new();
    for i in 0..9 {
        let buyer = app.token_for(&format!("lister{i}"), Role::User).await;
        let o: Value = order(&app, &buyer, "l", &one(&product, 1)).await.json().await.unwrap();
        mine.push(o["id"].as_str().unwrap().to_owned());
        order(&app, &buyer, "l2", &one(&other_product, 1)).await;
    }
    let shards_used: std::collections::HashSet<u16> =
        mine.iter().map(|id| id.parse::<flashback_core::OrderId>().unwrap().gene() % 4).collect();
    assert!(shards_used.len() > 1, "the buyers spread over several shards");

    let mut seen = Vec::new();
    let mut path = "/api/v1/merchant/orders?limit=4".to_owned();
    loop {
        let page: Value = app.get_as(&path, &merchant).await.json().await.unwrap();
        seen.extend(page["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/merchant/orders?limit=4&cursor={c}"),
            None => break,
        }
    }
    mine.reverse();
    assert_eq!(seen, mine, "the merchant's own orders, newest first, each once");

    let admin = app.token_for("listadmin", Role::Admin).await;
    let all: Value = app.get_as("/api/v1/admin/orders?limit=100", &admin).await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 18);
    let filtered: Value = app.get_as("/api/v1/merchant/orders?state=paid", &other).await.json().await.unwrap();
    assert_eq!(filtered["items"], json!([]));
    for bad in [
        "/api/v1/merchant/orders?state=lost",
        "/api/v1/merchant/orders?from=yesterday",
        "/api/v1/merchant/orders?limit=0",
    ] {
        assert_problem(app.get_as(bad, &merchant).await, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    assert_problem(app.get_as("/api/v1/admin/orders", &merchant).await, StatusCode::FORBIDDEN, "forbidden").await;
    app.shutdown().await;
}

/// The platform's own orders earn rebates like a network's: estimated when paid, settled on
/// completion and available after the hold, funded by the platform; a refund before completion
/// makes the row invalid. Events delivered twice change nothing twice.
#[tokio::test]
async fn the_platforms_own_orders_earn_rebates_funded_by_the_platform() {
    let app = TestApp::spawn_with(|c| {
        c.rebate.hold = Duration::ZERO;
        c.rebate.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let (merchant, product) = shop(&app, "rebshop", 10).await;
    let inviter = app.token_for("rebinviter", Role::User).await;
    let inviter_id: Value = app.get_as("/api/v1/me", &inviter).await.json().await.unwrap();
    app.post("/api/v1/me/rebate-profile", Some(&inviter), &json!({})).await;
    let buyer = app.token_for("rebbuyer", Role::User).await;
    let res = app.post("/api/v1/me/rebate-profile", Some(&buyer), &json!({"invite_code": inviter_id["id"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let wallet = |token: String| {
        let app = &app;
        async move {
            let w: Value = app.get_as("/api/v1/me/wallet", &token).await.json().await.unwrap();
            (w["pending_minor"].as_i64().unwrap(), w["available_minor"].as_i64().unwrap())
        }
    };

    // 2 × 1,999 paid: a 3% commission of 119; buyer 50% = 59, inviter 10% = 11.
    let placed: Value = order(&app, &buyer, "reb-1", &one(&product, 2)).await.json().await.unwrap();
    let id = placed["id"].as_str().unwrap();
    pay(&app, &buyer, id).await;
    outbox::drain(&app.state).await.unwrap();
    assert_eq!(wallet(buyer.clone()).await, (59, 0));
    assert_eq!(wallet(inviter.clone()).await, (11, 0));
    app.post(&format!("/api/v1/orders/{id}/ship"), Some(&merchant), &json!({})).await;
    app.post(&format!("/api/v1/orders/{id}/complete"), Some(&buyer), &json!({})).await;
    outbox::drain(&app.state).await.unwrap();
    flashback_server::rebate::ingest::release_due(&app.state).await.unwrap();
    assert_eq!(wallet(buyer.clone()).await, (0, 59));
    assert_eq!(wallet(inviter.clone()).await, (0, 11));
    let row = app.state.store.rebate_order("platform", id).await.unwrap().unwrap();
    let me: Value = app.get_as("/api/v1/me", &buyer).await.json().await.unwrap();
    assert_eq!(row.commission_minor, 119);
    assert_eq!(row.user_id.map(|u| u.to_string()).as_deref(), me["id"].as_str(), "attributed to the buyer directly");
    let expense = app.state.store.balance(flashback_core::Account::RebateExpense).await.unwrap();
    assert_eq!(expense, 119, "the platform funds its own rebates");

    // Refunded before completion: invalid, nothing pending.
    let placed: Value = order(&app, &buyer, "reb-2", &one(&product, 1)).await.json().await.unwrap();
    let id2 = placed["id"].as_str().unwrap();
    pay(&app, &buyer, id2).await;
    outbox::drain(&app.state).await.unwrap();
    assert_eq!(wallet(buyer.clone()).await, (29, 59));
    let res = app.post(&format!("/api/v1/orders/{id2}/refund"), Some(&merchant), &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", res.text().await);
    outbox::drain(&app.state).await.unwrap();
    assert_eq!(wallet(buyer.clone()).await, (0, 59));
    let audit = flashback_server::rebate::audit::audit(&app.state).await.unwrap();
    assert!(audit.violations.is_empty(), "{:?}", audit.violations);
}
