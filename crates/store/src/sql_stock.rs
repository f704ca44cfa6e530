//! Stock reservations, written once for both backends (see `sql.rs` for why a macro).

/// Implements [`crate::StockStore`] for a catalog store type with `writer()`/`reader()` pools.
macro_rules! impl_stock_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::StockStore for $store {
            async fn reserve(
                &self,
                order: flashback_core::OrderId,
                lines: &[(flashback_core::ProductId, flashback_core::Quantity)],
            ) -> Result<Vec<$crate::ReservedLine>, $crate::ReserveError> {
                $crate::retry_deadlocks(|| async {
                    use sqlx::Row;
                    let mut tx = self.writer()?.begin().await?;
                    let existing = sqlx::query(
                        "SELECT r.product_id, r.quantity, p.merchant_id, p.sku, p.title, p.list_price_minor \
                         FROM stock_reservations r JOIN products p ON p.id = r.product_id \
                         WHERE r.order_id = ? ORDER BY r.product_id",
                    )
                    .bind(order.get())
                    .fetch_all(&mut *tx)
                    .await?;
                    if !existing.is_empty() {
                        // A retry of a saga step that already ran: report, take nothing more.
                        return existing
                            .iter()
                            .map(|r| $crate::sql_stock::reserved_line(r, r.try_get("quantity")?))
                            .collect();
                    }
                    // Lock rows in one global order so concurrent orders cannot deadlock.
                    let mut sorted = lines.to_vec();
                    sorted.sort_by_key(|(p, _)| *p);
                    let now = $crate::now_ms();
                    let mut reserved = Vec::with_capacity(sorted.len());
                    for (product, quantity) in sorted {
                        let row = sqlx::query(
                            "SELECT id AS product_id, merchant_id, sku, title, list_price_minor, status \
                             FROM products WHERE id = ?",
                        )
                        .bind(product.get())
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or($crate::ReserveError::UnknownProduct(product))?;
                        let status: String = row.try_get("status")?;
                        if status != flashback_core::ProductStatus::OnShelf.as_str() {
                            tx.rollback().await?;
                            return Err($crate::ReserveError::OffShelf(product));
                        }
                        let taken = sqlx::query(
                            "UPDATE inventory SET available = available - ?, version = version + 1, updated_at_ms = ? \
                             WHERE product_id = ? AND available >= ?",
                        )
                        .bind(quantity.get())
                        .bind(now)
                        .bind(product.get())
                        .bind(quantity.get())
                        .execute(&mut *tx)
                        .await?;
                        if taken.rows_affected() != 1 {
                            tx.rollback().await?;
                            return Err($crate::ReserveError::InsufficientStock(product));
                        }
                        sqlx::query(
                            "INSERT INTO stock_reservations (order_id, product_id, quantity, state, created_at_ms, updated_at_ms) \
                             VALUES (?, ?, ?, 'held', ?, ?)",
                        )
                        .bind(order.get())
                        .bind(product.get())
                        .bind(quantity.get())
                        .bind(now)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        reserved.push($crate::sql_stock::reserved_line(&row, quantity.get())?);
                    }
                    tx.commit().await?;
                    Ok(reserved)
                })
                .await
            }

            async fn release(&self, order: flashback_core::OrderId, sold_too: bool) -> $crate::StoreResult<i64> {
                $crate::retry_deadlocks(|| async {
                    use sqlx::Row;
                    let mut tx = self.writer()?.begin().await?;
                    let rows = sqlx::query(
                        "SELECT product_id, quantity, state FROM stock_reservations WHERE order_id = ? AND state <> 'released'",
                    )
                    .bind(order.get())
                    .fetch_all(&mut *tx)
                    .await?;
                    let now = $crate::now_ms();
                    let mut released = 0;
                    for row in rows {
                        let state: String = row.try_get("state")?;
                        if state == "sold" && !sold_too {
                            continue;
                        }
                        let product: i64 = row.try_get("product_id")?;
                        let quantity: i64 = row.try_get("quantity")?;
                        // Compare-and-set on the reservation: each is given back exactly once.
                        let moved = sqlx::query(
                            "UPDATE stock_reservations SET state = 'released', updated_at_ms = ? \
                             WHERE order_id = ? AND product_id = ? AND state = ?",
                        )
                        .bind(now)
                        .bind(order.get())
                        .bind(product)
                        .bind(&state)
                        .execute(&mut *tx)
                        .await?;
                        if moved.rows_affected() == 1 {
                            sqlx::query(
                                "UPDATE inventory SET available = available + ?, version = version + 1, updated_at_ms = ? \
                                 WHERE product_id = ?",
                            )
                            .bind(quantity)
                            .bind(now)
                            .bind(product)
                            .execute(&mut *tx)
                            .await?;
                            released += quantity;
                        }
                    }
                    tx.commit().await?;
                    Ok(released)
                })
                .await
            }

            async fn settle(&self, order: flashback_core::OrderId) -> $crate::StoreResult<u64> {
                $crate::retry_deadlocks(|| async {
                    let done = sqlx::query(
                        "UPDATE stock_reservations SET state = 'sold', updated_at_ms = ? WHERE order_id = ? AND state = 'held'",
                    )
                    .bind($crate::now_ms())
                    .bind(order.get())
                    .execute(self.writer()?)
                    .await?;
                    Ok(done.rows_affected())
                })
                .await
            }

            async fn reservations(
                &self,
                order: flashback_core::OrderId,
            ) -> $crate::StoreResult<Vec<$crate::Reservation>> {
                let rows = sqlx::query(
                    "SELECT order_id, product_id, quantity, state, created_at_ms FROM stock_reservations \
                     WHERE order_id = ? ORDER BY product_id",
                )
                .bind(order.get())
                .fetch_all(self.writer()?)
                .await?;
                rows.iter().map(|r| $crate::sql_stock::reservation(r)).collect()
            }

            async fn held_orders(&self, before_ms: i64, limit: u32) -> $crate::StoreResult<Vec<flashback_core::OrderId>> {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT DISTINCT order_id FROM stock_reservations WHERE state = 'held' AND created_at_ms < ? \
                     ORDER BY order_id LIMIT ?",
                )
                .bind(before_ms)
                .bind(i64::from(limit))
                .fetch_all(self.writer()?)
                .await?;
                $crate::sql::parse_ids(ids, "stock_reservations", flashback_core::OrderId::new)
            }

            async fn stock_summary(&self) -> $crate::StoreResult<Vec<$crate::StockSummary>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT i.product_id, i.available, \
                     CAST(COALESCE(SUM(CASE WHEN r.state = 'held' THEN r.quantity ELSE 0 END), 0) AS SIGNED) AS held, \
                     CAST(COALESCE(SUM(CASE WHEN r.state = 'sold' THEN r.quantity ELSE 0 END), 0) AS SIGNED) AS sold \
                     FROM inventory i LEFT JOIN stock_reservations r ON r.product_id = i.product_id \
                     GROUP BY i.product_id, i.available ORDER BY i.product_id",
                )
                .fetch_all(self.writer()?)
                .await?;
                rows.iter()
                    .map(|r| {
                        let id: i64 = r.try_get("product_id")?;
                        Ok($crate::StockSummary {
                            product_id: flashback_core::ProductId::new(id).map_err(|e| $crate::StoreError::Corrupt {
                                table: "inventory",
                                reason: e.to_string(),
                            })?,
                            available: r.try_get("available")?,
                            held: r.try_get("held")?,
                            sold: r.try_get("sold")?,
                        })
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use impl_stock_store;

use flashback_core::{Money, OrderId, ProductId, Quantity, Sku, Title};
use sqlx::Row;

use crate::{Reservation, ReservationState, ReserveError, ReservedLine, StoreError};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { table: "stock_reservations", reason: e.to_string() }
}

pub(crate) fn reserved_line<R: Row>(r: &R, quantity: i64) -> Result<ReservedLine, ReserveError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let product: i64 = r.try_get("product_id")?;
    let merchant: i64 = r.try_get("merchant_id")?;
    let sku: String = r.try_get("sku")?;
    let title: String = r.try_get("title")?;
    let price: i64 = r.try_get("list_price_minor")?;
    Ok(ReservedLine {
        product_id: ProductId::new(product).map_err(corrupt)?,
        merchant_id: flashback_core::MerchantId::new(merchant).map_err(corrupt)?,
        sku: Sku::parse(&sku).map_err(corrupt)?,
        title: Title::parse(&title).map_err(corrupt)?,
        unit_price: Money::from_minor(price).map_err(corrupt)?,
        quantity: Quantity::new(quantity).map_err(corrupt)?,
    })
}

pub(crate) fn reservation<R: Row>(r: &R) -> Result<Reservation, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let state: String = r.try_get("state")?;
    Ok(Reservation {
        order_id: OrderId::new(r.try_get("order_id")?).map_err(corrupt)?,
        product_id: ProductId::new(r.try_get("product_id")?).map_err(corrupt)?,
        quantity: Quantity::new(r.try_get("quantity")?).map_err(corrupt)?,
        state: match state.as_str() {
            "held" => ReservationState::Held,
            "sold" => ReservationState::Sold,
            "released" => ReservationState::Released,
            other => return Err(corrupt(format!("unknown reservation state {other}"))),
        },
        created_at_ms: r.try_get("created_at_ms")?,
    })
}
