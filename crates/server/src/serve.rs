//! The accept loop, with a stop that cuts no request: `axum::serve`'s graceful shutdown closes
//! every connection that has no request under way at that instant, including one a proxy has
//! just sent a request down that the server has not read yet (the proxy sees a reset, and a
//! POST cannot be repeated). Here, when told to stop accepting:
//!
//! 1. connections already waiting in the listen queue are taken and served, then the listener
//!    closes (later connects are refused, which a proxy retries elsewhere for any method);
//! 2. open connections get [`LINGER`] to deliver a request already on its way;
//! 3. only then are idle connections closed, and requests under way run to the end.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long open connections may still deliver a request once the listener has closed.
pub const LINGER: Duration = Duration::from_millis(500);

/// Serves `router` on `listener` until `stop` is cancelled, then stops as the module docs say;
/// returns once every connection has closed.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken) {
    let connections = TaskTracker::new();
    let close_idle = CancellationToken::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => spawn(&connections, stream, peer, &router, &close_idle),
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
                    Ok(stream) => spawn(&connections, stream, peer, &router, &close_idle),
                    Err(e) => tracing::warn!(error = %e, "a queued connection could not be served"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "the listen queue could not be drained"),
    }
    connections.close();
    tokio::select! {
        () = connections.wait() => return,
        () = tokio::time::sleep(LINGER) => {}
    }
    close_idle.cancel();
    connections.wait().await;
}

fn spawn(
    connections: &TaskTracker,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: &Router,
    close_idle: &CancellationToken,
) {
    let router = router.clone();
    let close_idle = close_idle.clone();
    connections.spawn(async move {
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move { Ok::<_, Infallible>(tower::ServiceExt::oneshot(router, req).await.unwrap_or_else(|e| match e {})) }
        });
        let builder = Builder::new(TokioExecutor::new());
        let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
        let mut asked = false;
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
            }
        }
    });
}
