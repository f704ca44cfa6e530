//! Extreme values in every parameter that takes a time, an amount or a count (queries, path
//! ids, JSON bodies, signed headers): each request is answered, within a few seconds, never
//! with a 5xx, and the instance stays up. The values are a fixed list (the i64 edges, u64::MAX,
//! a float too large for any integer, a fraction, a word), each in every place, so a failure
//! names its request and repeats.

mod bodies;
mod flash_sales;
mod signed;

use std::time::Duration;

use flashback_core::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// The values tried in every place.
pub const EXTREMES: [&str; 11] = [
    "-9223372036854775808",
    "-9223372036854775807",
    "-1",
    "0",
    "1",
    "9223372036854775806",
    "9223372036854775807",
    "18446744073709551615",
    "1e30",
    "1.5",
    "abc",
];

/// Each value as JSON: numbers as numbers and as strings (ids and times may be either).
pub fn json_forms() -> Vec<String> {
    EXTREMES
        .iter()
        .flat_map(|v| {
            let quoted = format!("\"{v}\"");
            if v.parse::<f64>().is_ok() { vec![(*v).to_owned(), quoted] } else { vec![quoted] }
        })
        .collect()
}

/// Longer than any answer takes; reaching it means the request hung.
const HANG: Duration = Duration::from_secs(10);

/// Sends the requests and notes every one that was not answered in time or got a 5xx.
pub struct Driver<'a> {
    pub app: &'a TestApp,
    client: reqwest::Client,
    sent: usize,
    pub failures: Vec<String>,
}

