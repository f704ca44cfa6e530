//! Rebates end to end through the ingest path: attribution, splits with referrals, the life
//! cycle through the ledger, invalid and reversed rows, duplicates and out-of-order reports —
//! the ledger audit after each, on SQLite and on MariaDB.

use std::time::Duration;

use flashback_core::rebate::lifecycle::{NetworkStatus, Report};
use flashback_core::{Money, Role};
use flashback_server::rebate::ingest::{LineReport, Outcome, apply, release_due};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backends, TestApp, assert_problem};

fn m(n: i64) -> Money {
    Money::from_minor(n).unwrap()
}

/// A report of line `key` at modification time `at` (settled rows settle at `at`).
fn line(key: &str, tracking: Option<&str>, status: NetworkStatus, estimate: i64, settled: i64, at: i64) -> LineReport {
    LineReport {
        source: "taobao".into(),
        line_key: key.into(),
        parent_key: format!("p-{key}"),
        item_id: "item-1".into(),
        item_title: "A kettle".into(),
        category: None,
        tracking: tracking.map(str::to_owned),
        buyer: None,
        report: Report {
            status,
            estimate: m(estimate),
            settled: m(settled),
            refunded: Money::ZERO,
            modified_ms: at,
            settled_at_ms: (status == NetworkStatus::Settled).then_some(at),
        },
        paid: m(20_000),
        click_ms: Some(at - 60_000),
        paid_at_ms: Some(at - 30_000),
    }
}

fn now() -> i64 {
    flashback_server::trade::now_ms()
}

struct Member {
    token: String,
    id: String,
}

