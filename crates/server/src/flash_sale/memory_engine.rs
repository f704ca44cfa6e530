//! The `memory` engine: each sale's remaining units and per-buyer counts in process, changed
//! under one short lock (limit checked before stock is touched); an accepted reservation is
//! answered only once it is in the engine's [`Journal`] (group commit: many reservations per
//! fsync). An importer ([`super::memory_import`]) moves journaled reservations into the store
//! in batches; until then they are "unrecorded" (tickets read them from the engine, audits
//! count them). At start the journal is imported before anything is sold, and books are
//! rebuilt from the store.
//!
//! Idempotency keys: a keyed reservation's journal record carries its key, so both are durable
//! in one fsync. Keys used since start are held in memory until a day after their sale ends;
//! keys from before the start are in the store (the journal was imported first).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flashback_core::{SaleId, UserId};
use flashback_store::{FlashReservation, FlashSale, Store};

use super::engine::{Engine, Refusal, Reserved, in_window, key_expiry};
use super::memory_record::{encode, encode_keyed};
use crate::journal::Journal;

#[derive(Debug)]
pub(super) struct Book {
    remaining: i64,
    per_user: HashMap<UserId, i64>,
    /// Units accepted (durable in the journal) that the store does not hold yet.
    pub(super) unrecorded: i64,
    /// The sale is being ended: sell nothing more.
    closed: bool,
}

/// A key used since start: its reservation, whether that is durable yet, and until when
/// (Unix ms) the key is held here.
#[derive(Debug)]
pub(super) struct Keyed {
    reservation: FlashReservation,
    durable: bool,
    pub(super) until_ms: i64,
}

/// The `memory` engine.
#[derive(Debug)]
pub struct MemoryEngine {
    pub(super) store: Arc<dyn Store>,
    pub(super) books: Mutex<HashMap<SaleId, Arc<Mutex<Book>>>>,
    /// `None` when another process holds the journal (a CLI command while a server runs):
    /// this process sells nothing.
    pub(super) journal: Option<Journal>,
    /// Accepted reservations the importer has not put in the store yet, by id.
    pub(super) unrecorded: Mutex<HashMap<i64, FlashReservation>>,
    /// Keys used since start, by buyer and key.
    pub(super) keys: Mutex<HashMap<(UserId, String), Keyed>>,
    /// Reservations accepted since start: a storm is on while this grows.
    pub(super) accepted: AtomicU64,
    /// The importer's most reservations a second during a storm (0: no limit).
    pub(super) storm_pace: u32,
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

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
            keys: Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
            storm_pace,
        };
        while engine.import_once(IMPORT_BATCH, Duration::ZERO).await?.is_some() {}
        Ok(Arc::new(engine))
    }

    /// The sale's book, rebuilt from durable reservations on first use.
    async fn load(&self, sale: &FlashSale) -> Result<Arc<Mutex<Book>>, Refusal> {
        if let Some(b) = lock(&self.books).get(&sale.id) {
            return Ok(Arc::clone(b));
        }
        let held = self.store.sale_book(sale.id).await.map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let taken = held.iter().try_fold(0i64, |sum, (_, n)| sum.checked_add(*n));
        let taken = taken.ok_or_else(|| Refusal::Unavailable("the sale's recorded units overflow".into()))?;
        let book = Book {
            remaining: sale.stock.saturating_sub(taken).max(0),
            per_user: held.into_iter().collect(),
            unrecorded: 0,
            closed: false,
        };
        // Another request may have loaded it meanwhile; the first one in wins.
        Ok(Arc::clone(lock(&self.books).entry(sale.id).or_insert_with(|| Arc::new(Mutex::new(book)))))
    }

    /// Checks and takes the units under the book's lock (and the key's, for a keyed
    /// reservation, which is then held here as not yet durable).
    fn take(&self, sale: &FlashSale, book: &Mutex<Book>, r: &FlashReservation) -> Result<Option<Reserved>, Refusal> {
        let mut keys = r.idempotency_key.as_ref().map(|_| lock(&self.keys));
        if let (Some(keys), Some(key)) = (keys.as_ref(), r.idempotency_key.as_ref()) {
            match keys.get(&(r.user_id, key.clone())) {
                Some(k) if k.durable => return Ok(Some(Reserved::Earlier(k.reservation.clone()))),
                Some(_) => return Err(Refusal::KeyBusy),
                None => {}
            }
        }
        let mut b = lock(book);
        if b.closed {
            return Err(Refusal::Closed);
        }
        // The buyer's limit first: a duplicate purchase never touches stock.
        let held = b.per_user.get(&r.user_id).copied().unwrap_or(0);
        if held.checked_add(r.quantity).is_none_or(|total| total > sale.per_user_limit) {
            return Err(Refusal::LimitReached);
        }
        if b.remaining < r.quantity {
            return Err(Refusal::SoldOut);
        }
        b.remaining -= r.quantity;
        b.unrecorded += r.quantity;
        *b.per_user.entry(r.user_id).or_insert(0) += r.quantity;
        if let (Some(keys), Some(key)) = (keys.as_mut(), r.idempotency_key.as_ref()) {
            let held = Keyed { reservation: r.clone(), durable: false, until_ms: key_expiry(sale) };
            keys.insert((r.user_id, key.clone()), held);
        }
        Ok(None)
    }

    /// Undoes [`Self::take`] for a reservation that did not become durable.
    fn untake(&self, book: &Mutex<Book>, r: &FlashReservation) {
        if let Some(key) = &r.idempotency_key {
            lock(&self.keys).remove(&(r.user_id, key.clone()));
        }
        let mut b = lock(book);
        b.remaining += r.quantity;
        b.unrecorded -= r.quantity;
        if let Some(n) = b.per_user.get_mut(&r.user_id) {
            *n -= r.quantity;
        }
    }
}

