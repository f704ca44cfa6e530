//! The catalog's request and response bodies.

use flashback_core::{
    CategoryId, Description, Images, MerchantId, Money, ProductId, ProductStatus, Regions, Sku, Stock, Title,
};
use flashback_store::{Category, Merchant, Product};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::http::schema;

/// Milliseconds since the epoch as RFC 3339 text.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// RFC 3339 text as milliseconds since the epoch.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
}

/// A product with its price and stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    #[schema(value_type = String)]
    pub id: ProductId,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    #[schema(value_type = String)]
    pub category_id: CategoryId,
    #[schema(value_type = String)]
    pub sku: Sku,
    #[schema(value_type = String)]
    pub title: Title,
    #[schema(value_type = String)]
    pub description: Description,
    #[schema(value_type = Vec<String>)]
    pub images: Images,
    /// List price in integer minor units (cents, fen).
    #[schema(value_type = i64)]
    pub list_price_minor: Money,
    /// `on_shelf` or `off_shelf`.
    #[schema(value_type = String)]
    pub status: ProductStatus,
    /// Units available now.
    #[schema(value_type = i64)]
    pub available: Stock,
    /// Region codes the SKU sells in.
    #[schema(value_type = Vec<String>)]
    pub regions: Regions,
    /// Pass back as `expected_version` to change inventory only if nobody else has.
    pub inventory_version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        Self {
            id: p.id,
            merchant_id: p.merchant_id,
            category_id: p.category_id,
            sku: p.sku.clone(),
            title: p.title.clone(),
            description: p.description.clone(),
            images: p.images.clone(),
            list_price_minor: p.list_price,
            status: p.status,
            available: p.inventory.available,
            regions: p.inventory.regions.clone(),
            inventory_version: p.inventory.version,
            created_at: rfc3339(p.created_at_ms),
            updated_at: rfc3339(p.updated_at_ms),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Public listing filters and paging. Ids are decimal strings; a blank parameter is absent.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this category.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub category_id: Option<String>,
    /// Only this merchant.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub merchant_id: Option<String>,
    /// `on_shelf` (the only products listed publicly).
    #[param(pattern = "^(on_shelf)?$")]
    pub status: Option<String>,
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub cursor: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// A merchant's own listing: filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OwnListQuery {
    /// Only this category.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub category_id: Option<String>,
    /// `on_shelf` or `off_shelf` (default both).
    #[param(pattern = "^(on_shelf|off_shelf)?$")]
    pub status: Option<String>,
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub cursor: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// A new product. Merchants create for themselves; admins name the merchant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    /// 1–64 of letters, digits, `-`, `_`, `.`; kept upper-cased.
    #[schema(value_type = schema::SkuCode, example = "TEA-LJ-250")]
    pub sku: Sku,
    /// 1–200 characters, no control characters.
    #[schema(value_type = schema::Text200, example = "West Lake Longjing 250 g")]
    pub title: Title,
    /// Up to 10,000 characters.
    #[schema(value_type = Option<schema::Text10000>)]
    pub description: Option<Description>,
    #[serde(default)]
    #[schema(value_type = Vec<schema::ImageUrl>, max_items = 20)]
    pub images: Images,
    #[schema(value_type = i64, example = 12900, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub list_price_minor: Money,
    #[schema(value_type = schema::Id)]
    pub category_id: CategoryId,
    #[schema(value_type = Option<schema::ShelfStatus>)]
    pub status: Option<ProductStatus>,
    #[serde(default)]
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000)]
    pub available: Stock,
    #[serde(default)]
    #[schema(value_type = Vec<schema::RegionCode>, max_items = 64)]
    pub regions: Regions,
    /// Admins only: the merchant to create for.
    #[schema(value_type = Option<schema::Id>)]
    pub merchant_id: Option<MerchantId>,
}

/// Fields to change; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[schema(value_type = Option<schema::Text200>)]
    pub title: Option<Title>,
    #[schema(value_type = Option<schema::Text10000>)]
    pub description: Option<Description>,
    #[schema(value_type = Option<Vec<schema::ImageUrl>>, max_items = 20)]
    pub images: Option<Images>,
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub list_price_minor: Option<Money>,
    #[schema(value_type = Option<schema::Id>)]
    pub category_id: Option<CategoryId>,
}

/// On or off shelf.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStatus {
    #[schema(value_type = schema::ShelfStatus, example = "off_shelf")]
    pub status: ProductStatus,
}

/// Absolute stock and regions, optionally only if unchanged since `expected_version`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetInventory {
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000)]
    pub available: Stock,
    #[schema(value_type = Option<Vec<schema::RegionCode>>, max_items = 64)]
    pub regions: Option<Regions>,
    pub expected_version: Option<i64>,
}

/// A relative stock change, applied in one conditional write.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustStock {
    /// Units to add (negative to remove), not zero; the result must stay within 0..=1e9.
    #[schema(minimum = -1_000_000_000, maximum = 1_000_000_000)]
    pub delta: i64,
}

/// A category.
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryView {
    #[schema(value_type = String)]
    pub id: CategoryId,
    #[schema(value_type = String)]
    pub name: Title,
}

impl From<Category> for CategoryView {
    fn from(c: Category) -> Self {
        Self { id: c.id, name: c.name }
    }
}

/// A new category.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCategory {
    #[schema(value_type = schema::Text200, example = "Tea")]
    pub name: Title,
}

/// A merchant.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantView {
    #[schema(value_type = String)]
    pub id: MerchantId,
    #[schema(value_type = String)]
    pub name: Title,
    pub created_at: String,
}

impl From<Merchant> for MerchantView {
    fn from(m: Merchant) -> Self {
        Self { id: m.id, name: m.name, created_at: rfc3339(m.created_at_ms) }
    }
}
