//! Behaviour tracking scaled out: the Redis stream and the RabbitMQ queue between the endpoint
//! and the writer, with the tracking store on MariaDB. For each queue: what goes in comes out
//! (PV exact), a repeated batch counts once, two instances sharing the queue and the store
//! count each event once, a restart loses nothing, and a full queue answers 503 + Retry-After.
//!
//! Needs `FLASHBACK_TEST_MYSQL_URL`, `FLASHBACK_TEST_REDIS_URL` and (for RabbitMQ)
//! `FLASHBACK_TEST_AMQP_URL`; says `SKIPPED:` otherwise. Every test has its own database,
//! Redis prefix and queue names, all deleted at the end.

use std::net::SocketAddr;
use std::time::Duration;

use flashback_core::{Day, Role};
use flashback_server::config::Config;
use flashback_server::track::QueueKind;
use flashback_server::{AppState, app};
use flashback_store::track::TrackEvent;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{AMQP_URL_VAR, Backends, TestApp, assert_problem};

const SUITE: &str = "tracking queues (MariaDB + Redis/RabbitMQ)";

/// Backends for one test, with the queue of the kind under test.
struct Scaled {
    b: Backends,
    kind: QueueKind,
}

impl Scaled {
    async fn get(kind: QueueKind) -> Option<Self> {
        let b = Backends::get(SUITE).await?;
        if kind == QueueKind::Rabbitmq && b.amqp_url.is_none() {
            flashback_store::testing::note_skipped("tracking queue on RabbitMQ", AMQP_URL_VAR);
            return None;
        }
        Some(Self { b, kind })
    }

    fn config(&self, dir: &std::path::Path) -> Config {
        let mut c = match self.kind {
            QueueKind::Rabbitmq => self.b.config_with_bus(dir),
            _ => self.b.config(dir),
        };
        c.track.queue = self.kind;
        c
    }

    async fn app(&self) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = self.config(dir.path());
        TestApp::start(config, dir).await
    }
}

impl Drop for Scaled {
    /// Deletes the broker's queues and exchanges of this test, also when it failed (Redis keys
    /// and the databases go when `Backends` drops). Drop cannot await inside the test's
    /// runtime, so this runs on a thread with a runtime of its own.
    fn drop(&mut self) {
        let (QueueKind::Rabbitmq, Some(url)) = (self.kind, self.b.amqp_url.clone()) else { return };
        let prefix = self.b.redis_prefix.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let bus = flashback_infra::RabbitBus::connect(&url, &prefix).await.ok()?;
                let deleted = bus.delete_topology(&["track", "stock", "points", "rebates"]).await;
                let _ = bus.close().await;
                deleted.ok()
            })
        });
        let _ = done.join();
    }
}

fn today() -> String {
    Day::of(flashback_server::trade::now_ms(), 0).to_string()
}

/// `n` views of object `object`, each with an id of its own, by `n / 2` visitors.
fn views(n: usize, object: u32) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"event_id": uuid::Uuid::new_v4().to_string(), "anonymous_id": format!("device-{}", i / 2),
                   "module": "home", "action": "view", "object_type": "sku", "object_id": object.to_string()})
        })
        .collect()
}

async fn post(client: &reqwest::Client, addr: SocketAddr, events: &[Value]) -> reqwest::Response {
    client.post(format!("http://{addr}/api/v1/track")).json(&json!({ "events": events })).send().await.expect("send")
}

