//! What the drill's load works on, made through the API before the first phase: the demo's
//! admin, a product with stock for orders and a sale, buyers logged in, a flash sale open for
//! longer than any drill.

use anyhow::Context;
use serde_json::{Value, json};

use crate::api::{Api, field};
use crate::setup::{self, Buyer, SALE_PRICE_MINOR, now_ms};

/// Buyers the load takes in turn.
pub const BUYERS: usize = 24;
/// Units in the sale (more than the default drill buys).
pub const SALE_STOCK: i64 = 5_000;
/// Units one buyer may take from the sale.
pub const PER_USER_LIMIT: i64 = 100;
/// How long the sale stays open.
const SALE_OPEN_MS: i64 = 2 * 60 * 60 * 1000;

/// Everything the load needs.
#[derive(Debug)]
pub struct Fixture {
    /// Unique to this drill (names of buyers, idempotency keys, the tracking module).
    pub tag: String,
    /// Products read; the first is the one ordered and on sale.
    pub product_ids: Vec<String>,
    /// The sale.
    pub sale_id: String,
    /// Logged-in buyers.
    pub buyers: Vec<Buyer>,
}

impl Fixture {
    /// The product orders buy.
    pub fn ordered_product(&self) -> &str {
        &self.product_ids[0]
    }
}

/// Makes the fixture as the demo admin (`flashback demo` has loaded it).
pub async fn prepare(api: &Api) -> anyhow::Result<Fixture> {
    let tag = format!("{:010x}", now_ms() & 0xff_ffff_ffff);
    let admin = setup::login(api, "admin", "admin-password").await.context("logging in as the demo admin")?;
    let token = field(&admin, "token", "login")?.to_owned();
    let product = setup::create_product(api, &token, "admin", &tag, SALE_STOCK).await?;
    let buyers = setup::register_buyers(api, &tag, BUYERS).await?;
    let now = now_ms();
    let sale: Value = api
        .post(
            "api/v1/flash-sales",
            Some(&token),
            &json!({
                "product_id": product,
                "sale_price_minor": SALE_PRICE_MINOR,
                "stock": SALE_STOCK,
                "per_user_limit": PER_USER_LIMIT,
                "starts_at": now - 1000,
                "ends_at": now + SALE_OPEN_MS,
            }),
        )
        .await
        .context("creating the flash sale")?;
    let sale_id = field(&sale, "id", "created sale")?.to_owned();
    let page: Value = api.get("api/v1/products?limit=5", None).await.context("listing products")?;
    let listed = page.get("items").and_then(Value::as_array).into_iter().flatten();
    let others: Vec<String> = listed
        .filter_map(|p| p.get("id").and_then(Value::as_str))
        .filter(|id| *id != product)
        .map(str::to_owned)
        .collect();
    let product_ids = std::iter::once(product).chain(others).collect();
    Ok(Fixture { tag, product_ids, sale_id, buyers })
}
