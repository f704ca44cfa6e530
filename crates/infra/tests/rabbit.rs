//! The RabbitMQ bus against the machine's broker (`FLASHBACK_TEST_AMQP_URL`): relay, consumers,
//! redelivery after a crash and dead-lettering, each test on exchanges and queues of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flashback_core::{IdGenerator, MerchantId, Money, OrderId, OrderState, Points, ProductId, Quantity, UserId};
use flashback_infra::bus::{ATTEMPT_HEADER, BusSettings, Delivery, RabbitBus, apply_once};
use flashback_store::testing::{TestStore, note_skipped};
use flashback_store::{Created, NewOrder, Order, OrderLine, OutboxEvent, Shards, StoreError, WriteIds};
use futures::FutureExt;
use futures::future::BoxFuture;
use lapin::types::AMQPValue;
use tokio_util::sync::CancellationToken;

const URL_VAR: &str = "FLASHBACK_TEST_AMQP_URL";
/// The longest any one wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

/// Deletes the test's exchanges and queues when dropped, whether the test passed or not.
struct Cleanup {
    settings: BusSettings,
    queues: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (settings, queues) = (self.settings.clone(), std::mem::take(&mut self.queues));
        // Drop may run inside the test's runtime, which cannot be blocked on: use a thread.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let bus = RabbitBus::connect_with(settings).await?;
                let names: Vec<&str> = queues.iter().map(String::as_str).collect();
                let deleted = bus.delete_topology(&names).await;
                let _ = bus.close().await;
                deleted
            })
        });
        if let Ok(Err(e)) = done.join() {
            eprintln!("could not delete the test's exchanges and queues: {e}");
        }
    }
}

/// A bus on a fresh, unique prefix and the guard that removes it, or `None` when no broker is
/// configured. `queues` are the consumer queues the test will declare.
async fn broker(queues: &[&str]) -> Option<(RabbitBus, Cleanup)> {
    let url = match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            note_skipped("RabbitMQ bus", URL_VAR);
            return None;
        }
    };
    let mut settings = BusSettings::new(url.trim(), &format!("fbt-{}", uuid::Uuid::new_v4().simple()));
    settings.retry_delay = Duration::from_millis(20);
    settings.max_backoff = Duration::from_secs(1);
    let cleanup = Cleanup { settings: settings.clone(), queues: queues.iter().map(|q| (*q).to_owned()).collect() };
    let bus = RabbitBus::connect_with(settings)
        .await
        .unwrap_or_else(|e| panic!("{URL_VAR} is set but the broker does not answer: {e}"));
    Some((bus, cleanup))
}

fn now_ms() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis())
        .expect("fits")
}

/// Places `n` one-line orders for `n` buyers; each writes an `order.created` outbox row.
async fn place_orders(t: &TestStore, g: &IdGenerator, n: usize) {
    for _ in 0..n {
        let buyer = UserId::new(g.next_at(now_ms())).expect("buyer");
        let now = i64::try_from(now_ms()).expect("fits");
        let price = Money::from_minor(1000).expect("money");
        let line = OrderLine {
            product_id: ProductId::new(42).expect("id"),
            sku: flashback_core::Sku::parse("BUS-1").expect("sku"),
            title: flashback_core::Title::parse("A line").expect("title"),
            quantity: Quantity::new(1).expect("quantity"),
            unit_price: price,
        };
        let order = Order {
            id: g.next_order_at(now_ms(), buyer),
            buyer,
            merchant: MerchantId::new(g.next_at(now_ms())).expect("merchant"),
            state: OrderState::PendingPayment,
            lines: vec![line],
            total: price,
            points_used: Points::new(0).expect("points"),
            payable: price,
            expires_at_ms: now + 60_000,
            created_at_ms: now,
            updated_at_ms: now,
            flash_reservation: None,
        };
        let ids = WriteIds { event: g.next_at(now_ms()), entry: g.next_at(now_ms()) };
        let created = t.shards.for_buyer(buyer).create_order(NewOrder { order, idempotency: None }, ids).await;
        assert!(matches!(created, Ok(Created::New(_))), "{created:?}");
    }
}

async fn pending(t: &TestStore) -> Vec<OutboxEvent> {
    let mut all = Vec::new();
    for shard in t.shards.all() {
        all.extend(shard.outbox_pending(1000).await.expect("outbox"));
    }
    all
}

