//! The `flashback` binary itself: subcommands, configuration errors, serving and SIGTERM.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;

fn flashback(dir: &std::path::Path, args: &[&str]) -> Output {
    flashback_with(dir, args, &[])
}

fn flashback_with(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flashback"))
        .envs(env.iter().copied())
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
    let out = flashback(dir.path(), &["audit", "ledger"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "ledger audit: {report} {}", stderr(&out));
    assert_eq!(report["violations"], serde_json::json!([]));
    // Four rows move money once each (the invalid one never does), however often it loads.
    assert_eq!(report["transactions"], 4, "the demo rebates are in the ledger once: {report}");
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

/// A `flashback serve` process on a free port of its own.
struct Server {
    child: std::process::Child,
    base: String,
}

impl Server {
    async fn start(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        // A port picked free can be taken by a parallel test before the server binds it: if the
        // server exits early, try again on another port.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashback"));
            cmd.arg("serve").args(extra).arg("--data-dir").arg(dir);
            cmd.env("FLASHBACK_LISTEN", format!("127.0.0.1:{port}"))
                .env("FLASHBACK_AUTH_ARGON2_MEMORY_KIB", "64")
                .env("FLASHBACK_AUTH_ARGON2_ITERATIONS", "1")
                .env("FLASHBACK_AUTH_LOGIN_PER_IP_PER_MINUTE", "10000")
                // No load balancer to drain away from (a test of the drain sets its own).
                .env("FLASHBACK_HTTP_DRAIN_DELAY_MS", "0")
                // Quiet: stderr is a pipe nobody reads in most tests, and a full pipe blocks the server.
                .env("FLASHBACK_LOG_LEVEL", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut server = Self { child: cmd.spawn().unwrap(), base: format!("http://127.0.0.1:{port}") };
            let client = reqwest::Client::new();
            let started = Instant::now();
            loop {
                if client.get(format!("{}/healthz", server.base)).send().await.is_ok() {
                    return server;
                }
                if let Some(status) = server.child.try_wait().unwrap() {
                    let mut err = String::new();
                    if let Some(mut e) = server.child.stderr.take() {
                        std::io::Read::read_to_string(&mut e, &mut err).ok();
                    }
                    last_error = format!("server exited with {status}: {err}");
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(60), "server did not come up");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("server did not start: {last_error}");
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }

    async fn wait(&mut self) -> std::process::ExitStatus {
        // Bounded: a server that does not stop is killed when this panics (see Drop).
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "server did not stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed test must not leave a server running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn serve_answers_on_the_given_address_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        Server::start(dir.path(), &["--demo", "--log-format", "json"], &[("FLASHBACK_LOG_LEVEL", "info")]).await;
    let client = reqwest::Client::new();
    for path in ["/readyz", "/metrics", "/api/v1/openapi.json", "/api/v1/products"] {
        assert_eq!(
            client.get(format!("{}{path}", server.base)).send().await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
    assert!(dir.path().join("flashback.db").exists(), "SQLite file under the data dir");

    server.signal("-TERM");
    let status = server.wait().await;
    assert!(status.success(), "exit status {status}");
    let mut logs = String::new();
    let mut stderr = server.child.stderr.take().unwrap();
    std::io::Read::read_to_string(&mut stderr, &mut logs).unwrap();
    let last = logs.lines().last().unwrap_or_default();
    let line: Value = serde_json::from_str(last).unwrap_or_else(|_| panic!("json log line: {last}"));
    assert_eq!(line["message"], "stopped");
}

fn audit(dir: &std::path::Path) -> (bool, Value) {
    let out = flashback(dir, &["audit", "trade"]);
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

/// Units of a product as `available + held + sold`, from an audit report.
fn units(report: &Value, product: &str) -> i64 {
    report["stock"][product].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).sum()
}

#[tokio::test]
async fn killing_the_process_mid_order_leaks_and_oversells_nothing_once_swept() {
    let dir = tempfile::tempdir().unwrap();
    // Sagas are cut off after 1 s, so reservations older than 1.5 s without an order are orphans.
    let env = [("FLASHBACK_HTTP_REQUEST_TIMEOUT_MS", "1000"), ("FLASHBACK_TRADE_ORPHAN_AFTER_MS", "1500")];
    // The demo data without `serve --demo`'s traffic generator, whose own orders would move the
    // counts this test compares.
    assert!(flashback_with(dir.path(), &["demo"], &env).status.success());
    let mut server = Server::start(dir.path(), &[], &env).await;
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{}/api/v1/auth/login", server.base))
        .json(&serde_json::json!({"username": "bob", "password": "bob-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let products: Value =
        client.get(format!("{}/api/v1/products?limit=1", server.base)).send().await.unwrap().json().await.unwrap();
    let product = products["items"][0]["id"].as_str().unwrap().to_owned();
    let (ok, before) = audit(dir.path());
    assert!(ok, "clean before: {before}");

    // A stream of orders, and a SIGKILL in the middle of it.
    let mut orders = Vec::new();
    for i in 0..60 {
        let (client, base, token, product) = (client.clone(), server.base.clone(), token.clone(), product.clone());
        orders.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 3)).await;
            client
                .post(format!("{base}/api/v1/orders"))
                .bearer_auth(&token)
                .header("idempotency-key", format!("kill-{i}"))
                .json(&serde_json::json!({"lines": [{"product_id": product, "quantity": 1}]}))
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    tokio::time::sleep(Duration::from_millis(90)).await;
    server.signal("-KILL");
    server.wait().await;
    let mut answered = 0;
    for o in orders {
        if matches!(o.await.unwrap(), Ok(s) if s == StatusCode::CREATED) {
            answered += 1;
        }
    }

    // Restart on the same files; the sweeper releases whatever the kill orphaned.
    let mut server = Server::start(dir.path(), &[], &env).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    server.signal("-TERM");
    assert!(server.wait().await.success());

    let (ok, after) = audit(dir.path());
    assert!(ok, "violations after the kill and sweep: {after}");
    assert_eq!(units(&after, &product), units(&before, &product), "no unit created or lost");
    let placed = after["by_state"]["pending_payment"].as_u64().unwrap()
        - before["by_state"]["pending_payment"].as_u64().unwrap();
    assert!(placed >= answered, "every order a client heard about exists ({placed} >= {answered})");
    let held = after["stock"][&product][1].as_i64().unwrap() - before["stock"][&product][1].as_i64().unwrap();
    assert_eq!(u64::try_from(held).unwrap(), placed, "exactly the surviving orders hold stock");
}

#[tokio::test]
async fn killing_the_process_mid_sale_loses_no_accepted_reservation() {
    kill_mid_sale(&[]).await;
}

#[tokio::test]
async fn killing_the_process_mid_sale_loses_no_accepted_reservation_on_the_redis_engine() {
    let Some(r) = crate::helpers::RedisOnly::get("flash redis engine") else { return };
    let env = [
        ("FLASHBACK_FLASH_SALE_ENGINE", "redis"),
        ("FLASHBACK_CACHE_REDIS_URL", r.url.as_str()),
        ("FLASHBACK_CACHE_REDIS_PREFIX", r.prefix.as_str()),
        ("FLASHBACK_NODE_ID", "7"),
    ];
    kill_mid_sale(&env).await;
}

/// A crowd buys, the process is killed with SIGKILL in the middle, and after a restart with
/// the same settings every ticket a client heard about becomes its order and the audits pass.
async fn kill_mid_sale(env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    // The demo data, quietly (see above).
    assert!(flashback_with(dir.path(), &["demo"], env).status.success());
    let mut server = Server::start(dir.path(), &[], env).await;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let login = |name: &'static str, password: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let v: Value = client
                .post(format!("{base}/api/v1/auth/login"))
                .json(&serde_json::json!({"username": name, "password": password}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let merchant = login("merchant", "merchant-password").await;
    let products: Value =
        client.get(format!("{base}/api/v1/products?limit=1")).send().await.unwrap().json().await.unwrap();
    let now = flashback_server::trade::now_ms();
    let sale: Value = client
        .post(format!("{base}/api/v1/flash-sales"))
        .bearer_auth(&merchant)
        .json(&serde_json::json!({"product_id": products["items"][0]["id"], "sale_price_minor": 1, "stock": 40,
            "per_user_limit": 1, "starts_at": now - 1000, "ends_at": now + 600_000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sale_id = sale["id"].as_str().unwrap().to_owned();
    let mut tokens = Vec::new();
    for i in 0..60 {
        let name = format!("killbuyer{i}");
        let body = serde_json::json!({"username": name, "password": "kill-buyer-pw"});
        client.post(format!("{base}/api/v1/auth/register")).json(&body).send().await.unwrap();
        let v: Value =
            client.post(format!("{base}/api/v1/auth/login")).json(&body).send().await.unwrap().json().await.unwrap();
        tokens.push(v["token"].as_str().unwrap().to_owned());
    }

    let mut attempts = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let (client, base, token, sale_id) = (client.clone(), base.clone(), token.clone(), sale_id.clone());
        attempts.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(u64::try_from(i).unwrap() * 2)).await;
            let res = client
                .post(format!("{base}/api/v1/flash-sales/{sale_id}/purchase"))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?;
            if res.status() != StatusCode::ACCEPTED {
                return None;
            }
            let v: Value = res.json().await.ok()?;
            Some((token, v["ticket_id"].as_str()?.to_owned()))
        }));
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    server.signal("-KILL");
    server.wait().await;
    let mut accepted = Vec::new();
    for a in attempts {
        if let Some(t) = a.await.unwrap() {
            accepted.push(t);
        }
    }

    // After a restart every ticket a client was told about exists and gets its order.
    let mut server = Server::start(dir.path(), &[], env).await;
    for (token, ticket) in &accepted {
        let started = Instant::now();
        loop {
            let res = client
                .get(format!("{}/api/v1/flash-sales/tickets/{ticket}", server.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK, "accepted ticket {ticket} was lost");
            let t: Value = res.json().await.unwrap();
            if t["status"] == "ordered" {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "ticket {ticket} never ordered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    server.signal("-TERM");
    assert!(server.wait().await.success());
    let out = flashback_with(dir.path(), &["audit", "flash-sale", &sale_id], env);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "flash-sale audit: {report} {}", stderr(&out));
    let held = report["queued"].as_i64().unwrap() + report["ordered"].as_i64().unwrap();
    assert!(held >= i64::try_from(accepted.len()).unwrap() && held <= 40, "held {held}, accepted {}", accepted.len());
    let (ok, trade) = audit(dir.path());
    assert!(ok, "trade audit: {trade}");
}

/// `serve --demo` runs a stand-in Taobao network and polls it: the demo shoppers see rebates
/// arrive from it, and the ledger audit passes afterwards.
#[tokio::test]
async fn the_demo_server_shows_rebates_flowing_from_the_stand_in_network() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--demo"], &[]).await;
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{}/api/v1/auth/login", server.base))
        .json(&serde_json::json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let started = Instant::now();
    loop {
        let page: Value = client
            .get(format!("{}/api/v1/me/rebates?limit=100", server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let from_network = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !r["line_key"].as_str().unwrap().starts_with("demo-"))
            .count();
        if from_network > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no rebate arrived from the network: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wallet: Value = client
        .get(format!("{}/api/v1/me/wallet", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(wallet["pending_minor"].as_i64().unwrap() + wallet["available_minor"].as_i64().unwrap() > 0, "{wallet}");
    server.signal("-TERM");
    assert!(server.wait().await.success());
    let out = flashback(dir.path(), &["audit", "ledger"]);
    assert!(out.status.success(), "ledger audit: {} {}", String::from_utf8_lossy(&out.stdout), stderr(&out));
}
