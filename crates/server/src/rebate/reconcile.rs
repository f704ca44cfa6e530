//! Reconciliation against a network's monthly settlement report: what the network says it
//! settled with us in a month (Beijing time), line by line, against what our rows recorded.
//!
//! `POST /api/v1/admin/rebate-reconciliations?month=YYYY-MM` with the report as CSV
//! (`trade_id,trade_parent_id,tk_status,pub_share_fee,tk_earning_time,refund_fee`) answers the
//! per-order differences and the totals, and sets `flashback_rebate_reconciliation_*` in
//! /metrics. Kinds: `amount` (both have it, the fees differ), `missing_here` (the network
//! settled a line we never recorded as settled), `missing_there` (we recorded a settlement in
//! that month the network does not report).

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::taobao::{SOURCE, parse_top_time};
use super::views::MonthQuery;
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::Query;

const HEADER: &str = "trade_id,trade_parent_id,tk_status,pub_share_fee,tk_earning_time,refund_fee";

/// One line that does not agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Difference {
    pub line_key: String,
    /// `amount`, `missing_here` or `missing_there`.
    pub kind: &'static str,
    /// Our settled commission, minor units (absent if we have none).
    pub ours_minor: Option<i64>,
    /// The network's, minor units (absent if it reports none).
    pub theirs_minor: Option<i64>,
}

/// The outcome of one reconciliation.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Reconciliation {
    pub month: String,
    /// Lines in the network's report.
    pub reported_lines: usize,
    /// Lines that agree.
    pub matched: usize,
    /// Every line that does not.
    pub differences: Vec<Difference>,
    /// The network's total, minor units.
    pub theirs_total_minor: i64,
    /// Ours for the same month, minor units.
    pub ours_total_minor: i64,
}

/// `[start, end)` of a Beijing-time month in Unix milliseconds.
pub fn month_bounds(month: &str) -> Option<(i64, i64)> {
    let (y, m) = month.split_once('-')?;
    let (y, m): (i32, u8) = (y.parse().ok()?, m.parse().ok()?);
    if month.len() != 7 || !(1..=12).contains(&m) || !(1970..=9998).contains(&y) {
        return None;
    }
    let start = |y: i32, m: u8| {
        let first = format!("{y:04}-{m:02}-01 00:00:00");
        parse_top_time(&first)
    };
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Some((start(y, m)?, start(ny, nm)?))
}

/// Parses the report: `trade_id` → the settled fee in minor units.
pub fn parse_report(csv: &str) -> Result<BTreeMap<String, i64>, String> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    if lines.next().map(str::trim) != Some(HEADER) {
        return Err(format!("the first line must be `{HEADER}`"));
    }
    let mut out = BTreeMap::new();
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [trade, _, _, fee, _, _] = fields[..] else {
            return Err(format!("line {}: expected 6 fields", n + 2));
        };
        if trade.is_empty() || trade.len() > 64 {
            return Err(format!("line {}: bad trade_id", n + 2));
        }
        let fee = flashback_core::rebate::parse_decimal_minor(fee).map_err(|e| format!("line {}: {e}", n + 2))?;
        if out.insert(trade.to_owned(), fee.minor()).is_some() {
            return Err(format!("line {}: trade_id {trade} twice", n + 2));
        }
    }
    Ok(out)
}

