//! HTTP/2 (prior knowledge, as a proxy speaking h2c would) and the idle timeout: a connection
//! with no request in flight for `http.header_read_timeout_ms` is closed; a request in flight,
//! a long event stream included, is never cut.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::body::Body;
use flashback_core::Role;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

use crate::helpers::TestApp;

/// The idle timeout here.
const IDLE: Duration = Duration::from_millis(300);
/// Far longer than the close takes; only a connection left open reaches it.
const HANG: Duration = Duration::from_secs(10);

fn with_short_idle(c: &mut flashback_server::config::Config) {
    c.http.header_read_timeout = IDLE;
    c.analytics.snapshot_interval = Duration::from_millis(100);
}

/// An HTTP/2 connection: the request sender, and the task that ends when the connection does.
async fn connect(addr: SocketAddr) -> (SendRequest<Body>, JoinHandle<hyper::Result<()>>) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    (sender, tokio::spawn(conn))
}

async fn get(
    sender: &mut SendRequest<Body>,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> hyper::Response<Incoming> {
    let mut req = Request::get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = sender.send_request(req.body(Body::empty()).unwrap()).await.expect("a response");
    assert_eq!(res.version(), Version::HTTP_2);
    res
}

/// The next data frame's length, or `None` when the body ended.
async fn next_data(body: &mut Incoming) -> Option<usize> {
    loop {
        let frame = poll_fn(|cx| hyper::body::Body::poll_frame(Pin::new(&mut *body), cx)).await?.expect("frame");
        if let Ok(data) = frame.into_data() {
            return Some(data.len());
        }
    }
}

async fn closes(conn: JoinHandle<hyper::Result<()>>) {
    let ended = tokio::time::timeout(HANG, conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection is still open after {HANG:?}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(with_short_idle).await;
    let (mut sender, conn) = connect(app.addr).await;
    for _ in 0..2 {
        let res = get(&mut sender, app.addr, "/healthz", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        axum::body::to_bytes(Body::new(res.into_body()), usize::MAX).await.expect("body");
    }
    closes(conn).await;
    assert!(sender.is_closed(), "told to go away");
    app.shutdown().await;
}

#[tokio::test]
async fn an_http2_connection_is_not_closed_while_a_long_stream_runs() {
    let app = TestApp::spawn_with(with_short_idle).await;
    let admin = app.token_for("h2admin", Role::Admin).await;
    let (mut sender, conn) = connect(app.addr).await;
    let res = get(&mut sender, app.addr, "/api/v1/live", Some(&admin)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = res.into_body();
    // Snapshots for five idle periods: the stream is in flight all along.
    let started = Instant::now();
    let mut frames = 0;
    while started.elapsed() < IDLE * 5 {
        assert!(next_data(&mut stream).await.is_some(), "the stream was cut");
        frames += 1;
    }
    assert!(frames >= 2, "{frames} frames");
    assert!(!conn.is_finished(), "the connection was closed under a running stream");
    // The connection still takes requests beside the stream.
    assert_eq!(get(&mut sender, app.addr, "/healthz", None).await.status(), StatusCode::OK);
    assert!(next_data(&mut stream).await.is_some(), "the stream still runs");
    // Once the stream is dropped nothing is in flight: the connection goes idle and is closed.
    drop(stream);
    closes(conn).await;
    app.shutdown().await;
}
