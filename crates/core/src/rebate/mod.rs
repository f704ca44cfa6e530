//! Rebates: how a commission is split between the buyer, their inviters and the platform,
//! the ledger's accounts, and exact parsing of the decimal amounts affiliate networks send.
//!
//! **The rounding rule** (one, documented): every beneficiary's share is
//! `floor(commission × rate / 10_000)`; whatever the floors leave over stays with the
//! platform. Rates are basis points and the beneficiaries' rates sum to at most 10,000, so the
//! shares never exceed the commission and always add up to it exactly.

pub mod lifecycle;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{Money, ParseError, UserId};

/// A rate in basis points (1/100 of a percent), 0 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct BasisPoints(u32);

impl BasisPoints {
    /// All of it.
    pub const ALL: BasisPoints = BasisPoints(10_000);

    /// A rate of `bp` basis points.
    pub fn new(bp: u32) -> Result<Self, ParseError> {
        if bp > 10_000 {
            return Err(ParseError::new("rate", "at most 10000 basis points (100%)"));
        }
        Ok(Self(bp))
    }

    /// The rate in basis points.
    pub fn get(self) -> u32 {
        self.0
    }

    /// `floor(amount × self / 10_000)`: a beneficiary's share under the rounding rule.
    pub fn share_of(self, amount: Money) -> Money {
        let share = i128::from(amount.minor()) * i128::from(self.0) / 10_000;
        // At most `amount`, so it fits and is valid.
        Money::from_minor(i64::try_from(share).unwrap_or(0)).unwrap_or(Money::ZERO)
    }
}

impl TryFrom<u32> for BasisPoints {
    type Error = ParseError;
    fn try_from(bp: u32) -> Result<Self, ParseError> {
        Self::new(bp)
    }
}

impl From<BasisPoints> for u32 {
    fn from(bp: BasisPoints) -> u32 {
        bp.0
    }
}

/// A buyer's rebate tier; higher tiers keep more of the commission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Everyone starts here.
    Standard,
    /// Frequent buyers.
    Silver,
    /// The best customers.
    Gold,
}

impl Tier {
    /// Every tier.
    pub const ALL: [Tier; 3] = [Tier::Standard, Tier::Silver, Tier::Gold];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Silver => "silver",
            Tier::Gold => "gold",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| ParseError::new("tier", "standard, silver or gold"))
    }
}

/// Who shares a commission: rates per tier, per-category overrides of the buyer's rate, and
/// the referral shares of the inviter and the inviter's inviter (two levels at most).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitPolicy {
    standard: BasisPoints,
    silver: BasisPoints,
    gold: BasisPoints,
    inviter: BasisPoints,
    grand_inviter: BasisPoints,
    /// Category name → the buyer's rate for items of that category, whatever the tier.
    overrides: HashMap<String, BasisPoints>,
}

/// The parts of one commission; they add up to it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Split {
    /// The buyer's share.
    pub buyer: Money,
    /// The inviter's share (zero without an inviter).
    pub inviter: Money,
    /// The inviter's inviter's share (zero without one).
    pub grand_inviter: Money,
    /// What stays with the platform, rounding remainders included.
    pub platform: Money,
}

impl Split {
    /// The sum of every part.
    pub fn total(&self) -> Option<Money> {
        self.buyer.checked_add(self.inviter)?.checked_add(self.grand_inviter)?.checked_add(self.platform)
    }
}

impl SplitPolicy {
    /// A policy; every tier's rate (and every override) plus both referral rates must stay
    /// within 100%, so the shares can never exceed the commission.
    pub fn new(
        [standard, silver, gold]: [BasisPoints; 3],
        inviter: BasisPoints,
        grand_inviter: BasisPoints,
        overrides: HashMap<String, BasisPoints>,
    ) -> Result<Self, ParseError> {
        let referral = inviter.0 + grand_inviter.0;
        let highest = [standard, silver, gold].into_iter().chain(overrides.values().copied()).map(|r| r.0).max();
        if highest.unwrap_or(0) + referral > 10_000 {
            return Err(ParseError::new("split policy", "a buyer's rate plus the referral rates exceeds 100%"));
        }
        Ok(Self { standard, silver, gold, inviter, grand_inviter, overrides })
    }

    /// The buyer's rate for `tier`, or the category's override.
    pub fn buyer_rate(&self, tier: Tier, category: Option<&str>) -> BasisPoints {
        if let Some(rate) = category.and_then(|c| self.overrides.get(c)) {
            return *rate;
        }
        match tier {
            Tier::Standard => self.standard,
            Tier::Silver => self.silver,
            Tier::Gold => self.gold,
        }
    }

