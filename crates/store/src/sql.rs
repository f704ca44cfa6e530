//! The SQL both backends share, written once.
//!
//! SQLite and MySQL agree on everything these queries use (`?` placeholders, `BIGINT`/`TEXT`
//! columns, application-made ids, timestamps as Unix milliseconds), so the statements live here
//! once and [`impl_sql_store!`] instantiates them for each backend's concrete pool type. What the
//! dialects disagree on (DDL, connection setup) lives in `sqlite.rs` and `mysql.rs`.

use flashback_core::{
    CategoryId, Description, Images, MerchantId, Money, ProductId, ProductStatus, Regions, Role, Sku, Stock, Title,
    UserId, Username,
};

use crate::{Category, Inventory, Merchant, Product, StoreError, User};

pub(crate) const USER_COLUMNS: &str = "id, username, role, created_at_ms";

pub(crate) const PRODUCT_SELECT: &str = "SELECT p.id, p.merchant_id, p.category_id, p.sku, p.title, p.description, \
     p.images, p.list_price_minor, p.status, p.created_at_ms, p.updated_at_ms, \
     i.available, i.regions, i.version AS inventory_version \
     FROM products p JOIN inventory i ON i.product_id = p.id";

fn corrupt(table: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { table, reason: e.to_string() }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub created_at_ms: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<Self, StoreError> {
        Ok(User {
            id: UserId::new(r.id).map_err(|e| corrupt("users", e))?,
            username: Username::parse(&r.username).map_err(|e| corrupt("users", e))?,
            role: r.role.parse::<Role>().map_err(|e| corrupt("users", e))?,
            created_at_ms: r.created_at_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MerchantRow {
    pub id: i64,
    pub owner_user_id: i64,
    pub name: String,
    pub created_at_ms: i64,
}

impl TryFrom<MerchantRow> for Merchant {
    type Error = StoreError;
    fn try_from(r: MerchantRow) -> Result<Self, StoreError> {
        Ok(Merchant {
            id: MerchantId::new(r.id).map_err(|e| corrupt("merchants", e))?,
            owner: UserId::new(r.owner_user_id).map_err(|e| corrupt("merchants", e))?,
            name: Title::parse(&r.name).map_err(|e| corrupt("merchants", e))?,
            created_at_ms: r.created_at_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CategoryRow {
    pub id: i64,
    pub name: String,
}

impl TryFrom<CategoryRow> for Category {
    type Error = StoreError;
    fn try_from(r: CategoryRow) -> Result<Self, StoreError> {
        Ok(Category {
            id: CategoryId::new(r.id).map_err(|e| corrupt("categories", e))?,
            name: Title::parse(&r.name).map_err(|e| corrupt("categories", e))?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ProductRow {
    pub id: i64,
    pub merchant_id: i64,
    pub category_id: i64,
    pub sku: String,
    pub title: String,
    pub description: String,
    pub images: String,
    pub list_price_minor: i64,
    pub status: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub available: i64,
    pub regions: String,
    pub inventory_version: i64,
}

impl TryFrom<ProductRow> for Product {
    type Error = StoreError;
    fn try_from(r: ProductRow) -> Result<Self, StoreError> {
        let bad = |e: &dyn std::fmt::Display| corrupt("products", e);
        Ok(Product {
            id: ProductId::new(r.id).map_err(|e| bad(&e))?,
            merchant_id: MerchantId::new(r.merchant_id).map_err(|e| bad(&e))?,
            category_id: CategoryId::new(r.category_id).map_err(|e| bad(&e))?,
            sku: Sku::parse(&r.sku).map_err(|e| bad(&e))?,
            title: Title::parse(&r.title).map_err(|e| bad(&e))?,
            description: Description::parse(&r.description).map_err(|e| bad(&e))?,
            images: serde_json::from_str::<Images>(&r.images).map_err(|e| bad(&e))?,
            list_price: Money::from_minor(r.list_price_minor).map_err(|e| bad(&e))?,
            status: r.status.parse::<ProductStatus>().map_err(|e| bad(&e))?,
            inventory: Inventory {
                available: Stock::new(r.available).map_err(|e| bad(&e))?,
                regions: serde_json::from_str::<Regions>(&r.regions).map_err(|e| bad(&e))?,
                version: r.inventory_version,
            },
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        })
    }
}

/// Wraps ids read from `table` in their domain type; an id that breaks the type's rules is a
/// corrupt row.
pub(crate) fn parse_ids<T>(
    ids: Vec<i64>,
    table: &'static str,
    make: fn(i64) -> Result<T, flashback_core::ParseError>,
) -> Result<Vec<T>, StoreError> {
    ids.into_iter().map(|id| make(id).map_err(|e| corrupt(table, e))).collect()
}

/// JSON text for a list column (images, regions). Serialising these types cannot fail.
pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

/// Implements [`crate::UserStore`] and [`crate::CatalogStore`] for a backend whose type has
/// `fn writer(&self) -> StoreResult<&Pool<DB>>` and `fn reader(&self) -> StoreResult<&Pool<DB>>` (an
/// error while the breaker in front of the server is open).
macro_rules! impl_sql_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::UserStore for $store {
            async fn create_user(&self, new: $crate::NewUser) -> $crate::StoreResult<$crate::User> {
                let now = $crate::now_ms();
                sqlx::query(
                    "INSERT INTO users (id, username, password_hash, role, created_at_ms) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(new.id.get())
                .bind(new.username.as_str())
                .bind(&new.password_hash)
                .bind(new.role.as_str())
                .bind(now)
                .execute(self.writer()?)
                .await
                .map_err(|e| $crate::error::on_write(e, "username", "user"))?;
                Ok($crate::User { id: new.id, username: new.username, role: new.role, created_at_ms: now })
            }

            async fn user(&self, id: flashback_core::UserId) -> $crate::StoreResult<Option<$crate::User>> {
                let sql = format!("SELECT {} FROM users WHERE id = ?", $crate::sql::USER_COLUMNS);
                let row: Option<$crate::sql::UserRow> =
                    sqlx::query_as(&sql).bind(id.get()).fetch_optional(self.reader()?).await?;
                row.map($crate::User::try_from).transpose()
            }

            async fn credentials(
                &self,
                username: &flashback_core::Username,
            ) -> $crate::StoreResult<Option<$crate::UserCredentials>> {
                let sql = format!("SELECT {}, password_hash FROM users WHERE username = ?", $crate::sql::USER_COLUMNS);
                let row = sqlx::query(&sql).bind(username.as_str()).fetch_optional(self.reader()?).await?;
                let Some(row) = row else { return Ok(None) };
                use sqlx::{FromRow, Row};
                let password_hash: String = row.try_get("password_hash")?;
                let user = $crate::User::try_from($crate::sql::UserRow::from_row(&row)?)?;
                Ok(Some($crate::UserCredentials { user, password_hash }))
            }
        }

        #[async_trait::async_trait]
        impl $crate::CatalogStore for $store {
            async fn create_merchant(
                &self,
                id: flashback_core::MerchantId,
                owner: flashback_core::UserId,
                name: flashback_core::Title,
            ) -> $crate::StoreResult<$crate::Merchant> {
                let now = $crate::now_ms();
                sqlx::query("INSERT INTO merchants (id, owner_user_id, name, created_at_ms) VALUES (?, ?, ?, ?)")
                    .bind(id.get())
                    .bind(owner.get())
                    .bind(name.as_str())
                    .bind(now)
                    .execute(self.writer()?)
                    .await
                    .map_err(|e| $crate::error::on_write(e, "merchant", "user"))?;
                Ok($crate::Merchant { id, owner, name, created_at_ms: now })
            }

            async fn merchant(&self, id: flashback_core::MerchantId) -> $crate::StoreResult<Option<$crate::Merchant>> {
                let row: Option<$crate::sql::MerchantRow> =
                    sqlx::query_as("SELECT id, owner_user_id, name, created_at_ms FROM merchants WHERE id = ?")
                        .bind(id.get())
                        .fetch_optional(self.reader()?)
                        .await?;
                row.map($crate::Merchant::try_from).transpose()
            }

            async fn merchant_of(
                &self,
                owner: flashback_core::UserId,
            ) -> $crate::StoreResult<Option<$crate::Merchant>> {
                let row: Option<$crate::sql::MerchantRow> = sqlx::query_as(
                    "SELECT id, owner_user_id, name, created_at_ms FROM merchants WHERE owner_user_id = ?",
                )
                .bind(owner.get())
                .fetch_optional(self.reader()?)
                .await?;
                row.map($crate::Merchant::try_from).transpose()
            }

            async fn create_category(
                &self,
                id: flashback_core::CategoryId,
                name: flashback_core::Title,
            ) -> $crate::StoreResult<$crate::Category> {
                sqlx::query("INSERT INTO categories (id, name, created_at_ms) VALUES (?, ?, ?)")
                    .bind(id.get())
                    .bind(name.as_str())
                    .bind($crate::now_ms())
                    .execute(self.writer()?)
                    .await
                    .map_err(|e| $crate::error::on_write(e, "category", "category"))?;
                Ok($crate::Category { id, name })
            }

            async fn categories(&self) -> $crate::StoreResult<Vec<$crate::Category>> {
                let rows: Vec<$crate::sql::CategoryRow> =
                    sqlx::query_as("SELECT id, name FROM categories ORDER BY name, id")
                        .fetch_all(self.reader()?)
                        .await?;
                rows.into_iter().map($crate::Category::try_from).collect()
            }

            async fn create_product(&self, new: $crate::NewProduct) -> $crate::StoreResult<$crate::Product> {
                let now = $crate::now_ms();
                $crate::retry_deadlocks(|| async {
                    let mut tx = self.writer()?.begin().await?;
                    sqlx::query(
                        "INSERT INTO products (id, merchant_id, category_id, sku, title, description, images, \
                     list_price_minor, status, created_at_ms, updated_at_ms) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(new.id.get())
                    .bind(new.merchant_id.get())
                    .bind(new.category_id.get())
                    .bind(new.sku.as_str())
                    .bind(new.title.as_str())
                    .bind(new.description.as_str())
                    .bind($crate::sql::json_text(&new.images))
                    .bind(new.list_price.minor())
                    .bind(new.status.as_str())
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::error::on_write(e, "sku", "category"))?;
                    sqlx::query(
                        "INSERT INTO inventory (product_id, available, regions, version, updated_at_ms) \
                     VALUES (?, ?, ?, 1, ?)",
                    )
                    .bind(new.id.get())
                    .bind(new.available.get())
                    .bind($crate::sql::json_text(&new.regions))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await.map_err($crate::StoreError::from)
                })
                .await?;
                Ok($crate::Product {
                    id: new.id,
                    merchant_id: new.merchant_id,
                    category_id: new.category_id,
                    sku: new.sku,
                    title: new.title,
                    description: new.description,
                    images: new.images,
                    list_price: new.list_price,
                    status: new.status,
                    inventory: $crate::Inventory { available: new.available, regions: new.regions, version: 1 },
                    created_at_ms: now,
                    updated_at_ms: now,
                })
            }

            async fn product(&self, id: flashback_core::ProductId) -> $crate::StoreResult<Option<$crate::Product>> {
                self.product_from(self.reader()?, id).await
            }

            async fn products(
                &self,
                filter: $crate::ProductFilter,
                after: Option<flashback_core::Cursor>,
                limit: flashback_core::PageLimit,
            ) -> $crate::StoreResult<Vec<$crate::Product>> {
                let mut q = sqlx::QueryBuilder::<$db>::new($crate::sql::PRODUCT_SELECT);
                q.push(" WHERE 1 = 1");
                if let Some(c) = filter.category_id {
                    q.push(" AND p.category_id = ").push_bind(c.get());
                }
                if let Some(m) = filter.merchant_id {
                    q.push(" AND p.merchant_id = ").push_bind(m.get());
                }
                if let Some(s) = filter.status {
                    q.push(" AND p.status = ").push_bind(s.as_str());
                }
                if let Some(c) = after {
                    q.push(" AND p.id < ").push_bind(c.before_id);
                }
                q.push(" ORDER BY p.id DESC LIMIT ").push_bind(i64::from(limit.get()));
                let rows: Vec<$crate::sql::ProductRow> = q.build_query_as().fetch_all(self.reader()?).await?;
                rows.into_iter().map($crate::Product::try_from).collect()
            }

            async fn update_product(
                &self,
                id: flashback_core::ProductId,
                merchant: flashback_core::MerchantId,
                patch: $crate::ProductPatch,
            ) -> $crate::StoreResult<$crate::Product> {
                let done = $crate::retry_deadlocks(|| async {
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE products SET updated_at_ms = ");
                    q.push_bind($crate::now_ms());
                    if let Some(v) = patch.category_id {
                        q.push(", category_id = ").push_bind(v.get());
                    }
                    if let Some(v) = &patch.title {
                        q.push(", title = ").push_bind(v.as_str().to_owned());
                    }
                    if let Some(v) = &patch.description {
                        q.push(", description = ").push_bind(v.as_str().to_owned());
                    }
                    if let Some(v) = &patch.images {
                        q.push(", images = ").push_bind($crate::sql::json_text(v));
                    }
                    if let Some(v) = patch.list_price {
                        q.push(", list_price_minor = ").push_bind(v.minor());
                    }
                    if let Some(v) = patch.status {
                        q.push(", status = ").push_bind(v.as_str());
                    }
                    q.push(" WHERE id = ").push_bind(id.get());
                    q.push(" AND merchant_id = ").push_bind(merchant.get());
                    q.build().execute(self.writer()?).await.map_err(|e| $crate::error::on_write(e, "sku", "category"))
                })
                .await?;
                self.changed_product(id, merchant, done.rows_affected(), None).await
            }

            async fn set_status(
                &self,
                id: flashback_core::ProductId,
                merchant: flashback_core::MerchantId,
                status: flashback_core::ProductStatus,
            ) -> $crate::StoreResult<$crate::Product> {
                let patch = $crate::ProductPatch { status: Some(status), ..Default::default() };
                self.update_product(id, merchant, patch).await
            }

            async fn set_inventory(
                &self,
                id: flashback_core::ProductId,
                merchant: flashback_core::MerchantId,
                available: flashback_core::Stock,
                regions: flashback_core::Regions,
                expected_version: Option<i64>,
            ) -> $crate::StoreResult<$crate::Product> {
                let done = $crate::retry_deadlocks(|| async {
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE inventory SET available = ");
                    q.push_bind(available.get());
                    q.push(", regions = ").push_bind($crate::sql::json_text(&regions));
                    q.push(", version = version + 1, updated_at_ms = ").push_bind($crate::now_ms());
                    q.push(" WHERE product_id = ").push_bind(id.get());
                    q.push(" AND product_id IN (SELECT id FROM products WHERE merchant_id = ")
                        .push_bind(merchant.get());
                    q.push(")");
                    if let Some(v) = expected_version {
                        q.push(" AND version = ").push_bind(v);
                    }
                    q.build().execute(self.writer()?).await.map_err($crate::StoreError::from)
                })
                .await?;
                self.changed_product(id, merchant, done.rows_affected(), Some("version")).await
            }

            async fn adjust_stock(
                &self,
                id: flashback_core::ProductId,
                merchant: flashback_core::MerchantId,
                delta: i64,
            ) -> $crate::StoreResult<$crate::Product> {
                let done = $crate::retry_deadlocks(|| async {
                    sqlx::query(
                        "UPDATE inventory SET available = available + ?, version = version + 1, updated_at_ms = ? \
                     WHERE product_id = ? AND available + ? BETWEEN 0 AND ? \
                     AND product_id IN (SELECT id FROM products WHERE merchant_id = ?)",
                    )
                    .bind(delta)
                    .bind($crate::now_ms())
                    .bind(id.get())
                    .bind(delta)
                    .bind(flashback_core::Stock::MAX)
                    .bind(merchant.get())
                    .execute(self.writer()?)
                    .await
                    .map_err($crate::StoreError::from)
                })
                .await?;
                self.changed_product(id, merchant, done.rows_affected(), Some("stock")).await
            }
        }

        impl $store {
            async fn product_from(
                &self,
                pool: &sqlx::Pool<$db>,
                id: flashback_core::ProductId,
            ) -> $crate::StoreResult<Option<$crate::Product>> {
                let sql = format!("{} WHERE p.id = ?", $crate::sql::PRODUCT_SELECT);
                let row: Option<$crate::sql::ProductRow> =
                    sqlx::query_as(&sql).bind(id.get()).fetch_optional(pool).await?;
                row.map($crate::Product::try_from).transpose()
            }

            /// After a conditional write: the product as it now is, or why nothing changed (no
            /// such product, not this merchant's, or the condition `failed` names did not hold;
            /// `None` for writes without a condition, which MySQL may report as zero rows changed
            /// when the values were already the same).
            async fn changed_product(
                &self,
                id: flashback_core::ProductId,
                merchant: flashback_core::MerchantId,
                rows_affected: u64,
                failed: Option<&'static str>,
            ) -> $crate::StoreResult<$crate::Product> {
                // Read from the writer so the caller sees its own write.
                match (self.product_from(self.writer()?, id).await?, failed) {
                    (Some(p), _) if p.merchant_id != merchant => Err($crate::StoreError::NotFound("product")),
                    (Some(_), Some(condition)) if rows_affected == 0 => {
                        Err($crate::StoreError::ConditionFailed(condition))
                    }
                    (Some(p), _) => Ok(p),
                    (None, _) => Err($crate::StoreError::NotFound("product")),
                }
            }
        }
    };
}

pub(crate) use impl_sql_store;
