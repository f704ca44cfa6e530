use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use flashback_affiliate_sim::{
    DEFAULT_EPOCH_MS, HOUR_MS, OrderRow, PostbackConfig, PostbackStats, SIGNATURE_HEADER, SimOrder,
    verify_postback_signature,
};
use serde_json::Value;

use crate::support::{LATE, spawn, three_hour_config};

const SECRET: &str = "postback-secret";

/// A receiver that refuses every `fail_every`-th request with 503 and records the rest.
#[derive(Default)]
struct Inbox {
    requests: u64,
    fail_every: u64,
    accepted: Vec<(String, Bytes)>,
}

async fn receive(State(inbox): State<Arc<Mutex<Inbox>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut inbox = inbox.lock().unwrap();
    inbox.requests += 1;
    if inbox.fail_every > 0 && inbox.requests % inbox.fail_every == 0 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    inbox.accepted.push((signature, body));
    StatusCode::NO_CONTENT
}

async fn receiver(fail_every: u64) -> (String, Arc<Mutex<Inbox>>, tokio::task::JoinHandle<()>) {
    let inbox = Arc::new(Mutex::new(Inbox { fail_every, ..Inbox::default() }));
    let app = Router::new().route("/postbacks", post(receive)).with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/postbacks"), inbox, task)
}

/// The rows the network should push for events visible by `now_ms`.
fn expected_rows(orders: &[SimOrder], now_ms: i64) -> Vec<(OrderRow, bool)> {
    orders
        .iter()
        .filter(|o| o.postback)
        .flat_map(|o| {
            o.events
                .iter()
                .enumerate()
                .filter(move |(_, e)| e.kind.changes_order_row() && e.visible_at_ms <= now_ms)
                .map(move |(i, e)| (o.row_at_event(i).unwrap(), e.duplicate_postback))
        })
        .collect()
}

fn accepted_rows(inbox: &Mutex<Inbox>) -> Vec<OrderRow> {
    let now_secs =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap();
    inbox
        .lock()
        .unwrap()
        .accepted
        .iter()
        .map(|(signature, body)| {
            verify_postback_signature(SECRET, signature, body, now_secs, 300).expect("signed with the shared secret");
            serde_json::from_slice(body).unwrap()
        })
        .collect()
}

fn key(row: &OrderRow) -> (String, String, u8, u8) {
    (row.trade_id.clone(), row.modified_time.clone(), row.tk_status, row.refund_tag)
}

#[tokio::test]
async fn postbacks_are_signed_retried_delivered_and_sometimes_duplicated() {
    let (url, inbox, receiver_task) = receiver(4).await;
    let mut config = three_hour_config(9, 30, LATE);
    config.postback = Some(PostbackConfig {
        duplicate_share: 0.3,
        initial_backoff: Duration::from_millis(5),
        ..PostbackConfig::new(url, SECRET)
    });
    let sim = spawn(config).await;
    let expected = expected_rows(sim.orders(), LATE);
    let duplicated = expected.iter().filter(|(_, dup)| *dup).count();
    assert!(duplicated > 0);

    let stats: PostbackStats = {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/sim/postbacks/flush", sim.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        PostbackStats {
            delivered: answer["delivered"].as_u64().unwrap(),
            duplicates: answer["duplicates"].as_u64().unwrap(),
            failed: answer["failed"].as_u64().unwrap(),
            attempts: answer["attempts"].as_u64().unwrap(),
            remaining: answer["remaining"].as_u64().unwrap(),
        }
    };
    assert_eq!(stats.delivered, u64::try_from(expected.len()).unwrap());
    assert_eq!(stats.duplicates, u64::try_from(duplicated).unwrap());
    assert_eq!((stats.failed, stats.remaining), (0, 0));
    assert!(stats.attempts > stats.delivered + stats.duplicates, "refused attempts were retried");

    let rows = accepted_rows(&inbox);
    assert_eq!(rows.len(), expected.len() + duplicated);
    let distinct: HashSet<_> = rows.iter().map(key).collect();
    let wanted: HashSet<_> = expected.iter().map(|(row, _)| key(row)).collect();
    assert_eq!(distinct, wanted, "every event once, plus the deliberate duplicates");
    for (row, _) in &expected {
        assert!(rows.contains(row), "the pushed body is the row after its event");
    }

    // Nothing more is due: a second flush sends nothing.
    let again = sim.flush_postbacks().await.unwrap();
    assert_eq!(again.delivered, stats.delivered);
    assert_eq!(inbox.lock().unwrap().accepted.len(), rows.len());
    sim.shutdown().await.unwrap();
    receiver_task.abort();
}

#[tokio::test]
async fn only_due_events_of_chosen_orders_are_pushed_and_the_clock_wakes_the_pusher() {
    let (url, inbox, receiver_task) = receiver(0).await;
    let early = DEFAULT_EPOCH_MS + HOUR_MS;
    let mut config = three_hour_config(10, 40, early);
    config.postback = Some(PostbackConfig { share: 0.5, duplicate_share: 0.0, ..PostbackConfig::new(url, SECRET) });
    let sim = spawn(config).await;
    assert!(sim.orders().iter().any(|o| o.postback) && sim.orders().iter().any(|o| !o.postback));

    sim.flush_postbacks().await.unwrap();
    let due_early: HashSet<_> = expected_rows(sim.orders(), early).iter().map(|(r, _)| key(r)).collect();
    let got: HashSet<_> = accepted_rows(&inbox).iter().map(key).collect();
    assert!(!due_early.is_empty());
    assert_eq!(got, due_early, "only events visible by the network's now");

    // Move the clock without flushing: the background pusher wakes and catches up.
    reqwest::Client::new()
        .post(format!("{}/sim/clock", sim.base_url()))
        .json(&serde_json::json!({"now_ms": LATE}))
        .send()
        .await
        .unwrap();
    let all: HashSet<_> = expected_rows(sim.orders(), LATE).iter().map(|(r, _)| key(r)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got: HashSet<_> = accepted_rows(&inbox).iter().map(key).collect();
        if got == all {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "background pusher did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let chosen: HashSet<String> = sim.orders().iter().filter(|o| o.postback).map(|o| o.trade_id.to_string()).collect();
    assert!(accepted_rows(&inbox).iter().all(|r| chosen.contains(&r.trade_id)));
    sim.shutdown().await.unwrap();
    receiver_task.abort();
}
