use std::collections::HashSet;

use flashback_affiliate_sim::wire::{format_beijing, parse_beijing};
use flashback_affiliate_sim::{
    DAY_MS, DEFAULT_EPOCH_MS, EventKind, HOUR_MS, ORDER_DETAILS_METHOD, SC_ORDER_DETAILS_METHOD, TK_INVALID, TK_PAID,
    TK_SETTLED, sign_params,
};
use serde_json::{Value, json};

use crate::support::{LATE, Top, page_rows, spawn, three_hour_config};

const START: i64 = DEFAULT_EPOCH_MS;
const END: i64 = DEFAULT_EPOCH_MS + 3 * HOUR_MS;

fn without_request_id(mut answer: Value) -> Value {
    answer["error_response"].as_object_mut().unwrap().remove("request_id").expect("errors carry a request id");
    answer
}

#[tokio::test]
async fn a_window_longer_than_three_hours_is_refused_with_tops_error() {
    let sim = spawn(three_hour_config(1, 20, LATE)).await;
    let top = Top::new(&sim);
    let answer = top.orders(2, START, END + 1000, &[]).await;
    assert_eq!(
        without_request_id(answer),
        json!({"error_response":{"code":15,"msg":"Remote service error","sub_code":"isv.invalid-parameter","sub_msg":"查询时间跨度不能超过3小时"}})
    );
    let exactly_three_hours = top.orders(2, START, END, &[]).await;
    assert!(exactly_three_hours["tbk_order_details_get_response"]["data"].is_object(), "{exactly_three_hours}");

    let too_big_a_page = top.orders(2, START, END, &[("page_size", "101".into())]).await;
    assert_eq!(too_big_a_page["error_response"]["sub_code"], "isv.invalid-parameter");
    let missing_end = top.call(ORDER_DETAILS_METHOD, &[("start_time", format_beijing(START))]).await;
    assert_eq!(missing_end["error_response"]["code"], 40);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn requests_without_a_valid_signature_are_refused() {
    let sim = spawn(three_hour_config(1, 20, LATE)).await;
    let top = Top::new(&sim);
    let window =
        [("query_type", "2".to_owned()), ("start_time", format_beijing(START)), ("end_time", format_beijing(END))];

    let unsigned = top.params(ORDER_DETAILS_METHOD, &window);
    let answer = without_request_id(top.send(&unsigned).await);
    assert_eq!(answer, json!({"error_response":{"code":24,"msg":"Missing signature"}}));

    let mut wrong = unsigned.clone();
    sign_params(&mut wrong, "not-the-secret");
    assert_eq!(
        without_request_id(top.send(&wrong).await),
        json!({"error_response":{"code":25,"msg":"Invalid signature"}})
    );

    let mut tampered = unsigned.clone();
    sign_params(&mut tampered, &top.secret);
    tampered.insert("page_size".into(), "50".into());
    assert_eq!(top.send(&tampered).await["error_response"]["code"], 25);

    let mut other_key = unsigned.clone();
    other_key.insert("app_key".into(), "someone-else".into());
    sign_params(&mut other_key, &top.secret);
    assert_eq!(top.send(&other_key).await["error_response"]["code"], 29);

    let mut md5 = unsigned.clone();
    md5.insert("sign_method".into(), "md5".into());
    sign_params(&mut md5, &top.secret);
    assert_eq!(top.send(&md5).await["error_response"]["code"], 41);

    // Correctly signed, as a GET or as a POSTed form, it is answered.
    let mut signed = unsigned.clone();
    sign_params(&mut signed, &top.secret);
    assert!(top.send(&signed).await["tbk_order_details_get_response"]["data"].is_object());
    let posted: Value = top.http.post(&top.url).form(&signed).send().await.unwrap().json().await.unwrap();
    assert!(posted["tbk_order_details_get_response"]["request_id"].is_string(), "{posted}");

    // The service-provider name answers under its own key, as TOP names responses.
    let sc = top.call(SC_ORDER_DETAILS_METHOD, &window).await;
    assert!(sc["tbk_sc_order_details_get_response"]["data"].is_object(), "{sc}");
    assert_eq!(top.call("taobao.tbk.nothing", &window).await["error_response"]["code"], 22);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn paging_covers_every_row_exactly_once() {
    let sim = spawn(three_hour_config(21, 120, LATE)).await;
    let top = Top::new(&sim);
    let expected: Vec<String> = {
        let mut rows: Vec<_> = sim
            .orders()
            .iter()
            .filter(|o| (START..=END).contains(&o.tk_paid_time_ms))
            .map(|o| (o.tk_paid_time_ms, o.trade_id))
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, id)| id.to_string()).collect()
    };
    assert!(expected.len() > 60, "the window holds many pages ({})", expected.len());

    let by_position: Vec<String> = top.all_orders(2, START, END, 7).await.into_iter().map(|r| r.trade_id).collect();
    assert_eq!(by_position, expected, "every row once, in (paid time, trade id) order");
    assert_eq!(by_position.iter().collect::<HashSet<_>>().len(), by_position.len());

    // Offset paging by page_no alone gives the same sequence.
    let mut by_page_no = Vec::new();
    for page_no in 1.. {
        let answer = top.orders(2, START, END, &[("page_size", "9".into()), ("page_no", page_no.to_string())]).await;
        let data = &answer["tbk_order_details_get_response"]["data"];
        assert_eq!(data["page_no"], page_no);
        assert_eq!(data["page_size"], 9);
        assert_eq!(data["has_pre"], page_no > 1);
        by_page_no.extend(page_rows(data).into_iter().map(|r| r.trade_id));
        if !data["has_next"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(by_page_no, expected);

    // jump_type=-1 with a page's position_index goes back one page.
    let first = top.orders(2, START, END, &[("page_size", "10".into())]).await;
    let first = &first["tbk_order_details_get_response"]["data"];
    let second = top
        .orders(
            2,
            START,
            END,
            &[
                ("page_size", "10".into()),
                ("page_no", "2".into()),
                ("position_index", first["position_index"].as_str().unwrap().into()),
            ],
        )
        .await;
    let second = &second["tbk_order_details_get_response"]["data"];
    assert_eq!(second["has_pre"], true);
    let back = top
        .orders(
            2,
            START,
            END,
            &[
                ("page_size", "10".into()),
                ("jump_type", "-1".into()),
                ("position_index", second["position_index"].as_str().unwrap().into()),
            ],
        )
        .await;
    let back = &back["tbk_order_details_get_response"]["data"];
    assert_eq!(page_rows(back), page_rows(first));
    assert_eq!(back["has_pre"], false);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn moving_the_clock_moves_rows_from_paid_to_settled() {
    let sim = spawn(three_hour_config(4, 40, END + 2 * HOUR_MS)).await;
    let top = Top::new(&sim);
    let before = top.all_orders(2, START, END, 100).await;
    assert!(!before.is_empty());
    assert!(before.iter().all(|r| r.tk_status == TK_PAID || r.tk_status == TK_INVALID));
    assert!(before.iter().all(|r| r.pub_share_fee == "0.00" && r.tk_earning_time.is_none()));

    let moved: Value = top
        .http
        .post(format!("{}/sim/clock", sim.base_url()))
        .json(&json!({"advance_ms": 40 * DAY_MS}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now = moved["now_ms"].as_i64().unwrap();
    assert_eq!(now, END + 2 * HOUR_MS + 40 * DAY_MS);

    let after = top.all_orders(2, START, END, 100).await;
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|r| r.tk_status == TK_SETTLED || r.tk_status == TK_INVALID));
    assert!(after.iter().any(|r| r.tk_status == TK_SETTLED && r.pub_share_fee != "0.00"));
    for row in &after {
        let order = sim.orders().iter().find(|o| o.trade_id.to_string() == row.trade_id).unwrap();
        assert_eq!(Some(row), order.as_of(now).as_ref(), "the feed shows the row as of the network's now");
    }

    // Settled rows are found by settlement time too, and tk_status filters.
    let settled_at =
        after.iter().find_map(|r| r.tk_earning_time.as_deref()).map(|t| parse_beijing(t).unwrap()).unwrap();
    let by_settlement = top.all_orders(3, settled_at - HOUR_MS, settled_at + HOUR_MS, 100).await;
    assert!(by_settlement.iter().all(|r| r.tk_status == TK_SETTLED));
    assert!(!by_settlement.is_empty());
    let invalid_only = top.orders(2, START, END, &[("tk_status", "13".into()), ("page_size", "100".into())]).await;
    let invalid_only = page_rows(&invalid_only["tbk_order_details_get_response"]["data"]);
    assert_eq!(invalid_only.len(), after.iter().filter(|r| r.tk_status == TK_INVALID).count());
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn stale_snapshots_are_served_only_to_query_type_1() {
    let sim = spawn(three_hour_config(21, 200, LATE)).await;
    let top = Top::new(&sim);
    let by_create = top.all_orders(1, START, END, 100).await;
    assert_eq!(by_create.len(), sim.orders().len(), "everything was created in the window");
    let by_paid = top.all_orders(2, START, END, 100).await;
    let mut stale_seen = 0;
    for row in &by_create {
        let order = sim.orders().iter().find(|o| o.trade_id.to_string() == row.trade_id).unwrap();
        assert_eq!(Some(row), order.stale_as_of(LATE).as_ref());
        let current = order.as_of(LATE).unwrap();
        if order.stale_on_create_query {
            assert!(parse_beijing(&row.modified_time) < parse_beijing(&current.modified_time), "older");
            assert_ne!((row.tk_status, row.refund_tag), (current.tk_status, current.refund_tag));
            stale_seen += 1;
            // By modified time the same order comes back current.
            let modified = parse_beijing(&current.modified_time).unwrap();
            let rows = top.all_orders(4, modified - HOUR_MS, modified + HOUR_MS, 100).await;
            assert!(rows.contains(&current), "query_type 4 serves the current row");
            assert!(!rows.contains(row));
        } else {
            assert_eq!(*row, current);
        }
    }
    assert!(stale_seen > 0, "the window holds stale rows");
    for row in &by_paid {
        let order = sim.orders().iter().find(|o| o.trade_id.to_string() == row.trade_id).unwrap();
        assert_eq!(Some(row), order.as_of(LATE).as_ref(), "query_type 2 serves current rows");
    }
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn late_events_appear_with_a_modified_time_before_they_could_be_seen() {
    let config = three_hour_config(21, 200, LATE);
    let orders = flashback_affiliate_sim::dataset(&config);
    let (order, event) = orders
        .iter()
        .filter(|o| o.reported_delay_ms > 0)
        .find_map(|o| o.events.iter().find(|e| e.kind == EventKind::Received).map(|e| (o.clone(), *e)))
        .expect("a late order");
    let clock = config.time.clone();
    let sim = spawn(config).await;
    let top = Top::new(&sim);
    let window = (event.at_ms - HOUR_MS, event.at_ms + HOUR_MS);
    let id = order.trade_id.to_string();

    // Just after the event happened, a poll by modified time does not see it yet…
    clock.set_ms(event.at_ms + 1000);
    let early = top.all_orders(4, window.0, window.1, 100).await;
    assert!(early.iter().all(|r| r.trade_id != id));

    // …once reported, the same window has it, modified at the event's time.
    clock.set_ms(event.visible_at_ms);
    let late = top.all_orders(4, window.0, window.1, 100).await;
    let row = late.iter().find(|r| r.trade_id == id).expect("reported");
    assert_eq!(row.modified_time, format_beijing(event.at_ms));
    assert!(event.at_ms < event.visible_at_ms);
    sim.shutdown().await.unwrap();
}
