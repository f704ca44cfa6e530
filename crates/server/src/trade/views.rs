//! The trade core's request and response bodies.

use flashback_core::{MerchantId, Money, OrderId, OrderState, Points, ProductId, Quantity, Sku, Title, UserId};
use flashback_store::Order;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::catalog::views::rfc3339;

/// One line to buy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    #[schema(value_type = crate::http::schema::Id)]
    pub product_id: ProductId,
    /// 1–999.
    #[schema(value_type = i64, minimum = 1, maximum = 999)]
    pub quantity: Quantity,
}

/// An order to place. All lines must be sold by one merchant (a cart is split per shop).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// 1–50 lines, each product at most once.
    #[schema(min_items = 1, max_items = 50)]
    pub lines: Vec<LineRequest>,
    /// Points to redeem; one point pays one minor unit.
    #[serde(default)]
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub points: Points,
}

/// An order line.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineView {
    #[schema(value_type = String)]
    pub product_id: ProductId,
    #[schema(value_type = String)]
    pub sku: Sku,
    #[schema(value_type = String)]
    pub title: Title,
    #[schema(value_type = i64)]
    pub quantity: Quantity,
    #[schema(value_type = i64)]
    pub unit_price_minor: Money,
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    #[schema(value_type = String)]
    pub id: OrderId,
    #[schema(value_type = String)]
    pub buyer_id: UserId,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    /// pending_payment, paid, shipped, completed, cancelled or refunded.
    #[schema(value_type = String)]
    pub state: OrderState,
    pub lines: Vec<LineView>,
    #[schema(value_type = i64)]
    pub total_minor: Money,
    #[schema(value_type = i64)]
    pub points_used: Points,
    #[schema(value_type = i64)]
    pub payable_minor: Money,
    /// Unpaid after this, the order expires.
    pub pay_by: String,
    /// The flash-sale ticket this order was made from, if any.
    pub flash_ticket_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        Self {
            id: o.id,
            buyer_id: o.buyer,
            merchant_id: o.merchant,
            state: o.state,
            lines: o
                .lines
                .iter()
                .map(|l| LineView {
                    product_id: l.product_id,
                    sku: l.sku.clone(),
                    title: l.title.clone(),
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price,
                })
                .collect(),
            total_minor: o.total,
            points_used: o.points_used,
            payable_minor: o.payable,
            pay_by: rfc3339(o.expires_at_ms),
            flash_ticket_id: o.flash_reservation.map(|r| r.to_string()),
            created_at: rfc3339(o.created_at_ms),
            updated_at: rfc3339(o.updated_at_ms),
        }
    }
}

/// A page of orders.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Order listing filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    /// Only this state.
    #[param(pattern = "^(pending_payment|paid|shipped|completed|cancelled|refunded)?$")]
    pub state: Option<String>,
    /// Placed at or after this time: Unix milliseconds (an RFC 3339 time is taken too).
    #[param(pattern = "^(-?[0-9]{1,18})?$")]
    pub from: Option<String>,
    /// Placed before this time: Unix milliseconds (an RFC 3339 time is taken too).
    #[param(pattern = "^(-?[0-9]{1,18})?$")]
    pub to: Option<String>,
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub cursor: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// A points balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct PointsView {
    #[schema(value_type = i64)]
    pub balance: Points,
}

/// A payment to make.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    /// The provider's payment id.
    pub payment_id: String,
    #[schema(value_type = String)]
    pub order_id: OrderId,
    #[schema(value_type = i64)]
    pub amount_minor: Money,
    /// created, succeeded or refunded.
    pub state: &'static str,
    /// Where the buyer pays (for the simulated provider, a POST to this signed link completes
    /// the payment); absent when the provider has no pay page.
    pub pay_url: Option<String>,
}
