//! Debian's nginx with the repository's `deploy/nginx` configuration in front of two real
//! instances, started once for this test binary: requests reach both, the request id and the
//! client's address come through, the live stream is not buffered, static files get their
//! caching headers. Retries are in `nginx_retry.rs`. Without nginx these tests fail, saying
//! which package to install.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flashback_core::Role;
use flashback_harness::nginx::{Nginx, repo_deploy_dir};
use flashback_harness::watchdog::Watchdog;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, test_config};

/// Logins per client address per minute on the two instances: small, so the test of client
/// addresses reaches the limit quickly.
const LOGINS_PER_IP: u32 = 5;

/// Two embedded instances (trusting `X-Forwarded-For`, as behind nginx they should) and nginx
/// in front of them, on a runtime of their own that outlives each test's.
pub struct Cluster {
    pub a: TestApp,
    pub b: TestApp,
    pub nginx: Nginx,
    /// An admin's token, good on both (they share the token key).
    pub admin_token: String,
    _runtime: tokio::runtime::Runtime,
    // Removes the instances' data directories once this process is gone (statics never drop).
    _watchdog: Watchdog,
    _dir: tempfile::TempDir,
}

/// The cluster, started by the first test that asks.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    // Started on a thread of its own: a test's runtime cannot block on another runtime.
    CLUSTER.get_or_init(|| std::thread::spawn(start).join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
}

