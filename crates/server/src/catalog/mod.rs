//! The catalog: merchants, categories, products, prices and inventory, with product detail
//! read through the multi-level cache.

mod categories;
mod error;
mod products;
pub mod views;

use flashback_core::ProductId;
use flashback_infra::ReadThroughCache;
use flashback_store::Product;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::CatalogError;
pub use views::ProductView;

use crate::AppState;

/// Product detail by id, read through L1 → L2 → store.
pub type ProductCache = ReadThroughCache<ProductId, Product>;

/// The catalog routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(products::list_products, products::create_product))
        .routes(routes!(products::own_products))
        .routes(routes!(products::get_product, products::update_product))
        .routes(routes!(products::set_status))
        .routes(routes!(products::set_inventory))
        .routes(routes!(products::adjust_stock))
        .routes(routes!(categories::list_categories, categories::create_category))
        .routes(routes!(categories::get_merchant))
}
