//! Conformance cases for stock reservations and order shards.

use std::sync::Arc;

use flashback_core::{
    IdGenerator, MerchantId, Money, OrderId, OrderState, PageLimit, Points, ProductId, Quantity, Transition, UserId,
};

use super::{ids, next, product, shop, user};
use crate::testing::TestStore;
use crate::{
    Created, NewOrder, Order, OrderFilter, OrderLine, PaymentState, ReservationState, ReserveError, StoreError,
    WriteIds,
};

fn now_ms() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis())
        .expect("fits")
}

fn write_ids(g: &IdGenerator) -> WriteIds {
    WriteIds { event: g.next_at(now_ms()), entry: g.next_at(now_ms()) }
}

fn q(n: i64) -> Quantity {
    Quantity::new(n).expect("quantity")
}

/// An unpaid order of `units` × 1000 minor units, redeeming `points`.
fn new_order(
    g: &IdGenerator,
    buyer: UserId,
    merchant: MerchantId,
    units: i64,
    points: i64,
    key: Option<&str>,
) -> NewOrder {
    let id = g.next_order_at(now_ms(), buyer);
    let total = Money::from_minor(units * 1000).expect("money");
    let points = Points::new(points).expect("points");
    let now = i64::try_from(now_ms()).expect("fits");
    let line = OrderLine {
        product_id: ProductId::new(42).expect("id"),
        sku: flashback_core::Sku::parse("LINE").expect("sku"),
        title: flashback_core::Title::parse("A line").expect("title"),
        quantity: q(units),
        unit_price: Money::from_minor(1000).expect("money"),
    };
    NewOrder {
        order: Order {
            id,
            buyer,
            merchant,
            state: OrderState::PendingPayment,
            lines: vec![line],
            total,
            points_used: points,
            payable: total.checked_sub(Money::from_minor(points.get()).expect("money")).expect("payable"),
            expires_at_ms: now + 60_000,
            created_at_ms: now,
            updated_at_ms: now,
            flash_reservation: None,
        },
        idempotency: key.map(|k| (k.to_owned(), format!("hash-of-{k}"))),
    }
}

async fn place(t: &TestStore, g: &IdGenerator, new: NewOrder) -> Result<Order, StoreError> {
    match t.shards.for_buyer(new.order.buyer).create_order(new, write_ids(g)).await? {
        Created::New(o) => Ok(o),
        Created::Existing { order, .. } => Ok(order),
    }
}

async fn available(t: &TestStore, p: ProductId) -> i64 {
    t.store.product(p).await.expect("read").expect("exists").inventory.available.get()
}

/// Reserving takes every line or none, and reserving again for the same order takes nothing.
pub async fn reservations_take_stock_all_or_nothing_and_once_per_order(t: &TestStore) {
    let g = ids();
    let store = &t.store;
    let (m, c) = shop(store, &g, "reserver").await;
    let a = store.create_product(product(&g, m, c, "RA", 5)).await.expect("a").id;
    let b = store.create_product(product(&g, m, c, "RB", 1)).await.expect("b").id;
    let buyer = next(&g, UserId::new);

    let order = g.next_order_at(now_ms(), buyer);
    let res = store.reserve(order, &[(a, q(2)), (b, q(2))]).await;
    assert!(matches!(res, Err(ReserveError::InsufficientStock(p)) if p == b), "{res:?}");
    assert_eq!((available(t, a).await, available(t, b).await), (5, 1), "nothing taken when one line fails");
    assert!(store.reservations(order).await.expect("r").is_empty());

    let unknown = store.reserve(order, &[(next(&g, ProductId::new), q(1))]).await;
    assert!(matches!(unknown, Err(ReserveError::UnknownProduct(_))), "{unknown:?}");

    let lines = store.reserve(order, &[(a, q(2)), (b, q(1))]).await.expect("reserve");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].unit_price.minor(), 1999);
    let again = store.reserve(order, &[(a, q(2)), (b, q(1))]).await.expect("replay");
    assert_eq!(again, lines, "a replay reports the same reservation");
    assert_eq!((available(t, a).await, available(t, b).await), (3, 0), "and takes nothing more");

    store.set_status(a, m, flashback_core::ProductStatus::OffShelf).await.expect("off shelf");
    let off = store.reserve(g.next_order_at(now_ms(), buyer), &[(a, q(1))]).await;
    assert!(matches!(off, Err(ReserveError::OffShelf(p)) if p == a), "{off:?}");
}

