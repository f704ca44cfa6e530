//! Node numbers leased from the store: instances need no `node_id`, a configured one waits
//! out a crashed predecessor's lease, and an instance whose number was taken stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flashback_server::node::{RENEW_EVERY, TTL};
use flashback_store::Store;
use serde_json::Value;

use crate::helpers::{TestApp, test_config};

/// The embedded store in `dir`, opened beside (or after) an instance.
async fn open_store(dir: &std::path::Path) -> Arc<dyn Store> {
    flashback_store::open(&flashback_store::StoreOptions {
        url: None,
        data_dir: dir.to_owned(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        breaker: flashback_core::breaker::BreakerSettings::default(),
    })
    .await
    .expect("store opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_leases_a_node_number_and_gives_it_back_at_stop() {
    let app = TestApp::spawn().await;
    let node = app.state.node.node();
    let held = app.state.store.node_holder(node).await.unwrap().expect("leased");
    assert_eq!(held.holder, app.state.instance);
    assert!(held.remaining_ms > 0 && held.remaining_ms <= i64::try_from(TTL.as_millis()).unwrap(), "{held:?}");
    let body: Value = app.get("/readyz").await.json().await.unwrap();
    let check = body["checks"].as_array().unwrap().iter().find(|c| c["name"] == "node_lease").cloned();
    let check = check.unwrap_or_else(|| panic!("no node_lease check: {body}"));
    assert_eq!((check["status"].as_str(), check["critical"].as_bool()), (Some("up"), Some(true)), "{body}");

    let instance = app.state.instance.clone();
    let dir = app.shutdown_keeping_data().await;
    let store = open_store(dir.path()).await;
    let after = store.node_holder(node).await.unwrap().expect("row");
    assert_eq!(after.holder, instance);
    assert!(after.remaining_ms <= 0, "given back at stop: {after:?}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_node_id_waits_for_a_crashed_predecessors_lease_to_expire() {
    let dir = tempfile::tempdir().unwrap();
    // A run that crashed holding node 7: its lease runs out by itself 1.5 s from now.
    let store = open_store(dir.path()).await;
    assert!(store.lease_node(7, "crashed-run", 1_500).await.unwrap());
    store.close().await;

    let mut config = test_config(dir.path());
    config.node_id = Some(7);
    let app = TestApp::start(config, dir).await;
    assert_eq!(app.state.node.node(), 7);
    let held = app.state.store.node_holder(7).await.unwrap().expect("leased");
    assert_eq!(held.holder, app.state.instance, "taken over once expired");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_node_number_was_taken_stops_with_an_error() {
    let app = TestApp::spawn().await;
    let (node, state) = (app.state.node.node(), app.state.clone());
    // What another instance would do once this one's lease had expired unrenewed.
    state.store.release_node(node, &state.instance).await.unwrap();
    assert!(state.store.lease_node(node, "intruder", 60_000).await.unwrap());

    let started = Instant::now();
    while !state.node.lost().is_cancelled() {
        assert!(started.elapsed() < RENEW_EVERY * 3, "the instance did not notice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!state.node.is_held());
    let (served, dir) = app.stopped_by_itself(Duration::from_secs(10)).await;
    let err = served.expect_err("stopping so is an error");
    assert!(err.to_string().contains("node number"), "{err}");
    // It did not give back what is no longer its own.
    let store = open_store(dir.path()).await;
    assert_eq!(store.node_holder(node).await.unwrap().expect("row").holder, "intruder");
    store.close().await;
}
