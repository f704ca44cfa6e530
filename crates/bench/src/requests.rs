//! What one load client sends in each phase: `GET /healthz` for the baseline (and warm-up),
//! `POST /api/v1/flash-sales/{id}/purchase` for the storm; each answer becomes an [`Outcome`].

use std::sync::Arc;

use anyhow::Context;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};

use crate::conn::Endpoint;
use crate::load::{self, Outcome, Phase, PhaseResult, Script, Ticket};

/// Every buyer's `Authorization` value, prepared once.
pub fn authorizations(tokens: &[String]) -> anyhow::Result<Arc<Vec<HeaderValue>>> {
    let values: Result<Vec<_>, _> = tokens.iter().map(|t| HeaderValue::from_str(&format!("Bearer {t}"))).collect();
    Ok(Arc::new(values.context("a bearer token that is not a header value")?))
}

/// The buyer for attempt `seq`: all of them in turn.
fn pick(seq: u64, n: usize) -> usize {
    usize::try_from(seq % n as u64).unwrap_or(0)
}

/// One phase's requests: `method path` as each buyer in turn.
struct AsBuyers {
    endpoint: Endpoint,
    method: Method,
    path: hyper::Uri,
    authorizations: Arc<Vec<HeaderValue>>,
    judge: fn(usize, StatusCode, &[u8]) -> Outcome,
}

impl Script for AsBuyers {
    fn request(&self, seq: u64) -> (Request<Empty<Bytes>>, usize) {
        let buyer = pick(seq, self.authorizations.len());
        (self.endpoint.request(self.method.clone(), &self.path, &self.authorizations[buyer]), buyer)
    }

    fn judge(&self, buyer: usize, status: StatusCode, body: &[u8]) -> Outcome {
        (self.judge)(buyer, status, body)
    }
}

/// `GET /healthz` with the buyers' tokens, as the baseline of the same client load.
pub async fn healthz_load(
    endpoint: &Endpoint,
    phase: &Phase,
    authorizations: &Arc<Vec<HeaderValue>>,
) -> anyhow::Result<PhaseResult> {
    let script = AsBuyers {
        endpoint: endpoint.clone(),
        method: Method::GET,
        path: endpoint.path("healthz")?,
        authorizations: Arc::clone(authorizations),
        judge: |_, status, body| if status == StatusCode::OK { Outcome::Ok } else { load::refusal(status, body) },
    };
    load::run(phase, endpoint, Arc::new(script)).await
}

/// `POST /api/v1/flash-sales/{id}/purchase`, buyers taken in turn.
pub async fn purchase_load(
    endpoint: &Endpoint,
    phase: &Phase,
    sale_id: &str,
    authorizations: &Arc<Vec<HeaderValue>>,
) -> anyhow::Result<PhaseResult> {
    let path = endpoint.path(&format!("api/v1/flash-sales/{sale_id}/purchase"))?;
    let script = AsBuyers {
        endpoint: endpoint.clone(),
        method: Method::POST,
        path,
        authorizations: Arc::clone(authorizations),
        judge: purchased,
    };
    load::run(phase, endpoint, Arc::new(script)).await
}

/// The fields of a `202` the bench keeps, read in place (no map of every field).
#[derive(serde::Deserialize)]
struct Accepted<'a> {
    #[serde(borrow)]
    ticket_id: std::borrow::Cow<'a, str>,
    quantity: i64,
}

/// A purchase's answer: a ticket on 202, else a refusal or an error.
fn purchased(buyer: usize, status: StatusCode, body: &[u8]) -> Outcome {
    if status != StatusCode::ACCEPTED {
        return load::refusal(status, body);
    }
    match serde_json::from_slice::<Accepted<'_>>(body) {
        Ok(a) => Outcome::Accepted(Ticket { id: a.ticket_id.into_owned(), buyer, quantity: a.quantity }),
        Err(_) => Outcome::Error("202 without a ticket".into()),
    }
}