impl<'a> Driver<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        let client = reqwest::Client::builder().timeout(HANG).build().expect("client");
        Self { app, client, sent: 0, failures: Vec::new() }
    }

    /// One request; `#` in `path` or `body` becomes a number unique to it.
    pub async fn send(
        &mut self,
        method: &Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, String)],
    ) {
        self.sent += 1;
        let unique = self.sent.to_string();
        let path = path.replace('#', &unique);
        let mut req = self.client.request(method.clone(), self.app.url(&path));
        req = req.header("idempotency-key", uuid::Uuid::new_v4().to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let body = body.map(|b| b.replace('#', &unique));
        if let Some(b) = &body {
            req = req.header("content-type", "application/json").body(b.clone());
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let what = format!("{method} {path} {}", body.as_deref().unwrap_or(""));
        match req.send().await {
            Err(e) => self.failures.push(format!("{what}: no answer ({e})")),
            Ok(res) if res.status().is_server_error() => {
                let status = res.status();
                let text = res.text().await.unwrap_or_default();
                self.failures.push(format!("{what}: {status} {text}"));
            }
            Ok(_) => {}
        }
    }

    /// Every value in place of `@` in `path` (as query or path text).
    pub async fn each_in_path(&mut self, method: Method, path: &str, token: Option<&str>, body: Option<&str>) {
        for v in EXTREMES {
            self.send(&method, &path.replace('@', v), token, body, &[]).await;
        }
    }

    /// Every value in every JSON form in place of `@` in `body`.
    pub async fn each_in_body(&mut self, method: Method, path: &str, token: Option<&str>, body: &str) {
        for v in json_forms() {
            self.send(&method, path, token, Some(&body.replace('@', &v)), &[]).await;
        }
    }

    /// Fails naming every bad answer, after checking the instance still serves.
    pub async fn finish(self) {
        let health = self.client.get(self.app.url("/healthz")).send().await.map(|r| r.status());
        assert_eq!(health.ok(), Some(StatusCode::OK), "the instance is still up");
        assert!(self.failures.is_empty(), "{} of {} requests failed:\n{}", self.failures.len(), self.sent, {
            self.failures.join("\n")
        });
    }
}

/// What the requests need to exist: a product, an open sale and an order.
pub struct World {
    pub admin: String,
    pub merchant: String,
    pub buyer: String,
    pub category: String,
    pub product: String,
    pub sale: String,
    pub order: String,
}

pub async fn world(app: &TestApp) -> World {
    let admin = app.token_for("xadmin", Role::Admin).await;
    let merchant = app.token_for("xmerchant", Role::Merchant).await;
    let buyer = app.token_for("xbuyer", Role::User).await;
    let category = app.category("Extremes").await;
    let product = app.product(&merchant, &category, "XTR-1", 1_000).await["id"].as_str().unwrap().to_owned();
    let now = flashback_server::trade::now_ms();
    let sale = json!({"product_id": product, "sale_price_minor": 100, "stock": 50, "per_user_limit": 2,
        "starts_at": now - 1_000, "ends_at": now + 600_000});
    let res = app.post("/api/v1/flash-sales", Some(&merchant), &sale).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let sale = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let res = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&buyer)
        .header("idempotency-key", "extremes-order")
        .json(&json!({"lines": [{"product_id": product, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let order = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    World { admin, merchant, buyer, category, product, sale, order }
}

#[tokio::test]
async fn extreme_numbers_in_queries_and_paths_get_prompt_answers_below_500() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let mut d = Driver::new(&app);
    let (admin, merchant, buyer) = (Some(w.admin.as_str()), Some(w.merchant.as_str()), Some(w.buyer.as_str()));
    let (min, max) = (EXTREMES[0], EXTREMES[6]);
    let ranges = |base: &str, from: &str, to: &str| {
        let sep = if base.contains('?') { '&' } else { '?' };
        [
            format!("{base}{sep}{from}=@"),
            format!("{base}{sep}{to}=@"),
            format!("{base}{sep}{from}=@&{to}=@"),
            format!("{base}{sep}{from}=@&{to}={max}"),
            format!("{base}{sep}{from}={min}&{to}=@"),
        ]
    };
    let mut gets: Vec<(String, Option<&str>)> = Vec::new();
    for (base, token) in
        [("/api/v1/orders", buyer), ("/api/v1/merchant/orders", merchant), ("/api/v1/admin/orders", admin)]
    {
        gets.extend(ranges(base, "from", "to").map(|p| (p, token)));
        gets.push((format!("{base}?limit=@"), token));
    }
    for base in ["/api/v1/analytics/gmv?granularity=minute", "/api/v1/analytics/gmv?granularity=second"] {
        gets.extend(ranges(base, "from_ms", "to_ms").map(|p| (p, admin)));
    }
    gets.extend(ranges("/api/v1/analytics/top-skus", "from_ms", "to_ms").map(|p| (p, admin)));
    gets.extend(ranges("/api/v1/track/stats", "from", "to").map(|p| (p, admin)));
    gets.extend(ranges("/api/v1/track/funnel", "from", "to").map(|p| (p, admin)));
    let track_days = "from=2026-01-01&to=2026-01-02";
    for (path, token) in [
        ("/api/v1/products?limit=@", None),
        ("/api/v1/merchant/products?limit=@", merchant),
        ("/api/v1/flash-sales?limit=@", None),
        ("/api/v1/me/rebates?limit=@", buyer),
        ("/api/v1/admin/rebate-rejects?limit=@", admin),
        ("/api/v1/me/withdrawals?limit=@", buyer),
        ("/api/v1/me/withdrawals?before=@", buyer),
        ("/api/v1/admin/withdrawals?limit=@", admin),
        ("/api/v1/admin/withdrawals?before=@", admin),
        ("/api/v1/analytics/top-skus?limit=@", admin),
        ("/api/v1/analytics/summary?day=@", admin),
        ("/api/v1/analytics/flash-sales?limit=@", admin),
        ("/api/v1/analytics/pending-rebates?limit=@", admin),
        ("/api/v1/analytics/pending-rebates?user_id=@", admin),
        ("/api/v1/track/hourly?day=@", admin),
        ("/api/v1/products/@", None),
        ("/api/v1/merchants/@", None),
        ("/api/v1/orders/@", buyer),
        ("/api/v1/flash-sales/@", None),
        ("/api/v1/flash-sales/tickets/@", buyer),
    ] {
        gets.push((path.to_owned(), token));
    }
    gets.push((format!("/api/v1/track/top?{track_days}&limit=@"), admin));
    for (path, token) in &gets {
        d.each_in_path(Method::GET, path, *token, None).await;
    }
    for path in ["/api/v1/orders/@/cancel", "/api/v1/orders/@/payments", "/api/v1/flash-sales/@/purchase"] {
        d.each_in_path(Method::POST, path, buyer, Some("{}")).await;
    }
    d.each_in_path(Method::POST, "/api/v1/admin/withdrawals/@/review", admin, Some(r#"{"decision":"approve"}"#)).await;
    d.each_in_path(Method::POST, "/api/v1/admin/rebate-reconciliations?month=@", admin, Some("")).await;
    d.finish().await;
    app.shutdown().await;
}
