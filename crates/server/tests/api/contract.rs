//! What the OpenAPI document promises about inputs, held by the server: a request valid by
//! the document is accepted, one that breaks a rule the document states is refused.

use flashback_core::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn numbers_are_integers_when_their_fraction_is_zero_and_limits_count_what_was_sent() {
    let app = TestApp::spawn().await;
    let merchant = app.token_for("ct-merchant", Role::Merchant).await;
    let category = app.category("Contract").await;
    let product = app.product(&merchant, &category, "CT-1", 5).await;
    let inventory = format!("/api/v1/products/{}/inventory", product["id"].as_str().unwrap());

    // JSON Schema's integer: 7.0 and 7e0 are 7; 7.5 is not.
    for body in [json!({"available": 7.0}), json!({"available": 7e0})] {
        let res = app.send(Method::PUT, &inventory, Some(&merchant), &body).await;
        assert_eq!(res.status(), StatusCode::OK, "{body}");
        assert_eq!(res.json::<Value>().await.unwrap()["available"], 7);
    }
    let res = app.send(Method::PUT, &inventory, Some(&merchant), &json!({"available": 7.5})).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;

    // 65 regions are over the limit of 64, even when they repeat one region.
    let res =
        app.send(Method::PUT, &inventory, Some(&merchant), &json!({"available": 1, "regions": vec!["CN"; 65]})).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;

    // A title is at most 200 characters as sent, padding included.
    let padded = format!("\n{}", "x".repeat(200));
    let admin = app.token_for("ct-admin", Role::Admin).await;
    let res = app.post("/api/v1/categories", Some(&admin), &json!({"name": padded})).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    app.shutdown().await;
}

#[tokio::test]
async fn query_rules_hold_on_every_route_that_takes_the_parameter() {
    let app = TestApp::spawn().await;
    let admin = app.token_for("cq-admin", Role::Admin).await;
    let merchant = app.token_for("cq-merchant", Role::Merchant).await;
    for path in [
        // A top list's length is checked wherever it is sent.
        "/api/v1/track/funnel?from=2026-01-01&to=2026-01-01&limit=0",
        "/api/v1/track/stats?from=2026-01-01&to=2026-01-01&action=view&limit=101",
        // Selections are 1–64 characters (object types 1–32).
        &format!("/api/v1/track/hourly?day=2026-01-01&action=view&object_type=sku&object_id={}", "x".repeat(65)),
        // Months the report can name: 1970-01 to 9998-12.
        "/api/v1/admin/rebate-reconciliations?month=9999-12",
        // Cursors are the decimal ids the server hands out.
        "/api/v1/products?cursor=djE6MTIz",
        "/api/v1/products?status=off_shelf",
    ] {
        let res = if path.contains("reconciliations") {
            app.send(Method::POST, path, Some(&admin), &json!({})).await
        } else {
            app.get_as(path, &admin).await
        };
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    let res = app.get_as("/api/v1/merchant/products?merchant_id=1", &merchant).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_query").await;
    // Accepted as the document says: on-shelf publicly, a blank optional parameter as absent.
    for path in ["/api/v1/products?status=on_shelf", "/api/v1/products?cursor=&limit=", "/api/v1/products?cursor=42"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
    let res = app.get_as("/api/v1/analytics/summary?day=1969-07-20", &admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn the_document_states_the_rules_the_server_holds() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Id"]["pattern"], "^[1-9][0-9]{0,17}$");
    assert_eq!(schemas["Text200"]["maxLength"], 200);
    assert_eq!(schemas["CreateProduct"]["properties"]["available"]["maximum"], 1_000_000_000);
    // Every optional query parameter may be sent empty; no required one may.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "query") {
                let required = p["required"].as_bool().unwrap_or(false);
                assert_eq!(p["allowEmptyValue"].as_bool().unwrap_or(false), !required, "{method} {path} {}", p["name"]);
            }
        }
    }
    // The live stream is described event by event, its data a Snapshot.
    let live = &doc["paths"]["/api/v1/live"]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"];
    assert_eq!(live["properties"]["data"]["contentSchema"]["$ref"], "#/components/schemas/Snapshot");
    app.shutdown().await;
}
