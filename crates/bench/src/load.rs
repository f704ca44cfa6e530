//! The client loop shared by the warm-up, the baseline and the storm: C tokio tasks, each on
//! its own connection sending one request after another for a fixed time, each recording
//! latency (an HDR histogram in microseconds) and the outcome; a progress line on stderr once
//! a second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};

use crate::api::problem_code;
use crate::conn::{Conn, Endpoint};

/// An accepted purchase.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The ticket (reservation) id.
    pub id: String,
    /// Index of the buyer who holds it.
    pub buyer: usize,
    /// Units.
    pub quantity: i64,
}

/// What one request came to.
#[derive(Debug)]
pub enum Outcome {
    /// The expected answer of a probe (`/healthz` 200).
    Ok,
    /// A purchase answered 202.
    Accepted(Ticket),
    /// A refusal with a problem `code` (4xx, or 503 with a code): a designed answer.
    Rejected(String),
    /// Anything else: transport failures, 5xx without a code, bodies that are not problems.
    Error(String),
}

/// A refusal or an error from a non-2xx answer.
pub fn refusal(status: StatusCode, body: &[u8]) -> Outcome {
    match problem_code(body) {
        Some(code) if status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE => Outcome::Rejected(code),
        Some(code) => Outcome::Error(format!("{} {code}", status.as_u16())),
        None => Outcome::Error(format!("{} without a problem body", status.as_u16())),
    }
}

/// One phase of load.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Shown on progress lines.
    pub name: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// How long clients start new requests.
    pub duration: Duration,
    /// Units on sale, to time the sell-out (storm only).
    pub stock: Option<i64>,
    /// Print a progress line every second.
    pub progress: bool,
}

/// An accepted ticket and when, since the phase started.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The ticket.
    pub ticket: Ticket,
    /// When its 202 arrived.
    pub at: Duration,
}

/// What a phase measured.
#[derive(Debug)]
pub struct PhaseResult {
    /// Requests completed.
    pub attempts: u64,
    /// From the start until the last client finished its last request.
    pub elapsed: Duration,
    /// Latency of every request, in microseconds.
    pub latency: Histogram<u64>,
    /// Refusals by problem code.
    pub rejected: BTreeMap<String, u64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Accepted purchases, in arrival order per client.
    pub accepted: Vec<Accepted>,
    /// When the accepted units reached the stock.
    pub sold_out_after: Option<Duration>,
}

impl PhaseResult {
    /// Completed requests per second.
    pub fn per_sec(&self) -> f64 {
        rate(self.attempts, self.elapsed)
    }

    /// All errors.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// `n` per `d`, 0 for an empty span.
pub fn rate(n: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 10 min, three significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating a latency histogram")
}

struct ClientStats {
    latency: Histogram<u64>,
    rejected: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    accepted: Vec<Accepted>,
}

#[derive(Default)]
struct Shared {
    attempts: AtomicU64,
    accepted_units: AtomicI64,
    rejected: AtomicU64,
    errors: AtomicU64,
    /// Microseconds until sold out; `u64::MAX` until then.
    sold_out_us: AtomicU64,
}

/// What the load clients of a phase send, and what each answer means.
pub trait Script: Send + Sync + 'static {
    /// The request of attempt `seq` (a sequence number over all clients), with a tag handed
    /// back to [`Script::judge`] with its answer.
    fn request(&self, seq: u64) -> (Request<Empty<Bytes>>, usize);
    /// What the answer `status`, `body` to the request tagged `tag` came to.
    fn judge(&self, tag: usize, status: StatusCode, body: &[u8]) -> Outcome;
}

