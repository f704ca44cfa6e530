//! The flash-sale purchase path on each engine: the admission funnel, the atomic reserve step
//! (never oversell, never over the per-user limit, duplicates refused before stock is touched),
//! tickets, and recovery after a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flashback_core::Role;
use flashback_server::config::{Config, FlashEngine};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{RedisOnly, TestApp, assert_problem, test_config};

fn now_ms() -> i64 {
    flashback_server::trade::now_ms()
}

/// A sale of `stock` units, `limit` per buyer, open now (or starting in `starts_in_ms`).
async fn sale(app: &TestApp, stock: i64, limit: i64, starts_in_ms: i64, require_token: bool) -> String {
    let m = app.token_for(&format!("fm{}", now_ms() % 1_000_000), Role::Merchant).await;
    let cat = app.category(&format!("Sale {}", now_ms())).await;
    let p = app.product(&m, &cat, "HOT-SALE", 1_000).await;
    let body = json!({
        "product_id": p["id"], "sale_price_minor": 100, "stock": stock, "per_user_limit": limit,
        "starts_at": now_ms() + starts_in_ms, "ends_at": now_ms() + 600_000, "require_token": require_token
    });
    let res = app.post("/api/v1/flash-sales", Some(&m), &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn buy(app: &TestApp, token: &str, sale: &str) -> reqwest::Response {
    app.client.post(app.url(&format!("/api/v1/flash-sales/{sale}/purchase"))).bearer_auth(token).send().await.unwrap()
}

fn engine(e: FlashEngine) -> impl FnOnce(&mut Config) {
    move |c| c.flash_sale.engine = e
}

/// Units held by the sale's recorded reservations, once the engine has recorded every
/// reservation it accepted (the redis engine imports them a little later).
async fn taken(app: &TestApp, sale: &str) -> i64 {
    let id = sale.parse().unwrap();
    let started = std::time::Instant::now();
    while app.state.flash.engine.book(id).await.unwrap().is_some_and(|(_, in_flight)| in_flight > 0) {
        assert!(started.elapsed() < Duration::from_secs(10), "reservations never recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.state.store.sale_taken_units(id).await.unwrap()
}

async fn crowd_never_oversells_or_exceeds_the_limit(e: FlashEngine) {
    crowd(vec![Arc::new(TestApp::spawn_with(engine(e)).await)]).await;
}

/// 25 buyers × 3 attempts at a sale of 10 (2 per buyer), spread over `apps` (instances sharing
/// one store): exactly 10 accepted, nobody above 2, exactly 10 durable.
pub async fn crowd(apps: Vec<Arc<TestApp>>) {
    let first = Arc::clone(&apps[0]);
    let id = sale(&first, 10, 2, -1_000, false).await;
    let mut buyers = Vec::new();
    for i in 0..25 {
        buyers.push(first.token_for(&format!("crowd{i}"), Role::User).await);
    }
    let mut tasks = Vec::new();
    for (i, token) in buyers.iter().enumerate() {
        for k in 0..3 {
            let (app, token, id) = (Arc::clone(&apps[(i + k) % apps.len()]), token.clone(), id.clone());
            tasks.push(tokio::spawn(async move { (i, buy(&app, &token, &id).await.status()) }));
        }
    }
    let mut per_buyer: HashMap<usize, i64> = HashMap::new();
    for t in tasks {
        let (i, status) = t.await.unwrap();
        match status {
            StatusCode::ACCEPTED => *per_buyer.entry(i).or_default() += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(per_buyer.values().sum::<i64>(), 10, "exactly the sale's stock is accepted");
    assert!(per_buyer.values().all(|n| *n <= 2), "nobody above the limit: {per_buyer:?}");
    assert_eq!(taken(&first, &id).await, 10, "and exactly that is durable");
    let mut accepted = 0.0;
    for app in &apps {
        accepted += app.metric(r#"flashback_flash_admission_total{reason="accepted"}"#).await;
    }
    assert_eq!(accepted, 10.0);
}

#[tokio::test]
async fn a_crowd_never_oversells_or_exceeds_the_limit_on_the_memory_engine() {
    crowd_never_oversells_or_exceeds_the_limit(FlashEngine::Memory).await;
}

#[tokio::test]
async fn a_crowd_never_oversells_or_exceeds_the_limit_on_the_sql_engine() {
    crowd_never_oversells_or_exceeds_the_limit(FlashEngine::Sql).await;
}

async fn duplicates_are_refused_before_stock(e: FlashEngine) {
    duplicates_are_refused_before_stock_on(TestApp::spawn_with(engine(e)).await).await;
}

async fn duplicates_are_refused_before_stock_on(app: TestApp) {
    let id = sale(&app, 2, 1, -1_000, false).await;
    let a = app.token_for("dupa", Role::User).await;
    let b = app.token_for("dupb", Role::User).await;
    let c = app.token_for("dupc", Role::User).await;
    let res = buy(&app, &a, &id).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let ticket: Value = res.json().await.unwrap();
    assert_eq!(ticket["status"], "queued");
    assert_problem(buy(&app, &a, &id).await, StatusCode::CONFLICT, "limit_reached").await;
    assert_eq!(taken(&app, &id).await, 1, "the duplicate took nothing");
    assert_eq!(buy(&app, &b, &id).await.status(), StatusCode::ACCEPTED, "so the last unit is still there");
    assert_problem(buy(&app, &c, &id).await, StatusCode::CONFLICT, "sold_out").await;

    let t = ticket["ticket_id"].as_str().unwrap();
    let mine: Value = app.get_as(&format!("/api/v1/flash-sales/tickets/{t}"), &a).await.json().await.unwrap();
    // Queued until the order worker has made its order (which may already have happened).
    assert!(matches!(mine["status"].as_str(), Some("queued" | "ordered")), "{mine}");
    assert_eq!(mine["quantity"], 1);
    assert_problem(
        app.get_as(&format!("/api/v1/flash-sales/tickets/{t}"), &b).await,
        StatusCode::NOT_FOUND,
        "ticket_not_found",
    )
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_crowd_never_oversells_or_exceeds_the_limit_on_the_redis_engine() {
    let Some(r) = RedisOnly::get("flash redis engine") else { return };
    crowd(vec![Arc::new(TestApp::spawn_with(|c| r.apply(c)).await)]).await;
}

#[tokio::test]
async fn a_duplicate_purchase_is_refused_before_stock_is_touched_on_the_memory_engine() {
    duplicates_are_refused_before_stock(FlashEngine::Memory).await;
}

#[tokio::test]
async fn a_duplicate_purchase_is_refused_before_stock_is_touched_on_the_sql_engine() {
    duplicates_are_refused_before_stock(FlashEngine::Sql).await;
}

#[tokio::test]
async fn a_duplicate_purchase_is_refused_before_stock_is_touched_on_the_redis_engine() {
    let Some(r) = RedisOnly::get("flash redis engine") else { return };
    duplicates_are_refused_before_stock_on(TestApp::spawn_with(|c| r.apply(c)).await).await;
}

#[tokio::test]
async fn the_funnel_refuses_with_stable_codes_and_counts_each_reason() {
    let app = TestApp::spawn_with(|c| {
        c.flash_sale.per_user_per_sec = 2;
        c.flash_sale.token_window = Duration::from_secs(3600);
    })
    .await;
    let buyer = app.token_for("funnelbuyer", Role::User).await;
    let later = sale(&app, 5, 5, 60_000, false).await;
    let res = buy(&app, &buyer, &later).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, StatusCode::CONFLICT, "sale_not_started").await;

    let open = sale(&app, 5, 5, -1_000, false).await;
    let res = app
        .client
        .post(app.url(&format!("/api/v1/flash-sales/{open}/purchase")))
        .bearer_auth(&buyer)
        .json(&json!({"quantity": 6}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let res = buy(&app, &buyer, &open).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let res = app.client.post(app.url(&format!("/api/v1/flash-sales/{open}/purchase"))).send().await.unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_problem(buy(&app, &buyer, "12345").await, StatusCode::NOT_FOUND, "sale_not_found").await;

    let guarded = sale(&app, 5, 1, 1_000, true).await;
    assert_problem(
        app.post(&format!("/api/v1/flash-sales/{open}/token"), Some(&buyer), &json!({})).await,
        StatusCode::CONFLICT,
        "token_not_required",
    )
    .await;
    let token: Value =
        app.post(&format!("/api/v1/flash-sales/{guarded}/token"), Some(&buyer), &json!({})).await.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // the sale starts
    assert_problem(buy(&app, &buyer, &guarded).await, StatusCode::FORBIDDEN, "purchase_token_required").await;
    let other = app.token_for("funnelother", Role::User).await;
    let stolen = app
        .client
        .post(app.url(&format!("/api/v1/flash-sales/{guarded}/purchase")))
        .bearer_auth(&other)
        .header("x-purchase-token", token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_problem(stolen, StatusCode::FORBIDDEN, "purchase_token_required").await;
    let mine = app
        .client
        .post(app.url(&format!("/api/v1/flash-sales/{guarded}/purchase")))
        .bearer_auth(&buyer)
        .header("x-purchase-token", token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), StatusCode::ACCEPTED);

    for reason in ["not_started", "invalid", "rate_user", "token", "accepted"] {
        let n = app.metric(&format!(r#"flashback_flash_admission_total{{reason="{reason}"}}"#)).await;
        assert!(n >= 1.0, "{reason} counted");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn the_memory_engine_recovers_its_book_from_durable_reservations_after_a_restart() {
    let app = TestApp::spawn().await;
    let id = sale(&app, 3, 2, -1_000, false).await;
    let a = app.token_for("recovera", Role::User).await;
    let b = app.token_for("recoverb", Role::User).await;
    assert_eq!(buy(&app, &a, &id).await.status(), StatusCode::ACCEPTED);
    assert_eq!(buy(&app, &a, &id).await.status(), StatusCode::ACCEPTED);
    let dir = app.shutdown_keeping_data().await;
    let again = TestApp::start(test_config(dir.path()), dir).await;
    assert_problem(buy(&again, &a, &id).await, StatusCode::CONFLICT, "limit_reached").await;
    assert_eq!(buy(&again, &b, &id).await.status(), StatusCode::ACCEPTED, "the third unit");
    assert_problem(buy(&again, &b, &id).await, StatusCode::CONFLICT, "sold_out").await;
    assert_eq!(taken(&again, &id).await, 3);
    again.shutdown().await;
}

/// A crash after the journal's fsync and before the importer ran: the reservations exist only
/// in the journal. The next start imports them before selling, so nothing accepted is lost and
/// the book counts them.
#[tokio::test]
async fn reservations_only_in_the_memory_journal_survive_a_crash_and_count_in_the_book() {
    use flashback_server::flash_sale::engine::{Engine, MemoryEngine};
    use flashback_store::{FlashReservation, ReservationStatus};
    let app = TestApp::spawn().await;
    let id = sale(&app, 4, 3, -1_000, false).await;
    let buyer = app.token_for("journalonly", Role::User).await;
    let buyer_id = app.state.auth.tokens.verify(&buyer).unwrap().id;
    let dir = app.shutdown_keeping_data().await;

    // The engine alone, without its importer, as a process that dies right after the fsync.
    let options = flashback_store::testing::test_options(None, dir.path().to_owned());
    let store = flashback_store::open(&options).await.unwrap();
    let sale_id = id.parse().unwrap();
    let sale = store.flash_sale(sale_id).await.unwrap().unwrap();
    let engine = MemoryEngine::start(Arc::clone(&store), dir.path(), 0).await.unwrap();
    let mut accepted = Vec::new();
    for n in 0..3 {
        let r = FlashReservation {
            id: 9_000_000_000 + now_ms() * 10 + n,
            sale_id,
            user_id: buyer_id,
            quantity: 1,
            status: ReservationStatus::Reserved,
            order_id: None,
            created_at_ms: now_ms(),
            idempotency_key: None,
        };
        engine.reserve(&sale, r.clone(), now_ms()).await.unwrap();
        accepted.push(r.id);
    }
    let fourth = FlashReservation { id: accepted[0] + 100, ..engine.in_flight(accepted[0]).await.unwrap().unwrap() };
    assert_eq!(
        engine.reserve(&sale, fourth, now_ms()).await,
        Err(flashback_server::flash_sale::engine::Refusal::LimitReached)
    );
    assert_eq!(engine.book(sale_id).await.unwrap(), Some((1, 3)), "1 left, 3 accepted and not yet in the store");
    for r in &accepted {
        assert!(store.flash_reservation(*r).await.unwrap().is_none(), "not imported yet");
        assert_eq!(engine.in_flight(*r).await.unwrap().map(|r| r.status), Some(ReservationStatus::Reserved));
    }
    drop(engine);
    drop(store);

    let again = TestApp::start(test_config(dir.path()), dir).await;
    for r in &accepted {
        let stored = again.state.store.flash_reservation(*r).await.unwrap();
        assert!(stored.is_some(), "reservation {r} was accepted and must survive");
    }
    assert_eq!(taken(&again, &id).await, 3);
    assert_problem(buy(&again, &buyer, &id).await, StatusCode::CONFLICT, "limit_reached").await;
    let other = again.token_for("journalother", Role::User).await;
    assert_eq!(buy(&again, &other, &id).await.status(), StatusCode::ACCEPTED, "the fourth unit");
    assert_problem(buy(&again, &other, &id).await, StatusCode::CONFLICT, "sold_out").await;
    for r in &accepted {
        wait_for_order(&again, &buyer, &r.to_string()).await;
    }
    audit_clean(&again, &id).await;
    again.shutdown().await;
}

/// A journal record the importer cannot store stops the start loudly, every time: it is never
/// skipped (and so never released from the journal) as if it had been imported.
#[tokio::test]
async fn an_unreadable_journal_record_stops_the_start_instead_of_being_skipped() {
    use flashback_server::flash_sale::engine::MemoryEngine;
    use flashback_server::journal::Journal;
    let dir = tempfile::tempdir().unwrap();
    let options = flashback_store::testing::test_options(None, dir.path().to_owned());
    let store = flashback_store::open(&options).await.unwrap();
    {
        let (journal, _) = Journal::open(&dir.path().join("flash-journal"), "test", None, 1 << 20).unwrap().unwrap();
        // id 1, sale 2, buyer 3, quantity 0 (no reservation has that), time 5.
        let record: Vec<u8> = [1i64, 2, 3, 0, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
        journal.append(&record, 1).await.unwrap();
    }
    for _ in 0..2 {
        let started = MemoryEngine::start(Arc::clone(&store), dir.path(), 0).await;
        let e = started.expect_err("an unreadable record must stop the start");
        assert!(format!("{e:#}").contains("quantity 0"), "{e:#}");
    }
}

async fn wait_for_order(app: &TestApp, token: &str, ticket: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let t: Value = app.get_as(&format!("/api/v1/flash-sales/tickets/{ticket}"), token).await.json().await.unwrap();
        if t["status"] == "ordered" {
            return t["order_id"].as_str().unwrap().to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "ticket never ordered: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn audit_clean(app: &TestApp, sale: &str) -> flashback_server::flash_sale::audit::FlashAudit {
    let a = flashback_server::flash_sale::audit::audit(&app.state, sale.parse().unwrap()).await.unwrap();
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    let t = flashback_server::trade::audit::audit(&app.state).await.unwrap();
    assert!(t.violations.is_empty(), "{:?}", t.violations);
    a
}

#[tokio::test]
async fn each_accepted_purchase_becomes_one_order_at_the_sale_price_that_can_be_paid() {
    let app = TestApp::spawn().await;
    let id = sale(&app, 5, 2, -1_000, false).await;
    let buyer = app.token_for("flashpayer", Role::User).await;
    let res = app
        .client
        .post(app.url(&format!("/api/v1/flash-sales/{id}/purchase")))
        .bearer_auth(&buyer)
        .json(&json!({"quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let ticket = res.json::<Value>().await.unwrap()["ticket_id"].as_str().unwrap().to_owned();
    let order_id = wait_for_order(&app, &buyer, &ticket).await;
    let order: Value = app.get_as(&format!("/api/v1/orders/{order_id}"), &buyer).await.json().await.unwrap();
    assert_eq!((order["state"].as_str(), order["total_minor"].as_i64()), (Some("pending_payment"), Some(200)));
    assert_eq!(order["lines"][0]["unit_price_minor"], 100, "the sale price, not the list price");
    // Making orders again (a retry after a crash) finds the same order.
    flashback_server::flash_sale::orders::create_orders_once(&app.state).await.unwrap();
    let mine: Value = app.get_as("/api/v1/orders", &buyer).await.json().await.unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);

    let payment: Value =
        app.post(&format!("/api/v1/orders/{order_id}/payments"), Some(&buyer), &json!({})).await.json().await.unwrap();
    assert_eq!(app.post(payment["pay_url"].as_str().unwrap(), None, &json!({})).await.status(), StatusCode::ACCEPTED);
    let order: Value = app.get_as(&format!("/api/v1/orders/{order_id}"), &buyer).await.json().await.unwrap();
    assert_eq!(order["state"], "paid");
    let a = audit_clean(&app, &id).await;
    assert_eq!((a.ordered, a.queued, a.released), (2, 0, 0));
    app.shutdown().await;
}

async fn expiry_returns_the_unit_to_the_sale(e: FlashEngine) {
    expiry_returns_the_unit_to_the_sale_on(|c| c.flash_sale.engine = e).await;
}

async fn expiry_returns_the_unit_to_the_sale_on(engine: impl FnOnce(&mut Config)) {
    let app = TestApp::spawn_with(|c| {
        engine(c);
        c.trade.payment_timeout = Duration::from_secs(1);
        c.trade.sweep_interval = Duration::from_millis(50);
    })
    .await;
    let id = sale(&app, 1, 1, -1_000, false).await;
    let first = app.token_for("latepayer", Role::User).await;
    let second = app.token_for("nextbuyer", Role::User).await;
    let res = buy(&app, &first, &id).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let ticket = res.json::<Value>().await.unwrap()["ticket_id"].as_str().unwrap().to_owned();
    let order_id = wait_for_order(&app, &first, &ticket).await;
    assert_problem(buy(&app, &second, &id).await, StatusCode::CONFLICT, "sold_out").await;

    // Unpaid, the order expires and its unit goes back to the sale, once.
    let started = std::time::Instant::now();
    loop {
        let t: Value = app.get_as(&format!("/api/v1/flash-sales/tickets/{ticket}"), &first).await.json().await.unwrap();
        if t["status"] == "released" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never released: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let order: Value = app.get_as(&format!("/api/v1/orders/{order_id}"), &first).await.json().await.unwrap();
    assert_eq!(order["state"], "cancelled");
    assert_eq!(buy(&app, &second, &id).await.status(), StatusCode::ACCEPTED, "the unit sells again");
    assert_problem(buy(&app, &first, &id).await, StatusCode::CONFLICT, "sold_out").await;
    flashback_server::trade::outbox::drain(&app.state).await.unwrap();
    let a = audit_clean(&app, &id).await;
    assert_eq!(a.released, 1, "returned exactly once");
    assert_eq!(a.queued + a.ordered, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn an_unpaid_flash_order_expires_and_its_unit_sells_again_on_the_memory_engine() {
    expiry_returns_the_unit_to_the_sale(FlashEngine::Memory).await;
}

#[tokio::test]
async fn an_unpaid_flash_order_expires_and_its_unit_sells_again_on_the_sql_engine() {
    expiry_returns_the_unit_to_the_sale(FlashEngine::Sql).await;
}

#[tokio::test]
async fn an_unpaid_flash_order_expires_and_its_unit_sells_again_on_the_redis_engine() {
    let Some(r) = RedisOnly::get("flash redis engine") else { return };
    expiry_returns_the_unit_to_the_sale_on(|c| r.apply(c)).await;
}

#[tokio::test]
async fn the_redis_engine_keeps_its_book_across_restarts_and_rebuilds_a_lost_one_from_the_store() {
    let Some(r) = RedisOnly::get("flash redis engine") else { return };
    let app = TestApp::spawn_with(|c| r.apply(c)).await;
    let id = sale(&app, 4, 2, -1_000, false).await;
    let a = app.token_for("redisrecovera", Role::User).await;
    let b = app.token_for("redisrecoverb", Role::User).await;
    assert_eq!(buy(&app, &a, &id).await.status(), StatusCode::ACCEPTED);
    assert_eq!(buy(&app, &a, &id).await.status(), StatusCode::ACCEPTED);
    assert_eq!(taken(&app, &id).await, 2);
    let dir = app.shutdown_keeping_data().await;

    let mut config = test_config(dir.path());
    r.apply(&mut config);
    let again = TestApp::start(config.clone(), dir).await;
    assert_problem(buy(&again, &a, &id).await, StatusCode::CONFLICT, "limit_reached").await;
    assert_eq!(buy(&again, &b, &id).await.status(), StatusCode::ACCEPTED, "the third unit");
    assert_eq!(taken(&again, &id).await, 3);

    // Redis loses the book (a flush, a failover without persistence): the next purchase
    // rebuilds it from the recorded reservations, limits included.
    let mut conn = r.conn().await;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:{{flash}}:*:{id}", r.prefix)).query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    assert_problem(buy(&again, &a, &id).await, StatusCode::CONFLICT, "limit_reached").await;
    assert_eq!(buy(&again, &b, &id).await.status(), StatusCode::ACCEPTED, "the fourth unit");
    let c = again.token_for("redisrecoverc", Role::User).await;
    assert_problem(buy(&again, &c, &id).await, StatusCode::CONFLICT, "sold_out").await;
    assert_eq!(taken(&again, &id).await, 4);
    audit_clean(&again, &id).await;
    again.shutdown().await;
}

/// Reservations a consumer read and never acknowledged (it died) are claimed by another
/// consumer of the group and recorded; until then their tickets are answered from Redis.
#[tokio::test]
async fn reservations_left_by_a_dead_importer_are_claimed_and_recorded() {
    use flashback_server::flash_sale::engine::Engine;
    use flashback_server::flash_sale::redis_engine::{GROUP, RedisEngine};
    use flashback_store::{FlashReservation, ReservationStatus};

    let Some(r) = RedisOnly::get("flash redis engine") else { return };
    // The app sells nothing here (memory engine, untouched): it provides the store and a sale.
    let app = TestApp::spawn().await;
    let id = sale(&app, 5, 1, -1_000, false).await;
    let sale = app.state.store.flash_sale(id.parse().unwrap()).await.unwrap().unwrap();
    let handle = flashback_infra::RedisHandle::connect(&r.url, &r.prefix, Duration::from_secs(2), Default::default())
        .await
        .unwrap();
    let engine = RedisEngine::new(handle.clone(), Arc::clone(&app.state.store), 41).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let buyer = app.token_for(&format!("claimed{i}"), Role::User).await;
        let user = app.state.auth.tokens.verify(&buyer).expect("valid token").id;
        let reservation = FlashReservation {
            id: app.state.ids.write_ids().event,
            sale_id: sale.id,
            user_id: user,
            quantity: 1,
            status: ReservationStatus::Reserved,
            order_id: None,
            created_at_ms: now_ms(),
            idempotency_key: None,
        };
        engine.reserve(&sale, reservation.clone(), now_ms()).await.unwrap();
        ids.push(reservation.id);
    }
    // A consumer reads them and dies without acknowledging.
    let mut conn = r.conn().await;
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("node-63")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(handle.key("{flash}:stream"))
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(read.keys[0].ids.len(), 3, "the dead consumer holds all three");
    let queued = engine.in_flight(ids[0]).await.unwrap().expect("answered from redis meanwhile");
    assert_eq!((queued.sale_id, queued.quantity), (sale.id, 1));
    assert!(app.state.store.flash_reservation(ids[0]).await.unwrap().is_none());

    // A live importer (another node) claims them once they have been idle long enough.
    let stop = tokio_util::sync::CancellationToken::new();
    let live = RedisEngine::new(handle, Arc::clone(&app.state.store), 42).await.unwrap();
    let tasks = Arc::clone(&live).background(stop.clone());
    let started = std::time::Instant::now();
    for rid in &ids {
        while app.state.store.flash_reservation(*rid).await.unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(20), "reservation {rid} never claimed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(engine.in_flight(ids[0]).await.unwrap().is_none(), "no longer in flight once recorded");
    assert_eq!(live.book(sale.id).await.unwrap(), Some((2, 0)), "2 left, none in flight");
    app.shutdown().await;
}

/// The cluster-wide global rate is one budget shared through Redis: two instances together
/// admit no more than one would.
#[tokio::test]
async fn the_cluster_wide_rate_is_shared_by_every_instance() {
    let Some(r) = RedisOnly::get("flash cluster limits") else { return };
    let tweak = |c: &mut Config| {
        c.cache.redis_url = Some(secrecy::SecretString::from(r.url.clone()));
        c.cache.redis_prefix = r.prefix.clone();
        c.flash_sale.per_user_per_sec = 10_000;
        c.flash_sale.cluster_global_per_sec = 4;
        c.flash_sale.cluster_per_sale_per_sec = 0;
    };
    let apps = [TestApp::spawn_with(tweak).await, TestApp::spawn_with(tweak).await];
    let mut targets = Vec::new();
    for app in &apps {
        let id = sale(app, 100, 100, -1_000, false).await;
        targets.push((app, id, app.token_for("clusterbuyer", Role::User).await));
    }
    let started = std::time::Instant::now();
    let (mut admitted, mut limited) = (0u32, 0u32);
    for _ in 0..10 {
        for (app, id, token) in &targets {
            let res = buy(app, token, id).await;
            if res.status() == StatusCode::TOO_MANY_REQUESTS {
                assert!(res.headers().contains_key("retry-after"));
                limited += 1;
            } else {
                assert_eq!(res.status(), StatusCode::ACCEPTED);
                admitted += 1;
            }
        }
    }
    // A burst of 4, then 4 a second, across both instances together.
    let budget = 4 + 4 * u32::try_from(started.elapsed().as_secs()).unwrap() + 4;
    assert!(admitted >= 4, "the burst is admitted: {admitted}");
    assert!(admitted <= budget, "{admitted} admitted, over the shared budget {budget}");
    let mut counted = 0.0;
    for app in &apps {
        counted += app.metric(r#"flashback_flash_admission_total{reason="rate_cluster"}"#).await;
    }
    assert_eq!(counted, f64::from(limited));
    assert!(limited > 0);
}
