//! Flash sales with extreme numbers: a new sale's price, stock, limit and times, and the
//! quantity of a purchase.

use reqwest::Method;
use serde_json::json;

use super::{Driver, World, world};
use crate::helpers::TestApp;

/// A new sale's body with `@` in `fields`.
fn sale(w: &World, fields: &[&str]) -> String {
    let now = flashback_server::trade::now_ms();
    let mut v = json!({"product_id": w.product, "sale_price_minor": 100, "stock": 1, "per_user_limit": 1,
        "starts_at": now + 3_600_000, "ends_at": now + 7_200_000});
    for f in fields {
        v[*f] = json!("@");
    }
    v.to_string().replace("\"@\"", "@")
}

#[tokio::test]
async fn extreme_numbers_in_a_new_flash_sale_or_a_purchase_get_prompt_answers_below_500() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let mut d = Driver::new(&app);
    for field in ["sale_price_minor", "stock", "per_user_limit", "product_id"] {
        d.each_in_body(Method::POST, "/api/v1/flash-sales", Some(&w.merchant), &sale(&w, &[field])).await;
    }
    let purchase = format!("/api/v1/flash-sales/{}/purchase", w.sale);
    d.each_in_body(Method::POST, &purchase, Some(&w.buyer), r#"{"quantity":@}"#).await;
    d.finish().await;
    app.shutdown().await;
}

/// `starts_at` = i64::MIN once overflowed `ends - starts` in `flash_sale::create_sale` (a 500 in
/// debug builds; in release it wrapped and the sale was accepted).
#[tokio::test]
async fn extreme_times_for_a_new_flash_sale_get_prompt_answers_below_500() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let mut d = Driver::new(&app);
    for fields in [&["starts_at"][..], &["ends_at"], &["starts_at", "ends_at"]] {
        d.each_in_body(Method::POST, "/api/v1/flash-sales", Some(&w.merchant), &sale(&w, fields)).await;
    }
    d.finish().await;
    app.shutdown().await;
}
