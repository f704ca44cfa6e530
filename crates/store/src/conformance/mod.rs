//! One suite of storage cases that every backend must pass, instantiated per backend with
//! [`conformance_suite!`](crate::conformance_suite).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use flashback_core::{
    CategoryId, Cursor, Description, IdGenerator, Images, MerchantId, Money, PageLimit, ProductId, ProductStatus,
    Regions, Role, Sku, Stock, Title, UserId, Username,
};

mod analytics;
mod flash;
mod ledger;
mod node_lease;
mod trade;
mod withdraw;

pub use analytics::*;
pub use flash::*;
pub use ledger::*;
pub use node_lease::*;
pub use trade::*;
pub use withdraw::*;

use crate::testing::TestStore;
use crate::{NewProduct, NewUser, ProductFilter, ProductPatch, Store, StoreError};

/// Expands to one `#[tokio::test]` per conformance case. `$make` is an async function returning
/// `Option<TestStore>`; `None` skips the case (its backend is not configured).
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@cases $make;
            users_are_stored_found_by_id_and_name_and_names_are_unique
            an_account_runs_at_most_one_merchant
            categories_are_unique_by_name_and_listed_by_name
            a_product_is_stored_with_its_inventory_and_skus_are_unique_per_merchant
            a_product_in_an_unknown_category_is_rejected
            listings_are_newest_first_filtered_and_paged_by_cursor
            a_patch_changes_only_the_named_fields_and_only_for_the_owner
            an_inventory_change_with_a_stale_version_changes_nothing
            concurrent_stock_decrements_never_oversell
            a_closed_store_reports_itself_unavailable
            reservations_take_stock_all_or_nothing_and_once_per_order
            releasing_returns_stock_exactly_once
            concurrent_reservations_of_one_sku_never_oversell
            an_order_redeems_points_atomically_or_not_at_all
            an_idempotency_key_returns_the_first_order
            a_batch_of_orders_is_written_once_per_idempotency_key
            racing_order_batches_leave_one_order_per_key
            transitions_are_compare_and_set_and_cancelling_returns_points
            racing_payment_and_expiry_leave_each_order_in_one_state
            the_outbox_keeps_events_until_dispatched_and_consumers_record_once
            orders_are_listed_newest_first_per_buyer_and_merchant
            points_are_added_once_per_reference
            payments_are_recorded_once_and_move_by_compare_and_set
            a_flash_sale_carves_its_stock_and_ending_it_returns_the_unsold_once
            reservations_are_written_once_and_released_ones_are_listed
            a_buyers_key_names_one_reservation_and_a_repeat_takes_nothing
            an_attempt_in_doubt_is_recorded_once_and_settled_once
            the_sql_reserve_fence_finds_a_reservation_only_if_it_was_made
            ledger_transactions_balance_and_apply_once
            statements_walk_each_accounts_chain_and_the_audit_finds_a_break
            concurrent_withdrawals_never_overdraw
            racing_reviews_of_one_users_withdrawals_all_land
            concurrent_batches_keep_every_balance_exact
            profiles_keep_their_inviter_and_tracking_ids_have_one_owner
            balances_of_a_batch_are_exact_for_any_amount
            a_rebate_row_and_its_ledger_move_together_once
            a_batch_of_row_changes_writes_only_what_won_its_race
            rebate_lists_hold_each_buyers_rows_newest_first_and_the_audit_finds_a_break
            rebate_lists_hold_the_rows_inviters_are_paid_from
            rollups_count_each_event_once_per_minute_and_product
            pending_rebates_are_the_ledgers_pending_balances
            backup_verifications_are_recorded_and_the_newest_is_reported
            a_node_is_leased_to_one_holder_until_it_expires_or_is_released
            racing_instances_lease_distinct_nodes
        );
    };
    (@cases $make:path; $($case:ident)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(t) = $make().await else { return };
                $crate::conformance::$case(&t).await;
            }
        )*
    };
}

