//! The `redis` engine's purchase side: the reserve call and idempotency keys.
//!
//! A keyed reserve call also sets the buyer's key (in the same Lua call, so the key exists
//! exactly when its reservation does) and answers a repeat of the key with the reservation it
//! names (`DUP`), taking nothing. Redis keeps a key until a day after its sale ends; the
//! store keeps it with the reservation for good.

use async_trait::async_trait;
use flashback_core::{SaleId, UserId};
use flashback_store::{FlashReservation, FlashSale, ReservationStatus};
use redis::RedisError;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Refusal, Reserved, in_window, key_expiry};
use super::redis_engine::{RedisEngine, unavailable};

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

/// `id:sale:units:at`, as the reserve script keeps a key's reservation.
fn keyed(fields: &str, user: UserId, key: &str) -> Option<FlashReservation> {
    let parts: Vec<i64> = fields.split(':').map(str::parse).collect::<Result<_, _>>().ok()?;
    let [id, sale, quantity, at] = parts[..] else { return None };
    Some(FlashReservation {
        id,
        sale_id: SaleId::new(sale).ok()?,
        user_id: user,
        quantity,
        status: ReservationStatus::Reserved,
        order_id: None,
        created_at_ms: at,
        idempotency_key: Some(key.to_owned()),
    })
}

impl RedisEngine {
    fn key_key(&self, user: UserId, key: &str) -> String {
        self.redis.key(&format!("{{flash}}:idem:{user}:{key}"))
    }

    /// One reserve call; the raw reply, or the raw error (to tell a lost answer from a refusal).
    async fn attempt(&self, sale: &FlashSale, r: &FlashReservation, now_ms: i64) -> Result<String, RedisError> {
        let mut call = self.reserve.prepare_invoke();
        call.key(self.book_key(sale.id))
            .key(self.held_key(sale.id))
            .key(self.stream())
            .key(self.queued())
            .arg(r.user_id.get())
            .arg(r.quantity)
            .arg(now_ms)
            .arg(r.id)
            .arg(sale.id.get());
        if let Some(key) = &r.idempotency_key {
            let keep = key_expiry(sale).saturating_sub(now_ms).max(1);
            call.key(self.key_key(r.user_id, key)).arg(key).arg(keep);
        }
        let mut c = self.redis.conn();
        tokio::time::timeout(self.redis.timeout(), call.invoke_async(&mut c)).await.unwrap_or_else(|_| Err(timed_out()))
    }
}

#[async_trait]
impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn reserve(&self, sale: &FlashSale, reservation: FlashReservation, now_ms: i64) -> Result<Reserved, Refusal> {
        if !in_window(sale, now_ms) {
            return Err(Refusal::Closed);
        }
        for _ in 0..2 {
            let reply = match self.attempt(sale, &reservation, now_ms).await {
                Ok(reply) => reply,
                Err(e) => {
                    // The call may have run although its reply was lost: if the reservation
                    // is queued, it was accepted.
                    return match self.queued_reservation(reservation.id).await {
                        Ok(Some(_)) => Ok(Reserved::New),
                        _ => Err(unavailable(e)),
                    };
                }
            };
            match reply.as_str() {
                "OK" => return Ok(Reserved::New),
                "SOLDOUT" => return Err(Refusal::SoldOut),
                "LIMIT" => return Err(Refusal::LimitReached),
                "CLOSED" => return Err(Refusal::Closed),
                "NOBOOK" => self.load_book(sale).await?,
                dup if dup.starts_with("DUP:") => {
                    let key = reservation.idempotency_key.as_deref().unwrap_or_default();
                    let earlier = keyed(&dup[4..], reservation.user_id, key);
                    return earlier.map(Reserved::Earlier).ok_or_else(|| unavailable(format!("unreadable {dup}")));
                }
                other => return Err(unavailable(format!("unexpected reply {other}"))),
            }
        }
        Err(unavailable("the sale's book could not be loaded"))
    }

    async fn by_key(&self, user: UserId, key: &str) -> Result<Option<FlashReservation>, Refusal> {
        let mut c = self.redis.conn();
        let fields: Option<String> = tokio::time::timeout(
            self.redis.timeout(),
            redis::cmd("GET").arg(self.key_key(user, key)).query_async(&mut c),
        )
        .await
        .map_err(|_| unavailable("timed out"))?
        .map_err(unavailable)?;
        let Some(fields) = fields else { return Ok(None) };
        keyed(&fields, user, key).map(Some).ok_or_else(|| unavailable("unreadable idempotency entry"))
    }

    async fn returned(&self, r: &FlashReservation) -> Result<(), Refusal> {
        self.give_back_all(r.sale_id, std::slice::from_ref(r)).await.map(|_| ())
    }

    async fn in_flight(&self, id: i64) -> Result<Option<FlashReservation>, Refusal> {
        self.queued_reservation(id).await
    }

    async fn close(&self, sale: SaleId) -> Result<bool, Refusal> {
        self.close_book(sale).await
    }

    async fn forget(&self, sale: SaleId) {
        self.drop_book(sale).await;
    }

    async fn book(&self, sale: SaleId) -> Result<Option<(i64, i64)>, Refusal> {
        self.read_book(sale).await
    }

    fn background(self: std::sync::Arc<Self>, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        vec![tokio::spawn(self.run_importer(shutdown))]
    }
}
