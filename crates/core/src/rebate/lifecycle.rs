//! One commissionable order row's life: what the network reports, the state we keep, and the
//! ledger position that state stands for.
//!
//! The ledger never records "events"; it records the difference between the position a row
//! should hold and the position it holds. So a row that arrives settled before it was ever
//! seen paid, a stale row after a newer one, or the same row twice all end where the newest
//! report says — each applied change is one balanced transaction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Account, Split};
use crate::{Money, UserId};

/// An order row's status at the network, normalised (Taobao: 12 paid, 14 received, 3 settled,
/// 13 invalid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkStatus {
    /// Paid by the buyer; the commission is an estimate.
    Paid,
    /// The buyer confirmed receipt.
    Received,
    /// The network settled the commission with us.
    Settled,
    /// Cancelled, refunded before settlement, or judged fraudulent.
    Invalid,
}

impl NetworkStatus {
    /// From Taobao's `tk_status`.
    pub fn from_tk_status(code: i64) -> Option<Self> {
        match code {
            12 => Some(Self::Paid),
            14 => Some(Self::Received),
            3 => Some(Self::Settled),
            13 => Some(Self::Invalid),
            _ => None,
        }
    }
}

/// What we keep per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebateState {
    /// Paid at the network; shares pending, from the estimate.
    Estimated,
    /// Received; still the estimate.
    Received,
    /// Settled; shares pending, from the settled amount, until the hold period passes.
    Settled,
    /// Settled and past the hold: the shares are available.
    Available,
    /// Never pays.
    Invalid,
    /// Refunded after settlement: everything clawed back.
    Reversed,
}

impl RebateState {
    /// Every state.
    pub const ALL: [RebateState; 6] = [
        RebateState::Estimated,
        RebateState::Received,
        RebateState::Settled,
        RebateState::Available,
        RebateState::Invalid,
        RebateState::Reversed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RebateState::Estimated => "estimated",
            RebateState::Received => "received",
            RebateState::Settled => "settled",
            RebateState::Available => "available",
            RebateState::Invalid => "invalid",
            RebateState::Reversed => "reversed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, crate::ParseError> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| crate::ParseError::new("rebate state", format!("unknown {s:?}")))
    }

    /// Nothing the network says later changes a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(self, RebateState::Invalid | RebateState::Reversed)
    }
}

/// One report of a row by the network (a feed row, a postback, a refund record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Its status.
    pub status: NetworkStatus,
    /// The estimated commission.
    pub estimate: Money,
    /// The settled commission (meaningful once settled).
    pub settled: Money,
    /// Commission clawed back by refunds after settlement.
    pub refunded: Money,
    /// The network's modification time; older reports than the last applied are stale.
    pub modified_ms: i64,
    /// When the network settled it, if it has.
    pub settled_at_ms: Option<i64>,
}

/// Who shares a row's commission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Beneficiaries {
    /// The buyer, once attributed.
    pub buyer: Option<UserId>,
    /// The buyer's inviter.
    pub inviter: Option<UserId>,
    /// The inviter's inviter.
    pub grand_inviter: Option<UserId>,
}

/// What a row holds in the ledger: the commission it stands on, who pays it, its split, and
/// where the buyers' shares sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// The commission.
    pub commission: Money,
    /// Who pays it: [`Account::Receivable`] (a network owes it) or [`Account::RebateExpense`]
    /// (the platform funds it, on its own orders).
    pub payer: Account,
    /// Its split.
    pub split: Split,
    /// Whether the beneficiaries' shares are available (else pending).
    pub available: bool,
}

impl Holding {
    /// The position as balances per account (normal sign). Unattributed shares stay with
    /// the platform.
    pub fn position(&self, who: Beneficiaries) -> BTreeMap<Account, i64> {
        let mut p = BTreeMap::new();
        let mut add = |a: Account, m: Money| {
            if m.minor() != 0 {
                *p.entry(a).or_insert(0) += m.minor();
            }
        };
        add(self.payer, self.commission);
        let bucket = |u: UserId| if self.available { Account::Available(u) } else { Account::Pending(u) };
        let mut platform = self.split.platform;
        for (user, share) in [
            (who.buyer, self.split.buyer),
            (who.inviter, self.split.inviter),
            (who.grand_inviter, self.split.grand_inviter),
        ] {
            match user {
                Some(u) => add(bucket(u), share),
                None => platform = platform.checked_add(share).unwrap_or(platform),
            }
        }
        add(Account::Revenue, platform);
        p
    }
}

