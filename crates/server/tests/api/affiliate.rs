//! The Taobao connector against the stand-in network (a real HTTP server): every order row
//! lands on its user with the right state and amounts, rows move as the network's clock moves,
//! stale and late rows change nothing twice, refunds after settlement claw back, and polling
//! again changes nothing — the ledger audit after each step.

use std::collections::HashMap;

use flashback_affiliate_sim::{Attribution, EventKind, SimClock, SimConfig, SimOrder, TrackingId};
use flashback_core::rebate::lifecycle::RebateState;
use flashback_core::{Money, Role, Tier, UserId};
use flashback_server::rebate::taobao::Connector;
use flashback_store::{RebateProfile, TrackingKind};

use crate::helpers::TestApp;

const DAY: i64 = 24 * 3600 * 1000;

/// What a data-set order should end as by `now`, from its timeline.
fn expected_state(o: &SimOrder, now: i64) -> Option<RebateState> {
    let seen: Vec<&EventKind> = o.events.iter().filter(|e| e.visible_at_ms <= now).map(|e| &e.kind).collect();
    if seen.is_empty() {
        return None;
    }
    Some(if seen.contains(&&EventKind::RefundSucceeded) {
        RebateState::Reversed
    } else if seen.contains(&&EventKind::Invalidated) {
        RebateState::Invalid
    } else if seen.contains(&&EventKind::Settled) {
        // The hold is zero here: settled rows are available at once.
        RebateState::Available
    } else if seen.contains(&&EventKind::Received) {
        RebateState::Received
    } else {
        RebateState::Estimated
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_feed_lands_every_row_on_its_user_and_follows_it_to_the_end() {
    let now = flashback_server::trade::now_ms();
    let epoch = now - 12 * DAY;
    let special: Vec<u64> = (0..4).map(|i| 7_000_001 + i).collect();
    let config = SimConfig {
        seed: 11,
        orders: 160,
        epoch_ms: epoch,
        span_ms: 6 * DAY,
        tracking_ids: special.iter().map(|s| TrackingId::special(*s, 99)).collect(),
        time: SimClock::fixed(epoch + 4 * DAY),
        ..SimConfig::default()
    };
    let sim = flashback_affiliate_sim::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let app = TestApp::spawn_with(|c| {
        c.rebate.hold = std::time::Duration::ZERO;
        c.rebate.sweep_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let mut users: HashMap<u64, UserId> = HashMap::new();
    for (i, sid) in special.iter().enumerate() {
        let token = app.token_for(&format!("tb-user{i}"), Role::User).await;
        let id = app.state.auth.tokens.verify(&token).unwrap().id;
        app.state
            .store
            .upsert_rebate_profile(RebateProfile { user_id: id, tier: Tier::Standard, inviter_id: None })
            .await
            .unwrap();
        app.state.store.bind_tracking_id(&sid.to_string(), id, TrackingKind::SpecialId, now).await.unwrap();
        users.insert(*sid, id);
    }
    let connector = Connector {
        url: sim.router_url(),
        app_key: sim.config().app_key.clone(),
        app_secret: sim.config().app_secret.clone(),
        window_ms: 3 * 3600 * 1000,
        overlap_ms: 2 * 3600 * 1000,
        start_ms: epoch - DAY,
        page_size: 50,
        // Batches of three pages: a window's rows go through several pipelined batches.
        batch_rows: 120,
        breaker: flashback_core::breaker::Breaker::new("affiliate", Default::default()),
        cursor_name: "taobao".into(),
    };
    let client = reqwest::Client::new();

    let check = |at: i64| {
        let app = &app;
        let sim = &sim;
        let users = &users;
        async move {
            let mut seen = 0;
            for o in sim.orders() {
                let Some(expected) = expected_state(o, at) else { continue };
                let row = app.state.store.rebate_order("taobao", &o.trade_id.to_string()).await.unwrap();
                let row = row.unwrap_or_else(|| panic!("order {} never landed", o.trade_id));
                assert_eq!(row.state, expected, "order {} ({:?})", o.trade_id, o.events);
                let owner = match &o.attribution {
                    Attribution::User { .. } => o.special_id.and_then(|s| users.get(&s).copied()),
                    _ => None,
                };
                assert_eq!(row.user_id, owner, "order {} attributed", o.trade_id);
                if expected == RebateState::Available {
                    assert_eq!(row.commission_minor, o.settled_fee_fen, "order {} settled amount", o.trade_id);
                }
                seen += 1;
            }
            let audit = flashback_server::rebate::audit::audit(&app.state).await.unwrap();
            assert!(audit.violations.is_empty(), "{:?}", audit.violations);
            seen
        }
    };

    // Part way through the network's history.
    let first = connector.poll(&app.state, &client, sim.clock.now_ms()).await.unwrap();
    assert!(first.applied > 0 && first.rejected == 0, "{first:?}");
    let midway = check(sim.clock.now_ms()).await;
    assert!(midway > 0);

    // The network's clock moves on: rows settle, some are refunded after settlement.
    sim.clock.set_ms(now - DAY);
    let second = connector.poll(&app.state, &client, sim.clock.now_ms()).await.unwrap();
    assert!(second.applied > 0, "{second:?}");
    let all = check(sim.clock.now_ms()).await;
    assert!(all > midway);
    let reversed =
        sim.orders().iter().filter(|o| expected_state(o, sim.clock.now_ms()) == Some(RebateState::Reversed)).count();
    assert!(reversed > 0, "the data set has refunds after settlement");

    // Every user's wallet is exactly the sum of their rows' shares.
    for user in users.values() {
        let listed = app.state.store.rebates_of(*user, None, 1_000).await.unwrap();
        let rows: Vec<_> = listed.into_iter().map(|e| e.row).collect();
        let available: i64 = rows.iter().filter(|r| r.state == RebateState::Available).map(|r| r.buyer_share).sum();
        let pending: i64 = rows
            .iter()
            .filter(|r| matches!(r.state, RebateState::Estimated | RebateState::Received | RebateState::Settled))
            .map(|r| r.buyer_share)
            .sum();
        let w = app.state.store.wallet(*user).await.unwrap();
        assert_eq!((w.pending, w.available), (pending, available), "user {user}");
        for r in rows.iter().filter(|r| r.state == RebateState::Available) {
            let split =
                app.state.rebate.policy.split(Money::from_minor(r.commission_minor).unwrap(), Tier::Standard, None, 0);
            assert_eq!(r.buyer_share, split.buyer.minor());
        }
    }

    // The network's monthly settlement reports: every deliberate difference is found, nothing else.
    let admin = app.token_for("recon-admin", Role::Admin).await;
    let at = sim.clock.now_ms();
    let mut months: Vec<(i32, u8)> = sim
        .orders()
        .iter()
        .filter_map(|o| {
            o.settled_at_ms().filter(|s| {
                o.events.iter().any(|e| e.kind == EventKind::Settled && e.visible_at_ms <= at && e.at_ms == *s)
            })
        })
        .map(flashback_affiliate_sim::wire::beijing_month)
        .collect();
    months.sort_unstable();
    months.dedup();
    assert!(!months.is_empty());
    let mut found = 0;
    for (y, m) in months {
        let month = format!("{y:04}-{m:02}");
        let csv = client
            .get(format!("{}/sim/settlement-report?month={month}", sim.base_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let res = app
            .client
            .post(app.url(&format!("/api/v1/admin/rebate-reconciliations?month={month}")))
            .bearer_auth(&admin)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::OK);
        let report: serde_json::Value = res.json().await.unwrap();
        let expected: Vec<String> = sim
            .orders()
            .iter()
            .filter(|o| {
                let settled_visible = o.events.iter().any(|e| e.kind == EventKind::Settled && e.visible_at_ms <= at);
                settled_visible
                    && o.settled_at_ms().is_some_and(|s| flashback_affiliate_sim::wire::beijing_month(s) == (y, m))
                    && o.report_fee() != Some(o.settled_fee_fen)
            })
            .map(|o| o.trade_id.to_string())
            .collect();
        let mut got: Vec<String> = report["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                assert_eq!(d["kind"], "amount", "{d}");
                d["line_key"].as_str().unwrap().to_owned()
            })
            .collect();
        got.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(got, expected, "month {month}: {report}");
        found += got.len();
    }
    assert!(found > 0, "the data set has deliberate report differences");
    assert!(app.metric(r#"flashback_rebate_reconciliation_differences{reason="amount"}"#).await >= 0.0);

    // Reading the whole history again (a back-fill with cursors of its own) changes nothing.
    let before = app.state.store.audit_ledger().await.unwrap().transactions;
    let again = Connector { cursor_name: "taobao-backfill".into(), ..connector.clone() };
    let replay = again.poll(&app.state, &client, sim.clock.now_ms()).await.unwrap();
    assert_eq!(replay.applied, 0, "{replay:?}");
    assert_eq!(app.state.store.audit_ledger().await.unwrap().transactions, before);
    sim.shutdown().await.unwrap();
}

/// The network pushes every event as a signed postback: rows land as the feed would have
/// them, deliberate duplicates change nothing, and forged, stale or replayed requests are
/// refused or answered without effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_postbacks_are_applied_once_and_forgeries_refused() {
    use flashback_affiliate_sim::PostbackConfig;
    use flashback_server::rebate::postback::{SIGNATURE_HEADER, sign};
    const SECRET: &str = "postback-secret-of-at-least-thirty-two-bytes";
    let now = flashback_server::trade::now_ms();
    let app = TestApp::spawn_with(|c| {
        c.rebate.hold = std::time::Duration::ZERO;
        c.rebate.sweep_interval = std::time::Duration::from_secs(3600);
        c.rebate.postback_secret = Some(secrecy::SecretString::from(SECRET.to_owned()));
    })
    .await;
    let config = SimConfig {
        seed: 5,
        orders: 60,
        epoch_ms: now - 10 * DAY,
        span_ms: 5 * DAY,
        time: SimClock::fixed(now - DAY),
        postback: Some(PostbackConfig::new(app.url("/api/v1/affiliate/postbacks/taobao"), SECRET.to_owned())),
        ..SimConfig::default()
    };
    let sim = flashback_affiliate_sim::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let stats = sim.flush_postbacks().await.unwrap();
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert!(stats.delivered > 60, "{stats:?}");
    let at = sim.clock.now_ms();
    for o in sim.orders() {
        let Some(expected) = expected_state(o, at) else { continue };
        let row = app.state.store.rebate_order("taobao", &o.trade_id.to_string()).await.unwrap();
        let row = row.unwrap_or_else(|| panic!("order {} never pushed", o.trade_id));
        // Postbacks carry order rows, not the refund feed: a refunded row is settled here
        // until the refund feed is read.
        let expected = if expected == RebateState::Reversed { RebateState::Available } else { expected };
        assert_eq!(row.state, expected, "order {}", o.trade_id);
    }
    let audit = flashback_server::rebate::audit::audit(&app.state).await.unwrap();
    assert!(audit.violations.is_empty(), "{:?}", audit.violations);
    let before = audit.transactions;

    // The same conversion again, freshly signed: a duplicate. The exact request again: a replay.
    let o = sim.orders().iter().find(|o| o.as_of(at).is_some()).unwrap();
    let body = serde_json::to_vec(&o.as_of(at).unwrap()).unwrap();
    let post = |header: String, body: Vec<u8>| {
        let (client, url) = (app.client.clone(), app.url("/api/v1/affiliate/postbacks/taobao"));
        async move { client.post(url).header(SIGNATURE_HEADER, header).body(body).send().await.unwrap() }
    };
    // A moment the network did not sign at (it pushed within the last few seconds).
    let header = sign(SECRET.as_bytes(), now / 1000 - 200, &body);
    let res: serde_json::Value = post(header.clone(), body.clone()).await.json().await.unwrap();
    assert_eq!(res["result"], "duplicate");
    let res: serde_json::Value = post(header.clone(), body.clone()).await.json().await.unwrap();
    assert_eq!(res["result"], "replayed");
    // Forged, stale, unsigned, for another network, malformed.
    let forged = sign(b"another-secret-of-at-least-thirty-two-bytes", now / 1000, &body);
    crate::helpers::assert_problem(
        post(forged, body.clone()).await,
        reqwest::StatusCode::UNAUTHORIZED,
        "invalid_signature",
    )
    .await;
    let stale = sign(SECRET.as_bytes(), now / 1000 - 3_600, &body);
    crate::helpers::assert_problem(
        post(stale, body.clone()).await,
        reqwest::StatusCode::UNAUTHORIZED,
        "stale_signature",
    )
    .await;
    crate::helpers::assert_problem(
        post(String::new(), body.clone()).await,
        reqwest::StatusCode::UNAUTHORIZED,
        "invalid_signature",
    )
    .await;
    let bad = b"{\"trade_id\":\"1\",\"tk_status\":99}".to_vec();
    let bad_header = sign(SECRET.as_bytes(), now / 1000, &bad);
    crate::helpers::assert_problem(
        post(bad_header, bad).await,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_eq!(app.state.store.audit_ledger().await.unwrap().transactions, before, "nothing applied twice");
    let rejects = app.state.store.recent_rejects(10).await.unwrap();
    assert!(rejects.iter().any(|r| r.reason.contains("tk_status")), "{rejects:?}");
    sim.shutdown().await.unwrap();
}
