//! Clients that send too slowly or declare too much, over raw TCP: a connection that does not
//! deliver a whole request head in time is closed, a body that stalls is the client's fault
//! (408), and a declared length over the limit is refused before any of the body is read (413).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

/// Longer than any answer here takes; only a connection left hanging reaches it.
const HANG: Duration = Duration::from_secs(10);

/// Sends `bytes`, then reads until the server closes the connection: what it answered, or
/// `None` if it was still open after [`HANG`].
async fn send_then_read(addr: SocketAddr, bytes: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> Option<String> {
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    let read_all = async {
        // A reset after the answer also ends it.
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(HANG, read_all).await.ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn connections_that_do_not_deliver_a_whole_request_head_in_time_are_closed() {
    let app = TestApp::spawn_with(|c| c.http.header_read_timeout = Duration::from_millis(300)).await;
    let starts: [&[u8]; 4] = [
        b"",                                     // nothing at all
        b"GET /hea",                             // part of a request line
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n", // half a header
        b"PRI * HTTP/2.0\r\n",                   // part of the HTTP/2 preface
    ];
    let mut open = Vec::new();
    for start in starts {
        for _ in 0..5 {
            let mut stream = TcpStream::connect(app.addr).await.expect("connect");
            stream.write_all(start).await.expect("write");
            open.push((start, stream));
        }
    }
    for (start, mut stream) in open {
        let answer = read_to_close(&mut stream).await;
        let start = String::from_utf8_lossy(start);
        assert!(answer.is_some(), "a connection that sent {start:?} is still open");
        assert!(!answer.unwrap_or_default().contains("200 OK"), "{start:?} was not a request");
    }
    // Whole requests are still served, on fresh and on kept-alive connections.
    for _ in 0..3 {
        assert_eq!(app.get("/healthz").await.status(), reqwest::StatusCode::OK);
    }
    app.shutdown().await;
}

/// A registration whose body is declared `declared` bytes long and cut off after 11.
fn stalled_post(declared: usize) -> Vec<u8> {
    format!(
        "POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n{{\"username\""
    )
    .into_bytes()
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_the_connection_closed() {
    let app = TestApp::spawn_with(|c| c.http.request_timeout = Duration::from_millis(300)).await;
    let answer = send_then_read(app.addr, &stalled_post(100)).await.expect("an answer, not a hang");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    // The server's own slowness is not counted as the client's, nor the client's as the server's.
    assert_eq!(app.metric(r#"flashback_http_shed_total{reason="timeout"}"#).await, 0.0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_413_before_the_body_is_read() {
    // The request time limit is far beyond the hang limit: only a refusal at once answers.
    let app = TestApp::spawn_with(|c| c.http.request_timeout = Duration::from_secs(120)).await;
    let answer = send_then_read(app.addr, &stalled_post(10_485_760)).await.expect("an answer at once, not a hang");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":\"payload_too_large\""), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // Within the limit, the same stall waits for the body (and then times out, tested above).
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(&stalled_post(100)).await.expect("write");
    let waited = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut [0; 64])).await;
    assert!(waited.is_err(), "a body within the limit is waited for");
    drop(stream);
    app.shutdown().await;
}
