//! Behaviour tracking: `POST /api/v1/track` queues events durably, a writer drains the queue
//! into daily tables and rollups, and the stats API reads them.

use std::sync::Arc;

use flashback_infra::{RabbitBus, RedisHandle};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::config::Config;

/// Behaviour tracking: ingest limits, the queue, the writer and retention.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackConfig {}

/// The tracking pipeline of one instance.
#[derive(Debug)]
pub struct Tracking {}

impl Tracking {
    /// Opens the queue and the tracking store.
    pub async fn build(
        _config: &Config,
        _redis: Option<&RedisHandle>,
        _bus: Option<&RabbitBus>,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {}))
    }
}

/// The tracking routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}

/// The writer and retention tasks.
pub fn spawn(_state: &AppState) -> Vec<JoinHandle<()>> {
    Vec::new()
}