async fn accepted(app: &TestApp, events: &[Value]) {
    let res = post(&app.client, app.addr, events).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// Waits until the store holds exactly `n` events and the queue is empty.
async fn drained(app: &TestApp, n: i64) {
    let mut last = (0, u64::MAX);
    for _ in 0..500 {
        let stored = app.state.track.store.stored_events().await.expect("count");
        let backlog = app.state.track.queue.backlog().await.expect("backlog");
        assert!(stored <= n, "stored {stored} events, more than the {n} sent");
        if stored == n && backlog == 0 {
            return;
        }
        last = (stored, backlog);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not drained: {} of {n} events stored, backlog {}", last.0, last.1);
}

async fn pv(app: &TestApp, admin: &str, object: u32) -> i64 {
    let d = today();
    let query = format!("from={d}&to={d}&action=view&object_type=sku&object_id={object}");
    let res = app.get_as(&format!("/api/v1/track/stats?{query}"), admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    body["pv"].as_i64().expect("pv")
}

/// Events as the endpoint would queue them, for pushing straight onto the queue.
fn queued(n: usize, object: u32) -> Vec<TrackEvent> {
    let now = flashback_server::trade::now_ms();
    (0..n)
        .map(|i| TrackEvent {
            id: uuid::Uuid::new_v4().as_u128(),
            ts_ms: now,
            received_ms: now,
            user_id: None,
            visitor: format!("a:device-{i}"),
            module: "home".into(),
            action: "view".into(),
            object_type: "sku".into(),
            object_id: object.to_string(),
            properties: None,
        })
        .collect()
}

async fn counts_go_in_and_come_out_and_a_repeated_batch_counts_once(kind: QueueKind) {
    let Some(s) = Scaled::get(kind).await else { return };
    let app = s.app().await;
    assert_eq!(app.state.track.queue.kind(), if kind == QueueKind::Redis { "redis" } else { "rabbitmq" });
    let admin = app.token_for("admin", Role::Admin).await;
    let all = views(2_500, 1);
    for chunk in all.chunks(500) {
        accepted(&app, chunk).await;
    }
    // The same batch posted again: the ingest window drops it as repeats.
    accepted(&app, &all[..500]).await;
    // The same batch queued twice (a retry after a lost reply, a redelivery): the store
    // drops the ids it holds.
    let batch = queued(300, 2);
    app.state.track.queue.push(&batch).await.expect("push");
    app.state.track.queue.push(&batch).await.expect("push again");
    drained(&app, 2_800).await;
    assert_eq!(pv(&app, &admin, 1).await, 2_500);
    assert_eq!(pv(&app, &admin, 2).await, 300);
    app.shutdown().await;
}

async fn two_instances_sharing_the_queue_and_the_store_count_each_event_once(kind: QueueKind) {
    let Some(s) = Scaled::get(kind).await else { return };
    let (one, two) = (s.app().await, s.app().await);
    let admin = one.token_for("admin", Role::Admin).await;
    let all = views(4_000, 3);
    let (first, second) = all.split_at(2_000);
    // Both at once, each posting its half; then each posts a batch the other already sent.
    let send = |app: &TestApp, events: &[Value]| {
        let (client, addr) = (app.client.clone(), app.addr);
        let events = events.to_vec();
        tokio::spawn(async move {
            for chunk in events.chunks(250) {
                let res = post(&client, addr, chunk).await;
                assert_eq!(res.status(), StatusCode::ACCEPTED);
            }
        })
    };
    let (a, b) = (send(&one, first), send(&two, second));
    a.await.expect("instance one");
    b.await.expect("instance two");
    accepted(&one, &second[..250]).await;
    accepted(&two, &first[..250]).await;
    drained(&one, 4_000).await;
    drained(&two, 4_000).await;
    assert_eq!(pv(&one, &admin, 3).await, 4_000);
    assert_eq!(pv(&two, &admin, 3).await, 4_000);
    one.shutdown().await;
    two.shutdown().await;
}

async fn a_restart_loses_nothing(kind: QueueKind) {
    let Some(s) = Scaled::get(kind).await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = s.config(dir.path());
    // An instance whose writer took a batch and died before its store commit: pulled, never
    // acknowledged, then the whole instance gone.
    let (addr, state, server) = writerless(config.clone()).await;
    let client = reqwest::Client::new();
    let all = views(4_000, 4);
    for chunk in all[..3_000].chunks(500) {
        assert_eq!(post(&client, addr, chunk).await.status(), StatusCode::ACCEPTED);
    }
    let held = state.track.queue.pull(1_000, Duration::from_secs(1)).await.expect("pull").expect("a batch");
    assert!(!held.events.is_empty());
    stop(server, state).await;
    // Started again on the same data directory: it takes the abandoned batch back at once.
    let app = TestApp::start(config.clone(), dir).await;
    let admin = app.token_for("admin", Role::Admin).await;
    drained(&app, 3_000).await;
    // Stopped at once after more arrive: the writer may be mid-way; nothing is lost.
    for chunk in all[3_000..].chunks(500) {
        accepted(&app, chunk).await;
    }
    let dir = app.shutdown_keeping_data().await;
    let app = TestApp::start(config, dir).await;
    drained(&app, 4_000).await;
    assert_eq!(pv(&app, &admin, 4).await, 4_000);
    app.shutdown().await;
}

/// Ends a writerless instance abruptly: its server task, background work and connections.
async fn stop(server: tokio::task::JoinHandle<()>, state: AppState) {
    server.abort();
    let _ = server.await;
    state.shutdown.cancel();
    drop(state);
}

/// An instance serving the API with no writer running, so its queue only fills.
async fn writerless(config: Config) -> (SocketAddr, AppState, tokio::task::JoinHandle<()>) {
    let state = AppState::build(config).await.expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = app::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, service).await;
    });
    (addr, state, task)
}

