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
    let breaks = store.rebate_list_breaks().await.expect("rebate lists");
    assert!(breaks.is_empty(), "{breaks:?}");
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

/// An account's statement walks its entries back in the order they were posted, one at a time
/// and in batches (an account named by several transactions of one batch), page by page; the
/// audit notices a chain that is broken, miscounted or headed wrong.
pub async fn statements_walk_each_accounts_chain_and_the_audit_finds_a_break(t: &TestStore) {
    let g = ids();
    let store = &t.store;
    let user = next(&g, UserId::new);
    let mut posted = Vec::new();
    for amount in [1, 2, 3] {
        let t = earn(&g, &format!("one:{user}:{amount}"), user, amount);
        store.post(&t).await.expect("post");
        posted.push((t.id, amount));
    }
    let batch: Vec<NewTxn> = [4, 5, 6].iter().map(|a| earn(&g, &format!("batch:{user}:{a}"), user, *a)).collect();
    store.post_batch(&batch).await.expect("batch");
    posted.extend(batch.iter().zip([4, 5, 6]).map(|(t, a)| (t.id, a)));
    let newest_first: Vec<(i64, i64)> = posted.iter().rev().map(|(id, a)| (*id, -a)).collect();
    let account = Account::Available(user);
    let page = |lines: Vec<crate::LedgerLine>| lines.into_iter().map(|l| (l.txn_id, l.amount)).collect::<Vec<_>>();
    let first = page(store.statement(account, None, 4).await.expect("statement"));
    assert_eq!(first, newest_first[..4]);
    let rest = page(store.statement(account, Some(first[3].0), 10).await.expect("next page"));
    assert_eq!(rest, newest_first[4..], "the next page goes on where the first stopped");
    assert!(store.statement(account, Some(posted[0].0), 10).await.expect("past the end").is_empty());
    assert!(store.statement(Account::Pending(user), None, 10).await.expect("no entries").is_empty());
    clean(store).await;

    // A link cut: the entries of the third transaction no longer follow their accounts' entries
    // before them.
    t.tamper(&format!("UPDATE ledger_entries SET prev_txn_id = NULL, prev_seq = NULL WHERE txn_id = {}", posted[2].0))
        .await;
    let audit = store.audit_ledger().await.expect("audit");
    assert!(
        audit.violations.iter().any(|v| v.contains(&format!("transaction {}", posted[2].0)) && v.contains("follow")),
        "{:?}",
        audit.violations
    );
    // A count that says one more than the chain holds, and a head that is not the last entry.
    let name = account.name();
    t.tamper(&format!("UPDATE ledger_accounts SET entry_count = entry_count + 1 WHERE name = '{name}'")).await;
    let audit = store.audit_ledger().await.expect("audit");
    assert!(
        audit.violations.iter().any(|v| v.starts_with(&format!("{name}: says it has 7 entries"))),
        "{:?}",
        audit.violations
    );
    assert!(
        audit.violations.iter().any(|v| *v == format!("{name}: its head is not its last entry")),
        "{:?}",
        audit.violations
    );
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

/// A profile's inviter is set once; a tracking id belongs to one user.
pub async fn profiles_keep_their_inviter_and_tracking_ids_have_one_owner(t: &TestStore) {
    use crate::{RebateProfile, StoreError, TrackingKind};
    use flashback_core::Tier;
    let g = ids();
    let store = &t.store;
    let inviter = super::user(store, &g, "rb-inviter", flashback_core::Role::User).await;
    let buyer = super::user(store, &g, "rb-buyer", flashback_core::Role::User).await;
    let other = super::user(store, &g, "rb-other", flashback_core::Role::User).await;
    let p = RebateProfile { user_id: buyer, tier: Tier::Standard, inviter_id: Some(inviter) };
    assert_eq!(store.upsert_rebate_profile(p).await.expect("create"), p);
    let promoted = store
        .upsert_rebate_profile(RebateProfile { tier: Tier::Gold, inviter_id: Some(other), ..p })
        .await
        .expect("update");
    assert_eq!((promoted.tier, promoted.inviter_id), (Tier::Gold, Some(inviter)), "tier changes, inviter stays");

    let code = format!("sid-{buyer}");
    store.bind_tracking_id(&code, buyer, TrackingKind::SpecialId, now()).await.expect("bind");
    store.bind_tracking_id(&code, buyer, TrackingKind::SpecialId, now()).await.expect("same owner again");
    let stolen = store.bind_tracking_id(&code, other, TrackingKind::SpecialId, now()).await;
    assert!(matches!(stolen, Err(StoreError::Conflict(_))), "{stolen:?}");
    assert_eq!(store.tracking_owner(&code).await.expect("owner"), Some(buyer));
    assert_eq!(store.tracking_owner("nobody").await.expect("owner"), None);

    // The batched lookups agree with the single ones, for any number of keys (the statements
    // pad their lists) and for none.
    let other_code = format!("sid-{other}");
    store.bind_tracking_id(&other_code, other, TrackingKind::RelationId, now()).await.expect("bind other");
    let mut asked: Vec<String> = (0..700).map(|i| format!("nobody-{i}")).collect();
    asked.extend([code.clone(), other_code.clone(), code.clone()]);
    let mut owners = store.tracking_owners(&asked).await.expect("owners");
    owners.sort();
    owners.dedup();
    let mut expected = vec![(code, buyer), (other_code, other)];
    expected.sort();
    assert_eq!(owners, expected);
    assert!(store.tracking_owners(&[]).await.expect("none").is_empty());
    let mut profiles = store.rebate_profiles(&[other, buyer, buyer]).await.expect("profiles");
    profiles.dedup();
    assert_eq!(profiles, vec![promoted], "only the user with a profile, once");
    assert!(store.rebate_profiles(&[]).await.expect("none").is_empty());
}

/// Balance changes of any size, and of many accounts in one batch, land exactly (they travel
/// to the database as one JSON parameter).
pub async fn balances_of_a_batch_are_exact_for_any_amount(t: &TestStore) {
    let g = ids();
    let store = &t.store;
    let users: Vec<UserId> = (0..1_200).map(|_| next(&g, UserId::new)).collect();
    // One account's change in the batch above 2^53 (where a double would round): the largest
    // entries allowed, many times, plus one; then one change per user.
    let max = crate::ledger::MAX_ENTRY_MINOR;
    let times = (1_i64 << 53) / max + 1;
    let mut batch: Vec<NewTxn> = (0..=times)
        .map(|i| {
            let amount = if i == times { 1 } else { max };
            txn(
                &g,
                &format!("big:{}:{i}", users[0]),
                vec![Posting::debit(Account::Receivable, amount), Posting::credit(Account::Pending(users[0]), amount)],
            )
        })
        .collect();
    let big = times * max + 1;
    assert!(big > 1_i64 << 53);
    batch.extend(users.iter().enumerate().map(|(i, u)| {
        let amount = i64::try_from(i).unwrap_or(0) + 1;
        txn(
            &g,
            &format!("each:{u}"),
            vec![Posting::debit(Account::Receivable, amount), Posting::credit(Account::Pending(*u), amount)],
        )
    }));
    let outcomes = store.post_batch(&batch).await.expect("batch");
    assert!(outcomes.iter().all(|o| *o == Posted::New));
    assert_eq!(store.balance(Account::Pending(users[0])).await.expect("big"), big + 1);
    for (i, u) in users.iter().enumerate().skip(1) {
        assert_eq!(store.wallet(*u).await.expect("wallet").pending, i64::try_from(i).unwrap_or(0) + 1);
    }
    clean(store).await;
}

/// Racing writers of one row: exactly one wins each version, and the ledger moves with it.
pub async fn a_rebate_row_and_its_ledger_move_together_once(t: &TestStore) {
    use crate::{Applied, RebateOrder};
    use flashback_core::rebate::lifecycle::RebateState;
    let g = Arc::new(ids());
    let store = &t.store;
    let buyer = next(&g, UserId::new);
    let line = format!("line-{buyer}");
    let row = RebateOrder {
        source: "taobao".into(),
        line_key: line.clone(),
        parent_key: "parent".into(),
        user_id: Some(buyer),
        inviter_id: None,
        grand_inviter_id: None,
        tracking: Some("sid".into()),
        item_id: "item".into(),
        item_title: "An item".into(),
        category: None,
        state: RebateState::Estimated,
        network_status: "paid".into(),
        paid_minor: 10_000,
        estimate_minor: 100,
        settled_minor: 0,
        refunded_minor: 0,
        commission_minor: 100,
        buyer_share: 50,
        inviter_share: 0,
        grand_share: 0,
        platform_share: 50,
        shares_available: false,
        click_ms: None,
        paid_at_ms: Some(now()),
        settled_at_ms: None,
        available_at_ms: None,
        network_modified_ms: now(),
        version: 1,
        created_at_ms: now(),
        updated_at_ms: now(),
    };
    let estimate = |key: &str| {
        txn(
            &g,
            key,
            vec![
                Posting::debit(Account::Receivable, 100),
                Posting::credit(Account::Pending(buyer), 50),
                Posting::credit(Account::Revenue, 50),
            ],
        )
    };
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (store, row, txn) = (Arc::clone(store), row.clone(), estimate(&format!("rebate:taobao:{line}:v1")));
            tokio::spawn(async move { store.apply_rebate(&row, None, Some(&txn)).await })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        if task.await.expect("task").expect("apply") == Applied::Done {
            done += 1;
        }
    }
    assert_eq!(done, 1, "one insert wins");
    assert_eq!(store.wallet(buyer).await.expect("wallet").pending, 50, "posted once");
    let stored = store.rebate_order("taobao", &line).await.expect("read").expect("exists");
    assert_eq!(stored, row);

    // The next version: settled and available; a writer holding the old version loses.
    let mut next_row = row.clone();
    next_row.state = RebateState::Available;
    next_row.shares_available = true;
    next_row.version = 2;
    let mut stale = next_row.clone();
    stale.state = RebateState::Invalid;
    let settle = txn(
        &g,
        &format!("rebate:taobao:{line}:v2"),
        vec![Posting::debit(Account::Pending(buyer), 50), Posting::credit(Account::Available(buyer), 50)],
    );
    assert_eq!(store.apply_rebate(&next_row, Some(1), Some(&settle)).await.expect("cas"), Applied::Done);
    assert_eq!(store.apply_rebate(&stale, Some(1), None).await.expect("cas"), Applied::Conflict);
    assert_eq!(store.wallet(buyer).await.expect("wallet"), Wallet { pending: 0, available: 50, withdrawing: 0 });
    assert_eq!(store.rebate_order("taobao", &line).await.expect("read").expect("row").state, RebateState::Available);
    let mine = store.rebates_of(buyer, None, 10).await.expect("mine");
    assert_eq!(mine.len(), 1);
    // A row that fails its own checks changes neither table.
    let mut broken = next_row.clone();
    broken.version = 3;
    broken.buyer_share = 60;
    assert!(store.apply_rebate(&broken, Some(2), Some(&estimate(&format!("broken:{line}")))).await.is_err());
    assert!(!store.posted(&format!("broken:{line}")).await.expect("posted"));
    clean(store).await;
}

