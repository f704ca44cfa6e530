use flashback_affiliate_sim::{DEFAULT_EPOCH_MS, SimClock, SimConfig};
use serde_json::{Value, json};

use crate::support::spawn;

#[tokio::test]
async fn the_clock_endpoint_reads_sets_and_advances() {
    let config = SimConfig { orders: 10, time: SimClock::fixed(DEFAULT_EPOCH_MS), ..SimConfig::default() };
    let sim = spawn(config).await;
    let http = reqwest::Client::new();
    let url = format!("{}/sim/clock", sim.base_url());
    let read: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(read, json!({"now_ms": DEFAULT_EPOCH_MS, "now": "2025-06-01 00:00:00", "scale": 0.0}));

    let set: Value =
        http.post(&url).json(&json!({"now_ms": DEFAULT_EPOCH_MS + 1000})).send().await.unwrap().json().await.unwrap();
    assert_eq!(set["now"], "2025-06-01 00:00:01");
    let advanced: Value =
        http.post(&url).json(&json!({"advance_ms": 86_400_000})).send().await.unwrap().json().await.unwrap();
    assert_eq!(advanced["now_ms"], DEFAULT_EPOCH_MS + 1000 + 86_400_000);
    assert_eq!(sim.clock.now_ms(), DEFAULT_EPOCH_MS + 1000 + 86_400_000);

    let both = http.post(&url).json(&json!({"now_ms": 1, "advance_ms": 1})).send().await.unwrap();
    assert_eq!(both.status(), 400);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sim = spawn(SimConfig { orders: 10, ..SimConfig::default() }).await;
    let url = format!("{}/sim/clock", sim.base_url());
    assert!(reqwest::get(&url).await.unwrap().status().is_success());
    sim.shutdown().await.unwrap();
    assert!(reqwest::get(&url).await.is_err(), "nothing listens any more");
}
