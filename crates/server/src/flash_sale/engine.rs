//! The atomic reserve step, behind one trait with an engine per deployment:
//!
//! - `memory`: each sale's remaining units and per-buyer counts in process, changed under one
//!   short lock (limit checked before stock is touched); an accepted reservation is answered
//!   only after the group-commit writer has made it durable, many reservations per transaction.
//!   After a restart the book is rebuilt from the durable reservations.
//! - `sql`: one transaction per attempt: conditional decrement of the sale row, the buyer's
//!   total checked under that row's lock, the reservation row. The plain baseline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flashback_core::{SaleId, UserId};
use flashback_store::{FlashReservation, FlashSale, SqlReserveRefusal, Store};
use tokio::sync::{mpsc, oneshot};

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
        self.store.sql_reserve(&reservation, sale.per_user_limit, now_ms).await.map_err(|e| match e {
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
}

type Commit = (FlashReservation, oneshot::Sender<Result<(), String>>);

/// The `memory` engine.
#[derive(Debug)]
pub struct MemoryEngine {
    store: Arc<dyn Store>,
    books: Mutex<HashMap<SaleId, Arc<Mutex<Book>>>>,
    commits: mpsc::Sender<Commit>,
}

/// Reservations waiting for the group-commit writer; beyond this, purchases are refused
/// (`Unavailable`) rather than queued without bound.
pub const COMMIT_QUEUE: usize = 65_536;
/// Most reservations written in one transaction.
pub const COMMIT_BATCH: usize = 2_048;

impl MemoryEngine {
    /// An engine writing through `store`, with its group-commit writer task started.
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(COMMIT_QUEUE);
        tokio::spawn(group_commit(Arc::clone(&store), rx));
        Arc::new(Self { store, books: Mutex::new(HashMap::new()), commits: tx })
    }

    /// The sale's book, rebuilt from durable reservations on first use.
    async fn book(&self, sale: &FlashSale) -> Result<Arc<Mutex<Book>>, Refusal> {
        if let Some(b) = self.books.lock().unwrap_or_else(|p| p.into_inner()).get(&sale.id) {
            return Ok(Arc::clone(b));
        }
        let held = self.store.sale_book(sale.id).await.map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let taken: i64 = held.iter().map(|(_, n)| n).sum();
        let book = Book { remaining: (sale.stock - taken).max(0), per_user: held.into_iter().collect() };
        let mut books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        // Another request may have loaded it meanwhile; the first one in wins.
        Ok(Arc::clone(books.entry(sale.id).or_insert_with(|| Arc::new(Mutex::new(book)))))
    }
}

#[async_trait]
impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn returned(&self, r: &FlashReservation) -> Result<(), Refusal> {
        // Only this process sells from the book, and the store released the reservation once.
        if let Some(book) = self.books.lock().unwrap_or_else(|p| p.into_inner()).get(&r.sale_id) {
            let mut b = book.lock().unwrap_or_else(|p| p.into_inner());
            b.remaining += r.quantity;
            if let Some(n) = b.per_user.get_mut(&r.user_id) {
                *n = (*n - r.quantity).max(0);
            }
        }
        Ok(())
    }

    async fn forget(&self, sale: SaleId) {
        self.books.lock().unwrap_or_else(|p| p.into_inner()).remove(&sale);
    }

    async fn book(&self, sale: SaleId) -> Result<Option<(i64, i64)>, Refusal> {
        let books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        // Nothing is accepted before it is durable: nothing is ever in flight.
        Ok(books.get(&sale).map(|b| (b.lock().unwrap_or_else(|p| p.into_inner()).remaining, 0)))
    }

    async fn reserve(&self, sale: &FlashSale, reservation: FlashReservation, now_ms: i64) -> Result<(), Refusal> {
        if !in_window(sale, now_ms) {
            return Err(Refusal::Closed);
        }
        let book = self.book(sale).await?;
        let (user, quantity) = (reservation.user_id, reservation.quantity);
        {
            let mut b = book.lock().unwrap_or_else(|p| p.into_inner());
            // The buyer's limit first: a duplicate purchase never touches stock.
            let held = b.per_user.get(&user).copied().unwrap_or(0);
            if held + quantity > sale.per_user_limit {
                return Err(Refusal::LimitReached);
            }
            if b.remaining < quantity {
                return Err(Refusal::SoldOut);
            }
            b.remaining -= quantity;
            *b.per_user.entry(user).or_insert(0) += quantity;
        }
        let (done, durable) = oneshot::channel();
        let outcome = match self.commits.try_send((reservation, done)) {
            Ok(()) => durable.await.unwrap_or_else(|_| Err("group commit stopped".into())),
            Err(_) => Err("group commit queue full".into()),
        };
        if let Err(e) = outcome {
            // Not durable, so not accepted: undo the in-memory step.
            let mut b = book.lock().unwrap_or_else(|p| p.into_inner());
            b.remaining += quantity;
            if let Some(n) = b.per_user.get_mut(&user) {
                *n -= quantity;
            }
            return Err(Refusal::Unavailable(e));
        }
        Ok(())
    }
}

/// Writes queued reservations in batches: waits for one, takes whatever else is queued (up to
/// [`COMMIT_BATCH`]), commits them in one transaction, then answers every waiter.
async fn group_commit(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Commit>) {
    let mut batch: Vec<Commit> = Vec::with_capacity(COMMIT_BATCH);
    while rx.recv_many(&mut batch, COMMIT_BATCH).await > 0 {
        let rows: Vec<FlashReservation> = batch.iter().map(|(r, _)| r.clone()).collect();
        let result = store.insert_reservations(&rows).await.map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::warn!(error = %e, rows = rows.len(), "flash reservation group commit failed");
        }
        for (_, waiter) in batch.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}
