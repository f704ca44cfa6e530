//! Flash sales, written once for both backends (see `sql.rs` for why a macro).

use flashback_core::{MerchantId, Money, ProductId, SaleId};

use crate::{FlashSale, SaleState, StoreError};

pub(crate) const SALE_COLUMNS: &str = "id, merchant_id, product_id, sale_price_minor, stock, per_user_limit, \
     starts_at_ms, ends_at_ms, require_token, state, returned_units, created_at_ms";

#[derive(sqlx::FromRow)]
pub(crate) struct SaleRow {
    pub id: i64,
    pub merchant_id: i64,
    pub product_id: i64,
    pub sale_price_minor: i64,
    pub stock: i64,
    pub per_user_limit: i64,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub require_token: i64,
    pub state: String,
    pub returned_units: i64,
    pub created_at_ms: i64,
}

impl TryFrom<SaleRow> for FlashSale {
    type Error = StoreError;
    fn try_from(r: SaleRow) -> Result<Self, StoreError> {
        let bad = |e: flashback_core::ParseError| StoreError::Corrupt { table: "flash_sales", reason: e.to_string() };
        Ok(FlashSale {
            id: SaleId::new(r.id).map_err(bad)?,
            merchant_id: MerchantId::new(r.merchant_id).map_err(bad)?,
            product_id: ProductId::new(r.product_id).map_err(bad)?,
            sale_price: Money::from_minor(r.sale_price_minor).map_err(bad)?,
            stock: r.stock,
            per_user_limit: r.per_user_limit,
            starts_at_ms: r.starts_at_ms,
            ends_at_ms: r.ends_at_ms,
            require_token: r.require_token != 0,
            state: SaleState::parse(&r.state)?,
            returned_units: r.returned_units,
            created_at_ms: r.created_at_ms,
        })
    }
}

/// A reservation as selected: id, sale, buyer, quantity, state, order, created, key (the key
/// selected as `CAST(idempotency_key AS CHAR)`: MySQL reports a binary-collated column as bytes).
pub(crate) type ReservationRow = (i64, i64, i64, i64, String, Option<i64>, i64, Option<String>);

pub(crate) fn reservation(
    (id, sale, user, quantity, state, order, created, key): ReservationRow,
) -> Result<crate::FlashReservation, StoreError> {
    let bad =
        |e: flashback_core::ParseError| StoreError::Corrupt { table: "flash_reservations", reason: e.to_string() };
    Ok(crate::FlashReservation {
        id,
        sale_id: SaleId::new(sale).map_err(bad)?,
        user_id: flashback_core::UserId::new(user).map_err(bad)?,
        quantity,
        status: crate::ReservationStatus::parse(&state)?,
        order_id: order.map(flashback_core::OrderId::new).transpose().map_err(bad)?,
        created_at_ms: created,
        idempotency_key: key,
    })
}

