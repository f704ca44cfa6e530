//! Node numbers leased to running instances. Every id an instance makes carries its node
//! number (0..=63), so two live instances must never share one. An instance leases a number in
//! the main store at start and renews it while it runs; a crashed instance's number frees
//! itself when its lease expires. Expiry is judged by the database's clock alone, so instances
//! whose clocks disagree still agree on who holds what.

use async_trait::async_trait;

use crate::StoreResult;

/// Who holds a node number, as the store sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHolder {
    /// The holder's name (an id unique to one run of one instance).
    pub holder: String,
    /// How long the lease still runs, by the database's clock (0 or less: expired).
    pub remaining_ms: i64,
}

/// Leases on node numbers, in the main store. Every call is one conditional statement.
#[async_trait]
pub trait NodeLeaseStore: Send + Sync {
    /// Takes node `node` for `holder` for `ttl_ms` if it is free, expired or already held by
    /// `holder` (then it is renewed); `false` when another holder's lease still runs.
    async fn lease_node(&self, node: u16, holder: &str, ttl_ms: i64) -> StoreResult<bool>;
    /// Nodes not leased now (free or expired), at most `limit`, starting the search at `from`
    /// (so instances starting together try different ones first).
    async fn free_nodes(&self, from: u16, limit: u16) -> StoreResult<Vec<u16>>;
    /// Who holds `node` now, if anyone ever did.
    async fn node_holder(&self, node: u16) -> StoreResult<Option<NodeHolder>>;
    /// Gives `node` back if `holder` holds it.
    async fn release_node(&self, node: u16, holder: &str) -> StoreResult<()>;

    /// Leases the first node number that is free, searching from `from`; `None` when all are
    /// held. Instances racing for one number each end up with a different one.
    async fn lease_any_node(&self, from: u16, holder: &str, ttl_ms: i64) -> StoreResult<Option<u16>> {
        // A candidate can be taken by a racing instance between listing and leasing; list
        // again then, until a lease holds or nothing is free.
        loop {
            let free = self.free_nodes(from, 8).await?;
            if free.is_empty() {
                return Ok(None);
            }
            for node in free {
                if self.lease_node(node, holder, ttl_ms).await? {
                    return Ok(Some(node));
                }
            }
        }
    }
}

/// Implements [`NodeLeaseStore`] for a catalog store type with `writer()` and `reader()`;
/// `$now` is the backend's SQL for the database clock in Unix milliseconds.
macro_rules! impl_node_lease_store {
    ($store:ty, $now:literal) => {
        #[async_trait::async_trait]
        impl $crate::NodeLeaseStore for $store {
            async fn lease_node(&self, node: u16, holder: &str, ttl_ms: i64) -> $crate::StoreResult<bool> {
                $crate::retry_deadlocks(|| async {
                    let done = sqlx::query(concat!(
                        "UPDATE node_leases SET holder = ?, expires_at_ms = ",
                        $now,
                        " + ? WHERE node_id = ? AND (holder = ? OR expires_at_ms <= ",
                        $now,
                        ")"
                    ))
                    .bind(holder)
                    .bind(ttl_ms)
                    .bind(i64::from(node))
                    .bind(holder)
                    .execute(self.writer()?)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
                .await
            }

            async fn free_nodes(&self, from: u16, limit: u16) -> $crate::StoreResult<Vec<u16>> {
                let rows: Vec<(i64,)> = sqlx::query_as(concat!(
                    "SELECT node_id FROM node_leases WHERE expires_at_ms <= ",
                    $now,
                    " ORDER BY (node_id + 64 - ?) % 64 LIMIT ?"
                ))
                .bind(i64::from(from % 64))
                .bind(i64::from(limit))
                .fetch_all(self.writer()?)
                .await?;
                Ok(rows.into_iter().filter_map(|(n,)| u16::try_from(n).ok()).collect())
            }

            async fn node_holder(&self, node: u16) -> $crate::StoreResult<Option<$crate::NodeHolder>> {
                let row: Option<(String, i64)> = sqlx::query_as(concat!(
                    "SELECT holder, expires_at_ms - ",
                    $now,
                    " FROM node_leases WHERE node_id = ? AND holder <> ''"
                ))
                .bind(i64::from(node))
                .fetch_optional(self.writer()?)
                .await?;
                Ok(row.map(|(holder, remaining_ms)| $crate::NodeHolder { holder, remaining_ms }))
            }

            async fn release_node(&self, node: u16, holder: &str) -> $crate::StoreResult<()> {
                $crate::retry_deadlocks(|| async {
                    sqlx::query("UPDATE node_leases SET expires_at_ms = 0 WHERE node_id = ? AND holder = ?")
                        .bind(i64::from(node))
                        .bind(holder)
                        .execute(self.writer()?)
                        .await?;
                    Ok(())
                })
                .await
            }
        }
    };
}

pub(crate) use impl_node_lease_store;