/// A rebate row of 20 commission, shared 10 to its buyer (if any) and 10 to the platform.
fn rebate_row(source: &str, key: &str, buyer: Option<UserId>, version: i64) -> crate::RebateOrder {
    use flashback_core::rebate::lifecycle::RebateState;
    let buyer_share = if buyer.is_some() { 10 } else { 0 };
    crate::RebateOrder {
        source: source.into(),
        line_key: key.into(),
        parent_key: key.into(),
        user_id: buyer,
        inviter_id: None,
        grand_inviter_id: None,
        tracking: None,
        item_id: "i".into(),
        item_title: "t".into(),
        category: None,
        state: RebateState::Estimated,
        network_status: "paid".into(),
        paid_minor: 1_000,
        estimate_minor: 20,
        settled_minor: 0,
        refunded_minor: 0,
        commission_minor: 20,
        buyer_share,
        inviter_share: 0,
        grand_share: 0,
        platform_share: 20 - buyer_share,
        shares_available: false,
        click_ms: None,
        paid_at_ms: None,
        settled_at_ms: None,
        available_at_ms: None,
        network_modified_ms: 1,
        version,
        created_at_ms: now(),
        updated_at_ms: now(),
    }
}

/// Each buyer's rows are listed newest first, a row joining the list when it first has a
/// buyer (inserted with one, or given one later, alone or in a batch) and never changing
/// hands; pages go on from the last row shown; the audit finds a cut link, a wrong count and
/// a wrong head.
pub async fn rebate_lists_hold_each_buyers_rows_newest_first_and_the_audit_finds_a_break(t: &TestStore) {
    use crate::{Applied, RebateChange};
    let g = ids();
    let store = &t.store;
    let (buyer, other) = (next(&g, UserId::new), next(&g, UserId::new));
    let source = format!("lists{buyer}");
    let key = |n: u32| format!("r{n}");
    let apply = |n: u32, user: Option<UserId>, version: i64, expected: Option<i64>| {
        let row = rebate_row(&source, &key(n), user, version);
        async move { store.apply_rebate(&row, expected, None).await.expect("apply") }
    };
    assert_eq!(apply(1, Some(buyer), 1, None).await, Applied::Done);
    assert_eq!(apply(2, None, 1, None).await, Applied::Done, "no buyer yet: in no list");
    assert_eq!(apply(6, Some(other), 1, None).await, Applied::Done);
    let batch = vec![
        RebateChange { row: rebate_row(&source, &key(3), Some(buyer), 1), expected: None, txn: None },
        RebateChange { row: rebate_row(&source, &key(4), Some(buyer), 1), expected: None, txn: None },
        // r2 gets its buyer; r1 moves on in place.
        RebateChange { row: rebate_row(&source, &key(2), Some(buyer), 2), expected: Some(1), txn: None },
        RebateChange { row: rebate_row(&source, &key(1), Some(buyer), 2), expected: Some(1), txn: None },
        // A row never changes hands: this one stays the other buyer's.
        RebateChange { row: rebate_row(&source, &key(6), Some(buyer), 2), expected: Some(1), txn: None },
    ];
    let outcomes = store.apply_rebates(&batch, &[]).await.expect("batch");
    assert_eq!(outcomes, [Applied::Done, Applied::Done, Applied::Done, Applied::Done, Applied::Conflict]);
    // Claimed later, alone.
    assert_eq!(apply(5, None, 1, None).await, Applied::Done);
    assert_eq!(apply(5, Some(buyer), 2, Some(1)).await, Applied::Done);
    assert_eq!(apply(5, Some(other), 3, Some(2)).await, Applied::Conflict, "not the other's to take");

    let keys = |rows: Vec<crate::ListedRebate>| rows.into_iter().map(|e| e.row.line_key).collect::<Vec<_>>();
    let all = keys(store.rebates_of(buyer, None, 10).await.expect("list"));
    assert_eq!(all, ["r5", "r2", "r4", "r3", "r1"]);
    let first = store.rebates_of(buyer, None, 2).await.expect("first page");
    assert_eq!(keys(first.clone()), ["r5", "r2"]);
    let rest = keys(store.rebates_of(buyer, Some(&first[1].cursor()), 10).await.expect("next page"));
    assert_eq!(rest, ["r4", "r3", "r1"], "the next page goes on where the first stopped");
    let at = |role: crate::RebateRole, n: u32| crate::RebateCursor { role, source: source.clone(), line_key: key(n) };
    let buyers = crate::RebateRole::Buyer;
    assert!(store.rebates_of(buyer, Some(&at(buyers, 1)), 10).await.expect("past the end").is_empty());
    assert!(store.rebates_of(buyer, Some(&at(buyers, 6)), 10).await.expect("theirs").is_empty());
    let as_inviter = at(crate::RebateRole::Inviter, 2);
    assert!(store.rebates_of(buyer, Some(&as_inviter), 10).await.expect("not in that role").is_empty());
    assert_eq!(keys(store.rebates_of(other, None, 10).await.expect("other")), ["r6"]);
    assert!(store.rebates_of(buyer, None, 0).await.expect("none").is_empty());
    clean(store).await;

    t.tamper(&format!("UPDATE rebate_orders SET prev_source = NULL, prev_line_key = NULL WHERE source = '{source}' AND line_key = 'r3'"))
        .await;
    let breaks = store.rebate_list_breaks().await.expect("audit");
    assert_eq!(breaks, [format!("user {buyer}: rebate row {source}:r3 is not linked to their entry before it")]);
    t.tamper(&format!("UPDATE rebate_lists SET listed = listed + 1 WHERE user_id = {buyer}")).await;
    let breaks = store.rebate_list_breaks().await.expect("audit");
    assert!(breaks.iter().any(|b| b.starts_with(&format!("user {buyer}: lists 6 rebate entries"))), "{breaks:?}");
    assert!(
        breaks.contains(&format!("user {buyer}: the head of their rebate list is not their newest entry")),
        "{breaks:?}"
    );
}

