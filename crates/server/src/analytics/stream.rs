//! `GET /api/v1/live`: the snapshot as Server-Sent Events, and the task that computes it.
//!
//! One broadcaster computes the snapshot every `analytics.snapshot_interval_ms` (only while
//! someone listens) into a `watch` channel, which keeps only the newest value: a client that
//! falls behind skips to the latest snapshot instead of queueing old ones. A new client gets a
//! snapshot at once, computed for it. Clients are capped at `analytics.max_clients` (503
//! `live_too_many_clients` past that); streams end when the instance shuts down.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use flashback_core::Role;
use futures::Stream;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;

use super::error::AnalyticsError;
use super::snapshot;
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::Query;

/// How a browser's `EventSource` (which cannot send headers) passes its token.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// An admin's access token, when no `Authorization` header is sent.
    pub access_token: Option<String>,
}

/// The admin behind the header, or else behind `access_token`.
fn admin(state: &AppState, header: Result<Caller, Problem>, token: Option<&str>) -> Result<Caller, Problem> {
    let caller = match (header, token) {
        (Ok(c), _) => c,
        (Err(_), Some(t)) => state.auth.tokens.verify(t.trim()).ok_or_else(|| {
            Problem::new(axum::http::StatusCode::UNAUTHORIZED, "invalid_token", "the token is invalid or expired")
        })?,
        (Err(e), None) => return Err(e),
    };
    caller.require(&[Role::Admin])?;
    Ok(caller)
}

struct Client {
    first: Option<String>,
    updates: watch::Receiver<Arc<str>>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

fn event(data: &str) -> Result<Event, Infallible> {
    Ok(Event::default().event("snapshot").data(data))
}

/// Live snapshots (`event: snapshot`, JSON data) about once a second, the first at once.
#[utoipa::path(get, path = "/api/v1/live", tag = "operations", security(("bearer" = [])), params(LiveQuery),
    responses((status = 200, content_type = "text/event-stream", body = snapshot::Snapshot,
        description = "A stream of `snapshot` events"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 503, body = Problem)))]
pub async fn live(
    State(state): State<AppState>,
    header: Result<Caller, Problem>,
    Query(q): Query<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    admin(&state, header, q.access_token.as_deref())?;
    let permit =
        Arc::clone(&state.analytics.clients).try_acquire_owned().map_err(|_| AnalyticsError::TooManyClients)?;
    let updates = state.analytics.latest.subscribe();
    let first = snapshot::build(&state).await.map_err(AnalyticsError::from)?;
    let first = serde_json::to_string(&first).map_err(|e| Problem::internal(&e))?;
    let client = Client { first: Some(first), updates, shutdown: state.shutdown.clone(), _permit: permit };
    let stream = futures::stream::unfold(client, |mut c| async move {
        if let Some(first) = c.first.take() {
            return Some((event(&first), c));
        }
        tokio::select! {
            () = c.shutdown.cancelled() => None,
            changed = c.updates.changed() => {
                changed.ok()?;
                let data = Arc::clone(&c.updates.borrow_and_update());
                Some((event(&data), c))
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Computes the snapshot every interval while anyone listens; stops on shutdown.
pub async fn broadcast(state: AppState) {
    let mut tick = tokio::time::interval(state.analytics.config().snapshot_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if state.analytics.latest.receiver_count() == 0 {
            continue;
        }
        match snapshot::build(&state).await {
            Ok(s) => match serde_json::to_string(&s) {
                Ok(json) => {
                    state.analytics.latest.send_replace(Arc::from(json));
                }
                Err(e) => tracing::error!(error = %e, "encoding the live snapshot failed"),
            },
            Err(e) => tracing::warn!(error = %e, "computing the live snapshot failed; will retry"),
        }
    }
}
