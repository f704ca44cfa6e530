//! `flashback_backup_last_verified_timestamp_seconds`: every instance reads when the newest
//! successful `backup verify` finished from the store, at start and every minute, so an alert
//! can fire on any instance when the last proven backup grows old.

use std::time::Duration;

use crate::AppState;

/// How often the gauge is refreshed.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Reads the newest verification and sets the gauge (0 when there is none); returns the value.
pub async fn refresh(state: &AppState) -> Result<i64, flashback_store::StoreError> {
    let seconds = state.store.last_backup_verified_ms().await?.map_or(0, |ms| ms.div_euclid(1000));
    state.metrics.backup_last_verified.set(seconds);
    Ok(seconds)
}

/// Refreshes the gauge at once and then every [`REFRESH`] until shutdown. A failed read keeps
/// the last value (the store being down is reported elsewhere).
pub fn spawn(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = refresh(&state).await {
                tracing::warn!(error = %e, "reading the last verified backup failed; will retry");
            }
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
        }
    })
}
