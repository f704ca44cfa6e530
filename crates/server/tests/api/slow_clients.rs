//! Clients that send too slowly, over raw TCP: a connection that does not deliver a whole
//! request head in time is closed.

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
