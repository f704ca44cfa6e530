//! Order shards, written once for both backends (see `sql.rs` for why a macro).

use flashback_core::{MerchantId, Money, OrderId, OrderState, Points, ProductId, Quantity, Sku, Title, UserId};

use crate::{Order, OrderLine, StoreError};

pub(crate) const ORDER_COLUMNS: &str = "id, buyer_id, merchant_id, state, total_minor, points_used, payable_minor, \
     expires_at_ms, created_at_ms, updated_at_ms, flash_reservation_id";

#[derive(sqlx::FromRow)]
pub(crate) struct OrderRow {
    pub id: i64,
    pub buyer_id: i64,
    pub merchant_id: i64,
    pub state: String,
    pub total_minor: i64,
    pub points_used: i64,
    pub payable_minor: i64,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub flash_reservation_id: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct LineRow {
    pub order_id: i64,
    pub product_id: i64,
    pub sku: String,
    pub title: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { table: "orders", reason: e.to_string() }
}

/// Puts order rows and their line rows together, keeping the order of `orders`.
pub(crate) fn assemble(orders: Vec<OrderRow>, lines: Vec<LineRow>) -> Result<Vec<Order>, StoreError> {
    orders
        .into_iter()
        .map(|o| {
            let lines = lines
                .iter()
                .filter(|l| l.order_id == o.id)
                .map(|l| {
                    Ok(OrderLine {
                        product_id: ProductId::new(l.product_id).map_err(corrupt)?,
                        sku: Sku::parse(&l.sku).map_err(corrupt)?,
                        title: Title::parse(&l.title).map_err(corrupt)?,
                        quantity: Quantity::new(l.quantity).map_err(corrupt)?,
                        unit_price: Money::from_minor(l.unit_price_minor).map_err(corrupt)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(Order {
                id: OrderId::new(o.id).map_err(corrupt)?,
                buyer: UserId::new(o.buyer_id).map_err(corrupt)?,
                merchant: MerchantId::new(o.merchant_id).map_err(corrupt)?,
                state: o.state.parse::<OrderState>().map_err(corrupt)?,
                lines,
                total: Money::from_minor(o.total_minor).map_err(corrupt)?,
                points_used: Points::new(o.points_used).map_err(corrupt)?,
                payable: Money::from_minor(o.payable_minor).map_err(corrupt)?,
                expires_at_ms: o.expires_at_ms,
                created_at_ms: o.created_at_ms,
                updated_at_ms: o.updated_at_ms,
                flash_reservation: o.flash_reservation_id,
            })
        })
        .collect()
}

/// Rows per multi-row statement of a batch write (11 binds per order row: 5,500 per statement,
/// well inside SQLite's and MySQL's limits on bound parameters).
pub(crate) const BATCH_ROWS: usize = 500;

/// How a batch of new orders maps onto idempotency keys claimed before: which inputs to write
/// (by index) and, for every input, the id of its order — its own, or the earlier holder's of
/// its key. `claimed` maps `(buyer, key)` to the order already holding it; a key repeated in the
/// batch is written once, by its first order.
pub(crate) fn plan_batch(
    batch: &[(crate::NewOrder, i64)],
    mut claimed: std::collections::HashMap<(i64, String), i64>,
) -> Result<(Vec<usize>, Vec<OrderId>), StoreError> {
    let mut write = Vec::with_capacity(batch.len());
    let mut ids = Vec::with_capacity(batch.len());
    for (i, (new, _)) in batch.iter().enumerate() {
        let o = &new.order;
        let holder = match &new.idempotency {
            Some((key, _)) => match claimed.entry((o.buyer.get(), key.clone())) {
                std::collections::hash_map::Entry::Occupied(held) => *held.get(),
                std::collections::hash_map::Entry::Vacant(free) => {
                    free.insert(o.id.get());
                    write.push(i);
                    o.id.get()
                }
            },
            None => {
                write.push(i);
                o.id.get()
            }
        };
        ids.push(OrderId::new(holder).map_err(corrupt)?);
    }
    Ok((write, ids))
}

/// Implements [`crate::OrderShard`] for a shard type with a gated `writer()` pool, a
/// `replica_read()` (the replica's pool and a breaker permit, when there is one to read),
/// `run_migrations`, `probe`, `close_pools` and `shard_breakers`.
macro_rules! impl_order_shard {
    ($shard:ty, $db:ty) => {
        impl $shard {
            /// Loads whole orders (with lines) by id, on `conn`, in the order given.
            async fn load_orders(
                conn: &mut <$db as sqlx::Database>::Connection,
                ids: &[i64],
            ) -> $crate::StoreResult<Vec<$crate::Order>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM orders WHERE id IN (",
                    $crate::sql_shard::ORDER_COLUMNS
                ));
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                q.push(")");
                let mut rows: Vec<$crate::sql_shard::OrderRow> = q.build_query_as().fetch_all(&mut *conn).await?;
                rows.sort_by_key(|r| ids.iter().position(|id| *id == r.id));
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT order_id, product_id, sku, title, quantity, unit_price_minor FROM order_lines WHERE order_id IN (",
                );
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                q.push(") ORDER BY order_id, product_id");
                let lines: Vec<$crate::sql_shard::LineRow> = q.build_query_as().fetch_all(&mut *conn).await?;
                $crate::sql_shard::assemble(rows, lines)
            }

            async fn list_orders(
                pool: &sqlx::Pool<$db>,
                filter: $crate::OrderFilter,
                after: Option<flashback_core::Cursor>,
                limit: flashback_core::PageLimit,
            ) -> $crate::StoreResult<Vec<$crate::Order>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT id FROM orders WHERE 1 = 1");
                if let Some(b) = filter.buyer {
                    q.push(" AND buyer_id = ").push_bind(b.get());
                }
                if let Some(m) = filter.merchant {
                    q.push(" AND merchant_id = ").push_bind(m.get());
                }
                if let Some(s) = filter.state {
                    q.push(" AND state = ").push_bind(s.as_str());
                }
                if let Some(from) = filter.from_ms {
                    q.push(" AND created_at_ms >= ").push_bind(from);
                }
                if let Some(to) = filter.to_ms {
                    q.push(" AND created_at_ms < ").push_bind(to);
                }
                if let Some(c) = after {
                    q.push(" AND id < ").push_bind(c.before_id);
                }
                q.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit.get()));
                let mut conn = pool.acquire().await?;
                let ids: Vec<i64> = q.build_query_scalar().fetch_all(&mut *conn).await?;
                Self::load_orders(&mut conn, &ids).await
            }

            /// One attempt of [`crate::OrderShard::transition`].
            async fn transition_once(
                &self,
                id: flashback_core::OrderId,
                t: flashback_core::Transition,
                from: Option<flashback_core::OrderState>,
                ids: $crate::WriteIds,
            ) -> $crate::StoreResult<$crate::Order> {
                let mut sources = t.sources();
                if let Some(from) = from {
                    sources.retain(|s| *s == from);
                }
                let target = sources.first().and_then(|s| s.apply(t)).ok_or($crate::StoreError::ConditionFailed("state"))?;
                let mut tx = self.writer()?.begin().await?;
                let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE orders SET state = ");
                q.push_bind(target.as_str());
                q.push(", updated_at_ms = ").push_bind($crate::now_ms());
                q.push(" WHERE id = ").push_bind(id.get());
                q.push(" AND state IN (");
                let mut list = q.separated(", ");
                for s in &sources {
                    list.push_bind(s.as_str());
                }
                q.push(")");
                let moved = q.build().execute(&mut *tx).await?;
                let order = Self::load_order(&mut tx, id.get()).await?.ok_or($crate::StoreError::NotFound("order"))?;
                if moved.rows_affected() != 1 {
                    return Err($crate::StoreError::ConditionFailed("state"));
                }
                if matches!(target, flashback_core::OrderState::Cancelled | flashback_core::OrderState::Refunded)
                    && order.points_used.get() > 0
                {
                    let reference = format!("return:{}", order.id);
                    Self::move_points(&mut tx, ids.entry, order.buyer, order.points_used.get(), "return", &reference).await?;
                }
                let previous = if sources.len() == 1 { sources.first().copied() } else { None };
                Self::write_event(&mut tx, ids.event, t.event(), &order, previous).await?;
                tx.commit().await?;
                Ok(order)
            }

            /// The orders already holding any of the batch's idempotency keys, by `(buyer, key)`.
            async fn claimed_keys(
                conn: &mut <$db as sqlx::Database>::Connection,
                batch: &[($crate::NewOrder, i64)],
            ) -> $crate::StoreResult<std::collections::HashMap<(i64, String), i64>> {
                let keyed: Vec<(i64, &str)> = batch
                    .iter()
                    .filter_map(|(n, _)| n.idempotency.as_ref().map(|(k, _)| (n.order.buyer.get(), k.as_str())))
                    .collect();
                let mut claimed = std::collections::HashMap::new();
                for chunk in keyed.chunks($crate::sql_shard::BATCH_ROWS) {
                    let mut buyers: Vec<i64> = chunk.iter().map(|(b, _)| *b).collect();
                    buyers.sort_unstable();
                    buyers.dedup();
                    // Both columns of the primary key by IN lists (portable, and a range scan on
                    // both backends); the pairs are matched exactly below.
                    // The key as text: MySQL stores it with a binary collation (case-sensitive),
                    // which the driver would hand back as bytes.
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT buyer_id, CAST(idem_key AS CHAR) AS idem_key, order_id FROM idempotency_keys \
                         WHERE buyer_id IN (",
                    );
                    let mut list = q.separated(", ");
                    for b in &buyers {
                        list.push_bind(*b);
                    }
                    q.push(") AND idem_key IN (");
                    let mut list = q.separated(", ");
                    for (_, k) in chunk {
                        list.push_bind(*k);
                    }
                    q.push(")");
                    let rows: Vec<(i64, String, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
                    for (buyer, key, order) in rows {
                        if chunk.iter().any(|(b, k)| *b == buyer && *k == key) {
                            claimed.insert((buyer, key), order);
                        }
                    }
                }
                Ok(claimed)
            }

            /// One attempt of [`crate::OrderShard::create_orders`].
            async fn create_orders_once(
                &self,
                batch: &[($crate::NewOrder, i64)],
            ) -> $crate::StoreResult<Vec<flashback_core::OrderId>> {
                let mut tx = self.writer()?.begin().await?;
                let claimed = Self::claimed_keys(&mut tx, batch).await?;
                let (write, ids) = $crate::sql_shard::plan_batch(batch, claimed)?;
                let news: Vec<&($crate::NewOrder, i64)> = write.iter().map(|i| &batch[*i]).collect();
                let keyed: Vec<_> =
                    news.iter().filter_map(|(n, _)| n.idempotency.as_ref().map(|(k, h)| (&n.order, k, h))).collect();
                for chunk in keyed.chunks($crate::sql_shard::BATCH_ROWS) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO idempotency_keys (buyer_id, idem_key, request_hash, order_id, created_at_ms) ",
                    );
                    q.push_values(chunk, |mut b, (o, key, hash)| {
                        b.push_bind(o.buyer.get())
                            .push_bind(key.as_str())
                            .push_bind(hash.as_str())
                            .push_bind(o.id.get())
                            .push_bind(o.created_at_ms);
                    });
                    q.build()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| $crate::error::on_write(e, "idempotency_key", "order"))?;
                }
                let orders: Vec<&$crate::Order> = news.iter().map(|(n, _)| &n.order).collect();
                Self::insert_orders(&mut tx, &orders).await?;
                let events: Vec<_> = news.iter().map(|(n, event)| (*event, "order.created", &n.order, None)).collect();
                Self::insert_events(&mut tx, &events).await?;
                tx.commit().await?;
                Ok(ids)
            }

