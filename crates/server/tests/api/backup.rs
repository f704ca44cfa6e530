//! `flashback backup`, `restore` and `backup verify` through the real binary, embedded: a
//! backup taken under write load restores every write acknowledged before it began; verify
//! proves a good backup (and the gauge shows it) and fails, naming the file, on a bad one.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flashback_core::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, test_config};

/// The gauge every instance exports.
pub const GAUGE: &str = "flashback_backup_last_verified_timestamp_seconds";

/// Runs the `flashback` binary on `data_dir` without blocking the runtime the servers share.
pub async fn flashback(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_flashback"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("FLASHBACK_LOG_LEVEL", "warn")
        .env("FLASHBACK_AUTH_ARGON2_MEMORY_KIB", "64")
        .env("FLASHBACK_AUTH_ARGON2_ITERATIONS", "1")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run flashback")
}

/// Standard error, for assertion messages.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Standard output as JSON (null if it is not).
pub fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Writes the load recorded as acknowledged, each with the moment it was.
#[derive(Default)]
pub struct Acked {
    /// (buyer's token, order id, when placed).
    pub orders: Vec<(String, String, Instant)>,
    /// (buyer's token, order id, when seen paid).
    pub paid: Vec<(String, String, Instant)>,
    /// (buyer's token, ticket id, when accepted).
    pub tickets: Vec<(String, String, Instant)>,
    /// (object id of a batch of 20 views, when accepted).
    pub tracked: Vec<(String, Instant)>,
}

impl Acked {
    /// Adds another task's record.
    pub fn extend(&mut self, other: Acked) {
        self.orders.extend(other.orders);
        self.paid.extend(other.paid);
        self.tickets.extend(other.tickets);
        self.tracked.extend(other.tracked);
    }
}

