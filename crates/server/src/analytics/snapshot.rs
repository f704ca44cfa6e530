//! The live snapshot: everything the dashboard shows, computed once per tick for every client.
//!
//! Sources: today's totals, the last hour's minutes and the top SKUs from the rollups; the last
//! minute of seconds and the tracking and admission counters from every instance's figures in
//! Redis when scaled out ([`super::cluster`]), else from this instance's memory and metrics;
//! open flash sales and their taken units from the sales and their reservations (durable,
//! exact); pending rebates from the ledger's pending balances.

use std::collections::BTreeMap;

use flashback_core::PageLimit;
use flashback_store::{MinuteRollup, SaleState, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

use super::seconds::SecondPoint;
use super::views::{self, TopSku};
use crate::AppState;

/// How many top SKUs, flash sales and pending-rebate users the snapshot carries.
const TOP: u32 = 10;
const MINUTE: i64 = 60_000;

/// One open flash sale's stock.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlashPanel {
    /// The sale.
    pub sale_id: String,
    /// The product on sale.
    pub product_id: String,
    /// Its SKU ("" if the product is gone).
    pub sku: String,
    /// Price during the sale, minor units.
    pub sale_price_minor: i64,
    /// Units carved out for the sale.
    pub stock: i64,
    /// Units taken by reservations that were not released.
    pub sold: i64,
    /// Units left.
    pub remaining: i64,
    /// `sold / stock` in basis points (10 000 = sold out).
    pub sell_through_bp: i64,
    /// Selling starts and ends, Unix ms.
    pub starts_at_ms: i64,
    /// See `starts_at_ms`.
    pub ends_at_ms: i64,
}

/// A user's pending rebate.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PendingUser {
    /// The user.
    pub user_id: String,
    /// Their username (absent if the account is gone).
    pub username: Option<String>,
    /// Pending (estimated, not yet available), minor units.
    pub pending_minor: i64,
}

/// Pending rebates.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Pending {
    /// Across all users, minor units.
    pub total_minor: i64,
    /// The users with the most pending, largest first.
    pub top: Vec<PendingUser>,
}

/// Everything the dashboard shows, as pushed on `/api/v1/live`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Snapshot {
    /// When it was computed, Unix ms.
    pub at_ms: i64,
    /// Start of today (the business day, `analytics.utc_offset_minutes`), Unix ms.
    pub day_start_ms: i64,
    /// Today's totals so far.
    #[schema(value_type = Object)]
    pub today: MinuteRollup,
    /// The last 60 seconds, oldest first: the whole cluster's when `scope` is `cluster`.
    pub seconds: Vec<SecondPoint>,
    /// The last 60 minutes, oldest first, quiet minutes as zeros.
    #[schema(value_type = Vec<Object>)]
    pub minutes: Vec<MinuteRollup>,
    /// Today's best-selling products by value.
    pub top_skus: Vec<TopSku>,
    /// Open flash sales, newest first.
    pub flash_sales: Vec<FlashPanel>,
    /// Pending rebates.
    pub pending_rebates: Pending,
    /// Tracking events by outcome (`accepted`, `bot`, …, plus `written` and `backlog`).
    pub tracking: BTreeMap<String, u64>,
    /// Flash-sale purchase attempts by outcome (`accepted` or the reason refused).
    pub admission: BTreeMap<String, u64>,
    /// Order events this instance counted since it started, and redeliveries it ignored.
    pub consumer: Consumed,
    /// Whose per-second figures and counters these are: `cluster` (every instance's, summed
    /// in Redis) or `instance` (this one's: embedded, or Redis did not answer).
    pub scope: &'static str,
}

/// The consumer's own counts.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Consumed {
    /// Events counted.
    pub applied: u64,
    /// Deliveries of events counted before.
    pub duplicates: u64,
}

/// Minutes `[from, to)` with quiet ones filled in as zeros. The caller bounds the range (one
/// point a minute); the last minute before `i64::MAX` ends it in any case.
pub fn fill_minutes(rows: Vec<MinuteRollup>, from_ms: i64, to_ms: i64) -> Vec<MinuteRollup> {
    let mut rows = rows.into_iter().peekable();
    let mut out = Vec::new();
    let mut next = Some(from_ms.div_euclid(MINUTE) * MINUTE);
    while let Some(m) = next.filter(|m| *m < to_ms) {
        match rows.peek() {
            Some(r) if r.minute_ms == m => out.extend(rows.next()),
            _ => out.push(MinuteRollup { minute_ms: m, ..MinuteRollup::default() }),
        }
        next = m.checked_add(MINUTE);
    }
    out
}

/// Open flash sales with their stock, newest first.
pub async fn flash_panels(state: &AppState, limit: u32) -> Result<Vec<FlashPanel>, StoreError> {
    let limit = PageLimit::try_from(i64::from(limit)).unwrap_or_default();
    let sales = state.store.flash_sales(Some(SaleState::Open), None, limit).await?;
    let mut out = Vec::with_capacity(sales.len());
    for s in sales {
        let sold = crate::flash_sale::taken_units(state, &s).await?;
        let sku = state.store.product(s.product_id).await?.map(|p| p.sku.as_str().to_owned()).unwrap_or_default();
        out.push(FlashPanel {
            sale_id: s.id.to_string(),
            product_id: s.product_id.to_string(),
            sku,
            sale_price_minor: s.sale_price.minor(),
            stock: s.stock,
            sold,
            remaining: (s.stock - sold).max(0),
            sell_through_bp: if s.stock > 0 { sold.saturating_mul(10_000) / s.stock } else { 0 },
            starts_at_ms: s.starts_at_ms,
            ends_at_ms: s.ends_at_ms,
        });
    }
    Ok(out)
}