    /// Splits `commission` for a buyer of `tier` with `inviters` (how many levels of
    /// inviters the buyer has: 0, 1 or 2; more are ignored).
    pub fn split(&self, commission: Money, tier: Tier, category: Option<&str>, inviters: usize) -> Split {
        let buyer = self.buyer_rate(tier, category).share_of(commission);
        let inviter = if inviters >= 1 { self.inviter.share_of(commission) } else { Money::ZERO };
        let grand_inviter = if inviters >= 2 { self.grand_inviter.share_of(commission) } else { Money::ZERO };
        let given = buyer.minor() + inviter.minor() + grand_inviter.minor();
        // The rates sum to at most 100% and each share is floored, so `given <= commission`.
        let platform = commission.checked_sub(Money::from_minor(given).unwrap_or(commission)).unwrap_or(Money::ZERO);
        Split { buyer, inviter, grand_inviter, platform }
    }
}

impl Default for SplitPolicy {
    /// 50% / 60% / 70% of the commission to the buyer by tier, 10% to the inviter, 5% to
    /// the inviter's inviter.
    fn default() -> Self {
        Self {
            standard: BasisPoints(5_000),
            silver: BasisPoints(6_000),
            gold: BasisPoints(7_000),
            inviter: BasisPoints(1_000),
            grand_inviter: BasisPoints(500),
            overrides: HashMap::new(),
        }
    }
}

/// Parses a non-negative decimal amount in major units with at most two decimals ("12.3",
/// "0.05", "7") into exact minor units — networks send amounts as strings; no float is ever
/// involved.
pub fn parse_decimal_minor(s: &str) -> Result<Money, ParseError> {
    let bad = || ParseError::new("amount", format!("not a non-negative amount with at most 2 decimals: {s:?}"));
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || whole.len() > 12 || frac.len() > 2 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let cents: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().map_err(|_| bad())? * 10,
        _ => frac.parse().map_err(|_| bad())?,
    };
    whole.checked_mul(100).and_then(|w| w.checked_add(cents)).ok_or_else(bad).and_then(Money::from_minor)
}

/// Parses a rate sent as a decimal fraction ("0.0500" is 5%) into basis points, exactly;
/// finer precision than a basis point is refused rather than rounded.
pub fn parse_rate(s: &str) -> Result<BasisPoints, ParseError> {
    let bad = || ParseError::new("rate", format!("not a fraction between 0 and 1 in basis points: {s:?}"));
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if !(whole == "0" || whole == "1") || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (kept, rest) = frac.split_at(frac.len().min(4));
    if rest.bytes().any(|b| b != b'0') {
        return Err(bad());
    }
    let mut bp: u32 = if kept.is_empty() { 0 } else { kept.parse().map_err(|_| bad())? };
    for _ in kept.len()..4 {
        bp *= 10;
    }
    BasisPoints::new(if whole == "1" { 10_000 + bp } else { bp })
}

/// An account of the double-entry ledger. Each user has three (pending, available,
/// withdrawing); the platform has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// Rebates earned but not yet payable (estimated, received, settled within the hold).
    Pending(UserId),
    /// Rebates the user may withdraw (may go negative after a reversal; that blocks
    /// withdrawals until it recovers).
    Available(UserId),
    /// Held for a withdrawal under review or being paid.
    Withdrawing(UserId),
    /// Commission the networks owe us.
    Receivable,
    /// The platform's own share of commissions.
    Revenue,
    /// Money: what networks paid us, less what we paid out to users.
    Cash,
    /// Rebates the platform funds itself (on its own orders), as an expense.
    RebateExpense,
}

impl Account {
    /// Whether the account's balance grows with credits (what we owe users, what we earned)
    /// rather than debits (what we are owed, what we hold).
    pub fn credit_normal(self) -> bool {
        matches!(self, Account::Pending(_) | Account::Available(_) | Account::Withdrawing(_) | Account::Revenue)
    }

