//! The `redis` engine, for many instances: each sale's book (units left, units per buyer)
//! lives in Redis, and one Lua call checks the window, the buyer's limit and the stock, takes
//! the stock and appends the reservation to a stream — one atomic step, so nothing can be lost
//! between the stock and the queue.
//!
//! An importer on every instance reads the stream as one consumer group, writes the
//! reservations to the store in batches (idempotent by id), and only then acknowledges them;
//! entries left pending by an instance that died are claimed by another after
//! [`CLAIM_IDLE`]. Until a reservation is imported its ticket is answered from Redis.
//!
//! Every key shares the hash tag `{flash}`, so one Lua call may touch them all on a Redis
//! Cluster too (they live on one node; a hot sale is one node's work in any design).
//!
//! The purchase side (the reserve call, idempotency keys, answers lost to a stall) is in
//! [`super::redis_reserve`].
//!
//! Durability: an accepted reservation is as durable as Redis makes it — run it with
//! `appendonly yes` and `appendfsync always` (Redis then fsyncs once per event-loop turn, a
//! group commit) and `maxmemory-policy noeviction`; the engine warns at start if not.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flashback_core::{SaleId, UserId};
use flashback_infra::RedisHandle;
use flashback_store::{FlashReservation, FlashSale, ReservationStatus, SaleState, Store};
use redis::Script;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio_util::sync::CancellationToken;

use super::engine::Refusal;

/// The consumer group every instance's importer joins.
pub const GROUP: &str = "importers";
/// Entries read per batch.
pub const IMPORT_BATCH: usize = 1_000;
/// A pending entry idle this long belongs to a consumer presumed dead; another claims it.
pub const CLAIM_IDLE: Duration = Duration::from_secs(5);
/// How often released reservations are checked against the books (see [`RedisEngine::reconcile`]).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(10);
const BLOCK: Duration = Duration::from_millis(500);

/// The `redis` engine.
pub struct RedisEngine {
    pub(super) redis: RedisHandle,
    pub(super) store: Arc<dyn Store>,
    consumer: String,
    pub(super) reserve: Script,
    pub(super) fence: Script,
    load: Script,
    give_back: Script,
    ack: Script,
    /// A connection of its own for fences, allowed longer than a call: a fence is sent when
    /// the shared connection's call timed out.
    pub(super) fence_conn: flashback_infra::RedisConn,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine").field("redis", &self.redis).field("consumer", &self.consumer).finish()
    }
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> Refusal {
    Refusal::Unavailable(format!("redis: {e}"))
}