/// Pending rebates: the total and the `limit` largest.
pub async fn pending(state: &AppState, limit: u32) -> Result<Pending, StoreError> {
    let (total_minor, top) = state.store.pending_rebates(limit).await?;
    let users = futures::future::try_join_all(top.iter().map(|(u, _)| state.store.user(*u))).await?;
    let top = top
        .into_iter()
        .zip(users)
        .map(|((u, p), user)| PendingUser {
            user_id: u.to_string(),
            username: user.map(|user| user.username.as_str().to_owned()),
            pending_minor: p,
        })
        .collect();
    Ok(Pending { total_minor, top })
}

/// Samples of `family` (`name{reason="x"} v`) in the Prometheus text, by reason. Counters
/// and gauges here are integers; anything else (a negative gauge) is left out.
fn by_reason(text: &str, family: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{family}{{reason=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (reason, value) = rest.split_once("\"} ")?;
            Some((reason.to_owned(), value.trim().parse::<u64>().ok()?))
        })
        .collect()
}

fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// Computes the snapshot now.
pub async fn build(state: &AppState) -> Result<Snapshot, StoreError> {
    let live = &state.analytics;
    let now = crate::trade::now_ms();
    let day_start_ms = live.day_start(now);
    let hour_ago = (now - 59 * MINUTE).div_euclid(MINUTE) * MINUTE;
    let today = state.store.rollup_total(day_start_ms, now + 1).await?;
    let minutes = fill_minutes(state.store.rollup_minutes(hour_ago, now + 1).await?, hour_ago, now + 1);
    let top_skus = views::top_skus(state.store.top_skus(day_start_ms, now + 1, TOP).await?);
    let flash_sales = flash_panels(state, TOP).await?;
    let pending_rebates = pending(state, TOP).await?;
    let metrics = state.metrics.encode();
    let mut counters = local_counters(&metrics);
    let mut seconds = live.seconds().series(now - 59_000, now + 1);
    let mut scope = "instance";
    if let Some(cluster) = live.cluster() {
        match tokio::try_join!(cluster.seconds(now - 59_000, now + 1), cluster.counters()) {
            Ok((all_seconds, all_counters)) => {
                (seconds, counters, scope) = (all_seconds, all_counters, "cluster");
            }
            Err(e) => tracing::debug!(error = %e, "cluster figures unavailable; showing this instance's"),
        }
    }
    let (applied, duplicates) = live.consumed();
    Ok(Snapshot {
        at_ms: now,
        day_start_ms,
        today: MinuteRollup { minute_ms: day_start_ms, ..today },
        seconds,
        minutes,
        top_skus,
        flash_sales,
        pending_rebates,
        tracking: counters.remove("tracking").unwrap_or_default(),
        admission: counters.remove("admission").unwrap_or_default(),
        consumer: Consumed { applied, duplicates },
        scope,
    })
}

/// This instance's tracking and admission counters, from its metrics text.
pub fn local_counters(metrics: &str) -> super::cluster::Counters {
    let mut tracking = by_reason(metrics, "flashback_track_events_total");
    tracking.insert("written".into(), sample(metrics, "flashback_track_written_total"));
    tracking.insert("backlog".into(), sample(metrics, "flashback_track_backlog"));
    let admission = by_reason(metrics, "flashback_flash_admission_total");
    [("tracking".to_owned(), tracking), ("admission".to_owned(), admission)].into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_read_from_the_exposition() {
        let text = "# HELP x\nflashback_flash_admission_total{reason=\"sold_out\"} 3\n\
                    flashback_flash_admission_total{reason=\"accepted\"} 10\nflashback_track_backlog 4\n";
        let m = by_reason(text, "flashback_flash_admission_total");
        assert_eq!((m["sold_out"], m["accepted"], m.len()), (3, 10, 2));
        assert_eq!(sample(text, "flashback_track_backlog"), 4);
    }

    #[test]
    fn minutes_up_to_the_largest_time_end_instead_of_wrapping() {
        // Three minutes back from the end, and the start of the minute that holds the first.
        let minutes: Vec<i64> =
            fill_minutes(vec![], i64::MAX - 3 * MINUTE, i64::MAX).iter().map(|m| m.minute_ms).collect();
        assert_eq!(minutes.len(), 4, "{minutes:?}");
        assert!(minutes.windows(2).all(|w| w[1] - w[0] == MINUTE), "{minutes:?}");
    }

    #[test]
    fn quiet_minutes_are_filled_with_zeros() {
        let busy = MinuteRollup { minute_ms: 120_000, paid_orders: 2, ..Default::default() };
        let filled = fill_minutes(vec![busy], 60_000, 240_000);
        assert_eq!(
            filled.iter().map(|m| (m.minute_ms, m.paid_orders)).collect::<Vec<_>>(),
            [(60_000, 0), (120_000, 2), (180_000, 0)]
        );
    }
}
