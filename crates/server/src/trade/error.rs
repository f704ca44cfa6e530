//! The trade core's errors and their HTTP meaning.

use axum::http::StatusCode;
use flashback_core::ProductId;
use flashback_store::{ReserveError, StoreError};

use crate::http::Problem;

/// What can go wrong placing or moving an order.
#[derive(Debug, thiserror::Error)]
pub enum TradeError {
    /// No such order (or not the caller's).
    #[error("no such order")]
    OrderNotFound,
    /// A line names a product that does not exist.
    #[error("unknown product {0}")]
    UnknownProduct(ProductId),
    /// A line names a product that is off shelf.
    #[error("product {0} is off shelf")]
    OffShelf(ProductId),
    /// Not enough stock for a line.
    #[error("insufficient stock for product {0}")]
    InsufficientStock(ProductId),
    /// The buyer holds fewer points than the order redeems.
    #[error("insufficient points")]
    InsufficientPoints,
    /// The order's state does not allow this.
    #[error("the order is {0}")]
    WrongState(&'static str),
    /// The same idempotency key was used with a different request.
    #[error("idempotency key reused")]
    KeyReused,
    /// Well-formed but unacceptable input.
    #[error("{0}")]
    Invalid(String),
    /// No such payment.
    #[error("no such payment")]
    PaymentNotFound,
    /// A notification that disagrees with the payment on record.
    #[error("{0}")]
    PaymentMismatch(String),
    /// A bad payment notification.
    #[error("{1}")]
    Notification(&'static str, String),
    /// A deliberately injected crash (tests of the saga's recovery).
    #[error("injected crash at {0}")]
    Crash(&'static str),
    /// The payment provider failed, timed out, is behind an open breaker, or none is
    /// configured.
    #[error("payment provider: {0}")]
    Provider(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<ReserveError> for TradeError {
    fn from(e: ReserveError) -> Self {
        match e {
            ReserveError::UnknownProduct(p) => TradeError::UnknownProduct(p),
            ReserveError::OffShelf(p) => TradeError::OffShelf(p),
            ReserveError::InsufficientStock(p) => TradeError::InsufficientStock(p),
            ReserveError::Store(s) => TradeError::Store(s),
        }
    }
}

impl From<TradeError> for Problem {
    fn from(e: TradeError) -> Self {
        use TradeError as E;
        match e {
            E::OrderNotFound => Problem::not_found("order_not_found", "order"),
            E::UnknownProduct(p) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_product", format!("no product {p}"))
            }
            E::OffShelf(p) => {
                Problem::new(StatusCode::CONFLICT, "product_off_shelf", format!("product {p} is off shelf"))
            }
            E::InsufficientStock(p) => {
                Problem::new(StatusCode::CONFLICT, "insufficient_stock", format!("not enough stock of product {p}"))
            }
            E::InsufficientPoints => Problem::new(
                StatusCode::CONFLICT,
                "insufficient_points",
                "you hold fewer points than the order redeems",
            ),
            E::WrongState(state) => Problem::new(
                StatusCode::CONFLICT,
                "invalid_transition",
                format!("the order is {state}; that step is not allowed from there"),
            ),
            E::KeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            ),
            E::Invalid(detail) => Problem::invalid(detail),
            E::PaymentNotFound => Problem::not_found("payment_not_found", "payment"),
            E::PaymentMismatch(detail) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "payment_mismatch", detail),
            E::Notification(code, detail) => Problem::new(StatusCode::UNAUTHORIZED, code, detail),
            E::Crash(point) => Problem::unavailable("crashed", format!("injected crash at {point}")),
            E::Provider(detail) => {
                tracing::warn!(error = %detail, "payment provider call failed");
                Problem::unavailable(
                    "payment_provider_unavailable",
                    "the payment provider is unavailable; retry shortly",
                )
            }
            E::Store(e) => Problem::from_store(&e),
            E::Unexpected(e) => Problem::internal(e.as_ref()),
        }
    }
}

impl flashback_infra::bus::HandlerError for TradeError {
    /// A store that cannot be reached, contention that outlasted the retries, or a payment
    /// provider that is down is no fault of the event: the consumer waits and tries again.
    fn is_transient(&self) -> bool {
        match self {
            TradeError::Store(e) => e.is_unavailable() || e.is_retryable(),
            TradeError::Provider(_) => true,
            _ => false,
        }
    }
}
