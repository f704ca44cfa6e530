//! The redis engine when Redis stalls past `cache.redis_timeout_ms` during a purchase (a
//! private redis-server, put to sleep with `DEBUG SLEEP` on a connection of its own): the
//! reserve call's answer is lost, but Redis runs the queued call once it wakes. The purchase
//! must never be answered 503 if a unit was taken: a 503 is followed by a retry that succeeds,
//! a 202 ticket is real, and a `pending` ticket settles honestly (reserved, or cancelled with
//! nothing taken). Stock plus reservations always add up (the audit).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flashback_core::Role;
use flashback_harness::ports::free_port;
use flashback_harness::process::Proc;
use flashback_harness::watchdog::Watchdog;
use flashback_server::config::{Config, FlashEngine};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{REDIS_URL_VAR, TestApp, assert_problem};

/// A redis-server of this test's own that allows `DEBUG` from loopback.
struct DebugRedis {
    port: u16,
    _proc: Proc,
    _watchdog: Watchdog,
    _dir: tempfile::TempDir,
}

impl DebugRedis {
    fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("flashback-debug-redis-").tempdir().unwrap();
        let home = dir.path().join("redis");
        std::fs::create_dir_all(&home).unwrap();
        let watchdog = Watchdog::spawn(dir.path());
        for _ in 0..3 {
            let port = free_port();
            if let Some(proc) = launch(&home, port) {
                return Self { port, _proc: proc, _watchdog: watchdog, _dir: dir };
            }
        }
        panic!("redis-server with the debug command did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Puts the server to sleep for `secs` from a connection of its own; returns once it is
    /// asleep (give or take a few milliseconds) with the thread that wakes with it.
    fn sleep(&self, secs: f64) -> std::thread::JoinHandle<()> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let sleeper = std::thread::spawn(move || {
            // The reply comes when it wakes (an error only if the server went away meanwhile).
            let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg(secs).query(&mut conn);
        });
        std::thread::sleep(Duration::from_millis(50));
        sleeper
    }
}

