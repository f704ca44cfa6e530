//! The ledger's conformance cases.

use std::sync::Arc;

use flashback_core::{Account, IdGenerator, UserId};

use super::{ids, next};
use crate::testing::TestStore;
use crate::{LedgerError, NewTxn, Posted, Posting, Store, Wallet};

fn now() -> i64 {
    crate::now_ms()
}

fn txn(g: &IdGenerator, key: &str, postings: Vec<Posting>) -> NewTxn {
    NewTxn {
        id: g.next_at(u64::try_from(now()).unwrap_or(0)),
        key: key.to_owned(),
        kind: "test".into(),
        reference: key.to_owned(),
        postings,
        no_overdraft: Vec::new(),
        at_ms: now(),
    }
}

/// A user credited `amount` available, from receivables.
fn earn(g: &IdGenerator, key: &str, user: UserId, amount: i64) -> NewTxn {
    txn(g, key, vec![Posting::debit(Account::Receivable, amount), Posting::credit(Account::Available(user), amount)])
}

async fn clean(store: &Arc<dyn Store>) {
    let audit = store.audit_ledger().await.expect("audit");
    assert!(audit.violations.is_empty(), "{:?}", audit.violations);
    assert_eq!(audit.total, 0);
}

/// A transaction applies once per key, must balance, and balances follow from its entries.
pub async fn ledger_transactions_balance_and_apply_once(t: &TestStore) {
    let g = ids();
    let store = &t.store;
    let user = next(&g, UserId::new);
    let key = format!("earn:{user}");
    assert_eq!(store.post(&earn(&g, &key, user, 250)).await.expect("post"), Posted::New);
    assert_eq!(store.post(&earn(&g, &key, user, 999)).await.expect("again"), Posted::Existing, "same key, no effect");
    assert!(store.posted(&key).await.expect("posted"));
    assert_eq!(store.wallet(user).await.expect("wallet"), Wallet { pending: 0, available: 250, withdrawing: 0 });
    assert_eq!(store.balance(Account::Available(user)).await.expect("balance"), 250);

    let unbalanced = txn(
        &g,
        &format!("bad:{user}"),
        vec![Posting::debit(Account::Receivable, 10), Posting::credit(Account::Available(user), 9)],
    );
    assert!(matches!(store.post(&unbalanced).await, Err(LedgerError::Unbalanced(_))));
    let empty = txn(&g, &format!("empty:{user}"), vec![Posting::debit(Account::Receivable, 0)]);
    assert!(matches!(store.post(&empty).await, Err(LedgerError::Unbalanced(_))));
    assert!(!store.posted(&format!("bad:{user}")).await.expect("posted"), "a refused transaction leaves no trace");

    // A reversal may take available below zero (it is not guarded); a guarded move may not.
    let clawback = txn(
        &g,
        &format!("clawback:{user}"),
        vec![Posting::debit(Account::Available(user), 300), Posting::credit(Account::Receivable, 300)],
    );
    store.post(&clawback).await.expect("reversal");
    assert_eq!(store.wallet(user).await.expect("wallet").available, -50);
    let mut withdraw = txn(
        &g,
        &format!("withdraw:{user}"),
        vec![Posting::debit(Account::Available(user), 1), Posting::credit(Account::Withdrawing(user), 1)],
    );
    withdraw.no_overdraft = vec![Account::Available(user)];
    assert!(matches!(store.post(&withdraw).await, Err(LedgerError::Overdraft(Account::Available(u))) if u == user));
    assert!(!store.posted(&withdraw.key).await.expect("posted"), "the refused withdrawal changed nothing");

    let lines = store.statement(Account::Available(user), None, 10).await.expect("statement");
    assert_eq!(lines.iter().map(|l| l.amount).collect::<Vec<_>>(), vec![300, -250], "newest first, signed");
    clean(store).await;
}

/// Twenty concurrent withdrawals of 10 from a balance of 100: exactly ten succeed.
pub async fn concurrent_withdrawals_never_overdraw(t: &TestStore) {
    let g = Arc::new(ids());
    let store = &t.store;
    let user = next(&g, UserId::new);
    store.post(&earn(&g, &format!("seed:{user}"), user, 100)).await.expect("seed");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (store, g) = (Arc::clone(store), Arc::clone(&g));
            tokio::spawn(async move {
                let mut w = txn(
                    &g,
                    &format!("withdraw:{user}:{i}"),
                    vec![Posting::debit(Account::Available(user), 10), Posting::credit(Account::Withdrawing(user), 10)],
                );
                w.no_overdraft = vec![Account::Available(user)];
                store.post(&w).await
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(Posted::New) => ok += 1,
            Err(LedgerError::Overdraft(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(store.wallet(user).await.expect("wallet"), Wallet { pending: 0, available: 0, withdrawing: 100 });
    clean(store).await;
}

/// Batches racing on the same accounts, with repeated keys: every balance ends exact.
pub async fn concurrent_batches_keep_every_balance_exact(t: &TestStore) {
    let g = Arc::new(ids());
    let store = &t.store;
    let users: Vec<UserId> = (0..5).map(|_| next(&g, UserId::new)).collect();
    let tasks: Vec<_> = (0..6)
        .map(|worker| {
            let (store, g, users) = (Arc::clone(store), Arc::clone(&g), users.clone());
            tokio::spawn(async move {
                // Workers 0-2 and 3-5 post the same keys: each key must count once.
                let batch: Vec<NewTxn> = (0..200)
                    .map(|i| {
                        let user = users[i % users.len()];
                        let key = format!("batch:{}:{}:{i}", users[0], worker % 3);
                        txn(
                            &g,
                            &key,
                            vec![
                                Posting::debit(Account::Receivable, 7),
                                Posting::credit(Account::Pending(user), 5),
                                Posting::credit(Account::Revenue, 2),
                            ],
                        )
                    })
                    .collect();
                store.post_batch(&batch).await
            })
        })
        .collect();
    let mut new = 0;
    for task in tasks {
        let outcomes = task.await.expect("task").expect("batch");
        new += outcomes.iter().filter(|o| **o == Posted::New).count();
    }
    assert_eq!(new, 600, "3 distinct batches of 200 keys");
    for user in &users {
        assert_eq!(store.wallet(*user).await.expect("wallet").pending, 600 / 5 * 5);
    }
    clean(store).await;
}