pub(crate) fn ids() -> IdGenerator {
    static NODE: AtomicU16 = AtomicU16::new(0);
    IdGenerator::new(NODE.fetch_add(1, Ordering::Relaxed) % 64).expect("node in range")
}

pub(crate) fn next<T>(g: &IdGenerator, make: impl Fn(i64) -> Result<T, flashback_core::ParseError>) -> T {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    make(g.next_at(u64::try_from(now).expect("millis fit"))).expect("positive id")
}

pub(crate) async fn user(store: &Arc<dyn Store>, g: &IdGenerator, name: &str, role: Role) -> UserId {
    let id = next(g, UserId::new);
    let new = NewUser { id, username: Username::parse(name).expect("name"), password_hash: "$argon2id$x".into(), role };
    store.create_user(new).await.expect("create user").id
}

/// A merchant account with its merchant, and a category.
pub(crate) async fn shop(store: &Arc<dyn Store>, g: &IdGenerator, name: &str) -> (MerchantId, CategoryId) {
    let owner = user(store, g, name, Role::Merchant).await;
    let m = store.create_merchant(next(g, MerchantId::new), owner, Title::parse(name).expect("t")).await.expect("m");
    let c = store.create_category(next(g, CategoryId::new), Title::parse(&format!("{name} goods")).expect("t")).await;
    (m.id, c.expect("category").id)
}