impl RedisEngine {
    /// An engine on `redis`, recording reservations in `store`; `node` names this instance's
    /// consumer in the group (a restarted instance first finishes what it had read).
    pub async fn new(redis: RedisHandle, store: Arc<dyn Store>, node: u16) -> anyhow::Result<Arc<Self>> {
        let engine = Self {
            consumer: format!("node-{node}"),
            reserve: Script::new(include_str!("lua/reserve.lua")),
            fence: Script::new(include_str!("lua/fence.lua")),
            fence_conn: redis.dedicated(redis.timeout().saturating_mul(super::redis_reserve::FENCE_TIMEOUTS)),
            load: Script::new(include_str!("lua/load.lua")),
            give_back: Script::new(include_str!("lua/give_back.lua")),
            ack: Script::new(include_str!("lua/ack.lua")),
            redis,
            store,
        };
        // Redis may be away at start: the importer makes the group when a read finds none.
        if let Err(e) = engine.redis.ensure_group(&engine.stream(), GROUP).await {
            tracing::warn!(error = %e, "redis: cannot reach the flash reservation stream yet; will retry");
        }
        engine.redis.warn_if_not_durable("accepted flash-sale reservations").await;
        // Connected now, not in a stall: a fence must not wait for a new connection.
        let warmed: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut engine.fence_conn.clone()).await;
        if let Err(e) = warmed {
            tracing::warn!(error = %e, "redis: the flash fence connection is not up yet; it connects on first use");
        }
        Ok(Arc::new(engine))
    }

    pub(super) fn stream(&self) -> String {
        self.redis.key("{flash}:stream")
    }
    pub(super) fn queued(&self) -> String {
        self.redis.key("{flash}:queued")
    }
    pub(super) fn book_key(&self, sale: SaleId) -> String {
        self.redis.key(&format!("{{flash}}:sale:{sale}"))
    }
    pub(super) fn held_key(&self, sale: SaleId) -> String {
        self.redis.key(&format!("{{flash}}:held:{sale}"))
    }
    fn returned_key(&self, sale: SaleId) -> String {
        self.redis.key(&format!("{{flash}}:returned:{sale}"))
    }

    async fn call<T: redis::FromRedisValue>(&self, invocation: redis::ScriptInvocation<'_>) -> Result<T, Refusal> {
        let mut c = self.redis.conn();
        tokio::time::timeout(self.redis.timeout(), invocation.invoke_async(&mut c))
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(unavailable)
    }

    /// Rebuilds a sale's book from the store's records and installs it unless another
    /// instance did first: units held per buyer (reservations not released), units left, and
    /// the released reservations (so they are not given back twice).
    pub(super) async fn load_book(&self, sale: &FlashSale) -> Result<(), Refusal> {
        let all = self.store.sale_reservations(sale.id).await.map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let mut held: HashMap<UserId, i64> = HashMap::new();
        let mut released = Vec::new();
        for r in &all {
            if r.status == ReservationStatus::Released {
                released.push(r.id);
            } else {
                *held.entry(r.user_id).or_default() += r.quantity;
            }
        }
        let remaining = sale.stock.saturating_sub(held.values().sum::<i64>());
        let nonce: u64 = rand::random();
        let staged_held = self.redis.key(&format!("{{flash}}:load:{nonce}:held"));
        let staged_returned = self.redis.key(&format!("{{flash}}:load:{nonce}:returned"));
        let mut c = self.redis.conn();
        let held: Vec<(i64, i64)> = held.into_iter().map(|(u, n)| (u.get(), n)).collect();
        for chunk in held.chunks(1_000) {
            let staged: redis::RedisResult<()> = redis::pipe()
                .hset_multiple(&staged_held, chunk)
                .ignore()
                .expire(&staged_held, 60)
                .ignore()
                .query_async(&mut c)
                .await;
            staged.map_err(unavailable)?;
        }
        for chunk in released.chunks(1_000) {
            let staged: redis::RedisResult<()> = redis::pipe()
                .sadd(&staged_returned, chunk)
                .ignore()
                .expire(&staged_returned, 60)
                .ignore()
                .query_async(&mut c)
                .await;
            staged.map_err(unavailable)?;
        }
        let open = i32::from(sale.state == SaleState::Open);
        let mut load = self.load.prepare_invoke();
        load.key(self.book_key(sale.id))
            .key(self.held_key(sale.id))
            .key(self.returned_key(sale.id))
            .key(&staged_held)
            .key(&staged_returned)
            .arg(remaining.max(0))
            .arg(sale.per_user_limit)
            .arg(sale.starts_at_ms)
            .arg(sale.ends_at_ms)
            .arg(open);
        let installed: i64 = self.call(load).await?;
        if installed == 1 {
            tracing::info!(sale.id = %sale.id, remaining, "flash sale book loaded into redis");
        }
        Ok(())
    }

    /// Gives released reservations' units back to their sale's book, each at most once
    /// (the book remembers which it took back). Returns the units given back.
    pub async fn give_back_all(&self, sale: SaleId, released: &[FlashReservation]) -> Result<i64, Refusal> {
        let mut given = 0;
        for chunk in released.chunks(300) {
            let mut call = self.give_back.prepare_invoke();
            call.key(self.book_key(sale)).key(self.held_key(sale)).key(self.returned_key(sale));
            for r in chunk {
                call.arg(r.id).arg(r.user_id.get()).arg(r.quantity);
            }
            given += self.call::<i64>(call).await?;
        }
        Ok(given)
    }

    /// Returns to the books the units of every released reservation of an open sale that a
    /// crash kept from being given back right after its release. Returns the units.
    pub async fn reconcile(&self) -> Result<i64, Refusal> {
        let store_err = |e: flashback_store::StoreError| Refusal::Unavailable(e.to_string());
        let mut given = 0;
        let mut after = None;
        loop {
            let limit = flashback_core::PageLimit::try_from(100).unwrap_or_default();
            let sales = self.store.flash_sales(Some(SaleState::Open), after, limit).await.map_err(store_err)?;
            for sale in &sales {
                let released = self.store.released_reservations(sale.id).await.map_err(store_err)?;
                given += self.give_back_all(sale.id, &released).await?;
            }
            match sales.last() {
                Some(last) if sales.len() == usize::from(limit.get()) => {
                    after = Some(flashback_core::Cursor { before_id: last.id.get() });
                }
                _ => return Ok(given),
            }
        }
    }

    /// Imports one batch of stream entries into the store and acknowledges them. Returns how
    /// many entries it handled.
    async fn import(&self, entries: &[StreamId]) -> anyhow::Result<usize> {
        let mut rows = Vec::with_capacity(entries.len());
        let mut acks = Vec::with_capacity(entries.len());
        for entry in entries {
            match parse_entry(entry) {
                Some(r) => {
                    acks.push((entry.id.clone(), r.id, r.sale_id, r.quantity));
                    rows.push(r);
                }
                None => {
                    // Not written by this engine; keeping it pending would only block the group.
                    tracing::error!(entry = %entry.id, "unreadable flash reservation entry; dropped");
                    acks.push((entry.id.clone(), 0, SaleId::new(1).unwrap_or_else(|_| unreachable!()), 0));
                }
            }
        }
        self.store.insert_reservations(&rows).await?;
        let mut call = self.ack.prepare_invoke();
        call.key(self.stream()).key(self.queued()).arg(GROUP);
        for (entry, reservation, sale, units) in &acks {
            call.key(self.book_key(*sale)).arg(entry).arg(reservation).arg(units);
        }
        let mut c = self.redis.conn();
        let _: i64 = call.invoke_async(&mut c).await?;
        Ok(entries.len())
    }

    /// Reads the stream as this instance's consumer until shutdown: first its own entries
    /// left pending by an earlier run, then new ones; every [`CLAIM_IDLE`] it also claims
    /// entries a dead consumer left pending.
    pub(super) async fn run_importer(self: Arc<Self>, shutdown: CancellationToken) {
        // A connection of its own: a blocking read must not hold up purchases.
        let mut conn = self.redis.dedicated(BLOCK + self.redis.timeout() * 4);
        let mut backlog = true; // our own pending entries first
        let mut last_claim = tokio::time::Instant::now();
        let mut last_reconcile = tokio::time::Instant::now() - RECONCILE_EVERY;
        while !shutdown.is_cancelled() {
            if last_reconcile.elapsed() >= RECONCILE_EVERY {
                last_reconcile = tokio::time::Instant::now();
                match self.reconcile().await {
                    Ok(0) => {}
                    Ok(units) => tracing::info!(units, "flash units of released reservations returned to redis books"),
                    Err(e) => tracing::warn!(error = ?e, "flash reconcile failed; will retry"),
                }
                super::pending::tend(&*self, &*self.store).await;
            }
            let read = if last_claim.elapsed() >= CLAIM_IDLE {
                last_claim = tokio::time::Instant::now();
                self.claim(&mut conn).await
            } else {
                self.read(&mut conn, backlog).await
            };
            match read {
                Ok(entries) if entries.is_empty() => backlog = false,
                Ok(entries) => {
                    if let Err(e) = self.import(&entries).await {
                        tracing::warn!(error = %e, entries = entries.len(), "flash import failed; will retry");
                        backlog = true;
                        sleep_or_stop(&shutdown, Duration::from_millis(200)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the flash reservation stream failed; will retry");
                    sleep_or_stop(&shutdown, Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn read(&self, conn: &mut flashback_infra::RedisConn, backlog: bool) -> redis::RedisResult<Vec<StreamId>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(&self.consumer).arg("COUNT").arg(IMPORT_BATCH);
        if !backlog {
            cmd.arg("BLOCK").arg(u64::try_from(BLOCK.as_millis()).unwrap_or(500));
        }
        cmd.arg("STREAMS").arg(self.stream()).arg(if backlog { "0" } else { ">" });
        let reply: Option<StreamReadReply> = match cmd.query_async(conn).await {
            Err(e) if flashback_infra::redis_conn::is_no_group(&e) => {
                self.redis.ensure_group(&self.stream(), GROUP).await?;
                cmd.query_async(conn).await?
            }
            reply => reply?,
        };
        Ok(reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default())
    }

    async fn claim(&self, conn: &mut flashback_infra::RedisConn) -> redis::RedisResult<Vec<StreamId>> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.stream())
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(u64::try_from(CLAIM_IDLE.as_millis()).unwrap_or(5_000))
            .arg("0")
            .arg("COUNT")
            .arg(IMPORT_BATCH)
            .query_async(conn)
            .await?;
        if !reply.claimed.is_empty() {
            tracing::info!(entries = reply.claimed.len(), "claimed flash reservations left by another consumer");
        }
        Ok(reply.claimed)
    }
}

async fn sleep_or_stop(shutdown: &CancellationToken, pause: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(pause) => {}
    }
}

fn field<T: std::str::FromStr>(entry: &StreamId, name: &str) -> Option<T> {
    let value: String = entry.get(name)?;
    value.parse().ok()
}

fn parse_entry(entry: &StreamId) -> Option<FlashReservation> {
    Some(FlashReservation {
        id: field(entry, "r")?,
        sale_id: SaleId::new(field(entry, "s")?).ok()?,
        user_id: UserId::new(field(entry, "u")?).ok()?,
        quantity: field(entry, "q")?,
        status: ReservationStatus::Reserved,
        order_id: None,
        created_at_ms: field(entry, "t")?,
        idempotency_key: entry.get("k"),
    })
}

impl RedisEngine {
    /// A reservation accepted and not imported yet (for tickets).
    pub(super) async fn queued_reservation(&self, id: i64) -> Result<Option<FlashReservation>, Refusal> {
        let mut c = self.redis.conn();
        let fields: Option<String> = tokio::time::timeout(
            self.redis.timeout(),
            redis::cmd("HGET").arg(self.queued()).arg(id).query_async(&mut c),
        )
        .await
        .map_err(|_| unavailable("timed out"))?
        .map_err(unavailable)?;
        let Some(fields) = fields else { return Ok(None) };
        let parts: Vec<i64> = fields.split(':').filter_map(|p| p.parse().ok()).collect();
        let [sale, user, quantity, at] = parts[..] else { return Err(unavailable("unreadable queued entry")) };
        Ok(Some(FlashReservation {
            id,
            sale_id: SaleId::new(sale).map_err(unavailable)?,
            user_id: UserId::new(user).map_err(unavailable)?,
            quantity,
            status: ReservationStatus::Reserved,
            order_id: None,
            created_at_ms: at,
            idempotency_key: None,
        }))
    }

    /// Stops the sale's book selling; whether every accepted reservation is imported.
    pub(super) async fn close_book(&self, sale: SaleId) -> Result<bool, Refusal> {
        let mut c = self.redis.conn();
        let key = self.book_key(sale);
        let (queued,): (Option<i64>,) = tokio::time::timeout(
            self.redis.timeout(),
            redis::pipe()
                .cmd("HSET")
                .arg(&key)
                .arg("open")
                .arg(0)
                .ignore()
                .cmd("HGET")
                .arg(&key)
                .arg("queued")
                .query_async(&mut c),
        )
        .await
        .map_err(|_| unavailable("timed out"))?
        .map_err(unavailable)?;
        // Every accepted reservation must be in the store before the store counts what is
        // unsold; the importer is usually milliseconds behind.
        Ok(queued.unwrap_or(0) <= 0)
    }

    /// Drops an ended sale's book.
    pub(super) async fn drop_book(&self, sale: SaleId) {
        let mut c = self.redis.conn();
        let keys = [self.book_key(sale), self.held_key(sale), self.returned_key(sale)];
        let dropped: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query_async(&mut c).await;
        if let Err(e) = dropped {
            tracing::warn!(sale.id = %sale, error = %e, "could not drop an ended sale's redis book");
        }
    }

    /// The book's units left and units not imported yet.
    pub(super) async fn read_book(&self, sale: SaleId) -> Result<Option<(i64, i64)>, Refusal> {
        let mut c = self.redis.conn();
        let (remaining, queued): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.book_key(sale))
            .arg("remaining")
            .arg("queued")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(remaining.map(|r| (r, queued.unwrap_or(0))))
    }
}