async fn relay_all(bus: &RabbitBus, t: &TestStore) -> usize {
    let mut n = 0;
    for shard in t.shards.all() {
        n += bus.relay_once(shard.as_ref(), 100).await.expect("relay");
    }
    n
}

/// Polls `done` until it holds, failing the test after [`WAIT`].
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What handlers saw and did.
#[derive(Debug, Default)]
struct Effects {
    seen: Mutex<Vec<Delivery>>,
    applied: Mutex<HashMap<i64, u32>>,
}

impl Effects {
    fn seen(&self) -> Vec<Delivery> {
        self.seen.lock().expect("lock").clone()
    }

    fn applied(&self) -> HashMap<i64, u32> {
        self.applied.lock().expect("lock").clone()
    }

    /// Records the delivery, then applies its effect once per event, deduped in the event's shard.
    async fn handle(&self, shards: &Shards, d: Delivery) -> Result<(), StoreError> {
        self.seen.lock().expect("lock").push(d.clone());
        let shard = shards.for_order(OrderId::new(d.aggregate_id).expect("order id"));
        apply_once(shard.as_ref(), "test-effects", d.event_id, || async {
            *self.applied.lock().expect("lock").entry(d.event_id).or_insert(0) += 1;
            Ok::<_, StoreError>(())
        })
        .await?;
        Ok(())
    }
}

type Handler = Box<dyn Fn(Delivery) -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;

