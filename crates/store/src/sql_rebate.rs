//! Rebates, written once for both backends (see `sql.rs` for why a macro).

use flashback_core::rebate::lifecycle::RebateState;
use flashback_core::{Tier, UserId};

use crate::{RebateOrder, StoreError};

/// Every column of `rebate_orders`, in the order rows are read and inserted.
pub const ORDER_COLUMNS: &str = "source, line_key, parent_key, user_id, inviter_id, grand_inviter_id, tracking, \
     item_id, item_title, category, state, network_status, paid_minor, estimate_minor, settled_minor, refunded_minor, \
     commission_minor, buyer_share, inviter_share, grand_share, platform_share, shares_available, click_ms, paid_at_ms, \
     settled_at_ms, available_at_ms, network_modified_ms, version, created_at_ms, updated_at_ms";

/// A reviewed input's reason and payload cut to their columns' widths (255 and 4,000
/// characters).
pub(crate) fn clipped(r: &crate::RebateReject) -> (String, String) {
    (r.reason.chars().take(255).collect(), r.payload.chars().take(4_000).collect())
}

/// The `SET` list of a row's compare-and-set: every column but the key and the creation time.
macro_rules! set_row {
    () => {
        "UPDATE rebate_orders SET parent_key = ?, user_id = ?, inviter_id = ?, grand_inviter_id = ?, tracking = ?, \
         item_id = ?, item_title = ?, category = ?, state = ?, network_status = ?, paid_minor = ?, estimate_minor = ?, \
         settled_minor = ?, refunded_minor = ?, commission_minor = ?, buyer_share = ?, inviter_share = ?, \
         grand_share = ?, platform_share = ?, shares_available = ?, click_ms = ?, paid_at_ms = ?, settled_at_ms = ?, \
         available_at_ms = ?, network_modified_ms = ?, version = ?, updated_at_ms = ?"
    };
}

/// A row's compare-and-set where the key holds the version it replaces and the row already
/// has this buyer (bound again last): a row never changes hands.
pub(crate) const UPDATE_OWNED: &str =
    concat!(set_row!(), " WHERE source = ? AND line_key = ? AND version = ? AND user_id = ?");

/// A row's compare-and-set where the key holds the version it replaces and the row has no
/// buyer yet: it stays without one, or gets its first (and then joins that buyer's list).
pub(crate) const UPDATE_UNOWNED: &str =
    concat!(set_row!(), " WHERE source = ? AND line_key = ? AND version = ? AND user_id IS NULL");

/// [`UPDATE_UNOWNED`] giving the row its first buyer and its places in the lists of everyone
/// it pays at once ([`crate::rebate_list::LINK_COLUMNS`] after the columns).
pub(crate) const UPDATE_JOINING: &str = concat!(
    set_row!(),
    ", list_no = ?, prev_source = ?, prev_line_key = ?, prev_role = ?, inv_list_no = ?, inv_prev_source = ?, \
     inv_prev_line_key = ?, inv_prev_role = ?, grand_list_no = ?, grand_prev_source = ?, grand_prev_line_key = ?, \
     grand_prev_role = ? WHERE source = ? AND line_key = ? AND version = ? AND user_id IS NULL"
);

/// What writing one row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrote {
    /// Nothing: another writer got there first.
    Nothing,
    /// The row; it keeps its place (or has no buyer).
    Row,
    /// The row, which now has its first buyer and must join the lists of everyone it pays.
    Joining,
}

#[derive(sqlx::FromRow)]
pub(crate) struct OrderRow {
    source: String,
    line_key: String,
    parent_key: String,
    user_id: Option<i64>,
    inviter_id: Option<i64>,
    grand_inviter_id: Option<i64>,
    tracking: Option<String>,
    item_id: String,
    item_title: String,
    category: Option<String>,
    state: String,
    network_status: String,
    paid_minor: i64,
    estimate_minor: i64,
    settled_minor: i64,
    refunded_minor: i64,
    commission_minor: i64,
    buyer_share: i64,
    inviter_share: i64,
    grand_share: i64,
    platform_share: i64,
    shares_available: i64,
    click_ms: Option<i64>,
    paid_at_ms: Option<i64>,
    settled_at_ms: Option<i64>,
    available_at_ms: Option<i64>,
    network_modified_ms: i64,
    version: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
}

fn corrupt(reason: impl ToString) -> StoreError {
    StoreError::Corrupt { table: "rebate_orders", reason: reason.to_string() }
}

