//! After the storm: every accepted ticket must become exactly one order, fetchable by its buyer
//! at the sale price; no unit sold twice, no buyer over the limit. Then, for a self-started
//! server, `flashback audit flash-sale` must agree.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;

use crate::api::{Api, api_error};
use crate::load::Accepted;
use crate::server::ServerSpec;
use crate::setup::{Fixture, SALE_PRICE_MINOR};

/// Checks in flight at once.
const CONCURRENCY: usize = 32;
/// Problems listed in the report at most.
const MAX_PROBLEMS: usize = 20;

/// What the checks found.
#[derive(Debug, Default, Serialize)]
pub struct Verification {
    /// Tickets whose order exists (`ordered`).
    pub settled: usize,
    /// Tickets still `queued` when none had settled for the settle timeout.
    pub unsettled: usize,
    /// Accepted tickets that are 404, `released`, or never settled.
    pub lost_reservations: usize,
    /// Units accepted beyond the stock (or a negative `remaining`).
    pub oversold: i64,
    /// Buyers holding more accepted units than the per-user limit.
    pub over_limit_users: usize,
    /// Orders made twice: two tickets naming one order, or more orders of the product than
    /// tickets in a buyer's own order list.
    pub duplicate_orders: usize,
    /// Orders that are missing for their buyer or do not match their ticket (product,
    /// quantity, sale price, buyer) or are cancelled.
    pub bad_orders: usize,
    /// The sale's `remaining` after the storm (None when the view could not be read).
    pub sale_remaining: Option<i64>,
    /// (stock − remaining) − accepted units: units the store holds that no 202 told about
    /// (positive: fine only when requests failed in transit) or accepted units it does not hold.
    pub taken_mismatch: i64,
    /// How long settling took.
    pub settle_ms: u64,
    /// The first few problems, for people.
    pub problems: Vec<String>,
}

impl Verification {
    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }
}

enum TicketState {
    Ordered(String),
    Queued,
    Lost(String),
}

async fn ticket_state(api: &Api, id: &str, token: &str) -> TicketState {
    match api.get::<Value>(&format!("api/v1/flash-sales/tickets/{id}"), Some(token)).await {
        Ok(v) => match (v.get("status").and_then(Value::as_str), v.get("order_id").and_then(Value::as_str)) {
            (Some("ordered"), Some(order)) => TicketState::Ordered(order.to_owned()),
            (Some("queued"), _) => TicketState::Queued,
            (status, _) => TicketState::Lost(format!("ticket {id} is {}", status.unwrap_or("unreadable"))),
        },
        Err(e) if api_error(&e).is_some_and(|a| a.status == StatusCode::NOT_FOUND) => {
            TicketState::Lost(format!("ticket {id} is 404 for its buyer"))
        }
        // Transient: look again next round.
        Err(_) => TicketState::Queued,
    }
}

