//! Builds the router from every feature's routes, binds the listener, runs until shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::http::{self, Problem};
use crate::{AppState, analytics, auth, catalog, flash_sale, health, rebate, track, trade};

#[derive(OpenApi)]
#[openapi(
    info(title = "Flashback", description = "High-concurrency cashback commerce platform."),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "catalog"), (name = "trade"), (name = "flash-sales"), (name = "operations"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The complete router (every route, the OpenAPI document and the middleware stack).
pub fn router(state: AppState) -> Router {
    let (api, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes())
        .merge(catalog::routes())
        .merge(trade::routes(&state.config.trade))
        .merge(flash_sale::routes())
        .merge(rebate::routes())
        .merge(track::routes())
        .merge(analytics::routes())
        .split_for_parts();
    let (ops, ops_doc) = OpenApiRouter::new().merge(health::routes()).split_for_parts();
    openapi.merge(ops_doc);
    let openapi_json = serde_json::to_value(&openapi)
        .map(crate::api_doc::finish)
        .and_then(|doc| serde_json::to_string_pretty(&doc))
        .unwrap_or_default();
    let ops = ops.route(
        "/api/v1/openapi.json",
        axum::routing::get(move || async move { ([("content-type", "application/json")], openapi_json) }),
    );
    // No route reads a body longer than this (tracking has a limit of its own).
    let largest_body = state.config.http.body_limit_bytes.max(state.config.track.max_body_bytes);
    let api = http::protect(api.with_state(state.clone()), &state.config.http, largest_body, state.metrics.clone());
    let all = ops
        .with_state(state.clone())
        .merge(api)
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
                .into_response()
        });
    http::observe(all, state.metrics.clone(), state.accepting.clone())
}

/// How often dependencies are checked for the gauges and the store breakers.
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long background loops get to stop by themselves at shutdown before they are aborted.
const BACKGROUND_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A built instance, bound to its address and ready to serve.
#[derive(Debug)]
pub struct App {
    /// Shared state (tests reach into it).
    pub state: AppState,
    listener: TcpListener,
    background: Vec<JoinHandle<()>>,
}

impl App {
    /// Builds the state, starts background work and binds `config.listen` (port 0 picks one).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listen = config.listen;
        let state = AppState::build(config).await?;
        let mut background = vec![
            state.node.spawn_renewal(state.shutdown.clone()),
            auth::spawn_limiter_pruning(&state),
            health::spawn_monitor(&state, HEALTH_INTERVAL),
        ];
        background.push(state.products.listen_for_invalidations(state.shutdown.clone()).await?);
        background.extend(trade::spawn_background(&state));
        background.extend(track::spawn(&state));
        background.extend(analytics::spawn(&state));
        background.push(crate::backup::gauge::spawn(&state));
        if let Some(connector) =
            rebate::taobao::Connector::from_config(&state.config.rebate, state.config.breaker.settings())
        {
            background.push(rebate::taobao::spawn_poller(&state, connector));
        }
        let listener = TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
        let mut own = listener.local_addr()?;
        if own.ip().is_unspecified() {
            own.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        state.trade.simulator.set_notify_url(format!("http://{own}/api/v1/payments/notify"));
        Ok(Self { state, listener, background })
    }

    /// Starts another background task that stops with the instance.
    pub fn spawn(&mut self, task: JoinHandle<()>) {
        self.background.push(task);
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| self.state.config.listen)
    }

    /// Serves until `shutdown` completes, then drains: readiness answers 503 and every response
    /// carries `Connection: close` for `http.drain_delay_ms` (cut short by
    /// [`Services::skip_drain`](crate::state::Services::skip_drain)) while the listener still
    /// serves, so load balancers move away before anything is refused. Then it stops accepting,
    /// lets requests in flight finish (for at most `http.shutdown_grace_ms`), stops background
    /// work and closes the store. Losing the node number (see [`crate::node`]) stops it the
    /// same way, and then it returns an error.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { state, listener, background } = self;
        let token = state.shutdown.clone();
        tokio::spawn({
            let (state, token) = (state.clone(), token.clone());
            async move {
                tokio::select! {
                    () = shutdown => {}
                    // Another instance took this one's node number: stop, as for a signal.
                    () = state.node.lost().cancelled() => {}
                }
                state.accepting.store(false, Ordering::Relaxed);
                let drain = state.config.http.drain_delay;
                if !drain.is_zero() {
                    tracing::info!(drain_ms = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX), "draining");
                    tokio::select! {
                        () = tokio::time::sleep(drain) => {}
                        () = state.skip_drain.cancelled() => tracing::info!("drain cut short"),
                    }
                }
                token.cancel();
            }
        });
        let header_read_timeout = state.config.http.header_read_timeout;
        let serve = crate::serve::serve(listener, router(state.clone()), token.clone(), header_read_timeout);
        let grace = state.config.http.shutdown_grace;
        tokio::select! {
            () = serve => {}
            () = async { token.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX), "shutdown grace elapsed; abandoning requests in flight");
            }
        }
        // Background loops watch the shutdown token: a moment to finish their round and give
        // up their leases (so another instance takes the job at once), then they are stopped.
        let stoppers: Vec<_> = background.iter().map(JoinHandle::abort_handle).collect();
        let _ = tokio::time::timeout(BACKGROUND_GRACE, futures::future::join_all(background)).await;
        for task in stoppers {
            task.abort();
        }
        state.store.close().await;
        state.shards.close().await;
        tracing::info!("stopped");
        anyhow::ensure!(
            !state.node.lost().is_cancelled(),
            "stopped: another instance took this instance's node number"
        );
        Ok(())
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        () = term => tracing::info!("SIGTERM received; shutting down"),
    }
}
