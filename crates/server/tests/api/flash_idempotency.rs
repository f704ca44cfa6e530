//! `Idempotency-Key` on flash purchases, on every engine: a retry with the same key gets the
//! same ticket (202, same id) — after the sale sold out, after a restart, from another instance
//! sharing the backend — and takes nothing; the same key with another sale or quantity is 422;
//! racing retries of one key make one reservation; a purchase without a key is unchanged.

use std::sync::Arc;

use flashback_core::Role;
use flashback_server::config::{Config, FlashEngine};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backends, RedisOnly, TestApp, assert_problem, test_config};

fn now_ms() -> i64 {
    flashback_server::trade::now_ms()
}

/// A sale of `stock` units, `limit` per buyer, open now; the merchant's token too.
async fn sale(app: &TestApp, stock: i64, limit: i64) -> String {
    let tag = now_ms() % 1_000_000_000;
    let m = app.token_for(&format!("idm{tag}"), Role::Merchant).await;
    let cat = app.category(&format!("Keyed {tag}")).await;
    let p = app.product(&m, &cat, "KEYED", 100).await;
    let body = json!({
        "product_id": p["id"], "sale_price_minor": 100, "stock": stock, "per_user_limit": limit,
        "starts_at": now_ms() - 1_000, "ends_at": now_ms() + 600_000
    });
    let res = app.post("/api/v1/flash-sales", Some(&m), &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn buy(app: &TestApp, token: &str, sale: &str, key: Option<&str>, quantity: i64) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(&format!("/api/v1/flash-sales/{sale}/purchase")))
        .bearer_auth(token)
        .json(&json!({ "quantity": quantity }));
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.unwrap()
}

/// A 202 answer's ticket id, and whether it was a replay.
async fn ticket(res: reqwest::Response) -> (String, bool) {
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let replayed = res.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    let body: Value = res.json().await.unwrap();
    assert!(matches!(body["status"].as_str(), Some("queued" | "ordered")), "{body}");
    (body["ticket_id"].as_str().unwrap().to_owned(), replayed)
}

/// Units of the sale held by recorded reservations, once the engine has recorded them all.
async fn taken(app: &TestApp, sale: &str) -> i64 {
    let id = sale.parse().unwrap();
    let started = std::time::Instant::now();
    while app.state.flash.engine.book(id).await.unwrap().is_some_and(|(_, in_flight)| in_flight > 0) {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "reservations never recorded");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    app.state.store.sale_taken_units(id).await.unwrap()
}

