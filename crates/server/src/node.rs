//! This instance's node number (0-63, part of every id it makes), leased from the main store
//! so that instances need no per-instance configuration (a Kubernetes Deployment) and no two
//! live instances share one.
//!
//! - `node_id` unset: the instance leases the first free number at start (searching from a
//!   random one). `node_id` set: it leases that one, waiting while another instance's lease on
//!   it runs out (a crashed predecessor's), and refusing to start if it stays held.
//! - The lease lasts [`TTL`] and is renewed every [`RENEW_EVERY`]; it is given back at stop,
//!   so a restarted instance finds it free.
//! - The instance counts its lease as held until `TTL` after it *sent* the last successful
//!   renewal, which is before the database stamped it, so its view runs out first. Past that
//!   (the store unreachable for `TTL`), readiness turns 503 (`node_lease` down) so traffic
//!   moves away before any other instance can take the number. When the store answers again
//!   the lease is renewed if it is still ours; if another instance took it, this one stops
//!   (exiting with an error) rather than make ids that could collide.
//!
//! The main store is the place for it because an instance cannot be ready without it anyway;
//! Redis and RabbitMQ may be away at start.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use flashback_store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How long a lease runs from its last renewal.
pub const TTL: Duration = Duration::from_secs(15);
/// How often the holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);

/// The node number this instance holds.
#[derive(Debug)]
pub struct NodeLease {
    store: Arc<dyn Store>,
    node: u16,
    holder: String,
    /// Until when this instance may count the lease as held.
    valid_until: Mutex<Instant>,
    /// Cancelled when another instance took the number: this one must stop.
    lost: CancellationToken,
}

fn ttl_ms() -> i64 {
    i64::try_from(TTL.as_millis()).unwrap_or(i64::MAX)
}

impl NodeLease {
    /// Leases `configured` (waiting out a predecessor's lease) or, if `None`, any free number,
    /// for `holder` (unique to this run of this instance).
    pub async fn take(store: Arc<dyn Store>, configured: Option<u16>, holder: &str) -> anyhow::Result<Self> {
        let sent = Instant::now();
        let node = match configured {
            Some(node) => Self::wait_for(&*store, node, holder).await?,
            None => {
                let from = rand::random_range(0..=flashback_core::id::MAX_NODE);
                store.lease_any_node(from, holder, ttl_ms()).await.context("leasing a node number")?.context(
                    "every node number (0-63) is leased by a running instance: at most 64 instances share a store",
                )?
            }
        };
        tracing::info!(node, "node number leased");
        Ok(Self {
            store,
            node,
            holder: holder.to_owned(),
            valid_until: Mutex::new(sent + TTL),
            lost: CancellationToken::new(),
        })
    }

    /// Leases `node`, waiting while another holder's lease on it runs (at most two lease
    /// times: longer means a live instance renews it).
    async fn wait_for(store: &dyn Store, node: u16, holder: &str) -> anyhow::Result<u16> {
        let give_up = Instant::now() + TTL * 2;
        loop {
            if store.lease_node(node, holder, ttl_ms()).await.context("leasing node_id")? {
                return Ok(node);
            }
            let other = store.node_holder(node).await.context("reading node_id's lease")?;
            let left = other.as_ref().map_or(0, |h| h.remaining_ms.max(0));
            anyhow::ensure!(
                Instant::now() < give_up,
                "node_id {node} is in use by a running instance ({}); give each instance its own, or leave \
                 node_id unset to lease a free one",
                other.map_or_else(|| "unknown".to_owned(), |h| h.holder)
            );
            tracing::warn!(node, left_ms = left, "node_id is leased by another instance; waiting for it to expire");
            let pause =
                Duration::from_millis(u64::try_from(left).unwrap_or(0)).clamp(Duration::from_millis(100), RENEW_EVERY);
            tokio::time::sleep(pause).await;
        }
    }

    /// The node number.
    pub fn node(&self) -> u16 {
        self.node
    }

    /// Whether this instance may count the lease as held now.
    pub fn is_held(&self) -> bool {
        !self.lost.is_cancelled() && Instant::now() < *self.valid_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cancelled once another instance has taken the number; the instance must stop.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// One renewal: extends the lease, notes when another instance has taken it.
    async fn renew(&self) {
        let sent = Instant::now();
        match self.store.lease_node(self.node, &self.holder, ttl_ms()).await {
            Ok(true) => *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = sent + TTL,
            Ok(false) => {
                tracing::error!(node = self.node, "another instance took this instance's node number; stopping");
                self.lost.cancel();
            }
            Err(e) => tracing::warn!(node = self.node, error = %e, "renewing the node lease failed; will retry"),
        }
    }

    /// Renews the lease until `shutdown`, then gives it back.
    pub fn spawn_renewal(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let lease = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = lease.lost.cancelled() => return,
                    () = tokio::time::sleep(RENEW_EVERY) => lease.renew().await,
                }
            }
            if let Err(e) = lease.store.release_node(lease.node, &lease.holder).await {
                tracing::warn!(node = lease.node, error = %e, "giving the node number back failed; it expires by itself");
            }
        })
    }
}