/// Compares the report with our rows settled in `month` (`[from, to)`, from [`month_bounds`]).
pub async fn reconcile(
    state: &AppState,
    month: &str,
    (from, to): (i64, i64),
    theirs: &BTreeMap<String, i64>,
) -> Result<Reconciliation, Problem> {
    let mut ours: BTreeMap<String, i64> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = state.store.rebate_orders_page(after.clone(), 1_000).await.map_err(|e| Problem::from_store(&e))?;
        for r in &page {
            if r.source == SOURCE && r.settled_at_ms.is_some_and(|at| at >= from && at < to) {
                ours.insert(r.line_key.clone(), r.settled_minor);
            }
        }
        match page.last() {
            Some(last) if page.len() == 1_000 => after = Some((last.source.clone(), last.line_key.clone())),
            _ => break,
        }
    }
    let mut report = Reconciliation {
        month: month.to_owned(),
        reported_lines: theirs.len(),
        theirs_total_minor: theirs.values().sum(),
        ours_total_minor: ours.values().sum(),
        ..Reconciliation::default()
    };
    for (key, fee) in theirs {
        match ours.get(key) {
            Some(mine) if mine == fee => report.matched += 1,
            Some(mine) => report.differences.push(Difference {
                line_key: key.clone(),
                kind: "amount",
                ours_minor: Some(*mine),
                theirs_minor: Some(*fee),
            }),
            None => {
                // Settled by the network but not recorded as settled here (yet, or not that month).
                let row = state.store.rebate_order(SOURCE, key).await.map_err(|e| Problem::from_store(&e))?;
                report.differences.push(Difference {
                    line_key: key.clone(),
                    kind: "missing_here",
                    ours_minor: row.map(|r| r.settled_minor),
                    theirs_minor: Some(*fee),
                });
            }
        }
    }
    for (key, mine) in &ours {
        if !theirs.contains_key(key) {
            report.differences.push(Difference {
                line_key: key.clone(),
                kind: "missing_there",
                ours_minor: Some(*mine),
                theirs_minor: None,
            });
        }
    }
    let m = &state.metrics;
    for kind in ["amount", "missing_here", "missing_there"] {
        let n = report.differences.iter().filter(|d| d.kind == kind).count();
        m.rebate_reconciliation
            .get_or_create(&crate::metrics::ReasonLabel { reason: kind })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    m.rebate_reconciliation_gap.set(report.theirs_total_minor - report.ours_total_minor);
    Ok(report)
}

/// Reconcile a month against the network's settlement report (admins; the body is the CSV).
#[utoipa::path(post, path = "/api/v1/admin/rebate-reconciliations", tag = "rebates", security(("bearer" = [])),
    params(MonthQuery), request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = Reconciliation), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<MonthQuery>,
    body: String,
) -> Result<axum::Json<Reconciliation>, Problem> {
    caller.require(&[flashback_core::Role::Admin])?;
    // The query before the body, as every route checks them.
    let bounds = month_bounds(&q.month)
        .ok_or_else(|| Problem::bad_request("invalid_query", "month: YYYY-MM, 1970-01 to 9998-12"))?;
    let theirs = parse_report(&body).map_err(Problem::invalid)?;
    Ok(axum::Json(reconcile(&state, &q.month, bounds, &theirs).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_beijing_months() {
        let (from, to) = month_bounds("2026-01").expect("month");
        assert_eq!(to - from, 31 * 24 * 3600 * 1000);
        // 2026-01-01 00:00 in Beijing is 2025-12-31 16:00 UTC.
        assert_eq!(from, 1_767_196_800_000);
        assert!(month_bounds("2026-13").is_none() && month_bounds("2026-1").is_none() && month_bounds("x").is_none());
        assert_eq!(month_bounds("2026-12").map(|(f, t)| t > f), Some(true));
    }

    #[test]
    fn reports_parse_exactly_or_not_at_all() {
        let ok = format!("{HEADER}\n11,10,3,1.20,2026-01-05 10:00:00,0.00\n12,10,3,0.05,2026-01-06 10:00:00,0.00\n");
        let parsed = parse_report(&ok).expect("parses");
        assert_eq!(parsed.get("11"), Some(&120));
        assert_eq!(parsed.get("12"), Some(&5));
        assert!(parse_report("nope\n1,2,3").is_err());
        assert!(parse_report(&format!("{HEADER}\n11,10,3,1.234,x,0")).is_err());
        assert!(parse_report(&format!("{HEADER}\n11,10,3\n")).is_err());
        assert!(parse_report(&format!("{HEADER}\n11,10,3,1,x,0\n11,10,3,1,x,0\n")).is_err());
    }
}
