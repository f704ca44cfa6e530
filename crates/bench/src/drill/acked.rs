//! The acknowledged writes, looked for once the load has stopped: every order answered `201`
//! read back by its buyer, every ticket answered `202` settled into an order or a recorded
//! release, every tracking event of a batch answered `202` in the tracking store.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, Row};

use super::record::Acknowledged;
use crate::api::{Api, api_error};
use crate::setup::Buyer;

/// Reads in flight at once.
const CONCURRENCY: usize = 16;
/// Problems listed at most, per kind.
const MAX_PROBLEMS: usize = 10;
/// Pause between rounds of looking for what has not settled yet.
const ROUND: Duration = Duration::from_millis(500);

/// What was found of one kind of write.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Found {
    /// Acknowledged during the drill.
    pub recorded: u64,
    /// Found again.
    pub found: u64,
    /// Not there: the deployment answered that it does not have it.
    pub lost: u64,
    /// Not settled, or not readable, when the settle timeout ran out: neither found nor
    /// proven lost.
    pub unverified: u64,
    /// The first few problems.
    pub problems: Vec<String>,
}

impl Found {
    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }
}

/// Every kind.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Writes {
    /// Orders answered `201`.
    pub orders: Found,
    /// Flash-sale tickets answered `202`; found = ordered or released.
    pub tickets: Found,
    /// Of the tickets found, those released (their unit went back to the sale).
    pub tickets_released: u64,
    /// Tracking events in batches answered `202`.
    pub tracking_events: Found,
}

/// Looks for everything in `acked`, waiting up to `settle` for tickets and events to settle.
pub async fn check(
    api: &Api,
    buyers: &[Buyer],
    acked: &Acknowledged,
    store_url: &str,
    module: &str,
    settle: Duration,
) -> Writes {
    let deadline = Instant::now() + settle;
    let orders = orders(api, buyers, &acked.orders).await;
    let (tickets, released) = tickets(api, buyers, &acked.tickets, deadline).await;
    let tracking_events = match events(store_url, module, &acked.events, deadline).await {
        Ok(found) => found,
        Err(e) => Found {
            recorded: acked.events.len() as u64,
            unverified: acked.events.len() as u64,
            problems: vec![format!("reading the tracking store: {e:#}")],
            ..Found::default()
        },
    };
    Writes { orders, tickets, tickets_released: released, tracking_events }
}

/// What one read of a write found.
enum Seen {
    Found,
    Released,
    Pending,
    Lost(String),
    Unreadable(String),
}

