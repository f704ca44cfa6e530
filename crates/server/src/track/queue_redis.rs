//! The scaled-out tracking queue on a Redis stream (`track.queue = "redis"`), shared by every
//! instance: each pushed batch is one stream entry (`b` = the encoded batch, `n` = its event
//! count), and the writers of all instances read it as one consumer group.
//!
//! - Push is one Lua call that refuses the batch (→ 503) when the backlog counter would pass
//!   `track.max_backlog_events`, else appends the entry and raises the counter: the bound and
//!   the counter cannot drift apart.
//! - Pull reads whole entries with `XREADGROUP … BLOCK`, as this instance's consumer. The
//!   consumer name is kept in `data_dir/track-consumer`, so a restarted instance is the same
//!   consumer and first re-reads the entries it had read and not acknowledged (id `0`).
//! - Ack is one Lua call: `XACK`, then `XDEL`, and the counter lowered by the entry's count
//!   only if this call's `XACK` removed it (an entry acknowledged twice counts down once).
//! - Nack leaves the entries pending; the next pull re-reads this consumer's pending entries.
//! - Entries another consumer has held unacknowledged for [`CLAIM_IDLE`] (its instance died,
//!   or moved to another data directory) are taken over with `XAUTOCLAIM`.
//!
//! Redelivery is harmless: the store drops an event id it already holds, so `Pulled::cursor`
//! is `None`. Keys share the hash tag `{track}` so the scripts work on a Redis Cluster.
//!
//! Durability is Redis's own: run it with `appendonly yes`, `appendfsync always` (one fsync
//! per event-loop turn, a group commit) and `maxmemory-policy noeviction`, or an accepted batch
//! can be lost in a Redis crash. The queue warns at start when it can see otherwise.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use flashback_infra::RedisHandle;
use flashback_store::track::TrackEvent;
use redis::Script;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::time::Instant;

use super::TrackConfig;
use super::queue::{Pulled, PushError, Receipt, TrackQueue, decode, encode};

/// The consumer group every instance's writer joins.
pub const GROUP: &str = "writers";
/// An entry another consumer has left unacknowledged this long is presumed abandoned and
/// taken over. Far above one writer transaction (seconds even for 20,000 events), so a live
/// but slow writer is rarely raced; when it is, the store's dedup keeps the count exact.
pub const CLAIM_IDLE: Duration = Duration::from_secs(30);
/// At most this many reads fill one pull (small batches would otherwise cost a round trip
/// each).
const READS_PER_PULL: usize = 8;

/// KEYS: 1 stream, 2 backlog counter. ARGV: 1 encoded batch, 2 events, 3 bound.
/// Returns 1 when queued, 0 when the bound refuses it.
const PUSH: &str = r"
local n = tonumber(ARGV[2])
local backlog = tonumber(redis.call('GET', KEYS[2]) or '0')
if backlog + n > tonumber(ARGV[3]) then
  return 0
end
redis.call('XADD', KEYS[1], '*', 'b', ARGV[1], 'n', ARGV[2])
redis.call('INCRBY', KEYS[2], n)
return 1
";

/// KEYS: 1 stream, 2 backlog counter. ARGV: 1 group, 2.. entry ids.
/// Returns the events acknowledged by this call.
const ACK: &str = r"
local events = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    local found = redis.call('XRANGE', KEYS[1], id, id)
    if found[1] then
      local fields = found[1][2]
      for j = 1, #fields, 2 do
        if fields[j] == 'n' then
          events = events + tonumber(fields[j + 1])
        end
      end
    end
  end
  redis.call('XDEL', KEYS[1], id)
end
if events > 0 then
  redis.call('DECRBY', KEYS[2], events)
end
return events
";

struct ReadState {
    conn: flashback_infra::RedisConn,
    /// Re-read this consumer's pending entries (at start and after a nack) before new ones.
    own_pending: bool,
    last_claim: Instant,
    claim_from: String,
}

/// The Redis stream queue.
pub struct RedisQueue {
    redis: RedisHandle,
    consumer: String,
    push: Script,
    ack: Script,
    max_backlog: u64,
    max_batch: usize,
    /// The longest `BLOCK` (the reader connection's response timeout allows for it).
    max_block: Duration,
    reader: tokio::sync::Mutex<ReadState>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue").field("redis", &self.redis).field("consumer", &self.consumer).finish()
    }
}