/// Held units go back once however often release runs; sold units only when asked.
pub async fn releasing_returns_stock_exactly_once(t: &TestStore) {
    let g = ids();
    let store = &t.store;
    let (m, c) = shop(store, &g, "releaser").await;
    let p = store.create_product(product(&g, m, c, "REL", 10)).await.expect("p").id;
    let buyer = next(&g, UserId::new);
    let held = g.next_order_at(now_ms(), buyer);
    let sold = g.next_order_at(now_ms(), buyer);
    store.reserve(held, &[(p, q(3))]).await.expect("reserve");
    store.reserve(sold, &[(p, q(4))]).await.expect("reserve");
    assert_eq!(store.settle(sold).await.expect("settle"), 1);
    assert_eq!(available(t, p).await, 3);

    let releases: Vec<_> = (0..6)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.release(held, false).await })
        })
        .collect();
    let mut total = 0;
    for r in releases {
        total += r.await.expect("task").expect("release");
    }
    assert_eq!(total, 3, "released once in all");
    assert_eq!(store.release(sold, false).await.expect("release"), 0, "sold units stay sold");
    assert_eq!(available(t, p).await, 6);
    assert_eq!(store.release(sold, true).await.expect("release"), 4);
    assert_eq!(available(t, p).await, 10);
    let states: Vec<ReservationState> = store.reservations(sold).await.expect("r").iter().map(|r| r.state).collect();
    assert_eq!(states, [ReservationState::Released]);
    let summary = store.stock_summary().await.expect("summary");
    let row = summary.iter().find(|s| s.product_id == p).expect("row");
    assert_eq!((row.available, row.held, row.sold), (10, 0, 0));
}

