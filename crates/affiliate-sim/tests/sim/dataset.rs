use std::collections::{HashMap, HashSet};

use flashback_affiliate_sim::wire::parse_fen;
use flashback_affiliate_sim::{Attribution, EventKind, PostbackConfig, SimConfig, TK_INVALID, TK_SETTLED, dataset};

#[test]
fn the_same_seed_gives_the_same_data_and_another_seed_does_not() {
    let config = SimConfig { seed: 7, orders: 400, ..SimConfig::default() };
    let first = dataset(&config);
    assert_eq!(first, dataset(&config.clone()));
    assert_eq!(first.len(), 400);
    let other = dataset(&SimConfig { seed: 8, ..config.clone() });
    assert_ne!(first, other);
    // Postbacks choose their orders from their own stream: the orders themselves do not change.
    let with_postbacks =
        dataset(&SimConfig { postback: Some(PostbackConfig::new("http://127.0.0.1:9/", "k")), ..config });
    let strip = |o: &flashback_affiliate_sim::SimOrder| {
        let mut o = o.clone();
        o.postback = false;
        o.events.iter_mut().for_each(|e| e.duplicate_postback = false);
        o
    };
    assert!(first.iter().zip(&with_postbacks).all(|(a, b)| strip(a) == strip(b)));
}

#[test]
fn every_timeline_moves_forward() {
    let config = SimConfig { seed: 3, orders: 1000, ..SimConfig::default() };
    let orders = dataset(&config);
    let mut ids = HashSet::new();
    let mut parents: HashMap<u64, Vec<&flashback_affiliate_sim::SimOrder>> = HashMap::new();
    for o in &orders {
        assert!(ids.insert(o.trade_id), "trade ids are unique");
        parents.entry(o.trade_parent_id).or_default().push(o);
        assert!(o.click_time_ms >= config.epoch_ms);
        assert!(o.click_time_ms < o.tk_create_time_ms && o.tk_create_time_ms < o.tk_paid_time_ms);
        assert_eq!(o.events[0].kind, EventKind::Paid);
        assert_eq!(o.events[0].at_ms, o.tk_paid_time_ms);
        for pair in o.events.windows(2) {
            assert!(pair[0].at_ms < pair[1].at_ms, "{o:?}");
            assert!(pair[0].visible_at_ms < pair[1].visible_at_ms);
        }
        for e in &o.events {
            assert_eq!(e.visible_at_ms, e.at_ms + o.reported_delay_ms);
            assert_eq!(e.at_ms % 1000, 0, "times are whole seconds");
        }
        let kinds: Vec<EventKind> = o.events.iter().map(|e| e.kind).collect();
        match kinds.as_slice() {
            [EventKind::Paid, EventKind::Invalidated] => assert_eq!(o.final_status(), TK_INVALID),
            [EventKind::Paid, EventKind::Received, EventKind::Settled] => assert_eq!(o.final_status(), TK_SETTLED),
            [EventKind::Paid, EventKind::Received, EventKind::Settled, EventKind::RefundOpened, outcome] => {
                assert!(matches!(outcome, EventKind::RefundSucceeded | EventKind::RefundFailed));
                let refund = o.refund.unwrap();
                assert!(refund.opened_at_ms > o.settled_at_ms().unwrap());
                assert!(refund.resolved_at_ms > refund.opened_at_ms);
                assert_eq!(refund.succeeded, *outcome == EventKind::RefundSucceeded);
            }
            other => panic!("unexpected timeline {other:?}"),
        }
        assert!(o.as_of(o.events[0].visible_at_ms - 1000).is_none(), "no row before the payment shows");
        assert_eq!(o.as_of(o.events[0].visible_at_ms).unwrap().tk_status, 12);
    }
    // Line items of one parent share its clicks, payment and tracking; one-item parents reuse the id.
    for (parent, items) in &parents {
        assert!((1..=3).contains(&items.len()));
        assert!(items.iter().all(|o| o.tk_paid_time_ms == items[0].tk_paid_time_ms));
        assert!(items.iter().all(|o| o.relation_id == items[0].relation_id && o.special_id == items[0].special_id));
        if items.len() == 1 {
            assert_eq!(items[0].trade_id, *parent);
        }
    }
    assert!(parents.values().any(|items| items.len() > 1));
}

