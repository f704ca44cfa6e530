//! Withdrawals under contention: requests and reviews of one user's withdrawals racing each
//! other must all land, the store retrying what the database rolled back to break deadlocks.

use std::sync::Arc;

use flashback_core::{Account, IdGenerator, Role, UserId};

use super::ids;
use crate::testing::TestStore;
use crate::{NewTxn, Posting, Wallet, Withdrawal, WithdrawalMove, WithdrawalState};

fn txn(g: &IdGenerator, key: String, postings: Vec<Posting>, guard: Option<Account>) -> NewTxn {
    let now = crate::now_ms();
    NewTxn {
        id: g.next_at(u64::try_from(now).unwrap_or(0)),
        reference: key.clone(),
        key,
        kind: "test".into(),
        postings,
        no_overdraft: guard.into_iter().collect(),
        at_ms: now,
    }
}

fn withdrawal(id: i64, user: UserId, amount: i64) -> Withdrawal {
    let now = crate::now_ms();
    Withdrawal {
        id,
        user_id: user,
        amount_minor: amount,
        payee: "payee@example.com".into(),
        state: WithdrawalState::Requested,
        transfer_no: format!("FBW{id}"),
        reason: None,
        reviewer_id: None,
        provider_ref: None,
        created_at_ms: now,
        updated_at_ms: now,
    }
}

/// Ten withdrawals of one user requested at once, then approved and paid at once (each payment
/// moves its row and posts to the ledger in one transaction, as a review does): every call
/// lands (contention is retried inside the store, never handed to the caller) and the
/// balances come out exact.
pub async fn racing_reviews_of_one_users_withdrawals_all_land(t: &TestStore) {
    const N: i64 = 10;
    let g = Arc::new(ids());
    let store = &t.store;
    let user = super::user(store, &g, "racing-withdrawer", Role::User).await;
    let reviewer = super::user(store, &g, "racing-reviewer", Role::Admin).await;
    let seed = vec![Posting::debit(Account::Receivable, 10 * N), Posting::credit(Account::Available(user), 10 * N)];
    store.post(&txn(&g, format!("seed:{user}"), seed, None)).await.expect("seed");

    let requests: Vec<_> = (0..N)
        .map(|i| {
            let (store, g) = (Arc::clone(store), Arc::clone(&g));
            tokio::spawn(async move {
                let w = withdrawal(g.next_at(u64::try_from(crate::now_ms()).unwrap_or(0)), user, 10);
                let hold =
                    vec![Posting::debit(Account::Available(user), 10), Posting::credit(Account::Withdrawing(user), 10)];
                let hold = txn(&g, format!("withdrawal:{}:{i}:hold", w.id), hold, Some(Account::Available(user)));
                store.request_withdrawal(&w, 0, 100, &hold).await.map(|()| w.id)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for r in requests {
        ids.push(r.await.expect("task").expect("every request lands"));
    }
    assert_eq!(store.wallet(user).await.expect("wallet"), Wallet { pending: 0, available: 0, withdrawing: 10 * N });

    let reviews: Vec<_> = ids
        .iter()
        .map(|&id| {
            let (store, g) = (Arc::clone(store), Arc::clone(&g));
            tokio::spawn(async move {
                let approve = WithdrawalMove {
                    id,
                    from: WithdrawalState::Requested,
                    to: WithdrawalState::Approved,
                    reason: None,
                    reviewer: Some(reviewer),
                    provider_ref: None,
                    txn: None,
                };
                store.move_withdrawal(approve).await.expect("approval lands").expect("was requested");
                let paid = vec![Posting::debit(Account::Withdrawing(user), 10), Posting::credit(Account::Cash, 10)];
                let paid = txn(&g, format!("withdrawal:{id}:paid"), paid, None);
                let pay = WithdrawalMove {
                    id,
                    from: WithdrawalState::Approved,
                    to: WithdrawalState::Paid,
                    reason: None,
                    reviewer: None,
                    provider_ref: Some("REF"),
                    txn: Some(&paid),
                };
                store.move_withdrawal(pay).await.expect("payment lands").expect("was approved")
            })
        })
        .collect();
    for r in reviews {
        assert_eq!(r.await.expect("task").state, WithdrawalState::Paid);
    }
    assert_eq!(store.wallet(user).await.expect("wallet"), Wallet { pending: 0, available: 0, withdrawing: 0 });
    let paid = store.withdrawals(Some(user), Some(WithdrawalState::Paid), None, 100).await.expect("list");
    assert_eq!(paid.len(), ids.len());
    let audit = store.audit_ledger().await.expect("audit");
    assert!(audit.violations.is_empty(), "{:?}", audit.violations);
}