/// Implements [`crate::FlashSaleStore`] for a catalog store type with `writer()`/`reader()`.
///
/// `$keep_existing` ends an `INSERT` so that a row whose key exists is left alone: the two
/// dialects spell it differently.
macro_rules! impl_flash_store {
    ($store:ty, $db:ty, $keep_existing:literal) => {
        #[async_trait::async_trait]
        impl $crate::FlashSaleStore for $store {
            async fn create_sale(&self, new: $crate::NewFlashSale) -> $crate::StoreResult<$crate::FlashSale> {
                $crate::retry_deadlocks(|| async {
                    let now = $crate::now_ms();
                    let mut tx = self.writer()?.begin().await?;
                    let carved = sqlx::query(
                        "UPDATE inventory SET available = available - ?, version = version + 1, updated_at_ms = ? \
                         WHERE product_id = ? AND available >= ? \
                         AND product_id IN (SELECT id FROM products WHERE merchant_id = ?)",
                    )
                    .bind(new.stock)
                    .bind(now)
                    .bind(new.product_id.get())
                    .bind(new.stock)
                    .bind(new.merchant_id.get())
                    .execute(&mut *tx)
                    .await?;
                    if carved.rows_affected() != 1 {
                        let owned: Option<i64> =
                            sqlx::query_scalar("SELECT id FROM products WHERE id = ? AND merchant_id = ?")
                                .bind(new.product_id.get())
                                .bind(new.merchant_id.get())
                                .fetch_optional(&mut *tx)
                                .await?;
                        return Err(match owned {
                            Some(_) => $crate::StoreError::ConditionFailed("stock"),
                            None => $crate::StoreError::NotFound("product"),
                        });
                    }
                    sqlx::query(
                        "INSERT INTO flash_sales (id, merchant_id, product_id, sale_price_minor, stock, remaining, \
                         per_user_limit, starts_at_ms, ends_at_ms, require_token, state, returned_units, created_at_ms) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', 0, ?)",
                    )
                    .bind(new.id.get())
                    .bind(new.merchant_id.get())
                    .bind(new.product_id.get())
                    .bind(new.sale_price.minor())
                    .bind(new.stock)
                    .bind(new.stock)
                    .bind(new.per_user_limit)
                    .bind(new.starts_at_ms)
                    .bind(new.ends_at_ms)
                    .bind(i64::from(new.require_token))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok($crate::FlashSale {
                        id: new.id,
                        merchant_id: new.merchant_id,
                        product_id: new.product_id,
                        sale_price: new.sale_price,
                        stock: new.stock,
                        per_user_limit: new.per_user_limit,
                        starts_at_ms: new.starts_at_ms,
                        ends_at_ms: new.ends_at_ms,
                        require_token: new.require_token,
                        state: $crate::SaleState::Open,
                        returned_units: 0,
                        created_at_ms: now,
                    })
                })
                .await
            }

            async fn flash_sale(&self, id: flashback_core::SaleId) -> $crate::StoreResult<Option<$crate::FlashSale>> {
                let sql = format!("SELECT {} FROM flash_sales WHERE id = ?", $crate::sql_flash::SALE_COLUMNS);
                let row: Option<$crate::sql_flash::SaleRow> =
                    sqlx::query_as(&sql).bind(id.get()).fetch_optional(self.writer()?).await?;
                row.map($crate::FlashSale::try_from).transpose()
            }

            async fn flash_sales(
                &self,
                state: Option<$crate::SaleState>,
                after: Option<flashback_core::Cursor>,
                limit: flashback_core::PageLimit,
            ) -> $crate::StoreResult<Vec<$crate::FlashSale>> {
                let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM flash_sales WHERE 1 = 1",
                    $crate::sql_flash::SALE_COLUMNS
                ));
                if let Some(s) = state {
                    q.push(" AND state = ").push_bind(s.as_str());
                }
                if let Some(c) = after {
                    q.push(" AND id < ").push_bind(c.before_id);
                }
                q.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit.get()));
                let rows: Vec<$crate::sql_flash::SaleRow> = q.build_query_as().fetch_all(self.reader()?).await?;
                rows.into_iter().map($crate::FlashSale::try_from).collect()
            }

            async fn sale_taken_units(&self, id: flashback_core::SaleId) -> $crate::StoreResult<i64> {
                let taken: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM flash_reservations \
                     WHERE sale_id = ? AND state <> 'released'",
                )
                .bind(id.get())
                .fetch_one(self.writer()?)
                .await?;
                Ok(taken)
            }

            async fn sales_due_to_end(
                &self,
                now_ms: i64,
                limit: u32,
            ) -> $crate::StoreResult<Vec<flashback_core::SaleId>> {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM flash_sales WHERE state = 'open' AND ends_at_ms <= ? ORDER BY ends_at_ms LIMIT ?",
                )
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(self.writer()?)
                .await?;
                $crate::sql::parse_ids(ids, "flash_sales", flashback_core::SaleId::new)
            }

            async fn insert_reservations(&self, rows: &[$crate::FlashReservation]) -> $crate::StoreResult<()> {
                $crate::retry_deadlocks(|| async {
                    if rows.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self.writer()?.begin().await?;
                    // Bounded statements: SQLite allows at most 32,766 parameters per statement.
                    for chunk in rows.chunks(1_000) {
                        let mut q = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO flash_reservations (id, sale_id, user_id, quantity, state, order_id, created_at_ms, updated_at_ms, \
                             idempotency_key) ",
                        );
                        q.push_values(chunk, |mut b, r| {
                            b.push_bind(r.id)
                                .push_bind(r.sale_id.get())
                                .push_bind(r.user_id.get())
                                .push_bind(r.quantity)
                                .push_bind(r.status.as_str())
                                .push_bind(r.order_id.map(flashback_core::OrderId::get))
                                .push_bind(r.created_at_ms)
                                .push_bind(r.created_at_ms)
                                .push_bind(r.idempotency_key.as_deref());
                        });
                        q.push($keep_existing);
                        q.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn flash_reservation(&self, id: i64) -> $crate::StoreResult<Option<$crate::FlashReservation>> {
                let row: Option<$crate::sql_flash::ReservationRow> = sqlx::query_as(
                    "SELECT id, sale_id, user_id, quantity, state, order_id, created_at_ms, CAST(idempotency_key AS CHAR) FROM flash_reservations WHERE id = ?",
                )
                .bind(id)
                .fetch_optional(self.writer()?)
                .await?;
                row.map($crate::sql_flash::reservation).transpose()
            }

            async fn sale_book(
                &self,
                id: flashback_core::SaleId,
            ) -> $crate::StoreResult<Vec<(flashback_core::UserId, i64)>> {
                let rows: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT user_id, CAST(SUM(quantity) AS SIGNED) FROM flash_reservations                      WHERE sale_id = ? AND state <> 'released' GROUP BY user_id",
                )
                .bind(id.get())
                .fetch_all(self.writer()?)
                .await?;
                rows.into_iter()
                    .map(|(u, n)| {
                        let user = flashback_core::UserId::new(u).map_err(|e| $crate::StoreError::Corrupt {
                            table: "flash_reservations",
                            reason: e.to_string(),
                        })?;
                        Ok((user, n))
                    })
                    .collect()
            }

            async fn sql_reserve(
                &self,
                r: &$crate::FlashReservation,
                per_user_limit: i64,
                now_ms: i64,
            ) -> Result<Option<$crate::FlashReservation>, $crate::SqlReserveRefusal> {
                $crate::retry_deadlocks(|| async {
                    let mut tx = self.writer()?.begin().await?;
                    let taken = sqlx::query(
                        "UPDATE flash_sales SET remaining = remaining - ? WHERE id = ? AND state = 'open' \
                         AND remaining >= ? AND starts_at_ms <= ? AND ends_at_ms > ?",
                    )
                    .bind(r.quantity)
                    .bind(r.sale_id.get())
                    .bind(r.quantity)
                    .bind(now_ms)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                    if let Some(key) = &r.idempotency_key {
                        // Read after the sale row's lock is ours: a reserve of this sale with the
                        // same key that went first has committed by now, and is seen.
                        let earlier = Self::flash_by_key(&mut *tx, r.user_id, key).await?;
                        if earlier.is_some() {
                            tx.rollback().await?;
                            return Ok(earlier);
                        }
                    }
                    if taken.rows_affected() != 1 {
                        tx.rollback().await?;
                        return Err($crate::SqlReserveRefusal::SoldOut);
                    }
                    // Every reserve of this sale holds the sale row's lock from here to commit, so
                    // this sum cannot change under us.
                    let held: i64 = sqlx::query_scalar(
                        "SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM flash_reservations \
                         WHERE sale_id = ? AND user_id = ? AND state <> 'released'",
                    )
                    .bind(r.sale_id.get())
                    .bind(r.user_id.get())
                    .fetch_one(&mut *tx)
                    .await?;
                    if held.checked_add(r.quantity).is_none_or(|total| total > per_user_limit) {
                        // Undoes the decrement in the same transaction: it is never visible.
                        tx.rollback().await?;
                        return Err($crate::SqlReserveRefusal::LimitReached);
                    }
                    let inserted = sqlx::query(
                        "INSERT INTO flash_reservations (id, sale_id, user_id, quantity, state, order_id, created_at_ms, \
                         updated_at_ms, idempotency_key) VALUES (?, ?, ?, ?, 'reserved', NULL, ?, ?, ?)",
                    )
                    .bind(r.id)
                    .bind(r.sale_id.get())
                    .bind(r.user_id.get())
                    .bind(r.quantity)
                    .bind(r.created_at_ms)
                    .bind(r.created_at_ms)
                    .bind(r.idempotency_key.as_deref())
                    .execute(&mut *tx)
                    .await;
                    match inserted {
                        Ok(_) => {}
                        Err(e) if r.idempotency_key.is_some() && e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                            // The same key, reserved at once for another sale: that one stands.
                            tx.rollback().await?;
                            let key = r.idempotency_key.as_deref().unwrap_or_default();
                            let earlier = Self::flash_by_key(self.writer()?, r.user_id, key).await?;
                            return match earlier {
                                Some(e) => Ok(Some(e)),
                                None => Err($crate::SqlReserveRefusal::Store($crate::StoreError::Conflict("idempotency_key"))),
                            };
                        }
                        Err(e) => return Err(e.into()),
                    }
                    let Err(lost) = tx.commit().await else { return Ok(None) };
                    // The commit may have taken effect though its answer never came back.
                    match self.reservation_fence(r.id).await {
                        Ok(true) => Ok(None),
                        Ok(false) => Err(lost.into()),
                        Err(fence) => Err($crate::SqlReserveRefusal::InDoubt { lost: lost.into(), fence }),
                    }
                })
                .await
            }

            async fn sql_reservation_settled(&self, id: i64) -> $crate::StoreResult<bool> {
                self.reservation_fence(id).await
            }

            async fn reservations_to_order(&self, limit: u32) -> $crate::StoreResult<Vec<$crate::FlashReservation>> {
                let rows: Vec<$crate::sql_flash::ReservationRow> = sqlx::query_as(
                    "SELECT id, sale_id, user_id, quantity, state, order_id, created_at_ms, CAST(idempotency_key AS CHAR) FROM flash_reservations \
                     WHERE state = 'reserved' ORDER BY id LIMIT ?",
                )
                .bind(i64::from(limit))
                .fetch_all(self.writer()?)
                .await?;
                rows.into_iter().map($crate::sql_flash::reservation).collect()
            }

            async fn mark_reservation_ordered(
                &self,
                id: i64,
                order: flashback_core::OrderId,
            ) -> $crate::StoreResult<bool> {
                $crate::retry_deadlocks(|| async {
                    let done = sqlx::query(
                        "UPDATE flash_reservations SET state = 'ordered', order_id = ?, updated_at_ms = ? \
                         WHERE id = ? AND state = 'reserved'",
                    )
                    .bind(order.get())
                    .bind($crate::now_ms())
                    .bind(id)
                    .execute(self.writer()?)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
                .await
            }

            async fn mark_reservations_ordered(
                &self,
                made: &[(i64, flashback_core::OrderId)],
            ) -> $crate::StoreResult<u64> {
                $crate::retry_deadlocks(|| async {
                    if made.is_empty() {
                        return Ok(0);
                    }
                    let now = $crate::now_ms();
                    let mut tx = self.writer()?.begin().await?;
                    let mut marked = 0;
                    for (id, order) in made {
                        marked += sqlx::query(
                            "UPDATE flash_reservations SET state = 'ordered', order_id = ?, updated_at_ms = ? \
                             WHERE id = ? AND state = 'reserved'",
                        )
                        .bind(order.get())
                        .bind(now)
                        .bind(*id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                    tx.commit().await?;
                    Ok(marked)
                })
                .await
            }

            async fn release_reservation(&self, id: i64) -> $crate::StoreResult<Option<$crate::FlashReservation>> {
                $crate::retry_deadlocks(|| async {
                    let now = $crate::now_ms();
                    let mut tx = self.writer()?.begin().await?;
                    let row: Option<$crate::sql_flash::ReservationRow> = sqlx::query_as(
                        "SELECT id, sale_id, user_id, quantity, state, order_id, created_at_ms, CAST(idempotency_key AS CHAR) FROM flash_reservations WHERE id = ?",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(r) = row.map($crate::sql_flash::reservation).transpose()? else { return Ok(None) };
                    let moved = sqlx::query(
                        "UPDATE flash_reservations SET state = 'released', updated_at_ms = ? WHERE id = ? AND state <> 'released'",
                    )
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    if moved.rows_affected() != 1 {
                        return Ok(None);
                    }
                    let to_sale = sqlx::query(
                        "UPDATE flash_sales SET remaining = remaining + ? WHERE id = ? AND state = 'open'",
                    )
                    .bind(r.quantity)
                    .bind(r.sale_id.get())
                    .execute(&mut *tx)
                    .await?;
                    if to_sale.rows_affected() == 0 {
                        // The sale has ended: the units go back to the product, counted as returned.
                        sqlx::query("UPDATE flash_sales SET returned_units = returned_units + ? WHERE id = ?")
                            .bind(r.quantity)
                            .bind(r.sale_id.get())
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query(
                            "UPDATE inventory SET available = available + ?, version = version + 1, updated_at_ms = ? \
                             WHERE product_id = (SELECT product_id FROM flash_sales WHERE id = ?)",
                        )
                        .bind(r.quantity)
                        .bind(now)
                        .bind(r.sale_id.get())
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(Some(r))
                })
                .await
            }

            async fn sale_reservations(
                &self,
                id: flashback_core::SaleId,
            ) -> $crate::StoreResult<Vec<$crate::FlashReservation>> {
                let rows: Vec<$crate::sql_flash::ReservationRow> = sqlx::query_as(
                    "SELECT id, sale_id, user_id, quantity, state, order_id, created_at_ms, CAST(idempotency_key AS CHAR) FROM flash_reservations \
                     WHERE sale_id = ? ORDER BY id",
                )
                .bind(id.get())
                .fetch_all(self.writer()?)
                .await?;
                rows.into_iter().map($crate::sql_flash::reservation).collect()
            }

            async fn released_reservations(
                &self,
                id: flashback_core::SaleId,
            ) -> $crate::StoreResult<Vec<$crate::FlashReservation>> {
                let rows: Vec<$crate::sql_flash::ReservationRow> = sqlx::query_as(
                    "SELECT id, sale_id, user_id, quantity, state, order_id, created_at_ms, CAST(idempotency_key AS CHAR) FROM flash_reservations \
                     WHERE sale_id = ? AND state = 'released' ORDER BY id",
                )
                .bind(id.get())
                .fetch_all(self.writer()?)
                .await?;
                rows.into_iter().map($crate::sql_flash::reservation).collect()
            }

            async fn sale_remaining_counter(&self, id: flashback_core::SaleId) -> $crate::StoreResult<i64> {
                let n: Option<i64> = sqlx::query_scalar("SELECT remaining FROM flash_sales WHERE id = ?")
                    .bind(id.get())
                    .fetch_optional(self.writer()?)
                    .await?;
                n.ok_or($crate::StoreError::NotFound("flash sale"))
            }

            async fn end_sale(&self, id: flashback_core::SaleId, now_ms: i64) -> $crate::StoreResult<Option<i64>> {
                $crate::retry_deadlocks(|| self.end_sale_once(id, now_ms)).await
            }
        }

        impl $store {
            /// The buyer's reservation made under `key`, if any, read through `db` (the pool
            /// or a transaction).
            pub(crate) async fn flash_by_key<'e, E: sqlx::Executor<'e, Database = $db>>(
                db: E,
                user: flashback_core::UserId,
                key: &str,
            ) -> $crate::StoreResult<Option<$crate::FlashReservation>> {
                let row: Option<$crate::sql_flash::ReservationRow> = sqlx::query_as(
                    "SELECT id, sale_id, user_id, quantity, state, order_id, created_at_ms, \
                     CAST(idempotency_key AS CHAR) FROM flash_reservations WHERE user_id = ? AND idempotency_key = ?",
                )
                .bind(user.get())
                .bind(key)
                .fetch_optional(db)
                .await?;
                row.map($crate::sql_flash::reservation).transpose()
            }

            /// One attempt of [`crate::FlashSaleStore::end_sale`].
            async fn end_sale_once(&self, id: flashback_core::SaleId, now_ms: i64) -> $crate::StoreResult<Option<i64>> {
                let mut tx = self.writer()?.begin().await?;
                let taken: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM flash_reservations \
                     WHERE sale_id = ? AND state <> 'released'",
                )
                .bind(id.get())
                .fetch_one(&mut *tx)
                .await?;
                let ended = sqlx::query(
                    "UPDATE flash_sales SET state = 'ended', returned_units = stock - ? \
                     WHERE id = ? AND state = 'open' AND ends_at_ms <= ?",
                )
                .bind(taken)
                .bind(id.get())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                if ended.rows_affected() != 1 {
                    return Ok(None);
                }
                let (product, returned): (i64, i64) =
                    sqlx::query_as("SELECT product_id, returned_units FROM flash_sales WHERE id = ?")
                        .bind(id.get())
                        .fetch_one(&mut *tx)
                        .await?;
                sqlx::query(
                    "UPDATE inventory SET available = available + ?, version = version + 1, updated_at_ms = ? \
                     WHERE product_id = ?",
                )
                .bind(returned)
                .bind(now_ms)
                .bind(product)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(returned))
            }
        }
    };
}

pub(crate) use impl_flash_store;
