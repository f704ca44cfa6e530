//! The `flashback` binary itself: subcommands, configuration errors, serving and SIGTERM.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;

fn flashback(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flashback"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("FLASHBACK_AUTH_ARGON2_MEMORY_KIB", "64")
        .env("FLASHBACK_AUTH_ARGON2_ITERATIONS", "1")
        .env("FLASHBACK_LOG_LEVEL", "warn")
        .output()
        .expect("run flashback")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_explains_every_subcommand() {
    let out = Command::new(env!("CARGO_BIN_EXE_flashback")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "migrate", "user", "demo", "--config", "--data-dir"] {
        assert!(text.contains(word), "--help mentions {word}: {text}");
    }
}

#[tokio::test]
async fn a_user_added_on_the_command_line_can_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        flashback(dir.path(), &["user", "add", "--username", "ops", "--password", "ops-password-1", "--role", "admin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again =
        flashback(dir.path(), &["user", "add", "--username", "ops", "--password", "other-password", "--role", "admin"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("taken"), "{}", stderr(&again));
    let bad_role =
        flashback(dir.path(), &["user", "add", "--username", "x-1", "--password", "long-enough", "--role", "king"]);
    assert!(!bad_role.status.success());
    assert!(stderr(&bad_role).contains("--role"), "{}", stderr(&bad_role));

    let app = TestApp::spawn_in(dir).await;
    let res = app.login("ops", "ops-password-1").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["user"]["role"], "admin");
    app.shutdown().await;
}

#[tokio::test]
async fn the_demo_data_loads_once_and_a_second_load_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = flashback(dir.path(), &["demo"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let app = TestApp::spawn_in(dir).await;
    let page: Value = app.get("/api/v1/products?limit=100").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 12);
    let categories: Value = app.get("/api/v1/categories").await.json().await.unwrap();
    assert_eq!(categories.as_array().unwrap().len(), 5);
    for (name, password, _) in flashback_server::demo::ACCOUNTS {
        assert_eq!(app.login(name, password).await.status(), StatusCode::OK, "{name}");
    }
    app.shutdown().await;
}

#[test]
fn invalid_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flashback"))
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .env("FLASHBACK_STORE_MAX_CONNECTIONS", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("max_connections"), "{}", stderr(&out));

    let file = dir.path().join("flashback.toml");
    std::fs::write(&file, "[cache]\nredis_ttl_ms = 5\n").unwrap();
    let out = flashback(dir.path(), &["migrate", "--config", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("redis_ttl_ms"), "{}", stderr(&out));

    std::fs::write(&file, "[auth]\ntoken_secret = \"short\"\n").unwrap();
    let out = flashback(dir.path(), &["migrate", "--config", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("auth.token_secret") && !text.contains("short\""), "{text}");
}

#[tokio::test]
async fn serve_answers_on_the_given_address_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashback"))
        .args(["serve", "--demo", "--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .env("FLASHBACK_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLASHBACK_AUTH_ARGON2_MEMORY_KIB", "64")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in ["/readyz", "/metrics", "/api/v1/openapi.json", "/api/v1/products"] {
        assert_eq!(client.get(format!("{base}{path}")).send().await.unwrap().status(), StatusCode::OK, "{path}");
    }
    assert!(dir.path().join("flashback.db").exists(), "SQLite file under the data dir");

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    let last = logs.lines().last().unwrap_or_default();
    let line: Value = serde_json::from_str(last).unwrap_or_else(|_| panic!("json log line: {last}"));
    assert_eq!(line["message"], "stopped");
}
