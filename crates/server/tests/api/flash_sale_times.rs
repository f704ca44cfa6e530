//! Flash-sale creation with extreme times and amounts: every one is a 422 `invalid_body`
//! (never a 201 with times that cannot be shown, never a 5xx) and carves nothing; times at the
//! edges of the documented range are accepted.

use flashback_core::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

fn now_ms() -> i64 {
    flashback_server::trade::now_ms()
}

const DAY: i64 = 24 * 3600 * 1000;

#[tokio::test]
async fn sales_with_times_or_amounts_out_of_range_are_refused_and_carve_nothing() {
    let app = TestApp::spawn().await;
    let m = app.token_for("timekeeper", Role::Merchant).await;
    let cat = app.category("Timely").await;
    let p = app.product(&m, &cat, "TIME-1", 10).await["id"].as_str().unwrap().to_owned();
    let now = now_ms();
    let body = |starts: Value, ends: Value| {
        json!({"product_id": p, "sale_price_minor": 100, "stock": 1, "per_user_limit": 1,
               "starts_at": starts, "ends_at": ends})
    };
    let cases = [
        // The report: a sale that never ends, from the beginning of time.
        body(json!(i64::MIN), json!(i64::MAX)),
        body(json!(i64::MIN), json!(now + 60_000)),
        body(json!(now), json!(i64::MAX)),
        body(json!(i64::MAX - 1), json!(i64::MAX)),
        body(json!(-1), json!(now + 60_000)),
        body(json!(0), json!(now + 60_000)),
        // Seconds for milliseconds.
        body(json!(now / 1000), json!(now / 1000 + 60)),
        // Past year 9999, as milliseconds and as text.
        body(json!(253_402_300_800_000i64), json!(253_402_300_800_001i64)),
        body(json!("+10000-01-01T00:00:00Z"), json!("+10000-01-02T00:00:00Z")),
        body(json!("9999-12-31T00:00:00Z"), json!("10000-01-01T00:00:00Z")),
        // The window itself.
        body(json!(now + 60_000), json!(now + 60_000)),
        body(json!(now + 60_000), json!(now + 1_000)),
        body(json!(now - 8 * DAY), json!(now + 60_000)),
        // Not an integer, not a time.
        body(json!(1.5e300), json!(now + 60_000)),
        body(json!(9.3e18), json!(now + 60_000)),
        body(json!(now), json!("tomorrow")),
    ];
    for case in cases {
        let res = app.post("/api/v1/flash-sales", Some(&m), &case).await;
        let status = res.status();
        assert!(status.is_client_error(), "{case}: {status}");
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    }
    let with = |k: &str, v: Value| {
        let mut b = body(json!(now - 1_000), json!(now + 60_000));
        b[k] = v;
        b
    };
    for case in [
        with("stock", json!(i64::MAX)),
        with("stock", json!(i64::MIN)),
        with("per_user_limit", json!(i64::MAX)),
        with("per_user_limit", json!(-1)),
        with("sale_price_minor", json!(i64::MAX)),
        with("sale_price_minor", json!(i64::MIN)),
    ] {
        assert_problem(
            app.post("/api/v1/flash-sales", Some(&m), &case).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
    }
    let listed: Value = app.get("/api/v1/flash-sales").await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]), "nothing was created");
    let product: Value = app.get(&format!("/api/v1/products/{p}")).await.json().await.unwrap();
    assert_eq!(product["available"], 10, "nothing was carved");

    // The edges of the range: a week-long sale ending at the last millisecond of 9999, and one
    // that started seven days ago (to the millisecond) and ends now-ish.
    let last = 253_402_300_799_999i64;
    for (starts, ends) in [(last - 7 * DAY, last), (now - 7 * DAY + 60_000, now + 60_000)] {
        let res = app.post("/api/v1/flash-sales", Some(&m), &body(json!(starts), json!(ends))).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let sale: Value = res.json().await.unwrap();
        assert!(sale["starts_at"].as_str().is_some_and(|s| !s.is_empty()), "{sale}");
        assert!(sale["ends_at"].as_str().is_some_and(|s| !s.is_empty()), "{sale}");
    }
    app.shutdown().await;
}
