//! Node-number leases: one holder at a time, expiry by the database's clock, no two racing
//! instances on one number.

use std::collections::HashSet;
use std::time::Duration;

use crate::testing::TestStore;

/// A lease holds against others until it expires or is given back; its holder renews it.
pub async fn a_node_is_leased_to_one_holder_until_it_expires_or_is_released(t: &TestStore) {
    let store = &t.store;
    assert_eq!(store.node_holder(5).await.expect("read"), None, "never held");
    assert!(store.lease_node(5, "a", 60_000).await.expect("lease"));
    assert!(!store.lease_node(5, "b", 60_000).await.expect("lease"), "held by a");
    assert!(store.lease_node(5, "a", 60_000).await.expect("renew"), "a renews");
    let held = store.node_holder(5).await.expect("read").expect("held");
    assert_eq!(held.holder, "a");
    assert!(held.remaining_ms > 50_000 && held.remaining_ms <= 60_000, "{held:?}");
    assert!(!store.free_nodes(5, 64).await.expect("free").contains(&5));
    assert_eq!(store.free_nodes(5, 64).await.expect("free").len(), 63);
    assert_eq!(store.free_nodes(63, 3).await.expect("free"), vec![63, 0, 1], "searched from 63, wrapping");

    store.release_node(5, "b").await.expect("release by another is a no-op");
    assert!(!store.lease_node(5, "b", 60_000).await.expect("lease"));
    store.release_node(5, "a").await.expect("release");
    assert!(store.lease_node(5, "b", 60_000).await.expect("lease"), "free after release");

    assert!(store.lease_node(9, "c", 50).await.expect("short lease"));
    assert!(!store.lease_node(9, "d", 60_000).await.expect("lease"));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(store.node_holder(9).await.expect("read").expect("row").remaining_ms <= 0);
    assert!(store.lease_node(9, "d", 60_000).await.expect("lease"), "free once expired");
    assert!(!store.lease_node(9, "c", 60_000).await.expect("lease"), "the old holder cannot renew it");
}

/// Instances starting together, all searching from one number, each get a different one;
/// once all 64 are held the next gets none.
pub async fn racing_instances_lease_distinct_nodes(t: &TestStore) {
    let racers: Vec<_> = (0..64)
        .map(|i| {
            let store = std::sync::Arc::clone(&t.store);
            tokio::spawn(async move { store.lease_any_node(7, &format!("instance-{i}"), 60_000).await })
        })
        .collect();
    let mut nodes = HashSet::new();
    for racer in racers {
        let node = racer.await.expect("task").expect("lease").expect("a free node");
        assert!(nodes.insert(node), "node {node} leased twice");
    }
    assert_eq!(nodes.len(), 64);
    assert_eq!(t.store.lease_any_node(0, "late", 60_000).await.expect("lease"), None);
}
