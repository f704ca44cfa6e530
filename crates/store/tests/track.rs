//! The tracking store on SQLite and, when `FLASHBACK_TEST_MYSQL_URL` is set, on MariaDB: events
//! once per id, rollups that count exactly the new events, concurrent writers that overlap.

use std::sync::Arc;

use flashback_core::Day;
use flashback_store::testing::{self, TestStore};
use flashback_store::track::{EventFilter, QueueCursor, Scope, TrackEvent, TrackStore};

const DAY_MS: i64 = 86_400_000;
/// 2026-11-21T10:00:00Z.
const T0: i64 = 1_795_255_200_000;

fn event(id: u128, visitor: u32, object: u32, action: &str, ts: i64) -> TrackEvent {
    TrackEvent {
        id,
        ts_ms: ts,
        received_ms: ts,
        user_id: None,
        visitor: format!("a:{visitor}"),
        module: "home".into(),
        action: action.into(),
        object_type: "sku".into(),
        object_id: object.to_string(),
        properties: Some(r#"{"k":1}"#.into()),
    }
}

async fn open(t: &TestStore) -> TrackStore {
    TrackStore::open(t.options.url.as_deref(), &t.options, 0).await.expect("open track store")
}

async fn pv(store: &TrackStore, scope: Scope, key: &str, action: &str, from: Day, to: Day) -> i64 {
    store.counts(scope, key, action, from, to).await.expect("counts").iter().map(|c| c.pv).sum()
}

async fn writes_once_and_counts_exactly(t: TestStore) {
    let store = open(&t).await;
    let d0 = Day::of(T0, 0);
    let d1 = Day::of(T0 + DAY_MS, 0);
    let batch: Vec<TrackEvent> = (0..3_000u32)
        .map(|i| event(u128::from(i) + 1, i % 700, i % 3, "view", T0 + i64::from(i % 2) * DAY_MS))
        .collect();
    let cursor = QueueCursor { segment: 3, position: 4_096 };
    assert_eq!(store.write(&batch, Some(("q", cursor))).await.expect("write"), 3_000);
    assert_eq!(store.cursor("q").await.expect("cursor"), Some(cursor));
    // The same batch again (a redelivery), plus one new event: only the new one counts.
    let mut again = batch.clone();
    again.push(event(9_999, 1, 0, "view", T0));
    assert_eq!(store.write(&again, None).await.expect("rewrite"), 1);
    assert_eq!(store.stored_events().await.expect("count"), 3_001);
    assert_eq!(pv(&store, Scope::All, "", "view", d0, d1).await, 3_001);
    assert_eq!(pv(&store, Scope::All, "", "view", d0, d0).await, 1_501);
    assert_eq!(pv(&store, Scope::Module, "home", "view", d0, d1).await, 3_001);
    assert_eq!(pv(&store, Scope::Object, "sku:0", "view", d0, d1).await, 1_001);
    // Visitors over both days merge: 700 distinct.
    let mut all = flashback_core::hll::Sketch::default();
    for c in store.counts(Scope::All, "", "view", d0, d1).await.expect("counts") {
        all.merge(&c.sketch);
    }
    let uv = all.estimate() as f64;
    assert!((uv - 700.0).abs() / 700.0 <= flashback_core::hll::Sketch::RELATIVE_ERROR_BOUND, "uv {uv}");

    let top = store.top(Scope::Object, "view", d0, d1, Some("sku:"), 2).await.expect("top");
    assert_eq!(top, vec![("sku:0".to_owned(), 1_001), ("sku:1".to_owned(), 1_000)]);
    let hours = store.hourly(d0, "view", &EventFilter::default()).await.expect("hourly");
    assert_eq!(hours.iter().map(|h| h.pv).sum::<i64>(), 1_501);
    assert_eq!(hours.len(), 1, "all of day 0 is at 10:00");
    assert_eq!(hours[0].hour, 10);
    let filter = EventFilter { module: None, object: Some(("sku".into(), "2".into())) };
    let steps = store.steps(d0, &["view".to_owned()], &filter).await.expect("steps");
    assert_eq!(steps.len(), 500);
    assert_eq!(store.days().await.expect("days"), vec![d0, d1]);
    assert_eq!(store.drop_before(d1).await.expect("drop"), vec![d0]);
    assert_eq!(store.stored_events().await.expect("count"), 1_500);
    assert_eq!(pv(&store, Scope::All, "", "view", d0, d1).await, 1_500);
    store.raw_insert(&batch[..100]).await.expect("raw insert baseline");
    store.close().await;
}

/// Four writers at once, with overlapping batches (as when two instances read a redelivered
/// batch): every event is stored once and the rollups count each once.
async fn concurrent_overlapping_writers_count_each_event_once(t: TestStore) {
    let store = Arc::new(open(&t).await);
    let events: Vec<TrackEvent> =
        (0..4_000u32).map(|i| event(u128::from(i) + 1, i % 900, i % 10, "click", T0 + i64::from(i))).collect();
    let events = Arc::new(events);
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let (store, events) = (Arc::clone(&store), Arc::clone(&events));
        tasks.push(tokio::spawn(async move {
            // Writer w takes windows that overlap its neighbours'.
            let mut written = 0;
            for start in (w * 500..4_000).step_by(1_000) {
                let end = (start + 1_000).min(4_000);
                written += store.write(&events[start..end], None).await.unwrap_or_else(|e| panic!("write: {e:?}"));
            }
            written
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer");
    }
    assert_eq!(total, 4_000, "new events summed over the writers");
    assert_eq!(store.stored_events().await.expect("count"), 4_000);
    let d = Day::of(T0, 0);
    assert_eq!(pv(&store, Scope::All, "", "click", d, d).await, 4_000);
    let per_object: i64 = {
        let mut sum = 0;
        for o in 0..10 {
            sum += pv(&store, Scope::Object, &format!("sku:{o}"), "click", d, d).await;
        }
        sum
    };
    assert_eq!(per_object, 4_000);
    store.close().await;
}

#[tokio::test]
async fn sqlite_writes_once_and_counts_exactly() {
    writes_once_and_counts_exactly(testing::sqlite().await).await;
}

#[tokio::test]
async fn sqlite_concurrent_overlapping_writers_count_each_event_once() {
    concurrent_overlapping_writers_count_each_event_once(testing::sqlite().await).await;
}

#[tokio::test]
async fn mysql_writes_once_and_counts_exactly() {
    if let Some(t) = testing::mysql("MySQL tracking store").await {
        writes_once_and_counts_exactly(t).await;
    }
}

#[tokio::test]
async fn mysql_concurrent_overlapping_writers_count_each_event_once() {
    if let Some(t) = testing::mysql("MySQL tracking store").await {
        concurrent_overlapping_writers_count_each_event_once(t).await;
    }
}
