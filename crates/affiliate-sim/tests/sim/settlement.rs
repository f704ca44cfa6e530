use std::collections::{HashMap, HashSet};

use flashback_affiliate_sim::wire::{beijing_month, format_fen, parse_fen};
use flashback_affiliate_sim::{DAY_MS, DEFAULT_EPOCH_MS, SETTLEMENT_CSV_HEADER, SimClock, SimConfig};

use crate::support::spawn;

#[tokio::test]
async fn the_settlement_report_lists_the_months_settlements_with_deliberate_differences() {
    let now = DEFAULT_EPOCH_MS + 120 * DAY_MS;
    let sim = spawn(SimConfig { seed: 31, orders: 800, time: SimClock::fixed(now), ..SimConfig::default() }).await;
    let response = reqwest::get(format!("{}/sim/settlement-report?month=2025-06", sim.base_url())).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = response.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(SETTLEMENT_CSV_HEADER));

    let by_id: HashMap<String, _> = sim.orders().iter().map(|o| (o.trade_id.to_string(), o)).collect();
    let mut seen = HashSet::new();
    let mut differences = HashSet::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 6, "{line}");
        let order = by_id[fields[0]];
        assert!(seen.insert(order.trade_id));
        assert_eq!(fields[1], order.trade_parent_id.to_string());
        assert_eq!(fields[2], "3");
        let feed = order.as_of(now).unwrap();
        assert_eq!(Some(fields[4]), feed.tk_earning_time.as_deref());
        let report_fee = parse_fen(fields[3]).unwrap();
        assert_eq!(Some(report_fee), order.report_fee());
        if fields[3] != feed.pub_share_fee {
            differences.insert(order.trade_id);
        }
        let refund_fee = order.refund.filter(|r| r.succeeded).map_or(0, |r| r.refund_fee_fen);
        assert_eq!(fields[5], format_fen(refund_fee));
    }
    let settled_in_june: HashSet<u64> = sim
        .orders()
        .iter()
        .filter(|o| o.settled_at_ms().is_some_and(|at| beijing_month(at) == (2025, 6)))
        .map(|o| o.trade_id)
        .collect();
    assert_eq!(seen, settled_in_june);
    let deliberate: HashSet<u64> = sim
        .orders()
        .iter()
        .filter(|o| seen.contains(&o.trade_id) && o.report_fee_fen.is_some())
        .map(|o| o.trade_id)
        .collect();
    assert!(!deliberate.is_empty(), "the month has deliberate differences");
    assert_eq!(differences, deliberate, "exactly the deliberate ones differ from the feed");

    let bad = reqwest::get(format!("{}/sim/settlement-report?month=June", sim.base_url())).await.unwrap();
    assert_eq!(bad.status(), 400);
    sim.shutdown().await.unwrap();
}