async fn a_full_queue_answers_503_with_retry_after(kind: QueueKind) {
    let Some(s) = Scaled::get(kind).await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = s.config(dir.path());
    // Room for 20 events: two batches of 10 (for RabbitMQ, x-max-length 20 / 10 = 2 messages).
    config.track.max_backlog_events = 20;
    config.track.max_batch_events = 10;
    config.track.writer_batch_events = 10;
    let (addr, state, server) = writerless(config.clone()).await;
    let client = reqwest::Client::new();
    let all = views(30, 5);
    for chunk in all[..20].chunks(10) {
        assert_eq!(post(&client, addr, chunk).await.status(), StatusCode::ACCEPTED);
    }
    assert_eq!(state.track.queue.backlog().await.expect("backlog"), 20);
    let full = post(&client, addr, &all[20..]).await;
    assert_eq!(full.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("2"));
    assert_problem(full, StatusCode::SERVICE_UNAVAILABLE, "queue_full").await;
    stop(server, state).await;

    // A writer drains what was accepted (and only that); then there is room again.
    let app = TestApp::start(config, dir).await;
    let admin = app.token_for("admin", Role::Admin).await;
    drained(&app, 20).await;
    assert_eq!(pv(&app, &admin, 5).await, 20);
    accepted(&app, &all[20..]).await;
    drained(&app, 30).await;
    assert_eq!(pv(&app, &admin, 5).await, 30);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_counts_go_in_and_come_out_and_a_repeated_batch_counts_once() {
    counts_go_in_and_come_out_and_a_repeated_batch_counts_once(QueueKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_counts_go_in_and_come_out_and_a_repeated_batch_counts_once() {
    counts_go_in_and_come_out_and_a_repeated_batch_counts_once(QueueKind::Rabbitmq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_two_instances_sharing_the_queue_and_the_store_count_each_event_once() {
    two_instances_sharing_the_queue_and_the_store_count_each_event_once(QueueKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_two_instances_sharing_the_queue_and_the_store_count_each_event_once() {
    two_instances_sharing_the_queue_and_the_store_count_each_event_once(QueueKind::Rabbitmq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_restart_loses_nothing() {
    a_restart_loses_nothing(QueueKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_a_restart_loses_nothing() {
    a_restart_loses_nothing(QueueKind::Rabbitmq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_full_queue_answers_503_with_retry_after() {
    a_full_queue_answers_503_with_retry_after(QueueKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_a_full_queue_answers_503_with_retry_after() {
    a_full_queue_answers_503_with_retry_after(QueueKind::Rabbitmq).await;
}
