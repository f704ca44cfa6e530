//! Signed requests with extreme numbers, correctly signed so they get past the signature:
//! affiliate postbacks (times, amounts, status) and payment notifications (amount, time).

use flashback_server::rebate::postback;
use flashback_server::trade::payments;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Driver, EXTREMES, json_forms, world};
use crate::helpers::TestApp;

const SECRET: &str = "postback-secret-of-at-least-thirty-two-bytes";

/// A conversion row as a network pushes it, with `@` in `field`.
fn row(field: &str) -> String {
    let mut v = json!({"trade_id": "X#", "trade_parent_id": "P#", "tk_status": 12,
        "modified_time": "2026-01-01 00:00:00", "item_id": "1", "item_title": "t",
        "pub_share_pre_fee": "1.00", "alipay_total_price": "10.00", "click_time": "2026-01-01 00:00:00",
        "tk_paid_time": "2026-01-01 00:00:00"});
    v[field] = json!("@");
    if field == "pub_share_fee" {
        v["tk_status"] = json!(3);
    }
    v.to_string().replace("\"@\"", "@")
}

/// The signature header for `body` at `t` (any text; only whole numbers can match).
fn postback_header(t: &str, body: &str) -> String {
    match t.parse::<i64>() {
        Ok(t) => postback::sign(SECRET.as_bytes(), t, body.as_bytes()),
        Err(_) => format!("t={t},v1=00"),
    }
}

#[tokio::test]
async fn signed_postbacks_with_extreme_numbers_get_prompt_answers_below_500() {
    let app =
        TestApp::spawn_with(|c| c.rebate.postback_secret = Some(secrecy::SecretString::from(SECRET.to_owned()))).await;
    let mut d = Driver::new(&app);
    let url = "/api/v1/affiliate/postbacks/taobao";
    let now = (flashback_server::trade::now_ms() / 1000).to_string();
    let fields = [
        "tk_status",
        "trade_id",
        "item_id",
        "pub_share_pre_fee",
        "alipay_total_price",
        "pub_share_fee",
        "modified_time",
        "click_time",
        "tk_paid_time",
        "tk_earning_time",
    ];
    let mut n = 0;
    for field in fields {
        for v in json_forms() {
            // Each row its own (`#` made unique before signing, so the signed body is the one sent).
            n += 1;
            let body = row(field).replace('@', &v).replace('#', &n.to_string());
            let header = postback_header(&now, &body);
            d.send(&Method::POST, url, None, Some(&body), &[(postback::SIGNATURE_HEADER, header)]).await;
        }
    }
    // The signing time itself.
    for t in EXTREMES {
        let body = row("tk_status").replace('@', "12").replace('#', &format!("t{t}"));
        let header = postback_header(t, &body);
        d.send(&Method::POST, url, None, Some(&body), &[(postback::SIGNATURE_HEADER, header)]).await;
    }
    d.finish().await;
    app.shutdown().await;
}

/// A notification that `amount` was paid for the world's order.
struct Payment {
    order: String,
    payment_id: String,
}

impl Payment {
    async fn new(app: &TestApp) -> Self {
        let w = world(app).await;
        let res = app.post(&format!("/api/v1/orders/{}/payments", w.order), Some(&w.buyer), &json!({})).await;
        let payment: Value = res.json().await.unwrap();
        Self { order: w.order, payment_id: payment["payment_id"].as_str().unwrap().to_owned() }
    }

    fn notification(&self, amount: &str) -> String {
        let (order, payment_id) = (&self.order, &self.payment_id);
        format!(
            r#"{{"notification_id":"n-{amount}","payment_id":"{payment_id}","order_id":"{order}","amount_minor":{amount},"status":"succeeded"}}"#
        )
    }
}

/// The timestamp and signature headers of a notification signed at `t` (only whole numbers can
/// be signed; anything else gets a signature that cannot match).
fn notify_headers(key: &[u8], t: &str, body: &str) -> Vec<(&'static str, String)> {
    let signature = t.parse::<i64>().map_or_else(|_| "v1=00".to_owned(), |n| payments::sign(key, n, body.as_bytes()));
    vec![(payments::TIMESTAMP_HEADER, t.to_owned()), (payments::SIGNATURE_HEADER, signature)]
}

#[tokio::test]
async fn signed_payment_notifications_of_extreme_amounts_get_prompt_answers_below_500() {
    let app = TestApp::spawn().await;
    let payment = Payment::new(&app).await;
    let key = app.state.trade.payment_key.clone();
    let mut d = Driver::new(&app);
    let now = (flashback_server::trade::now_ms() / 1000).to_string();
    for amount in json_forms() {
        let body = payment.notification(&amount);
        d.send(&Method::POST, "/api/v1/payments/notify", None, Some(&body), &notify_headers(&key, &now, &body)).await;
    }
    d.finish().await;
    app.shutdown().await;
}

/// A notification correctly signed at i64::MIN seconds once overflowed `(now_secs - ts).abs()`
/// in `trade::payments::verify` (a 500 in debug builds; in release it wrapped).
#[tokio::test]
async fn payment_notifications_signed_at_extreme_times_get_prompt_answers_below_500() {
    let app = TestApp::spawn().await;
    let payment = Payment::new(&app).await;
    let key = app.state.trade.payment_key.clone();
    let mut d = Driver::new(&app);
    for t in EXTREMES {
        let body = payment.notification("1");
        d.send(&Method::POST, "/api/v1/payments/notify", None, Some(&body), &notify_headers(&key, t, &body)).await;
    }
    d.finish().await;
    app.shutdown().await;
}
