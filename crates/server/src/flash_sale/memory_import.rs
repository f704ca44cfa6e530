//! The `memory` engine's importer: journaled reservations into the store in batches, paced
//! while a storm runs; and the pruning of idempotency keys whose sale ended a day ago.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flashback_core::SaleId;

use super::memory_engine::{IMPORT_BATCH, MemoryEngine, STORM_BACKLOG, lock};

/// How often keys past their time are dropped.
const KEY_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The importer's next batch size and pace: while `storming` with fewer than
/// [`STORM_BACKLOG`] waiting, batches of a tenth of `storm_pace` a second at that pace;
/// otherwise whole batches as fast as the store takes them (pace 0).
pub(super) fn import_pace(storming: bool, storm_pace: u32, backlog: usize) -> (usize, u32) {
    if storming && storm_pace > 0 && backlog < STORM_BACKLOG {
        ((storm_pace as usize / 10).clamp(1, IMPORT_BATCH), storm_pace)
    } else {
        (IMPORT_BATCH, 0)
    }
}

impl MemoryEngine {
    /// Drops the keys held past their time (a day after their sale ended): the store answers
    /// for them, since every reservation of an ended sale is in it.
    pub(super) fn prune_keys(&self, now_ms: i64) {
        lock(&self.keys).retain(|_, k| k.until_ms > now_ms);
    }

    /// Moves one batch of up to about `max` durable reservations from the journal into the
    /// store (idempotent by id, so a batch imported again after a crash changes nothing).
    /// `None` when none came within `wait`.
    pub(super) async fn import_once(&self, max: usize, wait: Duration) -> anyhow::Result<Option<usize>> {
        let Some(journal) = &self.journal else { return Ok(None) };
        let Some(frames) = journal.read(max, wait).await? else { return Ok(None) };
        let stored = async {
            let mut rows = Vec::new();
            for payload in &frames.payloads {
                rows.extend(super::memory_record::decode(payload)?);
            }
            self.store.insert_reservations(&rows).await?;
            anyhow::Ok(rows)
        };
        let rows = match stored.await {
            Ok(rows) => rows,
            Err(e) => {
                // Read again next time: an accepted reservation is never skipped.
                journal.rewind(frames.from).await;
                return Err(e);
            }
        };
        let mut recorded: HashMap<SaleId, i64> = HashMap::new();
        {
            let mut unrecorded = lock(&self.unrecorded);
            for r in &rows {
                if let Some(r) = unrecorded.remove(&r.id) {
                    *recorded.entry(r.sale_id).or_default() += r.quantity;
                }
            }
        }
        for (sale, units) in recorded {
            if let Some(book) = lock(&self.books).get(&sale) {
                lock(book).unrecorded -= units;
            }
        }
        journal.release(frames.to).await?;
        Ok(Some(rows.len()))
    }

    /// Imports until shutdown, then whatever is left.
    ///
    /// Peak shaving, as the order worker does: while purchases arrive (the accepted count grew
    /// during the last batch) it imports at `storm_pace` ([`import_pace`]), leaving the CPU and
    /// the disk to the purchases, which are durable in the journal already.
    pub(super) async fn run_importer(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        if self.journal.is_none() {
            // Another process holds the journal: nothing is written here to import.
            return;
        }
        let mut accepted = self.accepted.load(Ordering::Relaxed);
        let mut storming = false;
        let mut pruned = tokio::time::Instant::now();
        loop {
            if pruned.elapsed() >= KEY_PRUNE_EVERY {
                pruned = tokio::time::Instant::now();
                self.prune_keys(crate::trade::now_ms());
            }
            let backlog = lock(&self.unrecorded).len();
            let paced = storming && !shutdown.is_cancelled();
            let (max, pace) = import_pace(paced, self.storm_pace, backlog);
            let wait = if shutdown.is_cancelled() { Duration::ZERO } else { Duration::from_millis(200) };
            let started = tokio::time::Instant::now();
            let rest = match self.import_once(max, wait).await {
                Ok(Some(n)) => super::paced_rest(n, pace, started.elapsed()),
                Ok(None) if shutdown.is_cancelled() => return,
                Ok(None) => Duration::ZERO,
                Err(e) if shutdown.is_cancelled() => {
                    // Left in the journal: the next start imports it before selling anything.
                    tracing::warn!(error = %e, "flash journal import failed at shutdown");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "flash journal import failed; will retry");
                    Duration::from_millis(500)
                }
            };
            let now = self.accepted.load(Ordering::Relaxed);
            storming = now != accepted;
            accepted = now;
            if rest.is_zero() {
                continue;
            }
            tokio::select! {
                // Stop pacing, not importing: the loop drains the journal before it returns.
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(rest) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_importer_follows_a_storm_at_its_pace_until_the_backlog_is_large() {
        // A storm at 2,000 a second: batches of 200, one every tenth of a second.
        assert_eq!(import_pace(true, 2_000, 10), (200, 2_000));
        assert_eq!(crate::flash_sale::paced_rest(200, 2_000, Duration::from_millis(30)), Duration::from_millis(70));
        // No storm, no pace, or a backlog near its bound: whole batches at full speed.
        assert_eq!(import_pace(false, 2_000, 10), (IMPORT_BATCH, 0));
        assert_eq!(import_pace(true, 0, 10), (IMPORT_BATCH, 0));
        assert_eq!(import_pace(true, 2_000, STORM_BACKLOG), (IMPORT_BATCH, 0));
        assert_eq!(crate::flash_sale::paced_rest(IMPORT_BATCH, 0, Duration::ZERO), Duration::ZERO);
        // Tiny and huge paces still make batches of 1 to IMPORT_BATCH.
        assert_eq!(import_pace(true, 5, 0).0, 1);
        assert_eq!(import_pace(true, 1_000_000, 0).0, IMPORT_BATCH);
    }
}