            async fn load_order(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: i64,
            ) -> $crate::StoreResult<Option<$crate::Order>> {
                Ok(Self::load_orders(conn, &[id]).await?.pop())
            }

            async fn write_event(
                conn: &mut <$db as sqlx::Database>::Connection,
                event_id: i64,
                event_type: &str,
                order: &$crate::Order,
                previous: Option<flashback_core::OrderState>,
            ) -> $crate::StoreResult<()> {
                Self::insert_events(conn, &[(event_id, event_type, order, previous)]).await
            }

            /// Writes outbox events `(id, type, order, previous state)`, many rows a statement.
            async fn insert_events(
                conn: &mut <$db as sqlx::Database>::Connection,
                events: &[(i64, &str, &$crate::Order, Option<flashback_core::OrderState>)],
            ) -> $crate::StoreResult<()> {
                let now = $crate::now_ms();
                for chunk in events.chunks($crate::sql_shard::BATCH_ROWS) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO outbox (id, event_type, aggregate_id, payload, created_at_ms) ",
                    );
                    q.push_values(chunk, |mut b, (id, event_type, order, previous)| {
                        b.push_bind(*id)
                            .push_bind(*event_type)
                            .push_bind(order.id.get())
                            .push_bind($crate::order_event_payload(*id, event_type, order, *previous, now))
                            .push_bind(now);
                    });
                    q.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Writes order rows and their line rows, many rows a statement.
            async fn insert_orders(
                conn: &mut <$db as sqlx::Database>::Connection,
                orders: &[&$crate::Order],
            ) -> $crate::StoreResult<()> {
                for chunk in orders.chunks($crate::sql_shard::BATCH_ROWS) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO orders (id, buyer_id, merchant_id, state, total_minor, points_used, payable_minor, \
                         expires_at_ms, created_at_ms, updated_at_ms, flash_reservation_id) ",
                    );
                    q.push_values(chunk, |mut b, o| {
                        b.push_bind(o.id.get())
                            .push_bind(o.buyer.get())
                            .push_bind(o.merchant.get())
                            .push_bind(o.state.as_str())
                            .push_bind(o.total.minor())
                            .push_bind(o.points_used.get())
                            .push_bind(o.payable.minor())
                            .push_bind(o.expires_at_ms)
                            .push_bind(o.created_at_ms)
                            .push_bind(o.updated_at_ms)
                            .push_bind(o.flash_reservation);
                    });
                    q.build().execute(&mut *conn).await.map_err(|e| $crate::error::on_write(e, "order", "order"))?;
                }
                let lines: Vec<_> = orders.iter().flat_map(|o| o.lines.iter().map(|l| (o.id, l))).collect();
                for chunk in lines.chunks($crate::sql_shard::BATCH_ROWS) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO order_lines (order_id, product_id, sku, title, quantity, unit_price_minor) ",
                    );
                    q.push_values(chunk, |mut b, (id, l)| {
                        b.push_bind(id.get())
                            .push_bind(l.product_id.get())
                            .push_bind(l.sku.as_str())
                            .push_bind(l.title.as_str())
                            .push_bind(l.quantity.get())
                            .push_bind(l.unit_price.minor());
                    });
                    q.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Moves points by `delta` with a ledger entry, once per `reference`; false if that
            /// reference was applied before. The balance update is conditional, so it never
            /// goes negative ([`StoreError::ConditionFailed`]`("points")`).
            async fn move_points(
                conn: &mut <$db as sqlx::Database>::Connection,
                entry_id: i64,
                user: flashback_core::UserId,
                delta: i64,
                reason: &str,
                reference: &str,
            ) -> $crate::StoreResult<bool> {
                let now = $crate::now_ms();
                let entry = sqlx::query(
                    "INSERT INTO points_ledger (id, user_id, delta, reason, reference, created_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(entry_id)
                .bind(user.get())
                .bind(delta)
                .bind(reason)
                .bind(reference)
                .bind(now)
                .execute(&mut *conn)
                .await;
                match entry {
                    Ok(_) => {}
                    Err(e) => match $crate::error::on_write(e, "points_entry", "user") {
                        $crate::StoreError::Conflict(_) => return Ok(false),
                        other => return Err(other),
                    },
                }
                // Update first: taking the row's exclusive lock straight away (an INSERT that
                // hits the existing row would take a shared lock first, and two of those
                // deadlock when both then update).
                let update = || {
                    sqlx::query(
                        "UPDATE points_accounts SET balance = balance + ?, updated_at_ms = ? WHERE user_id = ? AND balance + ? >= 0",
                    )
                    .bind(delta)
                    .bind(now)
                    .bind(user.get())
                    .bind(delta)
                };
                let mut moved = update().execute(&mut *conn).await?.rows_affected();
                if moved == 0 && delta > 0 {
                    let created = sqlx::query("INSERT INTO points_accounts (user_id, balance, updated_at_ms) VALUES (?, ?, ?)")
                        .bind(user.get())
                        .bind(delta)
                        .bind(now)
                        .execute(&mut *conn)
                        .await;
                    moved = match created {
                        Ok(done) => done.rows_affected(),
                        // Created meanwhile by someone else: now the update finds it.
                        Err(e) => match $crate::error::on_write(e, "account", "user") {
                            $crate::StoreError::Conflict(_) => update().execute(&mut *conn).await?.rows_affected(),
                            other => return Err(other),
                        },
                    };
                }
                if moved != 1 {
                    return Err($crate::StoreError::ConditionFailed("points"));
                }
                Ok(true)
            }
        }

        #[async_trait::async_trait]
        impl $crate::OrderShard for $shard {
            fn backend(&self) -> &'static str {
                Self::BACKEND
            }

            async fn migrate(&self) -> $crate::StoreResult<()> {
                self.run_migrations().await
            }

            async fn ping(&self) -> $crate::StoreResult<()> {
                self.probe().await
            }

            async fn close(&self) {
                self.close_pools().await;
            }

            fn breakers(&self) -> Vec<std::sync::Arc<flashback_core::breaker::Breaker>> {
                self.shard_breakers()
            }

            async fn idempotent(
                &self,
                buyer: flashback_core::UserId,
                key: &str,
            ) -> $crate::StoreResult<Option<($crate::Order, String)>> {
                let mut conn = self.writer()?.acquire().await?;
                let found: Option<(i64, String)> =
                    sqlx::query_as("SELECT order_id, request_hash FROM idempotency_keys WHERE buyer_id = ? AND idem_key = ?")
                        .bind(buyer.get())
                        .bind(key)
                        .fetch_optional(&mut *conn)
                        .await?;
                let Some((order_id, hash)) = found else { return Ok(None) };
                Ok(Self::load_order(&mut conn, order_id).await?.map(|o| (o, hash)))
            }

            async fn create_order(
                &self,
                new: $crate::NewOrder,
                ids: $crate::WriteIds,
            ) -> $crate::StoreResult<$crate::Created> {
                // Each attempt answers the earlier order a key names, or `None` once it wrote
                // this one, which is handed back (moved) after the attempts.
                $crate::retry_deadlocks(|| async {
                    let o = &new.order;
                    let mut tx = self.writer()?.begin().await?;
                    if let Some((key, hash)) = &new.idempotency {
                        let claimed = sqlx::query(
                            "INSERT INTO idempotency_keys (buyer_id, idem_key, request_hash, order_id, created_at_ms) \
                             VALUES (?, ?, ?, ?, ?)",
                        )
                        .bind(o.buyer.get())
                        .bind(key)
                        .bind(hash)
                        .bind(o.id.get())
                        .bind(o.created_at_ms)
                        .execute(&mut *tx)
                        .await;
                        if let Err(e) = claimed {
                            return match $crate::error::on_write(e, "idempotency_key", "order") {
                                $crate::StoreError::Conflict(_) => {
                                    tx.rollback().await?;
                                    match self.idempotent(o.buyer, key).await? {
                                        Some((order, request_hash)) => Ok(Some($crate::Created::Existing { order, request_hash })),
                                        None => Err($crate::StoreError::NotFound("order")),
                                    }
                                }
                                other => Err(other),
                            };
                        }
                    }
                    Self::insert_orders(&mut tx, &[o]).await?;
                    if o.points_used.get() > 0 {
                        let reference = format!("redeem:{}", o.id);
                        Self::move_points(&mut tx, ids.entry, o.buyer, -o.points_used.get(), "redeem", &reference).await?;
                    }
                    Self::write_event(&mut tx, ids.event, "order.created", o, None).await?;
                    tx.commit().await?;
                    Ok(None)
                })
                .await
                .map(|existing| existing.unwrap_or($crate::Created::New(new.order)))
            }

            async fn create_orders(
                &self,
                batch: &[($crate::NewOrder, i64)],
            ) -> $crate::StoreResult<Vec<flashback_core::OrderId>> {
                if batch.iter().any(|(n, _)| n.order.points_used.get() > 0) {
                    return Err($crate::StoreError::ConditionFailed("points"));
                }
                // Another writer may claim one of the keys after an attempt looked (two
                // instances working the same reservations): the next attempt finds its order.
                let raced = |e: &$crate::StoreError| {
                    e.is_retryable() || matches!(e, $crate::StoreError::Conflict("idempotency_key"))
                };
                $crate::retry_when(raced, || self.create_orders_once(batch)).await
            }

            async fn order(&self, id: flashback_core::OrderId) -> $crate::StoreResult<Option<$crate::Order>> {
                let mut conn = self.writer()?.acquire().await?;
                Self::load_order(&mut conn, id.get()).await
            }

            async fn orders(
                &self,
                filter: $crate::OrderFilter,
                after: Option<flashback_core::Cursor>,
                limit: flashback_core::PageLimit,
                read: $crate::Read,
            ) -> $crate::StoreResult<Vec<$crate::Order>> {
                if read == $crate::Read::ReplicaOk
                    && let Some((replica, permit)) = self.replica_read()
                {
                    match Self::list_orders(replica, filter, after, limit).await {
                        Err(e) if e.is_unavailable() => {
                            tracing::warn!(error = %e, "order replica unavailable; reading the primary for a while");
                            permit.failure();
                        }
                        other => {
                            permit.success();
                            return other;
                        }
                    }
                }
                Self::list_orders(self.writer()?, filter, after, limit).await
            }

            async fn transition(
                &self,
                id: flashback_core::OrderId,
                t: flashback_core::Transition,
                from: Option<flashback_core::OrderState>,
                ids: $crate::WriteIds,
            ) -> $crate::StoreResult<$crate::Order> {
                $crate::retry_deadlocks(|| self.transition_once(id, t, from, ids)).await
            }

            async fn expired(&self, now_ms: i64, limit: u32) -> $crate::StoreResult<Vec<flashback_core::OrderId>> {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM orders WHERE state = 'pending_payment' AND expires_at_ms < ? \
                     ORDER BY expires_at_ms LIMIT ?",
                )
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(self.writer()?)
                .await?;
                $crate::sql::parse_ids(ids, "orders", flashback_core::OrderId::new)
            }

            async fn points(&self, user: flashback_core::UserId) -> $crate::StoreResult<flashback_core::Points> {
                let balance: Option<i64> = sqlx::query_scalar("SELECT balance FROM points_accounts WHERE user_id = ?")
                    .bind(user.get())
                    .fetch_optional(self.writer()?)
                    .await?;
                flashback_core::Points::new(balance.unwrap_or(0))
                    .map_err(|e| $crate::StoreError::Corrupt { table: "points_accounts", reason: e.to_string() })
            }

            async fn add_points(
                &self,
                entry_id: i64,
                user: flashback_core::UserId,
                amount: flashback_core::Points,
                reason: &str,
                reference: &str,
            ) -> $crate::StoreResult<bool> {
                $crate::retry_deadlocks(|| async {
                    let mut tx = self.writer()?.begin().await?;
                    let applied = Self::move_points(&mut tx, entry_id, user, amount.get(), reason, reference).await?;
                    tx.commit().await?;
                    Ok(applied)
                })
                .await
            }

            async fn points_mismatches(&self) -> $crate::StoreResult<Vec<(flashback_core::UserId, i64, i64)>> {
                let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
                    "SELECT a.user_id, a.balance, CAST(COALESCE(l.total, 0) AS SIGNED) AS ledger \
                     FROM points_accounts a LEFT JOIN \
                     (SELECT user_id, SUM(delta) AS total FROM points_ledger GROUP BY user_id) l ON l.user_id = a.user_id \
                     WHERE a.balance <> COALESCE(l.total, 0) \
                     UNION ALL \
                     SELECT l.user_id, 0, CAST(SUM(l.delta) AS SIGNED) FROM points_ledger l \
                     WHERE NOT EXISTS (SELECT 1 FROM points_accounts a WHERE a.user_id = l.user_id) \
                     GROUP BY l.user_id HAVING SUM(l.delta) <> 0",
                )
                .fetch_all(self.writer()?)
                .await?;
                rows.into_iter()
                    .map(|(u, b, l)| {
                        let user = flashback_core::UserId::new(u)
                            .map_err(|e| $crate::StoreError::Corrupt { table: "points_accounts", reason: e.to_string() })?;
                        Ok((user, b, l))
                    })
                    .collect()
            }

            async fn create_payment(
                &self,
                payment_id: &str,
                order: flashback_core::OrderId,
                amount: flashback_core::Money,
            ) -> $crate::StoreResult<bool> {
                $crate::retry_deadlocks(|| async {
                    let now = $crate::now_ms();
                    let done = sqlx::query(
                        "INSERT INTO payments (payment_id, order_id, amount_minor, state, created_at_ms, updated_at_ms) \
                         VALUES (?, ?, ?, 'created', ?, ?)",
                    )
                    .bind(payment_id)
                    .bind(order.get())
                    .bind(amount.minor())
                    .bind(now)
                    .bind(now)
                    .execute(self.writer()?)
                    .await;
                    match done {
                        Ok(_) => Ok(true),
                        Err(e) => match $crate::error::on_write(e, "payment", "order") {
                            $crate::StoreError::Conflict(_) => Ok(false),
                            other => Err(other),
                        },
                    }
                })
                .await
            }

            async fn order_payments(
                &self,
                order: flashback_core::OrderId,
            ) -> $crate::StoreResult<Vec<$crate::Payment>> {
                let rows: Vec<(String, i64, i64, String)> = sqlx::query_as(
                    "SELECT payment_id, order_id, amount_minor, state FROM payments WHERE order_id = ? \
                     ORDER BY created_at_ms, payment_id",
                )
                .bind(order.get())
                .fetch_all(self.writer()?)
                .await?;
                rows.into_iter().map(|(id, o, amount, state)| $crate::Payment::from_row(id, o, amount, &state)).collect()
            }

            async fn payment(&self, payment_id: &str) -> $crate::StoreResult<Option<$crate::Payment>> {
                let row: Option<(String, i64, i64, String)> = sqlx::query_as(
                    "SELECT payment_id, order_id, amount_minor, state FROM payments WHERE payment_id = ?",
                )
                .bind(payment_id)
                .fetch_optional(self.writer()?)
                .await?;
                row.map(|(id, order, amount, state)| $crate::Payment::from_row(id, order, amount, &state)).transpose()
            }

            async fn set_payment_state(
                &self,
                payment_id: &str,
                from: $crate::PaymentState,
                to: $crate::PaymentState,
            ) -> $crate::StoreResult<bool> {
                $crate::retry_deadlocks(|| async {
                    let done = sqlx::query(
                        "UPDATE payments SET state = ?, updated_at_ms = ? WHERE payment_id = ? AND state = ?",
                    )
                    .bind(to.as_str())
                    .bind($crate::now_ms())
                    .bind(payment_id)
                    .bind(from.as_str())
                    .execute(self.writer()?)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
                .await
            }

            async fn outbox_backlog(&self) -> $crate::StoreResult<u64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE dispatched_at_ms IS NULL")
                    .fetch_one(self.writer()?)
                    .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn outbox_pending(&self, limit: u32) -> $crate::StoreResult<Vec<$crate::OutboxEvent>> {
                let rows: Vec<(i64, String, i64, String, i64)> = sqlx::query_as(
                    "SELECT id, event_type, aggregate_id, payload, created_at_ms FROM outbox \
                     WHERE dispatched_at_ms IS NULL ORDER BY id LIMIT ?",
                )
                .bind(i64::from(limit))
                .fetch_all(self.writer()?)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, event_type, aggregate_id, payload, created_at_ms)| $crate::OutboxEvent {
                        id,
                        event_type,
                        aggregate_id,
                        payload,
                        created_at_ms,
                    })
                    .collect())
            }

            async fn mark_dispatched(&self, ids: &[i64]) -> $crate::StoreResult<()> {
                $crate::retry_deadlocks(|| async {
                    if ids.is_empty() {
                        return Ok(());
                    }
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE outbox SET dispatched_at_ms = ");
                    q.push_bind($crate::now_ms());
                    q.push(" WHERE dispatched_at_ms IS NULL AND id IN (");
                    let mut list = q.separated(", ");
                    for id in ids {
                        list.push_bind(*id);
                    }
                    q.push(")");
                    q.build().execute(self.writer()?).await?;
                    Ok(())
                })
                .await
            }

            async fn was_processed(&self, consumer: &str, event_id: i64) -> $crate::StoreResult<bool> {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT event_id FROM processed_messages WHERE consumer = ? AND event_id = ?")
                        .bind(consumer)
                        .bind(event_id)
                        .fetch_optional(self.writer()?)
                        .await?;
                Ok(found.is_some())
            }

            async fn record_processed(&self, consumer: &str, event_id: i64) -> $crate::StoreResult<bool> {
                $crate::retry_deadlocks(|| async {
                    let done = sqlx::query("INSERT INTO processed_messages (consumer, event_id, processed_at_ms) VALUES (?, ?, ?)")
                        .bind(consumer)
                        .bind(event_id)
                        .bind($crate::now_ms())
                        .execute(self.writer()?)
                        .await;
                    match done {
                        Ok(_) => Ok(true),
                        Err(e) => match $crate::error::on_write(e, "message", "message") {
                            $crate::StoreError::Conflict(_) => Ok(false),
                            other => Err(other),
                        },
                    }
                })
                .await
            }
        }
    };
}

pub(crate) use impl_order_shard;
