//! The Taobao Union (淘宝联盟) connector: polls the order feed through the Taobao Open
//! Platform (`taobao.tbk.order.details.get`) and the refund feed (`taobao.tbk.relation.refund`),
//! maps each row to a [`LineReport`] and applies it.
//!
//! - Windows of at most `window` (TOP refuses more than 3 h), each starting `overlap` before the
//!   previous one ended, so rows reported late (their modification time is earlier than the
//!   moment they become visible) are still caught; every row is applied idempotently.
//! - Two sweeps: by create time (new orders) and by modification time (status changes); the
//!   create-time sweep may return stale snapshots, which the row's modification time rejects.
//! - Pages follow `position_index`; cursors live in the store, so a restart resumes.
//! - Requests are signed as TOP does (`sign_method=hmac-sha256`: the sorted `namevalue` pairs,
//!   HMAC-SHA256 with the app secret, upper-case hex).

use std::collections::BTreeMap;
use std::sync::Arc;

use flashback_core::Money;
use flashback_core::breaker::{Breaker, BreakerSettings};
use flashback_core::rebate::lifecycle::{NetworkStatus, Report};
use flashback_core::rebate::parse_decimal_minor;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use super::ingest::{self, LineReport, Outcome};
use crate::AppState;

/// The source name rows from this connector carry.
pub const SOURCE: &str = "taobao";
const ORDER_METHOD: &str = "taobao.tbk.order.details.get";
const REFUND_METHOD: &str = "taobao.tbk.relation.refund";

/// How to reach the network and how to walk its feed.
#[derive(Debug, Clone)]
pub struct Connector {
    /// The TOP gateway (`https://eco.taobao.com/router/rest`).
    pub url: String,
    /// The app key.
    pub app_key: String,
    /// The app secret.
    pub app_secret: String,
    /// Longest window per request.
    pub window_ms: i64,
    /// How far each window reaches back into the previous one.
    pub overlap_ms: i64,
    /// Where a feed starts the first time.
    pub start_ms: i64,
    /// Rows per page.
    pub page_size: u32,
    /// Rows applied per database transaction (pages are gathered up to this).
    pub batch_rows: usize,
    /// In front of every call to the network (`affiliate` in metrics): an answer, even a TOP
    /// error, is the network up; no answer or a 5xx is it down.
    pub breaker: Arc<Breaker>,
    /// Names this connector's cursors in the store (`taobao`); another name re-reads the
    /// feeds from `start_ms` (a back-fill) without disturbing the regular poller.
    pub cursor_name: String,
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PollReport {
    /// Requests made.
    pub requests: u64,
    /// Rows read.
    pub rows: u64,
    /// Rows that changed something.
    pub applied: u64,
    /// Stale or duplicate rows.
    pub ignored: u64,
    /// Rows refused (recorded for review).
    pub rejected: u64,
}

/// The TOP signature of a request's parameters (every one but `sign`).
pub fn top_sign(params: &BTreeMap<String, String>, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("any key length"));
    for (k, v) in params {
        if k != "sign" && !k.is_empty() && !v.is_empty() {
            mac.update(k.as_bytes());
            mac.update(v.as_bytes());
        }
    }
    hex::encode_upper(mac.finalize().into_bytes())
}

/// Beijing time (UTC+8), as TOP writes times.
fn beijing() -> time::UtcOffset {
    time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC)
}

const TOP_TIME: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// `YYYY-MM-DD HH:MM:SS` in Beijing time.
pub fn format_top_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| t.to_offset(beijing()).format(TOP_TIME).unwrap_or_default())
        .unwrap_or_default()
}

/// Parses a TOP time (Beijing) into Unix milliseconds.
pub fn parse_top_time(s: &str) -> Option<i64> {
    let t = time::PrimitiveDateTime::parse(s.trim(), TOP_TIME).ok()?;
    Some(t.assume_offset(beijing()).unix_timestamp() * 1000)
}

/// A TOP error answer.
#[derive(Debug, Deserialize)]
struct TopError {
    code: Value,
    msg: Option<String>,
    sub_msg: Option<String>,
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn text<'a>(row: &'a Value, field: &str) -> Option<&'a str> {
    row.get(field).and_then(Value::as_str)
}

fn amount(row: &Value, field: &str) -> Result<Money, String> {
    match text(row, field) {
        None | Some("") => Ok(Money::ZERO),
        Some(s) => parse_decimal_minor(s).map_err(|e| format!("{field}: {e}")),
    }
}