fn start() -> Cluster {
    let dir = tempfile::Builder::new().prefix("flashback-nginx-test-").tempdir().expect("temporary directory");
    let watchdog = Watchdog::spawn(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (a, b, admin_token) = runtime.block_on(async {
        let a = instance(dir.path()).await;
        let b = instance(dir.path()).await;
        let admin_token = a.token_for("nginx-admin", Role::Admin).await;
        (a, b, admin_token)
    });
    let nginx = Nginx::start(&repo_deploy_dir(), &[a.addr, b.addr]);
    Cluster { a, b, nginx, admin_token, _runtime: runtime, _watchdog: watchdog, _dir: dir }
}

async fn instance(root: &std::path::Path) -> TestApp {
    let dir = tempfile::Builder::new().prefix("instance-").tempdir_in(root).expect("data directory");
    let mut config = test_config(dir.path());
    config.http.trust_forwarded_for = true;
    config.auth.login_per_ip_per_minute = LOGINS_PER_IP;
    TestApp::start(config, dir).await
}

/// A client of this test's own (a pooled connection must not outlive the runtime it was made
/// on), from `from` when given.
pub fn client(from: Option<&str>) -> reqwest::Client {
    let local: Option<IpAddr> = from.map(|ip| ip.parse().expect("an IP address"));
    reqwest::Client::builder().timeout(Duration::from_secs(10)).local_address(local).build().expect("client")
}

/// nginx's access log line of the request with this `X-Request-Id` (written just after the
/// answer, so waited for).
pub async fn log_line(nginx: &Nginx, rid: &str) -> String {
    let suffix = format!(" rid={rid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = nginx.access_log().lines().find(|l| l.ends_with(&suffix)) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no access log line for {rid}:\n{}", nginx.access_log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `upstream="…"` field of an access log line: the instances tried, in order.
pub fn upstreams_of(line: &str) -> &str {
    let start = line.find("upstream=\"").map(|i| i + "upstream=\"".len()).expect("an upstream field");
    let len = line[start..].find('"').expect("a closing quote");
    &line[start..start + len]
}

/// A fresh request id for one request.
pub fn rid(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

async fn login_rejections_by_ip(http: &reqwest::Client, instance: SocketAddr) -> f64 {
    let text =
        http.get(format!("http://{instance}/metrics")).send().await.expect("metrics").text().await.expect("text");
    let sample = "flashback_auth_login_rejected_total{reason=\"ip\"} ";
    text.lines().find_map(|l| l.strip_prefix(sample)).map_or(0.0, |v| v.trim().parse().expect("a number"))
}

#[tokio::test]
async fn requests_through_nginx_reach_both_instances_and_keep_their_request_id() {
    let c = cluster();
    let http = client(None);
    let url = format!("{}/api/v1/categories", c.nginx.url());

    // Without an id, nginx makes one; the instance keeps and echoes it, and nginx logs it.
    let res = http.get(&url).send().await.expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let made = res.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert!(made.len() == 32 && made.bytes().all(|b| b.is_ascii_hexdigit()), "nginx's $request_id: {made}");
    log_line(&c.nginx, &made).await;

    let mut seen = HashSet::new();
    for _ in 0..40 {
        let id = rid("reach");
        let res = http.get(&url).header("x-request-id", &id).send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-request-id"], id.as_str(), "the caller's request id comes back");
        seen.insert(upstreams_of(&log_line(&c.nginx, &id).await).to_owned());
        if seen.contains(&c.a.addr.to_string()) && seen.contains(&c.b.addr.to_string()) {
            return;
        }
    }
    panic!("40 requests did not reach both {} and {}: {seen:?}", c.a.addr, c.b.addr);
}

#[tokio::test]
async fn the_instances_see_the_real_client_address_through_nginx() {
    let c = cluster();
    let metrics = client(None);
    // A client on 127.0.0.2 claims a new address in X-Forwarded-For on every attempt. nginx
    // appends the real one and the instances take the last hop, so its attempts all count
    // against 127.0.0.2 and it is refused on both instances.
    let spoofer = client(Some("127.0.0.2"));
    let mut refused = 0;
    for i in 0..60 {
        let body = json!({"username": format!("xff-{i}"), "password": "wrong-password"});
        let res = spoofer
            .post(format!("{}/api/v1/auth/login", c.nginx.url()))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&body)
            .send()
            .await
            .expect("login");
        match res.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
        if login_rejections_by_ip(&metrics, c.a.addr).await > 0.0
            && login_rejections_by_ip(&metrics, c.b.addr).await > 0.0
        {
            break;
        }
    }
    assert!(refused >= 2, "the per-address limit ignored the spoofed hops on both instances ({refused} refused)");
    assert!(login_rejections_by_ip(&metrics, c.a.addr).await > 0.0, "instance a counted a refusal");
    assert!(login_rejections_by_ip(&metrics, c.b.addr).await > 0.0, "instance b counted a refusal");

    // Another client behind the same nginx has its own allowance: the instances key on the
    // client, not on nginx's address.
    let other = client(Some("127.0.0.3"));
    for i in 0..4 {
        let body = json!({"username": format!("xff-other-{i}"), "password": "wrong-password"});
        let res = other.post(format!("{}/api/v1/auth/login", c.nginx.url())).json(&body).send().await.expect("login");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "127.0.0.3 is not limited by 127.0.0.2's attempts");
    }
}

#[tokio::test]
async fn the_live_stream_is_not_buffered_by_nginx() {
    let c = cluster();
    let http = client(None);
    let id = rid("live");
    let mut res = http
        .get(format!("{}/api/v1/live?access_token={}", c.nginx.url(), c.admin_token))
        .header("x-request-id", &id)
        // As a browser's EventSource asks.
        .header("accept-encoding", "gzip, deflate")
        .send()
        .await
        .expect("live stream");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert!(res.headers().get("content-encoding").is_none(), "events are not compressed (held back)");
    // The instance writes the first snapshot at once; a buffering proxy would hold it back
    // until its buffer filled.
    let first = tokio::time::timeout(Duration::from_secs(1), async {
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = res.chunk().await.expect("stream").expect("the stream goes on");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    })
    .await
    .expect("the first snapshot arrives within a second through nginx");
    assert!(first.starts_with("event: snapshot\n"), "{first}");
    drop(res);
    let line = log_line(&c.nginx, &id).await;
    assert!(line.contains("\"GET /api/v1/live HTTP/1.1\""), "{line}");
    assert!(!line.contains(&c.admin_token), "the token in the query string is not logged: {line}");
}

#[tokio::test]
async fn dashboard_files_are_cached_briefly_and_metrics_stay_private() {
    let c = cluster();
    let http = client(None);
    for (path, kind) in [("/dashboard/app.js", "text/javascript"), ("/dashboard/app.css", "text/css")] {
        let res = http.get(format!("{}{path}", c.nginx.url())).send().await.expect("asset");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(res.headers()["cache-control"], "public, max-age=60, must-revalidate", "{path}");
        assert!(res.headers()["content-type"].to_str().expect("ascii").starts_with(kind), "{path}");
    }
    // The page itself names the files: it is revalidated every time, as the instance says.
    let page = http.get(format!("{}/dashboard", c.nginx.url())).send().await.expect("page");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    // A hashed asset the instances do not have is not cached for a year.
    let missing = http.get(format!("{}/assets/app.0123abcd.js", c.nginx.url())).send().await.expect("asset");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.headers().get("cache-control").is_none_or(|v| !v.to_str().unwrap_or("").contains("immutable")));
    // Prometheus scrapes the instances directly; the public side does not serve /metrics.
    let metrics = http.get(format!("{}/metrics", c.nginx.url())).send().await.expect("metrics");
    assert_eq!(metrics.status(), StatusCode::NOT_FOUND);
    let direct = http.get(format!("http://{}/metrics", c.a.addr)).send().await.expect("metrics");
    assert_eq!(direct.status(), StatusCode::OK);
}