/// A user who joined (with an inviter's code) and whose special id is `sid`.
async fn member(app: &TestApp, admin: &str, name: &str, sid: &str, invite: Option<&Member>) -> Member {
    let token = app.token_for(name, Role::User).await;
    let me: Value = app.get_as("/api/v1/me", &token).await.json().await.unwrap();
    let id = me["id"].as_str().unwrap().to_owned();
    let body = json!({"invite_code": invite.map(|i| i.id.clone())});
    let res = app.post("/api/v1/me/rebate-profile", Some(&token), &body).await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", res.text().await);
    let res = app
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/admin/tracking-ids/{sid}"),
            Some(admin),
            &json!({"user_id": id, "kind": "special_id"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    Member { token, id }
}

async fn wallet(app: &TestApp, m: &Member) -> (i64, i64, i64) {
    let w: Value = app.get_as("/api/v1/me/wallet", &m.token).await.json().await.unwrap();
    (
        w["pending_minor"].as_i64().unwrap(),
        w["available_minor"].as_i64().unwrap(),
        w["withdrawing_minor"].as_i64().unwrap(),
    )
}

async fn ledger_clean(app: &TestApp) {
    let audit = flashback_server::rebate::audit::audit(&app.state).await.unwrap();
    assert!(audit.violations.is_empty(), "{:?}", audit.violations);
}

async fn applied(app: &TestApp, l: &LineReport) -> Outcome {
    apply(&app.state, l).await.unwrap()
}

/// paid → received → settled (a different amount) → available after the hold, with the
/// inviter chain getting its shares; every step visible at once.
async fn lifecycle(app: &TestApp) {
    let admin = app.token_for("rb-admin", Role::Admin).await;
    let grand = member(app, &admin, "rb-grand", "sid-grand", None).await;
    let inviter = member(app, &admin, "rb-inviter", "sid-inviter", Some(&grand)).await;
    let buyer = member(app, &admin, "rb-buyer", "sid-buyer", Some(&inviter)).await;
    let t = now();

    assert_eq!(applied(app, &line("L1", Some("sid-buyer"), NetworkStatus::Paid, 1_001, 0, t)).await, Outcome::Applied);
    // 1,001 estimated: buyer 50% = 500, inviter 10% = 100, grand inviter 5% = 50 (floors).
    assert_eq!(wallet(app, &buyer).await, (500, 0, 0));
    assert_eq!(wallet(app, &inviter).await, (100, 0, 0));
    assert_eq!(wallet(app, &grand).await, (50, 0, 0));
    let mine: Value = app.get_as("/api/v1/me/rebates", &buyer.token).await.json().await.unwrap();
    assert_eq!(mine["items"][0]["state"], "estimated");
    assert_eq!(mine["items"][0]["rebate_minor"], 500);
    assert_eq!(mine["items"][0]["role"], "buyer");
    // The inviters see the row too, each with their own role and share.
    for (who, role, share) in [(&inviter, "inviter", 100), (&grand, "grand_inviter", 50)] {
        let theirs: Value = app.get_as("/api/v1/me/rebates", &who.token).await.json().await.unwrap();
        let items = theirs["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{theirs}");
        assert_eq!((items[0]["line_key"].as_str(), items[0]["role"].as_str()), (Some("L1"), Some(role)));
        assert_eq!(items[0]["rebate_minor"], share);
    }

    applied(app, &line("L1", Some("sid-buyer"), NetworkStatus::Received, 1_001, 0, t + 10)).await;
    assert_eq!(wallet(app, &buyer).await, (500, 0, 0));
    // Settled lower than estimated: everything recomputed from 800.
    applied(app, &line("L1", Some("sid-buyer"), NetworkStatus::Settled, 1_001, 800, t + 20)).await;
    assert_eq!(wallet(app, &buyer).await, (400, 0, 0));
    assert_eq!(wallet(app, &inviter).await, (80, 0, 0));
    assert_eq!(wallet(app, &grand).await, (40, 0, 0));
    ledger_clean(app).await;

    // The hold (200 ms in these tests) passes.
    tokio::time::sleep(Duration::from_millis(250)).await;
    release_due(&app.state).await.unwrap();
    assert_eq!(wallet(app, &buyer).await, (0, 400, 0));
    assert_eq!(wallet(app, &inviter).await, (0, 80, 0));
    assert_eq!(wallet(app, &grand).await, (0, 40, 0));
    let mine: Value = app.get_as("/api/v1/me/rebates", &buyer.token).await.json().await.unwrap();
    assert_eq!(mine["items"][0]["state"], "available");
    let theirs: Value = app.get_as("/api/v1/me/rebates", &inviter.token).await.json().await.unwrap();
    assert_eq!(
        (theirs["items"][0]["state"].as_str(), theirs["items"][0]["rebate_minor"].as_i64()),
        (Some("available"), Some(80))
    );
    assert_eq!(release_due(&app.state).await.unwrap(), 0, "released once");
    ledger_clean(app).await;
}

/// An invalid order never pays, a refund after settlement claws back (available may go
/// negative), and duplicate or out-of-order reports change nothing twice.
async fn reversals_and_disorder(app: &TestApp) {
    let admin = app.token_for("rv-admin", Role::Admin).await;
    let buyer = member(app, &admin, "rv-buyer", "sid-rv", None).await;
    let t = now();

    applied(app, &line("V1", Some("sid-rv"), NetworkStatus::Paid, 600, 0, t)).await;
    assert_eq!(wallet(app, &buyer).await, (300, 0, 0));
    applied(app, &line("V1", Some("sid-rv"), NetworkStatus::Invalid, 600, 0, t + 5)).await;
    assert_eq!(wallet(app, &buyer).await, (0, 0, 0), "invalid: nothing pending");
    // A late settled row cannot resurrect it.
    assert_eq!(
        applied(app, &line("V1", Some("sid-rv"), NetworkStatus::Settled, 600, 600, t + 9)).await,
        Outcome::Ignored
    );
    assert_eq!(wallet(app, &buyer).await, (0, 0, 0));

    // Settled first, then the stale paid row, then the same settled row again.
    let settled = line("V2", Some("sid-rv"), NetworkStatus::Settled, 1_000, 1_000, t);
    assert_eq!(applied(app, &settled).await, Outcome::Applied);
    let before = app.state.store.audit_ledger().await.unwrap().transactions;
    assert_eq!(applied(app, &line("V2", Some("sid-rv"), NetworkStatus::Paid, 900, 0, t - 50)).await, Outcome::Ignored);
    assert_eq!(applied(app, &settled).await, Outcome::Ignored);
    assert_eq!(app.state.store.audit_ledger().await.unwrap().transactions, before, "nothing posted twice");
    assert_eq!(wallet(app, &buyer).await, (500, 0, 0));
    tokio::time::sleep(Duration::from_millis(250)).await;
    release_due(&app.state).await.unwrap();
    assert_eq!(wallet(app, &buyer).await, (0, 500, 0));

    // Refunded after settlement: clawed back from available.
    let mut refund = settled.clone();
    refund.report.refunded = m(1_000);
    refund.report.modified_ms = t + 100;
    assert_eq!(applied(app, &refund).await, Outcome::Applied);
    assert_eq!(wallet(app, &buyer).await, (0, 0, 0));
    let rows: Value = app.get_as("/api/v1/me/rebates", &buyer.token).await.json().await.unwrap();
    let v2 = rows["items"].as_array().unwrap().iter().find(|r| r["line_key"] == "V2").unwrap().clone();
    assert_eq!((v2["state"].as_str(), v2["rebate_minor"].as_i64()), (Some("reversed"), Some(0)));
    ledger_clean(app).await;
}

/// Unknown tracking ids leave the commission with the platform; bad rows change nothing.
async fn unattributed_and_bad_rows(app: &TestApp) {
    let t = now();
    applied(app, &line("U1", Some("sid-nobody"), NetworkStatus::Paid, 700, 0, t)).await;
    let row = app.state.store.rebate_order("taobao", "U1").await.unwrap().unwrap();
    assert_eq!((row.user_id, row.platform_share, row.buyer_share), (None, 700, 0));
    let admin = app.token_for(&format!("un-admin-{}", now() % 100_000), Role::Admin).await;
    let flagged: Value = app.get_as("/api/v1/admin/rebate-rejects", &admin).await.json().await.unwrap();
    assert!(
        flagged
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason"].as_str().unwrap().contains("unknown tracking id sid-nobody")),
        "an unknown tracking id is kept for review: {flagged}"
    );

    let mut absurd = line("U2", None, NetworkStatus::Paid, 30_000, 0, t);
    absurd.paid = m(20_000);
    assert!(apply(&app.state, &absurd).await.is_err(), "a commission above the price is refused");
    let mut empty_key = line("", None, NetworkStatus::Paid, 10, 0, t);
    empty_key.line_key = String::new();
    assert!(apply(&app.state, &empty_key).await.is_err());
    assert!(app.state.store.rebate_order("taobao", "U2").await.unwrap().is_none(), "nothing half-applied");
    ledger_clean(app).await;
}

/// A member with `amount` available (a settled row past its hold).
async fn funded(app: &TestApp, admin: &str, name: &str, amount: i64) -> Member {
    let sid = format!("sid-{name}");
    let m = member(app, admin, name, &sid, None).await;
    // The buyer's share is 50%: a settled commission of twice the amount.
    applied(
        app,
        &line(&format!("W-{name}"), Some(&sid), NetworkStatus::Settled, 2 * amount, 2 * amount, now() - 1_000),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    release_due(&app.state).await.unwrap();
    assert_eq!(wallet(app, &m).await, (0, amount, 0));
    m
}

async fn withdraw(app: &TestApp, m: &Member, amount: i64, payee: &str) -> reqwest::Response {
    app.post("/api/v1/me/withdrawals", Some(&m.token), &json!({"amount_minor": amount, "payee": payee})).await
}

async fn review(app: &TestApp, admin: &str, id: &str, body: Value) -> reqwest::Response {
    app.post(&format!("/api/v1/admin/withdrawals/{id}/review"), Some(admin), &body).await
}

/// Held at request; paid on approval; released on rejection or a failed payout; never more
/// than available, even when requests race; limits and bad input refused.
async fn withdrawals(app: &TestApp) {
    let admin = app.token_for("wd-admin", Role::Admin).await;
    let a = funded(app, &admin, "wd-a", 500).await;

    let res = withdraw(app, &a, 300, "alice@example.com").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let w: Value = res.json().await.unwrap();
    assert_eq!(w["state"], "requested");
    assert_eq!(wallet(app, &a).await, (0, 200, 300), "held at once");
    let listed: Value = app.get_as("/api/v1/admin/withdrawals?state=requested", &admin).await.json().await.unwrap();
    assert!(listed["items"].as_array().unwrap().iter().any(|x| x["id"] == w["id"]));
    let id = w["id"].as_str().unwrap();
    assert_problem(review(app, &a.token, id, json!({"decision": "approve"})).await, StatusCode::FORBIDDEN, "forbidden")
        .await;
    let paid: Value = review(app, &admin, id, json!({"decision": "approve"})).await.json().await.unwrap();
    assert_eq!(paid["state"], "paid");
    assert_eq!(wallet(app, &a).await, (0, 200, 0));
    assert_problem(
        review(app, &admin, id, json!({"decision": "reject", "reason": "late"})).await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;

    // A payout that fails releases the hold.
    let w: Value = withdraw(app, &a, 100, "fail-no-such-account").await.json().await.unwrap();
    let failed: Value =
        review(app, &admin, w["id"].as_str().unwrap(), json!({"decision": "approve"})).await.json().await.unwrap();
    assert_eq!((failed["state"].as_str(), failed["reason"].as_str()), (Some("failed"), Some("PAYEE_NOT_EXIST")));
    assert_eq!(wallet(app, &a).await, (0, 200, 0));

    // A rejection needs a reason and releases the hold.
    let w: Value = withdraw(app, &a, 100, "alice@example.com").await.json().await.unwrap();
    let wid = w["id"].as_str().unwrap();
    assert_problem(
        review(app, &admin, wid, json!({"decision": "reject"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_problem(
        review(app, &admin, wid, json!({"decision": "maybe"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    let rejected: Value = review(app, &admin, wid, json!({"decision": "reject", "reason": "payee name mismatch"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rejected["state"], "rejected");
    assert_eq!(wallet(app, &a).await, (0, 200, 0));

    // Limits and bad input.
    assert_problem(withdraw(app, &a, 500, "alice@example.com").await, StatusCode::CONFLICT, "insufficient_balance")
        .await;
    assert_problem(withdraw(app, &a, 10, "alice@example.com").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        .await;
    assert_problem(withdraw(app, &a, 100, "").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    assert_eq!(wallet(app, &a).await, (0, 200, 0), "refusals hold nothing");
    assert_eq!(
        withdraw(app, &a, 100, "alice@example.com").await.status(),
        StatusCode::CREATED,
        "the fourth of the day"
    );
    assert_problem(
        withdraw(app, &a, 100, "alice@example.com").await,
        StatusCode::TOO_MANY_REQUESTS,
        "withdrawal_limit_reached",
    )
    .await;
    assert_eq!(wallet(app, &a).await, (0, 100, 100));
    let mine: Value = app.get_as("/api/v1/me/withdrawals", &a.token).await.json().await.unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 4);
    withdrawal_pages(app, &a.token, &admin, &mine).await;

    // Twenty racing requests of 300 against 1,000 available (4 allowed a day): exactly three
    // are held — the balance decides, not the race.
    let b = funded(app, &admin, "wd-b", 1_000).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (client, url, token) = (app.client.clone(), app.url("/api/v1/me/withdrawals"), b.token.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"amount_minor": 300, "payee": "bob@example.com"}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut held = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => held += 1,
            StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(held, 3, "never more than available");
    assert_eq!(wallet(app, &b).await, (0, 100, 900));

    // A reversal after payment takes available negative, which blocks withdrawals.
    let c = funded(app, &admin, "wd-c", 400).await;
    let w: Value = withdraw(app, &c, 400, "carol@example.com").await.json().await.unwrap();
    review(app, &admin, w["id"].as_str().unwrap(), json!({"decision": "approve"})).await;
    let mut refund = line("W-wd-c", Some("sid-wd-c"), NetworkStatus::Settled, 800, 800, now());
    refund.report.refunded = m(800);
    applied(app, &refund).await;
    assert_eq!(wallet(app, &c).await, (0, -400, 0));
    assert_problem(withdraw(app, &c, 100, "carol@example.com").await, StatusCode::CONFLICT, "insufficient_balance")
        .await;
    ledger_clean(app).await;
}

fn fast_hold(c: &mut flashback_server::config::Config) {
    c.rebate.withdraw_daily_count = 100;
    c.rebate.hold = Duration::from_millis(200);
    c.rebate.sweep_interval = Duration::from_secs(3600);
}

#[tokio::test]
async fn a_rebate_goes_from_estimate_to_available_with_referral_shares() {
    lifecycle(&TestApp::spawn_with(fast_hold).await).await;
}

#[tokio::test]
async fn invalid_rows_never_pay_refunds_claw_back_and_disorder_changes_nothing_twice() {
    reversals_and_disorder(&TestApp::spawn_with(fast_hold).await).await;
}

#[tokio::test]
async fn withdrawals_hold_pay_release_and_never_overdraw() {
    withdrawals(
        &TestApp::spawn_with(|c| {
            fast_hold(c);
            c.rebate.withdraw_daily_count = 4;
        })
        .await,
    )
    .await;
}

#[tokio::test]
async fn unattributed_rows_stay_with_the_platform_and_bad_rows_change_nothing() {
    unattributed_and_bad_rows(&TestApp::spawn_with(fast_hold).await).await;
}

async fn on_mariadb() -> Option<(Backends, TestApp)> {
    let b = Backends::get("rebates on MariaDB").await?;
    let dir = tempfile::tempdir().unwrap();
    let mut c = b.config(dir.path());
    fast_hold(&mut c);
    let app = TestApp::start(c, dir).await;
    Some((b, app))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebate_life_cycle_on_mariadb() {
    let Some((_b, app)) = on_mariadb().await else { return };
    lifecycle(&app).await;
    reversals_and_disorder(&app).await;
    unattributed_and_bad_rows(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_on_mariadb() {
    let Some(b) = Backends::get("rebates on MariaDB").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut c = b.config(dir.path());
    fast_hold(&mut c);
    c.rebate.withdraw_daily_count = 4;
    withdrawals(&TestApp::start(c, dir).await).await;
}

#[tokio::test]
async fn joining_and_binding_refuse_bad_input() {
    let app = TestApp::spawn().await;
    let admin = app.token_for("bind-admin", Role::Admin).await;
    let user = app.token_for("bind-user", Role::User).await;
    let me: Value = app.get_as("/api/v1/me", &user).await.json().await.unwrap();
    let id = me["id"].as_str().unwrap();
    assert_problem(
        app.post("/api/v1/me/rebate-profile", Some(&user), &json!({"invite_code": id})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_problem(
        app.post("/api/v1/me/rebate-profile", Some(&user), &json!({"invite_code": "123"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    let put = |code: &str, body: Value, token: String| {
        let (app, code) = (&app, code.to_owned());
        async move {
            app.send(reqwest::Method::PUT, &format!("/api/v1/admin/tracking-ids/{code}"), Some(&token), &body).await
        }
    };
    let ok = json!({"user_id": id, "kind": "special_id"});
    assert_problem(put("sid-x", ok.clone(), user.clone()).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_problem(put("sid x", ok.clone(), admin.clone()).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        .await;
    assert_problem(
        put("sid-x", json!({"user_id": id, "kind": "other"}), admin.clone()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_eq!(put("sid-x", ok.clone(), admin.clone()).await.status(), StatusCode::NO_CONTENT);
    let other = app.token_for("bind-other", Role::User).await;
    let other_id: Value = app.get_as("/api/v1/me", &other).await.json().await.unwrap();
    assert_problem(
        put("sid-x", json!({"user_id": other_id["id"], "kind": "special_id"}), admin.clone()).await,
        StatusCode::CONFLICT,
        "tracking_id_taken",
    )
    .await;
    assert_problem(app.get_as("/api/v1/me/rebates?limit=0", &user).await, StatusCode::BAD_REQUEST, "invalid_query")
        .await;
    for cursor in ["zz", "taobao.L1", "seller.taobao.L1", "buyer..L1", "inviter.taobao."] {
        let url = format!("/api/v1/me/rebates?cursor={cursor}");
        assert_problem(app.get_as(&url, &user).await, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    assert_eq!(app.get("/api/v1/me/wallet").await.status(), StatusCode::UNAUTHORIZED);
}

/// A user's tracked link records clicks; an order the network could not attribute can be
/// claimed by the user who clicked through to its item, and by no one else.
#[tokio::test]
async fn links_record_clicks_and_only_the_clicker_can_claim_an_unattributed_order() {
    let app = TestApp::spawn_with(fast_hold).await;
    let admin = app.token_for("ln-admin", Role::Admin).await;
    let clicker = member(&app, &admin, "ln-clicker", "sid-ln-clicker", None).await;
    let other = member(&app, &admin, "ln-other", "sid-ln-other", None).await;

    let res = app
        .post(
            "/api/v1/me/links",
            Some(&clicker.token),
            &json!({"item_id": "item-1", "url": "https://item.taobao.com/item.htm?id=1"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let link: Value = res.json().await.unwrap();
    let target = link["target_url"].as_str().unwrap().to_owned();
    assert!(target.contains(&format!("sub_id={}", link["code"].as_str().unwrap())), "{target}");
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = no_redirects
        .get(app.url(link["short_path"].as_str().unwrap()))
        .header("user-agent", "Mozilla/5.0 test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["location"].to_str().unwrap(), target);
    assert_problem(app.get("/r/nosuchcode").await, StatusCode::NOT_FOUND, "link_not_found").await;
    for bad in [
        json!({"item_id": "", "url": "https://x.example"}),
        json!({"item_id": "i", "url": "http://x.example"}),
        json!({"item_id": "i", "url": "nope"}),
    ] {
        assert_problem(
            app.post("/api/v1/me/links", Some(&clicker.token), &bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
    }

    // The network reports the order without any tracking id (paid after the click).
    let at = now() + 120_000;
    applied(&app, &line("C1", None, NetworkStatus::Paid, 800, 0, at)).await;
    let claim = |m: &Member, no: &str| {
        let body = json!({"order_no": no});
        let token = m.token.clone();
        let app = &app;
        async move { app.post("/api/v1/me/rebate-claims", Some(&token), &body).await }
    };
    assert_problem(claim(&other, "p-C1").await, StatusCode::UNPROCESSABLE_ENTITY, "claim_not_verified").await;
    assert_eq!(wallet(&app, &other).await, (0, 0, 0));
    let res = claim(&clicker, "p-C1").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["claimed"], json!(["C1"]));
    assert_eq!(wallet(&app, &clicker).await, (400, 0, 0), "the shares moved from the platform to the clicker");
    assert_problem(claim(&other, "p-C1").await, StatusCode::CONFLICT, "already_attributed").await;
    assert_eq!(claim(&clicker, "p-C1").await.status(), StatusCode::OK, "claiming your own again is harmless");
    assert_eq!(wallet(&app, &clicker).await, (400, 0, 0));
    assert_problem(claim(&clicker, "p-unknown").await, StatusCode::NOT_FOUND, "order_not_found").await;
    // Later reports of the order keep the claim.
    applied(&app, &line("C1", None, NetworkStatus::Settled, 800, 600, at + 10)).await;
    assert_eq!(wallet(&app, &clicker).await, (300, 0, 0));
    let rejects = app.state.store.recent_rejects(10).await.unwrap();
    assert!(rejects.iter().any(|r| r.reason.contains("no click")), "refused claims are kept for review");
    ledger_clean(&app).await;
}

#[tokio::test]
async fn a_reconciliation_refuses_bad_reports_and_months() {
    let app = TestApp::spawn().await;
    let admin = app.token_for("rc-admin", Role::Admin).await;
    let user = app.token_for("rc-user", Role::User).await;
    let post = |token: &str, month: &str, body: &str| {
        let (client, url, token, body) = (
            app.client.clone(),
            app.url(&format!("/api/v1/admin/rebate-reconciliations?month={month}")),
            token.to_owned(),
            body.to_owned(),
        );
        async move {
            client.post(url).bearer_auth(token).header("content-type", "text/csv").body(body).send().await.unwrap()
        }
    };
    let header = "trade_id,trade_parent_id,tk_status,pub_share_fee,tk_earning_time,refund_fee";
    assert_problem(post(&user, "2026-10", header).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_problem(post(&admin, "2026-13", header).await, StatusCode::BAD_REQUEST, "invalid_query").await;
    assert_problem(post(&admin, "2026-10", "not,a,report").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        .await;
    assert_problem(
        post(&admin, "2026-10", &format!("{header}\n1,1,3,-5,x,0")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    // A report of a line we never saw.
    let res = post(&admin, "2026-10", &format!("{header}\n99,99,3,1.50,2026-10-05 10:00:00,0.00")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let report: Value = res.json().await.unwrap();
    assert_eq!(report["differences"][0]["kind"], "missing_here");
    assert_eq!(report["theirs_total_minor"], 150);
    assert_eq!(app.metric(r#"flashback_rebate_reconciliation_gap_minor"#).await, 150.0);
}

/// Money moved in the ledger with no row behind it is found by the audit, even though the
/// stray transaction itself balances.
#[tokio::test]
async fn the_ledger_audit_finds_money_the_rows_do_not_explain() {
    use flashback_core::Account;
    use flashback_store::{NewTxn, Posting};
    let app = TestApp::spawn_with(fast_hold).await;
    let admin = app.token_for("au-admin", Role::Admin).await;
    let m = member(&app, &admin, "au-buyer", "sid-au", None).await;
    applied(&app, &line("A1", Some("sid-au"), NetworkStatus::Paid, 400, 0, now())).await;
    ledger_clean(&app).await;
    let user = app.state.auth.tokens.verify(&m.token).unwrap().id;
    let stray = NewTxn {
        id: app.state.ids.write_ids().event,
        key: "stray:1".into(),
        kind: "manual".into(),
        reference: "nothing".into(),
        postings: vec![Posting::debit(Account::Receivable, 99), Posting::credit(Account::Pending(user), 99)],
        no_overdraft: Vec::new(),
        at_ms: now(),
    };
    app.state.store.post(&stray).await.unwrap();
    let audit = flashback_server::rebate::audit::audit(&app.state).await.unwrap();
    assert!(audit.violations.iter().any(|v| v.contains("pending 299")), "{:?}", audit.violations);
    assert!(audit.violations.iter().any(|v| v.contains("receivable")), "{:?}", audit.violations);
}

/// Keyset pages of one's own withdrawals, newest first, and a review list that shows only
/// what waits for review unless asked for more.
async fn withdrawal_pages(app: &TestApp, token: &str, admin: &str, all: &Value) {
    let ids: Vec<&Value> = all["items"].as_array().unwrap().iter().map(|w| &w["id"]).collect();
    let first: Value = app.get_as("/api/v1/me/withdrawals?limit=3", token).await.json().await.unwrap();
    let page: Vec<&Value> = first["items"].as_array().unwrap().iter().map(|w| &w["id"]).collect();
    assert_eq!(page, ids[..3]);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second: Value =
        app.get_as(&format!("/api/v1/me/withdrawals?limit=3&cursor={cursor}"), token).await.json().await.unwrap();
    let page: Vec<&Value> = second["items"].as_array().unwrap().iter().map(|w| &w["id"]).collect();
    assert_eq!(page, ids[3..]);
    assert!(second["next_cursor"].is_null());
    // A parameter sent empty, as a form sends a blank field, is as if not sent.
    let blank: Value = app.get_as("/api/v1/me/withdrawals?cursor=&state=&limit=", token).await.json().await.unwrap();
    assert_eq!(blank["items"], all["items"]);
    for bad in ["cursor=abc", "cursor=-5", "limit=0", "limit=101", "state=lost", "before=1"] {
        let res = app.get_as(&format!("/api/v1/me/withdrawals?{bad}"), token).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
    }

    let rejected: Value = app.get_as("/api/v1/me/withdrawals?state=rejected", token).await.json().await.unwrap();
    let rejected = rejected["items"].as_array().unwrap();
    assert!(!rejected.is_empty() && rejected.iter().all(|w| w["state"] == "rejected"));
    let review: Value = app.get_as("/api/v1/admin/withdrawals?limit=100", admin).await.json().await.unwrap();
    assert!(review["items"].as_array().unwrap().iter().all(|w| w["state"] == "requested"), "{review}");
    let everything: Value =
        app.get_as("/api/v1/admin/withdrawals?state=all&limit=100", admin).await.json().await.unwrap();
    assert!(everything["items"].as_array().unwrap().iter().any(|w| w["id"] == rejected[0]["id"]));
}
