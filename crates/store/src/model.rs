//! The records the storage traits take and return, in domain types.

use flashback_core::{
    CategoryId, Description, Images, MerchantId, Money, ProductId, ProductStatus, Regions, Role, Sku, Stock, Title,
    UserId, Username,
};
use serde::{Deserialize, Serialize};

/// An account, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Its normalised login name.
    pub username: Username,
    /// What it may do.
    pub role: Role,
    /// When it registered, in Unix milliseconds.
    pub created_at_ms: i64,
}

/// An account together with its password hash, for logging in.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    /// The account.
    pub user: User,
    /// The PHC-format argon2id hash.
    pub password_hash: String,
}

/// A new account to store.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Its id, made by the caller.
    pub id: UserId,
    /// Its login name.
    pub username: Username,
    /// The PHC-format password hash.
    pub password_hash: String,
    /// What it may do.
    pub role: Role,
}

/// A shop. Each merchant account owns exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    /// Its id.
    pub id: MerchantId,
    /// The account that runs it.
    pub owner: UserId,
    /// Its display name.
    pub name: Title,
    /// When it was created, in Unix milliseconds.
    pub created_at_ms: i64,
}

/// A product category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    /// Its id.
    pub id: CategoryId,
    /// Its name, unique.
    pub name: Title,
}

/// Stock of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Units that can be sold now.
    pub available: Stock,
    /// Where the SKU sells.
    pub regions: Regions,
    /// Bumped by every change; pass it back to make a change conditional on no one else's.
    pub version: i64,
}

/// A product: one SKU, its list price and its inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Its id.
    pub id: ProductId,
    /// The merchant selling it.
    pub merchant_id: MerchantId,
    /// Its category.
    pub category_id: CategoryId,
    /// The merchant's SKU code, unique within the merchant.
    pub sku: Sku,
    /// Its title.
    pub title: Title,
    /// Its description.
    pub description: Description,
    /// Its images, in display order.
    pub images: Images,
    /// The list price.
    pub list_price: Money,
    /// On or off shelf.
    pub status: ProductStatus,
    /// Its stock.
    pub inventory: Inventory,
    /// Created, in Unix milliseconds.
    pub created_at_ms: i64,
    /// Last change to the product's own fields (not its stock), in Unix milliseconds.
    pub updated_at_ms: i64,
}

/// A product to create, with its initial inventory.
#[derive(Debug, Clone)]
pub struct NewProduct {
    /// Its id, made by the caller.
    pub id: ProductId,
    /// The merchant selling it.
    pub merchant_id: MerchantId,
    /// Its category, which must exist.
    pub category_id: CategoryId,
    /// SKU code.
    pub sku: Sku,
    /// Title.
    pub title: Title,
    /// Description.
    pub description: Description,
    /// Images.
    pub images: Images,
    /// List price.
    pub list_price: Money,
    /// Initial status.
    pub status: ProductStatus,
    /// Initial stock.
    pub available: Stock,
    /// Initial regions.
    pub regions: Regions,
}

/// Fields of a product to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    /// New category.
    pub category_id: Option<CategoryId>,
    /// New title.
    pub title: Option<Title>,
    /// New description.
    pub description: Option<Description>,
    /// New images.
    pub images: Option<Images>,
    /// New list price.
    pub list_price: Option<Money>,
    /// New status.
    pub status: Option<ProductStatus>,
}

impl ProductPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.category_id.is_none()
            && self.title.is_none()
            && self.description.is_none()
            && self.images.is_none()
            && self.list_price.is_none()
            && self.status.is_none()
    }
}

/// Which products a listing shows. Listings are newest first, by id.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProductFilter {
    /// Only this category.
    pub category_id: Option<CategoryId>,
    /// Only this merchant.
    pub merchant_id: Option<MerchantId>,
    /// Only this status (public listings ask for on-shelf).
    pub status: Option<ProductStatus>,
}
