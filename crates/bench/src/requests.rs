//! What one load client sends in each phase: `GET /healthz` for the baseline (and warm-up),
//! `POST /api/v1/flash-sales/{id}/purchase` for the storm; each answer becomes an [`Outcome`].

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value;

use crate::api::Api;
use crate::load::{self, Outcome, Phase, PhaseResult, Ticket};

/// The buyer for attempt `seq`: all of them in turn.
fn pick(seq: u64, n: usize) -> usize {
    usize::try_from(seq % n as u64).unwrap_or(0)
}

/// `GET /healthz` with the buyers' tokens, as the baseline of the same client load.
pub async fn healthz_load(api: &Api, phase: &Phase, tokens: &Arc<Vec<String>>) -> anyhow::Result<PhaseResult> {
    let (http, url, tokens) = (api.http().clone(), api.url("healthz")?, Arc::clone(tokens));
    load::run(phase, move |seq| {
        let req = http.get(url.clone()).bearer_auth(&tokens[pick(seq, tokens.len())]);
        async move {
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    match resp.bytes().await {
                        Ok(_) if status == StatusCode::OK => Outcome::Ok,
                        Ok(body) => load::refusal(status, &body),
                        Err(e) => load::transport(&e),
                    }
                }
                Err(e) => load::transport(&e),
            }
        }
    })
    .await
}

/// `POST /api/v1/flash-sales/{id}/purchase`, buyers taken in turn.
pub async fn purchase_load(
    api: &Api,
    phase: &Phase,
    sale_id: &str,
    tokens: &Arc<Vec<String>>,
) -> anyhow::Result<PhaseResult> {
    let (http, url, tokens) =
        (api.http().clone(), api.url(&format!("api/v1/flash-sales/{sale_id}/purchase"))?, Arc::clone(tokens));
    load::run(phase, move |seq| {
        let buyer = pick(seq, tokens.len());
        let req = http.post(url.clone()).bearer_auth(&tokens[buyer]);
        async move {
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return load::transport(&e),
            };
            let status = resp.status();
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => return load::transport(&e),
            };
            if status != StatusCode::ACCEPTED {
                return load::refusal(status, &body);
            }
            match serde_json::from_slice::<Value>(&body) {
                Ok(v) => {
                    match (v.get("ticket_id").and_then(Value::as_str), v.get("quantity").and_then(Value::as_i64)) {
                        (Some(id), Some(quantity)) => Outcome::Accepted(Ticket { id: id.to_owned(), buyer, quantity }),
                        _ => Outcome::Error("202 without a ticket".into()),
                    }
                }
                Err(_) => Outcome::Error("202 without a ticket".into()),
            }
        }
    })
    .await
}
