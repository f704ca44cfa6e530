//! Everything the storm needs, made through the public API: a product with the sale's stock,
//! buyer accounts (registered and logged in concurrently), and a flash sale starting now.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{Api, api_error, field};

/// Registrations and logins in flight at once.
const SETUP_CONCURRENCY: usize = 32;
/// Whether the login throttle note was printed.
static THROTTLE_NOTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The sale price of the bench product, in minor units.
pub const SALE_PRICE_MINOR: i64 = 990;

/// A logged-in buyer.
#[derive(Debug, Clone)]
pub struct Buyer {
    /// The account id.
    pub id: String,
    /// `Bearer` token.
    pub token: String,
}

/// What the storm buys and who buys it.
#[derive(Debug)]
pub struct Fixture {
    /// The sale.
    pub sale_id: String,
    /// The product on sale.
    pub product_id: String,
    /// The buyers, in the order clients take them.
    pub buyers: Vec<Buyer>,
}

/// Sizes of the fixture.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Buyer accounts.
    pub users: usize,
    /// Units in the sale.
    pub stock: i64,
    /// Units per buyer.
    pub per_user_limit: i64,
    /// How long the sale stays open.
    pub open_for: Duration,
    /// Account that creates the product and the sale.
    pub admin_user: String,
    /// Its password.
    pub admin_password: String,
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Logs in, retrying while the login limiter answers 429 (waiting its `Retry-After`).
pub async fn login(api: &Api, username: &str, password: &str) -> anyhow::Result<Value> {
    let body = json!({ "username": username, "password": password });
    let mut waited = Duration::ZERO;
    loop {
        match api.post::<Value>("api/v1/auth/login", None, &body).await {
            Ok(v) => return Ok(v),
            Err(e) => match api_error(&e) {
                Some(a) if a.status == StatusCode::TOO_MANY_REQUESTS && waited < Duration::from_secs(120) => {
                    if !THROTTLE_NOTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        eprintln!(
                            "bench: note: the server throttles logins (auth.login_per_ip_per_minute); setup waits \
                             its Retry-After: raise the limit on the target or use fewer --users"
                        );
                    }
                    let wait = Duration::from_secs(a.retry_after.unwrap_or(1).max(1));
                    waited += wait;
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(e.context(format!("logging in as {username}"))),
            },
        }
    }
}

/// Makes the fixture: product, buyers, then the sale (last, so it starts right before the storm).
pub async fn prepare(api: &Api, plan: &Plan) -> anyhow::Result<Fixture> {
    let tag = format!("{:010x}", now_ms() & 0xff_ffff_ffff);
    let admin = login(api, &plan.admin_user, &plan.admin_password).await?;
    let admin_token = field(&admin, "token", "login")?.to_owned();
    let role = admin.pointer("/user/role").and_then(Value::as_str).unwrap_or_default();
    let product_id = create_product(api, &admin_token, role, &tag, plan.stock).await?;

    let started = Instant::now();
    let buyers = register_buyers(api, &tag, plan.users).await?;
    eprintln!("bench: {} buyers registered and logged in in {:.1} s", buyers.len(), started.elapsed().as_secs_f64());

    let now = now_ms();
    let open_ms = i64::try_from(plan.open_for.as_millis()).unwrap_or(i64::MAX);
    let sale: Value = api
        .post(
            "api/v1/flash-sales",
            Some(&admin_token),
            &json!({
                "product_id": product_id,
                "sale_price_minor": SALE_PRICE_MINOR,
                "stock": plan.stock,
                "per_user_limit": plan.per_user_limit,
                "starts_at": now - 1000,
                "ends_at": now + open_ms,
            }),
        )
        .await
        .context("creating the flash sale")?;
    let sale_id = field(&sale, "id", "created sale")?.to_owned();
    Ok(Fixture { sale_id, product_id, buyers })
}

/// Units the bench's product holds beyond the sale's stock. Between the product and the sale
/// the buyers register (seconds), and a `--demo` server's traffic (a few orders a second on
/// any listed product) may buy some of it meanwhile: creating the sale then failed with
/// `409 insufficient_stock` (seen once in a few runs). The surplus stays with the product.
const PRODUCT_HEADROOM: i64 = 10_000;

/// A product of the account's merchant (or, for an admin, of the first merchant listed) with
/// `stock` units available for the sale (and [`PRODUCT_HEADROOM`] more), in the first category
/// (an admin creates "Bench" if there is none).
pub async fn create_product(api: &Api, token: &str, role: &str, tag: &str, stock: i64) -> anyhow::Result<String> {
    let merchant_id = match role {
        "merchant" => None,
        "admin" => {
            let page: Value = api.get("api/v1/products?limit=1", None).await.context("finding a merchant")?;
            let Some(m) = page.pointer("/items/0/merchant_id").and_then(Value::as_str) else {
                bail!("no product lists a merchant to sell through; log in as a merchant (--admin-user) instead")
            };
            Some(m.to_owned())
        }
        other => bail!("--admin-user has role {other:?}: it needs to be an admin or a merchant"),
    };
    let categories: Value = api.get("api/v1/categories", None).await.context("listing categories")?;
    let category_id = match categories.pointer("/0/id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => {
            let c: Value = api
                .post("api/v1/categories", Some(token), &json!({ "name": "Bench" }))
                .await
                .context("creating a category")?;
            field(&c, "id", "created category")?.to_owned()
        }
    };
    let mut body = json!({
        "sku": format!("BENCH-{tag}"),
        "title": "Flash-sale bench product",
        "list_price_minor": 9900,
        "category_id": category_id,
        "available": stock.saturating_add(PRODUCT_HEADROOM),
    });
    if let Some(m) = merchant_id {
        body["merchant_id"] = Value::String(m);
    }
    let product: Value = api.post("api/v1/products", Some(token), &body).await.context("creating the product")?;
    Ok(field(&product, "id", "created product")?.to_owned())
}

/// The username and password of buyer `i` of the run tagged `tag`.
pub fn buyer_credentials(tag: &str, i: usize) -> (String, String) {
    (format!("fb{tag}.{i}"), format!("bench-password-{tag}"))
}

/// Registers `n` buyers ([`buyer_credentials`]) and logs each in, [`SETUP_CONCURRENCY`] at a
/// time.
pub async fn register_buyers(api: &Api, tag: &str, n: usize) -> anyhow::Result<Vec<Buyer>> {
    let password = buyer_credentials(tag, 0).1;
    let done = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::iter(0..n)
        .map(|i| {
            let (password, done) = (&password, &done);
            async move {
                let username = buyer_credentials(tag, i).0;
                let body = json!({ "username": username, "password": password });
                match api.post::<Value>("api/v1/auth/register", None, &body).await {
                    Ok(_) => {}
                    Err(e) if api_error(&e).is_some_and(|a| a.code.as_deref() == Some("username_taken")) => {}
                    Err(e) => return Err(e.context(format!("registering {username}"))),
                }
                let login = login(api, &username, password).await?;
                let buyer = Buyer {
                    id: login.pointer("/user/id").and_then(Value::as_str).context("login: no user.id")?.to_owned(),
                    token: field(&login, "token", "login")?.to_owned(),
                };
                let finished = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if finished % 1000 == 0 {
                    eprintln!("bench: {finished}/{n} buyers ready");
                }
                Ok(buyer)
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}