#[async_trait]
impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn reserve(&self, sale: &FlashSale, reservation: FlashReservation, now_ms: i64) -> Result<Reserved, Refusal> {
        if !in_window(sale, now_ms) {
            return Err(Refusal::Closed);
        }
        let Some(journal) = &self.journal else {
            return Err(Refusal::Unavailable("another process holds the flash journal".into()));
        };
        if lock(&self.unrecorded).len() >= MAX_UNRECORDED {
            return Err(Refusal::Unavailable("too many reservations waiting to be recorded".into()));
        }
        // The record first: a key too long for one is refused before anything is taken.
        let (plain, keyed);
        let record: &[u8] = match &reservation.idempotency_key {
            None => {
                plain = encode(&reservation);
                &plain
            }
            Some(k) => {
                keyed = encode_keyed(&reservation, k)
                    .ok_or_else(|| Refusal::Unavailable("an idempotency key longer than a record holds".into()))?;
                &keyed
            }
        };
        let book = self.load(sale).await?;
        if let Some(earlier) = self.take(sale, &book, &reservation)? {
            return Ok(earlier);
        }
        let (id, user, key) = (reservation.id, reservation.user_id, reservation.idempotency_key.clone());
        lock(&self.unrecorded).insert(id, reservation);
        if let Err(e) = journal.append(record, 1).await {
            // Not durable, so not accepted: undo the in-memory step.
            if let Some(r) = lock(&self.unrecorded).remove(&id) {
                self.untake(&book, &r);
            }
            return Err(Refusal::Unavailable(e.to_string()));
        }
        if let Some(k) = key
            && let Some(held) = lock(&self.keys).get_mut(&(user, k))
        {
            held.durable = true;
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Reserved::New)
    }

    async fn by_key(&self, user: UserId, key: &str) -> Result<Option<FlashReservation>, Refusal> {
        match lock(&self.keys).get(&(user, key.to_owned())) {
            Some(k) if k.durable => Ok(Some(k.reservation.clone())),
            Some(_) => Err(Refusal::KeyBusy),
            None => Ok(None),
        }
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
