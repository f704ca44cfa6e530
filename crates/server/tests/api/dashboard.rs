//! The live dashboard in a real browser: headless Chromium driven through chromedriver (Debian's
//! `chromium` and `chromium-driver`) with fantoccini. The test logs in on the page, places and
//! pays orders through the API, watches the GMV and order figures move, approves a withdrawal
//! on the page, and takes a screenshot.
//! Without chromedriver it fails and says what to install: it never passes silently.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use flashback_core::{Account, Role, UserId};
use flashback_server::trade::outbox;
use flashback_store::{NewTxn, Posting};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::analytics::paid_order;
use crate::helpers::TestApp;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let path = std::env::var("FLASHBACK_TEST_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.to_owned());
    assert!(
        Path::new(&path).exists(),
        "chromedriver not found at {path}: the browser test needs Debian's chromium and chromium-driver \
         (apt-get install -y chromium chromium-driver; .ci/run installs them)"
    );
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let child = Command::new(&path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {path}: {e}"));
    let driver = Driver { child, port };
    let started = Instant::now();
    let status = format!("http://127.0.0.1:{port}/status");
    while !reqwest::get(&status).await.is_ok_and(|r| r.status() == StatusCode::OK) {
        assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not answer on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = std::env::var("FLASHBACK_TEST_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned());
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1100", format!("--user-data-dir={}", profile.display())]
        }
    });
    let Value::Object(caps) = caps else { unreachable!() };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromium session")
}

async fn attr(c: &Client, css: &str, name: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.attr(name).await.ok()?
}

/// Waits until `css`'s attribute `name` equals `want`; answers what it last saw.
async fn wait_for_attr(c: &Client, css: &str, name: &str, want: &str) -> Option<String> {
    let started = Instant::now();
    loop {
        let seen = attr(c, css, name).await;
        if seen.as_deref() == Some(want) || started.elapsed() > Duration::from_secs(15) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Gives `token`'s user `amount` available (a manual ledger entry) and requests a withdrawal
/// of it; answers the withdrawal's id.
async fn withdrawal_requested(app: &TestApp, token: &str, amount: i64) -> String {
    let me: Value = app.get_as("/api/v1/me", token).await.json().await.unwrap();
    let user = UserId::parse(me["id"].as_str().unwrap()).unwrap();
    let txn = NewTxn {
        id: app.state.ids.write_ids().event,
        key: format!("dash-grant:{user}"),
        kind: "manual".into(),
        reference: "dashboard test".into(),
        postings: vec![Posting::debit(Account::Receivable, amount), Posting::credit(Account::Available(user), amount)],
        no_overdraft: Vec::new(),
        at_ms: flashback_server::trade::now_ms(),
    };
    app.state.store.post(&txn).await.unwrap();
    let body = json!({"amount_minor": amount, "payee": "dash@example.com"});
    let res = app.post("/api/v1/me/withdrawals", Some(token), &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn wait_for_text(c: &Client, css: &str, want: &str) -> String {
    let started = Instant::now();
    loop {
        let seen = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if seen == want || started.elapsed() > Duration::from_secs(10) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_dashboard_shows_gmv_and_orders_move_as_orders_are_paid_and_approves_withdrawals() {
    let driver = start_driver().await;
    let app = TestApp::spawn_with(|c| c.analytics.snapshot_interval = Duration::from_millis(250)).await;
    let _admin = app.token_for("dashadmin", Role::Admin).await;
    let cat = app.category("Dash things").await;
    let merchant = app.token_for("dashshop", Role::Merchant).await;
    let product = app.product(&merchant, &cat, "DASH-1", 100).await;
    let product = product["id"].as_str().unwrap().to_owned();
    let buyer = app.token_for("dashbuyer", Role::User).await;

    let profile = app.state.config.data_dir.join("chromium-profile");
    let c = browser(&driver, &profile).await;
    c.goto(&app.url("/dashboard")).await.expect("page loads");
    assert_eq!(c.title().await.unwrap(), "Flashback · live operations");
    c.find(Locator::Id("username")).await.unwrap().send_keys("dashadmin").await.unwrap();
    c.find(Locator::Id("password")).await.unwrap().send_keys("dashadmin-password").await.unwrap();
    c.find(Locator::Id("login-button")).await.unwrap().click().await.unwrap();
    assert_eq!(wait_for_attr(&c, "#live-status", "class", "pill live").await.as_deref(), Some("pill live"));
    assert_eq!(attr(&c, "#gmv-today", "data-minor").await.as_deref(), Some("0"));

    let mut gmv = paid_order(&app, &buyer, &[(&product, 2)]).await;
    gmv += paid_order(&app, &buyer, &[(&product, 1)]).await;
    outbox::drain(&app.state).await.unwrap();
    let gmv = gmv.to_string();
    assert_eq!(wait_for_attr(&c, "#gmv-today", "data-minor", &gmv).await, Some(gmv.clone()), "GMV on the page");
    assert_eq!(wait_for_attr(&c, "#orders-today", "data-count", "2").await.as_deref(), Some("2"), "orders");
    let shown = c.find(Locator::Id("gmv-today")).await.unwrap().text().await.unwrap();
    assert_eq!(shown, "59.97", "3 × 19.99 as money");
    let health = c.find(Locator::Id("health")).await.unwrap().text().await.unwrap();
    assert!(health.contains("store: up"), "{health}");
    let withdrawals = c.find(Locator::Id("withdrawals")).await.unwrap().text().await.unwrap();
    assert!(withdrawals.contains("Nothing to review"), "{withdrawals}");

    // A withdrawal to review appears (the list refreshes every 5 s) and is approved on the page.
    let id = withdrawal_requested(&app, &buyer, 2500).await;
    let row = format!("tr[data-withdrawal-id='{id}']");
    let started = Instant::now();
    let approve = loop {
        if let Ok(button) = c.find(Locator::Css(&format!("{row} button"))).await {
            break button;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the withdrawal never showed up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    approve.click().await.unwrap();
    let started = Instant::now();
    while app.state.store.withdrawal(id.parse().unwrap()).await.unwrap().unwrap().state.as_str() != "paid" {
        assert!(started.elapsed() < Duration::from_secs(10), "approving on the page paid the withdrawal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let message = wait_for_text(&c, "#withdrawal-message", &format!("Withdrawal {id}: paid.")).await;
    assert_eq!(message, format!("Withdrawal {id}: paid."));

    let png = c.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let shot = app.state.config.data_dir.join("dashboard.png");
    std::fs::write(&shot, &png).unwrap();
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    c.close().await.unwrap();
    app.shutdown().await;
}