/// Many concurrent orders for one SKU reserve exactly the stock there was.
pub async fn concurrent_reservations_of_one_sku_never_oversell(t: &TestStore) {
    let g = Arc::new(ids());
    let store = &t.store;
    let (m, c) = shop(store, &g, "crowded").await;
    let p = store.create_product(product(&g, m, c, "CROWD", 20)).await.expect("p").id;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (store, g) = (Arc::clone(store), Arc::clone(&g));
            tokio::spawn(async move {
                let order = g.next_order_at(now_ms(), UserId::new(1000 + i).expect("id"));
                store.reserve(order, &[(p, q(1))]).await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => won += 1,
            Err(ReserveError::InsufficientStock(_)) => {}
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(won, 20);
    let row = store.stock_summary().await.expect("summary").into_iter().find(|s| s.product_id == p).expect("row");
    assert_eq!((row.available, row.held), (0, 20), "sold + held + available = the stock there was");
}

/// Redeeming more points than held writes nothing at all; redeeming what is held is exact.
pub async fn an_order_redeems_points_atomically_or_not_at_all(t: &TestStore) {
    let g = ids();
    let buyer = next(&g, UserId::new);
    let merchant = next(&g, MerchantId::new);
    let shard = t.shards.for_buyer(buyer);
    assert!(
        shard
            .add_points(g.next_at(now_ms()), buyer, Points::new(500).expect("p"), "grant", "grant:1")
            .await
            .expect("grant")
    );

    let greedy = new_order(&g, buyer, merchant, 2, 501, None);
    let greedy_id = greedy.order.id;
    let res = shard.create_order(greedy, write_ids(&g)).await;
    assert!(matches!(res, Err(StoreError::ConditionFailed("points"))), "{res:?}");
    assert!(shard.order(greedy_id).await.expect("read").is_none(), "no order written");
    assert_eq!(shard.points(buyer).await.expect("points").get(), 500);
    assert!(shard.outbox_pending(100).await.expect("outbox").iter().all(|e| e.aggregate_id != greedy_id.get()));

    let ok = place(t, &g, new_order(&g, buyer, merchant, 2, 500, None)).await.expect("order");
    assert_eq!((ok.total.minor(), ok.points_used.get(), ok.payable.minor()), (2000, 500, 1500));
    assert_eq!(shard.points(buyer).await.expect("points").get(), 0);
    assert!(shard.points_mismatches().await.expect("audit").is_empty());
}

/// The same idempotency key returns the first order and its request hash; nothing is doubled.
pub async fn an_idempotency_key_returns_the_first_order(t: &TestStore) {
    let g = ids();
    let buyer = next(&g, UserId::new);
    let merchant = next(&g, MerchantId::new);
    let shard = t.shards.for_buyer(buyer);
    let first = place(t, &g, new_order(&g, buyer, merchant, 1, 0, Some("key-1"))).await.expect("first");
    let replay = shard.create_order(new_order(&g, buyer, merchant, 3, 0, Some("key-1")), write_ids(&g)).await;
    match replay.expect("replay") {
        Created::Existing { order, request_hash } => {
            assert_eq!(order, first);
            assert_eq!(request_hash, "hash-of-key-1");
        }
        Created::New(_) => panic!("a second order was written for one key"),
    }
    let (found, _) = shard.idempotent(buyer, "key-1").await.expect("lookup").expect("found");
    assert_eq!(found.id, first.id);
    let mine = shard.orders(
        OrderFilter { buyer: Some(buyer), ..Default::default() },
        None,
        PageLimit::default(),
        crate::Read::ReplicaOk,
    );
    assert_eq!(mine.await.expect("list").len(), 1);
}

/// Buyers whose orders live on the same shard as `first`'s (a batch is one shard's).
fn buyers_on_one_shard(t: &TestStore, g: &IdGenerator, n: usize) -> Vec<UserId> {
    let first = next(g, UserId::new);
    let shard = t.shards.index_for_buyer(first);
    let mut buyers = vec![first];
    while buyers.len() < n {
        let b = next(g, UserId::new);
        if t.shards.index_for_buyer(b) == shard {
            buyers.push(b);
        }
    }
    buyers
}

/// Every order of `buyers` on their shard (at most 100 each).
async fn orders_of(t: &TestStore, buyers: &[UserId]) -> Vec<Order> {
    let mut all = Vec::new();
    for b in buyers {
        let mine = t.shards.for_buyer(*b).orders(
            OrderFilter { buyer: Some(*b), ..Default::default() },
            None,
            PageLimit::try_from(100).expect("limit"),
            crate::Read::Primary,
        );
        all.extend(mine.await.expect("list"));
    }
    all
}

/// A batch writes each order once with its lines and event, in one call; a key claimed before
/// (by an earlier batch, or earlier in the same batch) returns its first order and writes nothing.
pub async fn a_batch_of_orders_is_written_once_per_idempotency_key(t: &TestStore) {
    let g = ids();
    let buyers = buyers_on_one_shard(t, &g, 3);
    let merchant = next(&g, MerchantId::new);
    let shard = t.shards.for_buyer(buyers[0]);
    let keyed = |i: usize, units: i64| {
        let new = new_order(&g, buyers[i % 3], merchant, units, 0, Some(&format!("flash:{i}")));
        (new, g.next_at(now_ms()))
    };
    let first: Vec<_> = (0..12).map(|i| keyed(i, 1 + (i as i64 % 3))).collect();
    let ids = shard.create_orders(&first).await.expect("batch");
    assert_eq!(ids, first.iter().map(|(n, _)| n.order.id).collect::<Vec<_>>(), "one id per input, in order");
    let stored = orders_of(t, &buyers).await;
    assert_eq!(stored.len(), 12);
    for (n, _) in &first {
        let found = stored.iter().find(|o| o.id == n.order.id).expect("written");
        assert_eq!(found, &n.order, "written whole, lines included");
    }
    let events = shard.outbox_pending(1_000).await.expect("outbox");
    for (n, event) in &first {
        let e = events.iter().find(|e| e.id == *event).expect("its event");
        assert_eq!((e.event_type.as_str(), e.aggregate_id), ("order.created", n.order.id.get()));
    }

    // The same batch again (a retry whose answer was lost), then new order ids for old keys
    // mixed with new keys and a key twice in one batch.
    assert_eq!(shard.create_orders(&first).await.expect("replay"), ids, "a replay writes nothing");
    let mut second: Vec<_> = (8..16).map(|i| keyed(i, 2)).collect();
    second.push(keyed(14, 3));
    let again = shard.create_orders(&second).await.expect("second batch");
    assert_eq!(&again[..4], &ids[8..12], "claimed keys keep their first order");
    for (i, id) in again[4..8].iter().enumerate() {
        assert_eq!(*id, second[4 + i].0.order.id, "new keys get their own order");
    }
    assert_eq!(again[8], again[6], "a key twice in one batch is one order");
    assert_eq!(orders_of(t, &buyers).await.len(), 16, "12 + 4 new keys, nothing doubled");
    let (held, _) = shard.idempotent(buyers[14 % 3], "flash:14").await.expect("lookup").expect("claimed");
    assert_eq!(held.id, again[6]);

    // An order redeeming points cannot be batched; the batch writes nothing.
    let mut mixed = vec![keyed(20, 1)];
    mixed.push((new_order(&g, buyers[0], merchant, 2, 100, Some("flash:21")), g.next_at(now_ms())));
    let res = shard.create_orders(&mixed).await;
    assert!(matches!(res, Err(StoreError::ConditionFailed("points"))), "{res:?}");
    assert_eq!(orders_of(t, &buyers).await.len(), 16, "nothing written");
    assert!(shard.idempotent(buyers[20 % 3], "flash:20").await.expect("lookup").is_none());
}

/// Writers racing with overlapping batches (instances working the same reservations) leave
/// exactly one order per key, and every writer is told that order's id.
pub async fn racing_order_batches_leave_one_order_per_key(t: &TestStore) {
    let g = Arc::new(ids());
    let buyers = buyers_on_one_shard(t, &g, 4);
    let merchant = next(&g, MerchantId::new);
    let shard = t.shards.for_buyer(buyers[0]).clone();
    let keys = 40_usize;
    let mut writers = Vec::new();
    for w in 0..4_usize {
        let (g, shard, buyers) = (g.clone(), shard.clone(), buyers.clone());
        writers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            // Each writer covers every key, in its own order and batch size.
            let mut order: Vec<usize> = (0..keys).collect();
            order.rotate_left(w * 10);
            for chunk in order.chunks(5 + w * 3) {
                let batch: Vec<_> = chunk
                    .iter()
                    .map(|&k| {
                        let key = format!("flash:{k}");
                        (new_order(&g, buyers[k % 4], merchant, 1, 0, Some(&key)), g.next_at(now_ms()))
                    })
                    .collect();
                let ids = shard.create_orders(&batch).await.expect("batch");
                answers.extend(chunk.iter().copied().zip(ids));
            }
            answers
        }));
    }
    let mut holder: std::collections::HashMap<usize, OrderId> = std::collections::HashMap::new();
    for w in writers {
        for (k, id) in w.await.expect("writer") {
            assert_eq!(*holder.entry(k).or_insert(id), id, "key {k} was answered with two orders");
        }
    }
    let stored = orders_of(t, &buyers).await;
    assert_eq!(stored.len(), keys, "one order per key");
    for (k, id) in &holder {
        let (held, _) = shard.idempotent(buyers[k % 4], &format!("flash:{k}")).await.expect("lookup").expect("claimed");
        assert_eq!(held.id, *id);
        assert!(stored.iter().any(|o| o.id == *id));
    }
    let events = shard.outbox_pending(1_000).await.expect("outbox");
    let created = events.iter().filter(|e| stored.iter().any(|o| o.id.get() == e.aggregate_id)).count();
    assert_eq!(created, keys, "one order.created event per order");
}

