//! Products, categories, merchants, inventory: roles, ownership, bad input, paging.

use std::collections::HashSet;
use std::sync::Arc;

use flashback_core::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_merchant_creates_a_product_that_anyone_can_read() {
    let app = TestApp::spawn().await;
    let tea = app.category("Tea").await;
    let merchant = app.token_for("teashop", Role::Merchant).await;
    let body = json!({
        "sku": "tea-lj-250", "title": "Longjing 250 g", "description": "Spring harvest.",
        "images": ["https://img.example/lj.jpg"], "list_price_minor": 12900,
        "category_id": tea, "available": 40, "regions": ["cn-zj", "CN"]
    });
    let res = app.post("/api/v1/products", Some(&merchant), &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["sku"], "TEA-LJ-250");
    assert_eq!(created["list_price_minor"], 12900);
    assert_eq!(created["available"], 40);
    assert_eq!(created["regions"], json!(["CN", "CN-ZJ"]));
    assert_eq!(created["status"], "on_shelf");

    let read: Value = app.get(&format!("/api/v1/products/{}", id(&created))).await.json().await.unwrap();
    assert_eq!(read, created);
    let shop: Value =
        app.get(&format!("/api/v1/merchants/{}", created["merchant_id"].as_str().unwrap())).await.json().await.unwrap();
    assert_eq!(shop["name"], "teashop shop");
    app.shutdown().await;
}

