//! Order shards and the router that picks one by buyer (or by order id, which carries the
//! buyer's gene).

use std::sync::Arc;

use flashback_core::id::GENES;
use flashback_core::{OrderId, UserId};

use crate::{MySqlShard, OrderShard, SqliteShard, StoreError, StoreOptions, StoreResult};

/// Where the order shards are.
#[derive(Clone)]
pub struct ShardOptions {
    /// Embedded: how many SQLite shard files (`orders-<i>.db` in the data directory).
    pub count: u16,
    /// Scaled out: one MySQL URL per shard, in shard order; when non-empty, `count` is ignored.
    pub urls: Vec<String>,
    /// Scaled out: per shard, in the order of `urls`, the MySQL URL of a read replica of that
    /// shard's database, or `None`; empty when no shard has one. Lag-tolerant listings read
    /// there, falling back to the primary when the replica is unavailable.
    pub replica_urls: Vec<Option<String>>,
    /// Pool settings (and the data directory for SQLite files).
    pub store: StoreOptions,
}

impl std::fmt::Debug for ShardOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| crate::redact_url(u)).collect();
        let replica_urls: Vec<Option<String>> =
            self.replica_urls.iter().map(|u| u.as_deref().map(crate::redact_url)).collect();
        f.debug_struct("ShardOptions")
            .field("count", &self.count)
            .field("urls", &urls)
            .field("replica_urls", &replica_urls)
            .finish()
    }
}

/// Every order shard, in order. A buyer's orders live on shard `gene(buyer) mod n`;
/// because order ids carry that gene, an order is found from its id alone. The shard count
/// must divide 1024, so growing by doubling moves each gene to one of two known shards.
#[derive(Debug, Clone)]
pub struct Shards {
    shards: Arc<[Arc<dyn OrderShard>]>,
}

impl Shards {
    /// Wraps already-open shards (at least one; the count must divide 1024).
    pub fn new(shards: Vec<Arc<dyn OrderShard>>) -> StoreResult<Self> {
        check_count(shards.len())?;
        Ok(Self { shards: shards.into() })
    }

    /// The shard holding `buyer`'s orders.
    pub fn for_buyer(&self, buyer: UserId) -> &Arc<dyn OrderShard> {
        self.by_gene(OrderId::gene_of(buyer))
    }

    /// The position in [`Shards::all`] of the shard holding `buyer`'s orders (for grouping a
    /// batch by shard).
    pub fn index_for_buyer(&self, buyer: UserId) -> usize {
        self.index_of(OrderId::gene_of(buyer))
    }

    /// The shard holding order `id`.
    pub fn for_order(&self, id: OrderId) -> &Arc<dyn OrderShard> {
        self.by_gene(id.gene())
    }

    /// Every shard, for queries across all of them.
    pub fn all(&self) -> &[Arc<dyn OrderShard>] {
        &self.shards
    }

    fn by_gene(&self, gene: u16) -> &Arc<dyn OrderShard> {
        &self.shards[self.index_of(gene)]
    }

    fn index_of(&self, gene: u16) -> usize {
        usize::from(gene) % self.shards.len()
    }

    /// Closes every shard.
    pub async fn close(&self) {
        for s in self.shards.iter() {
            s.close().await;
        }
    }
}

fn check_count(n: usize) -> StoreResult<()> {
    if n == 0 || n > usize::from(GENES) || usize::from(GENES) % n != 0 {
        return Err(StoreError::Config(format!(
            "trade.shards: {n} shards; the count must divide 1024 (1, 2, 4, … 1024)"
        )));
    }
    Ok(())
}

fn is_mysql_url(url: &str) -> bool {
    url.starts_with("mysql://") || url.starts_with("mariadb://")
}

/// Replica URLs are all or nothing per list: none, or one entry (possibly `None`) per shard URL.
fn check_replica_urls(options: &ShardOptions) -> StoreResult<()> {
    let (n, m) = (options.replica_urls.len(), options.urls.len());
    if n != 0 && n != m {
        return Err(StoreError::Config(format!(
            "trade.replica_urls: {n} entries for {m} shard URLs; give none, or one per entry of trade.shard_urls"
        )));
    }
    if options.replica_urls.iter().flatten().any(|u| !is_mysql_url(u)) {
        return Err(StoreError::Config("trade.replica_urls: each must start with mysql:// or mariadb://".into()));
    }
    Ok(())
}

/// Opens (and migrates) every shard the options name.
pub async fn open_shards(options: &ShardOptions) -> StoreResult<Shards> {
    check_replica_urls(options)?;
    let mut shards: Vec<Arc<dyn OrderShard>> = Vec::new();
    if options.urls.is_empty() {
        check_count(usize::from(options.count))?;
        for i in 0..options.count {
            let path = options.store.data_dir.join(format!("orders-{i}.db"));
            shards.push(Arc::new(SqliteShard::open(&path, &options.store).await?));
        }
    } else {
        check_count(options.urls.len())?;
        for (i, url) in options.urls.iter().enumerate() {
            if !is_mysql_url(url) {
                return Err(StoreError::Config("trade.shard_urls: each must start with mysql:// or mariadb://".into()));
            }
            let replica = options.replica_urls.get(i).and_then(Option::as_deref);
            shards.push(Arc::new(MySqlShard::connect(url, replica, &options.store, i).await?));
        }
    }
    for s in &shards {
        s.migrate().await?;
    }
    Shards::new(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_counts_must_divide_the_gene_space() {
        for ok in [1, 2, 4, 8, 1024] {
            assert!(check_count(ok).is_ok());
        }
        for bad in [0, 3, 6, 1000, 2048] {
            assert!(check_count(bad).is_err());
        }
    }

    fn options(urls: &[&str], replica_urls: &[Option<&str>]) -> ShardOptions {
        ShardOptions {
            count: 1,
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            replica_urls: replica_urls.iter().map(|u| u.map(str::to_owned)).collect(),
            store: StoreOptions {
                url: None,
                data_dir: std::env::temp_dir(),
                max_connections: 1,
                acquire_timeout: std::time::Duration::from_secs(1),
                breaker: Default::default(),
            },
        }
    }

    #[test]
    fn replica_urls_are_none_or_one_per_shard_and_must_be_mysql_urls() {
        let (a, b) = ("mysql://h/a", "mysql://h/b");
        assert!(check_replica_urls(&options(&[a, b], &[])).is_ok());
        assert!(check_replica_urls(&options(&[a, b], &[Some("mariadb://r/a"), None])).is_ok());
        for bad in [
            options(&[a, b], &[Some("mysql://r/a")]),
            options(&[], &[Some("mysql://r/a")]),
            options(&[a], &[Some("sqlite:replica.db")]),
        ] {
            let err = check_replica_urls(&bad).expect_err("rejected").to_string();
            assert!(err.contains("trade.replica_urls"), "{err}");
        }
    }

    #[test]
    fn replica_urls_are_redacted_in_debug_output() {
        let shown = format!("{:?}", options(&["mysql://u:secret@h/a"], &[Some("mysql://u:hidden@r/a")]));
        assert!(!shown.contains("secret") && !shown.contains("hidden"), "{shown}");
        assert!(shown.contains("replica_urls"), "{shown}");
    }
}
