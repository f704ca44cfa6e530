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
use crate::metrics::DependencyLabel;

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
    /// The dependency (`store`, `shard-0`, `redis`, `rabbitmq`, `flash_journal`, `track_queue`).
    pub name: String,
    /// `up` or `down`.
    pub status: &'static str,
    /// Whether this instance cannot serve without it. A critical check down makes the instance
    /// not ready; any other only degraded.
    pub critical: bool,
    /// Details (backend, or why it is down).
    pub detail: String,
}

/// Readiness: every configured dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `degraded` (serving without a dependency it can do without), `not_ready` or
    /// `shutting_down`.
    pub status: &'static str,
    /// Each dependency.
    pub checks: Vec<Check>,
    /// Each dependency's circuit breaker.
    pub breakers: Vec<BreakerView>,
}

/// One circuit breaker's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerView {
    /// The dependency (`redis`, `store`, `shard-0`, `replica-0`, `rabbitmq`, `payments`, …).
    pub dependency: String,
    /// `closed`, `open` (failing fast) or `half_open` (one call probing).
    pub state: &'static str,
}

/// The process is alive (it answers). Does not look at dependencies.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

async fn check<F, E>(name: String, critical: bool, up_detail: String, f: F) -> Check
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let (status, detail) = match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => ("up", up_detail),
        Ok(Err(e)) => ("down", e.to_string()),
        Err(_) => ("down", "timed out".into()),
    };
    Check { name, status, critical, detail }
}

/// The check of state kept on this instance (a journal), if it keeps any: always critical,
/// since no other instance can stand in for it.
fn local(name: &str, up_detail: &str, readiness: Option<Result<(), String>>) -> Option<Check> {
    let (status, detail) = match readiness? {
        Ok(()) => ("up", up_detail.to_owned()),
        Err(why) => ("down", why),
    };
    Some(Check { name: name.to_owned(), status, critical: true, detail })
}

/// Checks every dependency at once and exports the outcome (`flashback_dependency_up`,
/// `flashback_degraded`). The main store and this instance's journals are critical; order
/// shards, Redis and RabbitMQ are not: without them the instance still serves what does not
/// need them (other shards' buyers, the store behind the cache, orders whose events wait in
/// the outbox), and a load balancer has no better instance to send the request to, since they
/// are shared.
pub async fn check_all(state: &AppState) -> Vec<Check> {
    let store = check("store".into(), true, state.store.backend().to_owned(), state.store.ping());
    let shards = futures::future::join_all(
        state
            .shards
            .all()
            .iter()
            .enumerate()
            .map(|(i, shard)| check(format!("shard-{i}"), false, shard.backend().to_owned(), shard.ping())),
    );
    let redis = async {
        match &state.redis {
            Some(redis) => Some(check("redis".into(), false, "cache, limits, flash engine".into(), redis.ping()).await),
            None => None,
        }
    };
    let bus = async {
        match &state.bus {
            // Connects again if the broker dropped the connection, so events flow again by
            // themselves once the broker is back.
            Some(bus) => Some(check("rabbitmq".into(), false, "events".into(), bus.ensure_connected()).await),
            None => None,
        }
    };
    let (store, shards, redis, bus) = tokio::join!(store, shards, redis, bus);
    let mut checks = vec![store];
    checks.extend(shards);
    checks.extend(redis);
    checks.extend(bus);
    checks.extend(local("flash_journal", state.flash.engine.name(), state.flash.engine.readiness()));
    checks.extend(local("track_queue", state.track.queue.kind(), state.track.queue.readiness()));
    let node = state.node.node();
    let lease = if state.node.is_held() { Ok(()) } else { Err(format!("the lease on node {node} is not renewed")) };
    checks.extend(local("node_lease", &format!("node {node}"), Some(lease)));
    for c in &checks {
        let label = DependencyLabel { dependency: c.name.clone() };
        state.metrics.dependency_up.get_or_create(&label).set(i64::from(c.status == "up"));
    }
    let degraded = checks.iter().any(|c| !c.critical && c.status != "up");
    state.metrics.degraded.set(i64::from(degraded));
    checks
}

/// 200 while the instance can serve (`ready`, or `degraded` with a non-critical dependency
/// down); 503 when a critical one is down or the instance is stopping.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let checks = check_all(&state).await;
    let accepting = state.accepting.load(Ordering::Relaxed);
    let critical_down = checks.iter().any(|c| c.critical && c.status != "up");
    let any_down = checks.iter().any(|c| c.status != "up");
    let (code, status) = match (accepting, critical_down, any_down) {
        (false, _, _) => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        (true, true, _) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        (true, false, true) => (StatusCode::OK, "degraded"),
        (true, false, false) => (StatusCode::OK, "ready"),
    };
    let breakers = state
        .breakers
        .iter()
        .map(|b| BreakerView { dependency: b.name().to_owned(), state: b.state().as_str() })
        .collect();
    (code, axum::Json(Readiness { status, checks, breakers }))
}

/// Samples the queues an operator watches: the outbox (every shard), the memory engine's
/// journal, and the dead letters on RabbitMQ. A source that does not answer keeps its last
/// value (its dependency gauge says why).
async fn sample_backlogs(state: &AppState) {
    let counts = futures::future::join_all(state.shards.all().iter().map(|s| s.outbox_backlog())).await;
    if counts.iter().all(Result::is_ok) {
        let total: u64 = counts.into_iter().flatten().sum();
        state.metrics.outbox_pending.set(i64::try_from(total).unwrap_or(i64::MAX));
    }
    if let Some(n) = state.flash.engine.unrecorded() {
        state.metrics.flash_journal_pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    if let Some(bus) = &state.bus
        && let Ok(Ok(n)) = tokio::time::timeout(CHECK_TIMEOUT, bus.message_count(&bus.dead_letter_queue())).await
    {
        state.metrics.dead_letters.set(i64::from(n));
    }
}

/// Checks every dependency and samples the backlogs every `interval` until shutdown, so the
/// gauges stay current (and the store breakers get their probes) when nothing polls `/readyz`.
pub fn spawn_monitor(state: &AppState, interval: Duration) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            check_all(&state).await;
            sample_backlogs(&state).await;
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    })
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, body = String, content_type = "application/openmetrics-text")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}
