//! A small signed TOP client and helpers shared by the tests.

use std::collections::BTreeMap;

use flashback_affiliate_sim::wire::format_beijing;
use flashback_affiliate_sim::{
    DAY_MS, DEFAULT_EPOCH_MS, HOUR_MS, ORDER_DETAILS_METHOD, OrderRow, RunningSim, SimClock, SimConfig, sign_params,
    start,
};
use serde_json::Value;

/// Far enough after the epoch that every event of a short data set has happened.
pub const LATE: i64 = DEFAULT_EPOCH_MS + 120 * DAY_MS;

/// `orders` line items clicked within the first three hours, the clock at `now_ms`.
pub fn three_hour_config(seed: u64, orders: usize, now_ms: i64) -> SimConfig {
    SimConfig {
        seed,
        orders,
        span_ms: 3 * HOUR_MS - 45 * 60_000,
        time: SimClock::fixed(now_ms),
        ..SimConfig::default()
    }
}

pub async fn spawn(config: SimConfig) -> RunningSim {
    start(config, "127.0.0.1:0".parse().unwrap()).await.expect("simulator starts")
}

/// A TOP client signing with the simulator's credentials.
pub struct Top {
    pub http: reqwest::Client,
    pub url: String,
    pub app_key: String,
    pub secret: String,
}

impl Top {
    pub fn new(sim: &RunningSim) -> Self {
        Top {
            http: reqwest::Client::new(),
            url: sim.router_url(),
            app_key: sim.config().app_key.clone(),
            secret: sim.config().app_secret.clone(),
        }
    }

    /// The common parameters for `method`, plus `extra`, unsigned.
    pub fn params(&self, method: &str, extra: &[(&str, String)]) -> BTreeMap<String, String> {
        let mut params: BTreeMap<String, String> = [
            ("method", method.to_owned()),
            ("app_key", self.app_key.clone()),
            ("timestamp", "2025-06-01 12:00:00".to_owned()),
            ("sign_method", "hmac-sha256".to_owned()),
            ("format", "json".to_owned()),
            ("v", "2.0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        params.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        params
    }

    /// Sends `params` as they are (GET, query string).
    pub async fn send(&self, params: &BTreeMap<String, String>) -> Value {
        self.http.get(&self.url).query(params).send().await.unwrap().json().await.unwrap()
    }

    /// Signs and sends.
    pub async fn call(&self, method: &str, extra: &[(&str, String)]) -> Value {
        let mut params = self.params(method, extra);
        sign_params(&mut params, &self.secret);
        self.send(&params).await
    }

    /// One page of the order feed.
    pub async fn orders(&self, query_type: u8, start_ms: i64, end_ms: i64, extra: &[(&str, String)]) -> Value {
        let mut all = vec![
            ("query_type", query_type.to_string()),
            ("start_time", format_beijing(start_ms)),
            ("end_time", format_beijing(end_ms)),
        ];
        all.extend(extra.iter().cloned());
        self.call(ORDER_DETAILS_METHOD, &all).await
    }

    /// Every row of a window, following `position_index` page by page.
    pub async fn all_orders(&self, query_type: u8, start_ms: i64, end_ms: i64, page_size: u32) -> Vec<OrderRow> {
        let mut rows = Vec::new();
        let mut position = String::new();
        for page_no in 1.. {
            let mut extra = vec![("page_size", page_size.to_string()), ("page_no", page_no.to_string())];
            if !position.is_empty() {
                extra.push(("position_index", position.clone()));
            }
            let answer = self.orders(query_type, start_ms, end_ms, &extra).await;
            let data = &answer["tbk_order_details_get_response"]["data"];
            assert!(data.is_object(), "{answer}");
            rows.extend(page_rows(data));
            position = data["position_index"].as_str().unwrap().to_owned();
            if !data["has_next"].as_bool().unwrap() {
                break;
            }
        }
        rows
    }
}

pub fn page_rows(data: &Value) -> Vec<OrderRow> {
    serde_json::from_value(data["results"]["publisher_order_dto"].clone()).unwrap()
}
