//! What the load saw: one sample per request (class, when, how it ended) and every write the
//! deployment acknowledged, kept for the phase summaries and the read-back at the end.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// The kinds of request the load sends; recovery waits for every one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// `GET /api/v1/products/{id}`.
    Product,
    /// `POST /api/v1/orders` with an `Idempotency-Key`.
    Order,
    /// `POST /api/v1/orders/{id}/payments`, then the simulated provider's pay URL.
    Payment,
    /// `POST /api/v1/flash-sales/{id}/purchase`.
    Purchase,
    /// `POST /api/v1/track`, a batch of events.
    Track,
    /// `POST /api/v1/auth/login`.
    Login,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Class; 6] =
        [Class::Product, Class::Order, Class::Payment, Class::Purchase, Class::Track, Class::Login];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Class::Product => "product",
            Class::Order => "order",
            Class::Payment => "payment",
            Class::Purchase => "purchase",
            Class::Track => "track",
            Class::Login => "login",
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// No HTTP answer: refused, reset, or timed out.
    Transport,
    /// `502` (nginx: the upstream failed).
    BadGateway,
    /// `504` (nginx: the upstream timed out).
    GatewayTimeout,
    /// `500`.
    Internal,
    /// `503` without `Retry-After`.
    Unavailable,
    /// Any other answer the class does not expect (`401`, `404`, `429`, …).
    Unexpected,
}

impl Failure {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Transport => "transport",
            Failure::BadGateway => "502",
            Failure::GatewayTimeout => "504",
            Failure::Internal => "500",
            Failure::Unavailable => "503",
            Failure::Unexpected => "other",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Served, or refused for a reason of its own (`409 sold_out`).
    Ok,
    /// `503` with `Retry-After`: the deployment said "not now" in the agreed way.
    Refused,
    /// Failed.
    Failed(Failure),
}

impl Verdict {
    /// The verdict of an HTTP answer that is not one the class expects.
    pub fn of_status(status: u16, retry_after: bool) -> Verdict {
        match status {
            503 if retry_after => Verdict::Refused,
            503 => Verdict::Failed(Failure::Unavailable),
            502 => Verdict::Failed(Failure::BadGateway),
            504 => Verdict::Failed(Failure::GatewayTimeout),
            500 => Verdict::Failed(Failure::Internal),
            _ => Verdict::Failed(Failure::Unexpected),
        }
    }
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Its class.
    pub class: Class,
    /// The number in its `X-Request-Id: drill-<n>`, which nginx's access log shows as `rid=`.
    pub rid: u64,
    /// When it was sent, ms since the drill's epoch.
    pub start_ms: u64,
    /// When it ended, ms since the drill's epoch.
    pub end_ms: u64,
    /// How.
    pub verdict: Verdict,
}

/// Writes the deployment answered as done; each must be found again at the end.
#[derive(Debug, Default, Clone)]
pub struct Acknowledged {
    /// Orders answered `201`: (order id, buyer index).
    pub orders: Vec<(String, usize)>,
    /// Purchases answered `202`: (ticket id, buyer index).
    pub tickets: Vec<(String, usize)>,
    /// Tracking events in batches answered `202`.
    pub events: Vec<u128>,
}

/// The drill's record, shared by every load task.
#[derive(Debug, Clone)]
pub struct Recorder {
    epoch: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    acknowledged: Arc<Mutex<Acknowledged>>,
}

impl Recorder {
    /// An empty record whose clock starts now.
    pub fn new() -> Self {
        Self { epoch: Instant::now(), samples: Arc::default(), acknowledged: Arc::default() }
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records request `rid`, which started at `start_ms` and ends now.
    pub fn sample(&self, class: Class, rid: u64, start_ms: u64, verdict: Verdict) {
        let s = Sample { class, rid, start_ms, end_ms: self.now_ms(), verdict };
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    }

    /// Changes the acknowledged writes.
    pub fn acknowledge(&self, f: impl FnOnce(&mut Acknowledged)) {
        f(&mut self.acknowledged.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Every sample so far, in the order they ended.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The acknowledged writes so far.
    pub fn acknowledged(&self) -> Acknowledged {
        self.acknowledged.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