fn user(id: Option<i64>) -> Result<Option<UserId>, StoreError> {
    id.map(UserId::new).transpose().map_err(corrupt)
}

impl TryFrom<OrderRow> for RebateOrder {
    type Error = StoreError;
    fn try_from(r: OrderRow) -> Result<Self, StoreError> {
        Ok(RebateOrder {
            source: r.source,
            line_key: r.line_key,
            parent_key: r.parent_key,
            user_id: user(r.user_id)?,
            inviter_id: user(r.inviter_id)?,
            grand_inviter_id: user(r.grand_inviter_id)?,
            tracking: r.tracking,
            item_id: r.item_id,
            item_title: r.item_title,
            category: r.category,
            state: RebateState::parse(&r.state).map_err(corrupt)?,
            network_status: r.network_status,
            paid_minor: r.paid_minor,
            estimate_minor: r.estimate_minor,
            settled_minor: r.settled_minor,
            refunded_minor: r.refunded_minor,
            commission_minor: r.commission_minor,
            buyer_share: r.buyer_share,
            inviter_share: r.inviter_share,
            grand_share: r.grand_share,
            platform_share: r.platform_share,
            shares_available: r.shares_available != 0,
            click_ms: r.click_ms,
            paid_at_ms: r.paid_at_ms,
            settled_at_ms: r.settled_at_ms,
            available_at_ms: r.available_at_ms,
            network_modified_ms: r.network_modified_ms,
            version: r.version,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        })
    }
}

/// An entry of a user's list as [`crate::rebate_list_sql::walk`] reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct ListedRow {
    role: i64,
    #[sqlx(flatten)]
    row: OrderRow,
}

impl TryFrom<ListedRow> for crate::ListedRebate {
    type Error = StoreError;
    fn try_from(r: ListedRow) -> Result<Self, StoreError> {
        Ok(Self { role: crate::RebateRole::from_code(r.role)?, row: RebateOrder::try_from(r.row)? })
    }
}

pub(crate) fn profile(user_id: i64, tier: String, inviter: Option<i64>) -> Result<crate::RebateProfile, StoreError> {
    let bad = |e: flashback_core::ParseError| StoreError::Corrupt { table: "rebate_profiles", reason: e.to_string() };
    Ok(crate::RebateProfile {
        user_id: UserId::new(user_id).map_err(bad)?,
        tier: Tier::parse(&tier).map_err(bad)?,
        inviter_id: inviter.map(UserId::new).transpose().map_err(bad)?,
    })
}

/// Pushes one row's values in [`ORDER_COLUMNS`] order into a multi-row `VALUES` list (the
/// batch insert, and the rebate bench's floor, which writes the same rows).
pub fn push_order<'a, DB>(mut b: sqlx::query_builder::Separated<'_, 'a, DB, &'static str>, r: &'a RebateOrder)
where
    DB: sqlx::Database,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<&'a str>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    b.push_bind(r.source.as_str())
        .push_bind(r.line_key.as_str())
        .push_bind(r.parent_key.as_str())
        .push_bind(r.user_id.map(UserId::get))
        .push_bind(r.inviter_id.map(UserId::get))
        .push_bind(r.grand_inviter_id.map(UserId::get))
        .push_bind(r.tracking.as_deref())
        .push_bind(r.item_id.as_str())
        .push_bind(r.item_title.as_str())
        .push_bind(r.category.as_deref())
        .push_bind(r.state.as_str())
        .push_bind(r.network_status.as_str())
        .push_bind(r.paid_minor)
        .push_bind(r.estimate_minor)
        .push_bind(r.settled_minor)
        .push_bind(r.refunded_minor)
        .push_bind(r.commission_minor)
        .push_bind(r.buyer_share)
        .push_bind(r.inviter_share)
        .push_bind(r.grand_share)
        .push_bind(r.platform_share)
        .push_bind(i64::from(r.shares_available))
        .push_bind(r.click_ms)
        .push_bind(r.paid_at_ms)
        .push_bind(r.settled_at_ms)
        .push_bind(r.available_at_ms)
        .push_bind(r.network_modified_ms)
        .push_bind(r.version)
        .push_bind(r.created_at_ms)
        .push_bind(r.updated_at_ms);
}

/// Keys per lookup statement.
pub(crate) const LOOKUP_CHUNK: usize = 512;

