//! JSON bodies with extreme numbers: prices, stock, versions, deltas, quantities, points,
//! withdrawal amounts, ids, and tracking times.

use reqwest::Method;
use serde_json::json;

use super::{Driver, world};
use crate::helpers::TestApp;

#[tokio::test]
async fn extreme_numbers_in_bodies_get_prompt_answers_below_500() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let mut d = Driver::new(&app);
    let (admin, merchant, buyer) = (Some(w.admin.as_str()), Some(w.merchant.as_str()), Some(w.buyer.as_str()));
    let (p, cat) = (&w.product, &w.category);
    let product = |field: &str| {
        let mut v = json!({"sku": "XS-#", "title": "Extreme", "list_price_minor": 100, "category_id": cat,
            "available": 1, "regions": ["CN"]});
        v[field] = json!("@");
        v.to_string().replace("\"@\"", "@")
    };
    let bodies: Vec<(Method, String, Option<&str>, String)> = vec![
        (Method::POST, "/api/v1/products".into(), merchant, product("list_price_minor")),
        (Method::POST, "/api/v1/products".into(), merchant, product("available")),
        (Method::POST, "/api/v1/products".into(), merchant, product("category_id")),
        (Method::PATCH, format!("/api/v1/products/{p}"), merchant, r#"{"list_price_minor":@}"#.into()),
        (Method::PUT, format!("/api/v1/products/{p}/inventory"), merchant, r#"{"available":@}"#.into()),
        (
            Method::PUT,
            format!("/api/v1/products/{p}/inventory"),
            merchant,
            r#"{"available":5,"expected_version":@}"#.into(),
        ),
        (Method::POST, format!("/api/v1/products/{p}/inventory/adjustments"), merchant, r#"{"delta":@}"#.into()),
        (Method::POST, "/api/v1/orders".into(), buyer, format!(r#"{{"lines":[{{"product_id":"{p}","quantity":@}}]}}"#)),
        (Method::POST, "/api/v1/orders".into(), buyer, r#"{"lines":[{"product_id":@,"quantity":1}]}"#.into()),
        (
            Method::POST,
            "/api/v1/orders".into(),
            buyer,
            format!(r#"{{"lines":[{{"product_id":"{p}","quantity":1}}],"points":@}}"#),
        ),
        (Method::POST, "/api/v1/me/withdrawals".into(), buyer, r#"{"amount_minor":@,"payee":"x@example.com"}"#.into()),
        (Method::POST, "/api/v1/me/rebate-profile".into(), buyer, r#"{"invite_code":@}"#.into()),
        (Method::POST, "/api/v1/categories".into(), admin, r#"{"name":@}"#.into()),
    ];
    for (method, path, token, body) in &bodies {
        d.each_in_body(method.clone(), path, *token, body).await;
    }
    let event = r#"{"anonymous_id":"x-#","module":"home","action":"view""#;
    for extra in [r#","client_ts":@}"#, r#","sent_at":@}"#, r#","client_ts":@,"sent_at":@}"#, r#","user_id":@}"#] {
        d.each_in_body(Method::POST, "/api/v1/track", None, &format!("{event}{extra}")).await;
    }
    d.finish().await;
    app.shutdown().await;
}
