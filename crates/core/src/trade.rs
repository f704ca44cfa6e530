//! Trade values: order states and their transitions, quantities, points, idempotency keys.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// Where an order is in its life.
///
/// ```text
/// pending_payment ──pay──▶ paid ──ship──▶ shipped ──complete──▶ completed
///        │                  │                │
///        └─cancel/expire─▶ cancelled         └──────refund──────▶ refunded ◀── refund ── paid
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Placed, stock reserved, waiting for payment until its deadline.
    PendingPayment,
    /// Paid; the reserved stock is sold.
    Paid,
    /// Handed to the carrier.
    Shipped,
    /// Received; points are awarded.
    Completed,
    /// Cancelled by the buyer or expired unpaid; stock and points returned.
    Cancelled,
    /// Paid and then fully refunded.
    Refunded,
}

/// A change of state an order can go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// The payment provider confirmed payment.
    Pay,
    /// The merchant shipped it.
    Ship,
    /// The buyer confirmed receipt.
    Complete,
    /// The buyer cancelled before paying.
    Cancel,
    /// The payment deadline passed.
    Expire,
    /// The merchant or back office refunded it in full.
    Refund,
}

impl OrderState {
    /// Every state, for listings and audits.
    pub const ALL: [OrderState; 6] = [
        OrderState::PendingPayment,
        OrderState::Paid,
        OrderState::Shipped,
        OrderState::Completed,
        OrderState::Cancelled,
        OrderState::Refunded,
    ];

    /// The state `t` leads to from `self`, or `None` if `t` is not allowed here.
    pub fn apply(self, t: Transition) -> Option<OrderState> {
        use OrderState as S;
        use Transition as T;
        match (self, t) {
            (S::PendingPayment, T::Pay) => Some(S::Paid),
            (S::PendingPayment, T::Cancel | T::Expire) => Some(S::Cancelled),
            (S::Paid, T::Ship) => Some(S::Shipped),
            (S::Shipped, T::Complete) => Some(S::Completed),
            (S::Paid | S::Shipped, T::Refund) => Some(S::Refunded),
            _ => None,
        }
    }

    /// Whether no transition leaves this state.
    pub fn is_final(self) -> bool {
        matches!(self, OrderState::Completed | OrderState::Cancelled | OrderState::Refunded)
    }

    /// The stored and serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::PendingPayment => "pending_payment",
            OrderState::Paid => "paid",
            OrderState::Shipped => "shipped",
            OrderState::Completed => "completed",
            OrderState::Cancelled => "cancelled",
            OrderState::Refunded => "refunded",
        }
    }
}

impl Transition {
    /// The states this transition may start from.
    pub fn sources(self) -> Vec<OrderState> {
        OrderState::ALL.into_iter().filter(|s| s.apply(self).is_some()).collect()
    }

    /// The event name published when the transition happens.
    pub fn event(self) -> &'static str {
        match self {
            Transition::Pay => "order.paid",
            Transition::Ship => "order.shipped",
            Transition::Complete => "order.completed",
            Transition::Cancel | Transition::Expire => "order.cancelled",
            Transition::Refund => "order.refunded",
        }
    }
}

impl FromStr for OrderState {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            ParseError::new("state", "must be one of pending_payment, paid, shipped, completed, cancelled, refunded")
        })
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many units of a SKU one order line buys: 1 to [`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(i64);

impl Quantity {
    /// The most units of one SKU in one order.
    pub const MAX: i64 = 999;

    /// Parses a quantity.
    pub fn new(v: i64) -> Result<Self, ParseError> {
        if !(1..=Self::MAX).contains(&v) {
            return Err(ParseError::new("quantity", format!("must be 1 to {}", Self::MAX)));
        }
        Ok(Self(v))
    }

    /// The count.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = ParseError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<Quantity> for i64 {
    fn from(q: Quantity) -> i64 {
        q.0
    }
}

/// A count of loyalty points, which are money: exact, never negative, at most [`Points::MAX`].
/// One point is worth one minor unit when redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Points(i64);

impl Points {
    /// Zero points.
    pub const ZERO: Points = Points(0);
    /// The most points one request may name.
    pub const MAX: i64 = 1_000_000_000_000;

    /// Parses a point count.
    pub fn new(v: i64) -> Result<Self, ParseError> {
        if !(0..=Self::MAX).contains(&v) {
            return Err(ParseError::new("points", format!("must be 0 to {}", Self::MAX)));
        }
        Ok(Self(v))
    }

    /// The count.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Points {
    type Error = ParseError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<Points> for i64 {
    fn from(p: Points) -> i64 {
        p.0
    }
}

/// A client's `Idempotency-Key`: 1–128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a key.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if !(1..=128).contains(&raw.len()) || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError::new("idempotency-key", "must be 1 to 128 visible ASCII characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = ParseError;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        Self::parse(&v)
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> String {
        k.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_transition() -> impl Strategy<Value = Transition> {
        prop_oneof![
            Just(Transition::Pay),
            Just(Transition::Ship),
            Just(Transition::Complete),
            Just(Transition::Cancel),
            Just(Transition::Expire),
            Just(Transition::Refund),
        ]
    }

    #[test]
    fn the_life_cycle_allows_exactly_the_documented_transitions() {
        use OrderState as S;
        use Transition as T;
        assert_eq!(S::PendingPayment.apply(T::Pay), Some(S::Paid));
        assert_eq!(S::PendingPayment.apply(T::Expire), Some(S::Cancelled));
        assert_eq!(S::Paid.apply(T::Refund), Some(S::Refunded));
        assert_eq!(S::Shipped.apply(T::Refund), Some(S::Refunded));
        assert_eq!(S::Paid.apply(T::Cancel), None, "a paid order is refunded, not cancelled");
        assert_eq!(S::Cancelled.apply(T::Pay), None, "a payment after expiry never fulfils");
        assert_eq!(S::Completed.apply(T::Refund), None);
        assert_eq!(T::Refund.sources(), vec![S::Paid, S::Shipped]);
    }

    proptest! {
        #[test]
        fn final_states_are_final_and_every_walk_ends_in_one(ts in proptest::collection::vec(any_transition(), 0..20)) {
            let mut s = OrderState::PendingPayment;
            for t in ts {
                if let Some(next) = s.apply(t) {
                    prop_assert!(!s.is_final());
                    s = next;
                }
            }
            for t in [Transition::Pay, Transition::Ship, Transition::Complete, Transition::Cancel, Transition::Expire, Transition::Refund] {
                if s.is_final() {
                    prop_assert_eq!(s.apply(t), None);
                }
            }
        }
    }

    #[test]
    fn quantities_points_and_keys_are_bounded() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(1000).is_err());
        assert!(Points::new(-1).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_err());
        assert_eq!(IdempotencyKey::parse("order-2026-0001").unwrap().as_str(), "order-2026-0001");
        assert_eq!("paid".parse::<OrderState>().unwrap(), OrderState::Paid);
    }
}
