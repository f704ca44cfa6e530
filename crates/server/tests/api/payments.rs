//! The simulated payment provider is a development tool: its pay page takes only the signed
//! link handed to the buyer, exists only while it is the configured provider, and production
//! refuses it. Without a provider, paying is an honest 503.

use flashback_core::Role;
use flashback_server::config::{Config, Environment, PaymentProviderKind};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

/// A buyer's unpaid order of one unit: (buyer token, order id).
async fn unpaid_order(app: &TestApp) -> (String, String) {
    let cat = app.category("pay things").await;
    let merchant = app.token_for("paymerchant", Role::Merchant).await;
    let p = app.product(&merchant, &cat, "pay-1", 5).await;
    let buyer = app.token_for("paybuyer", Role::User).await;
    let res = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&buyer)
        .header("idempotency-key", "pay-order-1")
        .json(&json!({"lines": [{"product_id": p["id"], "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let order: Value = res.json().await.unwrap();
    (buyer, order["id"].as_str().unwrap().to_owned())
}

async fn order_state(app: &TestApp, token: &str, id: &str) -> String {
    let o: Value = app.get_as(&format!("/api/v1/orders/{id}"), token).await.json().await.unwrap();
    o["state"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_simulated_pay_page_takes_only_the_signed_link_given_to_the_buyer() {
    let app = TestApp::spawn().await;
    let (buyer, order) = unpaid_order(&app).await;
    let res = app.post(&format!("/api/v1/orders/{order}/payments"), Some(&buyer), &json!({})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let payment: Value = res.json().await.unwrap();
    let id = payment["payment_id"].as_str().unwrap();
    let pay_url = payment["pay_url"].as_str().unwrap();
    assert!(pay_url.contains("?sig="), "{pay_url}");

    // Knowing the payment id is not enough, nor is another payment's link.
    let bare = format!("/api/v1/payments/simulated/{id}/complete");
    assert_problem(app.post(&bare, None, &json!({})).await, StatusCode::FORBIDDEN, "invalid_pay_link").await;
    let forged = format!("{bare}?sig={}", "0".repeat(64));
    assert_problem(app.post(&forged, None, &json!({})).await, StatusCode::FORBIDDEN, "invalid_pay_link").await;
    let (_, sig) = pay_url.split_once("?sig=").unwrap();
    let other = format!("/api/v1/payments/simulated/sim_someone_else/complete?sig={sig}");
    assert_problem(app.post(&other, None, &json!({})).await, StatusCode::FORBIDDEN, "invalid_pay_link").await;
    crate::helpers::settle().await;
    assert_eq!(order_state(&app, &buyer, &order).await, "pending_payment");

    // Asking again gives the same link, and the link pays.
    let again: Value =
        app.post(&format!("/api/v1/orders/{order}/payments"), Some(&buyer), &json!({})).await.json().await.unwrap();
    assert_eq!(again["pay_url"], payment["pay_url"]);
    assert_eq!(app.post(pay_url, None, &json!({})).await.status(), StatusCode::ACCEPTED);
    for _ in 0..100 {
        if order_state(&app, &buyer, &order).await == "paid" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(order_state(&app, &buyer, &order).await, "paid");
    app.shutdown().await;
}

#[tokio::test]
async fn without_a_provider_there_is_no_pay_page_and_paying_is_a_503() {
    let app = TestApp::spawn_with(|c| c.trade.payment_provider = PaymentProviderKind::None).await;
    let (buyer, order) = unpaid_order(&app).await;
    let res = app.post(&format!("/api/v1/orders/{order}/payments"), Some(&buyer), &json!({})).await;
    assert!(res.headers().get("retry-after").is_some());
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "payment_provider_unavailable").await;
    let res = app.post("/api/v1/payments/simulated/sim_x/complete?sig=00", None, &json!({})).await;
    assert_problem(res, StatusCode::NOT_FOUND, "route_not_found").await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    assert!(doc["paths"].get("/api/v1/payments/simulated/{payment_id}/complete").is_none());
    assert_eq!(order_state(&app, &buyer, &order).await, "pending_payment");
    app.shutdown().await;
}

#[test]
fn production_refuses_the_simulated_provider() {
    let mut c = Config { environment: Environment::Production, ..Config::default() };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("trade.payment_provider") && e.contains("production"), "{e}");
    c.trade.payment_provider = PaymentProviderKind::None;
    c.validate().unwrap();
    c.environment = Environment::Staging;
    c.trade.payment_provider = PaymentProviderKind::Simulated;
    c.validate().unwrap();
}