/// A row that gets its first buyer joins the lists of the buyer's inviter and their inviter
/// too, in one numbering with the rows each bought: every user sees the rows they are paid
/// from, in their role, newest first, paged across roles; the audit finds an entry in the
/// wrong role, a missing one and one listed for nobody.
pub async fn rebate_lists_hold_the_rows_inviters_are_paid_from(t: &TestStore) {
    use crate::{Applied, RebateChange, RebateRole};
    let g = ids();
    let store = &t.store;
    let [grand, inviter, buyer, buyer2] = [(); 4].map(|_| next(&g, UserId::new));
    let source = format!("shares{grand}");
    let row = |n: u32, who: [Option<UserId>; 3], version: i64| {
        let mut r = rebate_row(&source, &format!("r{n}"), who[0], version);
        (r.inviter_id, r.grand_inviter_id) = (who[1], who[2]);
        (r.buyer_share, r.inviter_share, r.grand_share) = (10, who[1].map_or(0, |_| 4), who[2].map_or(0, |_| 2));
        r.platform_share = 20 - r.buyer_share - r.inviter_share - r.grand_share;
        r
    };
    let by_inviter = [Some(inviter), Some(grand), None];
    let invited = |u: UserId| [Some(u), Some(inviter), Some(grand)];
    assert_eq!(store.apply_rebate(&row(1, by_inviter, 1), None, None).await.expect("r1"), Applied::Done);
    assert_eq!(store.apply_rebate(&row(2, invited(buyer), 1), None, None).await.expect("r2"), Applied::Done);
    let mut unclaimed = row(3, invited(buyer2), 1);
    (unclaimed.user_id, unclaimed.inviter_id, unclaimed.grand_inviter_id) = (None, None, None);
    (unclaimed.buyer_share, unclaimed.inviter_share, unclaimed.grand_share, unclaimed.platform_share) = (0, 0, 0, 20);
    assert_eq!(store.apply_rebate(&unclaimed, None, None).await.expect("r3"), Applied::Done);
    let batch = vec![
        RebateChange { row: row(4, invited(buyer), 1), expected: None, txn: None },
        // Claimed by its buyer: it joins their list and their inviters'.
        RebateChange { row: row(3, invited(buyer2), 2), expected: Some(1), txn: None },
        // Moves on in place: no new entries.
        RebateChange { row: row(1, by_inviter, 2), expected: Some(1), txn: None },
        // Inserted twice in one batch: the second is not written, and takes no place.
        RebateChange { row: row(4, invited(buyer), 1), expected: None, txn: None },
    ];
    let done = [Applied::Done, Applied::Done, Applied::Done, Applied::Conflict];
    assert_eq!(store.apply_rebates(&batch, &[]).await.expect("batch"), done);
    assert_eq!(store.apply_rebate(&row(5, by_inviter, 1), None, None).await.expect("r5"), Applied::Done);

    let entries = |rows: Vec<crate::ListedRebate>| {
        rows.into_iter().map(|e| (e.row.line_key.clone(), e.role, e.share())).collect::<Vec<_>>()
    };
    let e = |n: u32, role: RebateRole, share: i64| (format!("r{n}"), role, share);
    let (b, i, gi) = (RebateRole::Buyer, RebateRole::Inviter, RebateRole::GrandInviter);
    let all = store.rebates_of(inviter, None, 10).await.expect("inviter's");
    assert_eq!(entries(all), [e(5, b, 10), e(3, i, 4), e(4, i, 4), e(2, i, 4), e(1, b, 10)]);
    assert_eq!(
        entries(store.rebates_of(grand, None, 10).await.expect("grand's")),
        [e(5, i, 4), e(3, gi, 2), e(4, gi, 2), e(2, gi, 2), e(1, i, 4)]
    );
    assert_eq!(entries(store.rebates_of(buyer, None, 10).await.expect("buyer's")), [e(4, b, 10), e(2, b, 10)]);
    assert_eq!(entries(store.rebates_of(buyer2, None, 10).await.expect("buyer2's")), [e(3, b, 10)]);
    // Pages of two, each going on from the last entry shown, whichever role it was.
    let mut pages = Vec::new();
    let mut after: Option<crate::RebateCursor> = None;
    loop {
        let page = store.rebates_of(inviter, after.as_ref(), 2).await.expect("page");
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        pages.push(entries(page));
    }
    assert_eq!(pages, [vec![e(5, b, 10), e(3, i, 4)], vec![e(4, i, 4), e(2, i, 4)], vec![e(1, b, 10)]]);
    // Another user's entry, or an entry in a role the user does not hold, is no cursor of theirs.
    let at = |role: RebateRole| crate::RebateCursor { role, source: source.clone(), line_key: "r3".into() };
    assert!(store.rebates_of(buyer, Some(&at(i)), 10).await.expect("foreign").is_empty());
    assert!(store.rebates_of(inviter, Some(&at(gi)), 10).await.expect("wrong role").is_empty());
    assert_eq!(entries(store.rebates_of(inviter, Some(&at(i)), 1).await.expect("after r3")), [e(4, i, 4)]);
    clean(store).await;

    t.tamper(&format!("UPDATE rebate_orders SET inv_prev_role = 2 WHERE source = '{source}' AND line_key = 'r3'"))
        .await;
    let breaks = store.rebate_list_breaks().await.expect("audit");
    assert_eq!(breaks, [format!("user {inviter}: rebate row {source}:r3 is not linked to their entry before it")]);
    t.tamper(&format!(
        "UPDATE rebate_orders SET grand_list_no = NULL, grand_prev_source = NULL, grand_prev_line_key = NULL, \
         grand_prev_role = NULL WHERE source = '{source}' AND line_key = 'r4'"
    ))
    .await;
    let breaks = store.rebate_list_breaks().await.expect("audit");
    assert!(
        breaks
            .iter()
            .any(|b| b.starts_with(&format!("user {grand}: lists 5 rebate entries; has 5 numbered 1..5 (4 distinct)"))),
        "{breaks:?}"
    );
    t.tamper(&format!("UPDATE rebate_orders SET grand_list_no = 9 WHERE source = '{source}' AND line_key = 'r1'"))
        .await;
    let breaks = store.rebate_list_breaks().await.expect("audit");
    assert!(breaks.contains(&format!("rebate row {source}:r1: listed for someone it does not pay")), "{breaks:?}");
}

