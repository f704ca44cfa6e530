//! One request of each class, as a client of the deployment would send it through nginx; each
//! is recorded as a sample, and each acknowledged write is kept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::fixture::Fixture;
use super::record::{Class, Failure, Recorder, Verdict};
use crate::api::problem_code;
use crate::setup::buyer_credentials;
use crate::track::events::uuid;

/// How long the load waits for one answer before it counts as a transport failure (longer
/// than the server's own request timeout, so the server's answer is what is seen).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Events in one tracking batch.
pub const TRACK_BATCH: u64 = 10;

/// What every request needs.
#[derive(Debug)]
pub struct Context {
    /// The shared client (keep-alive to nginx).
    pub http: reqwest::Client,
    /// nginx, `http://127.0.0.1:<port>/`.
    pub base: url::Url,
    /// What the load works on.
    pub fixture: Fixture,
    /// Where samples and acknowledged writes go.
    pub recorder: Recorder,
    /// High 64 bits of every tracking event id: unique to the drill.
    pub event_prefix: u64,
    /// Tracking events sent so far (the low 64 bits of the next id).
    pub events_sent: AtomicU64,
    /// Requests sent so far (the number in the next `X-Request-Id`).
    pub requests_sent: AtomicU64,
}

/// The `X-Request-Id` of request `rid`.
pub fn request_id(rid: u64) -> String {
    format!("drill-{rid}")
}

/// An answer: status, whether it carried `Retry-After`, the body.
struct Answer {
    status: StatusCode,
    retry_after: bool,
    body: hyper::body::Bytes,
}

impl Context {
    /// Sends the request of `class` numbered `seq` and records what happened.
    pub async fn run(&self, class: Class, seq: u64) {
        match class {
            Class::Product => self.product(seq).await,
            Class::Order | Class::Payment => self.order(seq).await,
            Class::Purchase => self.purchase(seq).await,
            Class::Track => self.track().await,
            Class::Login => self.login(seq).await,
        }
    }

    fn buyer(&self, seq: u64) -> usize {
        usize::try_from(seq % self.fixture.buyers.len() as u64).unwrap_or(0)
    }

