//! Flash-sale idempotency keys and attempts in doubt.

use std::sync::Arc;

use flashback_core::{Money, SaleId, UserId};

use super::{ids, next, product, shop, user};
use crate::testing::TestStore;
use crate::{AttemptState, FlashReservation, FlashSale, NewFlashSale, ReservationStatus, Store};

fn now_ms() -> i64 {
    crate::now_ms()
}

async fn sale(store: &Arc<dyn Store>, g: &flashback_core::IdGenerator, name: &str, stock: i64) -> FlashSale {
    let (m, c) = shop(store, g, name).await;
    let p = store.create_product(product(g, m, c, name, stock)).await.expect("product").id;
    let now = now_ms();
    let new = NewFlashSale {
        id: next(g, SaleId::new),
        merchant_id: m,
        product_id: p,
        sale_price: Money::from_minor(100).expect("money"),
        stock,
        per_user_limit: 100,
        starts_at_ms: now - 1_000,
        ends_at_ms: now + 60_000,
        require_token: false,
    };
    store.create_sale(new).await.expect("sale")
}

fn attempt(g: &flashback_core::IdGenerator, sale: SaleId, user: UserId, key: Option<&str>) -> FlashReservation {
    FlashReservation {
        id: g.next_at(u64::try_from(now_ms()).expect("positive")),
        sale_id: sale,
        user_id: user,
        quantity: 1,
        status: ReservationStatus::Reserved,
        order_id: None,
        created_at_ms: now_ms(),
        idempotency_key: key.map(str::to_owned),
    }
}

/// A buyer's key names one reservation: the `sql` reserve step answers a repeat with the first
/// reservation and takes nothing (even once sold out, and for another sale), racing repeats
/// reserve once, keys are per buyer and case-sensitive, and imported rows keep their key.
pub async fn a_buyers_key_names_one_reservation_and_a_repeat_takes_nothing(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    let one = sale(store, &g, "keyone", 1).await;
    let many = sale(store, &g, "keymany", 50).await;
    let buyer = user(store, &g, "keybuyer", flashback_core::Role::User).await;
    let other = user(store, &g, "keyother", flashback_core::Role::User).await;

    let first = attempt(&g, one.id, buyer, Some("k-1"));
    assert_eq!(store.sql_reserve(&first, 1, now_ms()).await.expect("reserve"), None);
    for (s, user) in [(one.id, buyer), (many.id, buyer)] {
        let again = attempt(&g, s, user, Some("k-1"));
        let earlier = store.sql_reserve(&again, 100, now_ms()).await.expect("repeat");
        assert_eq!(earlier.map(|r| (r.id, r.sale_id)), Some((first.id, one.id)), "the first, of its own sale");
        assert!(store.flash_reservation(again.id).await.expect("read").is_none(), "the repeat wrote nothing");
    }
    assert_eq!(store.sale_remaining_counter(one.id).await.expect("counter"), 0);
    assert_eq!(store.sale_remaining_counter(many.id).await.expect("counter"), 50, "nothing taken by repeats");
    let found = store.flash_reservation_by_key(buyer, "k-1").await.expect("by key").expect("found");
    assert_eq!((found.id, found.idempotency_key.as_deref()), (first.id, Some("k-1")));
    assert!(store.flash_reservation_by_key(buyer, "K-1").await.expect("by key").is_none(), "case-sensitive");
    assert!(store.flash_reservation_by_key(other, "k-1").await.expect("by key").is_none(), "per buyer");
    let theirs = attempt(&g, many.id, other, Some("k-1"));
    assert_eq!(store.sql_reserve(&theirs, 100, now_ms()).await.expect("another buyer's key"), None);

    // Racing repeats of one key: exactly one reservation, every other answer names it.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, r) = (Arc::clone(store), attempt(&g, many.id, buyer, Some("race")));
            tokio::spawn(async move { (r.id, store.sql_reserve(&r, 100, now_ms()).await.expect("reserve")) })
        })
        .collect();
    let mut made = Vec::new();
    let mut named = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            (id, None) => made.push(id),
            (_, Some(earlier)) => named.push(earlier.id),
        }
    }
    assert_eq!(made.len(), 1, "one reservation per key");
    assert!(named.iter().all(|id| *id == made[0]), "{named:?} all name {made:?}");
    assert_eq!(store.sale_remaining_counter(many.id).await.expect("counter"), 48);

    // An importer's rows keep their key, and a redelivery changes nothing.
    let imported = attempt(&g, many.id, buyer, Some("imported"));
    store.insert_reservations(std::slice::from_ref(&imported)).await.expect("import");
    store.insert_reservations(std::slice::from_ref(&imported)).await.expect("again");
    let read = store.flash_reservation(imported.id).await.expect("read").expect("stored");
    assert_eq!(read.idempotency_key.as_deref(), Some("imported"));
    assert_eq!(
        store.flash_reservation_by_key(buyer, "imported").await.expect("by key").map(|r| r.id),
        Some(imported.id)
    );
}

