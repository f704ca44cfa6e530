//! What nginx (the repository's `deploy/nginx`) sends again to another instance, and what it
//! never repeats. Each test puts its own nginx (it starts in milliseconds) in front of one
//! instance of the shared cluster and one that fails: a closed port, or a stand-in for an
//! instance dying mid-request that takes a request and closes the connection unanswered.
//! A stand-in also serves the content-hashed assets of a shopper app that does not exist yet.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use flashback_harness::nginx::{Nginx, repo_deploy_dir};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::nginx::{client, cluster, log_line, rid, upstreams_of};

/// A stand-in upstream that records the head of every request it takes.
struct StandIn {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl StandIn {
    /// Takes each request whole, then closes the connection without a word.
    async fn vanishing() -> Self {
        Self::serve(None).await
    }

    /// Answers every request `200` with `Cache-Control: no-cache`, as a file server would.
    async fn answering() -> Self {
        Self::serve(Some(
            "HTTP/1.1 200 OK\r\nContent-Type: text/javascript\r\nCache-Control: no-cache\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n;\n",
        ))
        .await
    }

    async fn serve(answer: Option<&'static str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    if let Some(head) = read_request(&mut conn).await {
                        recorded.lock().expect("heads").push(head);
                        if let Some(answer) = answer {
                            let _ = conn.write_all(answer.as_bytes()).await;
                        }
                    }
                });
            }
        });
        Self { addr, heads }
    }

    /// The head (lower-cased) of the request with this `X-Request-Id`, if it came here.
    fn took(&self, rid: &str) -> Option<String> {
        let needle = format!("\r\nx-request-id: {}\r\n", rid.to_ascii_lowercase());
        self.heads.lock().expect("heads").iter().find(|h| h.contains(&needle)).cloned()
    }
}

/// Reads one request, head and body (by `Content-Length`, at most 64 KiB in all); its head.
async fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 65_536 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
        .min(65_536);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(head)
}

/// A loopback address nothing listens on.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// Registers `username` through `base` (nginx or an instance), with an Idempotency-Key if given.
async fn register(http: &reqwest::Client, base: &str, username: &str, id: &str, key: Option<&str>) -> StatusCode {
    let mut req = http
        .post(format!("{base}/api/v1/auth/register"))
        .header("x-request-id", id)
        .json(&json!({"username": username, "password": "retry-password"}));
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.send().await.expect("register").status()
}

fn username() -> String {
    format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[tokio::test]
async fn a_refused_connection_moves_even_a_plain_post_to_another_instance() {
    let c = cluster();
    let closed = closed_port();
    let nginx = Nginx::start(&repo_deploy_dir(), &[closed, c.a.addr]);
    let http = client(None);
    let retried = format!("{closed}, {}", c.a.addr);
    for _ in 0..10 {
        let id = rid("refused");
        // Nothing reached the closed port, so repeating the POST elsewhere is safe.
        assert_eq!(register(&http, &nginx.url(), &username(), &id, None).await, StatusCode::CREATED);
        if upstreams_of(&log_line(&nginx, &id).await) == retried {
            return;
        }
    }
    panic!("no POST was tried on the closed port first:\n{}", nginx.access_log());
}

#[tokio::test]
async fn a_get_is_retried_on_another_instance_when_one_drops_it() {
    let c = cluster();
    let gone = StandIn::vanishing().await;
    let nginx = Nginx::start(&repo_deploy_dir(), &[gone.addr, c.a.addr]);
    let http = client(None);
    for _ in 0..10 {
        let id = rid("get");
        let res = http
            .get(format!("{}/api/v1/categories", nginx.url()))
            .header("x-request-id", &id)
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{}", nginx.error_log());
        if let Some(head) = gone.took(&id) {
            assert_eq!(upstreams_of(&log_line(&nginx, &id).await), format!("{}, {}", gone.addr, c.a.addr));
            // What an instance is told about the request.
            assert!(head.contains("\r\nx-forwarded-for: 203.0.113.7, 127.0.0.1\r\n"), "{head}");
            assert!(head.contains("\r\nx-forwarded-proto: http\r\n"), "{head}");
            assert!(head.starts_with("get /api/v1/categories http/1.1\r\n"), "{head}");
            assert!(!head.contains("\r\nconnection: close"), "upstream connections are kept alive: {head}");
            return;
        }
    }
    panic!("no GET reached the dying stand-in:\n{}", nginx.access_log());
}

#[tokio::test]
async fn a_post_without_idempotency_key_is_never_repeated_once_sent() {
    let c = cluster();
    let gone = StandIn::vanishing().await;
    let nginx = Nginx::start(&repo_deploy_dir(), &[gone.addr, c.a.addr]);
    let http = client(None);
    for _ in 0..10 {
        let (id, name) = (rid("post"), username());
        let status = register(&http, &nginx.url(), &name, &id, None).await;
        if gone.took(&id).is_none() {
            assert_eq!(status, StatusCode::CREATED);
            continue;
        }
        assert_eq!(status, StatusCode::BAD_GATEWAY, "the caller learns it failed");
        assert_eq!(upstreams_of(&log_line(&nginx, &id).await), gone.addr.to_string(), "tried once only");
        // The live instance never had it: the name is still free there.
        let direct = format!("http://{}", c.a.addr);
        assert_eq!(register(&http, &direct, &name, &rid("check"), None).await, StatusCode::CREATED);
        return;
    }
    panic!("no POST reached the dying stand-in:\n{}", nginx.access_log());
}

#[tokio::test]
async fn a_post_with_idempotency_key_is_sent_again_to_another_instance() {
    let c = cluster();
    let gone = StandIn::vanishing().await;
    let nginx = Nginx::start(&repo_deploy_dir(), &[gone.addr, c.a.addr]);
    let http = client(None);
    for _ in 0..10 {
        let (id, name) = (rid("keyed"), username());
        let status = register(&http, &nginx.url(), &name, &id, Some(&id)).await;
        assert_eq!(status, StatusCode::CREATED, "{}", nginx.error_log());
        if gone.took(&id).is_some() {
            assert_eq!(upstreams_of(&log_line(&nginx, &id).await), format!("{}, {}", gone.addr, c.a.addr));
            assert!(gone.took(&id).is_some_and(|h| h.contains(&format!("\r\nidempotency-key: {id}\r\n"))));
            // It reached the live instance: the name is taken there.
            let direct = format!("http://{}", c.a.addr);
            assert_eq!(register(&http, &direct, &name, &rid("check"), None).await, StatusCode::CONFLICT);
            return;
        }
    }
    panic!("no keyed POST reached the dying stand-in:\n{}", nginx.access_log());
}

#[tokio::test]
async fn content_hashed_assets_are_cached_for_a_year() {
    // The shopper app that will serve /assets/ does not exist yet: a stand-in file server.
    let files = StandIn::answering().await;
    let nginx = Nginx::start(&repo_deploy_dir(), &[files.addr]);
    let res = client(None).get(format!("{}/assets/app.0123abcd.js", nginx.url())).send().await.expect("asset");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(res.headers().get_all("cache-control").iter().count(), 1, "the upstream's no-cache is replaced");
}
