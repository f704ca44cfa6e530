//! The demo data set: an admin, a merchant with products across categories, and two shoppers,
//! all with the known passwords listed in the README. Loading is idempotent.

use anyhow::Context;
use flashback_core::{Description, Images, Money, ProductStatus, Regions, Role, Sku, Stock, Title, Username};
use flashback_store::{NewProduct, StoreError};

use crate::AppState;
use crate::auth::{self, CreateAccountError};

pub mod traffic;

/// Demo accounts: (username, password, role).
pub const ACCOUNTS: &[(&str, &str, Role)] = &[
    ("admin", "admin-password", Role::Admin),
    ("merchant", "merchant-password", Role::Merchant),
    ("alice", "alice-password", Role::User),
    ("bob", "bob-password", Role::User),
];

/// (category, sku, title, price in minor units, stock).
const PRODUCTS: &[(&str, &str, &str, i64, i64)] = &[
    ("Tea", "TEA-LJ-250", "West Lake Longjing green tea, 250 g", 12_900, 500),
    ("Tea", "TEA-PU-357", "Aged Pu'er cake, 357 g", 26_800, 120),
    ("Tea", "TEA-OO-100", "Tieguanyin oolong, 100 g", 8_800, 800),
    ("Electronics", "EL-EARBUD-1", "Wireless earbuds with noise cancelling", 39_900, 1_000),
    ("Electronics", "EL-CHARGER-65", "65 W USB-C GaN charger", 14_900, 2_000),
    ("Electronics", "EL-POWERBANK-20", "20,000 mAh power bank", 12_900, 1_500),
    ("Books", "BK-RUST-2E", "The Rust Programming Language, 2nd edition", 5_990, 300),
    ("Books", "BK-DDIA", "Designing Data-Intensive Applications", 8_990, 250),
    ("Home", "HM-MUG-350", "Double-walled glass mug, 350 ml", 3_900, 3_000),
    ("Home", "HM-LAMP-LED", "LED desk lamp with dimmer", 9_900, 400),
    ("Home", "HM-TOWEL-SET", "Cotton towel set of four", 6_900, 700),
    ("Snacks", "SN-NUTS-MIX", "Daily mixed nuts, 30 packs", 11_900, 5_000),
];

