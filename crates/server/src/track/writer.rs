//! The writer: drains the tracking queue into the day tables in large transactions, and the
//! retention task that drops old days. The writer sleeps in `pull` while the queue is empty
//! and, after downtime, catches up batch by batch from where its last commit ended.

use std::time::Duration;

use flashback_core::Day;
use tokio::task::JoinHandle;

use super::queue::LOCAL_CURSOR;
use crate::AppState;

/// Starts the writer; it stops on shutdown.
pub fn spawn(state: &AppState) -> JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let cancel = state.shutdown.clone();
        tokio::select! {
            () = cancel.cancelled() => {}
            () = run(&state) => {}
        }
    })
}

/// One pass: pull a batch, store it, acknowledge it. Returns the events newly stored, or
/// `None` when the queue stayed empty for the idle wait.
pub async fn drain_once(state: &AppState) -> anyhow::Result<Option<u64>> {
    let (track, c) = (&state.track, &state.config.track);
    let Some(pulled) = track.queue.pull(c.writer_batch_events, c.writer_idle).await? else {
        return Ok(None);
    };
    let cursor = pulled.cursor.map(|cur| (LOCAL_CURSOR, cur));
    match track.store.write(&pulled.events, cursor).await {
        Ok(written) => {
            track.queue.ack(&pulled).await?;
            state.metrics.track_written.inc_by(written);
            Ok(Some(written))
        }
        Err(e) => {
            track.queue.nack(&pulled).await?;
            Err(anyhow::Error::new(e).context(format!("writing {} tracking events", pulled.events.len())))
        }
    }
}

async fn run(state: &AppState) {
    let mut failures = 0u32;
    loop {
        match drain_once(state).await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %format!("{e:#}"), failures, "tracking writer: batch failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(25)))).await;
            }
        }
        if let Ok(backlog) = state.track.queue.backlog().await {
            state.metrics.track_backlog.set(i64::try_from(backlog).unwrap_or(i64::MAX));
        }
    }
}

/// Drops day tables past `track.retention_days`, hourly; also prunes the ingest limiter.
pub fn spawn_retention(state: &AppState) -> JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            state.track.ingest.prune();
            if let Err(e) = apply_retention(&state).await {
                tracing::warn!(error = %e, "tracking retention failed; next hour again");
            }
        }
    })
}

/// Drops the days before the retention window; returns them.
pub async fn apply_retention(state: &AppState) -> anyhow::Result<Vec<Day>> {
    let store = &state.track.store;
    let today = store.day_of(crate::trade::now_ms());
    let keep = i64::from(state.config.track.retention_days) - 1;
    let keep_from = store.day_of(store.day_start_ms(today) - keep * 86_400_000);
    let dropped = store.drop_before(keep_from).await?;
    if !dropped.is_empty() {
        tracing::info!(days = ?dropped.iter().map(ToString::to_string).collect::<Vec<_>>(), "dropped old tracking days");
    }
    Ok(dropped)
}