/// An attempt answered as pending is recorded once and settled once; only pending ones are
/// listed for settling.
pub async fn an_attempt_in_doubt_is_recorded_once_and_settled_once(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    let s = sale(store, &g, "doubtful", 5).await;
    let buyer = user(store, &g, "doubter", flashback_core::Role::User).await;
    let (a, b) = (attempt(&g, s.id, buyer, Some("in-doubt")), attempt(&g, s.id, buyer, None));
    for r in [&a, &a, &b] {
        store.record_flash_attempt(r).await.expect("record");
    }
    let read = store.flash_attempt(a.id).await.expect("read").expect("recorded");
    assert_eq!((read.state, &read.reservation), (AttemptState::Pending, &a));
    let pending: Vec<i64> = store.pending_flash_attempts(10).await.expect("pending").iter().map(|r| r.id).collect();
    assert_eq!(pending, vec![a.id, b.id]);
    assert!(store.settle_flash_attempt(a.id, AttemptState::Cancelled).await.expect("settle"));
    assert!(!store.settle_flash_attempt(a.id, AttemptState::Reserved).await.expect("settle"), "settled once");
    assert_eq!(store.flash_attempt(a.id).await.expect("read").expect("recorded").state, AttemptState::Cancelled);
    let pending: Vec<i64> = store.pending_flash_attempts(10).await.expect("pending").iter().map(|r| r.id).collect();
    assert_eq!(pending, vec![b.id]);
    assert!(store.flash_attempt(next(&g, Ok::<i64, flashback_core::ParseError>)).await.expect("read").is_none());
    // Settled attempts are pruned once old enough; a pending one stays, whatever its age.
    assert_eq!(store.prune_flash_attempts(0, 10).await.expect("prune"), 0, "none settled that long ago");
    let later = crate::now_ms() + 1;
    assert_eq!(store.prune_flash_attempts(later, 10).await.expect("prune"), 1);
    assert!(store.flash_attempt(a.id).await.expect("read").is_none());
    assert_eq!(store.flash_attempt(b.id).await.expect("read").expect("kept").state, AttemptState::Pending);
    assert_eq!(store.prune_flash_attempts(later, 10).await.expect("prune"), 0);
}

/// The fence of a `sql` reserve step whose commit's answer was lost: a reservation the step
/// made is found (and stays found once released), one it refused or never ran is not.
pub async fn the_sql_reserve_fence_finds_a_reservation_only_if_it_was_made(t: &TestStore) {
    let store = &t.store;
    let g = ids();
    let s = sale(store, &g, "fenced", 2).await;
    let buyer = user(store, &g, "fencebuyer", flashback_core::Role::User).await;
    let made = attempt(&g, s.id, buyer, None);
    assert_eq!(store.sql_reserve(&made, 100, now_ms()).await.expect("reserve"), None);
    assert!(store.sql_reservation_settled(made.id).await.expect("fence"), "reserved");
    let refused = FlashReservation { quantity: 5, ..attempt(&g, s.id, buyer, None) };
    assert!(store.sql_reserve(&refused, 100, now_ms()).await.is_err(), "more than is left");
    assert!(!store.sql_reservation_settled(refused.id).await.expect("fence"), "refused: nothing written");
    let never = attempt(&g, s.id, buyer, None);
    assert!(!store.sql_reservation_settled(never.id).await.expect("fence"), "never ran");
    assert!(store.release_reservation(made.id).await.expect("release").is_some());
    assert!(store.sql_reservation_settled(made.id).await.expect("fence"), "released, but it was made");
    assert_eq!(store.sale_remaining_counter(s.id).await.expect("counter"), 2, "the fence took nothing");
}