/// Pushes `keys` as the rest of an `IN (` list, padded to a power of two by repeating the last
/// key: the statement text then takes one of a few shapes, each prepared once per connection
/// and cached, instead of a new shape (and a new prepare) for every length.
pub(crate) fn push_padded<'a, DB, T>(q: &mut sqlx::QueryBuilder<'a, DB>, keys: &'a [T])
where
    DB: sqlx::Database,
    T: sqlx::Encode<'a, DB> + sqlx::Type<DB> + Clone + Send + 'a,
{
    let Some(last) = keys.last() else {
        q.push("NULL)");
        return;
    };
    let mut sep = q.separated(", ");
    for k in keys.iter().chain(std::iter::repeat_n(last, keys.len().next_power_of_two() - keys.len())) {
        sep.push_bind(k.clone());
    }
    q.push(")");
}

/// Implements [`crate::RebateStore`] for a catalog store type with `writer()`/`reader()`
/// and the ledger's `post_in`.
macro_rules! impl_rebate_store {
    (
        $store:ty,
        $db:ty,
        $insert_profile:literal,
        $insert_cursor:literal,
        $lock_lists:literal,
        $set_links:literal,
        $set_lists:literal
    ) => {
        impl $store {
            fn bind_order<'q>(
                q: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                r: &'q $crate::RebateOrder,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                q.bind(&r.parent_key)
                    .bind(r.user_id.map(flashback_core::UserId::get))
                    .bind(r.inviter_id.map(flashback_core::UserId::get))
                    .bind(r.grand_inviter_id.map(flashback_core::UserId::get))
                    .bind(&r.tracking)
                    .bind(&r.item_id)
                    .bind(&r.item_title)
                    .bind(&r.category)
                    .bind(r.state.as_str())
                    .bind(&r.network_status)
                    .bind(r.paid_minor)
                    .bind(r.estimate_minor)
                    .bind(r.settled_minor)
                    .bind(r.refunded_minor)
                    .bind(r.commission_minor)
                    .bind(r.buyer_share)
                    .bind(r.inviter_share)
                    .bind(r.grand_share)
                    .bind(r.platform_share)
                    .bind(i64::from(r.shares_available))
                    .bind(r.click_ms)
                    .bind(r.paid_at_ms)
                    .bind(r.settled_at_ms)
                    .bind(r.available_at_ms)
                    .bind(r.network_modified_ms)
                    .bind(r.version)
                    .bind(r.updated_at_ms)
            }

            /// Inserts rejected or flagged inputs inside an open transaction.
            async fn insert_rejects(
                tx: &mut sqlx::Transaction<'_, $db>,
                rejects: &[$crate::RebateReject],
            ) -> $crate::StoreResult<()> {
                for chunk in rejects.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO rebate_rejects (id, source, line_key, reason, payload, at_ms) ",
                    );
                    q.push_values(chunk, |mut b, r| {
                        let (reason, payload) = $crate::sql_rebate::clipped(r);
                        b.push_bind(r.id)
                            .push_bind(r.source.clone())
                            .push_bind(r.line_key.clone())
                            .push_bind(reason)
                            .push_bind(payload)
                            .push_bind(r.at_ms);
                    });
                    q.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Writes one row's next version inside an open transaction: whether it was written,
            /// and whether it must now join its buyer's list ([`Self::join_lists_in`]).
            async fn write_row_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                row: &$crate::RebateOrder,
                expected: Option<i64>,
            ) -> Result<$crate::sql_rebate::Wrote, $crate::LedgerError> {
                use $crate::sql_rebate::Wrote;
                let user = row.user_id.map(flashback_core::UserId::get);
                let joining = |n: u64| match (n, user) {
                    (1, Some(_)) => Wrote::Joining,
                    (1, None) => Wrote::Row,
                    _ => Wrote::Nothing,
                };
                Ok(match expected {
                    None => {
                        let q = sqlx::query(
                            "INSERT INTO rebate_orders (parent_key, user_id, inviter_id, grand_inviter_id, tracking, \
                             item_id, item_title, category, state, network_status, paid_minor, estimate_minor, \
                             settled_minor, refunded_minor, commission_minor, buyer_share, inviter_share, grand_share, \
                             platform_share, shares_available, click_ms, paid_at_ms, settled_at_ms, available_at_ms, \
                             network_modified_ms, version, updated_at_ms, created_at_ms, source, line_key) \
                             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        );
                        match Self::bind_order(q, row)
                            .bind(row.created_at_ms)
                            .bind(&row.source)
                            .bind(&row.line_key)
                            .execute(&mut **tx)
                            .await
                        {
                            Ok(r) => joining(r.rows_affected()),
                            Err(e) => match $crate::error::on_write(e, "rebate order", "user") {
                                // Another writer inserted it first.
                                $crate::StoreError::Conflict(_) => Wrote::Nothing,
                                other => return Err(other.into()),
                            },
                        }
                    }
                    Some(version) => {
                        let keyed = |sql: &'static str| {
                            Self::bind_order(sqlx::query(sql), row).bind(&row.source).bind(&row.line_key).bind(version)
                        };
                        if let Some(u) = user {
                            // The common case: the row had this buyer already.
                            let n = keyed($crate::sql_rebate::UPDATE_OWNED).bind(u).execute(&mut **tx).await?;
                            if n.rows_affected() == 1 {
                                return Ok(Wrote::Row);
                            }
                        }
                        joining(keyed($crate::sql_rebate::UPDATE_UNOWNED).execute(&mut **tx).await?.rows_affected())
                    }
                })
            }

            /// Puts rows that have just got their buyer (in the order written) at the heads of
            /// the lists of everyone they pay: locks the lists (creating those absent), links each
            /// entry to the one before it, moves the heads.
            async fn join_lists_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                joining: &[&$crate::RebateOrder],
            ) -> $crate::StoreResult<()> {
                if joining.is_empty() {
                    return Ok(());
                }
                // In user order, so that concurrent writers lock lists in the same order.
                let users: std::collections::BTreeSet<i64> =
                    joining.iter().flat_map(|r| $crate::rebate_list::holders(r)).flatten().collect();
                let users = serde_json::to_string(&users)
                    .map_err(|e| $crate::StoreError::Corrupt { table: "rebate_lists", reason: e.to_string() })?;
                let found: Vec<(i64, i64, Option<String>, Option<String>, Option<i64>)> =
                    sqlx::query_as($lock_lists).bind(users).fetch_all(&mut **tx).await?;
                let mut lists = std::collections::HashMap::with_capacity(found.len());
                for (u, n, s, k, r) in found {
                    lists.insert(u, $crate::rebate_list::RowList::of(n, s, k, r)?);
                }
                let mut joined = Vec::with_capacity(joining.len());
                for row in joining {
                    joined.push((*row, $crate::rebate_list::place(row, &mut lists)));
                }
                let (links, heads) = $crate::rebate_list::lists_json(&joined, &lists)?;
                sqlx::query($set_links).bind(links).execute(&mut **tx).await?;
                sqlx::query($set_lists).bind(heads).execute(&mut **tx).await?;
                Ok(())
            }

            async fn apply_rebate_once(
                &self,
                row: &$crate::RebateOrder,
                expected: Option<i64>,
                txn: Option<&$crate::NewTxn>,
            ) -> Result<$crate::Applied, $crate::LedgerError> {
                use $crate::sql_rebate::Wrote;
                let mut tx = self.writer()?.begin().await?;
                match Self::write_row_in(&mut tx, row, expected).await? {
                    Wrote::Nothing => return Ok($crate::Applied::Conflict),
                    Wrote::Row => {}
                    Wrote::Joining => Self::join_lists_in(&mut tx, &[row]).await?,
                }
                if let Some(txn) = txn {
                    Self::post_in(&mut tx, txn).await?;
                }
                tx.commit().await?;
                Ok($crate::Applied::Done)
            }
        }

        #[async_trait::async_trait]
        impl $crate::RebateStore for $store {
            async fn rebate_profile(
                &self,
                user: flashback_core::UserId,
            ) -> $crate::StoreResult<Option<$crate::RebateProfile>> {
                let row: Option<(i64, String, Option<i64>)> =
                    sqlx::query_as("SELECT user_id, tier, inviter_id FROM rebate_profiles WHERE user_id = ?")
                        .bind(user.get())
                        .fetch_optional(self.writer()?)
                        .await?;
                row.map(|(u, t, i)| $crate::sql_rebate::profile(u, t, i)).transpose()
            }

            async fn upsert_rebate_profile(
                &self,
                p: $crate::RebateProfile,
            ) -> $crate::StoreResult<$crate::RebateProfile> {
                $crate::retry_deadlocks(|| async {
                    sqlx::query($insert_profile)
                        .bind(p.user_id.get())
                        .bind(p.tier.as_str())
                        .bind(p.inviter_id.map(flashback_core::UserId::get))
                        .bind($crate::now_ms())
                        .execute(self.writer()?)
                        .await?;
                    sqlx::query("UPDATE rebate_profiles SET tier = ? WHERE user_id = ?")
                        .bind(p.tier.as_str())
                        .bind(p.user_id.get())
                        .execute(self.writer()?)
                        .await?;
                    self.rebate_profile(p.user_id).await?.ok_or($crate::StoreError::NotFound("rebate profile"))
                })
                .await
            }

            async fn bind_tracking_id(
                &self,
                code: &str,
                user: flashback_core::UserId,
                kind: $crate::TrackingKind,
                at_ms: i64,
            ) -> $crate::StoreResult<()> {
                $crate::retry_deadlocks(|| async {
                    let inserted = sqlx::query(
                        "INSERT INTO tracking_ids (code, user_id, kind, created_at_ms) VALUES (?, ?, ?, ?)",
                    )
                    .bind(code)
                    .bind(user.get())
                    .bind(kind.as_str())
                    .bind(at_ms)
                    .execute(self.writer()?)
                    .await;
                    match inserted.map_err(|e| $crate::error::on_write(e, "tracking id", "user")) {
                        Ok(_) => Ok(()),
                        // Binding the same id to the same user again is fine.
                        Err($crate::StoreError::Conflict(what)) => match self.tracking_owner(code).await? {
                            Some(owner) if owner == user => Ok(()),
                            _ => Err($crate::StoreError::Conflict(what)),
                        },
                        Err(e) => Err(e),
                    }
                })
                .await
            }

            async fn tracking_owner(&self, code: &str) -> $crate::StoreResult<Option<flashback_core::UserId>> {
                let id: Option<i64> = sqlx::query_scalar("SELECT user_id FROM tracking_ids WHERE code = ?")
                    .bind(code)
                    .fetch_optional(self.reader()?)
                    .await?;
                id.map(flashback_core::UserId::new).transpose().map_err(|e| $crate::StoreError::Corrupt {
                    table: "tracking_ids",
                    reason: e.to_string(),
                })
            }

            async fn tracking_owners(
                &self,
                codes: &[String],
            ) -> $crate::StoreResult<Vec<(String, flashback_core::UserId)>> {
                let mut out = Vec::with_capacity(codes.len());
                for chunk in codes.chunks($crate::sql_rebate::LOOKUP_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new("SELECT code, user_id FROM tracking_ids WHERE code IN (");
                    $crate::sql_rebate::push_padded(&mut q, chunk);
                    let rows: Vec<(String, i64)> = q.build_query_as().fetch_all(self.reader()?).await?;
                    for (code, id) in rows {
                        let owner = flashback_core::UserId::new(id).map_err(|e| $crate::StoreError::Corrupt {
                            table: "tracking_ids",
                            reason: e.to_string(),
                        })?;
                        out.push((code, owner));
                    }
                }
                Ok(out)
            }

            async fn rebate_profiles(
                &self,
                users: &[flashback_core::UserId],
            ) -> $crate::StoreResult<Vec<$crate::RebateProfile>> {
                let ids: Vec<i64> = users.iter().map(|u| u.get()).collect();
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks($crate::sql_rebate::LOOKUP_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT user_id, tier, inviter_id FROM rebate_profiles WHERE user_id IN (",
                    );
                    $crate::sql_rebate::push_padded(&mut q, chunk);
                    let rows: Vec<(i64, String, Option<i64>)> = q.build_query_as().fetch_all(self.reader()?).await?;
                    for (u, t, i) in rows {
                        out.push($crate::sql_rebate::profile(u, t, i)?);
                    }
                }
                Ok(out)
            }

            async fn rebate_order(
                &self,
                source: &str,
                line_key: &str,
            ) -> $crate::StoreResult<Option<$crate::RebateOrder>> {
                let sql = format!(
                    "SELECT {} FROM rebate_orders WHERE source = ? AND line_key = ?",
                    $crate::sql_rebate::ORDER_COLUMNS
                );
                let row: Option<$crate::sql_rebate::OrderRow> =
                    sqlx::query_as(&sql).bind(source).bind(line_key).fetch_optional(self.writer()?).await?;
                row.map($crate::RebateOrder::try_from).transpose()
            }

            async fn apply_rebate(
                &self,
                row: &$crate::RebateOrder,
                expected: Option<i64>,
                txn: Option<&$crate::NewTxn>,
            ) -> Result<$crate::Applied, $crate::LedgerError> {
                $crate::retry_deadlocks(|| self.apply_rebate_once(row, expected, txn)).await
            }

            async fn apply_rebates(
                &self,
                items: &[$crate::RebateChange],
                review: &[$crate::RebateReject],
            ) -> Result<Vec<$crate::Applied>, $crate::LedgerError> {
                self.write_rebate_batch(items, review).await
            }

            async fn rebate_orders_by_keys(
                &self,
                source: &str,
                keys: &[String],
            ) -> $crate::StoreResult<Vec<$crate::RebateOrder>> {
                let mut out = Vec::with_capacity(keys.len());
                for chunk in keys.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                        "SELECT {} FROM rebate_orders WHERE source = ",
                        $crate::sql_rebate::ORDER_COLUMNS
                    ));
                    q.push_bind(source).push(" AND line_key IN (");
                    let mut sep = q.separated(", ");
                    for k in chunk {
                        sep.push_bind(k);
                    }
                    q.push(")");
                    let rows: Vec<$crate::sql_rebate::OrderRow> = q.build_query_as().fetch_all(self.reader()?).await?;
                    for r in rows {
                        out.push($crate::RebateOrder::try_from(r)?);
                    }
                }
                Ok(out)
            }

            async fn rebates_of(
                &self,
                user: flashback_core::UserId,
                after: Option<&$crate::RebateCursor>,
                limit: u32,
            ) -> $crate::StoreResult<Vec<$crate::ListedRebate>> {
                if limit == 0 {
                    return Ok(Vec::new());
                }
                let sql = $crate::rebate_list_sql::walk(after.map(|c| c.role));
                let mut q = sqlx::query_as::<_, $crate::sql_rebate::ListedRow>(&sql);
                if let Some(c) = after {
                    q = q.bind(&c.source).bind(&c.line_key);
                }
                let rows =
                    q.bind(user.get()).bind(i64::from(limit)).bind(user.get()).fetch_all(self.reader()?).await?;
                rows.into_iter().map($crate::ListedRebate::try_from).collect()
            }

            async fn rebate_list_breaks(&self) -> $crate::StoreResult<Vec<String>> {
                const SHOWN: i64 = 100;
                // One read transaction: a consistent snapshot on both backends.
                let mut tx = self.writer()?.begin().await?;
                let mut out = Vec::new();
                let counts: Vec<(i64, i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>)> =
                    sqlx::query_as(&$crate::rebate_list_sql::miscounted()).bind(SHOWN).fetch_all(&mut *tx).await?;
                for (user, listed, n, lo, hi, distinct) in counts {
                    out.push(format!(
                        "user {user}: lists {listed} rebate entries; has {} numbered {}..{} ({} distinct)",
                        n.unwrap_or(0),
                        lo.unwrap_or(0),
                        hi.unwrap_or(0),
                        distinct.unwrap_or(0)
                    ));
                }
                let misplaced: Vec<(String, String)> =
                    sqlx::query_as(&$crate::rebate_list_sql::misplaced()).bind(SHOWN).fetch_all(&mut *tx).await?;
                for (source, key) in misplaced {
                    out.push(format!("rebate row {source}:{key}: listed for someone it does not pay"));
                }
                let heads: Vec<i64> =
                    sqlx::query_scalar(&$crate::rebate_list_sql::misheaded()).bind(SHOWN).fetch_all(&mut *tx).await?;
                for user in heads {
                    out.push(format!("user {user}: the head of their rebate list is not their newest entry"));
                }
                let links: Vec<(i64, String, String)> =
                    sqlx::query_as(&$crate::rebate_list_sql::unlinked()).bind(SHOWN).fetch_all(&mut *tx).await?;
                for (user, source, key) in links {
                    out.push(format!("user {user}: rebate row {source}:{key} is not linked to their entry before it"));
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn rebates_due(&self, now_ms: i64, limit: u32) -> $crate::StoreResult<Vec<$crate::RebateOrder>> {
                let sql = format!(
                    "SELECT {} FROM rebate_orders WHERE state = 'settled' AND available_at_ms <= ? \
                     ORDER BY available_at_ms LIMIT ?",
                    $crate::sql_rebate::ORDER_COLUMNS
                );
                let rows: Vec<$crate::sql_rebate::OrderRow> =
                    sqlx::query_as(&sql).bind(now_ms).bind(i64::from(limit)).fetch_all(self.writer()?).await?;
                rows.into_iter().map($crate::RebateOrder::try_from).collect()
            }

            async fn rebate_orders_page(
                &self,
                after: Option<(String, String)>,
                limit: u32,
            ) -> $crate::StoreResult<Vec<$crate::RebateOrder>> {
                let (source, key) = after.unwrap_or_default();
                let sql = format!(
                    "SELECT {} FROM rebate_orders WHERE source > ? OR (source = ? AND line_key > ?) \
                     ORDER BY source, line_key LIMIT ?",
                    $crate::sql_rebate::ORDER_COLUMNS
                );
                let rows: Vec<$crate::sql_rebate::OrderRow> = sqlx::query_as(&sql)
                    .bind(&source)
                    .bind(&source)
                    .bind(&key)
                    .bind(i64::from(limit))
                    .fetch_all(self.writer()?)
                    .await?;
                rows.into_iter().map($crate::RebateOrder::try_from).collect()
            }

            async fn rebate_orders_of_parent(
                &self,
                source: &str,
                parent_key: &str,
            ) -> $crate::StoreResult<Vec<$crate::RebateOrder>> {
                let sql = format!(
                    "SELECT {} FROM rebate_orders WHERE source = ? AND parent_key = ? ORDER BY line_key",
                    $crate::sql_rebate::ORDER_COLUMNS
                );
                let rows: Vec<$crate::sql_rebate::OrderRow> =
                    sqlx::query_as(&sql).bind(source).bind(parent_key).fetch_all(self.writer()?).await?;
                rows.into_iter().map($crate::RebateOrder::try_from).collect()
            }

            async fn create_link(&self, l: &$crate::Link) -> $crate::StoreResult<()> {
                sqlx::query("INSERT INTO links (code, user_id, item_id, target_url, created_at_ms) VALUES (?, ?, ?, ?, ?)")
                    .bind(&l.code)
                    .bind(l.user_id.get())
                    .bind(&l.item_id)
                    .bind(&l.target_url)
                    .bind(l.created_at_ms)
                    .execute(self.writer()?)
                    .await
                    .map_err(|e| $crate::error::on_write(e, "link code", "user"))?;
                Ok(())
            }

            async fn link(&self, code: &str) -> $crate::StoreResult<Option<$crate::Link>> {
                let row: Option<(String, i64, String, String, i64)> = sqlx::query_as(
                    "SELECT code, user_id, item_id, target_url, created_at_ms FROM links WHERE code = ?",
                )
                .bind(code)
                .fetch_optional(self.reader()?)
                .await?;
                row.map(|(code, user, item_id, target_url, created_at_ms)| {
                    Ok($crate::Link {
                        code,
                        user_id: flashback_core::UserId::new(user).map_err(|e| $crate::StoreError::Corrupt {
                            table: "links",
                            reason: e.to_string(),
                        })?,
                        item_id,
                        target_url,
                        created_at_ms,
                    })
                })
                .transpose()
            }

            async fn record_click(&self, c: &$crate::Click) -> $crate::StoreResult<()> {
                $crate::retry_deadlocks(|| async {
                    sqlx::query(
                        "INSERT INTO clicks (id, code, user_id, item_id, at_ms, ip_hash, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(c.id)
                    .bind(&c.code)
                    .bind(c.user_id.get())
                    .bind(&c.item_id)
                    .bind(c.at_ms)
                    .bind(&c.ip_hash)
                    .bind(c.user_agent.chars().take(255).collect::<String>())
                    .execute(self.writer()?)
                    .await?;
                    Ok(())
                })
                .await
            }

            async fn clicked(
                &self,
                user: flashback_core::UserId,
                item_id: &str,
                from_ms: i64,
                to_ms: i64,
            ) -> $crate::StoreResult<bool> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM clicks WHERE user_id = ? AND item_id = ? AND at_ms >= ? AND at_ms <= ?",
                )
                .bind(user.get())
                .bind(item_id)
                .bind(from_ms)
                .bind(to_ms)
                .fetch_one(self.writer()?)
                .await?;
                Ok(n > 0)
            }

            async fn sync_cursor(&self, name: &str) -> $crate::StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar("SELECT position_ms FROM sync_cursors WHERE name = ?")
                    .bind(name)
                    .fetch_optional(self.writer()?)
                    .await?)
            }

            async fn advance_sync_cursor(&self, name: &str, position_ms: i64) -> $crate::StoreResult<()> {
                $crate::retry_deadlocks(|| async {
                    let now = $crate::now_ms();
                    sqlx::query($insert_cursor).bind(name).bind(position_ms).bind(now).execute(self.writer()?).await?;
                    sqlx::query("UPDATE sync_cursors SET position_ms = ?, updated_at_ms = ? WHERE name = ? AND position_ms < ?")
                        .bind(position_ms)
                        .bind(now)
                        .bind(name)
                        .bind(position_ms)
                        .execute(self.writer()?)
                        .await?;
                    Ok(())
                })
                .await
            }

            async fn record_reject(&self, r: &$crate::RebateReject) -> $crate::StoreResult<()> {
                $crate::retry_deadlocks(|| async {
                    let (reason, payload) = $crate::sql_rebate::clipped(r);
                    sqlx::query(
                        "INSERT INTO rebate_rejects (id, source, line_key, reason, payload, at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(r.id)
                    .bind(&r.source)
                    .bind(&r.line_key)
                    .bind(reason)
                    .bind(payload)
                    .bind(r.at_ms)
                    .execute(self.writer()?)
                    .await?;
                    Ok(())
                })
                .await
            }

            async fn record_rejects(&self, rejects: &[$crate::RebateReject]) -> $crate::StoreResult<()> {
                $crate::retry_deadlocks(|| async {
                    let mut tx = self.writer()?.begin().await?;
                    Self::insert_rejects(&mut tx, rejects).await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn recent_rejects(&self, limit: u32) -> $crate::StoreResult<Vec<$crate::RebateReject>> {
                let rows: Vec<(i64, String, Option<String>, String, String, i64)> = sqlx::query_as(
                    "SELECT id, source, line_key, reason, payload, at_ms FROM rebate_rejects ORDER BY at_ms DESC, id DESC LIMIT ?",
                )
                .bind(i64::from(limit))
                .fetch_all(self.reader()?)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, source, line_key, reason, payload, at_ms)| $crate::RebateReject {
                        id,
                        source,
                        line_key,
                        reason,
                        payload,
                        at_ms,
                    })
                    .collect())
            }
        }
    };
}