pub(crate) fn product(
    g: &IdGenerator,
    merchant: MerchantId,
    category: CategoryId,
    sku: &str,
    stock: i64,
) -> NewProduct {
    NewProduct {
        id: next(g, ProductId::new),
        merchant_id: merchant,
        category_id: category,
        sku: Sku::parse(sku).expect("sku"),
        title: Title::parse(&format!("Product {sku}")).expect("title"),
        description: Description::parse("A fine thing.").expect("description"),
        images: serde_json::from_str::<Images>(r#"["https://img.example/1.jpg"]"#).expect("images"),
        list_price: Money::from_minor(1999).expect("money"),
        status: ProductStatus::OnShelf,
        available: Stock::new(stock).expect("stock"),
        regions: serde_json::from_str::<Regions>(r#"["CN-ZJ","CN"]"#).expect("regions"),
    }
}

/// Users can be found by id and by name, and a second account cannot take a name.
pub async fn users_are_stored_found_by_id_and_name_and_names_are_unique(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    let id = user(store, &g, "alice", Role::User).await;
    let found = store.user(id).await.expect("user").expect("exists");
    assert_eq!(found.username.as_str(), "alice");
    assert_eq!(found.role, Role::User);
    let creds = store.credentials(&Username::parse("ALICE").expect("n")).await.expect("c").expect("exists");
    assert_eq!((creds.user.id, creds.password_hash.as_str()), (id, "$argon2id$x"));
    assert!(store.credentials(&Username::parse("nobody").expect("n")).await.expect("c").is_none());
    assert!(store.user(next(&g, UserId::new)).await.expect("user").is_none());

    let again = NewUser {
        id: next(&g, UserId::new),
        username: Username::parse("alice").expect("n"),
        password_hash: "other".into(),
        role: Role::Admin,
    };
    assert!(matches!(store.create_user(again).await, Err(StoreError::Conflict("username"))));
}

/// A merchant account runs one merchant; a second is a conflict.
pub async fn an_account_runs_at_most_one_merchant(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    let owner = user(store, &g, "shopkeeper", Role::Merchant).await;
    let m = store.create_merchant(next(&g, MerchantId::new), owner, Title::parse("Shop").expect("t")).await;
    let m = m.expect("merchant");
    assert_eq!(store.merchant(m.id).await.expect("get").expect("exists"), m);
    assert_eq!(store.merchant_of(owner).await.expect("get").expect("exists").id, m.id);
    let second = store.create_merchant(next(&g, MerchantId::new), owner, Title::parse("Shop 2").expect("t")).await;
    assert!(matches!(second, Err(StoreError::Conflict("merchant"))));
}

/// Category names are unique and categories come back sorted by name.
pub async fn categories_are_unique_by_name_and_listed_by_name(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    for name in ["Tea", "Books", "Electronics"] {
        store.create_category(next(&g, CategoryId::new), Title::parse(name).expect("t")).await.expect("create");
    }
    let dup = store.create_category(next(&g, CategoryId::new), Title::parse("TEA").expect("t")).await;
    assert!(matches!(dup, Err(StoreError::Conflict("category"))), "names are unique regardless of case");
    let names: Vec<String> = store.categories().await.expect("list").into_iter().map(|c| c.name.into()).collect();
    assert_eq!(names, ["Books", "Electronics", "Tea"]);
}

/// A created product reads back whole, inventory included; a merchant's SKUs are unique, but
/// another merchant may use the same code.
pub async fn a_product_is_stored_with_its_inventory_and_skus_are_unique_per_merchant(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    let (m1, c) = shop(store, &g, "first").await;
    let (m2, _) = shop(store, &g, "second").await;
    let created = store.create_product(product(&g, m1, c, "SKU-1", 5)).await.expect("create");
    let read = store.product(created.id).await.expect("read").expect("exists");
    assert_eq!(read, created);
    assert_eq!(read.inventory.available.get(), 5);
    let regions: Vec<&str> = read.inventory.regions.as_slice().iter().map(|r| r.as_str()).collect();
    assert_eq!(regions, ["CN", "CN-ZJ"]);

    let dup = store.create_product(product(&g, m1, c, "SKU-1", 1)).await;
    assert!(matches!(dup, Err(StoreError::Conflict("sku"))), "{dup:?}");
    store.create_product(product(&g, m2, c, "SKU-1", 1)).await.expect("other merchant may reuse the code");
    let same_code = store.create_product(product(&g, m1, c, "sku-1", 1)).await;
    assert!(matches!(same_code, Err(StoreError::Conflict("sku"))), "codes are case-insensitive: {same_code:?}");
}

/// A product naming a category that does not exist is rejected and nothing is stored.
pub async fn a_product_in_an_unknown_category_is_rejected(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    let (m, _) = shop(store, &g, "lonely").await;
    let p = product(&g, m, next(&g, CategoryId::new), "X", 1);
    let id = p.id;
    let res = store.create_product(p).await;
    assert!(matches!(res, Err(StoreError::MissingReference("category"))), "{res:?}");
    assert!(store.product(id).await.expect("read").is_none());
}

/// Listings are newest first, respect every filter, and walking the cursor visits each row once.
pub async fn listings_are_newest_first_filtered_and_paged_by_cursor(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    let (m1, c1) = shop(store, &g, "lister").await;
    let (m2, c2) = shop(store, &g, "other").await;
    let mut mine = Vec::new();
    for i in 0..7 {
        mine.push(store.create_product(product(&g, m1, c1, &format!("A{i}"), 1)).await.expect("p").id);
    }
    store.create_product(product(&g, m2, c2, "B", 1)).await.expect("p");
    let off = store.create_product(product(&g, m1, c1, "OFF", 1)).await.expect("p").id;
    store.set_status(off, m1, ProductStatus::OffShelf).await.expect("off shelf");

    let filter = ProductFilter { category_id: Some(c1), status: Some(ProductStatus::OnShelf), ..Default::default() };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.products(filter, cursor, PageLimit::try_from(3).expect("limit")).await.expect("page");
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        cursor = Some(Cursor { before_id: last.id.get() });
        seen.extend(page.iter().map(|p| p.id));
    }
    mine.reverse();
    assert_eq!(seen, mine, "newest first, each once, off-shelf excluded");

    let by_merchant = ProductFilter { merchant_id: Some(m1), ..Default::default() };
    let all = store.products(by_merchant, None, PageLimit::try_from(100).expect("limit")).await;
    assert_eq!(all.expect("list").len(), 8, "a merchant's own listing includes off-shelf products");
}

/// A patch changes the fields it names and nothing else; another merchant cannot patch.
pub async fn a_patch_changes_only_the_named_fields_and_only_for_the_owner(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    let (m, c) = shop(store, &g, "patcher").await;
    let (intruder, _) = shop(store, &g, "intruder").await;
    let p = store.create_product(product(&g, m, c, "P", 3)).await.expect("p");
    let patch = ProductPatch {
        title: Some(Title::parse("New title").expect("t")),
        list_price: Some(Money::from_minor(2500).expect("m")),
        ..Default::default()
    };
    let after = store.update_product(p.id, m, patch.clone()).await.expect("update");
    assert_eq!(after.title.as_str(), "New title");
    assert_eq!(after.list_price.minor(), 2500);
    assert_eq!((after.sku, after.description, after.inventory), (p.sku, p.description, p.inventory));

    let res = store.update_product(p.id, intruder, patch).await;
    assert!(matches!(res, Err(StoreError::NotFound("product"))), "{res:?}");
    let res = store.adjust_stock(p.id, intruder, -1).await;
    assert!(matches!(res, Err(StoreError::NotFound("product"))), "{res:?}");
    let unknown = store.set_status(next(&g, ProductId::new), m, ProductStatus::OffShelf).await;
    assert!(matches!(unknown, Err(StoreError::NotFound("product"))));
    assert_eq!(store.product(p.id).await.expect("read").expect("exists").inventory.available.get(), 3);
}

/// Setting inventory against an old version fails and leaves stock as it was.
pub async fn an_inventory_change_with_a_stale_version_changes_nothing(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    let (m, c) = shop(store, &g, "versioned").await;
    let p = store.create_product(product(&g, m, c, "V", 10)).await.expect("p");
    let v1 = p.inventory.version;
    let regions = Regions::default();
    let after = store.set_inventory(p.id, m, Stock::new(7).expect("s"), regions.clone(), Some(v1)).await;
    let after = after.expect("set with current version");
    assert_eq!((after.inventory.available.get(), after.inventory.version), (7, v1 + 1));
    let stale = store.set_inventory(p.id, m, Stock::new(99).expect("s"), regions, Some(v1)).await;
    assert!(matches!(stale, Err(StoreError::ConditionFailed("version"))), "{stale:?}");
    let over = store.adjust_stock(p.id, m, -8).await;
    assert!(matches!(over, Err(StoreError::ConditionFailed("stock"))), "{over:?}");
    assert_eq!(store.product(p.id).await.expect("r").expect("e").inventory.available.get(), 7);
}

/// Many concurrent decrements of one SKU take exactly the stock there was, never more.
pub async fn concurrent_stock_decrements_never_oversell(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    let (m, c) = shop(store, &g, "hammered").await;
    let p = store.create_product(product(&g, m, c, "HOT", 25)).await.expect("p");
    let tasks: Vec<_> = (0..80)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.adjust_stock(p.id, m, -1).await })
        })
        .collect();
    let mut sold = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => sold += 1,
            Err(StoreError::ConditionFailed("stock")) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(sold, 25, "exactly the stock there was is sold");
    let left = store.product(p.id).await.expect("r").expect("e").inventory;
    assert_eq!(left.available.get(), 0);
    assert_eq!(left.version, 1 + 25, "each successful decrement is one version");
}

/// After `close`, calls fail as unavailable (what the cache layer turns into a stale read).
pub async fn a_closed_store_reports_itself_unavailable(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    store.close().await;
    let res = store.product(next(&g, ProductId::new)).await;
    assert!(matches!(res, Err(ref e) if e.is_unavailable()), "{res:?}");
    assert!(store.ping().await.is_err());
}
