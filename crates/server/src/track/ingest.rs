//! `POST /api/v1/track`: one event or a batch (`{"events": [...]}` or a bare array), plain or
//! gzip. Steps: read the body within its limits → parse → refuse the whole batch on any bad
//! event (400, nothing queued) → drop bots, repeats and events too old → correct the clock →
//! rate-limit the client by events → queue durably → 202.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use flashback_store::track::TrackEvent;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::TrackConfig;
use super::dedup::DedupWindow;
use super::queue::PushError;
use crate::AppState;
use crate::http::Problem;
use crate::http::client_ip::ClientIp;

/// Ingest's own state: the client limiter and the dedup window.
#[derive(Debug)]
pub struct Ingest {
    per_client: DefaultKeyedRateLimiter<IpAddr>,
    dedup: DedupWindow,
    bots: Vec<String>,
}

impl Ingest {
    /// Built from the `track` settings.
    pub fn new(config: &TrackConfig) -> Self {
        let rate = NonZeroU32::new(config.per_client_per_sec).unwrap_or(NonZeroU32::MIN);
        Self {
            per_client: RateLimiter::keyed(Quota::per_second(rate)),
            dedup: DedupWindow::new(config.dedup_window, config.dedup_capacity),
            bots: config.bot_user_agents.iter().map(|b| b.to_ascii_lowercase()).collect(),
        }
    }

    /// Forgets limiter state of idle clients.
    pub fn prune(&self) {
        self.per_client.retain_recent();
    }
}

/// A string or a number (ids arrive as either).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(i64),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Number(n) => n.to_string(),
        }
    }
}

/// One event as a client sends it; a body may instead carry `events`, a list of these.
#[derive(Debug, Deserialize)]
pub struct RawEvent<'a> {
    /// A batch: the events (then no other field is read).
    #[serde(default, borrow)]
    events: Option<Vec<RawEvent<'a>>>,
    /// A UUID; generated when absent. Repeats of an id are counted once.
    event_id: Option<String>,
    /// The signed-in user (a bearer token, when sent, wins).
    user_id: Option<Scalar>,
    /// A device or cookie id for visitors not signed in (1–64 characters).
    anonymous_id: Option<String>,
    /// The page or feature (`home`, `product`), 1–64 characters.
    module: Option<String>,
    /// What happened (`view`, `click`, `add_to_cart`, `share`, `order`), 1–64 characters.
    action: Option<String>,
    /// The kind of thing acted on (`sku`), up to 32 characters.
    object_type: Option<String>,
    /// Which one, up to 64 characters.
    object_id: Option<Scalar>,
    /// When it happened by the client's clock, Unix ms.
    client_ts: Option<i64>,
    /// When the client sent it by the same clock, Unix ms (for skew correction).
    sent_at: Option<i64>,
    /// Free-form properties: a JSON object, bounded in size.
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
}

/// What was done with a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackAccepted {
    /// Events queued.
    pub accepted: usize,
    /// Events already seen lately (not queued again).
    pub duplicates: usize,
    /// Events older than `track.max_late_ms` after skew correction (not queued).
    pub too_late: usize,
}

fn bad(detail: String) -> Problem {
    Problem::bad_request("invalid_event", detail)
}

fn text(field: &str, at: usize, value: Option<String>, min: usize, max: usize) -> Result<String, Problem> {
    let v = value.unwrap_or_default();
    if v.len() < min || v.len() > max || v.chars().any(char::is_control) {
        return Err(bad(format!("events[{at}].{field}: must be {min}–{max} bytes without control characters")));
    }
    Ok(v)
}

/// Time fields in sane Unix ms (2000-01-01 to 2100-01-01).
fn time(field: &str, at: usize, v: Option<i64>) -> Result<Option<i64>, Problem> {
    match v {
        Some(t) if !(946_684_800_000..4_102_444_800_000).contains(&t) => {
            Err(bad(format!("events[{at}].{field}: must be Unix milliseconds between 2000 and 2100")))
        }
        other => Ok(other),
    }
}

