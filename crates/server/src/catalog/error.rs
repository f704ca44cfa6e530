//! The catalog's errors and their HTTP meaning.

use axum::http::StatusCode;
use flashback_store::StoreError;

use crate::http::Problem;

/// What can go wrong in a catalog call.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No such product.
    #[error("no such product")]
    ProductNotFound,
    /// The named category does not exist.
    #[error("no such category")]
    CategoryNotFound,
    /// No such merchant.
    #[error("no such merchant")]
    MerchantNotFound,
    /// A merchant touched another merchant's product.
    #[error("not your product")]
    NotOwner,
    /// The caller must say which merchant (admins) or has none (a merchant account without one).
    #[error("{0}")]
    MerchantRequired(&'static str),
    /// The merchant already has this SKU.
    #[error("sku taken")]
    SkuTaken,
    /// A category with this name exists.
    #[error("category exists")]
    CategoryExists,
    /// The inventory changed since the version the caller sent.
    #[error("version conflict")]
    VersionConflict,
    /// The adjustment would take stock below zero (or above the maximum).
    #[error("insufficient stock")]
    InsufficientStock,
    /// The request is well-formed but says nothing to do or something impossible.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl CatalogError {
    /// Gives a write's storage error its catalog meaning.
    pub fn from_write(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => CatalogError::ProductNotFound,
            StoreError::Conflict("sku") => CatalogError::SkuTaken,
            StoreError::Conflict("category") => CatalogError::CategoryExists,
            StoreError::MissingReference("category") => CatalogError::CategoryNotFound,
            StoreError::MissingReference(_) => CatalogError::MerchantNotFound,
            StoreError::ConditionFailed("version") => CatalogError::VersionConflict,
            StoreError::ConditionFailed(_) => CatalogError::InsufficientStock,
            other => CatalogError::Store(other),
        }
    }
}

impl From<CatalogError> for Problem {
    fn from(e: CatalogError) -> Self {
        use CatalogError as E;
        match e {
            E::ProductNotFound => Problem::not_found("product_not_found", "product"),
            E::CategoryNotFound => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "category_not_found", "no such category")
            }
            E::MerchantNotFound => Problem::not_found("merchant_not_found", "merchant"),
            E::NotOwner => Problem::new(StatusCode::FORBIDDEN, "not_owner", "this product belongs to another merchant"),
            E::MerchantRequired(detail) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "merchant_required", detail),
            E::SkuTaken => Problem::new(StatusCode::CONFLICT, "sku_taken", "you already have a product with this SKU"),
            E::CategoryExists => {
                Problem::new(StatusCode::CONFLICT, "category_exists", "a category with this name exists")
            }
            E::VersionConflict => Problem::new(
                StatusCode::CONFLICT,
                "version_conflict",
                "the inventory changed since the version you sent; read it and retry",
            ),
            E::InsufficientStock => Problem::new(
                StatusCode::CONFLICT,
                "insufficient_stock",
                "the adjustment would take stock below zero or above the maximum",
            ),
            E::Invalid(detail) => Problem::invalid(detail),
            E::Store(e) => Problem::from_store(&e),
        }
    }
}
