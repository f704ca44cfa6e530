//! The `redis` engine's purchase side: the reserve call, idempotency keys, and what is done
//! when a reserve call's answer is lost.
//!
//! A call that timed out (Redis stalled past `cache.redis_timeout_ms`) or whose connection
//! broke may still run later: Redis queues what it has read. So a lost answer is never taken
//! to mean "nothing happened". Every attempt has its own id (its reservation id); the engine
//! sends `fence.lua` for it, on a connection of its own allowed [`FENCE_TIMEOUTS`] timeouts:
//!
//! - `RESERVED`: the attempt ran and reserved: answered `202` with its (real) ticket.
//! - `FENCED`: from now on the attempt refuses itself if it ever runs. If the store holds its
//!   reservation (it ran and was imported in between), `202`; otherwise nothing was taken and
//!   nothing will be: `503` with `Retry-After`.
//! - no answer either: the outcome is unknown. The attempt is recorded in the store as pending
//!   and answered `202` with a *pending* ticket; ticket reads and the importer's reconcile pass
//!   settle it later (the same fence, from any instance) to reserved or cancelled
//!   ([`super::pending`]).

use std::time::Duration;

use async_trait::async_trait;
use flashback_core::{SaleId, UserId};
use flashback_store::{FlashReservation, FlashSale, ReservationStatus};
use redis::RedisError;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Refusal, Reserved, in_window, key_expiry};
use super::pending;
use super::redis_engine::{RedisEngine, unavailable};

/// How many Redis timeouts a fence may take: it waits longer than the call it settles, so a
/// stall a little longer than the timeout still ends in a definite answer.
pub const FENCE_TIMEOUTS: u32 = 4;
/// How long a fence stays in Redis (an attempt cannot plausibly run later than this).
pub const FENCE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Whether a failed call may still have run: it was sent and its answer lost (a timeout, a
/// broken connection). A call refused before it was sent (the breaker open, the connection
/// refused) or answered with an error did not take anything.
fn lost_answer(e: &RedisError) -> bool {
    e.is_io_error() && !e.is_connection_refusal() && !e.to_string().contains("circuit open")
}

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
    fn fence_key(&self, id: i64) -> String {
        self.redis.key(&format!("{{flash}}:fence:{id}"))
    }

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
            .key(self.fence_key(r.id))
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

    /// Fences attempt `r` so that it can no longer run, and says whether it reserved.
    pub(super) async fn fence(&self, r: &FlashReservation) -> Result<bool, Refusal> {
        let mut call = self.fence.prepare_invoke();
        let ttl = u64::try_from(FENCE_TTL.as_millis()).unwrap_or(u64::MAX);
        call.key(self.fence_key(r.id)).key(self.queued()).arg(r.id).arg(ttl);
        let mut c = self.fence_conn.clone();
        let wait = self.redis.timeout().saturating_mul(FENCE_TIMEOUTS);
        let reply: String = tokio::time::timeout(wait, call.invoke_async(&mut c))
            .await
            .map_err(|_| unavailable("the fence timed out"))?
            .map_err(unavailable)?;
        match reply.as_str() {
            "RESERVED" => Ok(true),
            // Fenced: whatever it did is final now. It may have run and been imported since.
            "FENCED" => match self.store.flash_reservation(r.id).await {
                Ok(stored) => Ok(stored.is_some()),
                Err(e) => Err(Refusal::Unavailable(e.to_string())),
            },
            other => Err(unavailable(format!("unexpected fence reply {other}"))),
        }
    }

    /// A reserve call's answer was lost: fence the attempt and answer with what is known.
    async fn in_doubt(&self, r: &FlashReservation, lost: RedisError) -> Result<Reserved, Refusal> {
        match self.fence(r).await {
            Ok(true) => Ok(Reserved::New),
            Ok(false) => Err(unavailable(format!("{lost}; the attempt was fenced before it ran"))),
            Err(why) => {
                let why = format!("{lost}; the fence: {why:?}");
                Ok(pending::answer_pending(&*self.store, r, &why).await)
            }
        }
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
                Err(e) if lost_answer(&e) => return self.in_doubt(&reservation, e).await,
                Err(e) => return Err(unavailable(e)),
            };
            match reply.as_str() {
                "OK" => return Ok(Reserved::New),
                "SOLDOUT" => return Err(Refusal::SoldOut),
                "LIMIT" => return Err(Refusal::LimitReached),
                "CLOSED" => return Err(Refusal::Closed),
                "FENCED" => return Err(unavailable("the attempt was fenced")),
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

    async fn settle(&self, attempt: &FlashReservation) -> Result<bool, Refusal> {
        let reserved = self.fence(attempt).await?;
        pending::record_settled(&*self.store, attempt.id, reserved).await;
        Ok(reserved)
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