/// Runs `phase`: every client, on its own connection to `endpoint`, sends `script`'s requests
/// one after another until the time is up.
pub async fn run<S: Script>(phase: &Phase, endpoint: &Endpoint, script: Arc<S>) -> anyhow::Result<PhaseResult> {
    let shared = Arc::new(Shared { sold_out_us: AtomicU64::new(u64::MAX), ..Shared::default() });
    let mut stats = Vec::with_capacity(phase.clients);
    for _ in 0..phase.clients {
        stats.push(Arc::new(Mutex::new(ClientStats {
            latency: histogram()?,
            rejected: BTreeMap::new(),
            errors: BTreeMap::new(),
            accepted: Vec::new(),
        })));
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mine in &stats {
        let (mine, shared, script, phase) = (Arc::clone(mine), Arc::clone(&shared), Arc::clone(&script), phase.clone());
        let mut conn = Conn::new(endpoint.clone());
        tasks.spawn(async move {
            while start.elapsed() < phase.duration {
                let seq = shared.attempts.fetch_add(1, Ordering::Relaxed);
                let (request, tag) = script.request(seq);
                let sent = Instant::now();
                let outcome = match conn.send(request).await {
                    Ok((status, body)) => script.judge(tag, status, &body),
                    Err(failed) => failed,
                };
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                let mut s = mine.lock().unwrap_or_else(|p| p.into_inner());
                s.latency.saturating_record(micros);
                match outcome {
                    Outcome::Ok => {}
                    Outcome::Accepted(ticket) => {
                        let at = start.elapsed();
                        let before = shared.accepted_units.fetch_add(ticket.quantity, Ordering::Relaxed);
                        if let Some(stock) = phase.stock
                            && before < stock
                            && before + ticket.quantity >= stock
                        {
                            let us = u64::try_from(at.as_micros()).unwrap_or(u64::MAX - 1);
                            shared.sold_out_us.store(us, Ordering::Relaxed);
                        }
                        s.accepted.push(Accepted { ticket, at });
                    }
                    Outcome::Rejected(code) => {
                        shared.rejected.fetch_add(1, Ordering::Relaxed);
                        *s.rejected.entry(code).or_default() += 1;
                    }
                    Outcome::Error(kind) => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        *s.errors.entry(kind).or_default() += 1;
                    }
                }
            }
        });
    }
    let ticker = phase.progress.then(|| tokio::spawn(progress(phase.name, start, Arc::clone(&shared), stats.clone())));
    while let Some(joined) = tasks.join_next().await {
        joined.context("a load client panicked")?;
    }
    let elapsed = start.elapsed();
    if let Some(t) = ticker {
        t.abort();
    }

    let mut result = PhaseResult {
        // A client counts an attempt before sending it; all of them finished.
        attempts: shared.attempts.load(Ordering::Relaxed),
        elapsed,
        latency: histogram()?,
        rejected: BTreeMap::new(),
        errors: BTreeMap::new(),
        accepted: Vec::new(),
        sold_out_after: match shared.sold_out_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        },
    };
    for s in stats {
        let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
        result.latency.add(&s.latency).context("merging latency histograms")?;
        for (k, v) in std::mem::take(&mut s.rejected) {
            *result.rejected.entry(k).or_default() += v;
        }
        for (k, v) in std::mem::take(&mut s.errors) {
            *result.errors.entry(k).or_default() += v;
        }
        result.accepted.append(&mut s.accepted);
    }
    result.accepted.sort_by_key(|a| a.at);
    Ok(result)
}

/// Milliseconds of a microsecond value.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn progress(name: &'static str, start: Instant, shared: Arc<Shared>, stats: Vec<Arc<Mutex<ClientStats>>>) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = 0u64;
    loop {
        tick.tick().await;
        let attempts = shared.attempts.load(Ordering::Relaxed);
        let mut merged = match histogram() {
            Ok(h) => h,
            Err(_) => return,
        };
        for s in &stats {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            let _ = merged.add(&s.latency);
        }
        eprintln!(
            "[{name} {:>3.0}s] attempts {attempts} ({} /s), accepted {}, rejected {}, errors {}, p99 {:.2} ms",
            start.elapsed().as_secs_f64(),
            attempts - last,
            shared.accepted_units.load(Ordering::Relaxed),
            shared.rejected.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
            ms(merged.value_at_quantile(0.99)),
        );
        last = attempts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(o: Outcome) -> String {
        match o {
            Outcome::Ok => "ok".into(),
            Outcome::Accepted(_) => "accepted".into(),
            Outcome::Rejected(c) => format!("rejected {c}"),
            Outcome::Error(e) => format!("error {e}"),
        }
    }

    #[test]
    fn designed_refusals_are_rejections_and_the_rest_are_errors() {
        let problem = |code: &str| format!(r#"{{"status":409,"code":"{code}"}}"#).into_bytes();
        assert_eq!(kind(refusal(StatusCode::CONFLICT, &problem("sold_out"))), "rejected sold_out");
        assert_eq!(kind(refusal(StatusCode::TOO_MANY_REQUESTS, &problem("rate_limited"))), "rejected rate_limited");
        assert_eq!(kind(refusal(StatusCode::SERVICE_UNAVAILABLE, &problem("overloaded"))), "rejected overloaded");
        assert_eq!(kind(refusal(StatusCode::INTERNAL_SERVER_ERROR, &problem("internal"))), "error 500 internal");
        assert_eq!(kind(refusal(StatusCode::BAD_GATEWAY, b"<html>")), "error 502 without a problem body");
    }

    #[test]
    fn rates_of_an_empty_span_are_zero() {
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(rate(10, Duration::from_secs(2)), 5.0);
    }
}
