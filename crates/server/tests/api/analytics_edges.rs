//! Analytics at the edges: ranges named by extreme times are refused at once with a stable code
//! (never looped over, never wrapped into "everything"), and every id comes out as a string.

use std::time::Duration;

use flashback_core::Role;
use flashback_server::trade::outbox;
use reqwest::StatusCode;
use serde_json::Value;

use crate::analytics::paid_order;
use crate::helpers::{TestApp, assert_problem};

const MIN: i64 = i64::MIN;
const MAX: i64 = i64::MAX;

#[tokio::test]
async fn ranges_of_extreme_times_are_refused_at_once_with_a_stable_code() {
    let app = TestApp::spawn().await;
    let admin = app.token_for("edgeadmin", Role::Admin).await;
    // A hang or a crash fails here rather than holding the suite.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let ranges = [
        (9_223_372_036_854_775_000, MAX), // the minute loop used to wrap past i64::MAX
        (MIN, MAX),                       // `to - from` used to wrap into a "short" range
        (MIN, 1_000),
        (-1, 60_000),
        (MAX - 1, MAX),
        (253_402_300_800_000, 253_402_300_860_000), // after year 9999
    ];
    let mut cases = Vec::new();
    for (from, to) in ranges {
        for series in ["gmv?granularity=minute&", "gmv?granularity=second&", "top-skus?"] {
            cases.push((format!("/api/v1/analytics/{series}from_ms={from}&to_ms={to}"), "analytics_bad_range"));
        }
    }
    for t in [MIN, -1, MAX - 1, MAX, 253_402_300_800_000] {
        for param in ["gmv?from_ms", "gmv?to_ms", "top-skus?from_ms", "top-skus?to_ms"] {
            cases.push((format!("/api/v1/analytics/{param}={t}"), "analytics_bad_range"));
        }
    }
    // From the epoch to now: far more than seven days.
    cases.push(("/api/v1/analytics/top-skus?from_ms=0".to_owned(), "analytics_range_too_long"));
    for (path, code) in &cases {
        let res = client.get(app.url(path)).bearer_auth(&admin).send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_problem(res, StatusCode::BAD_REQUEST, code).await;
    }
    // Any calendar day has a summary (one before the epoch, nothing in it), as the document's
    // `format: date` says; ranges within bounds still answer.
    for day in ["1969-12-31", "0001-01-01", "9999-12-31"] {
        let res = client.get(app.url(&format!("/api/v1/analytics/summary?day={day}"))).bearer_auth(&admin).send().await;
        let body: Value = res.unwrap().json().await.unwrap();
        assert_eq!(body["totals"]["paid_orders"], 0, "{day}: {body}");
    }
    let ok = format!("/api/v1/analytics/gmv?from_ms={}&to_ms={}", 0, 3_600_000);
    let res = client.get(app.url(&ok)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["points"].as_array().unwrap().len(), 60);
    app.shutdown().await;
}

#[tokio::test]
async fn analytics_answers_carry_ids_as_strings() {
    let app = TestApp::spawn().await;
    let cat = app.category("Id things").await;
    let merchant = app.token_for("idshop", Role::Merchant).await;
    let product = app.product(&merchant, &cat, "IDSHOP-A", 100).await;
    let product_id = product["id"].as_str().unwrap().to_owned();
    let admin = app.token_for("idadmin", Role::Admin).await;
    let buyer = app.token_for("idbuyer", Role::User).await;
    paid_order(&app, &buyer, &[(&product_id, 2)]).await;
    outbox::drain(&app.state).await.unwrap();

    let get = |path: &'static str| {
        let (app, admin) = (&app, &admin);
        async move {
            let res = app.get_as(path, admin).await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            res.json::<Value>().await.unwrap()
        }
    };
    let top = get("/api/v1/analytics/top-skus").await;
    assert_eq!(top[0]["product_id"], Value::String(product_id.clone()), "{top}");
    let summary = get("/api/v1/analytics/summary").await;
    assert_eq!(summary["top_skus"][0]["product_id"], Value::String(product_id.clone()), "{summary}");
    let snapshot =
        serde_json::to_value(flashback_server::analytics::snapshot::build(&app.state).await.unwrap()).unwrap();
    assert_eq!(snapshot["top_skus"][0]["product_id"], Value::String(product_id.clone()), "{snapshot}");

    // The document says so too.
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let schema = &doc["components"]["schemas"]["TopSku"]["properties"]["product_id"];
    assert_eq!(schema["type"], "string", "{schema}");
    let top_ref = &doc["paths"]["/api/v1/analytics/top-skus"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"]["items"]["$ref"];
    assert_eq!(top_ref, "#/components/schemas/TopSku");
    app.shutdown().await;
}