/// Turns one client event into the stored form, or says what is wrong with it.
fn normalise(
    raw: RawEvent<'_>,
    at: usize,
    caller: Option<i64>,
    now_ms: i64,
    c: &TrackConfig,
) -> Result<TrackEvent, Problem> {
    let id = match raw.event_id.as_deref() {
        Some(s) => uuid::Uuid::parse_str(s).map_err(|_| bad(format!("events[{at}].event_id: must be a UUID")))?,
        None => uuid::Uuid::now_v7(),
    }
    .as_u128();
    let user_id = match (caller, raw.user_id) {
        (Some(u), _) => Some(u),
        (None, Some(u)) => Some(
            u.into_string()
                .parse::<i64>()
                .ok()
                .filter(|u| *u > 0)
                .ok_or_else(|| bad(format!("events[{at}].user_id: must be a positive integer id")))?,
        ),
        (None, None) => None,
    };
    let visitor = match (user_id, raw.anonymous_id) {
        (Some(u), _) => format!("u:{u}"),
        (None, Some(a)) => format!("a:{}", text("anonymous_id", at, Some(a), 1, 64)?),
        (None, None) => return Err(bad(format!("events[{at}]: needs user_id or anonymous_id"))),
    };
    let properties = match raw.properties {
        None => None,
        Some(p) if !p.get().starts_with('{') => {
            return Err(bad(format!("events[{at}].properties: must be a JSON object")));
        }
        Some(p) if p.get().len() > c.max_properties_bytes => {
            return Err(bad(format!("events[{at}].properties: larger than {} bytes", c.max_properties_bytes)));
        }
        Some(p) => Some(p.get().to_owned()),
    };
    let client_ts = time("client_ts", at, raw.client_ts)?;
    let sent_at = time("sent_at", at, raw.sent_at)?;
    // ts = client_ts − (sent_at − now): the client's clock error, taken out.
    let mut ts = match (client_ts, sent_at) {
        (Some(t), Some(s)) => t - (s - now_ms),
        (Some(t), None) => t,
        (None, _) => now_ms,
    };
    let future = i64::try_from(c.max_future_skew.as_millis()).unwrap_or(i64::MAX);
    if ts > now_ms + future {
        ts = now_ms;
    }
    Ok(TrackEvent {
        id,
        ts_ms: ts,
        received_ms: now_ms,
        user_id,
        visitor,
        module: text("module", at, raw.module, 1, 64)?,
        action: text("action", at, raw.action, 1, 64)?,
        object_type: text("object_type", at, raw.object_type, 0, 32)?,
        object_id: text("object_id", at, raw.object_id.map(Scalar::into_string), 0, 64)?,
        properties,
    })
}

/// The body, decompressed if gzip, each step within its limit.
async fn read_body(body: Body, headers: &HeaderMap, c: &TrackConfig) -> Result<Vec<u8>, Problem> {
    let too_large = |what: &str, limit: usize| {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the {what} exceeds {limit} bytes"))
    };
    let raw = axum::body::to_bytes(body, c.max_body_bytes).await.map_err(|_| too_large("body", c.max_body_bytes))?;
    match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
        None => Ok(raw.to_vec()),
        Some(e) if e == "identity" => Ok(raw.to_vec()),
        Some(e) if e == "gzip" => {
            use std::io::Read;
            let mut out = Vec::with_capacity(raw.len() * 4);
            let cap = u64::try_from(c.max_decompressed_bytes).unwrap_or(u64::MAX);
            flate2::read::GzDecoder::new(&raw[..])
                .take(cap + 1)
                .read_to_end(&mut out)
                .map_err(|_| Problem::bad_request("invalid_gzip", "the body is not valid gzip"))?;
            if out.len() > c.max_decompressed_bytes {
                return Err(too_large("decompressed body", c.max_decompressed_bytes));
            }
            Ok(out)
        }
        Some(_) => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "Content-Encoding must be gzip or absent",
        )),
    }
}

fn parse<'a>(bytes: &'a [u8], c: &TrackConfig) -> Result<Vec<RawEvent<'a>>, Problem> {
    let invalid = |e: serde_json::Error| Problem::bad_request("invalid_json", format!("the body is not valid: {e}"));
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let mut events = if first == Some(&b'[') {
        serde_json::from_slice::<Vec<RawEvent<'_>>>(bytes).map_err(invalid)?
    } else {
        let mut one = serde_json::from_slice::<RawEvent<'_>>(bytes).map_err(invalid)?;
        match one.events.take() {
            Some(batch) => batch,
            None => vec![one],
        }
    };
    if events.is_empty() {
        return Err(Problem::bad_request("empty_batch", "the batch has no events"));
    }
    if events.len() > c.max_batch_events {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("a batch may carry at most {} events", c.max_batch_events),
        ));
    }
    if let Some(at) = events.iter().position(|e| e.events.is_some()) {
        return Err(bad(format!("events[{at}]: batches do not nest")));
    }
    events.shrink_to_fit();
    Ok(events)
}