fn applying(shards: &Shards, effects: &Arc<Effects>) -> Handler {
    let (shards, effects) = (shards.clone(), Arc::clone(effects));
    Box::new(move |d| {
        let (shards, effects) = (shards.clone(), Arc::clone(&effects));
        async move { effects.handle(&shards, d).await }.boxed()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_events_are_relayed_consumed_and_applied_once_even_when_published_twice() {
    let Some((bus, _cleanup)) = broker(&["effects"]).await else { return };
    let t = flashback_store::testing::sqlite().await;
    let g = IdGenerator::new(11).expect("generator");
    let cancel = CancellationToken::new();
    let effects = Arc::new(Effects::default());
    let sub = bus.consume("effects", &["order.*"], 8, 3, applying(&t.shards, &effects), cancel.clone()).await;
    let sub = sub.expect("consume");

    place_orders(&t, &g, 12).await;
    let events = pending(&t).await;
    assert_eq!(events.len(), 12);
    assert!(events.iter().all(|e| e.event_type == "order.created"));
    // A relay that died between the broker's confirm and marking the rows: published, not marked.
    for shard in t.shards.all() {
        bus.publish_events(&shard.outbox_pending(100).await.expect("outbox")).await.expect("publish");
    }
    assert_eq!(pending(&t).await.len(), 12, "nothing marked yet");
    let relay = bus.spawn_relay(t.shards.all().to_vec(), Duration::from_millis(50), cancel.clone());

    eventually("every event delivered twice", async || effects.seen().len() == 24).await;
    eventually("the outbox to empty", async || pending(&t).await.is_empty()).await;
    let applied = effects.applied();
    assert_eq!(applied.len(), 12, "every event applied");
    assert!(events.iter().all(|e| applied.get(&e.id) == Some(&1)), "each exactly once: {applied:?}");
    let seen = effects.seen();
    for e in &events {
        let copies: Vec<&Delivery> = seen.iter().filter(|d| d.event_id == e.id).collect();
        assert_eq!(copies.len(), 2, "published twice, delivered twice");
        assert!(copies.iter().all(|d| d.event_type == "order.created" && d.aggregate_id == e.aggregate_id));
        assert!(copies.iter().all(|d| d.payload == e.payload && d.attempt == 1));
    }

    cancel.cancel();
    tokio::time::timeout(WAIT, sub.wait()).await.expect("consumer stops").expect("cleanly");
    tokio::time::timeout(WAIT, relay).await.expect("relay stops").expect("relay task");
    assert_eq!(bus.message_count(&bus.queue_name("effects")).await.expect("depth"), 0, "queue drained");
    assert_eq!(bus.message_count(&bus.dead_letter_queue()).await.expect("depth"), 0, "nothing dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_in_flight_when_its_consumer_crashes_is_redelivered_and_applied_once() {
    let Some((bus, _cleanup)) = broker(&["crashy"]).await else { return };
    let t = flashback_store::testing::sqlite().await;
    let g = IdGenerator::new(12).expect("generator");
    let cancel = CancellationToken::new();
    let effects = Arc::new(Effects::default());
    let applied_then_stuck = Arc::new(tokio::sync::Notify::new());

    // The first consumer applies the effect, then hangs before returning: never acks.
    let (shards, fx, stuck) = (t.shards.clone(), Arc::clone(&effects), Arc::clone(&applied_then_stuck));
    let crashing = move |d: Delivery| {
        let (shards, fx, stuck) = (shards.clone(), Arc::clone(&fx), Arc::clone(&stuck));
        async move {
            fx.handle(&shards, d).await?;
            stuck.notify_one();
            std::future::pending::<Result<(), StoreError>>().await
        }
    };
    let first = bus.consume("crashy", &["order.created"], 4, 3, crashing, cancel.clone()).await.expect("consume");
    place_orders(&t, &g, 1).await;
    let event = pending(&t).await.pop().expect("one event");
    assert_eq!(relay_all(&bus, &t).await, 1);
    assert!(pending(&t).await.is_empty(), "marked once confirmed");

    tokio::time::timeout(WAIT, applied_then_stuck.notified()).await.expect("first consumer got the event");
    first.abort();
    let second = bus.consume("crashy", &["order.created"], 4, 3, applying(&t.shards, &effects), cancel.clone());
    let second = second.await.expect("consume again");

    eventually("the redelivery", async || effects.seen().len() == 2).await;
    let seen = effects.seen();
    assert!(seen.iter().all(|d| d.event_id == event.id && d.attempt == 1));
    assert_eq!((seen[0].redelivered, seen[1].redelivered), (false, true), "the broker flags the redelivery");
    assert_eq!(effects.applied(), HashMap::from([(event.id, 1)]), "applied once in effect");

    cancel.cancel();
    tokio::time::timeout(WAIT, second.wait()).await.expect("consumer stops").expect("cleanly");
    assert_eq!(bus.message_count(&bus.queue_name("crashy")).await.expect("depth"), 0, "acked by the second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_handler_always_fails_is_dead_lettered_after_max_attempts() {
    let Some((bus, _cleanup)) = broker(&["failing"]).await else { return };
    let t = flashback_store::testing::sqlite().await;
    let g = IdGenerator::new(13).expect("generator");
    let cancel = CancellationToken::new();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&attempts);
    let failing = move |d: Delivery| {
        seen.lock().expect("lock").push((d.event_id, d.attempt));
        async { Err::<(), _>("the handler always fails") }
    };
    let sub = bus.consume("failing", &["order.#"], 2, 3, failing, cancel.clone()).await.expect("consume");
    place_orders(&t, &g, 1).await;
    let event = pending(&t).await.pop().expect("one event");
    assert_eq!(relay_all(&bus, &t).await, 1);

    let dead = bus.dead_letter_queue();
    eventually("the dead letter", async || bus.message_count(&dead).await.expect("depth") == 1).await;
    assert_eq!(*attempts.lock().expect("lock"), [(event.id, 1), (event.id, 2), (event.id, 3)]);
    assert_eq!(bus.message_count(&bus.queue_name("failing")).await.expect("depth"), 0, "no copy left behind");

    // The dead letter is the event at its last attempt.
    let conn = lapin::Connection::connect(&bus.settings().url, lapin::ConnectionProperties::default());
    let conn = tokio::time::timeout(WAIT, conn).await.expect("connect in time").expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    let get = channel.basic_get(dead.as_str().into(), lapin::options::BasicGetOptions { no_ack: true });
    let letter = tokio::time::timeout(WAIT, get).await.expect("get in time").expect("get").expect("a message");
    let props = &letter.delivery.properties;
    assert_eq!(props.message_id().as_ref().map(|m| m.as_str().to_owned()), Some(event.id.to_string()));
    assert_eq!(props.kind().as_ref().map(|k| k.as_str().to_owned()), Some("order.created".to_owned()));
    let headers = props.headers().as_ref().expect("headers");
    assert_eq!(headers.inner().get(ATTEMPT_HEADER), Some(&AMQPValue::LongLongInt(3)));
    assert!(headers.contains_key("x-death"), "dead-lettered by the broker: {headers:?}");
    assert_eq!(String::from_utf8(letter.delivery.data.clone()).expect("utf-8"), event.payload);
    let _ = conn.close(200, "OK".into()).await;

    cancel.cancel();
    tokio::time::timeout(WAIT, sub.wait()).await.expect("consumer stops").expect("cleanly");
    assert_eq!(attempts.lock().expect("lock").len(), 3, "no attempt after the last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_connection_is_gone_connects_again_and_relays() {
    let Some((bus, _cleanup)) = broker(&["after-reconnect"]).await else { return };
    let t = flashback_store::testing::sqlite().await;
    let g = IdGenerator::new(14).expect("generator");
    let cancel = CancellationToken::new();
    let effects = Arc::new(Effects::default());
    let sub = bus.consume("after-reconnect", &["#"], 4, 3, applying(&t.shards, &effects), cancel.clone());
    let sub = sub.await.expect("consume");
    place_orders(&t, &g, 3).await;

    let lost = RabbitBus::connect_with(bus.settings().clone()).await.expect("second connection");
    lost.close().await.expect("close");
    assert!(!lost.is_connected());
    let relay = lost.spawn_relay(t.shards.all().to_vec(), Duration::from_millis(50), cancel.clone());

    eventually("the events, relayed over a new connection", async || effects.applied().len() == 3).await;
    eventually("the outbox to empty", async || pending(&t).await.is_empty()).await;
    cancel.cancel();
    tokio::time::timeout(WAIT, sub.wait()).await.expect("consumer stops").expect("cleanly");
    tokio::time::timeout(WAIT, relay).await.expect("relay stops").expect("relay task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_broker_drops_the_connection_work_queues_consumers_and_the_relay_carry_on() {
    let Some((bus, _cleanup)) = broker(&["survivor", "survivor-work"]).await else { return };
    let t = flashback_store::testing::sqlite().await;
    let g = IdGenerator::new(15).expect("generator");
    let cancel = CancellationToken::new();
    let effects = Arc::new(Effects::default());
    let queue = bus.work_queue("survivor-work", 10, 4).await.expect("work queue");
    assert_eq!(queue.publish(b"one", 1).await.expect("publish"), flashback_infra::bus::Published::Stored);
    let taken = queue.next(WAIT).await.expect("next").expect("a message");
    assert_eq!(taken.payload, b"one");
    let sub = bus.consume("survivor", &["#"], 4, 3, applying(&t.shards, &effects), cancel.clone());
    let sub = sub.await.expect("consume");

    flashback_infra::testing::drop_connections_at_broker(&bus.settings().exchange_prefix);
    eventually("the bus to see its connection gone", async || !bus.is_connected()).await;
    let ended = tokio::time::timeout(WAIT, sub.wait()).await.expect("the consumer ends with its channel");
    assert!(ended.is_err(), "a consumer whose channel died ends with an error, to be started again");

    // The message taken on the dead channel went back to the queue; settling it says so.
    let stale = queue.ack(std::slice::from_ref(&taken.tag)).await;
    assert!(matches!(stale, Err(flashback_infra::bus::BusError::ChannelClosed { .. })), "{stale:?}");
    // The queue opens new channels on a new connection: publish, then both messages come.
    assert_eq!(queue.publish(b"two", 1).await.expect("publish again"), flashback_infra::bus::Published::Stored);
    assert!(bus.is_connected(), "connected again");
    let mut got = Vec::new();
    while got.len() < 2 {
        let item = queue.next(WAIT).await.expect("next").expect("a message before the wait ends");
        queue.ack(std::slice::from_ref(&item.tag)).await.expect("ack on the new channel");
        got.push(item.payload);
    }
    got.sort();
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    assert!(queue.next(Duration::from_millis(200)).await.expect("next").is_none(), "nothing more");

    // A consumer started again, and the relay on the same bus, work as before.
    let sub = bus.consume("survivor", &["#"], 4, 3, applying(&t.shards, &effects), cancel.clone());
    let sub = sub.await.expect("consume again");
    place_orders(&t, &g, 2).await;
    assert_eq!(relay_all(&bus, &t).await, 2);
    eventually("both events applied", async || effects.applied().len() == 2).await;
    cancel.cancel();
    tokio::time::timeout(WAIT, sub.wait()).await.expect("consumer stops").expect("cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_waiting_for_an_unavailable_store_is_never_dead_lettered_nor_counted_as_an_attempt() {
    let Some((bus, _cleanup)) = broker(&["waiting"]).await else { return };
    let t = flashback_store::testing::sqlite().await;
    let g = IdGenerator::new(17).expect("generator");
    let cancel = CancellationToken::new();
    // The store is "down" for the first eight tries (more than max_attempts), then back.
    let tries = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&tries);
    let waiting = move |d: Delivery| {
        let n = {
            let mut t = seen.lock().expect("lock");
            t.push(d.attempt);
            t.len()
        };
        async move { if n <= 8 { Err(StoreError::unavailable()) } else { Ok(()) } }
    };
    let sub = bus.consume("waiting", &["order.#"], 2, 3, waiting, cancel.clone()).await.expect("consume");
    place_orders(&t, &g, 1).await;
    assert_eq!(relay_all(&bus, &t).await, 1);

    eventually("the event handled once the store is back", async || tries.lock().expect("lock").len() == 9).await;
    eventually("its ack", async || bus.message_count(&bus.queue_name("waiting")).await.expect("depth") == 0).await;
    assert!(tries.lock().expect("lock").iter().all(|a| *a == 1), "an outage counts no attempt");
    assert_eq!(bus.message_count(&bus.dead_letter_queue()).await.expect("depth"), 0, "nothing dead-lettered");
    cancel.cancel();
    tokio::time::timeout(WAIT, sub.wait()).await.expect("consumer stops").expect("cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replayed_go_back_to_their_own_queue_with_attempts_counted_afresh() {
    let Some((bus, _cleanup)) = broker(&["replayed", "bystander"]).await else { return };
    let t = flashback_store::testing::sqlite().await;
    let g = IdGenerator::new(18).expect("generator");
    let cancel = CancellationToken::new();
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let (seen, is_fixed) = (Arc::clone(&attempts), Arc::clone(&fixed));
    let handler = move |d: Delivery| {
        seen.lock().expect("lock").push(d.attempt);
        let ok = is_fixed.load(std::sync::atomic::Ordering::SeqCst);
        async move { if ok { Ok(()) } else { Err("a bug, fixed later") } }
    };
    let sub = bus.consume("replayed", &["order.#"], 2, 2, handler, cancel.clone()).await.expect("consume");
    // A second subscriber of the same events, which must not see the replay.
    let bystander = Arc::new(Mutex::new(0_u32));
    let counted = Arc::clone(&bystander);
    let other = move |_d: Delivery| {
        *counted.lock().expect("lock") += 1;
        async { Ok::<(), &str>(()) }
    };
    let other = bus.consume("bystander", &["order.#"], 2, 2, other, cancel.clone()).await.expect("consume");
    place_orders(&t, &g, 2).await;
    assert_eq!(relay_all(&bus, &t).await, 2);
    let dead = bus.dead_letter_queue();
    eventually("two dead letters", async || bus.message_count(&dead).await.expect("depth") == 2).await;
    eventually("the bystander's two", async || *bystander.lock().expect("lock") == 2).await;

    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let done = bus.replay_dead_letters(u64::MAX).await.expect("replay");
    assert_eq!((done.replayed, done.kept), (2, 0));
    eventually("the replays handled", async || attempts.lock().expect("lock").len() == 6).await;
    assert_eq!(attempts.lock().expect("lock")[4..], [1, 1], "counted afresh");
    eventually("its queue drained", async || bus.message_count(&bus.queue_name("replayed")).await.expect("depth") == 0)
        .await;
    assert_eq!(bus.message_count(&dead).await.expect("depth"), 0);
    assert_eq!(*bystander.lock().expect("lock"), 2, "only the queue it died in gets it again");
    cancel.cancel();
    tokio::time::timeout(WAIT, sub.wait()).await.expect("consumer stops").expect("cleanly");
    tokio::time::timeout(WAIT, other.wait()).await.expect("consumer stops").expect("cleanly");
}
