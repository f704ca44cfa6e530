//! A stop under load behind nginx (the repository's `deploy/nginx`) costs no request: the
//! stopping instance drains (not ready, `Connection: close` on every answer) before its
//! listener closes, so nginx never sends a request down a connection about to be cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flashback_harness::nginx::{Nginx, repo_deploy_dir};
use serde_json::json;

use crate::helpers::{TestApp, test_config};

/// The default drain, which deploy/nginx's upstream keepalive timeout (4 s) is sized against.
const DRAIN: Duration = Duration::from_secs(5);
const CLIENTS: usize = 6;

async fn instance() -> TestApp {
    let dir = tempfile::tempdir().expect("data directory");
    let mut config = test_config(dir.path());
    config.http.trust_forwarded_for = true;
    config.http.drain_delay = DRAIN;
    TestApp::start(config, dir).await
}

/// Reads, and writes that must not be repeated (registrations without an Idempotency-Key),
/// until `stop`; every answer that is not a success is counted with what it was.
async fn load(base: String, stop: Arc<AtomicBool>, done: Arc<AtomicU64>, errors: Arc<std::sync::Mutex<Vec<String>>>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let mut i = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let res = if i.is_multiple_of(3) {
            let name = format!("d-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            http.post(format!("{base}/api/v1/auth/register"))
                .json(&json!({"username": name, "password": "drain-password"}))
                .send()
                .await
        } else {
            http.get(format!("{base}/api/v1/categories")).send().await
        };
        match res {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => errors.lock().expect("errors").push(format!("status {}", r.status())),
            Err(e) => errors.lock().expect("errors").push(format!("transport: {e}")),
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_an_instance_under_load_behind_nginx_fails_no_request() {
    let (a, b) = (instance().await, instance().await);
    let nginx = Nginx::start(&repo_deploy_dir(), &[a.addr, b.addr]);
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(load(nginx.url(), Arc::clone(&stop), Arc::clone(&done), Arc::clone(&errors))))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = done.load(Ordering::Relaxed);

    // SIGTERM's path: drain, close the listener, finish what is in flight.
    let started = Instant::now();
    a.shutdown().await;
    assert!(started.elapsed() >= DRAIN, "the instance drained before it closed");
    tokio::time::sleep(Duration::from_secs(1)).await; // and a while with one instance left
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let total = done.load(Ordering::Relaxed);
    assert!(before > 0 && total > before + 100, "load went on through the stop: {before} then {total}");
    let errors = errors.lock().expect("errors").clone();
    assert!(
        errors.is_empty(),
        "{} of {total} requests failed: {:?}\n{}",
        errors.len(),
        &errors[..errors.len().min(10)],
        nginx.error_log()
    );
    b.shutdown().await;
}
