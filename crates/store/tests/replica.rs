//! Order shards with read replicas, against a real MariaDB primary and replica that the test
//! starts itself (see `replica_harness`). Runs when `FLASHBACK_TEST_MYSQL_URL` is set, like the
//! other MySQL suites, but does not use that server.

use std::sync::Arc;
use std::time::Duration;

use flashback_core::{IdGenerator, MerchantId, Money, OrderId, OrderState, PageLimit, Points, ProductId, UserId};
use flashback_store::replica_harness::ReplicaPair;
use flashback_store::{
    Created, NewOrder, Order, OrderFilter, OrderLine, OrderShard, Read, ShardOptions, Shards, StoreOptions, WriteIds,
    open_shards, testing,
};

const SHARDS: u16 = 2;

/// A replica pair with one database per shard, or `None` (after saying so) when the MySQL
/// suites are not asked for.
async fn pair() -> Option<ReplicaPair> {
    testing::mysql_server_url("MySQL replica")?;
    let pair = ReplicaPair::start().await;
    for i in 0..SHARDS {
        pair.create_database(&format!("orders_{i}")).await;
    }
    Some(pair)
}

/// Shards on the pair's primary, each with its replica. Short acquire timeout: a dead replica
/// costs each replica read that long before it falls back to the primary.
async fn shards(pair: &ReplicaPair) -> Shards {
    let options = ShardOptions {
        count: SHARDS,
        urls: (0..SHARDS).map(|i| pair.primary_url(&format!("orders_{i}"))).collect(),
        replica_urls: (0..SHARDS).map(|i| Some(pair.replica_url(&format!("orders_{i}")))).collect(),
        store: StoreOptions {
            acquire_timeout: Duration::from_secs(2),
            breaker: Default::default(),
            ..testing::test_options(None, std::env::temp_dir())
        },
    };
    let shards = open_shards(&options).await.expect("open shards with replicas");
    // The migrations ran on the primaries; the replicas need them before they can answer.
    pair.wait_caught_up().await;
    shards
}

fn now_ms() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis())
        .expect("fits")
}

/// A buyer whose orders live on shard `index`.
fn buyer_on(shards: &Shards, g: &IdGenerator, index: usize) -> UserId {
    let target = &shards.all()[index];
    std::iter::repeat_with(|| UserId::new(g.next_at(now_ms())).expect("user id"))
        .take(10_000)
        .find(|u| Arc::ptr_eq(shards.for_buyer(*u), target))
        .expect("some buyer hashes to every shard")
}

async fn place(shard: &Arc<dyn OrderShard>, g: &IdGenerator, buyer: UserId) -> OrderId {
    let now = i64::try_from(now_ms()).expect("fits");
    let price = Money::from_minor(1000).expect("money");
    let order = Order {
        id: g.next_order_at(now_ms(), buyer),
        buyer,
        merchant: MerchantId::new(7).expect("merchant id"),
        state: OrderState::PendingPayment,
        lines: vec![OrderLine {
            product_id: ProductId::new(42).expect("product id"),
            sku: flashback_core::Sku::parse("REPLICA").expect("sku"),
            title: flashback_core::Title::parse("A replicated line").expect("title"),
            quantity: flashback_core::Quantity::new(1).expect("quantity"),
            unit_price: price,
        }],
        total: price,
        points_used: Points::new(0).expect("points"),
        payable: price,
        expires_at_ms: now + 60_000,
        created_at_ms: now,
        updated_at_ms: now,
        flash_reservation: None,
    };
    let ids = WriteIds { event: g.next_at(now_ms()), entry: g.next_at(now_ms()) };
    match shard.create_order(NewOrder { order, idempotency: None }, ids).await.expect("create order") {
        Created::New(o) => o.id,
        Created::Existing { order, .. } => panic!("a fresh order was taken for an earlier one: {order:?}"),
    }
}

/// The ids of `buyer`'s orders, newest first, read as `read` allows.
async fn listing(shard: &Arc<dyn OrderShard>, buyer: UserId, read: Read) -> Vec<OrderId> {
    let filter = OrderFilter { buyer: Some(buyer), ..OrderFilter::default() };
    let orders = shard.orders(filter, None, PageLimit::DEFAULT, read).await.expect("list orders");
    orders.into_iter().map(|o| o.id).collect()
}

#[tokio::test]
async fn a_replica_ok_listing_is_served_by_the_replica_and_sees_new_orders_once_it_catches_up() {
    let Some(pair) = pair().await else { return };
    let shards = shards(&pair).await;
    let g = IdGenerator::new(1).expect("node");

    // Per shard, so each shard is shown to read its own replica, not another shard's.
    for index in 0..usize::from(SHARDS) {
        let buyer = buyer_on(&shards, &g, index);
        let shard = shards.for_buyer(buyer);
        let first = place(shard, &g, buyer).await;
        pair.wait_caught_up().await;
        assert_eq!(listing(shard, buyer, Read::ReplicaOk).await, [first], "shard {index}: replicated");

        pair.stop_replication().await;
        let second = place(shard, &g, buyer).await;
        assert_eq!(
            listing(shard, buyer, Read::ReplicaOk).await,
            [first],
            "shard {index}: the replica-ok listing comes from the replica, which has not seen the new order"
        );
        assert_eq!(listing(shard, buyer, Read::Primary).await, [second, first], "shard {index}: the primary has it");
        let found = shard.order(second).await.expect("read order").map(|o| o.id);
        assert_eq!(found, Some(second), "shard {index}: single orders are read from the primary");

        pair.start_replication().await;
        pair.wait_caught_up().await;
        assert_eq!(listing(shard, buyer, Read::ReplicaOk).await, [second, first], "shard {index}: caught up");
    }
    shards.close().await;
}

#[tokio::test]
async fn replica_ok_listings_still_answer_from_the_primary_when_the_replica_process_is_gone() {
    let Some(mut pair) = pair().await else { return };
    let shards = shards(&pair).await;
    let g = IdGenerator::new(2).expect("node");
    let buyer = buyer_on(&shards, &g, 0);
    let shard = shards.for_buyer(buyer);

    let first = place(shard, &g, buyer).await;
    pair.wait_caught_up().await;
    assert_eq!(listing(shard, buyer, Read::ReplicaOk).await, [first], "served by the live replica");

    // An order only the primary has, so the answers below can only have come from it.
    pair.stop_replication().await;
    let second = place(shard, &g, buyer).await;
    pair.stop_replica();

    for attempt in 1..=2 {
        assert_eq!(
            listing(shard, buyer, Read::ReplicaOk).await,
            [second, first],
            "attempt {attempt}: with the replica gone, the listing comes from the primary"
        );
    }
    assert_eq!(listing(shard, buyer, Read::Primary).await, [second, first]);
    shards.close().await;
}
