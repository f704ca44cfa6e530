//! The atomic reserve step, behind one trait with an engine per deployment:
//!
//! - `memory`: each sale's remaining units and per-buyer counts in process, changed under one
//!   short lock (limit checked before stock is touched); an accepted reservation is answered
//!   only once it is in the engine's [`Journal`] (group commit: many reservations per fsync).
//!   An importer moves journaled reservations into the store in batches; until then they are
//!   "unrecorded" (tickets read them from the engine, audits count them). At start the journal
//!   is imported before anything is sold, and books are rebuilt from the store.
//! - `sql`: one transaction per attempt: conditional decrement of the sale row, the buyer's
//!   total checked under that row's lock, the reservation row. The plain baseline.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flashback_core::{SaleId, UserId};
use flashback_store::{FlashReservation, FlashSale, ReservationStatus, SqlReserveRefusal, Store};

use crate::journal::Journal;

/// Why a reserve step said no; nothing was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No units left.
    SoldOut,
    /// The buyer already holds the per-user limit.
    LimitReached,
    /// Outside the sale's window or the sale is closed.
    Closed,
    /// Durable storage failed or is saturated; try later.
    Unavailable(String),
}

/// One reserve engine.
#[async_trait]
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// `memory`, `redis` or `sql`.
    fn name(&self) -> &'static str;
    /// Checks the window, the buyer's limit and the stock, takes the stock, and makes the
    /// reservation durable, all before returning `Ok`.
    async fn reserve(&self, sale: &FlashSale, reservation: FlashReservation, now_ms: i64) -> Result<(), Refusal>;

    /// A reservation was released in the store (once): give its units back to the engine's
    /// own book, if it keeps one.
    async fn returned(&self, _released: &FlashReservation) -> Result<(), Refusal> {
        Ok(())
    }

    /// A reservation the engine accepted that the store does not hold yet (for tickets).
    async fn in_flight(&self, _id: i64) -> Result<Option<FlashReservation>, Refusal> {
        Ok(None)
    }

    /// The sale is over: stop selling, and say whether every accepted reservation is in the
    /// store (only then may the store count what is unsold and end the sale).
    async fn close(&self, _sale: SaleId) -> Result<bool, Refusal> {
        Ok(true)
    }

    /// The sale has ended: drop whatever the engine keeps for it.
    async fn forget(&self, _sale: SaleId) {}

    /// For audits: the units the engine's own book can still sell and the units it accepted
    /// that the store does not hold yet; `None` if it keeps no book for the sale.
    async fn book(&self, _sale: SaleId) -> Result<Option<(i64, i64)>, Refusal> {
        Ok(None)
    }

    /// For readiness: the state the engine keeps on this instance, if any (`None`: nothing
    /// local to check; its remote dependencies are checked on their own).
    fn readiness(&self) -> Option<Result<(), String>> {
        None
    }

    /// Accepted reservations kept only by the engine so far (not yet in the store), if it
    /// keeps any (for the backlog gauge).
    fn unrecorded(&self) -> Option<u64> {
        None
    }

    /// Tasks the engine runs until shutdown.
    fn background(self: Arc<Self>, _shutdown: tokio_util::sync::CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        Vec::new()
    }
}

pub(crate) fn in_window(sale: &FlashSale, now_ms: i64) -> bool {
    sale.state == flashback_store::SaleState::Open && sale.starts_at_ms <= now_ms && now_ms < sale.ends_at_ms
}

/// The `sql` engine.
#[derive(Debug)]
pub struct SqlEngine {
    store: Arc<dyn Store>,
}

impl SqlEngine {
    /// An engine writing through `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Engine for SqlEngine {
    fn name(&self) -> &'static str {
        "sql"
    }

    async fn reserve(&self, sale: &FlashSale, reservation: FlashReservation, now_ms: i64) -> Result<(), Refusal> {
        if !in_window(sale, now_ms) {
            return Err(Refusal::Closed);
        }
        // No idempotency key is sent yet, so no earlier reservation is ever named.
        self.store.sql_reserve(&reservation, sale.per_user_limit, now_ms).await.map(|_| ()).map_err(|e| match e {
            SqlReserveRefusal::SoldOut => Refusal::SoldOut,
            SqlReserveRefusal::LimitReached => Refusal::LimitReached,
            SqlReserveRefusal::Store(e) => Refusal::Unavailable(e.to_string()),
        })
    }
}

#[derive(Debug)]
struct Book {
    remaining: i64,
    per_user: HashMap<UserId, i64>,
    /// Units accepted (durable in the journal) that the store does not hold yet.
    unrecorded: i64,
    /// The sale is being ended: sell nothing more.
    closed: bool,
}