/// Runs the HTTP checks on the storm's accepted tickets.
pub async fn verify(
    api: &Api,
    fixture: &Fixture,
    accepted: &[Accepted],
    stock: i64,
    per_user_limit: i64,
    request_errors: u64,
    settle_timeout: Duration,
) -> anyhow::Result<Verification> {
    let mut v = Verification::default();
    let started = Instant::now();
    let token = |buyer: usize| fixture.buyers[buyer].token.as_str();

    // Every ticket until it is ordered, lost, or no ticket has settled for `settle_timeout`
    // (a storm of a million purchases takes minutes to become orders; a stuck worker does not
    // make progress). Orders are made roughly in acceptance order, so a round stops at the
    // first batch that is all still queued (sparing the server's order worker our polling);
    // the last round, at the deadline, looks at all.
    let mut pending: Vec<&Accepted> = accepted.iter().collect();
    let mut orders: Vec<(&Accepted, String)> = Vec::with_capacity(accepted.len());
    let mut last_progress = Instant::now();
    while !pending.is_empty() {
        let last_round = last_progress.elapsed() > settle_timeout;
        let mut still = Vec::new();
        let mut batches = pending.chunks(CONCURRENCY);
        for batch in batches.by_ref() {
            let states: Vec<TicketState> =
                futures::future::join_all(batch.iter().map(|a| ticket_state(api, &a.ticket.id, token(a.ticket.buyer))))
                    .await;
            let mut progressed = false;
            for (&a, state) in batch.iter().zip(states) {
                match state {
                    TicketState::Ordered(order) => {
                        progressed = true;
                        orders.push((a, order));
                    }
                    TicketState::Queued => still.push(a),
                    TicketState::Lost(why) => {
                        progressed = true;
                        v.lost_reservations += 1;
                        v.problem(why);
                    }
                }
            }
            if progressed {
                last_progress = Instant::now();
            } else if !last_round {
                break;
            }
        }
        still.extend(batches.flatten().copied());
        pending = still;
        if !pending.is_empty() {
            if last_round {
                v.unsettled = pending.len();
                v.lost_reservations += pending.len();
                v.problem(format!("{} tickets still queued, none settled for {settle_timeout:?}", pending.len()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    v.settled = orders.len();
    v.settle_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

    // Units and limits, from what the clients were told.
    let units: i64 = accepted.iter().map(|a| a.ticket.quantity).sum();
    v.oversold = (units - stock).max(0);
    let mut per_buyer: HashMap<usize, (i64, usize)> = HashMap::new();
    for a in accepted {
        let e = per_buyer.entry(a.ticket.buyer).or_default();
        e.0 += a.ticket.quantity;
        e.1 += 1;
    }
    v.over_limit_users = per_buyer.values().filter(|(n, _)| *n > per_user_limit).count();
    if v.over_limit_users > 0 {
        v.problem(format!("{} buyers hold more than {per_user_limit} units", v.over_limit_users));
    }

    // One order per ticket, each the buyer's, at the sale price.
    let mut by_order: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, order) in &orders {
        *by_order.entry(order.as_str()).or_default() += 1;
    }
    for (order, n) in &by_order {
        if *n > 1 {
            v.duplicate_orders += n - 1;
            v.problem(format!("order {order} is named by {n} tickets"));
        }
    }
    let checks: Vec<Option<String>> = futures::stream::iter(orders.iter())
        .map(|(a, order)| check_order(api, fixture, a, order))
        .buffered(CONCURRENCY)
        .collect()
        .await;
    for problem in checks.into_iter().flatten() {
        v.bad_orders += 1;
        v.problem(problem);
    }
    let listed: Vec<(usize, anyhow::Result<usize>)> = futures::stream::iter(per_buyer.iter())
        .map(|(&buyer, _)| async move { (buyer, orders_of_product(api, fixture, buyer).await) })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    for (buyer, found) in listed {
        let tickets = per_buyer.get(&buyer).map_or(0, |e| e.1);
        match found {
            Ok(n) if n > tickets => {
                v.duplicate_orders += n - tickets;
                v.problem(format!(
                    "buyer {} lists {n} orders of the product for {tickets} tickets",
                    buyer_id(fixture, buyer)
                ));
            }
            Ok(_) => {}
            Err(e) => v.problem(format!("listing the orders of buyer {}: {e:#}", buyer_id(fixture, buyer))),
        }
    }

    // The sale's own count, once its one-second view cache has turned over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    match api.get::<Value>(&format!("api/v1/flash-sales/{}", fixture.sale_id), None).await {
        Ok(sale) => {
            let remaining = sale.get("remaining").and_then(Value::as_i64);
            v.sale_remaining = remaining;
            let ended = sale.get("status").and_then(Value::as_str) == Some("ended");
            if let (Some(r), false) = (remaining, ended) {
                if r < 0 {
                    v.oversold = v.oversold.max(-r);
                }
                v.taken_mismatch = (stock - r) - units;
                if v.taken_mismatch < 0 || (v.taken_mismatch > 0 && request_errors == 0) {
                    v.problem(format!(
                        "the sale holds {} units but {units} were accepted ({request_errors} requests failed)",
                        stock - r
                    ));
                }
            }
        }
        Err(e) => v.problem(format!("reading the sale: {e:#}")),
    }
    Ok(v)
}

fn buyer_id(fixture: &Fixture, buyer: usize) -> &str {
    &fixture.buyers[buyer].id
}

/// `None` when the order is the ticket's; otherwise what is wrong with it.
async fn check_order(api: &Api, fixture: &Fixture, a: &Accepted, order: &str) -> Option<String> {
    let buyer = &fixture.buyers[a.ticket.buyer];
    let o: Value = match api.get(&format!("api/v1/orders/{order}"), Some(&buyer.token)).await {
        Ok(o) => o,
        Err(e) => return Some(format!("order {order} of ticket {}: {e:#}", a.ticket.id)),
    };
    let line = o.pointer("/lines/0");
    let ok = o.get("buyer_id").and_then(Value::as_str) == Some(buyer.id.as_str())
        && o.get("lines").and_then(Value::as_array).map(Vec::len) == Some(1)
        && line.and_then(|l| l.get("product_id")).and_then(Value::as_str) == Some(fixture.product_id.as_str())
        && line.and_then(|l| l.get("quantity")).and_then(Value::as_i64) == Some(a.ticket.quantity)
        && line.and_then(|l| l.get("unit_price_minor")).and_then(Value::as_i64) == Some(SALE_PRICE_MINOR)
        && o.get("flash_ticket_id").and_then(Value::as_str) == Some(a.ticket.id.as_str())
        && !matches!(o.get("state").and_then(Value::as_str), Some("cancelled" | "refunded"));
    (!ok).then(|| format!("order {order} does not match ticket {}: {o}", a.ticket.id))
}

/// How many of the buyer's own orders (first page of 100) are for the bench product.
async fn orders_of_product(api: &Api, fixture: &Fixture, buyer: usize) -> anyhow::Result<usize> {
    let page: Value = api.get("api/v1/orders?limit=100", Some(&fixture.buyers[buyer].token)).await?;
    let items = page.get("items").and_then(Value::as_array).context("no items in the order page")?;
    Ok(items
        .iter()
        .filter(|o| o.pointer("/lines/0/product_id").and_then(Value::as_str) == Some(fixture.product_id.as_str()))
        .count())
}

/// The outcome of `flashback audit flash-sale`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Audit {
    /// Exit 0; its JSON report.
    Passed { report: Value },
    /// Non-zero exit or not runnable; its output.
    Failed { output: String },
    /// Not run (against a deployment the bench did not start).
    Skipped { why: String },
}

impl Audit {
    /// Passed or skipped.
    pub fn ok(&self) -> bool {
        !matches!(self, Audit::Failed { .. })
    }
}

/// Runs `flashback audit flash-sale <sale>` with the server's data dir and environment.
pub async fn audit(spec: &ServerSpec, sale_id: &str) -> Audit {
    let mut cmd = spec.command();
    cmd.arg("audit").arg("flash-sale").arg(sale_id).kill_on_drop(true);
    let output = match tokio::time::timeout(Duration::from_secs(120), cmd.output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Audit::Failed { output: format!("could not run {}: {e}", spec.binary.display()) },
        Err(_) => return Audit::Failed { output: "the audit did not finish within 120 s".into() },
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        let report = serde_json::from_str(&stdout).unwrap_or_else(|_| Value::String(stdout.trim().to_owned()));
        Audit::Passed { report }
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Audit::Failed { output: format!("exit {}\n{}\n{}", output.status, stdout.trim(), stderr.trim()) }
    }
}
