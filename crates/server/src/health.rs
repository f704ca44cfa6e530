//! Liveness, readiness and the Prometheus endpoint.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

/// How long one dependency check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The operational routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// One dependency's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// The dependency.
    pub name: &'static str,
    /// `up` or `down`.
    pub status: &'static str,
    /// Details (backend, or why it is down).
    pub detail: String,
}

/// Readiness: every configured dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `not_ready` or `shutting_down`.
    pub status: &'static str,
    /// Each dependency.
    pub checks: Vec<Check>,
}

/// The process is alive (it answers). Does not look at dependencies.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

async fn check<F, E>(name: &'static str, up_detail: String, f: F) -> Check
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => Check { name, status: "up", detail: up_detail },
        Ok(Err(e)) => Check { name, status: "down", detail: e.to_string() },
        Err(_) => Check { name, status: "down", detail: "timed out".into() },
    }
}

/// The check of state kept on this instance (a journal), if it keeps any.
fn local(name: &'static str, up_detail: &str, readiness: Option<Result<(), String>>) -> Option<Check> {
    Some(match readiness? {
        Ok(()) => Check { name, status: "up", detail: up_detail.into() },
        Err(why) => Check { name, status: "down", detail: why },
    })
}

/// 200 only when every configured dependency answers and the instance is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut checks = vec![check("store", state.store.backend().to_owned(), state.store.ping()).await];
    if let Some(redis) = &state.redis {
        checks.push(check("redis", "l2 cache".into(), redis.ping()).await);
    }
    if let Some(bus) = &state.bus {
        // Connects again if the broker dropped the connection, so an instance comes back into
        // rotation by itself once the broker is back.
        checks.push(check("rabbitmq", "events".into(), bus.ensure_connected()).await);
    }
    checks.extend(local("flash_journal", state.flash.engine.name(), state.flash.engine.readiness()));
    checks.extend(local("track_queue", state.track.queue.kind(), state.track.queue.readiness()));
    let accepting = state.accepting.load(Ordering::Relaxed);
    let all_up = checks.iter().all(|c| c.status == "up");
    let (code, status) = match (accepting, all_up) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        (true, true) => (StatusCode::OK, "ready"),
    };
    (code, axum::Json(Readiness { status, checks }))
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}