/// The `memory` engine.
#[derive(Debug)]
pub struct MemoryEngine {
    store: Arc<dyn Store>,
    books: Mutex<HashMap<SaleId, Arc<Mutex<Book>>>>,
    /// `None` when another process holds the journal (a CLI command while a server runs):
    /// this process sells nothing.
    journal: Option<Journal>,
    /// Accepted reservations the importer has not put in the store yet, by id.
    unrecorded: Mutex<HashMap<i64, FlashReservation>>,
    /// Reservations accepted since start: a storm is on while this grows.
    accepted: AtomicU64,
    /// The importer's most reservations a second during a storm (0: no limit).
    storm_pace: u32,
}

/// Accepted reservations waiting to be imported into the store; beyond this, purchases are
/// refused (`Unavailable`) rather than queued without bound.
pub const MAX_UNRECORDED: usize = 1_000_000;
/// Most reservations the importer writes to the store in one transaction.
pub const IMPORT_BATCH: usize = 4_096;
/// Unrecorded reservations beyond which the importer stops pacing itself during a storm and
/// imports at full speed, so a long storm never reaches [`MAX_UNRECORDED`] for its pacing.
pub const STORM_BACKLOG: usize = MAX_UNRECORDED / 4;
/// The journal's segment size: at most this much is imported again after a restart.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// A reservation in the journal: id, sale, buyer, quantity, time (i64 little-endian each).
const RECORD: usize = 40;

