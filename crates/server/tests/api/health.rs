//! Liveness, readiness, metrics, the OpenAPI document, request ids and unknown routes.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn a_fresh_embedded_instance_is_live_and_ready() {
    let app = TestApp::spawn().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");

    let res = app.get("/readyz").await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"][0]["name"], "store");
    assert_eq!(body["checks"][0]["detail"], "sqlite");
    assert_eq!(body["checks"][0]["critical"], true);
    let names: Vec<&str> = body["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let all = ["store", "shard-0", "shard-1", "shard-2", "shard-3", "flash_journal", "track_queue", "node_lease"];
    assert_eq!(names, all);
    assert!(body["checks"].as_array().unwrap().iter().all(|c| c["status"] == "up"));
    assert_eq!(body["checks"][1]["critical"], false, "one shard down leaves the others' buyers served");
    assert_eq!(body["checks"][5]["critical"], true, "no other instance can stand in for a local journal");
    app.shutdown().await;
}

/// An instance started on a data directory whose journal `dir` another process holds; the
/// hold lasts as long as the returned journal.
async fn with_journal_held_elsewhere(dir: &str) -> (TestApp, (flashback_server::journal::Journal, u64)) {
    let data = tempfile::tempdir().unwrap();
    let held = flashback_server::journal::Journal::open(&data.path().join(dir), "other", None, 1 << 20)
        .unwrap()
        .expect("free before the app starts");
    (TestApp::start(crate::helpers::test_config(data.path()), data).await, held)
}

/// `/readyz`'s status and its check called `name`.
async fn readiness_check(app: &TestApp, name: &str) -> (StatusCode, Value) {
    let res = app.get("/readyz").await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    let check = body["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).expect("checked").clone();
    (status, check)
}

/// An instance that cannot take its flash journal (another process holds the data directory's
/// journal) sells nothing, and says so: not ready.
#[tokio::test]
async fn an_instance_without_its_flash_journal_is_not_ready() {
    let (app, held) = with_journal_held_elsewhere("flash-journal").await;
    let (status, journal) = readiness_check(&app, "flash_journal").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(journal["status"], "down");
    assert!(journal["detail"].as_str().unwrap().contains("another process"), "{journal}");
    drop(held);
    app.shutdown().await;
}

#[tokio::test]
async fn an_instance_without_its_tracking_queue_is_not_ready() {
    let app = TestApp::spawn().await;
    let (status, queue) = readiness_check(&app, "track_queue").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((queue["status"].as_str(), queue["detail"].as_str()), (Some("up"), Some("local")));
    app.shutdown().await;

    // An instance whose data directory's queue another process holds.
    let (app, held) = with_journal_held_elsewhere("track-queue").await;
    let (status, queue) = readiness_check(&app, "track_queue").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(queue["status"], "down");
    assert!(queue["detail"].as_str().unwrap().contains("another process"), "{queue}");
    drop(held);
    app.shutdown().await;
}

#[tokio::test]
async fn metrics_are_served_as_prometheus_text_with_per_route_counts() {
    let app = TestApp::spawn().await;
    app.get("/healthz").await;
    app.get("/api/v1/products/123").await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = res.text().await.unwrap();
    assert!(text.contains("# TYPE flashback_http_requests counter"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
    assert_eq!(app.metric(r#"flashback_http_requests_total{method="GET",route="/healthz",status="200"}"#).await, 1.0);
    // Routes are labelled by template, never by raw path.
    let by_template = r#"flashback_http_requests_total{method="GET",route="/api/v1/products/{id}",status="404"}"#;
    assert_eq!(app.metric(by_template).await, 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/me", "get"),
        ("/api/v1/categories", "get"),
        ("/api/v1/categories", "post"),
        ("/api/v1/merchants/{id}", "get"),
        ("/api/v1/products", "get"),
        ("/api/v1/products", "post"),
        ("/api/v1/merchant/products", "get"),
        ("/api/v1/products/{id}", "get"),
        ("/api/v1/products/{id}", "patch"),
        ("/api/v1/products/{id}/status", "put"),
        ("/api/v1/products/{id}/inventory", "put"),
        ("/api/v1/products/{id}/inventory/adjustments", "post"),
        ("/api/v1/orders", "post"),
        ("/api/v1/orders", "get"),
        ("/api/v1/orders/{id}", "get"),
        ("/api/v1/orders/{id}/cancel", "post"),
        ("/api/v1/orders/{id}/ship", "post"),
        ("/api/v1/orders/{id}/complete", "post"),
        ("/api/v1/orders/{id}/refund", "post"),
        ("/api/v1/orders/{id}/payments", "post"),
        ("/api/v1/payments/notify", "post"),
        ("/api/v1/merchant/orders", "get"),
        ("/api/v1/admin/orders", "get"),
        ("/api/v1/me/points", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is documented");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    app.shutdown().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_given_one_is_kept() {
    let app = TestApp::spawn().await;
    let res = app.get("/healthz").await;
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let res = app.client.get(app.url("/nope")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-42");
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problem_json() {
    let app = TestApp::spawn().await;
    assert_problem(app.get("/api/v1/nothing-here").await, StatusCode::NOT_FOUND, "route_not_found").await;
    let res = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    app.shutdown().await;
}

#[tokio::test]
async fn browsers_get_an_icon_not_a_404() {
    let app = TestApp::spawn().await;
    let res = app.get("/favicon.ico").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/x-icon");
    let body = res.bytes().await.unwrap();
    assert_eq!(&body[..4], &[0, 0, 1, 0], "an ICO file");
    app.shutdown().await;
}

/// Problems are sent as `application/problem+json`, so that is how the document lists them,
/// and every operation lists the statuses the shared layers can answer.
#[tokio::test]
async fn the_openapi_document_lists_problems_as_problem_json_with_the_shared_statuses() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            for status in ["500", "503"] {
                assert!(responses.contains_key(status), "{method} {path} lacks {status}");
            }
            for (status, r) in responses {
                if let Some(content) = r["content"].as_object() {
                    let problem_as_json = content
                        .get("application/json")
                        .is_some_and(|c| c["schema"]["$ref"] == "#/components/schemas/Problem");
                    assert!(!problem_as_json, "{method} {path} {status}: a problem listed as application/json");
                }
            }
        }
    }
    assert!(operations > 50);
    let res = app.get("/api/v1/no-such-route").await;
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    app.shutdown().await;
}
