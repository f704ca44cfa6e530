//! Behaviour tracking end to end on the embedded default: what goes in comes out after the
//! writer drains (PV exact, UV within its bound), repeats count once, late and skewed events
//! land on their day, a restart neither loses nor double counts, and bad input changes nothing.

use std::io::Write;
use std::time::Duration;

use flashback_core::{Day, Role};
use flashback_server::track;
use flashback_store::track::TrackEvent;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    flashback_server::trade::now_ms()
}

fn today() -> String {
    Day::of(now_ms(), 0).to_string()
}

fn day_of(ts: i64) -> String {
    Day::of(ts, 0).to_string()
}

async fn post_events(app: &TestApp, events: Value) -> (StatusCode, Value) {
    let res = app.post("/api/v1/track", None, &events).await;
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Waits until the writer has stored `n` events in all.
async fn drained(app: &TestApp, n: i64) {
    for _ in 0..300 {
        if app.state.track.store.stored_events().await.expect("count") >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the writer did not store {n} events in time");
}

/// Waits until the writer has taken everything queued.
async fn queue_empty(app: &TestApp) {
    for _ in 0..300 {
        if app.state.track.queue.backlog().await.expect("backlog") == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the tracking queue did not drain in time");
}

async fn stats(app: &TestApp, admin: &str, query: &str) -> Value {
    let res = app.get_as(&format!("/api/v1/track/stats?{query}"), admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("json")
}

fn view(visitor: u32, object: u32) -> Value {
    json!({"anonymous_id": format!("device-{visitor}"), "module": "home", "action": "view",
           "object_type": "sku", "object_id": object.to_string()})
}

#[tokio::test]
async fn counts_that_go_in_come_out_after_the_writer_drains() {
    let app = TestApp::spawn().await;
    let admin = app.token_for("admin", Role::Admin).await;
    // 3,000 views by 1,500 visitors: object 1 gets every visitor twice, object 2 a third.
    let mut all = Vec::new();
    for v in 0..1_500u32 {
        all.push(view(v, 1));
        all.push(view(v, 1));
    }
    for v in (0..1_500u32).step_by(3) {
        all.push(view(v, 2));
    }
    for chunk in all.chunks(1_000) {
        let (status, body) = post_events(&app, json!({"events": chunk})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["accepted"], chunk.len());
    }
    drained(&app, all.len() as i64).await;
    let d = today();
    let one = stats(&app, &admin, &format!("from={d}&to={d}&action=view&object_type=sku&object_id=1")).await;
    assert_eq!(one["pv"], 3_000, "{one}");
    let uv = one["uv"].as_f64().expect("uv");
    let bound = one["uv_relative_error"].as_f64().expect("bound");
    assert!((uv - 1_500.0).abs() / 1_500.0 <= bound, "uv {uv} outside ±{bound} of 1500");
    let module = stats(&app, &admin, &format!("from={d}&to={d}&action=view&module=home")).await;
    assert_eq!(module["pv"], 3_500);
    let everything = stats(&app, &admin, &format!("from={d}&to={d}&action=view")).await;
    assert_eq!(everything["pv"], 3_500);
    assert_eq!(everything["scope"], "all");

    let top: Value = app
        .get_as(&format!("/api/v1/track/top?from={d}&to={d}&action=view&object_type=sku&limit=5"), &admin)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(top["objects"][0]["object_id"], "1");
    assert_eq!(top["objects"][0]["pv"], 3_000);
    assert_eq!(top["objects"][1]["object_id"], "2");
    assert_eq!(top["objects"][1]["pv"], 500);

    let hourly: Value =
        app.get_as(&format!("/api/v1/track/hourly?day={d}&action=view"), &admin).await.json().await.expect("json");
    let hours = hourly["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), 24);
    assert_eq!(hours.iter().map(|h| h["pv"].as_i64().unwrap_or(0)).sum::<i64>(), 3_500);
    assert_eq!(hours.iter().map(|h| h["uv"].as_i64().unwrap_or(0)).max(), Some(1_500), "hourly UV is exact");
    assert_eq!(app.metric("flashback_track_written_total").await, 3_500.0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_funnel_follows_visitors_through_the_steps_in_order() {
    let app = TestApp::spawn().await;
    let admin = app.token_for("admin", Role::Admin).await;
    let t = now_ms();
    let step = |v: u32, action: &str, at: i64| {
        json!({"anonymous_id": format!("f{v}"), "module": "product", "action": action,
               "object_type": "sku", "object_id": "9", "client_ts": t - 60_000 + at})
    };
    let mut events = Vec::new();
    for v in 0..10 {
        events.push(step(v, "view", 0));
    }
    for v in 0..4 {
        events.push(step(v, "add_to_cart", 10));
    }
    events.push(step(0, "order", 20));
    // Ordered before viewing: counts as a view only.
    events.push(step(20, "order", 0));
    events.push(step(20, "view", 5));
    let (status, _) = post_events(&app, Value::Array(events)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    drained(&app, 17).await;
    let d = day_of(t - 60_000);
    let funnel: Value =
        app.get_as(&format!("/api/v1/track/funnel?from={d}&to={d}"), &admin).await.json().await.expect("json");
    let visitors: Vec<i64> =
        funnel["steps"].as_array().expect("steps").iter().map(|s| s["visitors"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(visitors, vec![11, 4, 1], "{funnel}");
    app.shutdown().await;
}

#[tokio::test]
async fn repeats_count_once_at_ingest_and_in_the_store() {
    let app = TestApp::spawn().await;
    let admin = app.token_for("admin", Role::Admin).await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut e = view(1, 5);
    e["event_id"] = json!(id);
    let (_, first) = post_events(&app, json!({"events": [e.clone(), e.clone()]})).await;
    assert_eq!((first["accepted"].as_i64(), first["duplicates"].as_i64()), (Some(1), Some(1)), "{first}");
    let (_, again) = post_events(&app, e.clone()).await;
    assert_eq!((again["accepted"].as_i64(), again["duplicates"].as_i64()), (Some(0), Some(1)));
    drained(&app, 1).await;
    // Past the ingest window (a new instance remembers nothing): the day table still refuses it.
    let dir = app.shutdown_keeping_data().await;
    let app = TestApp::spawn_in(dir).await;
    let (_, later) = post_events(&app, e).await;
    assert_eq!(later["accepted"], 1, "the new instance's window has not seen it");
    queue_empty(&app).await;
    let d = today();
    let s = stats(&app, &admin, &format!("from={d}&to={d}&action=view&object_type=sku&object_id=5")).await;
    assert_eq!(s["pv"], 1, "{s}");
    assert_eq!(app.state.track.store.stored_events().await.expect("count"), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn late_and_skewed_events_land_on_their_day_and_the_too_old_are_dropped() {
    let app = TestApp::spawn().await;
    let admin = app.token_for("admin", Role::Admin).await;
    let now = now_ms();
    // A client clock two hours fast: it happened a day ago by the server's clock.
    let skewed = json!({"anonymous_id": "s", "module": "m", "action": "view", "object_type": "sku", "object_id": "1",
                        "client_ts": now + 2 * 3_600_000 - DAY_MS, "sent_at": now + 2 * 3_600_000});
    // Far in the future with no sent_at: clamped to now.
    let future = json!({"anonymous_id": "f", "module": "m", "action": "view", "object_type": "sku", "object_id": "1",
                        "client_ts": now + 10 * DAY_MS});
    // Two days late (within the default three): lands two days back.
    let late = json!({"anonymous_id": "l", "module": "m", "action": "view", "object_type": "sku", "object_id": "1",
                      "client_ts": now - 2 * DAY_MS});
    let too_old = json!({"anonymous_id": "o", "module": "m", "action": "view", "client_ts": now - 5 * DAY_MS});
    let (status, body) = post_events(&app, json!([skewed, future, late, too_old])).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!((body["accepted"].as_i64(), body["too_late"].as_i64()), (Some(3), Some(1)), "{body}");
    drained(&app, 3).await;
    let pv_on = |ts: i64| {
        let d = day_of(ts);
        let app = &app;
        let admin = admin.clone();
        async move {
            stats(app, &admin, &format!("from={d}&to={d}&action=view&object_type=sku&object_id=1")).await["pv"]
                .as_i64()
                .unwrap_or(0)
        }
    };
    let (yesterday, two_back) = (pv_on(now - DAY_MS).await, pv_on(now - 2 * DAY_MS).await);
    let today = pv_on(now).await;
    // Near midnight "a day ago minus skew error" may coincide with another day; the sum holds.
    assert_eq!(yesterday + two_back + today, 3);
    assert_eq!(two_back, 1);
    assert_eq!(yesterday, 1);
    assert_eq!(today, 1, "the far-future event counts today");
    assert_eq!(app.metric("flashback_track_events_total{reason=\"too_late\"}").await, 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_restart_neither_loses_nor_double_counts() {
    let app = TestApp::spawn().await;
    let admin = app.token_for("admin", Role::Admin).await;
    let batches: Vec<Vec<Value>> = (0..10u32)
        .map(|b| {
            (0..200u32)
                .map(|i| {
                    let mut e = view(b * 200 + i, 3);
                    e["event_id"] = json!(uuid::Uuid::new_v4().to_string());
                    e
                })
                .collect()
        })
        .collect();
    for batch in &batches[..5] {
        assert_eq!(post_events(&app, json!(batch)).await.0, StatusCode::ACCEPTED);
    }
    // Stop at once: the writer may be mid-way; what was accepted is in the queue.
    let dir = app.shutdown_keeping_data().await;
    let app = TestApp::spawn_in(dir).await;
    // The client retries everything (it did not hear back, say), then sends the rest.
    for batch in &batches {
        assert_eq!(post_events(&app, json!(batch)).await.0, StatusCode::ACCEPTED);
    }
    drained(&app, 2_000).await;
    queue_empty(&app).await;
    let d = today();
    let s = stats(&app, &admin, &format!("from={d}&to={d}&action=view&object_type=sku&object_id=3")).await;
    assert_eq!(s["pv"], 2_000, "{s}");
    assert_eq!(app.state.track.store.stored_events().await.expect("count"), 2_000);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_refused_whole_and_changes_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.track.max_batch_events = 10;
        c.track.max_body_bytes = 4_096;
        c.track.max_decompressed_bytes = 8_192;
        c.track.max_properties_bytes = 64;
        c.track.writer_batch_events = 10;
    })
    .await;
    let ok = view(1, 1);
    let cases = [
        (json!({"events": []}), StatusCode::BAD_REQUEST, "empty_batch"),
        (json!({"module": "m", "anonymous_id": "a"}), StatusCode::BAD_REQUEST, "invalid_event"),
        (json!({"module": "m", "action": "view"}), StatusCode::BAD_REQUEST, "invalid_event"),
        (
            json!([ok.clone(), {"event_id": "not-a-uuid", "module": "m", "action": "v", "anonymous_id": "a"}]),
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            json!({"module": "m", "action": "v", "anonymous_id": "a", "properties": [1, 2]}),
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            json!({"module": "m", "action": "v", "anonymous_id": "a", "properties": {"k": "x".repeat(100)}}),
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            json!({"module": "m", "action": "v", "anonymous_id": "a", "client_ts": -5}),
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (json!({"module": "m", "action": "v", "user_id": "abc"}), StatusCode::BAD_REQUEST, "invalid_event"),
        (json!({"events": vec![ok.clone(); 11]}), StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
        (json!({"events": [{"events": [ok.clone()]}]}), StatusCode::BAD_REQUEST, "invalid_event"),
        (json!("a string"), StatusCode::BAD_REQUEST, "invalid_json"),
    ];
    for (body, status, code) in cases {
        let res = app.post("/api/v1/track", None, &body).await;
        assert_problem(res, status, code).await;
    }
    let big = app.client.post(app.url("/api/v1/track")).body(vec![b' '; 5_000]).send().await.expect("send");
    assert_problem(big, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    let not_gzip = app
        .client
        .post(app.url("/api/v1/track"))
        .header("content-encoding", "gzip")
        .body("plain")
        .send()
        .await
        .expect("send");
    assert_problem(not_gzip, StatusCode::BAD_REQUEST, "invalid_gzip").await;
    let brotli = app
        .client
        .post(app.url("/api/v1/track"))
        .header("content-encoding", "br")
        .body("x")
        .send()
        .await
        .expect("send");
    assert_problem(brotli, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding").await;
    // A small gzip body that inflates past the cap.
    let bomb = gzip(&vec![b' '; 20_000]);
    assert!(bomb.len() < 4_096);
    let res = app
        .client
        .post(app.url("/api/v1/track"))
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .expect("send");
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    let forged = app.client.post(app.url("/api/v1/track")).bearer_auth("forged").json(&ok).send().await.expect("send");
    assert_problem(forged, StatusCode::UNAUTHORIZED, "invalid_token").await;
    // A good gzip batch goes through.
    let body = serde_json::to_vec(&json!([ok.clone(), view(2, 1)])).expect("json");
    let res = app
        .client
        .post(app.url("/api/v1/track"))
        .header("content-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    drained(&app, 2).await;
    queue_empty(&app).await;
    assert_eq!(app.state.track.store.stored_events().await.expect("count"), 2, "only the good batch was stored");
    let admin = app.token_for("admin", Role::Admin).await;
    for q in [
        "from=2026-02-30&to=2026-03-01&action=view",
        "from=2026-03-02&to=2026-03-01&action=view",
        "from=2026-03-01&to=2026-03-01",
        "from=2026-03-01&to=2026-03-01&action=view&object_type=sku",
        "from=2020-01-01&to=2026-01-01&action=view",
    ] {
        let res = app.get_as(&format!("/api/v1/track/stats?{q}"), &admin).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{q}");
    }
    let shopper = app.token_for("shopper", Role::User).await;
    let res = app.get_as(&format!("/api/v1/track/stats?from={0}&to={0}&action=view", today()), &shopper).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    app.shutdown().await;
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

#[tokio::test]
async fn bots_are_dropped_and_counted_floods_are_limited_and_a_full_queue_says_retry() {
    let app = TestApp::spawn_with(|c| {
        c.track.per_client_per_sec = 20;
        c.track.max_batch_events = 10;
        c.track.writer_batch_events = 10;
    })
    .await;
    let bot = app
        .client
        .post(app.url("/api/v1/track"))
        .header("user-agent", "Mozilla/5.0 (compatible; Googlebot/2.1)")
        .json(&json!([view(1, 1), view(2, 1)]))
        .send()
        .await
        .expect("send");
    assert_eq!(bot.status(), StatusCode::ACCEPTED);
    assert_eq!(app.metric("flashback_track_events_total{reason=\"bot\"}").await, 2.0);
    let mut limited = false;
    for i in 0..10 {
        let res = app.post("/api/v1/track", None, &json!([view(100 + i, 1), view(200 + i, 1), view(300 + i, 1)])).await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers().contains_key("retry-after"));
            assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
            limited = true;
            break;
        }
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    assert!(limited, "30 events against a limit of 20 per second were all accepted");
    app.shutdown().await;

    let app = TestApp::spawn_with(|c| {
        c.track.max_backlog_events = 5;
        c.track.max_batch_events = 10;
        c.track.writer_batch_events = 10;
    })
    .await;
    // More than the backlog bound in one batch: 503 with Retry-After, nothing kept.
    let retry: Vec<Value> = (0..6)
        .map(|i| {
            let mut e = view(i, 1);
            e["event_id"] = json!(uuid::Uuid::new_v4().to_string());
            e
        })
        .collect();
    let full = app.post("/api/v1/track", None, &json!(retry)).await;
    assert_eq!(full.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("2"));
    assert_problem(full, StatusCode::SERVICE_UNAVAILABLE, "queue_full").await;
    // Within the bound it is accepted: the refused batch's ids were forgotten, so its retry is
    // not taken for a repeat.
    let (status, body) = post_events(&app, json!(retry[..5])).await;
    assert_eq!((status, body["accepted"].as_i64()), (StatusCode::ACCEPTED, Some(5)), "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn retention_drops_old_days_and_their_rollups() {
    let app = TestApp::spawn().await;
    let store = &app.state.track.store;
    let event = |id: u128, ts: i64| TrackEvent {
        id,
        ts_ms: ts,
        received_ms: ts,
        user_id: None,
        visitor: "a:x".into(),
        module: "m".into(),
        action: "view".into(),
        object_type: "sku".into(),
        object_id: "1".into(),
        properties: None,
    };
    let now = now_ms();
    store.write(&[event(1, now - 200 * DAY_MS), event(2, now)], None).await.expect("write");
    assert_eq!(store.days().await.expect("days").len(), 2);
    let dropped = track::apply_retention(&app.state).await.expect("retention");
    assert_eq!(dropped, vec![Day::of(now - 200 * DAY_MS, 0)]);
    assert_eq!(store.days().await.expect("days"), vec![Day::of(now, 0)]);
    assert_eq!(store.stored_events().await.expect("count"), 1);
    app.shutdown().await;
}