/// The importer's next batch size and pace: while `storming` with fewer than
/// [`STORM_BACKLOG`] waiting, batches of a tenth of `storm_pace` a second at that pace;
/// otherwise whole batches as fast as the store takes them (pace 0).
fn import_pace(storming: bool, storm_pace: u32, backlog: usize) -> (usize, u32) {
    if storming && storm_pace > 0 && backlog < STORM_BACKLOG {
        ((storm_pace as usize / 10).clamp(1, IMPORT_BATCH), storm_pace)
    } else {
        (IMPORT_BATCH, 0)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn encode(r: &FlashReservation) -> [u8; RECORD] {
    let mut out = [0u8; RECORD];
    for (slot, v) in out.chunks_exact_mut(8).zip([r.id, r.sale_id.get(), r.user_id.get(), r.quantity, r.created_at_ms])
    {
        slot.copy_from_slice(&v.to_le_bytes());
    }
    out
}

fn decode(payload: &[u8]) -> anyhow::Result<Vec<FlashReservation>> {
    anyhow::ensure!(payload.len().is_multiple_of(RECORD), "a flash journal frame of {} bytes", payload.len());
    payload
        .chunks_exact(RECORD)
        .map(|rec| {
            let mut v = rec.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
            let mut next = || v.next().unwrap_or(0);
            let (id, sale, user, quantity, at) = (next(), next(), next(), next(), next());
            anyhow::ensure!(quantity > 0, "reservation {id} with quantity {quantity}");
            Ok(FlashReservation {
                id,
                sale_id: SaleId::new(sale)?,
                user_id: UserId::new(user)?,
                quantity,
                status: ReservationStatus::Reserved,
                order_id: None,
                created_at_ms: at,
                idempotency_key: None,
            })
        })
        .collect()
}

impl MemoryEngine {
    /// An engine writing through `store`, with its journal under `data_dir`, importing at most
    /// `storm_pace` reservations a second while purchases arrive (0: no limit). Whatever the
    /// journal holds from before (a crash, a kill) is put in the store before this returns, so
    /// books rebuilt from the store count every accepted reservation.
    pub async fn start(store: Arc<dyn Store>, data_dir: &Path, storm_pace: u32) -> anyhow::Result<Arc<Self>> {
        let dir = data_dir.join("flash-journal");
        let journal = match Journal::open(&dir, "flash-journal", None, SEGMENT_BYTES)? {
            Some((journal, records)) => {
                if records > 0 {
                    tracing::info!(records, "flash journal: importing reservations written before the restart");
                }
                Some(journal)
            }
            None => {
                tracing::warn!(dir = %dir.display(), "another process holds the flash journal; this one sells nothing");
                None
            }
        };
        let engine = Self {
            store,
            books: Mutex::new(HashMap::new()),
            journal,
            unrecorded: Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
            storm_pace,
        };
        while engine.import_once(IMPORT_BATCH, Duration::ZERO).await?.is_some() {}
        Ok(Arc::new(engine))
    }

    /// The sale's book, rebuilt from durable reservations on first use.
    async fn book(&self, sale: &FlashSale) -> Result<Arc<Mutex<Book>>, Refusal> {
        if let Some(b) = lock(&self.books).get(&sale.id) {
            return Ok(Arc::clone(b));
        }
        let held = self.store.sale_book(sale.id).await.map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let taken: i64 = held.iter().map(|(_, n)| n).sum();
        let book = Book {
            remaining: (sale.stock - taken).max(0),
            per_user: held.into_iter().collect(),
            unrecorded: 0,
            closed: false,
        };
        // Another request may have loaded it meanwhile; the first one in wins.
        Ok(Arc::clone(lock(&self.books).entry(sale.id).or_insert_with(|| Arc::new(Mutex::new(book)))))
    }

    /// Moves one batch of up to about `max` durable reservations from the journal into the
    /// store (idempotent by id, so a batch imported again after a crash changes nothing).
    /// `None` when none came within `wait`.
    async fn import_once(&self, max: usize, wait: Duration) -> anyhow::Result<Option<usize>> {
        let Some(journal) = &self.journal else { return Ok(None) };
        let Some(frames) = journal.read(max, wait).await? else { return Ok(None) };
        let stored = async {
            let mut rows = Vec::new();
            for payload in &frames.payloads {
                rows.extend(decode(payload)?);
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
    async fn run_importer(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        if self.journal.is_none() {
            // Another process holds the journal: nothing is written here to import.
            return;
        }
        let mut accepted = self.accepted.load(Ordering::Relaxed);
        let mut storming = false;
        loop {
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

#[async_trait]
impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn returned(&self, r: &FlashReservation) -> Result<(), Refusal> {
        // Only this process sells from the book, and the store released the reservation once.
        if let Some(book) = lock(&self.books).get(&r.sale_id) {
            let mut b = lock(book);
            b.remaining += r.quantity;
            if let Some(n) = b.per_user.get_mut(&r.user_id) {
                *n = (*n - r.quantity).max(0);
            }
        }
        Ok(())
    }

    async fn in_flight(&self, id: i64) -> Result<Option<FlashReservation>, Refusal> {
        if let Some(r) = lock(&self.unrecorded).get(&id) {
            return Ok(Some(r.clone()));
        }
        // Imported between the caller's read of the store and now.
        self.store.flash_reservation(id).await.map_err(|e| Refusal::Unavailable(e.to_string()))
    }

    async fn close(&self, sale: SaleId) -> Result<bool, Refusal> {
        let Some(book) = lock(&self.books).get(&sale).cloned() else { return Ok(true) };
        let mut b = lock(&book);
        b.closed = true;
        Ok(b.unrecorded == 0)
    }

    async fn forget(&self, sale: SaleId) {
        lock(&self.books).remove(&sale);
    }

    async fn book(&self, sale: SaleId) -> Result<Option<(i64, i64)>, Refusal> {
        let books = lock(&self.books);
        Ok(books.get(&sale).map(|b| {
            let b = lock(b);
            (b.remaining, b.unrecorded)
        }))
    }

    async fn reserve(&self, sale: &FlashSale, reservation: FlashReservation, now_ms: i64) -> Result<(), Refusal> {
        if !in_window(sale, now_ms) {
            return Err(Refusal::Closed);
        }
        let Some(journal) = &self.journal else {
            return Err(Refusal::Unavailable("another process holds the flash journal".into()));
        };
        if lock(&self.unrecorded).len() >= MAX_UNRECORDED {
            return Err(Refusal::Unavailable("too many reservations waiting to be recorded".into()));
        }
        let book = self.book(sale).await?;
        let (id, user, quantity) = (reservation.id, reservation.user_id, reservation.quantity);
        {
            let mut b = lock(&book);
            if b.closed {
                return Err(Refusal::Closed);
            }
            // The buyer's limit first: a duplicate purchase never touches stock.
            let held = b.per_user.get(&user).copied().unwrap_or(0);
            if held + quantity > sale.per_user_limit {
                return Err(Refusal::LimitReached);
            }
            if b.remaining < quantity {
                return Err(Refusal::SoldOut);
            }
            b.remaining -= quantity;
            b.unrecorded += quantity;
            *b.per_user.entry(user).or_insert(0) += quantity;
        }
        let record = encode(&reservation);
        lock(&self.unrecorded).insert(id, reservation);
        if let Err(e) = journal.append(&record, 1).await {
            // Not durable, so not accepted: undo the in-memory step.
            lock(&self.unrecorded).remove(&id);
            let mut b = lock(&book);
            b.remaining += quantity;
            b.unrecorded -= quantity;
            if let Some(n) = b.per_user.get_mut(&user) {
                *n -= quantity;
            }
            return Err(Refusal::Unavailable(e.to_string()));
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn readiness(&self) -> Option<Result<(), String>> {
        Some(match &self.journal {
            None => Err("another process holds data_dir/flash-journal: this instance sells nothing".into()),
            Some(j) if j.failed() => Err("a journal write failed: purchases are refused until a restart".into()),
            Some(_) => Ok(()),
        })
    }

    fn unrecorded(&self) -> Option<u64> {
        Some(u64::try_from(lock(&self.unrecorded).len()).unwrap_or(u64::MAX))
    }

    fn background(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        vec![tokio::spawn(self.run_importer(shutdown))]
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
