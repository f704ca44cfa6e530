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
    /// Pool settings (and the data directory for SQLite files).
    pub store: StoreOptions,
}

impl std::fmt::Debug for ShardOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| crate::redact_url(u)).collect();
        f.debug_struct("ShardOptions").field("count", &self.count).field("urls", &urls).finish()
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

    /// The shard holding order `id`.
    pub fn for_order(&self, id: OrderId) -> &Arc<dyn OrderShard> {
        self.by_gene(id.gene())
    }

    /// Every shard, for queries across all of them.
    pub fn all(&self) -> &[Arc<dyn OrderShard>] {
        &self.shards
    }

    fn by_gene(&self, gene: u16) -> &Arc<dyn OrderShard> {
        &self.shards[usize::from(gene) % self.shards.len()]
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

/// Opens (and migrates) every shard the options name.
pub async fn open_shards(options: &ShardOptions) -> StoreResult<Shards> {
    let mut shards: Vec<Arc<dyn OrderShard>> = Vec::new();
    if options.urls.is_empty() {
        check_count(usize::from(options.count))?;
        for i in 0..options.count {
            let path = options.store.data_dir.join(format!("orders-{i}.db"));
            shards.push(Arc::new(SqliteShard::open(&path, &options.store).await?));
        }
    } else {
        check_count(options.urls.len())?;
        for url in &options.urls {
            if !(url.starts_with("mysql://") || url.starts_with("mariadb://")) {
                return Err(StoreError::Config("trade.shard_urls: each must start with mysql:// or mariadb://".into()));
            }
            shards.push(Arc::new(MySqlShard::connect(url, &options.store).await?));
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
}
