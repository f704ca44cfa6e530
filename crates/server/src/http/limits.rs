//! The time and size limits of a request, told apart by whose doing a breach is.
//!
//! - A request still unanswered after `http.request_timeout_ms` is abandoned. If the handler
//!   was waiting for more of the client's body at that moment, the client stalled: `408
//!   request_timeout`, and the connection is closed. Otherwise the server was too slow: `503
//!   timeout` (counted as shed).
//! - A request whose `Content-Length` declares more than any route accepts is answered `413
//!   payload_too_large` at once, without reading (or waiting for) its body. Bodies without a
//!   declared length are still cut off by the extractors' limits as they arrive.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::Problem;
use crate::metrics::Metrics;

/// What [`time_limit`] needs.
#[derive(Debug, Clone)]
pub struct TimeLimit {
    /// `http.request_timeout_ms`.
    pub timeout: Duration,
    /// Where shed requests are counted.
    pub metrics: Arc<Metrics>,
}

/// Runs the request for at most its time; answers 408 or 503 as the module docs say.
pub async fn time_limit(State(limit): State<TimeLimit>, req: Request, next: Next) -> Response {
    let waiting = Arc::new(AtomicBool::new(false));
    // A request without a body cannot keep the server waiting for one.
    let req = if req.body().is_end_stream() {
        req
    } else {
        req.map(|inner| Body::new(Watched { inner, waiting: Arc::clone(&waiting) }))
    };
    match tokio::time::timeout(limit.timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) if waiting.load(Ordering::Relaxed) => close(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        )),
        Err(_) => {
            limit.metrics.shed("timeout");
            Problem::unavailable("timeout", "the request took too long and was abandoned").into_response()
        }
    }
}

/// Refuses a request whose declared length is over `limit` bytes, before its body is read.
pub async fn declared_length(State(limit): State<u64>, req: Request, next: Next) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return close(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is larger than allowed",
        ));
    }
    next.run(req).await
}

/// The answer, with the connection closed after it: the rest of the request's body was not
/// read, so nothing more can be read from the connection.
fn close(problem: Problem) -> Response {
    let mut res = problem.into_response();
    res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// A request body that notes whether its reader is waiting for the client.
struct Watched {
    inner: Body,
    waiting: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.waiting.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