/// The scenario on one engine. Returns the sale, the buyer and the key's ticket, to be checked
/// again after a restart or on another instance.
async fn a_key_buys_once(app: &TestApp) -> (String, String, String) {
    let id = sale(app, 3, 1).await;
    let other = sale(app, 3, 1).await;
    let buyer = app.token_for(&format!("keyer{}", now_ms() % 1_000_000_000), Role::User).await;
    let (first, replayed) = ticket(buy(app, &buyer, &id, Some("buy-1"), 1).await).await;
    assert!(!replayed);
    let (again, replayed) = ticket(buy(app, &buyer, &id, Some("buy-1"), 1).await).await;
    assert_eq!((again.as_str(), replayed), (first.as_str(), true), "the same ticket, said to be a replay");
    // Without a key nothing changed: the buyer is at the limit.
    assert_problem(buy(app, &buyer, &id, None, 1).await, StatusCode::CONFLICT, "limit_reached").await;
    // The same key for another sale or another quantity is not a retry.
    assert_problem(
        buy(app, &buyer, &other, Some("buy-1"), 1).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert_problem(
        buy(app, &buyer, &id, Some("buy-1"), 2).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert_problem(
        buy(app, &buyer, &id, Some("has space"), 1).await,
        StatusCode::BAD_REQUEST,
        "invalid_idempotency_key",
    )
    .await;

    // Racing retries of a fresh key by another buyer: one reservation, every 202 names it.
    let racer = app.token_for(&format!("racer{}", now_ms() % 1_000_000_000), Role::User).await;
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (client, url, racer) =
                (app.client.clone(), app.url(&format!("/api/v1/flash-sales/{id}/purchase")), racer.clone());
            tokio::spawn(async move {
                client.post(url).bearer_auth(racer).header("idempotency-key", "race-1").send().await.unwrap()
            })
        })
        .collect();
    let mut tickets = Vec::new();
    for t in tasks {
        let res = t.await.unwrap();
        match res.status() {
            StatusCode::ACCEPTED => tickets.push(res.json::<Value>().await.unwrap()["ticket_id"].clone()),
            // The same key's purchase was being made at that moment: retry (nothing taken).
            StatusCode::CONFLICT => {
                assert_problem(res, StatusCode::CONFLICT, "purchase_in_progress").await;
            }
            other => panic!("unexpected {other}: {}", res.text().await.unwrap()),
        }
    }
    assert!(!tickets.is_empty() && tickets.iter().all(|t| *t == tickets[0]), "{tickets:?}");
    let (after_race, _) = ticket(buy(app, &racer, &id, Some("race-1"), 1).await).await;
    assert_eq!(Value::String(after_race), tickets[0]);

    // Sold out now (3 units: buyer, racer, one more): a retry of the key still gets its ticket.
    let last = app.token_for(&format!("last{}", now_ms() % 1_000_000_000), Role::User).await;
    ticket(buy(app, &last, &id, None, 1).await).await;
    assert_problem(
        buy(app, &app.token_for(&format!("late{}", now_ms() % 1_000_000_000), Role::User).await, &id, None, 1).await,
        StatusCode::CONFLICT,
        "sold_out",
    )
    .await;
    let (sold_out_retry, replayed) = ticket(buy(app, &buyer, &id, Some("buy-1"), 1).await).await;
    assert_eq!((sold_out_retry.as_str(), replayed), (first.as_str(), true));
    assert_eq!(taken(app, &id).await, 3, "retries took nothing");
    let stored = app.state.store.flash_reservation(first.parse().unwrap()).await.unwrap().expect("recorded");
    assert_eq!(stored.idempotency_key.as_deref(), Some("buy-1"), "the key is recorded with its reservation");
    (id, buyer, first)
}

async fn replays(app: &TestApp, (sale, buyer, first): &(String, String, String)) {
    let (again, replayed) = ticket(buy(app, buyer, sale, Some("buy-1"), 1).await).await;
    assert_eq!((&again, replayed), (first, true));
}

/// A buyer here retries more often than the funnel's per-buyer rate allows by default.
fn tuned(c: &mut Config) {
    c.flash_sale.per_user_per_sec = 1_000;
}