/// Maps one order-feed row to a report; an error says why the row is refused.
pub fn order_row(row: &Value) -> Result<LineReport, String> {
    let key = row.get("trade_id").and_then(id_text).ok_or("trade_id missing")?;
    let parent = row.get("trade_parent_id").and_then(id_text).unwrap_or_else(|| key.clone());
    let code = row.get("tk_status").and_then(Value::as_i64).ok_or("tk_status missing")?;
    let status = NetworkStatus::from_tk_status(code).ok_or_else(|| format!("tk_status {code} unknown"))?;
    let modified_ms = text(row, "modified_time").and_then(parse_top_time).ok_or("modified_time missing or bad")?;
    let settled_at_ms = text(row, "tk_earning_time").and_then(parse_top_time);
    let settled = if status == NetworkStatus::Settled { amount(row, "pub_share_fee")? } else { Money::ZERO };
    let tracking = ["special_id", "relation_id"].iter().find_map(|f| row.get(*f).and_then(id_text));
    Ok(LineReport {
        source: SOURCE.into(),
        line_key: key,
        parent_key: parent,
        item_id: row.get("item_id").and_then(id_text).unwrap_or_default(),
        item_title: text(row, "item_title").unwrap_or_default().chars().take(255).collect(),
        category: text(row, "item_category_name").map(str::to_owned),
        tracking,
        buyer: None,
        report: Report {
            status,
            estimate: amount(row, "pub_share_pre_fee")?,
            settled,
            refunded: Money::ZERO,
            modified_ms,
            settled_at_ms: if status == NetworkStatus::Settled { settled_at_ms.or(Some(modified_ms)) } else { None },
        },
        paid: amount(row, "alipay_total_price")?,
        click_ms: text(row, "click_time").and_then(parse_top_time),
        paid_at_ms: text(row, "tk_paid_time").and_then(parse_top_time),
    })
}

impl Connector {
    async fn call(&self, client: &reqwest::Client, method: &str, extra: &[(&str, String)]) -> Result<Value, String> {
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        params.insert("method".into(), method.into());
        params.insert("app_key".into(), self.app_key.clone());
        params.insert("timestamp".into(), format_top_time(crate::trade::now_ms()));
        params.insert("sign_method".into(), "hmac-sha256".into());
        params.insert("format".into(), "json".into());
        params.insert("v".into(), "2.0".into());
        for (k, v) in extra {
            params.insert((*k).to_owned(), v.clone());
        }
        let sign = top_sign(&params, &self.app_secret);
        params.insert("sign".into(), sign);
        let Some(permit) = self.breaker.permit() else {
            return Err("affiliate network circuit open".into());
        };
        let res = match client.post(&self.url).form(&params).send().await {
            Ok(res) if !res.status().is_server_error() => {
                permit.success();
                res
            }
            Ok(res) => {
                permit.failure();
                return Err(format!("status {}", res.status()));
            }
            Err(e) => {
                permit.failure();
                return Err(format!("request: {e}"));
            }
        };
        let body: Value = res.json().await.map_err(|e| format!("response: {e}"))?;
        if let Some(err) = body.get("error_response") {
            let e: TopError = serde_json::from_value(err.clone()).map_err(|e| format!("error response: {e}"))?;
            return Err(format!(
                "TOP error {}: {} {}",
                e.code,
                e.msg.unwrap_or_default(),
                e.sub_msg.unwrap_or_default()
            ));
        }
        Ok(body)
    }