/// Each transition is a compare-and-set on the state; cancelling returns redeemed points once.
pub async fn transitions_are_compare_and_set_and_cancelling_returns_points(t: &TestStore) {
    let g = ids();
    let buyer = next(&g, UserId::new);
    let merchant = next(&g, MerchantId::new);
    let shard = t.shards.for_buyer(buyer);
    shard
        .add_points(g.next_at(now_ms()), buyer, Points::new(300).expect("p"), "grant", &format!("grant:{buyer}"))
        .await
        .expect("grant");
    let o = place(t, &g, new_order(&g, buyer, merchant, 1, 300, None)).await.expect("order");
    assert_eq!(shard.points(buyer).await.expect("p").get(), 0);

    let wrong = shard.transition(o.id, Transition::Ship, None, write_ids(&g)).await;
    assert!(matches!(wrong, Err(StoreError::ConditionFailed("state"))), "{wrong:?}");
    let cancelled = shard.transition(o.id, Transition::Cancel, None, write_ids(&g)).await.expect("cancel");
    assert_eq!(cancelled.state, OrderState::Cancelled);
    assert_eq!(shard.points(buyer).await.expect("p").get(), 300, "points returned");
    let twice = shard.transition(o.id, Transition::Expire, None, write_ids(&g)).await;
    assert!(matches!(twice, Err(StoreError::ConditionFailed("state"))));
    let pinned = place(t, &g, new_order(&g, buyer, merchant, 1, 0, None)).await.expect("order");
    let from_paid = shard.transition(pinned.id, Transition::Cancel, Some(OrderState::Paid), write_ids(&g)).await;
    assert!(matches!(from_paid, Err(StoreError::ConditionFailed("state"))), "only from the named state");
    assert_eq!(shard.points(buyer).await.expect("p").get(), 300, "and returned once");
    let missing = shard.transition(g.next_order_at(now_ms(), buyer), Transition::Pay, None, write_ids(&g)).await;
    assert!(matches!(missing, Err(StoreError::NotFound("order"))));

    let paid = place(t, &g, new_order(&g, buyer, merchant, 1, 0, None)).await.expect("order");
    for step in [Transition::Pay, Transition::Ship, Transition::Complete] {
        shard.transition(paid.id, step, None, write_ids(&g)).await.expect("step");
    }
    assert_eq!(shard.order(paid.id).await.expect("r").expect("e").state, OrderState::Completed);
    assert!(shard.points_mismatches().await.expect("audit").is_empty());
}