fn engine(e: FlashEngine) -> impl FnOnce(&mut Config) {
    move |c| {
        tuned(c);
        c.flash_sale.engine = e;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_purchase_is_made_once_on_the_memory_engine_and_replayed_after_a_restart() {
    let app = TestApp::spawn_with(engine(FlashEngine::Memory)).await;
    // The header is in the API's own description of the route.
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let params = &doc["paths"]["/api/v1/flash-sales/{id}/purchase"]["post"]["parameters"];
    let key = params.as_array().unwrap().iter().find(|p| p["name"] == "Idempotency-Key").expect("documented");
    assert_eq!((key["in"].as_str(), key["required"].as_bool()), (Some("header"), Some(false)));
    let done = a_key_buys_once(&app).await;
    let dir = app.shutdown_keeping_data().await;
    let mut config = test_config(dir.path());
    tuned(&mut config);
    let again = TestApp::start(config, dir).await;
    replays(&again, &done).await;
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_purchase_is_made_once_on_the_sql_engine_and_replayed_after_a_restart() {
    let app = TestApp::spawn_with(engine(FlashEngine::Sql)).await;
    let done = a_key_buys_once(&app).await;
    let dir = app.shutdown_keeping_data().await;
    let mut config = test_config(dir.path());
    engine(FlashEngine::Sql)(&mut config);
    let again = TestApp::start(config, dir).await;
    replays(&again, &done).await;
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_purchase_is_made_once_on_the_redis_engine_and_replayed_after_a_restart() {
    let Some(r) = RedisOnly::get("flash idempotency on redis") else { return };
    let app = TestApp::spawn_with(|c| {
        tuned(c);
        r.apply(c);
    })
    .await;
    let done = a_key_buys_once(&app).await;
    // Redis keeps the key until a day after the sale ends, no longer.
    let mut conn = r.conn().await;
    let user = app.state.auth.tokens.verify(&done.1).unwrap().id;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}:{{flash}}:idem:{user}:buy-1", r.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 600_000 + 24 * 3600 * 1000, "{ttl}");
    let dir = app.shutdown_keeping_data().await;
    let mut config = test_config(dir.path());
    tuned(&mut config);
    r.apply(&mut config);
    let again = TestApp::start(config, dir).await;
    replays(&again, &done).await;
    again.shutdown().await;
}

/// A key written only to the memory engine's journal (the process died before its importer
/// ran) is back after the restart: the record carried it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_only_in_the_memory_journal_survives_a_crash() {
    use flashback_server::flash_sale::engine::{Engine, MemoryEngine, Reserved};
    use flashback_store::{FlashReservation, ReservationStatus};
    let app = TestApp::spawn().await;
    let id = sale(&app, 2, 1).await;
    let buyer = app.token_for("journalkey", Role::User).await;
    let buyer_id = app.state.auth.tokens.verify(&buyer).unwrap().id;
    let dir = app.shutdown_keeping_data().await;

    let options = flashback_store::testing::test_options(None, dir.path().to_owned());
    let store = flashback_store::open(&options).await.unwrap();
    let sale_id = id.parse().unwrap();
    let sale = store.flash_sale(sale_id).await.unwrap().unwrap();
    let engine = MemoryEngine::start(Arc::clone(&store), dir.path(), 0).await.unwrap();
    let r = FlashReservation {
        id: 9_100_000_000 + now_ms(),
        sale_id,
        user_id: buyer_id,
        quantity: 1,
        status: ReservationStatus::Reserved,
        order_id: None,
        created_at_ms: now_ms(),
        idempotency_key: Some("journal-1".into()),
    };
    assert_eq!(engine.reserve(&sale, r.clone(), now_ms()).await, Ok(Reserved::New));
    let again = FlashReservation { id: r.id + 1, ..r.clone() };
    assert_eq!(engine.reserve(&sale, again, now_ms()).await, Ok(Reserved::Earlier(r.clone())), "held in memory");
    assert!(store.flash_reservation(r.id).await.unwrap().is_none(), "not imported");
    drop(engine);
    drop(store);

    let app = TestApp::start(test_config(dir.path()), dir).await;
    let (t, replayed) = ticket(buy(&app, &buyer, &id, Some("journal-1"), 1).await).await;
    assert_eq!((t, replayed), (r.id.to_string(), true));
    assert_eq!(taken(&app, &id).await, 1);
    app.shutdown().await;
}

async fn on_another_instance(b: &Backends, tweak: impl Fn(&mut Config)) {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut c1, mut c2) = (b.config(d1.path()), b.config(d2.path()));
    for c in [&mut c1, &mut c2] {
        tuned(c);
        tweak(c);
    }
    let one = TestApp::start(c1, d1).await;
    let two = TestApp::start(c2, d2).await;
    let done = a_key_buys_once(&one).await;
    replays(&two, &done).await;
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_purchase_is_replayed_by_another_instance_on_the_sql_engine() {
    let Some(b) = Backends::get("flash idempotency across instances (sql)").await else { return };
    on_another_instance(&b, |c| c.flash_sale.engine = FlashEngine::Sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_purchase_is_replayed_by_another_instance_on_the_redis_engine() {
    let Some(b) = Backends::get("flash idempotency across instances (redis)").await else { return };
    on_another_instance(&b, |c| c.flash_sale.engine = FlashEngine::Redis).await;
}