    /// Reads every page of one window of the order feed and applies each row, pages gathered
    /// into batches of `batch_rows` (one database transaction each), each batch prepared while
    /// the one before is written and the next page is fetched. The caller moves the window's
    /// cursor only after every batch is written.
    async fn order_window(
        &self,
        state: &AppState,
        client: &reqwest::Client,
        query_type: u8,
        from_ms: i64,
        to_ms: i64,
        report: &mut PollReport,
    ) -> Result<(), String> {
        let mut position: Option<String> = None;
        let mut pipeline = ingest::Pipeline::new(state);
        let mut lines = Vec::new();
        let mut last_page = false;
        for page in 1..=10_000u32 {
            let mut extra = vec![
                ("query_type", query_type.to_string()),
                ("start_time", format_top_time(from_ms)),
                ("end_time", format_top_time(to_ms)),
                ("page_size", self.page_size.to_string()),
                ("page_no", page.to_string()),
            ];
            if let Some(p) = &position {
                extra.push(("position_index", p.clone()));
                extra.push(("jump_type", "1".into()));
            }
            let body = self.call(client, ORDER_METHOD, &extra).await?;
            report.requests += 1;
            let data = body
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|r| r.get("data"))
                .ok_or("order feed: no data")?;
            let rows =
                data.pointer("/results/publisher_order_dto").and_then(Value::as_array).cloned().unwrap_or_default();
            for row in &rows {
                report.rows += 1;
                match order_row(row) {
                    Ok(l) => lines.push(l),
                    Err(why) => {
                        report.rejected += 1;
                        let key = row.get("trade_id").and_then(id_text);
                        ingest::reject(state, SOURCE, key.as_deref(), &why, &row.to_string()).await;
                    }
                }
            }
            position = data.get("position_index").and_then(id_text);
            last_page = !data.get("has_next").and_then(Value::as_bool).unwrap_or(false) || rows.is_empty();
            if lines.len() >= self.batch_rows || (last_page && !lines.is_empty()) {
                pipeline.push(&lines).await.map_err(|e| format!("applying a batch: {e}"))?;
                lines.clear();
            }
            if last_page {
                break;
            }
        }
        let done = pipeline.finish().await.map_err(|e| format!("applying a batch: {e}"))?;
        report.applied += done.applied as u64;
        report.ignored += done.ignored as u64;
        report.rejected += done.rejected as u64;
        if last_page { Ok(()) } else { Err("order feed: too many pages in one window".into()) }
    }

    /// Reads the refund feed for one window and applies each succeeded refund to its row.
    async fn refund_window(
        &self,
        state: &AppState,
        client: &reqwest::Client,
        from_ms: i64,
        to_ms: i64,
        report: &mut PollReport,
    ) -> Result<(), String> {
        for page in 1..=10_000u32 {
            let extra = [
                ("search_type", "5".to_owned()),
                ("start_time", format_top_time(from_ms)),
                ("end_time", format_top_time(to_ms)),
                ("page_size", self.page_size.to_string()),
                ("page_no", page.to_string()),
            ];
            let body = self.call(client, REFUND_METHOD, &extra).await?;
            report.requests += 1;
            let data = body.pointer("/tbk_relation_refund_response/result/data").ok_or("refund feed: no data")?;
            let rows = data.pointer("/results/result").and_then(Value::as_array).cloned().unwrap_or_default();
            for row in &rows {
                report.rows += 1;
                apply_refund(state, row, report).await;
            }
            let total = data.get("total_count").and_then(Value::as_u64).unwrap_or(0);
            if rows.is_empty() || u64::from(page) * u64::from(self.page_size) >= total {
                return Ok(());
            }
        }
        Err("refund feed: too many pages in one window".into())
    }

    /// Walks one feed's windows from its cursor up to `until_ms` (the network's now).
    async fn sweep(
        &self,
        state: &AppState,
        client: &reqwest::Client,
        feed: Feed,
        until_ms: i64,
        report: &mut PollReport,
    ) -> Result<(), String> {
        let cursor = format!("{}:{}", self.cursor_name, feed.name());
        let mut from = state.store.sync_cursor(&cursor).await.map_err(|e| e.to_string())?.unwrap_or(self.start_ms);
        while from < until_ms {
            let start = (from - self.overlap_ms).max(self.start_ms);
            let end = (start + self.window_ms - 1_000).min(until_ms);
            match feed {
                Feed::Created => self.order_window(state, client, 1, start, end, report).await?,
                Feed::Modified => self.order_window(state, client, 4, start, end, report).await?,
                Feed::Refunds => self.refund_window(state, client, start, end, report).await?,
            }
            state.store.advance_sync_cursor(&cursor, end).await.map_err(|e| e.to_string())?;
            if end <= from {
                break;
            }
            from = end;
        }
        Ok(())
    }

    /// One poll of every feed up to `until_ms`.
    pub async fn poll(&self, state: &AppState, client: &reqwest::Client, until_ms: i64) -> Result<PollReport, String> {
        let mut report = PollReport::default();
        for feed in [Feed::Created, Feed::Modified, Feed::Refunds] {
            self.sweep(state, client, feed, until_ms, &mut report).await?;
        }
        Ok(report)
    }
}