/// Payment and expiry racing on the same orders: each ends in exactly one final state.
pub async fn racing_payment_and_expiry_leave_each_order_in_one_state(t: &TestStore) {
    let g = Arc::new(ids());
    let buyer = next(&g, UserId::new);
    let merchant = next(&g, MerchantId::new);
    let shard = Arc::clone(t.shards.for_buyer(buyer));
    shard
        .add_points(g.next_at(now_ms()), buyer, Points::new(1000).expect("p"), "grant", &format!("grant:{buyer}"))
        .await
        .expect("grant");
    let mut orders: Vec<OrderId> = Vec::new();
    for _ in 0..10 {
        orders.push(place(t, &g, new_order(&g, buyer, merchant, 1, 100, None)).await.expect("order").id);
    }
    let mut tasks = Vec::new();
    for id in &orders {
        for t in [Transition::Pay, Transition::Expire] {
            let (shard, g, id) = (Arc::clone(&shard), Arc::clone(&g), *id);
            tasks.push(tokio::spawn(async move { (t, shard.transition(id, t, None, write_ids(&g)).await) }));
        }
    }
    let mut winners = std::collections::HashMap::new();
    for task in tasks {
        let (t, res) = task.await.expect("task");
        match res {
            Ok(o) => assert!(winners.insert(o.id, t).is_none(), "two transitions won on {}", o.id),
            Err(StoreError::ConditionFailed("state")) => {}
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 10, "every order moved exactly once");
    let expired = winners.values().filter(|t| **t == Transition::Expire).count();
    for id in &orders {
        let state = shard.order(*id).await.expect("r").expect("e").state;
        assert_eq!(state, if winners[id] == Transition::Pay { OrderState::Paid } else { OrderState::Cancelled });
    }
    // 1000 granted, 100 redeemed by each of the ten orders, 100 returned by each expired one.
    let (granted, redeemed) = (1000, 100 * 10);
    let returned = 100 * i64::try_from(expired).expect("fits");
    assert_eq!(shard.points(buyer).await.expect("p").get(), granted - redeemed + returned, "points balanced");
    assert!(shard.points_mismatches().await.expect("audit").is_empty());
}

/// Events wait in the outbox, oldest first, until marked dispatched; a consumer records each
/// event once.
pub async fn the_outbox_keeps_events_until_dispatched_and_consumers_record_once(t: &TestStore) {
    let g = ids();
    let buyer = next(&g, UserId::new);
    let shard = t.shards.for_buyer(buyer);
    let o = place(t, &g, new_order(&g, buyer, next(&g, MerchantId::new), 1, 0, None)).await.expect("order");
    shard.transition(o.id, Transition::Pay, None, write_ids(&g)).await.expect("pay");
    let pending: Vec<_> =
        shard.outbox_pending(100).await.expect("outbox").into_iter().filter(|e| e.aggregate_id == o.id.get()).collect();
    let types: Vec<&str> = pending.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["order.created", "order.paid"]);
    let body: serde_json::Value = serde_json::from_str(&pending[1].payload).expect("json");
    assert_eq!(body["type"], "order.paid");
    assert_eq!(body["order"]["id"], o.id.to_string());
    assert_eq!(body["order"]["state"], "paid");
    assert_eq!(body["order"]["lines"][0]["quantity"], 1);

    let ids: Vec<i64> = pending.iter().map(|e| e.id).collect();
    shard.mark_dispatched(&ids).await.expect("mark");
    assert!(shard.outbox_pending(100).await.expect("outbox").iter().all(|e| !ids.contains(&e.id)));
    assert!(!shard.was_processed("points", ids[0]).await.expect("not yet"));
    assert!(shard.record_processed("points", ids[0]).await.expect("first"));
    assert!(shard.was_processed("points", ids[0]).await.expect("now"));
    assert!(!shard.record_processed("points", ids[0]).await.expect("second"));
    assert!(shard.record_processed("analytics", ids[0]).await.expect("another consumer"));
}

