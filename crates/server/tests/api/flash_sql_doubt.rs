//! The `sql` engine on MariaDB when a commit's answer is lost on the way ([`CommitProxy`] stands
//! in for the network between the store's pool and the server): a purchase whose commit took
//! effect is `202`, one whose commit never reached the server is `503` with nothing taken, and
//! one whose fate the fence cannot learn in time is `pending` and settles to what happened.

use std::time::{Duration, Instant};

use flashback_core::Role;
use flashback_server::config::FlashEngine;
use flashback_store::AttemptState;
use flashback_store::testing::TestStore;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::commit_proxy::{CommitProxy, Cut, authority};
use crate::helpers::{TestApp, assert_problem, test_config};

const SUITE: &str = "flash sql commits in doubt";

/// An instance on the `sql` engine whose catalog store is reached through a proxy, with a sale
/// of 5 units, 1 per buyer.
struct Rig {
    app: TestApp,
    proxy: CommitProxy,
    sale: String,
    _db: TestStore,
}

impl Rig {
    async fn start() -> Option<Self> {
        let db = flashback_store::testing::mysql(SUITE).await?;
        let direct = db.options.url.clone().expect("a mysql url");
        let proxy = CommitProxy::start(authority(&direct)).await;
        let dir = tempfile::tempdir().unwrap();
        let mut c = test_config(dir.path());
        c.store.url = Some(SecretString::from(proxy.url(&direct)));
        c.trade.shard_urls = db.shard_options.urls.iter().cloned().map(SecretString::from).collect();
        c.flash_sale.engine = FlashEngine::Sql;
        c.flash_sale.per_user_per_sec = 1_000;
        let app = TestApp::start(c, dir).await;
        let m = app.token_for("doubtsqlshop", Role::Merchant).await;
        let cat = app.category("Doubt SQL").await;
        let p = app.product(&m, &cat, "DOUBTSQL", 100).await;
        let now = flashback_server::trade::now_ms();
        let body = json!({"product_id": p["id"], "sale_price_minor": 100, "stock": 5, "per_user_limit": 1,
            "starts_at": now - 1_000, "ends_at": now + 600_000});
        let res = app.post("/api/v1/flash-sales", Some(&m), &body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let sale = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        Some(Self { app, proxy, sale, _db: db })
    }

    /// Loses the commit of the next reserve of the sale (its transaction binds the sale id).
    fn cut_next_reserve(&self, cut: Cut) {
        let id: i64 = self.sale.parse().unwrap();
        self.proxy.cut_next_commit(&id.to_le_bytes(), cut);
    }

    async fn buy(&self, token: &str) -> reqwest::Response {
        let url = self.app.url(&format!("/api/v1/flash-sales/{}/purchase", self.sale));
        self.app.client.post(url).bearer_auth(token).send().await.unwrap()
    }

    async fn ticket(&self, token: &str, ticket: &str) -> String {
        let res = self.app.get_as(&format!("/api/v1/flash-sales/tickets/{ticket}"), token).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.unwrap()["status"].as_str().unwrap().to_owned()
    }

    /// Reads the ticket until it is no longer pending; its status.
    async fn settled(&self, token: &str, ticket: &str) -> String {
        let started = Instant::now();
        loop {
            let status = self.ticket(token, ticket).await;
            if status != "pending" {
                return status;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the ticket never settled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Units left in the sale's counter and reservations held, which must add up to 5.
    async fn units(&self) -> (i64, usize) {
        let id = self.sale.parse().unwrap();
        let store = &self.app.state.store;
        let left = store.sale_remaining_counter(id).await.unwrap();
        let held = store.sale_reservations(id).await.unwrap().len();
        assert_eq!(left + i64::try_from(held).unwrap(), 5, "stock and reservations add up");
        (left, held)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_202_and_one_that_never_arrived_is_503() {
    let Some(rig) = Rig::start().await else { return };
    let lucky = rig.app.token_for("answerlost", Role::User).await;
    rig.cut_next_reserve(Cut::After);
    let res = rig.buy(&lucky).await;
    assert_eq!(rig.proxy.cuts(), 1, "the commit's answer was lost");
    assert_eq!(res.status(), StatusCode::ACCEPTED, "MariaDB committed: never a 503");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "queued", "{body}");
    let ticket: i64 = body["ticket_id"].as_str().unwrap().parse().unwrap();
    assert!(rig.app.state.store.flash_reservation(ticket).await.unwrap().is_some(), "the reservation exists");
    assert_problem(rig.buy(&lucky).await, StatusCode::CONFLICT, "limit_reached").await;
    assert_eq!(rig.units().await, (4, 1));

    let unlucky = rig.app.token_for("commitlost", Role::User).await;
    rig.cut_next_reserve(Cut::Before);
    let res = rig.buy(&unlucky).await;
    assert_eq!(rig.proxy.cuts(), 2, "the commit never reached the server");
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    assert_eq!(rig.units().await, (4, 1), "nothing was taken");
    assert_eq!(rig.buy(&unlucky).await.status(), StatusCode::ACCEPTED, "the retry buys");
    assert_eq!(rig.units().await, (3, 2));
    rig.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_fence_cannot_settle_is_pending_and_settles_to_what_happened() {
    let Some(rig) = Rig::start().await else { return };
    for deliver in [true, false] {
        let buyer = rig.app.token_for(&format!("held{deliver}"), Role::User).await;
        rig.cut_next_reserve(Cut::Hold);
        let res = rig.buy(&buyer).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "in doubt is never a 503");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "pending", "{body}");
        let ticket = body["ticket_id"].as_str().unwrap().to_owned();
        let store = &rig.app.state.store;
        let attempt = store.flash_attempt(ticket.parse().unwrap()).await.unwrap().expect("recorded");
        assert_eq!(rig.ticket(&buyer, &ticket).await, "pending", "still held: still unknown");

        rig.proxy.release(deliver);
        let outcome = rig.settled(&buyer, &ticket).await;
        assert_eq!(outcome, if deliver { "queued" } else { "cancelled" });
        let engine = &rig.app.state.flash.engine;
        assert_eq!(engine.settle(&attempt.reservation).await, Ok(deliver), "the fence says the same");
        let recorded = store.flash_attempt(attempt.reservation.id).await.unwrap().unwrap().state;
        assert_eq!(recorded, if deliver { AttemptState::Reserved } else { AttemptState::Cancelled });
        let retry = rig.buy(&buyer).await;
        if deliver {
            assert_problem(retry, StatusCode::CONFLICT, "limit_reached").await;
        } else {
            assert_eq!(retry.status(), StatusCode::ACCEPTED, "cancelled: nothing was taken");
        }
    }
    assert_eq!(rig.units().await, (3, 2));
    rig.app.shutdown().await;
}