/// A batch writes each row's compare-and-set and the ledger transactions of the rows that were
/// written, together; a row whose version moved is reported, and its transaction not posted.
pub async fn a_batch_of_row_changes_writes_only_what_won_its_race(t: &TestStore) {
    use crate::{Applied, RebateChange};
    let g = Arc::new(ids());
    let store = &t.store;
    let buyer = next(&g, UserId::new);
    let row = |key: &str, version: i64| rebate_row("batch", key, Some(buyer), version);
    let post = |key: String| {
        txn(
            &g,
            &key,
            vec![
                Posting::debit(Account::Receivable, 20),
                Posting::credit(Account::Pending(buyer), 10),
                Posting::credit(Account::Revenue, 10),
            ],
        )
    };
    let tag = buyer.to_string();
    let (a, b) = (format!("a{tag}"), format!("b{tag}"));
    // b exists already at version 1: a change expecting "new" loses its race.
    store.apply_rebate(&row(&b, 1), None, Some(&post(format!("{b}:v1")))).await.expect("seed");
    let changes = vec![
        RebateChange { row: row(&a, 1), expected: None, txn: Some(post(format!("{a}:v1"))) },
        RebateChange { row: row(&b, 1), expected: None, txn: Some(post(format!("{b}:again"))) },
    ];
    let flagged = crate::RebateReject {
        id: next(&g, Ok),
        source: "batch".into(),
        line_key: Some(format!("r{tag}")),
        reason: "flagged with its batch".into(),
        payload: "{}".into(),
        at_ms: now(),
    };
    let outcomes = store.apply_rebates(&changes, std::slice::from_ref(&flagged)).await.expect("batch");
    assert_eq!(outcomes, vec![Applied::Done, Applied::Conflict]);
    let kept = store.recent_rejects(100).await.expect("rejects");
    assert!(kept.contains(&flagged), "the batch kept its flagged input: {kept:?}");
    assert!(store.posted(&format!("{a}:v1")).await.expect("posted"));
    assert!(!store.posted(&format!("{b}:again")).await.expect("posted"), "the loser's money did not move");
    assert_eq!(store.wallet(buyer).await.expect("wallet").pending, 20);
    let keys = vec![a.clone(), b.clone(), "nope".to_owned()];
    let mut found: Vec<String> =
        store.rebate_orders_by_keys("batch", &keys).await.expect("by keys").into_iter().map(|r| r.line_key).collect();
    found.sort();
    assert_eq!(found, vec![a, b]);
    clean(store).await;
}