/// The entries (debit positive, credit negative) that move a row from one position to
/// another; they balance whenever both positions do.
pub fn moves(from: &BTreeMap<Account, i64>, to: &BTreeMap<Account, i64>) -> Vec<(Account, i64)> {
    let mut accounts: Vec<Account> = from.keys().chain(to.keys()).copied().collect();
    accounts.sort();
    accounts.dedup();
    accounts
        .into_iter()
        .filter_map(|a| {
            let diff = to.get(&a).copied().unwrap_or(0) - from.get(&a).copied().unwrap_or(0);
            let entry = if a.credit_normal() { -diff } else { diff };
            (entry != 0).then_some((a, entry))
        })
        .collect()
}

/// The state a report puts a row in, `now_ms` and the hold period deciding availability.
pub fn state_for(report: &Report, now_ms: i64, hold_ms: i64) -> RebateState {
    let settled_and_refunded =
        report.status == NetworkStatus::Settled && report.refunded.minor() >= report.settled.minor();
    match report.status {
        NetworkStatus::Invalid => RebateState::Invalid,
        _ if settled_and_refunded && report.refunded.minor() > 0 => RebateState::Reversed,
        NetworkStatus::Paid => RebateState::Estimated,
        NetworkStatus::Received => RebateState::Received,
        NetworkStatus::Settled => match report.settled_at_ms {
            Some(at) if now_ms >= at.saturating_add(hold_ms) => RebateState::Available,
            _ => RebateState::Settled,
        },
    }
}

/// The commission a report stands on in `state`.
pub fn commission_for(report: &Report, state: RebateState) -> Money {
    match state {
        RebateState::Estimated | RebateState::Received => report.estimate,
        RebateState::Settled | RebateState::Available => {
            report.settled.checked_sub(report.refunded).unwrap_or(Money::ZERO)
        }
        RebateState::Invalid | RebateState::Reversed => Money::ZERO,
    }
}

/// Whether a report should replace what we hold: never after a terminal state, never if it
/// is older than the last applied one; at the same modification time only if it moves the
/// row forward (a refund record and a feed row may share a timestamp).
pub fn supersedes(held: Option<(RebateState, i64)>, report: &Report, now_ms: i64, hold_ms: i64) -> bool {
    let Some((state, modified)) = held else { return true };
    if state.is_terminal() || report.modified_ms < modified {
        return false;
    }
    report.modified_ms > modified || rank(state_for(report, now_ms, hold_ms)) > rank(state)
}

