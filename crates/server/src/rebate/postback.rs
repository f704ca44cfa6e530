//! Signed postbacks from networks that push: `POST /api/v1/affiliate/postbacks/{network}` with
//! one order row as JSON and `X-Affiliate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">` under `rebate.postback_secret`.
//!
//! A forged or stale signature is refused (401) and changes nothing; a replayed request (the
//! same signature again) is answered without being applied twice; the same conversion posted
//! again with a new signature goes through the ingest path, which ignores it as a duplicate.
//! A pushed row and the same row read from the feed are one row (same source and key).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::ingest::{self, Outcome};
use crate::AppState;
use crate::http::Problem;
use crate::http::extract::Path;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-affiliate-signature";

/// Signatures already applied, remembered for as long as they would verify.
pub type SeenSignatures = moka::future::Cache<String, ()>;

/// A cache of seen signatures living as long as the tolerance.
pub fn seen_signatures(tolerance: Duration) -> SeenSignatures {
    moka::future::Cache::builder().max_capacity(1_000_000).time_to_live(tolerance * 2).build()
}

/// `t=<t>,v1=<hex>` for `body` at `t` (what networks send; used by tests and the demo).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn unauthorized(code: &'static str, detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, code, detail.to_owned())
}

/// Checks the header against the body; returns the signature's timestamp.
fn verify(secret: &[u8], header: &str, body: &[u8], now_secs: i64, tolerance_secs: i64) -> Result<i64, Problem> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(unauthorized("invalid_signature", "expected t=<unix seconds>,v1=<hex>"));
    };
    let expected = sign(secret, t, body);
    let given = format!("t={t},v1={v1}");
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err(unauthorized("invalid_signature", "the signature does not match the body"));
    }
    if now_secs.abs_diff(t) > tolerance_secs.unsigned_abs() {
        return Err(unauthorized("stale_signature", "the signature is too old or from the future"));
    }
    Ok(t)
}

/// What a postback did.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostbackResult {
    /// `applied`, `duplicate` (nothing new) or `replayed` (this exact request was seen).
    pub result: &'static str,
}

/// Receive one conversion pushed by a network (signed).
#[utoipa::path(post, path = "/api/v1/affiliate/postbacks/{network}", tag = "rebates",
    params(("network" = String, Path, description = "The network (`taobao`)"),
        ("x-affiliate-signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256>")),
    request_body(content = String, description = "One order row as JSON, as the network's feed has it"),
    responses((status = 200, body = PostbackResult), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn receive(
    State(state): State<AppState>,
    Path(network): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<PostbackResult>, Problem> {
    if network != super::taobao::SOURCE {
        return Err(Problem::not_found("network_not_found", "network"));
    }
    let Some(secret) = &state.config.rebate.postback_secret else {
        return Err(Problem::not_found("postbacks_disabled", "postback endpoint"));
    };
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    let tolerance = i64::try_from(state.config.rebate.postback_tolerance.as_secs()).unwrap_or(300);
    verify(secret.expose_secret().as_bytes(), header, &body, crate::trade::now_ms() / 1000, tolerance)?;
    if state.rebate.seen.get(header).await.is_some() {
        return Ok(axum::Json(PostbackResult { result: "replayed" }));
    }
    let text = String::from_utf8_lossy(&body);
    let row: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            ingest::reject(&state, &network, None, &format!("postback is not JSON: {e}"), &text).await;
            return Err(Problem::invalid(format!("body: {e}")));
        }
    };
    let line = match super::taobao::order_row(&row) {
        Ok(l) => l,
        Err(why) => {
            ingest::reject(&state, &network, None, &why, &text).await;
            return Err(Problem::invalid(why));
        }
    };
    let outcome = match ingest::apply(&state, &line).await {
        Ok(o) => o,
        Err(super::RebateError::Invalid(why)) => {
            ingest::reject(&state, &network, Some(&line.line_key), &why, &text).await;
            return Err(Problem::invalid(why));
        }
        Err(e) => return Err(e.into()),
    };
    state.rebate.seen.insert(header.to_owned(), ()).await;
    Ok(axum::Json(PostbackResult {
        result: match outcome {
            Outcome::Applied => "applied",
            Outcome::Ignored => "duplicate",
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_key_and_time() {
        let key = b"k".repeat(32);
        let h = sign(&key, 1_000, b"{}");
        assert_eq!(verify(&key, &h, b"{}", 1_010, 300).ok(), Some(1_000));
        assert!(verify(&key, &h, b"{ }", 1_010, 300).is_err(), "another body");
        assert!(verify(&b"x".repeat(32), &h, b"{}", 1_010, 300).is_err(), "another key");
        assert!(verify(&key, &h, b"{}", 2_000, 300).is_err(), "too old");
        assert!(verify(&key, "t=1000", b"{}", 1_000, 300).is_err(), "no v1");
        assert!(verify(&key, "", b"{}", 1_000, 300).is_err(), "no header");
        for t in [i64::MIN, i64::MAX] {
            let h = sign(&key, t, b"{}");
            assert!(verify(&key, &h, b"{}", 1_010, 300).is_err(), "signed at {t}: too far from now");
        }
    }
}
