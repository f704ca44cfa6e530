//! Register, login, /me; bad input, rate limits and tokens.

use flashback_core::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn a_registered_user_can_log_in_and_see_itself() {
    let app = TestApp::spawn().await;
    let res = app.post("/api/v1/auth/register", None, &json!({"username": "Alice", "password": "correct horse"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!((created["username"].as_str(), created["role"].as_str()), (Some("alice"), Some("user")));
    assert!(created["id"].is_string(), "ids travel as strings");

    let res = app.login("alice", "correct horse").await;
    assert_eq!(res.status(), StatusCode::OK);
    let login: Value = res.json().await.unwrap();
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["expires_in"], 3600);
    let token = login["token"].as_str().unwrap();

    let me: Value = app.get_as("/api/v1/me", token).await.json().await.unwrap();
    assert_eq!(me["id"], created["id"]);
    assert_eq!(me["username"], "alice");
    app.shutdown().await;
}

#[tokio::test]
async fn a_taken_username_is_a_conflict_whatever_its_case() {
    let app = TestApp::spawn().await;
    let body = json!({"username": "bob", "password": "first password"});
    assert_eq!(app.post("/api/v1/auth/register", None, &body).await.status(), StatusCode::CREATED);
    let again = json!({"username": "BOB", "password": "second password"});
    assert_problem(app.post("/api/v1/auth/register", None, &again).await, StatusCode::CONFLICT, "username_taken").await;
    // The first password still works and the second does not: nothing changed.
    assert_eq!(app.login("bob", "first password").await.status(), StatusCode::OK);
    assert_eq!(app.login("bob", "second password").await.status(), StatusCode::UNAUTHORIZED);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_registrations_get_stable_codes_and_create_nothing() {
    let app = TestApp::spawn().await;
    let url = app.url("/api/v1/auth/register");
    for (body, code) in [
        (json!({"username": "carol", "password": "short"}), "invalid_body"),
        (json!({"username": "c", "password": "long enough pw"}), "invalid_body"),
        (json!({"username": "has space", "password": "long enough pw"}), "invalid_body"),
        (json!({"username": 42, "password": "long enough pw"}), "invalid_body"),
        (json!({"username": "carol"}), "invalid_body"),
        (json!({"username": "carol", "password": "long enough pw", "role": "admin"}), "invalid_body"),
        (json!("carol:long enough pw"), "invalid_body"),
    ] {
        let res = app.client.post(&url).json(&body).send().await.unwrap();
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    }
    let res = app.client.post(&url).header("content-type", "application/json").body("{\"username\":").send().await;
    assert_problem(res.unwrap(), StatusCode::BAD_REQUEST, "malformed_json").await;
    let res = app.client.post(&url).body(r#"{"username":"carol","password":"long enough pw"}"#).send().await;
    assert_problem(res.unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    // Nothing was created: the name is still free.
    let ok = app.post("/api/v1/auth/register", None, &json!({"username": "carol", "password": "long enough pw"})).await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    app.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.token_for("dave", Role::User).await;
    let wrong =
        assert_problem(app.login("dave", "not the password").await, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let wrong = wrong.await;
    let unknown =
        assert_problem(app.login("nobody", "not the password").await, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let unknown = unknown.await;
    assert_eq!(wrong, unknown, "the answers do not reveal whether the account exists");
    let bad = app.post("/api/v1/auth/login", None, &json!({"username": "dave"})).await;
    assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    app.shutdown().await;
}

#[tokio::test]
async fn logins_are_limited_per_account_with_retry_after() {
    let app = TestApp::spawn_with(|c| c.auth.login_per_account_per_minute = 3).await;
    app.token_for("erin", Role::User).await; // one successful login
    for _ in 0..2 {
        assert_eq!(app.login("erin", "bad password!").await.status(), StatusCode::UNAUTHORIZED);
    }
    let res = app.login("erin", "erin-password").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry after {retry}s");
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    // Another account from the same address is not affected by erin's limit.
    app.token_for("frank", Role::User).await;
    assert_eq!(app.metric(r#"flashback_auth_login_rejected_total{reason="account"}"#).await, 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn logins_are_limited_per_address_across_accounts() {
    let app = TestApp::spawn_with(|c| c.auth.login_per_ip_per_minute = 4).await;
    for name in ["g1", "g2", "g3", "g4"] {
        assert_eq!(app.login(&format!("{name}-user"), "whatever pw").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_problem(app.login("g5-user", "whatever pw").await, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    assert_eq!(app.metric(r#"flashback_auth_login_rejected_total{reason="ip"}"#).await, 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn missing_malformed_forged_and_expired_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.token_for("henry", Role::User).await;
    let res = app.get("/api/v1/me").await;
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = app.client.get(app.url("/api/v1/me")).header("authorization", "Basic aGVucnk6cHc=").send().await;
    assert_problem(res.unwrap(), StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_problem(app.get_as("/api/v1/me", "garbage").await, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // The same claims signed with another key.
    let other = flashback_server::auth::TokenKeys::load(
        Some(&secrecy::SecretString::from("another-secret-that-is-32-bytes-or-more".to_owned())),
        std::path::Path::new("/nonexistent"),
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    let me: Value = app.get_as("/api/v1/me", &token).await.json().await.unwrap();
    let id = flashback_core::UserId::parse(me["id"].as_str().unwrap()).unwrap();
    let forged = other.issue(id, Role::Admin, None).unwrap();
    assert_problem(app.get_as("/api/v1/me", &forged).await, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // A token whose signature is fine but whose payload was edited (role raised to admin).
    let parts: Vec<&str> = token.split('.').collect();
    let edited = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
    assert_problem(app.get_as("/api/v1/me", &edited).await, StatusCode::UNAUTHORIZED, "invalid_token").await;
    app.shutdown().await;
}
