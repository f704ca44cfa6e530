//! problem+json (RFC 9457) errors with a stable `code`, and the mapping every feature uses.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flashback_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer. `code` is stable and documented in docs/API.md; clients branch on it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `https://flashback.dev/problems/` and the code with
    /// dashes.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: ProblemType,
    /// A short summary that does not change between occurrences.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What happened this time, safe to show (never an internal cause).
    #[schema(value_type = String)]
    pub detail: Cow<'static, str>,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Seconds to wait before retrying, for 429 and 503.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Whether to send `WWW-Authenticate: Bearer` (401 answers).
    #[serde(skip)]
    pub bearer_challenge: bool,
}

impl Problem {
    /// A problem with the given status, stable code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind: ProblemType(code),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            retry_after_secs: None,
            bearer_challenge: false,
        }
    }

    /// Adds `WWW-Authenticate: Bearer`, telling the client which credentials to send.
    pub fn challenge_bearer(mut self) -> Self {
        self.bearer_challenge = true;
        self
    }

    /// Adds a `Retry-After` (whole seconds, at least 1).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// 400 with code `bad_request`-style specifics.
    pub fn bad_request(code: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 422: well-formed but invalid input.
    pub fn invalid(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", detail)
    }

    /// 404 for a thing of kind `what`.
    pub fn not_found(code: &'static str, what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, format!("no such {what}"))
    }

    /// 503 because a dependency is down.
    pub fn unavailable(code: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail).retry_after(1)
    }

    /// 500. The cause is logged here, once, and never sent to the client.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %cause, source = ?cause.source(), "unexpected error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an unexpected error occurred")
    }

    /// The catch-all for storage errors a feature did not map to something more specific.
    pub fn from_store(e: &StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                Self::unavailable("store_unavailable", "the store is unavailable; retry shortly")
            }
            // Every attempt was rolled back by the database (deadlocks or serialization
            // conflicts under contention): nothing was done, and a retry will most likely pass.
            e if e.is_retryable() => {
                tracing::warn!(error = %e, "a write kept losing to contention; answered 503");
                Self::unavailable("contention", "the change collided with others; nothing was done, retry shortly")
            }
            other => Self::internal(other),
        }
    }
}

/// A problem's type URI, written from its code as the answer is serialized (no string is built
/// for it when the problem is made).
#[derive(Debug, Clone, Copy)]
pub struct ProblemType(&'static str);

impl std::fmt::Display for ProblemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("https://flashback.dev/problems/")?;
        for (i, part) in self.0.split('_').enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(part)?;
        }
        Ok(())
    }
}

impl Serialize for ProblemType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.retry_after_secs;
        let challenge = self.bearer_challenge;
        // Written straight into a buffer that fits a typical problem (about 200 bytes).
        let mut body = Vec::with_capacity(256);
        if serde_json::to_writer(&mut body, &self).is_err() {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let mut res = (status, body).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if challenge {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<flashback_core::ParseError> for Problem {
    fn from(e: flashback_core::ParseError) -> Self {
        Problem::invalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_problem_is_answered_as_problem_json_with_its_type_uri_and_headers() {
        let res =
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited_now", "slow down").retry_after(3).into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
        assert!(res.headers().get(header::WWW_AUTHENTICATE).is_none());
        let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "https://flashback.dev/problems/rate-limited-now",
                "title": "Too Many Requests",
                "status": 429,
                "detail": "slow down",
                "code": "rate_limited_now",
                "retry_after_secs": 3,
            })
        );
        let res = Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", format!("send {}", "a token"))
            .challenge_bearer()
            .into_response();
        assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["detail"].as_str()),
            (Some("https://flashback.dev/problems/unauthenticated"), Some("send a token"))
        );
        assert!(v.get("retry_after_secs").is_none());
    }
}
