//! The server protecting itself: load shedding, request timeouts, body limits and a graceful
//! shutdown that finishes requests in flight.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_problem};

/// Makes every login cost real CPU time (argon2 with 32 MiB), to hold requests in flight.
fn slow_hashing(c: &mut flashback_server::Config) {
    c.auth.argon2_memory_kib = 32 * 1024;
    c.auth.argon2_iterations = 3;
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_shed_with_503_and_retry_after() {
    let app = Arc::new(
        TestApp::spawn_with(|c| {
            slow_hashing(c);
            c.http.max_concurrency = 1;
        })
        .await,
    );
    let logins: Vec<_> = (0..8)
        .map(|i| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.login(&format!("user{i}"), "some password").await })
        })
        .collect();
    // Probes and metrics are outside the limit: a busy instance is not a dead one.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/metrics").await.status(), StatusCode::OK);
    let mut shed = 0;
    for l in logins {
        let res = l.await.unwrap();
        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(res.headers()["retry-after"], "1");
            assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
            shed += 1;
        } else {
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
    }
    assert!(shed >= 1, "with one slot and eight slow requests at once, some are shed");
    assert_eq!(app.metric(r#"flashback_http_shed_total{reason="overloaded"}"#).await, f64::from(shed));
}

#[tokio::test]
async fn a_request_that_runs_too_long_is_answered_503() {
    let app = TestApp::spawn_with(|c| {
        slow_hashing(c);
        c.http.request_timeout = Duration::from_millis(5);
    })
    .await;
    assert_problem(app.login("slowpoke", "some password").await, StatusCode::SERVICE_UNAVAILABLE, "timeout").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let app = TestApp::spawn_with(|c| c.http.body_limit_bytes = 512).await;
    let body = json!({"username": "biggie", "password": "p".repeat(2048)});
    let res = app.post("/api/v1/auth/register", None, &body).await;
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    app.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_then_stops_listening() {
    let app = TestApp::spawn_with(slow_hashing).await;
    let url = app.url("/api/v1/auth/login");
    let client = app.client.clone();
    let in_flight = tokio::spawn(async move {
        client.post(url).json(&json!({"username": "late", "password": "some password"})).send().await
    });
    // Shut down only once the request is really being handled (the in-flight gauge says so).
    let started = std::time::Instant::now();
    while app.state.metrics.in_flight.get() < 1 {
        assert!(started.elapsed() < Duration::from_secs(10), "the request never arrived");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let addr = app.addr;
    app.shutdown().await;
    let res = in_flight.await.unwrap().expect("the request in flight got its answer");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let after = reqwest::Client::new().get(format!("http://{addr}/healthz")).send().await;
    assert!(after.is_err(), "no longer listening");
}
