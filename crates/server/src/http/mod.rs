//! HTTP plumbing shared by every feature: errors, extractors and the middleware stack.

pub mod client_ip;
pub mod error;
pub mod extract;
pub mod limits;
pub mod schema;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

pub use error::Problem;

use crate::config::HttpConfig;
use crate::metrics::{Metrics, RequestLabels, RouteLabels};

/// The request id header, set on every request (kept if the client or proxy sent one) and
/// echoed on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The server's protections for API routes, outermost first: a declared body longer than
/// `largest_body` refused at once (413), load shedding (a global concurrency limit that answers
/// 503 instead of queueing), the request time limit (503, or 408 for a client that stalls
/// sending its body; see [`limits`]) and the body limit.
///
/// Probes and metrics stay outside them, so an overloaded instance still answers its liveness
/// probe (and is not restarted for being busy) and can still be scraped.
pub fn protect(router: Router, config: &HttpConfig, largest_body: usize, metrics: Arc<Metrics>) -> Router {
    let time_limit = limits::TimeLimit { timeout: config.request_timeout, metrics: Arc::clone(&metrics) };
    let protections = ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(u64::try_from(largest_body).unwrap_or(u64::MAX), limits::declared_length))
        .layer(HandleErrorLayer::new(move |err: tower::BoxError| {
            let metrics = Arc::clone(&metrics);
            async move { overload_response(&err, &metrics) }
        }))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(config.max_concurrency))
        .layer(middleware::from_fn_with_state(time_limit, limits::time_limit));
    router.layer(axum::extract::DefaultBodyLimit::max(config.body_limit_bytes)).layer(protections)
}

/// The layers every route gets, outermost first: request id (kept if sent, echoed on the
/// response), sensitive-header redaction, a tracing span, `Connection: close` while draining,
/// RED metrics and a panic catcher. `accepting` turns false when the instance starts to stop.
pub fn observe(router: Router, metrics: Arc<Metrics>, accepting: Arc<AtomicBool>) -> Router {
    router
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            tracing::error!("handler panicked");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an unexpected error occurred").into_response()
        }))
        .layer(middleware::from_fn_with_state(metrics, record_red_metrics))
        .layer(middleware::from_fn_with_state(accepting, close_while_draining))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request.id = %id)
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
}

fn overload_response(err: &tower::BoxError, metrics: &Metrics) -> Response {
    if err.is::<tower::load_shed::error::Overloaded>() {
        metrics.shed("overloaded");
        Problem::unavailable("overloaded", "the server is at capacity; retry shortly").into_response()
    } else {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an unexpected error occurred").into_response()
    }
}

/// While the instance drains, every response asks the client (or proxy) to close the
/// connection, so kept-alive connections end one by one after a complete answer instead of
/// being cut when the listener closes.
async fn close_while_draining(State(accepting): State<Arc<AtomicBool>>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    if !accepting.load(Ordering::Relaxed) {
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// Rate, errors and duration per route template (never the raw path, which would explode the
/// label space).
async fn record_red_metrics(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = req.method().to_string();
    let started = Instant::now();
    metrics.in_flight.inc();
    let res = next.run(req).await;
    metrics.in_flight.dec();
    let elapsed: Duration = started.elapsed();
    metrics
        .latency
        .get_or_create(&RouteLabels { method: method.clone(), route: route.clone() })
        .observe(elapsed.as_secs_f64());
    metrics.requests.get_or_create(&RequestLabels { method, route, status: res.status().as_u16() }).inc();
    res
}
