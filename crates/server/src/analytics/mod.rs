//! Real-time analytics: aggregates of the domain events, the live stream and the dashboard.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::config::Config;

/// Real-time analytics and the live dashboard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {}

/// Live aggregates of one instance.
#[derive(Debug)]
pub struct Live {}

impl Live {
    /// Builds the aggregates.
    pub async fn build(_config: &Config) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {}))
    }
}

/// The analytics routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}

/// The consumer and broadcaster tasks.
pub fn spawn(_state: &AppState) -> Vec<JoinHandle<()>> {
    Vec::new()
}
