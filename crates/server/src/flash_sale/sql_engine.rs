//! The `sql` engine: each attempt is one transaction in the store
//! ([`flashback_store::FlashSaleStore::sql_reserve`]).

use std::sync::Arc;

use async_trait::async_trait;
use flashback_store::{FlashReservation, FlashSale, SqlReserveRefusal, Store};

use super::engine::{Engine, Refusal, Reserved, in_window};

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
        }
    }
}