#[tokio::test]
async fn only_merchants_and_admins_create_products_and_admins_name_the_merchant() {
    let app = TestApp::spawn().await;
    let cat = app.category("Books").await;
    let body = json!({"sku": "B1", "title": "A book", "list_price_minor": 100, "category_id": cat});
    assert_problem(app.post("/api/v1/products", None, &body).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let user = app.token_for("reader", Role::User).await;
    assert_problem(app.post("/api/v1/products", Some(&user), &body).await, StatusCode::FORBIDDEN, "forbidden").await;

    let admin = app.token_for("boss", Role::Admin).await;
    let res = app.post("/api/v1/products", Some(&admin), &body).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "merchant_required").await;
    let merchant = app.token_for("bookshop", Role::Merchant).await;
    let me: Value = app.get_as("/api/v1/me", &merchant).await.json().await.unwrap();
    let mid = me["merchant_id"].as_str().unwrap();
    let mut for_shop = body.clone();
    for_shop["merchant_id"] = json!(mid);
    let res = app.post("/api/v1/products", Some(&admin), &for_shop).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // A merchant may not create for someone else.
    let res = app.post("/api/v1/products", Some(&merchant), &for_shop).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let unknown_shop =
        json!({"sku": "B2", "title": "x", "list_price_minor": 1, "category_id": cat, "merchant_id": "77"});
    assert_problem(
        app.post("/api/v1/products", Some(&admin), &unknown_shop).await,
        StatusCode::NOT_FOUND,
        "merchant_not_found",
    )
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_merchant_cannot_change_another_merchants_product() {
    let app = TestApp::spawn().await;
    let cat = app.category("Home").await;
    let owner = app.token_for("owner", Role::Merchant).await;
    let rival = app.token_for("rival", Role::Merchant).await;
    let p = app.product(&owner, &cat, "LAMP", 5).await;
    let path = format!("/api/v1/products/{}", id(&p));
    for (method, suffix, body) in [
        (Method::PATCH, "", json!({"title": "Hijacked"})),
        (Method::PUT, "/status", json!({"status": "off_shelf"})),
        (Method::PUT, "/inventory", json!({"available": 0})),
        (Method::POST, "/inventory/adjustments", json!({"delta": -5})),
    ] {
        let res = app.send(method.clone(), &format!("{path}{suffix}"), Some(&rival), &body).await;
        assert_problem(res, StatusCode::FORBIDDEN, "not_owner").await;
        let user = app.token_for(&format!("u-{}", suffix.len()), Role::User).await;
        let res = app.send(method, &format!("{path}{suffix}"), Some(&user), &body).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let now: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(
        (now["title"].as_str(), now["status"].as_str(), now["available"].as_i64()),
        (Some("Product LAMP"), Some("on_shelf"), Some(5))
    );
    // An admin may manage any product.
    let admin = app.token_for("root", Role::Admin).await;
    let res = app.send(Method::PATCH, &path, Some(&admin), &json!({"title": "Renamed by admin"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn a_merchants_skus_are_unique_but_other_merchants_may_reuse_them() {
    let app = TestApp::spawn().await;
    let cat = app.category("Snacks").await;
    let a = app.token_for("shop-a", Role::Merchant).await;
    let b = app.token_for("shop-b", Role::Merchant).await;
    app.product(&a, &cat, "NUTS", 1).await;
    let dup = json!({"sku": "nuts", "title": "Again", "list_price_minor": 5, "category_id": cat});
    assert_problem(app.post("/api/v1/products", Some(&a), &dup).await, StatusCode::CONFLICT, "sku_taken").await;
    app.product(&b, &cat, "NUTS", 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn bad_product_bodies_are_rejected_and_store_nothing() {
    let app = TestApp::spawn().await;
    let cat = app.category("Tools").await;
    let m = app.token_for("toolshop", Role::Merchant).await;
    let good = json!({"sku": "HAMMER", "title": "Hammer", "list_price_minor": 2500, "category_id": cat});
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("list_price_minor", json!(-1)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("list_price_minor", json!(19.99)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("list_price_minor", json!("2500")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("list_price_minor", json!(1_000_000_000_001_i64)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (
            with("list_price_minor", json!(99_999_999_999_999_999_999.0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (with("title", json!("   ")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("title", json!("x".repeat(201))), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("sku", json!("no spaces allowed")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("images", json!(["javascript:alert(1)"])), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("images", json!(vec!["https://i.example/a.jpg"; 21])), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("available", json!(-5)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("regions", json!(["Mars"])), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("status", json!("sold_out")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("category_id", json!("not-a-number")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (with("category_id", json!("12345")), StatusCode::UNPROCESSABLE_ENTITY, "category_not_found"),
        (with("colour", json!("red")), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let res = app.post("/api/v1/products", Some(&m), &body).await;
        let problem = assert_problem(res, status, code).await;
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
    let own: Value = app.get_as("/api/v1/merchant/products", &m).await.json().await.unwrap();
    assert_eq!(own["items"], json!([]), "nothing was stored");
    app.shutdown().await;
}

#[tokio::test]
async fn listings_are_keyset_pages_newest_first_and_filtered() {
    let app = TestApp::spawn().await;
    let tea = app.category("Tea").await;
    let books = app.category("Books").await;
    let m = app.token_for("bigshop", Role::Merchant).await;
    let mut tea_ids = Vec::new();
    for i in 0..5 {
        tea_ids.push(id(&app.product(&m, &tea, &format!("T{i}"), 1).await));
    }
    let book = app.product(&m, &books, "B0", 1).await;
    let hidden = app.product(&m, &tea, "T-HIDDEN", 1).await;
    let res = app
        .send(
            Method::PUT,
            &format!("/api/v1/products/{}/status", id(&hidden)),
            Some(&m),
            &json!({"status": "off_shelf"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    let mut seen = Vec::new();
    let mut next = format!("/api/v1/products?category_id={tea}&limit=2");
    loop {
        let page: Value = app.get(&next).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(id));
        match page["next_cursor"].as_str() {
            Some(c) => next = format!("/api/v1/products?category_id={tea}&limit=2&cursor={c}"),
            None => break,
        }
    }
    tea_ids.reverse();
    assert_eq!(seen, tea_ids, "newest first, each once, off-shelf excluded");

    let all: Value = app.get("/api/v1/products").await.json().await.unwrap();
    let all: HashSet<String> = all["items"].as_array().unwrap().iter().map(id).collect();
    assert!(all.contains(&id(&book)) && !all.contains(&id(&hidden)));

    let own: Value = app.get_as("/api/v1/merchant/products?status=off_shelf", &m).await.json().await.unwrap();
    assert_eq!(own["items"].as_array().unwrap().iter().map(id).collect::<Vec<_>>(), vec![id(&hidden)]);

    for bad in [
        "/api/v1/products?limit=0",
        "/api/v1/products?limit=101",
        "/api/v1/products?limit=ten",
        "/api/v1/products?cursor=bogus",
        "/api/v1/products?category_id=tea",
        "/api/v1/products?status=off_shelf",
        "/api/v1/products?offset=20",
    ] {
        assert_problem(app.get(bad).await, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    let user = app.token_for("shopper", Role::User).await;
    assert_problem(app.get_as("/api/v1/merchant/products", &user).await, StatusCode::FORBIDDEN, "forbidden").await;
    app.shutdown().await;
}

#[tokio::test]
async fn updates_change_named_fields_and_empty_or_bad_updates_change_nothing() {
    let app = TestApp::spawn().await;
    let cat = app.category("Garden").await;
    let other = app.category("Outdoor").await;
    let m = app.token_for("gardener", Role::Merchant).await;
    let p = app.product(&m, &cat, "RAKE", 3).await;
    let path = format!("/api/v1/products/{}", id(&p));
    let res = app.send(Method::PATCH, &path, Some(&m), &json!({"list_price_minor": 3100, "category_id": other})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let updated: Value = res.json().await.unwrap();
    assert_eq!(
        (updated["list_price_minor"].as_i64(), updated["category_id"].as_str()),
        (Some(3100), Some(other.as_str()))
    );
    assert_eq!(updated["title"], p["title"]);

    for (body, code) in [
        (json!({}), "invalid_body"),
        (json!({"list_price_minor": -3}), "invalid_body"),
        (json!({"sku": "CHANGED"}), "invalid_body"),
        (json!({"category_id": "999"}), "category_not_found"),
    ] {
        assert_problem(app.send(Method::PATCH, &path, Some(&m), &body).await, StatusCode::UNPROCESSABLE_ENTITY, code)
            .await;
    }
    for bad in
        ["/api/v1/products/abc", "/api/v1/products/0", "/api/v1/products/99999999999999999999", "/api/v1/products/42"]
    {
        assert_problem(app.get(bad).await, StatusCode::NOT_FOUND, "product_not_found").await;
        let res = app.send(Method::PATCH, bad, Some(&m), &json!({"title": "x"})).await;
        assert_problem(res, StatusCode::NOT_FOUND, "product_not_found").await;
    }
    assert_problem(app.get("/api/v1/merchants/abc").await, StatusCode::NOT_FOUND, "merchant_not_found").await;
    let bad_status = app.send(Method::PUT, &format!("{path}/status"), Some(&m), &json!({"status": "gone"})).await;
    assert_problem(bad_status, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let now: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(now, updated, "rejected updates changed nothing");
    app.shutdown().await;
}

#[tokio::test]
async fn inventory_changes_are_conditional_and_never_go_negative() {
    let app = TestApp::spawn().await;
    let cat = app.category("Phones").await;
    let m = app.token_for("phoneshop", Role::Merchant).await;
    let p = app.product(&m, &cat, "PHONE", 10).await;
    let inv = format!("/api/v1/products/{}/inventory", id(&p));
    let v1 = p["inventory_version"].as_i64().unwrap();

    let res = app.send(Method::PUT, &inv, Some(&m), &json!({"available": 20, "expected_version": v1})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let after: Value = res.json().await.unwrap();
    assert_eq!(
        (after["available"].as_i64(), after["inventory_version"].as_i64(), after["regions"].clone()),
        (Some(20), Some(v1 + 1), json!(["CN"]))
    );
    let stale = app.send(Method::PUT, &inv, Some(&m), &json!({"available": 99, "expected_version": v1})).await;
    assert_problem(stale, StatusCode::CONFLICT, "version_conflict").await;

    let adj = format!("{inv}/adjustments");
    assert_problem(app.post(&adj, Some(&m), &json!({"delta": -21})).await, StatusCode::CONFLICT, "insufficient_stock")
        .await;
    for body in
        [json!({"delta": 0}), json!({"delta": 1.5}), json!({"delta": "1"}), json!({}), json!({"delta": i64::MIN})]
    {
        assert_problem(app.post(&adj, Some(&m), &body).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    }
    for body in [json!({"available": -1}), json!({"available": 5, "regions": ["nowhere"]}), json!({"regions": ["CN"]})]
    {
        assert_problem(
            app.send(Method::PUT, &inv, Some(&m), &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
    }
    let now: Value = app.get(&format!("/api/v1/products/{}", id(&p))).await.json().await.unwrap();
    assert_eq!(now["available"], 20, "rejected changes changed nothing");
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_stock_decrements_over_http_never_oversell() {
    let app = Arc::new(TestApp::spawn().await);
    let cat = app.category("Hot").await;
    let m = Arc::new(app.token_for("hotshop", Role::Merchant).await);
    let p = app.product(&m, &cat, "HOT-1", 15).await;
    let adj = format!("/api/v1/products/{}/inventory/adjustments", id(&p));
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (app, m, adj) = (Arc::clone(&app), Arc::clone(&m), adj.clone());
            tokio::spawn(async move { app.post(&adj, Some(&m), &json!({"delta": -1})).await.status() })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 15);
    let now: Value = app.get(&format!("/api/v1/products/{}", id(&p))).await.json().await.unwrap();
    assert_eq!(now["available"], 0);
}

#[tokio::test]
async fn categories_are_created_by_admins_only_and_are_unique() {
    let app = TestApp::spawn().await;
    let admin = app.token_for("catadmin", Role::Admin).await;
    let merchant = app.token_for("catshop", Role::Merchant).await;
    assert_problem(
        app.post("/api/v1/categories", Some(&merchant), &json!({"name": "Toys"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_problem(
        app.post("/api/v1/categories", None, &json!({"name": "Toys"})).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    assert_eq!(
        app.post("/api/v1/categories", Some(&admin), &json!({"name": "Toys"})).await.status(),
        StatusCode::CREATED
    );
    assert_problem(
        app.post("/api/v1/categories", Some(&admin), &json!({"name": "Toys"})).await,
        StatusCode::CONFLICT,
        "category_exists",
    )
    .await;
    for bad in [json!({"name": ""}), json!({"name": 3}), json!({})] {
        assert_problem(
            app.post("/api/v1/categories", Some(&admin), &bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
    }
    let all: Value = app.get("/api/v1/categories").await.json().await.unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    app.shutdown().await;
}
