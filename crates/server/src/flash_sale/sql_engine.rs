//! The `sql` engine: each attempt is one transaction in the store
//! ([`flashback_store::FlashSaleStore::sql_reserve`]).
//!
//! A commit whose answer is lost (the connection dropped or reset, a timeout) may have taken
//! effect. The store then fences the attempt: it reads the reservation's row once the
//! transaction that wrote it has ended, and answers with what it found (`202`, or `503` with
//! nothing taken). If the fence cannot answer either (the database is still unreachable), the
//! attempt is answered `pending` and settled later by the same fence, on ticket reads and in a
//! periodic pass ([`super::pending`]).

use std::sync::Arc;

use async_trait::async_trait;
use flashback_store::{FlashReservation, FlashSale, SqlReserveRefusal, Store};
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Refusal, Reserved, in_window};
use super::pending::{self, SETTLE_EVERY};

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

    async fn reserve(&self, sale: &FlashSale, reservation: FlashReservation, now_ms: i64) -> Result<Reserved, Refusal> {
        if !in_window(sale, now_ms) {
            return Err(Refusal::Closed);
        }
        match self.store.sql_reserve(&reservation, sale.per_user_limit, now_ms).await {
            Ok(None) => Ok(Reserved::New),
            Ok(Some(earlier)) => Ok(Reserved::Earlier(earlier)),
            Err(SqlReserveRefusal::SoldOut) => Err(Refusal::SoldOut),
            Err(SqlReserveRefusal::LimitReached) => Err(Refusal::LimitReached),
            Err(SqlReserveRefusal::Store(e)) => Err(Refusal::Unavailable(e.to_string())),
            Err(doubt @ SqlReserveRefusal::InDoubt { .. }) => {
                Ok(pending::answer_pending(&*self.store, &reservation, &doubt).await)
            }
        }
    }

    async fn settle(&self, attempt: &FlashReservation) -> Result<bool, Refusal> {
        let reserved = self
            .store
            .sql_reservation_settled(attempt.id)
            .await
            .map_err(|e| Refusal::Unavailable(format!("the fence: {e}")))?;
        pending::record_settled(&*self.store, attempt.id, reserved).await;
        Ok(reserved)
    }

    fn background(self: Arc<Self>, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        vec![tokio::spawn(async move {
            // At once on start too: attempts left pending before a restart.
            loop {
                pending::tend(&*self, &*self.store).await;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(SETTLE_EVERY) => {}
                }
            }
        })]
    }
}