/// Buyer and merchant listings are newest first, filtered, and paged by cursor.
pub async fn orders_are_listed_newest_first_per_buyer_and_merchant(t: &TestStore) {
    let g = ids();
    let store = &t.store;
    let _ = user(store, &g, "lister-buyer", flashback_core::Role::User).await;
    let buyer = next(&g, UserId::new);
    let (m1, m2) = (next(&g, MerchantId::new), next(&g, MerchantId::new));
    let shard = t.shards.for_buyer(buyer);
    let mut placed = Vec::new();
    for i in 0..5 {
        placed.push(
            place(t, &g, new_order(&g, buyer, if i % 2 == 0 { m1 } else { m2 }, 1, 0, None)).await.expect("o").id,
        );
    }
    shard.transition(placed[4], Transition::Pay, None, write_ids(&g)).await.expect("pay");

    let mine = OrderFilter { buyer: Some(buyer), ..Default::default() };
    let page1 = shard.orders(mine, None, PageLimit::try_from(3).expect("l"), crate::Read::Primary).await.expect("p1");
    let cursor = flashback_core::Cursor { before_id: page1.last().expect("last").id.get() };
    let page2 =
        shard.orders(mine, Some(cursor), PageLimit::try_from(3).expect("l"), crate::Read::Primary).await.expect("p2");
    let seen: Vec<OrderId> = page1.iter().chain(page2.iter()).map(|o| o.id).collect();
    placed.reverse();
    assert_eq!(seen, placed, "newest first, each once");

    let m1_paid = OrderFilter { merchant: Some(m1), state: Some(OrderState::Paid), ..Default::default() };
    let paid = shard.orders(m1_paid, None, PageLimit::default(), crate::Read::Primary).await.expect("paid");
    assert_eq!(paid.iter().map(|o| o.id).collect::<Vec<_>>(), vec![placed[0]]);
}