async fn orders(api: &Api, buyers: &[Buyer], orders: &[(String, usize)]) -> Found {
    let mut found = Found { recorded: orders.len() as u64, ..Found::default() };
    let seen: Vec<Seen> = futures::stream::iter(orders)
        .map(|(id, buyer)| async move {
            let mut last = String::new();
            for _ in 0..3 {
                match api.get::<Value>(&format!("api/v1/orders/{id}"), Some(&buyers[*buyer].token)).await {
                    Ok(o) if o.get("id").and_then(Value::as_str) == Some(id.as_str()) => return Seen::Found,
                    Ok(o) => return Seen::Lost(format!("order {id} reads back as {o}")),
                    Err(e) if api_error(&e).is_some_and(|a| a.status == StatusCode::NOT_FOUND) => {
                        return Seen::Lost(format!("order {id} is 404 for its buyer"));
                    }
                    Err(e) => last = format!("order {id}: {e:#}"),
                }
                tokio::time::sleep(ROUND).await;
            }
            Seen::Unreadable(last)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for s in seen {
        tally(&mut found, s);
    }
    found
}

fn tally(found: &mut Found, seen: Seen) {
    match seen {
        Seen::Found | Seen::Released => found.found += 1,
        Seen::Lost(p) => {
            found.lost += 1;
            found.problem(p);
        }
        Seen::Unreadable(p) => {
            found.unverified += 1;
            found.problem(p);
        }
        Seen::Pending => {
            found.unverified += 1;
        }
    }
}

async fn ticket(api: &Api, id: &str, token: &str) -> Seen {
    match api.get::<Value>(&format!("api/v1/flash-sales/tickets/{id}"), Some(token)).await {
        Ok(t) => match t.get("status").and_then(Value::as_str) {
            Some("ordered") if t.get("order_id").is_some_and(Value::is_string) => Seen::Found,
            Some("released") => Seen::Released,
            Some("queued") => Seen::Pending,
            _ => Seen::Lost(format!("ticket {id} reads back as {t}")),
        },
        Err(e) if api_error(&e).is_some_and(|a| a.status == StatusCode::NOT_FOUND) => {
            Seen::Lost(format!("ticket {id} is 404 for its buyer"))
        }
        Err(e) => Seen::Unreadable(format!("ticket {id}: {e:#}")),
    }
}

/// Rounds over the tickets not yet settled until none is left or `deadline` passes.
async fn tickets(api: &Api, buyers: &[Buyer], tickets: &[(String, usize)], deadline: Instant) -> (Found, u64) {
    let mut found = Found { recorded: tickets.len() as u64, ..Found::default() };
    let mut released = 0;
    let mut pending: Vec<&(String, usize)> = tickets.iter().collect();
    loop {
        let last_round = Instant::now() >= deadline;
        let seen: Vec<(&(String, usize), Seen)> = futures::stream::iter(pending)
            .map(|t| async move { (t, ticket(api, &t.0, &buyers[t.1].token).await) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        pending = Vec::new();
        for (t, s) in seen {
            match s {
                Seen::Pending | Seen::Unreadable(_) if !last_round => pending.push(t),
                Seen::Pending => {
                    found.problem(format!("ticket {} still queued when the settle timeout ran out", t.0));
                    tally(&mut found, Seen::Pending);
                }
                Seen::Released => {
                    released += 1;
                    tally(&mut found, s);
                }
                other => tally(&mut found, other),
            }
        }
        if pending.is_empty() {
            return (found, released);
        }
        tokio::time::sleep(ROUND).await;
    }
}

/// Looks up the drill's tracking events in the store's day tables (the store is the main
/// database: `track.store_url` is not set), until all are there or `deadline` passes.
async fn events(store_url: &str, module: &str, events: &[u128], deadline: Instant) -> anyhow::Result<Found> {
    let mut found = Found { recorded: events.len() as u64, ..Found::default() };
    let wanted: HashSet<u128> = events.iter().copied().collect();
    let mut conn = sqlx::MySqlConnection::connect(store_url).await.context("connecting to the store")?;
    let stored = loop {
        let stored = stored_events(&mut conn, module).await?;
        if wanted.is_subset(&stored) || Instant::now() >= deadline {
            break stored;
        }
        tokio::time::sleep(ROUND).await;
    };
    conn.close().await.ok();
    found.found = wanted.intersection(&stored).count() as u64;
    found.lost = found.recorded.saturating_sub(found.found);
    if found.lost > 0 {
        found.problem(format!("{} acknowledged events are not in the store after the settle timeout", found.lost));
    }
    Ok(found)
}

async fn stored_events(conn: &mut sqlx::MySqlConnection, module: &str) -> anyhow::Result<HashSet<u128>> {
    let days: Vec<i64> =
        sqlx::query_scalar("SELECT day FROM track_days").fetch_all(&mut *conn).await.context("track_days")?;
    let mut ids = HashSet::new();
    for day in days {
        let rows = sqlx::query(&format!("SELECT id FROM events_{day} WHERE module = ?"))
            .bind(module)
            .fetch_all(&mut *conn)
            .await
            .with_context(|| format!("events_{day}"))?;
        for row in rows {
            let bytes: Vec<u8> = row.try_get(0).context("event id")?;
            let id: [u8; 16] = bytes.as_slice().try_into().context("an event id that is not 16 bytes")?;
            ids.insert(u128::from_be_bytes(id));
        }
    }
    Ok(ids)
}
