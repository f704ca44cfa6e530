//! The accept loop, with a stop that cuts no request: `axum::serve`'s graceful shutdown closes
//! every connection that has no request under way at that instant, including one a proxy has
//! just sent a request down that the server has not read yet (the proxy sees a reset, and a
//! POST cannot be repeated). Here, when told to stop accepting:
//!
//! 1. connections already waiting in the listen queue are taken and served, then the listener
//!    closes (later connects are refused, which a proxy retries elsewhere for any method);
//! 2. open connections get [`LINGER`] to deliver a request already on its way;
//! 3. only then are idle connections closed, and requests under way run to the end.
//!
//! Slow clients cannot hold connections: a connection that has not delivered a whole request
//! head within `http.header_read_timeout_ms` of opening is closed, whatever it sent (nothing, a
//! partial HTTP/2 preface, half a header), and on HTTP/1 hyper's own timer does the same for
//! every later request head, which also ends a kept-alive connection left idle that long. An
//! HTTP/2 connection with no request in flight for that long (a request counts until its
//! response body is finished or dropped, so a long stream keeps it open) is closed gracefully
//! (GOAWAY); HTTP/2 pings ([`H2_PING_INTERVAL`]) cut a peer that stops answering meanwhile.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use in_flight::{InFlight, Tracked};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod in_flight;

/// How long open connections may still deliver a request once the listener has closed.
pub const LINGER: Duration = Duration::from_millis(500);
/// How often the server pings each HTTP/2 peer.
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long an HTTP/2 ping may go unanswered before the connection is closed.
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `router` on `listener` until `stop` is cancelled, then stops as the module docs say;
/// returns once every connection has closed. A request head must arrive within
/// `header_read_timeout`, and an HTTP/2 connection idle that long is closed.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken, header_read_timeout: Duration) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(H2_PING_INTERVAL).keep_alive_timeout(H2_PING_TIMEOUT);
    let accept = Accept {
        builder,
        header_read_timeout,
        router,
        connections: TaskTracker::new(),
        close_idle: CancellationToken::new(),
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => accept.spawn(stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    // Every connection the kernel has queued, by accept(2) itself until it would block (the
    // runtime's readiness may not have seen the last arrivals yet), then the close.
    match listener.into_std() {
        Ok(listener) => {
            let _ = listener.set_nonblocking(true);
            while let Ok((stream, peer)) = listener.accept() {
                match stream.set_nonblocking(true).and_then(|()| tokio::net::TcpStream::from_std(stream)) {
                    Ok(stream) => accept.spawn(stream, peer),
                    Err(e) => tracing::warn!(error = %e, "a queued connection could not be served"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "the listen queue could not be drained"),
    }
    let Accept { connections, close_idle, .. } = accept;
    connections.close();
    tokio::select! {
        () = connections.wait() => return,
        () = tokio::time::sleep(LINGER) => {}
    }
    close_idle.cancel();
    connections.wait().await;
}

/// What every accepted connection is served with.
struct Accept {
    builder: Builder<TokioExecutor>,
    header_read_timeout: Duration,
    router: Router,
    connections: TaskTracker,
    close_idle: CancellationToken,
}

impl Accept {
    fn spawn(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let router = self.router.clone();
        let builder = self.builder.clone();
        let close_idle = self.close_idle.clone();
        let idle_after = self.header_read_timeout;
        let first_head = tokio::time::sleep(idle_after);
        self.connections.spawn(async move {
            let started = Arc::new(AtomicBool::new(false));
            let (in_flight, mut activity) = InFlight::new();
            let service = hyper::service::service_fn({
                let started = Arc::clone(&started);
                move |mut req: hyper::Request<Incoming>| {
                    started.store(true, Ordering::Relaxed);
                    // Only HTTP/2 needs counting (hyper's timer ends idle HTTP/1): an HTTP/1
                    // request costs no wake-up of the connection's task.
                    let guard = (req.version() == hyper::Version::HTTP_2).then(|| in_flight.start());
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let router = router.clone();
                    async move {
                        let res = tower::ServiceExt::oneshot(router, req).await.unwrap_or_else(|e| match e {});
                        Ok::<_, Infallible>(res.map(|body| Tracked::new(body, guard)))
                    }
                }
            });
            let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
            let mut first_head = pin!(first_head);
            let mut idle = pin!(tokio::time::sleep(idle_after));
            let (mut asked, mut timed, mut watching, mut idle_armed) = (false, true, true, false);
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    () = close_idle.cancelled(), if !asked => {
                        asked = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    // Before the protocol is known (no bytes, part of an HTTP/2 preface) hyper's
                    // timer is not running yet: no request head by now closes the connection.
                    () = first_head.as_mut(), if timed => {
                        timed = false;
                        if !started.load(Ordering::Relaxed) {
                            tracing::debug!(%peer, "no request head in time; closing the connection");
                            return;
                        }
                    }
                    // Requests in flight went up or down: with none left, the idle period starts.
                    changed = activity.changed(), if watching => {
                        watching = changed.is_ok();
                        idle_armed = watching && *activity.borrow_and_update() == 0;
                        if idle_armed {
                            idle.as_mut().reset(tokio::time::Instant::now() + idle_after);
                        }
                    }
                    // Only HTTP/2 requests are counted, so only an idle HTTP/2 connection gets here.
                    () = idle.as_mut(), if idle_armed && !asked => {
                        idle_armed = false;
                        tracing::debug!(%peer, "HTTP/2 connection idle; closing it");
                        asked = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
}