    /// The stored name: `user:<id>:pending`, `platform:receivable`, …
    pub fn name(self) -> String {
        match self {
            Account::Pending(u) => format!("user:{u}:pending"),
            Account::Available(u) => format!("user:{u}:available"),
            Account::Withdrawing(u) => format!("user:{u}:withdrawing"),
            Account::Receivable => "platform:receivable".into(),
            Account::Revenue => "platform:revenue".into(),
            Account::Cash => "platform:cash".into(),
            Account::RebateExpense => "platform:rebate_expense".into(),
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new("account", format!("unknown ledger account {s:?}"));
        match s {
            "platform:receivable" => return Ok(Account::Receivable),
            "platform:revenue" => return Ok(Account::Revenue),
            "platform:cash" => return Ok(Account::Cash),
            "platform:rebate_expense" => return Ok(Account::RebateExpense),
            _ => {}
        }
        let rest = s.strip_prefix("user:").ok_or_else(bad)?;
        let (id, kind) = rest.split_once(':').ok_or_else(bad)?;
        let user = UserId::new(id.parse().map_err(|_| bad())?).map_err(|_| bad())?;
        match kind {
            "pending" => Ok(Account::Pending(user)),
            "available" => Ok(Account::Available(user)),
            "withdrawing" => Ok(Account::Withdrawing(user)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bp(n: u32) -> BasisPoints {
        BasisPoints::new(n).expect("in range")
    }

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(parse_decimal_minor("12.34").map(Money::minor), Ok(1234));
        assert_eq!(parse_decimal_minor("0.5").map(Money::minor), Ok(50));
        assert_eq!(parse_decimal_minor("7").map(Money::minor), Ok(700));
        assert_eq!(parse_decimal_minor("0.00").map(Money::minor), Ok(0));
        for bad in ["", "-1", "1.234", "1.", ".5", "1e3", "NaN", "12,5", "9999999999999", " ", "1.-2"] {
            assert!(parse_decimal_minor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rates_parse_exactly() {
        assert_eq!(parse_rate("0.0500"), Ok(bp(500)));
        assert_eq!(parse_rate("0.3"), Ok(bp(3_000)));
        assert_eq!(parse_rate("1.0000"), Ok(bp(10_000)));
        assert_eq!(parse_rate("0.12340"), Ok(bp(1_234)));
        for bad in ["0.00001", "1.5", "2", "-0.1", "abc", "0.1.2"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_policy_whose_rates_exceed_the_commission_is_refused() {
        let over = SplitPolicy::new([bp(5_000), bp(6_000), bp(9_000)], bp(1_000), bp(500), HashMap::new());
        assert!(over.is_err());
        let bad_override = SplitPolicy::new(
            [bp(5_000), bp(6_000), bp(7_000)],
            bp(1_000),
            bp(500),
            HashMap::from([("电子".to_owned(), bp(9_000))]),
        );
        assert!(bad_override.is_err());
    }

    #[test]
    fn the_documented_example() {
        // 1.01 yuan of commission, standard buyer with two inviters: 50 + 10 + 5 fen floored,
        // the remainder with the platform.
        let s = SplitPolicy::default().split(Money::from_minor(101).expect("m"), Tier::Standard, None, 2);
        assert_eq!((s.buyer.minor(), s.inviter.minor(), s.grand_inviter.minor(), s.platform.minor()), (50, 10, 5, 36));
        let alone = SplitPolicy::default().split(Money::from_minor(101).expect("m"), Tier::Gold, None, 0);
        assert_eq!((alone.buyer.minor(), alone.inviter.minor(), alone.platform.minor()), (70, 0, 31));
    }

    #[test]
    fn accounts_round_trip_by_name() {
        let u = UserId::new(42).expect("id");
        for a in [
            Account::Pending(u),
            Account::Available(u),
            Account::Withdrawing(u),
            Account::Receivable,
            Account::Revenue,
            Account::Cash,
            Account::RebateExpense,
        ] {
            assert_eq!(Account::parse(&a.name()), Ok(a));
        }
        for bad in ["user:0:pending", "user:x:available", "user:1:other", "platform:other", ""] {
            assert!(Account::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn shares_add_up_to_the_commission_and_never_exceed_it(
            commission in 0i64..=crate::money::MAX_MINOR,
            tier in 0usize..3,
            inviters in 0usize..4,
            rates in (0u32..=8_000, 0u32..=1_000, 0u32..=1_000),
        ) {
            let (buyer, inviter, grand) = rates;
            let policy = SplitPolicy::new([bp(buyer), bp(buyer / 2), bp(buyer)], bp(inviter), bp(grand), HashMap::new())
                .expect("within 100%");
            let c = Money::from_minor(commission).expect("m");
            let s = policy.split(c, Tier::ALL[tier], None, inviters);
            prop_assert_eq!(s.total(), Some(c));
            prop_assert!(s.buyer.minor() + s.inviter.minor() + s.grand_inviter.minor() <= commission);
            // Each share is the floor of its exact value: short of it by less than one unit.
            let exact = |rate: u32| i128::from(commission) * i128::from(rate);
            prop_assert!(exact(policy.buyer_rate(Tier::ALL[tier], None).get()) - i128::from(s.buyer.minor()) * 10_000 < 10_000);
            if inviters == 0 {
                prop_assert_eq!(s.inviter, Money::ZERO);
            }
            if inviters < 2 {
                prop_assert_eq!(s.grand_inviter, Money::ZERO);
            }
        }

        #[test]
        fn a_bigger_commission_never_gives_anyone_less(a in 0i64..1_000_000_000, extra in 0i64..1_000_000) {
            let policy = SplitPolicy::default();
            let small = policy.split(Money::from_minor(a).expect("m"), Tier::Silver, None, 2);
            let big = policy.split(Money::from_minor(a + extra).expect("m"), Tier::Silver, None, 2);
            prop_assert!(big.buyer >= small.buyer && big.inviter >= small.inviter && big.grand_inviter >= small.grand_inviter);
        }

        #[test]
        fn decimal_amounts_round_trip(minor in 0i64..=crate::money::MAX_MINOR) {
            let text = format!("{}.{:02}", minor / 100, minor % 100);
            prop_assert_eq!(parse_decimal_minor(&text).map(Money::minor), Ok(minor));
        }
    }
}
