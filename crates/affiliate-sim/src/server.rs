//! The running network: state, router, the `/sim/*` control endpoints, and `start`/`shutdown`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::SimClock;
use crate::config::SimConfig;
use crate::dataset::{SimOrder, dataset};
use crate::postback::{PostbackStats, Pusher};
use crate::rng::{Rng, stream};
use crate::wire::format_beijing;
use crate::{postback, settlement, top};

/// How long `shutdown` lets requests in flight finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct SimState {
    pub config: SimConfig,
    pub orders: Vec<SimOrder>,
    pub clock: SimClock,
    pub pusher: Option<Arc<Pusher>>,
    pub cancel: CancellationToken,
    requests: AtomicU64,
}

impl SimState {
    /// A TOP-looking request id, deterministic per seed and request number.
    pub fn next_request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let mut rng = Rng::for_stream(self.config.seed, stream::REQUEST_ID, n);
        format!("{:013x}", rng.next_u64() >> 12)
    }
}

/// A network serving on `addr`, with its clock and data set. Dropping it stops the server and
/// the pusher too (without waiting); [`RunningSim::shutdown`] stops them and waits.
#[derive(Debug)]
pub struct RunningSim {
    /// The bound address (the real port when started on port 0).
    pub addr: SocketAddr,
    /// The network's clock (shared with `SimConfig::time`).
    pub clock: SimClock,
    state: Arc<SimState>,
    cancel: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    pusher: Option<JoinHandle<()>>,
}

impl RunningSim {
    /// `http://<addr>`, with an unspecified bind address (0.0.0.0, ::) replaced by loopback.
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
        }
        format!("http://{addr}")
    }

    /// The TOP gateway URL, `{base_url}/router/rest`.
    pub fn router_url(&self) -> String {
        format!("{}/router/rest", self.base_url())
    }

    /// The data set being served (same as `dataset(&config)`).
    pub fn orders(&self) -> &[SimOrder] {
        &self.state.orders
    }

    /// The configuration being served.
    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    /// Pushes every postback due on the network's clock now and returns the totals; `None`
    /// when postbacks are not configured. Same as `POST /sim/postbacks/flush`.
    pub async fn flush_postbacks(&self) -> Option<PostbackStats> {
        flush(&self.state).await
    }

    /// Stops accepting, lets requests in flight finish (at most 5 s), stops the pusher, and
    /// waits for both.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        if let Some(pusher) = self.pusher.take() {
            pusher.await.context("postback task panicked")?;
        }
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(joined) => joined.context("server task panicked")?.context("server failed")?,
                Err(_) => {
                    server.abort();
                    tracing::warn!("requests still running after the grace period were cut off");
                }
            }
        }
        Ok(())
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Builds the data set for `config` and serves it on `listen` (port 0 picks a free port; read
/// it back from [`RunningSim::addr`]). The network is ready when this returns. Must run
/// inside a Tokio runtime.
pub async fn start(config: SimConfig, listen: SocketAddr) -> anyhow::Result<RunningSim> {
    config.validate()?;
    let orders = dataset(&config);
    let pusher = config.postback.clone().map(|p| Pusher::new(p, &orders)).transpose()?.map(Arc::new);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let clock = config.time.clone();
    let state = Arc::new(SimState {
        config,
        orders,
        clock: clock.clone(),
        pusher: pusher.clone(),
        cancel: cancel.clone(),
        requests: AtomicU64::new(0),
    });

    let app = router(state.clone());
    let server =
        tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(cancel.clone().cancelled_owned()).into_future());
    let pusher = pusher.map(|pusher| tokio::spawn(postback::run(state.clone(), pusher, cancel.clone())));
    tracing::info!(%addr, orders = state.orders.len(), "affiliate network simulator listening");
    Ok(RunningSim { addr, clock, state, cancel, server: Some(server), pusher })
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/router/rest", get(top::gateway).post(top::gateway))
        .route("/sim/clock", get(clock_get).post(clock_set))
        .route("/sim/postbacks/flush", post(flush_handler))
        .route("/sim/settlement-report", get(settlement::report))
        .with_state(state)
}

/// The clock as `/sim/clock` shows it.
#[derive(Debug, Serialize)]
struct ClockView {
    now_ms: i64,
    now: String,
    scale: f64,
}

fn clock_view(clock: &SimClock) -> ClockView {
    let now_ms = clock.now_ms();
    ClockView { now_ms, now: format_beijing(now_ms), scale: clock.scale() }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockChange {
    now_ms: Option<i64>,
    advance_ms: Option<i64>,
    scale: Option<f64>,
}

async fn clock_get(State(state): State<Arc<SimState>>) -> Json<ClockView> {
    Json(clock_view(&state.clock))
}

async fn clock_set(State(state): State<Arc<SimState>>, Json(change): Json<ClockChange>) -> Response {
    match (change.now_ms, change.advance_ms) {
        (Some(_), Some(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": "give now_ms or advance_ms, not both"})),
            )
                .into_response();
        }
        (Some(now_ms), None) => state.clock.set_ms(now_ms),
        (None, Some(delta_ms)) => {
            state.clock.advance_ms(delta_ms);
        }
        (None, None) => {}
    }
    if let Some(scale) = change.scale {
        state.clock.set_scale(scale);
    }
    tracing::info!(sim.now_ms = state.clock.now_ms(), "clock moved");
    Json(clock_view(&state.clock)).into_response()
}

async fn flush(state: &SimState) -> Option<PostbackStats> {
    let pusher = state.pusher.as_ref()?;
    Some(pusher.push_due(&state.orders, state.clock.now_ms(), &state.cancel).await)
}

async fn flush_handler(State(state): State<Arc<SimState>>) -> Response {
    match flush(&state).await {
        Some(stats) => Json(stats).into_response(),
        None => {
            (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "postbacks are not configured"}))).into_response()
        }
    }
}