#[derive(Debug, Clone, Copy)]
enum Feed {
    Created,
    Modified,
    Refunds,
}

impl Feed {
    fn name(self) -> &'static str {
        match self {
            Feed::Created => "orders-by-create",
            Feed::Modified => "orders-by-modified",
            Feed::Refunds => "refunds",
        }
    }
}

async fn count(
    state: &AppState,
    line: &LineReport,
    outcome: Result<Outcome, super::RebateError>,
    row: &Value,
    report: &mut PollReport,
) {
    match outcome {
        Ok(Outcome::Applied) => report.applied += 1,
        Ok(Outcome::Ignored) => report.ignored += 1,
        Err(super::RebateError::Invalid(why)) => {
            report.rejected += 1;
            ingest::reject(state, SOURCE, Some(&line.line_key), &why, &row.to_string()).await;
        }
        Err(e) => {
            // Transient (store busy): the next overlapping window reads the row again.
            tracing::warn!(line = %line.line_key, error = %e, "rebate row not applied yet");
        }
    }
}

async fn apply_refund(state: &AppState, row: &Value, report: &mut PollReport) {
    // Only a refund that succeeded claws commission back.
    if row.get("refund_status").and_then(Value::as_i64) != Some(2) {
        report.ignored += 1;
        return;
    }
    let Some(key) = row.get("tb_trade_id").and_then(id_text) else {
        report.rejected += 1;
        ingest::reject(state, SOURCE, None, "refund without tb_trade_id", &row.to_string()).await;
        return;
    };
    let (clawback, modified) =
        match (amount(row, "tk_commission_fee_refund_pub"), text(row, "modified_time").and_then(parse_top_time)) {
            (Ok(c), Some(m)) => (c, m),
            _ => {
                report.rejected += 1;
                ingest::reject(state, SOURCE, Some(&key), "refund amount or time unreadable", &row.to_string()).await;
                return;
            }
        };
    let stored = match state.store.rebate_order(SOURCE, &key).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            // The order row has not been read yet; the refund sweep's overlap reads it again.
            report.ignored += 1;
            return;
        }
        Err(e) => {
            tracing::warn!(line = %key, error = %e, "refund not applied yet");
            return;
        }
    };
    let mut line = ingest::line_of(&stored);
    line.report.refunded = clawback;
    line.report.modified_ms = line.report.modified_ms.max(modified);
    count(state, &line, ingest::apply(state, &line).await, row, report).await;
}

impl Connector {
    /// The connector `rebate.taobao_*` describes, if polling is configured.
    pub fn from_config(c: &crate::config::RebateConfig, breaker: BreakerSettings) -> Option<Self> {
        use secrecy::ExposeSecret;
        let url = c.taobao_url.clone()?;
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Some(Self {
            url,
            app_key: c.taobao_app_key.clone(),
            app_secret: c.taobao_app_secret.as_ref().map(|s| s.expose_secret().to_owned()).unwrap_or_default(),
            window_ms: ms(c.taobao_window),
            overlap_ms: ms(c.taobao_overlap),
            start_ms: crate::trade::now_ms() - ms(c.taobao_lookback),
            page_size: 100,
            batch_rows: c.ingest_batch_rows.max(1),
            breaker: Breaker::new("affiliate", breaker),
            cursor_name: SOURCE.into(),
        })
    }
}

/// Polls the feeds every `rebate.taobao_poll_interval_ms` until shutdown, on one instance of
/// a cluster at a time (the `taobao-poller` lease: the network's API quota is per app key,
/// not per instance; see [`crate::lease`]).
pub fn spawn_poller(state: &AppState, connector: Connector) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    state.metrics.watch_breaker(&connector.breaker);
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().unwrap_or_default();
        let interval = state.config.rebate.taobao_poll_interval;
        let mut rounds = crate::lease::Rounds::new(&state, "taobao-poller", interval);
        while rounds.next().await {
            match connector.poll(&state, &client, crate::trade::now_ms()).await {
                Ok(r) if r.applied > 0 || r.rejected > 0 => tracing::info!(
                    applied = r.applied,
                    ignored = r.ignored,
                    rejected = r.rejected,
                    requests = r.requests,
                    "taobao feeds polled"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "polling the taobao feeds failed; will retry"),
            }
        }
    })
}
