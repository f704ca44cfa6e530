//! Reading a `track` run back through the stats API (as an admin): PV of the run's module per
//! action from the rollups, the same from the day tables hour by hour, and the writer's
//! backlog from `/metrics`.

use std::time::{Duration, Instant};

use anyhow::Context;
use flashback_core::Day;
use serde_json::Value;

use super::events::ACTIONS;
use crate::api::Api;

/// How often the drain is polled.
const POLL: Duration = Duration::from_millis(100);

/// The days a run's events can fall on under any day offset: yesterday to tomorrow (UTC).
pub fn days(now_ms: i64) -> Vec<Day> {
    let first = Day::of(now_ms - 86_400_000, 0);
    let mut days = vec![first];
    for _ in 0..2 {
        let next = days[days.len() - 1].next();
        days.push(next);
    }
    days
}

/// Page views of `module` per action (in [`ACTIONS`] order) from the rollups over `days`.
pub async fn rollup_pv(api: &Api, token: &str, days: &[Day], module: &str) -> anyhow::Result<[i64; 3]> {
    let (from, to) = (days[0], days[days.len() - 1]);
    let mut pv = [0; 3];
    for (slot, (action, _)) in pv.iter_mut().zip(ACTIONS) {
        let path = format!("api/v1/track/stats?from={from}&to={to}&action={action}&module={module}");
        let v: Value = api.get(&path, Some(token)).await.context("reading tracking stats")?;
        *slot = v.get("pv").and_then(Value::as_i64).context("stats: no pv")?;
    }
    Ok(pv)
}

/// Page views of `module` per action from the day tables, hour by hour, over `days`.
pub async fn hourly_pv(api: &Api, token: &str, days: &[Day], module: &str) -> anyhow::Result<[i64; 3]> {
    let mut pv = [0; 3];
    for (slot, (action, _)) in pv.iter_mut().zip(ACTIONS) {
        for day in days {
            let path = format!("api/v1/track/hourly?day={day}&action={action}&module={module}");
            let v: Value = api.get(&path, Some(token)).await.context("reading hourly tracking stats")?;
            let hours = v.get("hours").and_then(Value::as_array).context("hourly: no hours")?;
            *slot += hours.iter().filter_map(|h| h.get("pv").and_then(Value::as_i64)).sum::<i64>();
        }
    }
    Ok(pv)
}

/// Unique visitors of `module`'s views over `days`, as the sketches estimate them.
pub async fn view_uv(api: &Api, token: &str, days: &[Day], module: &str) -> anyhow::Result<u64> {
    let (from, to) = (days[0], days[days.len() - 1]);
    let path = format!("api/v1/track/stats?from={from}&to={to}&action=view&module={module}");
    let v: Value = api.get(&path, Some(token)).await.context("reading tracking stats")?;
    v.get("uv").and_then(Value::as_u64).context("stats: no uv")
}

/// Polls the rollups until `module` holds `expected` events (→ when, since `since`) or `timeout`
/// passes (→ `None`). Returns the last total seen too.
pub async fn wait_drained(
    api: &Api,
    token: &str,
    days: &[Day],
    module: &str,
    expected: i64,
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<(Option<Duration>, i64)> {
    let started = Instant::now();
    let mut last_note = Instant::now();
    loop {
        let total: i64 = rollup_pv(api, token, days, module).await?.iter().sum();
        if total >= expected {
            return Ok((Some(since.elapsed()), total));
        }
        if started.elapsed() > timeout {
            return Ok((None, total));
        }
        if last_note.elapsed() >= Duration::from_secs(1) {
            eprintln!("[drain {:>3.0}s] stored {total} of {expected}", since.elapsed().as_secs_f64());
            last_note = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `flashback_track_backlog` from `/metrics`.
pub async fn backlog(api: &Api) -> anyhow::Result<Option<i64>> {
    let text = api.http().get(api.url("metrics")?).send().await.context("GET /metrics")?.text().await?;
    Ok(text.lines().find_map(|l| l.strip_prefix("flashback_track_backlog ")).and_then(|v| v.trim().parse::<i64>().ok()))
}

/// Waits up to `timeout` for the backlog gauge to read 0 (the writer sets it after each pass).
pub async fn backlog_settles(api: &Api, timeout: Duration) -> anyhow::Result<Option<i64>> {
    let started = Instant::now();
    loop {
        let b = backlog(api).await?;
        if b == Some(0) || started.elapsed() > timeout {
            return Ok(b);
        }
        tokio::time::sleep(POLL).await;
    }
}