/// Places orders (every third paid, and seen paid) until `stop`, at most 300.
pub async fn order_load(app: Arc<TestApp>, token: String, product: String, stop: Arc<AtomicBool>) -> Acked {
    let mut acked = Acked::default();
    for i in 0..300 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let res = app
            .client
            .post(app.url("/api/v1/orders"))
            .bearer_auth(&token)
            .header("idempotency-key", format!("load-{i}"))
            .json(&json!({"lines": [{"product_id": product, "quantity": 1}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        acked.orders.push((token.clone(), id.clone(), Instant::now()));
        if i % 3 != 0 {
            continue;
        }
        let payment: Value =
            app.post(&format!("/api/v1/orders/{id}/payments"), Some(&token), &json!({})).await.json().await.unwrap();
        assert_eq!(
            app.post(payment["pay_url"].as_str().unwrap(), None, &json!({})).await.status(),
            StatusCode::ACCEPTED
        );
        for _ in 0..200 {
            let o: Value = app.get_as(&format!("/api/v1/orders/{id}"), &token).await.json().await.unwrap();
            if o["state"] == "paid" {
                acked.paid.push((token.clone(), id.clone(), Instant::now()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    acked
}

/// Buys from the flash sale every 15 ms until `stop`, at most 100 times (the most a sale may
/// allow one buyer).
pub async fn flash_load(app: Arc<TestApp>, token: String, sale: String, stop: Arc<AtomicBool>) -> Acked {
    let mut acked = Acked::default();
    for _ in 0..100 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
        let res = app.post(&format!("/api/v1/flash-sales/{sale}/purchase"), Some(&token), &json!({})).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "{:?}", res.text().await);
        let ticket = res.json::<Value>().await.unwrap()["ticket_id"].as_str().unwrap().to_owned();
        acked.tickets.push((token.clone(), ticket, Instant::now()));
    }
    acked
}

/// Sends tracking batches of 20 views of one object each until `stop`, at most 2,000.
pub async fn track_load(app: Arc<TestApp>, stop: Arc<AtomicBool>) -> Acked {
    let mut acked = Acked::default();
    for b in 0..2_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let object = format!("bk-{b}");
        let events: Vec<Value> = (0..20)
            .map(|v| {
                json!({"anonymous_id": format!("d{v}"), "module": "home", "action": "view",
                            "object_type": "sku", "object_id": object})
            })
            .collect();
        let res = app.post("/api/v1/track", None, &json!({"events": events})).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        acked.tracked.push((object, Instant::now()));
    }
    acked
}

/// Asserts that `app` (a server on a restored copy) holds every write acknowledged before
/// `began`: each order, paid ones paid, each flash ticket, each tracking batch counted once.
/// Returns how many writes it checked.
pub async fn assert_every_write_found(app: &TestApp, acked: &Acked, began: Instant) -> usize {
    let before = |at: &Instant| *at < began;
    let mut checked = 0;
    for (token, id, _) in acked.orders.iter().filter(|o| before(&o.2)) {
        let res = app.get_as(&format!("/api/v1/orders/{id}"), token).await;
        assert_eq!(res.status(), StatusCode::OK, "order {id} was lost");
        checked += 1;
    }
    for (token, id, _) in acked.paid.iter().filter(|o| before(&o.2)) {
        let o: Value = app.get_as(&format!("/api/v1/orders/{id}"), token).await.json().await.unwrap();
        assert_eq!(o["state"], "paid", "order {id} was paid before the backup");
    }
    for (token, ticket, _) in acked.tickets.iter().filter(|t| before(&t.2)) {
        let res = app.get_as(&format!("/api/v1/flash-sales/tickets/{ticket}"), token).await;
        assert_eq!(res.status(), StatusCode::OK, "flash ticket {ticket} was lost");
        checked += 1;
    }
    let started = Instant::now();
    while app.state.track.queue.backlog().await.unwrap() > 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the restored tracking queue never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = app.token_for("bkadmin", Role::Admin).await;
    let day = flashback_core::Day::of(flashback_server::trade::now_ms(), 0);
    for (object, _) in acked.tracked.iter().filter(|t| before(&t.1)) {
        let q = format!("/api/v1/track/stats?from={day}&to={day}&action=view&object_type=sku&object_id={object}");
        let stats: Value = app.get_as(&q, &admin).await.json().await.unwrap();
        assert_eq!(stats["pv"], 20, "tracking batch {object}: {stats}");
        checked += 1;
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_every_acknowledged_write_and_verify_proves_it() {
    let live = Arc::new(
        TestApp::spawn_with(|c| {
            c.flash_sale.per_user_per_sec = 10_000;
            c.flash_sale.per_ip_per_sec = 100_000;
            c.track.per_client_per_sec = 1_000_000;
            // Small segments: the tracking queue rolls and releases segments during the backup.
            c.track.segment_bytes = 16 * 1024;
        })
        .await,
    );
    let dir = live.state.config.data_dir.clone();
    let cat = live.category("Backup goods").await;
    let merchant = live.token_for("bkshop", Role::Merchant).await;
    let product = live.product(&merchant, &cat, "BK-1", 100_000).await["id"].as_str().unwrap().to_owned();
    let hot = live.product(&merchant, &cat, "BK-HOT", 10_000).await;
    let now = flashback_server::trade::now_ms();
    let body = json!({"product_id": hot["id"], "sale_price_minor": 100, "stock": 5_000, "per_user_limit": 100,
                      "starts_at": now - 1_000, "ends_at": now + 600_000});
    let sale: Value = live.post("/api/v1/flash-sales", Some(&merchant), &body).await.json().await.unwrap();
    let sale = sale["id"].as_str().unwrap_or_else(|| panic!("a sale: {sale}")).to_owned();
    let refreshed = flashback_server::backup::gauge::refresh(&live.state).await.unwrap();
    assert_eq!((refreshed, live.metric(GAUGE).await), (0, 0.0), "no verification yet");

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for b in 0..2 {
        let token = live.token_for(&format!("bkbuyer{b}"), Role::User).await;
        load.push(tokio::spawn(order_load(live.clone(), token, product.clone(), stop.clone())));
    }
    for b in 0..4 {
        let token = live.token_for(&format!("bkflash{b}"), Role::User).await;
        load.push(tokio::spawn(flash_load(live.clone(), token, sale.clone(), stop.clone())));
    }
    load.push(tokio::spawn(track_load(live.clone(), stop.clone())));
    tokio::time::sleep(Duration::from_millis(800)).await;

    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("b1");
    let began = Instant::now();
    let out = flashback(&dir, &["backup", "--to", to.to_str().unwrap()], &[]).await;
    let ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    assert!(out.status.success(), "backup: {}", stderr(&out));
    let summary = json_out(&out);
    assert_eq!(summary["backend"], "sqlite", "{summary}");
    let mut acked = Acked::default();
    for task in load {
        acked.extend(task.await.unwrap());
    }
    let during = |at: &Instant| *at >= began && *at < ended;
    let written_during = acked.orders.iter().filter(|o| during(&o.2)).count()
        + acked.tickets.iter().filter(|t| during(&t.2)).count()
        + acked.tracked.iter().filter(|t| during(&t.1)).count();
    assert!(written_during > 0, "the load went on while the backup ran");

    // Restore: never over a served directory, never over a non-empty one without --force.
    let from = ["restore", "--from", to.to_str().unwrap()];
    let refused = flashback(&dir, &from, &[]).await;
    assert!(!refused.status.success() && stderr(&refused).contains("running server"), "{}", stderr(&refused));
    let fresh = tempfile::tempdir().unwrap();
    let out = flashback(fresh.path(), &from, &[]).await;
    assert!(out.status.success(), "restore: {}", stderr(&out));
    let again = flashback(fresh.path(), &from, &[]).await;
    assert!(!again.status.success() && stderr(&again).contains("not empty"), "{}", stderr(&again));
    let forced = flashback(fresh.path(), &["restore", "--force", "--from", to.to_str().unwrap()], &[]).await;
    assert!(forced.status.success(), "forced restore: {}", stderr(&forced));

    // A server on the restored copy finds every write acknowledged before the backup began.
    let restored = TestApp::start(test_config(fresh.path()), fresh).await;
    let checked = assert_every_write_found(&restored, &acked, began).await;
    assert!(checked > 50 && !acked.paid.is_empty(), "the load wrote enough to check ({checked})");
    restored.shutdown().await;

    // Verify proves it, and records it where every instance reads the gauge from.
    let t0 = flashback_server::trade::now_ms() / 1000;
    let out = flashback(&dir, &["backup", "verify", to.to_str().unwrap()], &[]).await;
    let report = json_out(&out);
    assert!(out.status.success(), "verify: {report} {}", stderr(&out));
    assert_eq!(
        (report["ok"].clone(), report["recorded"].clone(), report["violations"].clone()),
        (json!(true), json!(true), json!(0))
    );
    assert!(!report["audits"]["flash_sales"][&sale].is_null(), "every flash sale audited: {report}");
    let t1 = flashback_server::trade::now_ms() / 1000;
    let seconds = flashback_server::backup::gauge::refresh(&live.state).await.unwrap();
    assert!((t0..=t1).contains(&seconds), "{seconds} not in {t0}..={t1}");
    assert_eq!(live.metric(GAUGE).await, seconds as f64);
    Arc::try_unwrap(live).ok().expect("load tasks are done").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_naming_a_corrupted_or_truncated_file_and_restore_touches_nothing() {
    let live = TestApp::spawn().await;
    let dir = live.state.config.data_dir.clone();
    let cat = live.category("Verify goods").await;
    let merchant = live.token_for("vshop", Role::Merchant).await;
    let product = live.product(&merchant, &cat, "V-1", 100).await;
    let buyer = live.token_for("vbuyer", Role::User).await;
    let res = live
        .client
        .post(live.url("/api/v1/orders"))
        .bearer_auth(&buyer)
        .header("idempotency-key", "v-1")
        .json(&json!({"lines": [{"product_id": product["id"], "quantity": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let backups = tempfile::tempdir().unwrap();
    let good = backups.path().join("good");
    let out = flashback(&dir, &["backup", "--to", good.to_str().unwrap()], &[]).await;
    assert!(out.status.success(), "backup: {}", stderr(&out));
    let out = flashback(&dir, &["backup", "--to", good.to_str().unwrap()], &[]).await;
    assert!(!out.status.success() && stderr(&out).contains("not empty"), "never into a used directory");

    let out = flashback(&dir, &["backup", "verify", "--no-record", good.to_str().unwrap()], &[]).await;
    assert!(out.status.success(), "verify: {} {}", json_out(&out), stderr(&out));
    assert_eq!(json_out(&out)["recorded"], false);
    assert_eq!(flashback_server::backup::gauge::refresh(&live.state).await.unwrap(), 0, "--no-record records nothing");

    let bad = |name: &str, damage: &dyn Fn(&Path)| {
        let copy = backups.path().join(name);
        copy_dir(&good, &copy);
        damage(&copy);
        copy
    };
    let flipped = bad("flipped", &|d| {
        let path = d.join("orders-0.db");
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(path, bytes).unwrap();
    });
    let cut = bad("cut", &|d| {
        let f = std::fs::OpenOptions::new().write(true).open(d.join("track.db")).unwrap();
        f.set_len(f.metadata().unwrap().len() - 4096).unwrap();
    });
    let unfinished = bad("unfinished", &|d| std::fs::remove_file(d.join("manifest.json")).unwrap());
    for (copy, file, says) in [
        (&flipped, "orders-0.db", "SHA-256"),
        (&cut, "track.db", "truncated"),
        (&unfinished, "manifest.json", "incomplete"),
    ] {
        let out = flashback(&dir, &["backup", "verify", copy.to_str().unwrap()], &[]).await;
        assert!(!out.status.success(), "verify passed a damaged backup ({file})");
        assert!(stderr(&out).contains(file) && stderr(&out).contains(says), "{file}: {}", stderr(&out));
        let target = backups.path().join(format!("restore-{file}"));
        let out = flashback(&target, &["restore", "--from", copy.to_str().unwrap()], &[]).await;
        assert!(!out.status.success() && stderr(&out).contains(file), "restore of a damaged backup: {}", stderr(&out));
        assert!(!target.exists(), "a refused restore writes nothing");
    }
    assert_eq!(flashback_server::backup::gauge::refresh(&live.state).await.unwrap(), 0, "failures record nothing");
    live.shutdown().await;
}
