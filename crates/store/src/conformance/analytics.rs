//! The analytics rollups' conformance cases.

use std::sync::Arc;

use flashback_core::{Account, Role};

use super::{ids, next, user};
use crate::testing::TestStore;
use crate::{MinuteRollup, NewTxn, Posting, RollupDelta, SkuDelta, Store};

const MINUTE: i64 = 60_000;

fn paid(event_id: i64, minute_ms: i64, lines: &[(i64, &str, i64, i64)]) -> RollupDelta {
    let skus: Vec<SkuDelta> = lines
        .iter()
        .map(|&(product_id, sku, units, price)| SkuDelta {
            product_id,
            sku: sku.to_owned(),
            units,
            gmv_minor: units * price,
        })
        .collect();
    RollupDelta {
        event_id,
        minute_ms,
        paid_orders: 1,
        gmv_minor: skus.iter().map(|s| s.gmv_minor).sum(),
        units: skus.iter().map(|s| s.units).sum(),
        skus,
        ..RollupDelta::default()
    }
}

/// Rollups add up per minute and per product, and an event applied again (in the same batch,
/// a later batch, or by many writers at once) is counted once.
pub async fn rollups_count_each_event_once_per_minute_and_product(t: &TestStore) {
    let store = &t.store;
    let base = 1_800_000_000_000 / MINUTE * MINUTE;
    let a = paid(11, base, &[(1, "TEA", 2, 1999), (2, "CUP", 1, 500)]);
    let b = paid(12, base, &[(1, "TEA", 1, 1999)]);
    let c = paid(13, base + MINUTE, &[(2, "CUP", 3, 500)]);
    let refund = RollupDelta {
        event_id: 14,
        minute_ms: base + MINUTE,
        refunded_orders: 1,
        refunded_minor: 1999,
        ..RollupDelta::default()
    };
    assert_eq!(store.apply_rollups(&[a.clone(), b.clone(), a.clone()]).await.unwrap(), vec![true, true, false]);
    assert_eq!(store.apply_rollups(&[b, c, refund]).await.unwrap(), vec![false, true, true]);

    // Many writers deliver one event at the same time: one of them counts it.
    let d = paid(15, base + MINUTE, &[(1, "TEA", 1, 1999)]);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, d) = (Arc::clone(store), d.clone());
            tokio::spawn(async move { store.apply_rollups(&[d]).await.unwrap()[0] })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1);

    let minutes = store.rollup_minutes(base, base + 2 * MINUTE).await.unwrap();
    assert_eq!(
        minutes,
        vec![
            MinuteRollup { minute_ms: base, paid_orders: 2, gmv_minor: 3 * 1999 + 500, units: 4, ..Default::default() },
            MinuteRollup {
                minute_ms: base + MINUTE,
                paid_orders: 2,
                gmv_minor: 1500 + 1999,
                units: 4,
                refunded_orders: 1,
                refunded_minor: 1999,
                ..Default::default()
            },
        ]
    );
    assert_eq!(store.rollup_minutes(base + MINUTE, base + 2 * MINUTE).await.unwrap().len(), 1, "to is exclusive");
    let total = store.rollup_total(base, base + 10 * MINUTE).await.unwrap();
    assert_eq!((total.minute_ms, total.paid_orders, total.gmv_minor, total.units), (base, 4, 4 * 1999 + 2000, 8));
    assert_eq!(store.rollup_total(0, base).await.unwrap(), MinuteRollup::default());

    let top = store.top_skus(base, base + 2 * MINUTE, 10).await.unwrap();
    let top: Vec<_> = top.iter().map(|s| (s.sku.as_str(), s.units, s.gmv_minor)).collect();
    assert_eq!(top, vec![("TEA", 4, 4 * 1999), ("CUP", 4, 2000)]);
    assert_eq!(store.top_skus(base, base + 2 * MINUTE, 1).await.unwrap().len(), 1);

    // Pruning forgets old ids only.
    assert_eq!(store.prune_applied(0).await.unwrap(), 0);
    assert_eq!(store.apply_rollups(&[paid(11, base, &[])]).await.unwrap(), vec![false]);
}

/// Pending rebates are read from the ledger's pending balances, largest first.
pub async fn pending_rebates_are_the_ledgers_pending_balances(t: &TestStore) {
    let store: &Arc<dyn Store> = &t.store;
    let g = ids();
    let (u1, u2) = (user(store, &g, "pend-a", Role::User).await, user(store, &g, "pend-b", Role::User).await);
    let (before, _) = store.pending_rebates(10).await.unwrap();
    for (i, (u, amount)) in [(u1, 300), (u2, 700)].into_iter().enumerate() {
        let txn = NewTxn {
            id: next(&g, Ok::<i64, flashback_core::ParseError>),
            key: format!("pend-{i}-{u}"),
            kind: "test".into(),
            reference: format!("pend-{i}"),
            postings: vec![Posting::debit(Account::Receivable, amount), Posting::credit(Account::Pending(u), amount)],
            no_overdraft: Vec::new(),
            at_ms: crate::now_ms(),
        };
        store.post(&txn).await.unwrap();
    }
    let (total, top) = store.pending_rebates(10).await.unwrap();
    assert_eq!(total - before, 1000);
    let ours: Vec<_> = top.into_iter().filter(|(u, _)| *u == u1 || *u == u2).collect();
    assert_eq!(ours, vec![(u2, 700), (u1, 300)]);
}

/// No verification reads as none; afterwards the newest verification time is reported,
/// whatever order they were recorded in.
pub async fn backup_verifications_are_recorded_and_the_newest_is_reported(t: &TestStore) {
    let store = &t.store;
    assert_eq!(store.last_backup_verified_ms().await.expect("read"), None);
    let g = ids();
    for at in [1_800_000_000_000, 1_800_000_500_000, 1_800_000_200_000] {
        let v = crate::BackupVerification {
            id: next(&g, Ok),
            verified_at_ms: at,
            backup_created_ms: at - 60_000,
            location: "/backups/2027-01-15".into(),
            files: 12,
            bytes: 34_567,
        };
        store.record_backup_verification(&v).await.expect("record");
        // The same row again is refused: each verification is one row.
        assert!(store.record_backup_verification(&v).await.is_err());
    }
    assert_eq!(store.last_backup_verified_ms().await.expect("read"), Some(1_800_000_500_000));
}
