//! `flashback audit ledger`: the ledger's own invariants (every transaction balances, every
//! balance equals its entries) and that it agrees with what the rebate rows and withdrawals
//! say it should hold, and that every user's rebate rows form one unbroken list:
//!
//! - each user's pending balance is the sum of their shares in rows not yet available;
//! - each user's available + withdrawing + paid out is the sum of their shares in available rows;
//! - receivable is the sum of the networks' rows' commissions, rebate expense the sum of the
//!   platform's own rows'; revenue the sum of the platform's shares.

use std::collections::HashMap;

use flashback_core::rebate::lifecycle::RebateState;
use flashback_core::{Account, UserId};
use flashback_store::{LedgerAudit, WithdrawalState};

use crate::AppState;

/// Runs every check; violations are listed in the report.
pub async fn audit(state: &AppState) -> Result<LedgerAudit, flashback_store::StoreError> {
    let mut report = state.store.audit_ledger().await?;
    report.violations.extend(state.store.rebate_list_breaks().await?);
    let mut pending: HashMap<UserId, i64> = HashMap::new();
    let mut earned: HashMap<UserId, i64> = HashMap::new();
    let (mut receivable, mut expense, mut revenue) = (0_i64, 0_i64, 0_i64);
    let mut after = None;
    loop {
        let page = state.store.rebate_orders_page(after.clone(), 1_000).await?;
        for r in &page {
            if r.source == super::ingest::PLATFORM {
                expense += r.commission_minor;
            } else {
                receivable += r.commission_minor;
            }
            revenue += r.platform_share;
            let bucket = if r.state == RebateState::Available { &mut earned } else { &mut pending };
            for (user, share) in
                [(r.user_id, r.buyer_share), (r.inviter_id, r.inviter_share), (r.grand_inviter_id, r.grand_share)]
            {
                if let Some(u) = user {
                    *bucket.entry(u).or_default() += share;
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == 1_000 => after = Some((last.source.clone(), last.line_key.clone())),
            _ => break,
        }
    }
    let mut paid: HashMap<UserId, i64> = HashMap::new();
    let mut before = None;
    loop {
        let page = state.store.withdrawals(None, Some(WithdrawalState::Paid), before, 100).await?;
        for w in &page {
            *paid.entry(w.user_id).or_default() += w.amount_minor;
        }
        match page.last() {
            Some(last) if page.len() == 100 => before = Some(last.id),
            _ => break,
        }
    }
    let mut balances: HashMap<Account, i64> = state.store.balances().await?.into_iter().collect();
    let mut take = |a: Account| balances.remove(&a).unwrap_or(0);
    let v = &mut report.violations;
    let users: std::collections::BTreeSet<UserId> =
        pending.keys().chain(earned.keys()).chain(paid.keys()).copied().collect();
    for u in users {
        let (p, a, w) = (take(Account::Pending(u)), take(Account::Available(u)), take(Account::Withdrawing(u)));
        let want_pending = pending.get(&u).copied().unwrap_or(0);
        if p != want_pending {
            v.push(format!("user {u}: pending {p} but their rows hold {want_pending}"));
        }
        let out = paid.get(&u).copied().unwrap_or(0);
        let want_earned = earned.get(&u).copied().unwrap_or(0);
        if a + w + out != want_earned {
            v.push(format!(
                "user {u}: available {a} + withdrawing {w} + paid out {out} but their rows earned {want_earned}"
            ));
        }
    }
    if take(Account::Receivable) != receivable {
        v.push(format!("receivable differs from the rows' commissions ({receivable})"));
    }
    if take(Account::RebateExpense) != expense {
        v.push(format!("rebate expense differs from the platform rows' commissions ({expense})"));
    }
    let paid_out: i64 = paid.values().sum();
    if take(Account::Cash) != -paid_out {
        v.push(format!("cash differs from the withdrawals paid out ({paid_out})"));
    }
    if take(Account::Revenue) != revenue {
        v.push(format!("revenue differs from the platform's shares ({revenue})"));
    }
    // What remains are user accounts with no rows or withdrawals at all: they must be empty.
    for (account, balance) in balances {
        if balance != 0 {
            v.push(format!("{} holds {balance} with nothing behind it", account.name()));
        }
    }
    Ok(report)
}