#[test]
fn amounts_are_never_negative_and_settled_never_exceeds_the_price() {
    let orders = dataset(&SimConfig { seed: 11, orders: 1000, ..SimConfig::default() });
    let mut adjusted = 0;
    for o in &orders {
        assert!(o.alipay_total_price_fen > 0);
        assert!(o.alipay_total_price_fen <= o.item_price_fen * i64::from(o.item_num));
        assert!(o.pub_share_pre_fee_fen >= 0);
        assert!((0..=o.pub_share_pre_fee_fen).contains(&o.settled_fee_fen));
        assert!(o.settled_fee_fen <= o.alipay_total_price_fen);
        adjusted += usize::from(o.settled_at_ms().is_some() && o.settled_fee_fen != o.pub_share_pre_fee_fen);
        if let Some(r) = o.refund {
            assert!((1..=o.alipay_total_price_fen).contains(&r.refund_fee_fen));
            assert!((0..=o.settled_fee_fen).contains(&r.commission_refund_fen));
        }
        if let Some(fee) = o.report_fee() {
            assert!(fee >= 0);
        }
        let row = o.as_of(i64::MAX).unwrap();
        for money in
            [&row.alipay_total_price, &row.pay_price, &row.pub_share_pre_fee, &row.pub_share_fee, &row.item_price]
        {
            let fen = parse_fen(money).unwrap_or_else(|| panic!("{money} is money"));
            assert!(fen >= 0);
        }
        assert!(parse_fen(&row.pub_share_fee).unwrap() <= parse_fen(&row.alipay_total_price).unwrap());
        let paid = o.as_of(o.tk_paid_time_ms + o.reported_delay_ms).unwrap();
        assert_eq!(paid.pub_share_fee, "0.00", "nothing is earned before settlement");
        assert_eq!(paid.pay_price, "0.00");
        assert_eq!(row.total_commission_rate.len(), 6);
    }
    assert!(adjusted > 0, "some settled fees differ from their estimates");
}

#[test]
fn attribution_follows_the_configured_shares() {
    let config =
        SimConfig { seed: 5, orders: 3000, unattributed_share: 0.2, claimable_share: 0.1, ..SimConfig::default() };
    let orders = dataset(&config);
    let share = |f: &dyn Fn(&Attribution) -> bool| {
        orders.iter().filter(|o| f(&o.attribution)).count() as f64 / orders.len() as f64
    };
    let unknown = share(&|a| *a == Attribution::Unknown);
    let claimable = share(&|a| *a == Attribution::Claimable);
    assert!((0.15..0.25).contains(&unknown), "{unknown}");
    assert!((0.06..0.14).contains(&claimable), "{claimable}");
    let ours: HashSet<u64> =
        config.tracking_ids.iter().flat_map(|t| [t.relation_id(), t.special_id()]).flatten().collect();
    for o in &orders {
        match o.attribution {
            Attribution::User { index, tracking_id } => {
                assert_eq!(config.tracking_ids[index], tracking_id);
                assert_eq!((o.relation_id, o.special_id), (tracking_id.relation_id(), tracking_id.special_id()));
                assert_eq!(o.adzone_id, tracking_id.adzone_id());
            }
            Attribution::Unknown => {
                let id = o.relation_id.xor(o.special_id).expect("exactly one id");
                assert!(!ours.contains(&id));
            }
            Attribution::Claimable => assert_eq!((o.relation_id, o.special_id), (None, None)),
        }
    }
    assert!(orders.iter().any(|o| o.stale_on_create_query));
    assert!(orders.iter().any(|o| o.reported_delay_ms > 0));
    assert!(orders.iter().any(|o| o.report_fee_fen.is_some()));
    assert!(orders.iter().any(|o| o.order_type == "天猫") && orders.iter().any(|o| o.order_type == "淘宝"));
}
