//! Postbacks: each pushed order event, once visible on the network's clock, is POSTed as one
//! JSON order row, signed, retried with backoff on failure (bounded), sometimes twice.
//! Delivery is serial and in schedule order (visible time, trade id, event); one lock lets the
//! background task and `flush` share the cursor without sending anything twice.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_now_ms;
use crate::config::PostbackConfig;
use crate::dataset::SimOrder;
use crate::server::SimState;
use crate::signing::{SIGNATURE_HEADER, postback_signature};

const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What the pusher has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PostbackStats {
    /// Events delivered (answered 2xx), counting each once.
    pub delivered: u64,
    /// Extra deliveries of the same event (deliberate duplicates).
    pub duplicates: u64,
    /// Events given up on after `max_attempts`.
    pub failed: u64,
    /// HTTP attempts made, successful or not.
    pub attempts: u64,
    /// Events not yet due on the network's clock.
    pub remaining: u64,
}

#[derive(Debug, Clone, Copy)]
struct Scheduled {
    due_ms: i64,
    order: usize,
    event: usize,
    duplicate: bool,
}

#[derive(Debug, Default)]
struct Cursor {
    next: usize,
    stats: PostbackStats,
}

#[derive(Debug)]
pub(crate) struct Pusher {
    config: PostbackConfig,
    client: reqwest::Client,
    schedule: Vec<Scheduled>,
    cursor: Mutex<Cursor>,
}

impl Pusher {
    pub fn new(config: PostbackConfig, orders: &[SimOrder]) -> anyhow::Result<Self> {
        let mut schedule: Vec<Scheduled> = orders
            .iter()
            .enumerate()
            .filter(|(_, order)| order.postback)
            .flat_map(|(o, order)| {
                order.events.iter().enumerate().filter(|(_, e)| e.kind.changes_order_row()).map(move |(i, e)| {
                    Scheduled { due_ms: e.visible_at_ms, order: o, event: i, duplicate: e.duplicate_postback }
                })
            })
            .collect();
        schedule.sort_by_key(|s| (s.due_ms, orders[s.order].trade_id, s.event));
        let client = reqwest::Client::builder().timeout(config.request_timeout).build()?;
        let remaining = u64::try_from(schedule.len()).unwrap_or(u64::MAX);
        let cursor = Cursor { next: 0, stats: PostbackStats { remaining, ..PostbackStats::default() } };
        Ok(Pusher { config, client, schedule, cursor: Mutex::new(cursor) })
    }

    pub fn tick(&self) -> Duration {
        self.config.tick
    }

    /// Delivers every event due by `now_ms` that has not been delivered yet; returns the
    /// totals so far. Stops early when `cancel` fires.
    pub async fn push_due(&self, orders: &[SimOrder], now_ms: i64, cancel: &CancellationToken) -> PostbackStats {
        let mut cursor = self.cursor.lock().await;
        while let Some(item) = self.schedule.get(cursor.next).copied() {
            if item.due_ms > now_ms || cancel.is_cancelled() {
                break;
            }
            let order = &orders[item.order];
            let body = order.row_at_event(item.event).and_then(|row| serde_json::to_vec(&row).ok()).unwrap_or_default();
            let (ok, attempts) = self.deliver(&body, cancel).await;
            cursor.stats.attempts += attempts;
            if cancel.is_cancelled() && !ok {
                break;
            }
            if ok {
                cursor.stats.delivered += 1;
                if item.duplicate {
                    let (again, attempts) = self.deliver(&body, cancel).await;
                    cursor.stats.attempts += attempts;
                    cursor.stats.duplicates += u64::from(again);
                }
            } else {
                cursor.stats.failed += 1;
                tracing::warn!(trade.id = order.trade_id, event = item.event, "postback given up");
            }
            cursor.next += 1;
            cursor.stats.remaining = cursor.stats.remaining.saturating_sub(1);
        }
        cursor.stats
    }

    /// One delivery with bounded retries: (answered 2xx, attempts made).
    async fn deliver(&self, body: &[u8], cancel: &CancellationToken) -> (bool, u64) {
        let mut backoff = self.config.initial_backoff;
        for attempt in 1..=self.config.max_attempts {
            let t = unix_now_ms() / 1000;
            let request = self
                .client
                .post(&self.config.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, postback_signature(&self.config.secret, t, body))
                .body(body.to_vec())
                .send();
            let outcome = tokio::select! {
                () = cancel.cancelled() => return (false, u64::from(attempt)),
                outcome = request => outcome,
            };
            match outcome {
                Ok(response) if response.status().is_success() => return (true, u64::from(attempt)),
                Ok(response) => tracing::debug!(status = response.status().as_u16(), attempt, "postback refused"),
                Err(error) => tracing::debug!(%error, attempt, "postback failed"),
            }
            if attempt < self.config.max_attempts {
                tokio::select! {
                    () = cancel.cancelled() => return (false, u64::from(attempt)),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        (false, u64::from(self.config.max_attempts))
    }
}

/// The background pusher: pushes what is due, then waits for a clock change, a tick, or the
/// end.
pub(crate) async fn run(state: Arc<SimState>, pusher: Arc<Pusher>, cancel: CancellationToken) {
    let mut changes = state.clock.subscribe();
    let mut clock_alive = true;
    loop {
        pusher.push_due(&state.orders, state.clock.now_ms(), &cancel).await;
        tokio::select! {
            () = cancel.cancelled() => break,
            changed = changes.changed(), if clock_alive => clock_alive = changed.is_ok(),
            () = tokio::time::sleep(pusher.tick()) => {}
        }
    }
}