fn launch(home: &Path, port: u16) -> Option<Proc> {
    let bin = PathBuf::from("/usr/bin/redis-server");
    let mut command = Command::new(if bin.exists() { bin } else { PathBuf::from("redis-server") });
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .args(["--enable-debug-command", "local", "--set-proc-title", "no"])
        .arg("--dir")
        .arg(home)
        .arg("--logfile")
        .arg(home.join("redis.log"));
    let mut proc = Proc::spawn(command, home).ok()?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"));
        if let Ok(mut c) = client.and_then(|c| c.get_connection())
            && redis::cmd("PING").query::<String>(&mut c).is_ok()
        {
            return Some(proc);
        }
        if proc.exited().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

/// The redis engine on `redis` with a short timeout; nothing else in the way (no cluster-wide
/// rate, a breaker that stays closed, buyers free to retry).
fn on(redis: &DebugRedis, timeout_ms: u64) -> impl FnOnce(&mut Config) {
    let url = redis.url();
    move |c| {
        c.cache.redis_url = Some(SecretString::from(url));
        c.cache.redis_prefix = "indoubt".into();
        c.cache.redis_timeout = Duration::from_millis(timeout_ms);
        c.flash_sale.engine = FlashEngine::Redis;
        c.flash_sale.cluster_global_per_sec = 0;
        c.flash_sale.cluster_per_sale_per_sec = 0;
        c.flash_sale.per_user_per_sec = 1_000;
        c.breaker.failures_to_open = 1_000;
    }
}

fn now_ms() -> i64 {
    flashback_server::trade::now_ms()
}

/// A sale of 5 units, 1 per buyer, with one unit sold (its book and scripts are loaded).
async fn warm_sale(app: &TestApp) -> String {
    let m = app.token_for("doubtshop", Role::Merchant).await;
    let cat = app.category("Doubt").await;
    let p = app.product(&m, &cat, "DOUBT", 100).await;
    let body = json!({"product_id": p["id"], "sale_price_minor": 100, "stock": 5, "per_user_limit": 1,
        "starts_at": now_ms() - 1_000, "ends_at": now_ms() + 600_000});
    let res = app.post("/api/v1/flash-sales", Some(&m), &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let first = app.token_for("doubtfirst", Role::User).await;
    assert_eq!(buy(app, &first, &id, None).await.status(), StatusCode::ACCEPTED);
    id
}

async fn buy(app: &TestApp, token: &str, sale: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = app.client.post(app.url(&format!("/api/v1/flash-sales/{sale}/purchase"))).bearer_auth(token);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.unwrap()
}

/// Reads the ticket until it is no longer pending; its status.
async fn settled(app: &TestApp, token: &str, ticket: &str) -> String {
    let started = Instant::now();
    loop {
        let res = app.get_as(&format!("/api/v1/flash-sales/tickets/{ticket}"), token).await;
        if res.status() == StatusCode::OK {
            let t: Value = res.json().await.unwrap();
            if t["status"] != "pending" {
                return t["status"].as_str().unwrap().to_owned();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the ticket never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Units the sale's book and records account for; the audit finds nothing wrong.
async fn adds_up(app: &TestApp, sale: &str) {
    let started = Instant::now();
    loop {
        let a = flashback_server::flash_sale::audit::audit(&app.state, sale.parse().unwrap()).await.unwrap();
        if a.violations.is_empty() {
            return;
        }
        // Only while a reservation is on its way into the store.
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", a.violations);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the first answer said, checked against what the retry finds.
async fn consistent(app: &TestApp, buyer: &str, sale: &str, first: reqwest::Response, key: Option<&str>) {
    let status = first.status();
    let body: Value = first.json().await.unwrap();
    eprintln!("short stall, key {key:?}: first answer {status} {}", body["status"]);
    let retry = buy(app, buyer, sale, key).await;
    match (status, body["status"].as_str()) {
        (StatusCode::SERVICE_UNAVAILABLE, _) => {
            // Nothing was taken: the retry buys.
            assert_eq!(retry.status(), StatusCode::ACCEPTED, "a 503 took a unit: {body}");
        }
        (StatusCode::ACCEPTED, Some(ticket_status)) => {
            let ticket = body["ticket_id"].as_str().unwrap();
            let outcome =
                if ticket_status == "pending" { settled(app, buyer, ticket).await } else { ticket_status.into() };
            match (outcome.as_str(), key) {
                ("queued" | "ordered", None) => {
                    assert_problem(retry, StatusCode::CONFLICT, "limit_reached").await;
                }
                ("queued" | "ordered", Some(_)) => {
                    assert_eq!(retry.status(), StatusCode::ACCEPTED);
                    assert_eq!(retry.json::<Value>().await.unwrap()["ticket_id"], ticket, "the key's real ticket");
                }
                ("cancelled", _) => {
                    assert_eq!(retry.status(), StatusCode::ACCEPTED, "a cancelled ticket took nothing");
                    assert_ne!(retry.json::<Value>().await.unwrap()["ticket_id"], ticket);
                }
                (other, _) => panic!("ticket settled as {other}"),
            }
        }
        other => panic!("unexpected first answer {other:?}: {body}"),
    }
}

fn configured() -> bool {
    let set = std::env::var(REDIS_URL_VAR).is_ok_and(|v| !v.trim().is_empty());
    if !set {
        flashback_store::testing::note_skipped("flash purchases in doubt", REDIS_URL_VAR);
    }
    set
}

/// A stall longer than the call and its fence together: the answer is a pending ticket, and
/// it settles to what really happened once Redis wakes; with or without a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_lost_in_a_long_stall_is_pending_and_settles_to_what_happened() {
    if !configured() {
        return;
    }
    let redis = DebugRedis::start();
    let app = TestApp::spawn_with(on(&redis, 150)).await;
    let sale = warm_sale(&app).await;
    for key in [None, Some("doubt-key-1")] {
        let buyer = app.token_for(&format!("doubter{}", key.is_some()), Role::User).await;
        let waking = redis.sleep(3.0);
        let first = buy(&app, &buyer, &sale, key).await;
        assert_eq!(first.status(), StatusCode::ACCEPTED, "in doubt is never a 503");
        let body: Value = first.json().await.unwrap();
        assert_eq!(body["status"], "pending", "{body}");
        let pending = body["ticket_id"].as_str().unwrap().to_owned();
        let attempt = app.state.store.flash_attempt(pending.parse().unwrap()).await.unwrap();
        assert!(attempt.is_some(), "a pending ticket is recorded for any instance to settle");
        tokio::task::spawn_blocking(move || waking.join().unwrap()).await.unwrap();
        let outcome = settled(&app, &buyer, &pending).await;
        eprintln!("long stall, key {key:?}: pending settled as {outcome}");
        assert!(matches!(outcome.as_str(), "queued" | "ordered" | "cancelled"), "{outcome}");
        let retry = buy(&app, &buyer, &sale, key).await;
        match (outcome.as_str(), key) {
            ("cancelled", _) => assert_eq!(retry.status(), StatusCode::ACCEPTED, "cancelled: nothing was taken"),
            (_, None) => {
                assert_problem(retry, StatusCode::CONFLICT, "limit_reached").await;
            }
            (_, Some(_)) => {
                let again: Value = retry.json().await.unwrap();
                assert_eq!(again["ticket_id"].as_str(), Some(pending.as_str()), "the key's real ticket: {again}");
            }
        }
        // The settled ticket stays settled.
        assert_eq!(settled(&app, &buyer, &pending).await, outcome);
    }
    adds_up(&app, &sale).await;
    app.shutdown().await;
}

/// A stall a little longer than the call but shorter than its fence's wait: a definite answer
/// (a real ticket, or a 503 after which the retry buys), never 503 then `limit_reached`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_caught_in_a_short_stall_gets_a_definite_answer() {
    if !configured() {
        return;
    }
    let redis = DebugRedis::start();
    let app = TestApp::spawn_with(on(&redis, 200)).await;
    let sale = warm_sale(&app).await;
    for key in [None, Some("short-key-1")] {
        let buyer = app.token_for(&format!("shortstall{}", key.is_some()), Role::User).await;
        let waking = redis.sleep(0.5);
        let first = buy(&app, &buyer, &sale, key).await;
        tokio::task::spawn_blocking(move || waking.join().unwrap()).await.unwrap();
        consistent(&app, &buyer, &sale, first, key).await;
    }
    adds_up(&app, &sale).await;
    app.shutdown().await;
}

/// An attempt Redis refuses (the buyer is at the limit) while its answer is lost in a stall:
/// it never takes anything, whether it is answered `503` (short stall) or `pending` (long
/// stall, then settled as `cancelled`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_attempt_whose_answer_was_lost_is_cancelled_and_takes_nothing() {
    if !configured() {
        return;
    }
    let redis = DebugRedis::start();
    let app = TestApp::spawn_with(on(&redis, 150)).await;
    let sale = warm_sale(&app).await;
    let buyer = app.token_for("doubtlimited", Role::User).await;
    let held = buy(&app, &buyer, &sale, None).await;
    assert_eq!(held.status(), StatusCode::ACCEPTED);
    for stall in [3.0, 0.4] {
        let waking = redis.sleep(stall);
        let first = buy(&app, &buyer, &sale, None).await;
        let (status, body) = (first.status(), first.json::<Value>().await.unwrap());
        tokio::task::spawn_blocking(move || waking.join().unwrap()).await.unwrap();
        eprintln!("refused in a {stall} s stall: first answer {status} {body}");
        match status {
            StatusCode::SERVICE_UNAVAILABLE => assert_eq!(body["code"], "overloaded"),
            StatusCode::ACCEPTED => {
                assert_eq!(body["status"], "pending", "{body}");
                let ticket = body["ticket_id"].as_str().unwrap();
                assert_eq!(settled(&app, &buyer, ticket).await, "cancelled");
            }
            other => panic!("unexpected {other}: {body}"),
        }
        assert_problem(buy(&app, &buyer, &sale, None).await, StatusCode::CONFLICT, "limit_reached").await;
    }
    let audit = flashback_server::flash_sale::audit::audit(&app.state, sale.parse().unwrap()).await.unwrap();
    assert_eq!((audit.queued + audit.ordered, audit.violations.len()), (2, 0), "{:?}", audit.violations);
    app.shutdown().await;
}

/// The fence itself, on the engine: an attempt fenced before it ran refuses itself when it
/// does run and takes nothing; an attempt that reserved stays reserved when fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_attempt_refuses_itself_and_a_reserved_one_stays_reserved() {
    use flashback_server::flash_sale::engine::{Engine, Refusal, Reserved};
    use flashback_server::flash_sale::redis_engine::RedisEngine;
    use flashback_store::{FlashReservation, ReservationStatus};
    use std::sync::Arc;

    let Some(r) = crate::helpers::RedisOnly::get("flash fences") else { return };
    // The app sells nothing here (memory engine, untouched): it provides the store and a sale.
    let app = TestApp::spawn().await;
    let m = app.token_for("fenceshop", Role::Merchant).await;
    let cat = app.category("Fences").await;
    let p = app.product(&m, &cat, "FENCE", 10).await;
    let body = json!({"product_id": p["id"], "sale_price_minor": 100, "stock": 5, "per_user_limit": 1,
        "starts_at": now_ms() - 1_000, "ends_at": now_ms() + 600_000});
    let sale: Value = app.post("/api/v1/flash-sales", Some(&m), &body).await.json().await.unwrap();
    let sale = app.state.store.flash_sale(sale["id"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap();
    let handle = flashback_infra::RedisHandle::connect(&r.url, &r.prefix, Duration::from_secs(2), Default::default())
        .await
        .unwrap();
    let engine = RedisEngine::new(handle, Arc::clone(&app.state.store), 40).await.unwrap();
    let attempt = |user: &str| {
        let user = app.state.auth.tokens.verify(user).unwrap().id;
        FlashReservation {
            id: app.state.ids.write_ids().event,
            sale_id: sale.id,
            user_id: user,
            quantity: 1,
            status: ReservationStatus::Reserved,
            order_id: None,
            created_at_ms: now_ms(),
            idempotency_key: None,
        }
    };
    let late = attempt(&app.token_for("fencedbuyer", Role::User).await);
    assert_eq!(engine.settle(&late).await, Ok(false), "never ran: fenced");
    let ran = engine.reserve(&sale, late.clone(), now_ms()).await;
    assert!(matches!(ran, Err(Refusal::Unavailable(_))), "a fenced attempt refuses itself: {ran:?}");
    assert_eq!(engine.book(sale.id).await.unwrap(), None, "and touched nothing");

    let on_time = attempt(&app.token_for("reservedbuyer", Role::User).await);
    assert_eq!(engine.reserve(&sale, on_time.clone(), now_ms()).await, Ok(Reserved::New));
    assert_eq!(engine.settle(&on_time).await, Ok(true), "it ran: reserved");
    assert_eq!(engine.settle(&on_time).await, Ok(true), "settled again, the same");
    assert_eq!(engine.book(sale.id).await.unwrap(), Some((4, 1)), "the unit stays taken, once");
    // The fenced buyer can still buy, under a new attempt.
    let again = FlashReservation { id: app.state.ids.write_ids().event, ..late };
    assert_eq!(engine.reserve(&sale, again, now_ms()).await, Ok(Reserved::New));
    app.shutdown().await;
}