pub(crate) use impl_rebate_store;

/// The batch writer of [`crate::RebateStore::apply_rebates`] through `sqlx` (MySQL/MariaDB; the
/// embedded store has its own, `sqlite_batch`): new rows and ledger transactions as multi-row
/// inserts that return the keys they wrote.
macro_rules! impl_sqlx_rebate_batch {
    ($store:ty, $db:ty, $insert_rows:literal, $returning_keys:literal) => {
        impl $store {
            /// Writes a batch of row changes (see [`crate::RebateStore::apply_rebates`]) through
            /// `sqlx`, a few multi-row statements at a time.
            async fn write_rebate_batch(
                &self,
                items: &[$crate::RebateChange],
                review: &[$crate::RebateReject],
            ) -> Result<Vec<$crate::Applied>, $crate::LedgerError> {
                $crate::retry_deadlocks(|| async {
                    let mut tx = self.writer()?.begin().await?;
                    Self::insert_rejects(&mut tx, review).await?;
                    // New rows in a few multi-row statements; the database names the rows it wrote
                    // (a row another writer inserted first is not among them).
                    let mut inserted: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
                    let new_rows: Vec<&$crate::RebateOrder> =
                        items.iter().filter(|i| i.expected.is_none()).map(|i| &i.row).collect();
                    for chunk in new_rows.chunks(500) {
                        let mut q = sqlx::QueryBuilder::<$db>::new($insert_rows);
                        q.push_values(chunk, |b, r| $crate::sql_rebate::push_order(b, r));
                        q.push($returning_keys);
                        let keys: Vec<(String, String)> = q.build_query_as().fetch_all(&mut *tx).await?;
                        inserted.extend(keys);
                    }
                    let mut outcomes = Vec::with_capacity(items.len());
                    let mut txns = Vec::new();
                    let mut joining = Vec::new();
                    for item in items {
                        let r = &item.row;
                        let wrote = match item.expected {
                            None if inserted.remove(&(r.source.clone(), r.line_key.clone())) => {
                                r.user_id.map_or($crate::sql_rebate::Wrote::Row, |_| $crate::sql_rebate::Wrote::Joining)
                            }
                            None => $crate::sql_rebate::Wrote::Nothing,
                            Some(_) => Self::write_row_in(&mut tx, r, item.expected).await?,
                        };
                        if wrote == $crate::sql_rebate::Wrote::Joining {
                            joining.push(r);
                        }
                        if wrote == $crate::sql_rebate::Wrote::Nothing {
                            outcomes.push($crate::Applied::Conflict);
                        } else {
                            outcomes.push($crate::Applied::Done);
                            txns.extend(item.txn.as_ref());
                        }
                    }
                    Self::join_lists_in(&mut tx, &joining).await?;
                    Self::post_many_in(&mut tx, &txns).await?;
                    tx.commit().await?;
                    Ok(outcomes)
                })
                .await
            }
        }
    };
}

pub(crate) use impl_sqlx_rebate_batch;