/// A payment is recorded once per provider id and moves by compare-and-set.
pub async fn payments_are_recorded_once_and_move_by_compare_and_set(t: &TestStore) {
    let g = ids();
    let buyer = next(&g, UserId::new);
    let shard = t.shards.for_buyer(buyer);
    let o = place(t, &g, new_order(&g, buyer, next(&g, MerchantId::new), 2, 0, None)).await.expect("order");
    assert!(shard.create_payment("pay-1", o.id, o.payable).await.expect("create"));
    assert!(!shard.create_payment("pay-1", o.id, o.payable).await.expect("again"));
    let p = shard.payment("pay-1").await.expect("read").expect("exists");
    assert_eq!((p.order_id, p.amount, p.state), (o.id, o.payable, PaymentState::Created));
    assert!(shard.set_payment_state("pay-1", PaymentState::Created, PaymentState::Succeeded).await.expect("cas"));
    assert!(!shard.set_payment_state("pay-1", PaymentState::Created, PaymentState::Succeeded).await.expect("cas"));
    assert!(shard.payment("nope").await.expect("read").is_none());
}

/// Points added under one reference are applied once, however often the add is retried.
pub async fn points_are_added_once_per_reference(t: &TestStore) {
    let g = ids();
    let user = next(&g, UserId::new);
    let shard = t.shards.for_buyer(user);
    let award = Points::new(70).expect("p");
    assert!(shard.add_points(g.next_at(now_ms()), user, award, "award", "award:1").await.expect("first"));
    assert!(!shard.add_points(g.next_at(now_ms()), user, award, "award", "award:1").await.expect("retry"));
    assert!(shard.add_points(g.next_at(now_ms()), user, award, "award", "award:2").await.expect("another"));
    assert_eq!(shard.points(user).await.expect("p").get(), 140);
    assert!(shard.points_mismatches().await.expect("audit").is_empty());
}