    /// Sends request `rid`; `None` on a transport failure.
    async fn send(
        &self,
        rid: u64,
        (method, path): (Method, &str),
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Option<Answer> {
        let url = self.base.join(path).ok()?;
        let mut req = self.http.request(method, url).timeout(REQUEST_TIMEOUT).header("x-request-id", request_id(rid));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status();
        let retry_after = resp.headers().contains_key(reqwest::header::RETRY_AFTER);
        let body = resp.bytes().await.ok()?;
        Some(Answer { status, retry_after, body })
    }

    /// Sends, judges with `ok` (which may also acknowledge a write), records; returns the
    /// answer's body when `ok` accepted it.
    async fn exchange(
        &self,
        class: Class,
        (method, path): (Method, &str),
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
        ok: impl FnOnce(StatusCode, &[u8]) -> bool,
    ) -> Option<Value> {
        let rid = self.requests_sent.fetch_add(1, Ordering::Relaxed);
        let start = self.recorder.now_ms();
        let Some(answer) = self.send(rid, (method, path), token, body, key).await else {
            self.recorder.sample(class, rid, start, Verdict::Failed(Failure::Transport));
            return None;
        };
        if ok(answer.status, &answer.body) {
            self.recorder.sample(class, rid, start, Verdict::Ok);
            return Some(serde_json::from_slice(&answer.body).unwrap_or(Value::Null));
        }
        self.recorder.sample(class, rid, start, Verdict::of_status(answer.status.as_u16(), answer.retry_after));
        None
    }

    async fn product(&self, seq: u64) {
        let ids = &self.fixture.product_ids;
        let id = &ids[usize::try_from(seq % ids.len() as u64).unwrap_or(0)];
        let path = format!("api/v1/products/{id}");
        self.exchange(Class::Product, (Method::GET, &path), None, None, None, |s, _| s == StatusCode::OK).await;
    }

    /// Places an order (acknowledged on `201`), then pays it with the simulated provider.
    async fn order(&self, seq: u64) {
        let b = self.buyer(seq);
        let token = self.fixture.buyers[b].token.as_str();
        let key = format!("drill-{}-{seq}", self.fixture.tag);
        let body = json!({ "lines": [{ "product_id": self.fixture.ordered_product(), "quantity": 1 }] });
        let placed = self
            .exchange(Class::Order, (Method::POST, "api/v1/orders"), Some(token), Some(&body), Some(&key), |s, _| {
                s == StatusCode::CREATED
            })
            .await;
        let Some(id) = placed.as_ref().and_then(|o| o.get("id")).and_then(Value::as_str) else { return };
        self.recorder.acknowledge(|a| a.orders.push((id.to_owned(), b)));
        let path = format!("api/v1/orders/{id}/payments");
        let created = |s: StatusCode, _: &[u8]| s == StatusCode::CREATED || s == StatusCode::OK;
        let payment = self.exchange(Class::Payment, (Method::POST, &path), Some(token), None, None, created).await;
        let Some(pay_url) = payment.as_ref().and_then(|p| p.get("pay_url")).and_then(Value::as_str) else { return };
        let pay = pay_url.trim_start_matches('/').to_owned();
        let done = |s: StatusCode, _: &[u8]| s.is_success();
        self.exchange(Class::Payment, (Method::POST, &pay), Some(token), None, None, done).await;
    }

    /// One unit of the sale; a ticket (`202`) is acknowledged; `sold_out` and `limit_reached`
    /// are answers of the sale's own, not failures.
    async fn purchase(&self, seq: u64) {
        let b = self.buyer(seq);
        let path = format!("api/v1/flash-sales/{}/purchase", self.fixture.sale_id);
        let token = self.fixture.buyers[b].token.as_str();
        let judged = |s: StatusCode, body: &[u8]| {
            s == StatusCode::ACCEPTED
                || (s == StatusCode::CONFLICT
                    && matches!(problem_code(body).as_deref(), Some("sold_out" | "limit_reached")))
        };
        let answer = self.exchange(Class::Purchase, (Method::POST, &path), Some(token), None, None, judged).await;
        if let Some(ticket) = answer.as_ref().and_then(|t| t.get("ticket_id")).and_then(Value::as_str) {
            self.recorder.acknowledge(|a| a.tickets.push((ticket.to_owned(), b)));
        }
    }

    /// A batch of fresh events of the drill's module; all of them acknowledged on `202`.
    async fn track(&self) {
        let first = self.events_sent.fetch_add(TRACK_BATCH, Ordering::Relaxed);
        let ids: Vec<u128> =
            (first..first + TRACK_BATCH).map(|n| (u128::from(self.event_prefix) << 64) | u128::from(n)).collect();
        let events: Vec<Value> = ids
            .iter()
            .map(|&id| {
                json!({
                    "event_id": uuid(id),
                    "anonymous_id": format!("drill-{}", id % 1000),
                    "module": self.module(),
                    "action": "view",
                    "object_type": "sku",
                    "object_id": self.fixture.ordered_product(),
                })
            })
            .collect();
        let body = json!({ "events": events });
        let accepted = self
            .exchange(Class::Track, (Method::POST, "api/v1/track"), None, Some(&body), None, |s, _| {
                s == StatusCode::ACCEPTED
            })
            .await;
        if accepted.is_some() {
            self.recorder.acknowledge(|a| a.events.extend(&ids));
        }
    }

    /// The tracking module only this drill's events carry.
    pub fn module(&self) -> String {
        format!("drill-{}", self.fixture.tag)
    }

    async fn login(&self, seq: u64) {
        let (username, password) = buyer_credentials(&self.fixture.tag, self.buyer(seq));
        let body = json!({ "username": username, "password": password });
        self.exchange(Class::Login, (Method::POST, "api/v1/auth/login"), None, Some(&body), None, |s, _| {
            s == StatusCode::OK
        })
        .await;
    }
}
