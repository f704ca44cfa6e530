use flashback_affiliate_sim::wire::format_beijing;
use flashback_affiliate_sim::{
    HOUR_MS, REFUND_FAILED, REFUND_OPEN, REFUND_SUCCEEDED, RELATION_REFUND_METHOD, RefundRow,
};
use serde_json::{Value, json};

use crate::support::{LATE, Top, spawn, three_hour_config};

fn refund_rows(answer: &Value) -> Vec<RefundRow> {
    let data = &answer["tbk_relation_refund_response"]["result"]["data"];
    assert!(data.is_object(), "{answer}");
    serde_json::from_value(data["results"]["result"].clone()).unwrap()
}

#[tokio::test]
async fn refunds_are_served_by_modified_time_and_move_from_open_to_decided() {
    let config = three_hour_config(21, 300, LATE);
    let clock = config.time.clone();
    let sim = spawn(config).await;
    let top = Top::new(&sim);
    let refunded: Vec<_> = sim.orders().iter().filter(|o| o.refund.is_some()).cloned().collect();
    assert!(refunded.len() >= 5, "the data set has refunds ({})", refunded.len());

    for order in &refunded {
        let refund = order.refund.unwrap();
        // TOP's shape: options in one JSON parameter, search_type 5 = modified time.
        let option = |start_ms: i64| {
            json!({"search_type": 5, "start_time": format_beijing(start_ms), "end_time": format_beijing(start_ms + 2 * HOUR_MS), "page_size": 100, "page_no": 1, "refund_type": 1})
                .to_string()
        };
        let answer =
            top.call(RELATION_REFUND_METHOD, &[("search_option", option(refund.resolved_at_ms - HOUR_MS))]).await;
        let rows = refund_rows(&answer);
        let row = rows.iter().find(|r| r.tb_trade_id == order.trade_id).expect("found by modified time");
        assert_eq!(Some(row), order.refund_as_of(LATE).as_ref());
        assert_eq!(row.refund_status, if refund.succeeded { REFUND_SUCCEEDED } else { REFUND_FAILED });
        assert_eq!(row.modified_time, format_beijing(refund.resolved_at_ms));
        assert_eq!(row.tk_refund_suit_time.as_deref(), Some(format_beijing(refund.resolved_at_ms).as_str()));
        let data = &answer["tbk_relation_refund_response"]["result"]["data"];
        assert_eq!(data["total_count"].as_u64().unwrap(), u64::try_from(rows.len()).unwrap());
    }

    // While open, the refund shows status 4 and the order row carries refund_tag 1.
    let order = &refunded[0];
    let refund = order.refund.unwrap();
    clock.set_ms(refund.opened_at_ms + order.reported_delay_ms);
    let answer = top
        .call(
            RELATION_REFUND_METHOD,
            &[
                ("search_type", "1".into()),
                ("start_time", format_beijing(refund.opened_at_ms - HOUR_MS)),
                ("end_time", format_beijing(refund.opened_at_ms + HOUR_MS)),
            ],
        )
        .await;
    let row = refund_rows(&answer).into_iter().find(|r| r.tb_trade_id == order.trade_id).expect("open refund");
    assert_eq!(row.refund_status, REFUND_OPEN);
    assert_eq!(row.tk_refund_suit_time, None);
    assert_eq!(order.as_of(clock.now_ms()).unwrap().refund_tag, 1);
    assert_eq!(order.as_of(refund.opened_at_ms - 1000 + order.reported_delay_ms).unwrap().refund_tag, 0);

    let too_wide = top
        .call(
            RELATION_REFUND_METHOD,
            &[
                ("search_type", "5".into()),
                ("start_time", format_beijing(refund.opened_at_ms)),
                ("end_time", format_beijing(refund.opened_at_ms + 4 * HOUR_MS)),
            ],
        )
        .await;
    assert_eq!(too_wide["error_response"]["sub_msg"], "查询时间跨度不能超过3小时");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn refund_pages_are_counted_and_disjoint() {
    let sim = spawn(three_hour_config(21, 300, LATE)).await;
    let top = Top::new(&sim);
    // Settlements of this data set cluster within days; a 3-hour window by earning time around
    // the busiest settlement holds several refunds.
    let earning = sim.orders().iter().filter(|o| o.refund.is_some()).map(|o| o.settled_at_ms().unwrap()).min().unwrap();
    let window = [
        ("search_type", "2".to_owned()),
        ("start_time", format_beijing(earning)),
        ("end_time", format_beijing(earning + 3 * HOUR_MS)),
    ];
    let expected: Vec<u64> = {
        let mut v: Vec<_> = sim
            .orders()
            .iter()
            .filter(|o| o.refund.is_some() && (earning..=earning + 3 * HOUR_MS).contains(&o.settled_at_ms().unwrap()))
            .map(|o| (o.settled_at_ms().unwrap(), o.trade_id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    };
    let mut seen = Vec::new();
    for page_no in 1..=expected.len() + 1 {
        let mut params = window.to_vec();
        params.extend([("page_size", "1".to_owned()), ("page_no", page_no.to_string())]);
        let answer = top.call(RELATION_REFUND_METHOD, &params).await;
        assert_eq!(answer["tbk_relation_refund_response"]["result"]["data"]["total_count"], expected.len());
        seen.extend(refund_rows(&answer).into_iter().map(|r| r.tb_trade_id));
    }
    assert_eq!(seen, expected);
    sim.shutdown().await.unwrap();
}