fn rank(s: RebateState) -> u8 {
    match s {
        RebateState::Estimated => 0,
        RebateState::Received => 1,
        RebateState::Settled => 2,
        RebateState::Available => 3,
        RebateState::Invalid | RebateState::Reversed => 4,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rebate::{SplitPolicy, Tier};

    fn m(n: i64) -> Money {
        Money::from_minor(n).expect("money")
    }

    fn report(status: NetworkStatus, modified_ms: i64) -> Report {
        Report {
            status,
            estimate: m(120),
            settled: if status == NetworkStatus::Settled { m(101) } else { Money::ZERO },
            refunded: Money::ZERO,
            modified_ms,
            settled_at_ms: (status == NetworkStatus::Settled).then_some(modified_ms),
        }
    }

    fn who() -> Beneficiaries {
        Beneficiaries {
            buyer: Some(UserId::new(1).expect("id")),
            inviter: Some(UserId::new(2).expect("id")),
            grand_inviter: None,
        }
    }

    /// Applies reports in the given order, as the ingest does; returns the final state and
    /// the balances all the moves produced.
    fn apply_all(reports: &[Report], now: i64) -> (Option<RebateState>, BTreeMap<Account, i64>) {
        let policy = SplitPolicy::default();
        let mut held: Option<(RebateState, i64)> = None;
        let mut position = BTreeMap::new();
        let mut balances: BTreeMap<Account, i64> = BTreeMap::new();
        for r in reports {
            if !supersedes(held, r, now, 1_000) {
                continue;
            }
            let state = state_for(r, now, 1_000);
            let commission = commission_for(r, state);
            let holding = Holding {
                commission,
                payer: Account::Receivable,
                split: policy.split(commission, Tier::Standard, None, 1),
                available: state == RebateState::Available,
            };
            let target = holding.position(who());
            let entries = moves(&position, &target);
            assert_eq!(entries.iter().map(|(_, a)| a).sum::<i64>(), 0, "every move balances");
            for (a, e) in entries {
                *balances.entry(a).or_insert(0) += if a.credit_normal() { -e } else { e };
            }
            position = target;
            held = Some((state, r.modified_ms));
        }
        balances.retain(|_, v| *v != 0);
        (held.map(|h| h.0), balances)
    }

    #[test]
    fn settled_before_paid_ends_settled_and_the_late_paid_row_changes_nothing() {
        let in_order = apply_all(&[report(NetworkStatus::Paid, 10), report(NetworkStatus::Settled, 20)], 100);
        let reversed = apply_all(&[report(NetworkStatus::Settled, 20), report(NetworkStatus::Paid, 10)], 100);
        assert_eq!(in_order, reversed);
        assert_eq!(in_order.0, Some(RebateState::Settled));
        // 101 settled: buyer 50, inviter 10, platform 41.
        assert_eq!(in_order.1.get(&Account::Pending(UserId::new(1).expect("id"))), Some(&50));
        assert_eq!(in_order.1.get(&Account::Revenue), Some(&41));
    }

    #[test]
    fn a_refund_after_settlement_claws_everything_back_and_is_final() {
        let mut refund = report(NetworkStatus::Settled, 30);
        refund.refunded = m(101);
        refund.settled_at_ms = Some(20);
        let (state, balances) =
            apply_all(&[report(NetworkStatus::Settled, 20), refund, report(NetworkStatus::Settled, 40)], 5_000);
        assert_eq!(state, Some(RebateState::Reversed));
        assert!(balances.is_empty(), "nothing left anywhere: {balances:?}");
    }

    #[test]
    fn an_unattributed_row_keeps_every_share_with_the_platform() {
        let h = Holding {
            commission: m(100),
            payer: Account::Receivable,
            split: SplitPolicy::default().split(m(100), Tier::Gold, None, 2),
            available: false,
        };
        let p = h.position(Beneficiaries::default());
        assert_eq!(p, BTreeMap::from([(Account::Receivable, 100), (Account::Revenue, 100)]));
    }

    proptest! {
        /// A row's reports in any delivery order, with a duplicate, end where applying them in
        /// the network's order ends. The network's sequence is paid → received → settled,
        /// cut short anywhere, possibly ending invalid.
        #[test]
        fn delivery_order_never_changes_the_outcome(
            len in 1usize..=3,
            invalid in any::<bool>(),
            seed in any::<u64>(),
            dup in 0usize..4,
        ) {
            let mut statuses = vec![NetworkStatus::Paid, NetworkStatus::Received, NetworkStatus::Settled];
            statuses.truncate(len);
            if invalid {
                statuses.push(NetworkStatus::Invalid);
            }
            let reports: Vec<Report> = statuses.iter().enumerate()
                .map(|(i, s)| report(*s, 10 * (i64::try_from(i).expect("small") + 1)))
                .collect();
            let expected = apply_all(&reports, 100);
            let mut shuffled = reports.clone();
            shuffled.push(reports[dup % reports.len()].clone());
            // A deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = usize::try_from(s >> 33).expect("fits") % (i + 1);
                shuffled.swap(i, j);
            }
            prop_assert_eq!(apply_all(&shuffled, 100), expected);
        }
    }
}