/// A sale's stock is carved out of its product's inventory by one conditional write, and its
/// unsold units go back exactly once when it ends.
pub async fn a_flash_sale_carves_its_stock_and_ending_it_returns_the_unsold_once(t: &TestStore) {
    use crate::{NewFlashSale, SaleState};
    let g = ids();
    let store = &t.store;
    let (m, c) = shop(store, &g, "flashy").await;
    let (other, _) = shop(store, &g, "notflashy").await;
    let p = store.create_product(product(&g, m, c, "FLASH", 10)).await.expect("p").id;
    let now = i64::try_from(now_ms()).expect("fits");
    let sale = |stock: i64, merchant: MerchantId| NewFlashSale {
        id: next(&g, flashback_core::SaleId::new),
        merchant_id: merchant,
        product_id: p,
        sale_price: Money::from_minor(999).expect("money"),
        stock,
        per_user_limit: 1,
        starts_at_ms: now - 1_000,
        ends_at_ms: now + 60_000,
        require_token: false,
    };
    let created = store.create_sale(sale(4, m)).await.expect("sale");
    assert_eq!(available(t, p).await, 6, "carved out");
    assert_eq!(store.flash_sale(created.id).await.expect("read").expect("exists"), created);
    let too_big = store.create_sale(sale(7, m)).await;
    assert!(matches!(too_big, Err(StoreError::ConditionFailed("stock"))), "{too_big:?}");
    let not_theirs = store.create_sale(sale(1, other)).await;
    assert!(matches!(not_theirs, Err(StoreError::NotFound("product"))), "{not_theirs:?}");
    assert_eq!(available(t, p).await, 6, "failed creations carve nothing");
    assert_eq!(store.sale_taken_units(created.id).await.expect("taken"), 0);

    assert_eq!(store.end_sale(created.id, now).await.expect("end"), None, "not over yet");
    assert!(store.sales_due_to_end(now, 10).await.expect("due").is_empty());
    let later = now + 61_000;
    assert_eq!(store.sales_due_to_end(later, 10).await.expect("due"), vec![created.id]);
    let ends: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.end_sale(created.id, later).await })
        })
        .collect();
    let mut returned = Vec::new();
    for e in ends {
        if let Some(units) = e.await.expect("task").expect("end") {
            returned.push(units);
        }
    }
    assert_eq!(returned, vec![4], "ended once");
    assert_eq!(available(t, p).await, 10);
    let ended = store.flash_sale(created.id).await.expect("read").expect("exists");
    assert_eq!((ended.state, ended.returned_units), (SaleState::Ended, 4));
    let open = store.flash_sales(Some(SaleState::Open), None, PageLimit::default()).await.expect("list");
    assert!(open.iter().all(|s| s.id != created.id));
}

/// Writing a reservation twice (an importer's redelivery) keeps the first row as it is, and a
/// released reservation is listed for engines that must return its units.
pub async fn reservations_are_written_once_and_released_ones_are_listed(t: &TestStore) {
    use crate::{FlashReservation, NewFlashSale, ReservationStatus};
    let g = ids();
    let store = &t.store;
    let (m, c) = shop(store, &g, "importer").await;
    let buyer = user(store, &g, "importer-buyer", flashback_core::Role::User).await;
    let p = store.create_product(product(&g, m, c, "IMPORT", 10)).await.expect("p").id;
    let now = i64::try_from(now_ms()).expect("fits");
    let sale = store
        .create_sale(NewFlashSale {
            id: next(&g, flashback_core::SaleId::new),
            merchant_id: m,
            product_id: p,
            sale_price: Money::from_minor(500).expect("money"),
            stock: 5,
            per_user_limit: 3,
            starts_at_ms: now - 1_000,
            ends_at_ms: now + 60_000,
            require_token: false,
        })
        .await
        .expect("sale");
    let row = |quantity: i64| FlashReservation {
        id: g.next_at(now_ms()),
        sale_id: sale.id,
        user_id: buyer,
        quantity,
        status: ReservationStatus::Reserved,
        order_id: None,
        created_at_ms: now,
        idempotency_key: None,
    };
    let (a, b) = (row(1), row(2));
    store.insert_reservations(&[a.clone(), b.clone()]).await.expect("first write");
    store.release_reservation(a.id).await.expect("release").expect("released now");
    // Redelivered with b's quantity changed: neither row may change.
    let mut b_again = b.clone();
    b_again.quantity = 3;
    store.insert_reservations(&[a.clone(), b_again]).await.expect("second write is harmless");
    let stored = store.sale_reservations(sale.id).await.expect("all");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored.iter().find(|r| r.id == a.id).expect("a").status, ReservationStatus::Released);
    assert_eq!(stored.iter().find(|r| r.id == b.id).expect("b").quantity, 2);
    let released = store.released_reservations(sale.id).await.expect("released");
    assert_eq!(released.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a.id]);
    assert_eq!(store.sale_taken_units(sale.id).await.expect("taken"), 2);
}