/// This instance's consumer name: made once and kept in the data directory.
fn consumer_name(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("track-consumer");
    if let Ok(name) = std::fs::read_to_string(&path) {
        let name = name.trim();
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let name = format!("writer-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(&path, &name).with_context(|| format!("writing {}", path.display()))?;
    Ok(name)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisQueue {
    /// Joins (creating if needed) the stream's consumer group as this instance's consumer.
    pub async fn open(redis: &RedisHandle, data_dir: &Path, config: &TrackConfig) -> anyhow::Result<Self> {
        let consumer = consumer_name(data_dir)?;
        let queue = Self {
            redis: redis.clone(),
            consumer,
            push: Script::new(PUSH),
            ack: Script::new(ACK),
            max_backlog: config.max_backlog_events,
            max_batch: config.max_batch_events.max(1),
            max_block: config.writer_idle.max(Duration::from_secs(1)),
            reader: tokio::sync::Mutex::new(ReadState {
                conn: Self::reader_conn(redis, config.writer_idle.max(Duration::from_secs(1))),
                own_pending: true,
                last_claim: Instant::now(),
                claim_from: "0-0".into(),
            }),
        };
        // Redis may be away at start: reads make the group when they find none.
        if let Err(e) = queue.redis.ensure_group(&queue.stream(), GROUP).await {
            tracing::warn!(error = %e, "redis: cannot reach the tracking stream yet; will retry");
        }
        queue.redis.warn_if_not_durable("accepted tracking events").await;
        tracing::info!(stream = %queue.stream(), consumer = %queue.consumer, "tracking queue open on redis");
        Ok(queue)
    }

    /// A connection of its own for blocking reads, so they never hold up pushes.
    fn reader_conn(redis: &RedisHandle, max_block: Duration) -> flashback_infra::RedisConn {
        redis.dedicated(max_block + redis.timeout() * 4)
    }

    /// The stream (`<prefix>:{track}:stream`).
    pub fn stream(&self) -> String {
        self.redis.key("{track}:stream")
    }

    /// The events queued and not yet acknowledged (`<prefix>:{track}:events`).
    pub fn counter(&self) -> String {
        self.redis.key("{track}:events")
    }

    /// Entries to ask for so that whole batches stay within `budget` events.
    fn count_for(&self, budget: usize) -> usize {
        (budget / self.max_batch).max(1)
    }

    async fn read(
        &self,
        st: &mut ReadState,
        id: &str,
        count: usize,
        block: Option<Duration>,
    ) -> anyhow::Result<Vec<StreamId>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(&self.consumer).arg("COUNT").arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(millis(block).max(1));
        }
        cmd.arg("STREAMS").arg(self.stream()).arg(id);
        let reply: Option<StreamReadReply> = match cmd.query_async(&mut st.conn).await {
            Err(e) if flashback_infra::redis_conn::is_no_group(&e) => {
                self.redis.ensure_group(&self.stream(), GROUP).await?;
                cmd.query_async(&mut st.conn).await?
            }
            reply => reply?,
        };
        Ok(reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default())
    }

    async fn claim(&self, st: &mut ReadState, count: usize) -> anyhow::Result<Vec<StreamId>> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.stream())
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(millis(CLAIM_IDLE))
            .arg(&st.claim_from)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut st.conn)
            .await?;
        st.claim_from = reply.next_stream_id;
        if !reply.claimed.is_empty() {
            tracing::info!(
                entries = reply.claimed.len(),
                "took over tracking batches another writer left unacknowledged"
            );
        }
        Ok(reply.claimed)
    }

    /// Entries to process next: taken-over ones, then this consumer's pending ones, then new
    /// ones (waiting up to `wait` for the first).
    async fn next_entries(&self, st: &mut ReadState, budget: usize, wait: Duration) -> anyhow::Result<Vec<StreamId>> {
        let count = self.count_for(budget);
        if st.last_claim.elapsed() >= CLAIM_IDLE {
            let claimed = self.claim(st, count).await?;
            if st.claim_from == "0-0" {
                st.last_claim = Instant::now();
            }
            if !claimed.is_empty() {
                return Ok(claimed);
            }
        }
        if st.own_pending {
            let pending = self.read(st, "0", count, None).await?;
            if !pending.is_empty() {
                return Ok(pending);
            }
            st.own_pending = false;
        }
        self.read(st, ">", count, Some(wait.min(self.max_block))).await
    }

    /// The events of `entries`; an entry that cannot be read is logged and its id returned
    /// apart, to be acknowledged (kept pending it would come back forever).
    fn unpack(entries: Vec<StreamId>, events: &mut Vec<TrackEvent>, ids: &mut Vec<String>, bad: &mut Vec<String>) {
        for entry in entries {
            match entry.get::<Vec<u8>>("b").map(|b| decode(&b)) {
                Some(Ok(batch)) => {
                    events.extend(batch);
                    ids.push(entry.id);
                }
                _ => {
                    tracing::error!(entry = %entry.id, "unreadable tracking batch on the stream; dropped");
                    bad.push(entry.id);
                }
            }
        }
    }

    async fn acknowledge(&self, ids: &[String]) -> anyhow::Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut call = self.ack.prepare_invoke();
        call.key(self.stream()).key(self.counter()).arg(GROUP);
        for id in ids {
            call.arg(id);
        }
        let mut c = self.redis.conn();
        let events: i64 = tokio::time::timeout(self.redis.timeout(), call.invoke_async(&mut c))
            .await
            .map_err(|_| anyhow::anyhow!("acknowledging tracking batches timed out"))??;
        Ok(u64::try_from(events).unwrap_or(0))
    }
}

