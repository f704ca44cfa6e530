//! Requests in flight on one connection: each counts from the moment hyper hands it over
//! until its response body has been sent in full or dropped, so a long stream (server-sent
//! events) counts for as long as it runs.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use hyper::body::{Frame, SizeHint};
use tokio::sync::watch;

/// One connection's count of requests in flight.
#[derive(Clone)]
pub(super) struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    /// A count at zero, and the receiver the connection watches it with.
    pub(super) fn new() -> (Self, watch::Receiver<usize>) {
        let (count, watched) = watch::channel(0);
        (Self(Arc::new(count)), watched)
    }

    /// Counts one request until the guard is dropped.
    pub(super) fn start(&self) -> Guard {
        self.0.send_modify(|n| *n += 1);
        Guard(Arc::clone(&self.0))
    }
}

/// One request counted in flight.
pub(super) struct Guard(Arc<watch::Sender<usize>>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A response body holding its request's [`Guard`] (if it is counted) until the body is
/// finished or dropped.
pub(super) struct Tracked {
    body: Body,
    _guard: Option<Guard>,
}

impl Tracked {
    pub(super) fn new(body: Body, guard: Option<Guard>) -> Self {
        Self { body, _guard: guard }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
