//! Flash-sale request and response bodies.

use flashback_core::{MerchantId, Money, ProductId, SaleId};
use flashback_store::FlashSale;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::catalog::views::rfc3339;

/// A sale to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSale {
    /// The product on sale (the merchant's own; admins may name any).
    #[schema(value_type = crate::http::schema::Id)]
    pub product_id: ProductId,
    /// The price during the sale, integer minor units.
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub sale_price_minor: Money,
    /// Units carved out of the product's available inventory (1–1,000,000).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub stock: i64,
    /// Units one buyer may take (1–100).
    #[schema(minimum = 1, maximum = 100)]
    pub per_user_limit: i64,
    /// Start: RFC 3339 or Unix milliseconds, from 2000-01-01 to 9999-12-31 (it may be in the
    /// past: a sale may start at once).
    pub starts_at: TimeInput,
    /// End: RFC 3339 or Unix milliseconds; after the start and in the future, at most 7 days
    /// after the start.
    pub ends_at: TimeInput,
    /// Require a purchase token issued shortly before the start.
    #[serde(default)]
    pub require_token: bool,
}

impl CreateSale {
    /// The sale's start and end (Unix ms), checked against `now_ms`: both from 2000-01-01 to
    /// 9999-12-31, the end after the start and in the future, and at most
    /// [`super::MAX_DURATION_MS`] after the start. No arithmetic here can overflow.
    pub fn window(&self, now_ms: i64) -> Result<(i64, i64), String> {
        let starts = self.starts_at.millis("starts_at")?;
        let ends = self.ends_at.millis("ends_at")?;
        let sane = super::EARLIEST_MS..=super::LATEST_MS;
        if !sane.contains(&starts) {
            return Err("starts_at: from 2000-01-01 to 9999-12-31".into());
        }
        if !sane.contains(&ends) {
            return Err("ends_at: from 2000-01-01 to 9999-12-31".into());
        }
        if ends <= starts || ends <= now_ms {
            return Err("ends_at: after starts_at and in the future".into());
        }
        if ends.checked_sub(starts).is_none_or(|d| d > super::MAX_DURATION_MS) {
            return Err("ends_at: a sale runs at most 7 days".into());
        }
        Ok((starts, ends))
    }
}

/// A time given as RFC 3339 text or Unix milliseconds.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TimeInput {
    /// Unix milliseconds.
    Millis(i64),
    /// RFC 3339.
    Text(String),
}

impl TimeInput {
    /// Unix milliseconds, or why not.
    pub fn millis(&self, field: &str) -> Result<i64, String> {
        match self {
            TimeInput::Millis(ms) => Ok(*ms),
            TimeInput::Text(t) => crate::catalog::views::parse_rfc3339_ms(t)
                .ok_or_else(|| format!("{field}: an RFC 3339 time or Unix milliseconds")),
        }
    }
}

/// A sale as shown to the public.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SaleView {
    #[schema(value_type = String)]
    pub id: SaleId,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    #[schema(value_type = String)]
    pub product_id: ProductId,
    #[schema(value_type = i64)]
    pub sale_price_minor: Money,
    pub stock: i64,
    /// Units left; may lag by up to one second (see docs/API.md).
    pub remaining: i64,
    pub per_user_limit: i64,
    pub starts_at: String,
    pub ends_at: String,
    pub require_token: bool,
    /// `upcoming`, `active` or `ended`.
    pub status: &'static str,
}

impl SaleView {
    /// The view of `sale` with `taken` units reserved, at `now_ms`.
    pub fn new(sale: &FlashSale, taken: i64, now_ms: i64) -> Self {
        let ended = sale.state == flashback_store::SaleState::Ended || now_ms >= sale.ends_at_ms;
        let status = if ended {
            "ended"
        } else if now_ms < sale.starts_at_ms {
            "upcoming"
        } else {
            "active"
        };
        Self {
            id: sale.id,
            merchant_id: sale.merchant_id,
            product_id: sale.product_id,
            sale_price_minor: sale.sale_price,
            stock: sale.stock,
            remaining: if ended { 0 } else { sale.stock.saturating_sub(taken).max(0) },
            per_user_limit: sale.per_user_limit,
            starts_at: rfc3339(sale.starts_at_ms),
            ends_at: rfc3339(sale.ends_at_ms),
            require_token: sale.require_token,
            status,
        }
    }
}

/// A page of sales.
#[derive(Debug, Serialize, ToSchema)]
pub struct SalePage {
    pub items: Vec<SaleView>,
    pub next_cursor: Option<String>,
}

/// Sale listing filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SaleQuery {
    /// `open` or `ended`.
    #[param(pattern = "^(open|ended)?$")]
    pub state: Option<String>,
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub cursor: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}
