//! Flashback's pure domain: money, identifiers and validated values, with no I/O and no async.
//!
//! Everything a client sends is parsed into these types once, at the edge; the rest of the
//! code base can then rely on their invariants (a [`Money`] is never negative, a [`Sku`] is
//! never empty, an id is never zero).

pub mod breaker;
pub mod catalog;
pub mod day;
pub mod hll;
pub mod id;
pub mod money;
pub mod page;
pub mod rebate;
pub mod trade;
pub mod user;

pub use catalog::{Description, ImageUrl, Images, ProductStatus, Region, Regions, Sku, Stock, Title};
pub use day::Day;
pub use id::{CategoryId, IdGenerator, MerchantId, OrderId, ProductId, SaleId, UserId};
pub use money::Money;
pub use page::{Cursor, PageLimit};
pub use rebate::{Account, BasisPoints, Split, SplitPolicy, Tier};
pub use trade::{IdempotencyKey, OrderState, Points, Quantity, Transition};
pub use user::{Password, Role, Username};

/// Why a value could not be parsed into a domain type; the message is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParseError {
    /// The field (or value kind) that was rejected.
    pub field: &'static str,
    /// A human-readable reason, never echoing secrets.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}