/// The caller's user id when a valid bearer token is sent; an invalid one is refused.
fn caller(state: &AppState, headers: &HeaderMap) -> Result<Option<i64>, Problem> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    match state.auth.tokens.verify(token) {
        Some(c) => Ok(Some(c.id.get())),
        None => {
            Err(Problem::new(StatusCode::UNAUTHORIZED, "invalid_token", "the bearer token is not valid")
                .challenge_bearer())
        }
    }
}

fn is_bot(ingest: &Ingest, headers: &HeaderMap) -> bool {
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    !ua.is_empty() && ingest.bots.iter().any(|b| ua.contains(b.as_str()))
}

/// Records user-behaviour events. Answers 202 once the batch is durable in the queue.
#[utoipa::path(post, path = "/api/v1/track", tag = "tracking",
    request_body(content = Object, description = "one event, `{\"events\": [...]}`, or an array; gzip accepted"),
    responses((status = 202, body = TrackAccepted), (status = 400, body = Problem), (status = 413, body = Problem),
        (status = 429, body = Problem), (status = 503, body = Problem)))]
pub async fn track(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    match accept(&state, ip, &headers, body).await {
        Ok(outcome) => (StatusCode::ACCEPTED, axum::Json(outcome)).into_response(),
        Err(p) => p.into_response(),
    }
}

async fn accept(state: &AppState, ip: IpAddr, headers: &HeaderMap, body: Body) -> Result<TrackAccepted, Problem> {
    let (track, c, metrics) = (&state.track, &state.config.track, &state.metrics);
    let count = |outcome: &'static str, n: usize| {
        metrics.track_events.get_or_create(&crate::metrics::ReasonLabel { reason: outcome }).inc_by(n as u64);
    };
    let refuse = |outcome: &'static str, p: Problem| {
        count(outcome, 1);
        p
    };
    let caller = caller(state, headers).map_err(|p| refuse("invalid", p))?;
    let bytes = read_body(body, headers, c).await.map_err(|p| refuse("invalid", p))?;
    let raw = parse(&bytes, c).map_err(|p| refuse("invalid", p))?;
    let n = raw.len();
    if is_bot(&track.ingest, headers) {
        count("bot", n);
        return Ok(TrackAccepted { accepted: 0, duplicates: 0, too_late: 0 });
    }
    let limiter = &track.ingest.per_client;
    let weight = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
    match limiter.check_key_n(&ip, weight) {
        Ok(Ok(())) => {}
        Ok(Err(not_until)) => {
            count("rate_limited", n);
            let wait = not_until.wait_time_from(limiter.clock().now());
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many events from this client",
            )
            .retry_after(wait.as_secs() + 1));
        }
        Err(_) => {
            count("rate_limited", n);
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "this batch is larger than the client's whole rate allows at once",
            )
            .retry_after(1));
        }
    }
    let now_ms = crate::trade::now_ms();
    let mut events = Vec::with_capacity(n);
    for (at, r) in raw.into_iter().enumerate() {
        events.push(normalise(r, at, caller, now_ms, c).map_err(|p| refuse("invalid", p))?);
    }
    let oldest = now_ms - i64::try_from(c.max_late.as_millis()).unwrap_or(i64::MAX);
    let too_late = events.iter().filter(|e| e.ts_ms < oldest).count();
    events.retain(|e| e.ts_ms >= oldest);
    let now = Instant::now();
    let before = events.len();
    events.retain(|e| track.ingest.dedup.first_sighting(e.id, now));
    let duplicates = before - events.len();
    count("too_late", too_late);
    count("duplicate", duplicates);
    let pushed = if events.is_empty() { Ok(()) } else { track.queue.push(&events).await };
    if let Err(e) = pushed {
        {
            for ev in &events {
                track.ingest.dedup.forget(ev.id);
            }
            return Err(match e {
                PushError::Full => {
                    count("queue_full", events.len());
                    Problem::unavailable("queue_full", "the tracking queue is full; retry shortly").retry_after(2)
                }
                PushError::Unavailable(cause) => {
                    count("queue_unavailable", events.len());
                    tracing::warn!(error = %format!("{cause:#}"), "tracking queue push failed");
                    Problem::unavailable("queue_unavailable", "the tracking queue is unavailable; retry shortly")
                        .retry_after(2)
                }
            });
        }
    }
    count("accepted", events.len());
    Ok(TrackAccepted { accepted: events.len(), duplicates, too_late })
}