/// Loads whatever part of the demo data set is missing.
pub async fn load(state: &AppState) -> anyhow::Result<()> {
    for (name, password, role) in ACCOUNTS {
        let username = Username::parse(name)?;
        let password = flashback_core::Password::parse((*password).to_owned())?;
        let shop = (*role == Role::Merchant).then(|| Title::parse("Flashback Demo Shop")).transpose()?;
        match auth::create_account(state, username, password, *role, shop).await {
            Ok(_) | Err(CreateAccountError::UsernameTaken) => {}
            Err(e) => return Err(anyhow::anyhow!("creating demo account {name}: {e}")),
        }
    }
    let owner = state.store.credentials(&Username::parse("merchant")?).await?.context("demo merchant account")?;
    let merchant = state.store.merchant_of(owner.user.id).await?.context("demo merchant")?;

    let mut categories = state.store.categories().await?;
    for (category, ..) in PRODUCTS {
        if !categories.iter().any(|c| c.name.as_str() == *category) {
            match state.store.create_category(state.ids.category(), Title::parse(category)?).await {
                Ok(c) => categories.push(c),
                Err(StoreError::Conflict(_)) => categories = state.store.categories().await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    let mut created = 0;
    for (category, sku, title, price, stock) in PRODUCTS {
        let category_id = categories.iter().find(|c| c.name.as_str() == *category).context("category")?.id;
        let new = NewProduct {
            id: state.ids.product(),
            merchant_id: merchant.id,
            category_id,
            sku: Sku::parse(sku)?,
            title: Title::parse(title)?,
            description: Description::parse(&format!("{title}. Part of the Flashback demo catalog."))?,
            images: serde_json::from_value::<Images>(serde_json::json!([format!(
                "https://img.flashback.example/{}.jpg",
                sku.to_ascii_lowercase()
            )]))?,
            list_price: Money::from_minor(*price)?,
            status: ProductStatus::OnShelf,
            available: Stock::new(*stock)?,
            regions: serde_json::from_value::<Regions>(serde_json::json!(["CN", "CN-ZJ", "CN-SH"]))?,
        };
        match state.store.create_product(new).await {
            Ok(_) => created += 1,
            Err(StoreError::Conflict("sku")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(products_created = created, "demo data loaded");
    demo_orders(state, merchant.id).await?;
    demo_rebates(state).await
}

/// Taobao member ids (`special_id`) of the demo shoppers, as the stand-in network knows them.
pub const SPECIAL_IDS: &[(&str, u64)] = &[("alice", 7_000_001), ("bob", 7_000_002)];

/// Rebates for alice and bob: profiles (bob invited by alice), their Taobao member ids, and a
/// few order rows in different states, applied through the ingest path (a second load finds
/// them and changes nothing).
async fn demo_rebates(state: &AppState) -> anyhow::Result<()> {
    use flashback_core::rebate::lifecycle::{NetworkStatus, Report};
    use flashback_store::{RebateProfile, TrackingKind};

    use crate::rebate::ingest::{LineReport, apply, release_due};

    let user = |name: &'static str| async move {
        anyhow::Ok(state.store.credentials(&Username::parse(name)?).await?.context("demo account")?.user.id)
    };
    let (alice, bob) = (user("alice").await?, user("bob").await?);
    state
        .store
        .upsert_rebate_profile(RebateProfile { user_id: alice, tier: flashback_core::Tier::Silver, inviter_id: None })
        .await?;
    if state.store.rebate_profile(bob).await?.is_none() {
        state
            .store
            .upsert_rebate_profile(RebateProfile {
                user_id: bob,
                tier: flashback_core::Tier::Standard,
                inviter_id: Some(alice),
            })
            .await?;
    }
    let now = crate::trade::now_ms();
    for (name, id) in SPECIAL_IDS {
        let owner = if *name == "alice" { alice } else { bob };
        state.store.bind_tracking_id(&id.to_string(), owner, TrackingKind::SpecialId, now).await?;
    }
    const DAY: i64 = 24 * 3600 * 1000;
    // (line, buyer's special id, status, estimate, settled, paid, days ago)
    let rows: &[(&str, u64, NetworkStatus, i64, i64, i64, i64)] = &[
        ("demo-1001", 7_000_001, NetworkStatus::Settled, 1_290, 1_290, 12_900, 40),
        ("demo-1002", 7_000_001, NetworkStatus::Settled, 2_680, 2_540, 26_800, 3),
        ("demo-1003", 7_000_001, NetworkStatus::Received, 880, 0, 8_800, 2),
        ("demo-1004", 7_000_002, NetworkStatus::Paid, 3_990, 0, 39_900, 1),
        ("demo-1005", 7_000_002, NetworkStatus::Invalid, 1_490, 0, 14_900, 5),
    ];
    for (key, sid, status, estimate, settled, paid, days) in rows {
        let at = now - days * DAY;
        let line = LineReport {
            source: crate::rebate::taobao::SOURCE.into(),
            line_key: (*key).into(),
            parent_key: (*key).into(),
            item_id: format!("{}", 600_000 + paid / 100),
            item_title: "Demo item".into(),
            category: None,
            tracking: Some(sid.to_string()),
            buyer: None,
            report: Report {
                status: *status,
                estimate: Money::from_minor(*estimate)?,
                settled: Money::from_minor(*settled)?,
                refunded: Money::ZERO,
                // Fixed per row, so a second load is a duplicate report.
                modified_ms: (at / DAY) * DAY,
                settled_at_ms: (*status == NetworkStatus::Settled).then_some((at / DAY) * DAY),
            },
            paid: Money::from_minor(*paid)?,
            click_ms: Some((at / DAY) * DAY - 3_600_000),
            paid_at_ms: Some((at / DAY) * DAY - 1_800_000),
        };
        apply(state, &line).await.map_err(|e| anyhow::anyhow!("demo rebate {key}: {e}"))?;
    }
    release_due(state).await.map_err(|e| anyhow::anyhow!("demo rebates: {e}"))?;
    Ok(())
}

/// The stand-in Taobao network for `serve --demo`: fifteen days of orders, some of them the
/// demo shoppers', on the wall clock (rows keep changing as their time comes), and a
/// connector that polls it.
pub async fn affiliate_network()
-> anyhow::Result<(flashback_affiliate_sim::RunningSim, crate::rebate::taobao::Connector)> {
    use flashback_affiliate_sim::{SimClock, SimConfig, TrackingId};
    const DAY: i64 = 24 * 3600 * 1000;
    let now = crate::trade::now_ms();
    let config = SimConfig {
        seed: 2026,
        orders: 150,
        epoch_ms: now - 15 * DAY,
        span_ms: 15 * DAY,
        tracking_ids: SPECIAL_IDS.iter().map(|(_, id)| TrackingId::special(*id, 1_001)).collect(),
        time: SimClock::wall(),
        ..SimConfig::default()
    };
    let sim = flashback_affiliate_sim::start(config, "127.0.0.1:0".parse()?).await?;
    let connector = crate::rebate::taobao::Connector {
        url: sim.router_url(),
        app_key: sim.config().app_key.clone(),
        app_secret: sim.config().app_secret.clone(),
        window_ms: 3 * 3600 * 1000,
        overlap_ms: 20 * 60 * 1000,
        start_ms: now - 16 * DAY,
        page_size: 100,
        batch_rows: 2_000,
        breaker: flashback_core::breaker::Breaker::new("affiliate", Default::default()),
        cursor_name: crate::rebate::taobao::SOURCE.into(),
    };
    Ok((sim, connector))
}

/// Orders of alice's in every state, each placed under its own idempotency key so that a
/// second load finds them instead of placing more.
async fn demo_orders(state: &AppState, merchant: flashback_core::MerchantId) -> anyhow::Result<()> {
    use flashback_core::{IdempotencyKey, OrderState, PageLimit, Points, Quantity, Transition};
    use flashback_store::{PaymentState, ProductFilter};

    use crate::auth::Caller;
    use crate::trade::lifecycle::apply;
    use crate::trade::place::place;
    use crate::trade::views::{LineRequest, PlaceOrder};

    let alice = state.store.credentials(&Username::parse("alice")?).await?.context("demo account alice")?.user;
    let shard = state.shards.for_buyer(alice.id);
    let grant = state.ids.write_ids().entry;
    shard.add_points(grant, alice.id, Points::new(2_000)?, "grant", "demo:grant:alice").await?;
    let filter = ProductFilter { merchant_id: Some(merchant), ..Default::default() };
    let products = state.store.products(filter, None, PageLimit::try_from(100)?).await?;
    let caller = Caller { id: alice.id, role: Role::User, merchant: None };
    let steps: &[(&str, &[Transition])] = &[
        ("pending", &[]),
        ("paid", &[Transition::Pay]),
        ("shipped", &[Transition::Pay, Transition::Ship]),
        ("completed", &[Transition::Pay, Transition::Ship, Transition::Complete]),
        ("cancelled", &[Transition::Cancel]),
        ("refunded", &[Transition::Pay, Transition::Refund]),
    ];
    for (i, (name, path)) in steps.iter().enumerate() {
        let product = products.get(i % products.len().max(1)).context("demo products")?;
        let body = PlaceOrder {
            lines: vec![LineRequest { product_id: product.id, quantity: Quantity::new(1)? }],
            points: Points::new(if *name == "cancelled" { 100 } else { 0 })?,
        };
        let key = IdempotencyKey::parse(&format!("demo-{name}"))?;
        let (order, replayed) =
            place(state, caller, key, body).await.map_err(|e| anyhow::anyhow!("demo order {name}: {e}"))?;
        if replayed {
            continue;
        }
        for t in path.iter() {
            let from = (*t == Transition::Refund).then_some(OrderState::Paid);
            if *t == Transition::Pay {
                let payment = format!("demo_{}", order.id);
                shard.create_payment(&payment, order.id, order.payable).await?;
                shard.set_payment_state(&payment, PaymentState::Created, PaymentState::Succeeded).await?;
            }
            apply(state, order.id, *t, from).await.map_err(|e| anyhow::anyhow!("demo order {name}: {e}"))?;
            if *t == Transition::Refund {
                crate::trade::payments::refund_succeeded_payments(state, order.id)
                    .await
                    .map_err(|e| anyhow::anyhow!("demo order {name}: {e}"))?;
            }
        }
    }
    tracing::info!("demo orders in every state are present");
    Ok(())
}
