//! `serve --demo`'s traffic generator: a few orders a second placed and paid as the demo
//! shoppers, a flash sale now and then with purchases against it, and tracking events, all sent
//! to the instance's own HTTP API so the dashboard shows live traffic through the real paths.
//!
//! Bounded: one task, one request at a time, each with a timeout; it stops on shutdown. Errors
//! (sold out, stock gone, a limit hit) are part of the traffic and only logged at debug level;
//! a 404 from `POST /api/v1/track` (not there yet) is ignored.

use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Time between two orders (about three a second).
const ORDER_EVERY: Duration = Duration::from_millis(330);
/// Orders between two flash sales.
const SALE_EVERY: u64 = 90;

struct Traffic {
    client: Client,
    base: String,
    shoppers: Vec<String>,
    merchant: String,
    products: Vec<(String, i64)>,
    sale: Option<String>,
}

async fn login(client: &Client, base: &str, user: &str, password: &str) -> anyhow::Result<String> {
    let res = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await?
        .error_for_status()?;
    let body: Value = res.json().await?;
    body["token"].as_str().map(str::to_owned).context("login answered without a token")
}

impl Traffic {
    async fn start(base: String) -> anyhow::Result<Self> {
        let client = Client::builder().timeout(Duration::from_secs(5)).build()?;
        let mut shoppers = Vec::new();
        for (name, password, role) in super::ACCOUNTS {
            if *role == flashback_core::Role::User {
                shoppers.push(login(&client, &base, name, password).await?);
            }
        }
        let merchant = login(&client, &base, "merchant", "merchant-password").await?;
        let page: Value =
            client.get(format!("{base}/api/v1/products?limit=50")).send().await?.error_for_status()?.json().await?;
        let products = page["items"]
            .as_array()
            .context("product page")?
            .iter()
            .filter_map(|p| Some((p["id"].as_str()?.to_owned(), p["list_price_minor"].as_i64()?)))
            .collect::<Vec<_>>();
        anyhow::ensure!(!products.is_empty(), "the demo catalog is empty");
        Ok(Self { client, base, shoppers, merchant, products, sale: None })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> anyhow::Result<reqwest::Response> {
        let mut req = self.client.post(self.url(path)).json(body);
        if path == "/api/v1/orders" {
            req = req.header("idempotency-key", uuid::Uuid::new_v4().to_string());
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Ok(req.send().await?)
    }

    /// Places and pays one order; tops the product's stock up when it ran out.
    async fn order(&self) -> anyhow::Result<()> {
        let (shopper, (product, quantity)) = {
            let mut rng = rand::rng();
            let p = &self.products[rng.random_range(0..self.products.len())];
            (&self.shoppers[rng.random_range(0..self.shoppers.len())], (p.0.clone(), rng.random_range(1..=3)))
        };
        let res = self
            .post("/api/v1/orders", Some(shopper), &json!({"lines": [{"product_id": product, "quantity": quantity}]}))
            .await?;
        if res.status() == StatusCode::CONFLICT {
            let path = format!("/api/v1/products/{product}/inventory/adjustments");
            self.post(&path, Some(&self.merchant), &json!({"delta": 1000})).await?.error_for_status()?;
            return Ok(());
        }
        let order: Value = res.error_for_status()?.json().await?;
        let id = order["id"].as_str().context("order id")?;
        let payment: Value = self
            .post(&format!("/api/v1/orders/{id}/payments"), Some(shopper), &json!({}))
            .await?
            .error_for_status()?
            .json()
            .await?;
        let pay_url = payment["pay_url"].as_str().context("pay url")?;
        self.post(pay_url, None, &json!({})).await?.error_for_status()?;
        Ok(())
    }

    /// Opens a two-minute flash sale of 40 units on a random product.
    async fn open_sale(&mut self) -> anyhow::Result<()> {
        let (product, price) = self.products[rand::rng().random_range(0..self.products.len())].clone();
        let now = crate::trade::now_ms();
        let body = json!({"product_id": product, "sale_price_minor": (price / 2).max(1), "stock": 40,
            "per_user_limit": 20, "starts_at": now, "ends_at": now + 120_000, "require_token": false});
        let res = self.post("/api/v1/flash-sales", Some(&self.merchant), &body).await?.error_for_status()?;
        let sale: Value = res.json().await?;
        self.sale = sale["id"].as_str().map(str::to_owned);
        Ok(())
    }

    /// One purchase attempt at the current sale by a random shopper.
    async fn flash_purchase(&self) -> anyhow::Result<()> {
        let Some(sale) = &self.sale else { return Ok(()) };
        let shopper = &self.shoppers[rand::rng().random_range(0..self.shoppers.len())];
        self.post(&format!("/api/v1/flash-sales/{sale}/purchase"), Some(shopper), &json!({})).await?;
        Ok(())
    }

    /// A handful of tracking events from anonymous visitors.
    async fn track(&self) -> anyhow::Result<()> {
        let events: Vec<Value> = {
            let mut rng = rand::rng();
            (0..rng.random_range(3..12))
                .map(|_| {
                    let (product, _) = &self.products[rng.random_range(0..self.products.len())];
                    let action = ["view", "view", "view", "click", "add_to_cart", "share"][rng.random_range(0..6)];
                    json!({"anonymous_id": format!("a{}", rng.random_range(1..500)), "module": "home",
                        "action": action, "object_type": "sku", "object_id": product})
                })
                .collect()
        };
        let res = self.post("/api/v1/track", None, &json!({ "events": events })).await?;
        if res.status() != StatusCode::NOT_FOUND && !res.status().is_success() {
            tracing::debug!(status = %res.status(), "demo tracking batch refused");
        }
        Ok(())
    }
}

/// Starts the generator against the instance at `base` (e.g. `http://127.0.0.1:8080`), which
/// must have the demo data loaded; it stops when `shutdown` is cancelled.
pub fn spawn(base: String, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut traffic = loop {
            match Traffic::start(base.clone()).await {
                Ok(t) => break t,
                Err(e) => tracing::warn!(error = %e, "demo traffic cannot start yet; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        };
        tracing::info!(shoppers = traffic.shoppers.len(), "demo traffic generator running");
        let mut tick = tokio::time::interval(ORDER_EVERY);
        for n in 0u64.. {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if n % SALE_EVERY == 0
                && let Err(e) = traffic.open_sale().await
            {
                tracing::debug!(error = %e, "demo flash sale not opened");
            }
            let step = match n % 3 {
                0 => traffic.order().await.and(traffic.track().await),
                1 => traffic.order().await.and(traffic.flash_purchase().await),
                _ => traffic.order().await,
            };
            if let Err(e) = step {
                tracing::debug!(error = %e, "demo traffic step failed");
            }
        }
    })
}
