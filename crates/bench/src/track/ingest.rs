//! The ingest phase: C clients take the prepared batches in turn and post each to
//! `POST /api/v1/track` until it is answered 202 (durable). 429 and 503 are retried after
//! their `Retry-After`, transport failures a few times; every answer is counted by status.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use reqwest::StatusCode;
use serde_json::Value;

/// Transport failures tolerated per batch before it is given up.
const TRANSPORT_RETRIES: u32 = 3;

/// What the ingest phase came to.
#[derive(Debug)]
pub struct IngestResult {
    /// From the first request until the last answer.
    pub elapsed: Duration,
    /// Events the server queued (its `accepted`, summed).
    pub accepted: u64,
    /// Events it reported as repeats.
    pub duplicates: u64,
    /// Events it reported as too late.
    pub too_late: u64,
    /// Batches that never got a 202.
    pub failed_batches: u64,
    /// Events in them.
    pub failed_events: u64,
    /// Every answer that was not 202, by status (`503`, `429`, `transport`, …).
    pub non_202: BTreeMap<String, u64>,
    /// Latency of every request, microseconds.
    pub latency: Histogram<u64>,
}

#[derive(Default)]
struct Totals {
    done_batches: AtomicUsize,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    too_late: AtomicU64,
    failed_batches: AtomicU64,
    failed_events: AtomicU64,
    retried: AtomicU64,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating a latency histogram")
}

/// Posts every body with `clients` concurrent clients; `sizes[i]` is the event count of body i.
pub async fn run(
    http: &reqwest::Client,
    url: url::Url,
    bodies: Arc<Vec<Vec<u8>>>,
    sizes: Arc<Vec<usize>>,
    clients: usize,
    gzip: bool,
) -> anyhow::Result<IngestResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let totals = Arc::new(Totals::default());
    let non_202: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let start = Instant::now();
    let ticker = tokio::spawn(progress(start, Arc::clone(&totals), bodies.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, url, bodies, sizes) = (http.clone(), url.clone(), Arc::clone(&bodies), Arc::clone(&sizes));
        let (next, totals, non_202) = (Arc::clone(&next), Arc::clone(&totals), Arc::clone(&non_202));
        let mut latency = histogram()?;
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                post_one(&http, &url, body, sizes[i], gzip, &totals, &non_202, &mut latency).await;
                totals.done_batches.fetch_add(1, Ordering::Relaxed);
            }
            latency
        });
    }
    let mut latency = histogram()?;
    while let Some(joined) = tasks.join_next().await {
        latency.add(joined.context("an ingest client panicked")?).context("merging histograms")?;
    }
    let elapsed = start.elapsed();
    ticker.abort();
    let non_202 = std::mem::take(&mut *non_202.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(IngestResult {
        elapsed,
        accepted: totals.accepted.load(Ordering::Relaxed),
        duplicates: totals.duplicates.load(Ordering::Relaxed),
        too_late: totals.too_late.load(Ordering::Relaxed),
        failed_batches: totals.failed_batches.load(Ordering::Relaxed),
        failed_events: totals.failed_events.load(Ordering::Relaxed),
        non_202,
        latency,
    })
}

/// One batch until 202, a final refusal, or too many transport failures.
#[expect(clippy::too_many_arguments, reason = "one client's shared state, passed down once")]
async fn post_one(
    http: &reqwest::Client,
    url: &url::Url,
    body: &[u8],
    size: usize,
    gzip: bool,
    totals: &Totals,
    non_202: &Mutex<BTreeMap<String, u64>>,
    latency: &mut Histogram<u64>,
) {
    let count = |what: String| *non_202.lock().unwrap_or_else(|p| p.into_inner()).entry(what).or_default() += 1;
    let mut transport_failures = 0;
    loop {
        let mut req = http.post(url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json");
        if gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let sent = Instant::now();
        let answer = match req.body(body.to_vec()).send().await {
            Ok(resp) => {
                let status = resp.status();
                let retry_after =
                    resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                resp.bytes().await.map(|b| (status, retry_after, b))
            }
            Err(e) => Err(e),
        };
        latency.saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
        match answer {
            Ok((StatusCode::ACCEPTED, _, bytes)) => {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
                totals.accepted.fetch_add(n("accepted"), Ordering::Relaxed);
                totals.duplicates.fetch_add(n("duplicates"), Ordering::Relaxed);
                totals.too_late.fetch_add(n("too_late"), Ordering::Relaxed);
                return;
            }
            Ok((status, retry_after, _))
                if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS =>
            {
                count(status.as_u16().to_string());
                totals.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 30))).await;
            }
            Ok((status, _, bytes)) => {
                let code = crate::api::problem_code(&bytes).unwrap_or_default();
                count(format!("{} {code}", status.as_u16()).trim_end().to_owned());
                break;
            }
            Err(e) => {
                count("transport".into());
                transport_failures += 1;
                if transport_failures > TRANSPORT_RETRIES {
                    eprintln!("bench: giving up a batch after {transport_failures} transport failures: {e}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    totals.failed_batches.fetch_add(1, Ordering::Relaxed);
    totals.failed_events.fetch_add(size as u64, Ordering::Relaxed);
}

async fn progress(start: Instant, totals: Arc<Totals>, batches: usize) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = 0;
    loop {
        tick.tick().await;
        let accepted = totals.accepted.load(Ordering::Relaxed);
        eprintln!(
            "[ingest {:>3.0}s] batches {}/{batches}, events accepted {accepted} ({} /s), retried {}, failed {}",
            start.elapsed().as_secs_f64(),
            totals.done_batches.load(Ordering::Relaxed),
            accepted - last,
            totals.retried.load(Ordering::Relaxed),
            totals.failed_batches.load(Ordering::Relaxed),
        );
        last = accepted;
    }
}
