//! Analytics errors and their HTTP meaning.

use axum::http::StatusCode;
use flashback_store::StoreError;

use crate::http::Problem;

/// What can go wrong in an analytics call.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// `from_ms` or `to_ms` is before the epoch or after year 9999.
    #[error("from_ms and to_ms: Unix ms from 0 to 253402300799999 (the end of year 9999)")]
    TimeOutOfRange,
    /// `to_ms` is not after `from_ms`.
    #[error("to_ms must be after from_ms")]
    BadRange,
    /// The range spans more than this many milliseconds.
    #[error("the range may span at most {0} ms")]
    RangeTooLong(i64),
    /// `limit` outside 1 to 100.
    #[error("limit: 1 to 100")]
    BadLimit,
    /// `day` is not a `YYYY-MM-DD` calendar date.
    #[error("day: a calendar date as YYYY-MM-DD")]
    BadDay,
    /// `user_id` is not an id.
    #[error("user_id: an id")]
    BadUser,
    /// The live stream has as many clients as `analytics.max_clients` allows.
    #[error("too many live clients; retry shortly")]
    TooManyClients,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AnalyticsError> for Problem {
    fn from(e: AnalyticsError) -> Self {
        let detail = e.to_string();
        match e {
            AnalyticsError::BadRange | AnalyticsError::TimeOutOfRange => {
                Problem::bad_request("analytics_bad_range", detail)
            }
            AnalyticsError::RangeTooLong(_) => Problem::bad_request("analytics_range_too_long", detail),
            AnalyticsError::BadLimit => Problem::bad_request("analytics_bad_limit", detail),
            AnalyticsError::BadDay => Problem::bad_request("analytics_bad_day", detail),
            AnalyticsError::BadUser => Problem::bad_request("analytics_bad_user", detail),
            AnalyticsError::TooManyClients => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "live_too_many_clients", detail).retry_after(5)
            }
            AnalyticsError::Store(e) => {
                if !e.is_unavailable() {
                    tracing::error!(error = %e, "analytics query failed");
                }
                Problem::from_store(&e)
            }
        }
    }
}
