//! The monthly settlement report: one CSV line per line item settled in a Beijing calendar
//! month, as the network sees it now, with a few fees deliberately different from the feed.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::dataset::SimOrder;
use crate::server::SimState;
use crate::wire::{beijing_month, format_beijing, format_fen};

/// The report's header line.
pub const SETTLEMENT_CSV_HEADER: &str = "trade_id,trade_parent_id,tk_status,pub_share_fee,tk_earning_time,refund_fee";

/// One line of the settlement report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementLine {
    /// The line item.
    pub trade_id: u64,
    /// Its parent order.
    pub trade_parent_id: u64,
    /// Its tk_status now (3).
    pub tk_status: u8,
    /// The fee the network pays, fen: the settled fee, or for a few items a deliberately
    /// different one ([`SimOrder::report_fee_fen`]).
    pub pub_share_fee_fen: i64,
    /// When it settled (Unix ms).
    pub tk_earning_time_ms: i64,
    /// Refunded to the buyer by a refund that has succeeded by now, fen (0 otherwise).
    pub refund_fee_fen: i64,
}

/// The report for Beijing month `year-month` at `now_ms`: items whose settlement is visible by
/// then, ordered by settlement time then trade id.
pub fn settlement_report(orders: &[SimOrder], year: i32, month: u8, now_ms: i64) -> Vec<SettlementLine> {
    let mut lines: Vec<SettlementLine> = orders
        .iter()
        .filter_map(|order| {
            let snapshot = order.snapshot(now_ms, false)?;
            let earning_ms = snapshot.earning_ms?;
            if beijing_month(earning_ms) != (year, month) {
                return None;
            }
            let refund_fee_fen = match (order.refund_snapshot(now_ms), order.refund.as_ref()) {
                (Some(r), Some(refund)) if r.status == crate::rows::REFUND_SUCCEEDED => refund.refund_fee_fen,
                _ => 0,
            };
            Some(SettlementLine {
                trade_id: order.trade_id,
                trade_parent_id: order.trade_parent_id,
                tk_status: snapshot.status,
                pub_share_fee_fen: order.report_fee().unwrap_or(0),
                tk_earning_time_ms: earning_ms,
                refund_fee_fen,
            })
        })
        .collect();
    lines.sort_by_key(|line| (line.tk_earning_time_ms, line.trade_id));
    lines
}

/// The report as CSV: [`SETTLEMENT_CSV_HEADER`], then one line per item, `\n`-terminated.
/// Money is yuan with two decimals, times Beijing `YYYY-MM-DD HH:MM:SS`; no field needs quoting.
pub fn settlement_csv(lines: &[SettlementLine]) -> String {
    let mut csv = String::with_capacity(64 * (lines.len() + 1));
    csv.push_str(SETTLEMENT_CSV_HEADER);
    csv.push('\n');
    for line in lines {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{}",
            line.trade_id,
            line.trade_parent_id,
            line.tk_status,
            format_fen(line.pub_share_fee_fen),
            format_beijing(line.tk_earning_time_ms),
            format_fen(line.refund_fee_fen),
        );
    }
    csv
}

/// Parses `YYYY-MM` into `(year, month)`.
pub fn parse_month(text: &str) -> Option<(i32, u8)> {
    let (year, month) = text.split_once('-')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    let month: u8 = month.parse().ok()?;
    (1..=12).contains(&month).then_some((year.parse().ok()?, month))
}

#[derive(Debug, Deserialize)]
pub(crate) struct MonthQuery {
    month: Option<String>,
}

/// `GET /sim/settlement-report?month=YYYY-MM`.
pub(crate) async fn report(State(state): State<Arc<SimState>>, Query(query): Query<MonthQuery>) -> Response {
    let Some((year, month)) = query.month.as_deref().and_then(parse_month) else {
        return (StatusCode::BAD_REQUEST, "month must be YYYY-MM\n").into_response();
    };
    let lines = settlement_report(&state.orders, year, month, state.clock.now_ms());
    let filename = format!("attachment; filename=\"settlement-{year:04}-{month:02}.csv\"");
    (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, filename)],
        settlement_csv(&lines),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_strictly() {
        assert_eq!(parse_month("2025-06"), Some((2025, 6)));
        assert_eq!(parse_month("2025-13"), None);
        assert_eq!(parse_month("2025-6"), None);
        assert_eq!(parse_month("June"), None);
    }
}