#[async_trait]
impl TrackQueue for RedisQueue {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn push(&self, events: &[TrackEvent]) -> Result<(), PushError> {
        let mut call = self.push.prepare_invoke();
        call.key(self.stream()).key(self.counter()).arg(encode(events)).arg(events.len()).arg(self.max_backlog);
        let mut c = self.redis.conn();
        let queued: i64 = tokio::time::timeout(self.redis.timeout(), call.invoke_async(&mut c))
            .await
            .map_err(|_| PushError::Unavailable(anyhow::anyhow!("redis push timed out")))?
            .map_err(|e| PushError::Unavailable(e.into()))?;
        if queued == 1 { Ok(()) } else { Err(PushError::Full) }
    }

    async fn pull(&self, max_events: usize, wait: Duration) -> anyhow::Result<Option<Pulled>> {
        let mut st = self.reader.lock().await;
        let (mut events, mut ids, mut bad) = (Vec::new(), Vec::new(), Vec::new());
        let first = self.next_entries(&mut st, max_events, wait).await?;
        Self::unpack(first, &mut events, &mut ids, &mut bad);
        // Top up with what is already there while another whole batch surely fits.
        for _ in 1..READS_PER_PULL {
            let budget = max_events.saturating_sub(events.len());
            if ids.is_empty() || st.own_pending || budget < self.max_batch {
                break;
            }
            let more = self.read(&mut st, ">", self.count_for(budget), None).await?;
            if more.is_empty() {
                break;
            }
            Self::unpack(more, &mut events, &mut ids, &mut bad);
        }
        drop(st);
        self.acknowledge(&bad).await?;
        if ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(Pulled { events, cursor: None, receipt: Receipt::Redis(ids) }))
    }

    async fn ack(&self, pulled: &Pulled) -> anyhow::Result<()> {
        if let Receipt::Redis(ids) = &pulled.receipt {
            self.acknowledge(ids).await?;
        }
        Ok(())
    }

    async fn nack(&self, _pulled: &Pulled) -> anyhow::Result<()> {
        // The entries stay pending to this consumer; the next pull reads them first.
        self.reader.lock().await.own_pending = true;
        Ok(())
    }

    async fn backlog(&self) -> anyhow::Result<u64> {
        let mut c = self.redis.conn();
        let n: Option<i64> =
            tokio::time::timeout(self.redis.timeout(), redis::cmd("GET").arg(self.counter()).query_async(&mut c))
                .await
                .map_err(|_| anyhow::anyhow!("reading the tracking backlog timed out"))??;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    }
}
