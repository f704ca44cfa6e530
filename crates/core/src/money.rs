//! Money as an exact, non-negative count of minor units (cents, fen).

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// The largest amount we accept for a single price: 10^12 minor units (ten billion in major units).
///
/// Bounding amounts at the edge keeps every later sum of a few million of them inside `i64`.
pub const MAX_MINOR: i64 = 1_000_000_000_000;

/// An amount of money in integer minor units; never negative, never above [`MAX_MINOR`].
///
/// There is no floating point anywhere on the money path: arithmetic is checked and returns
/// `None` instead of wrapping or going below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Money(i64);

impl Money {
    /// Zero minor units.
    pub const ZERO: Money = Money(0);

    /// Parses a count of minor units.
    pub fn from_minor(minor: i64) -> Result<Self, ParseError> {
        if minor < 0 {
            return Err(ParseError::new("amount", "must not be negative"));
        }
        if minor > MAX_MINOR {
            return Err(ParseError::new("amount", format!("must be at most {MAX_MINOR} minor units")));
        }
        Ok(Money(minor))
    }

    /// The amount in minor units.
    pub fn minor(self) -> i64 {
        self.0
    }

    /// `self + other`, or `None` if the sum leaves the representable range.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// `self - other`, or `None` if the result would be negative.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).filter(|v| *v >= 0).map(Money)
    }

    /// `self × n`, or `None` on overflow.
    pub fn checked_mul(self, n: i64) -> Option<Money> {
        if n < 0 {
            return None;
        }
        self.0.checked_mul(n).map(Money)
    }
}

impl TryFrom<i64> for Money {
    type Error = ParseError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Money::from_minor(v)
    }
}

impl From<Money> for i64 {
    fn from(m: Money) -> i64 {
        m.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn negative_and_oversized_amounts_are_rejected() {
        assert!(Money::from_minor(-1).is_err());
        assert!(Money::from_minor(MAX_MINOR + 1).is_err());
        assert_eq!(Money::from_minor(MAX_MINOR).map(Money::minor), Ok(MAX_MINOR));
    }

    #[test]
    fn json_numbers_parse_and_negative_json_is_an_error() {
        let m: Money = serde_json::from_str("1999").expect("valid");
        assert_eq!(m.minor(), 1999);
        assert!(serde_json::from_str::<Money>("-5").is_err());
        assert!(serde_json::from_str::<Money>("19.99").is_err());
    }

    proptest! {
        #[test]
        fn subtraction_never_goes_below_zero(a in 0..MAX_MINOR, b in 0..MAX_MINOR) {
            let (a, b) = (Money::from_minor(a).unwrap(), Money::from_minor(b).unwrap());
            match a.checked_sub(b) {
                Some(d) => prop_assert_eq!(d.minor() + b.minor(), a.minor()),
                None => prop_assert!(b > a),
            }
        }

        #[test]
        fn addition_is_exact(a in 0..MAX_MINOR, b in 0..MAX_MINOR) {
            let (ma, mb) = (Money::from_minor(a).unwrap(), Money::from_minor(b).unwrap());
            prop_assert_eq!(ma.checked_add(mb).map(Money::minor), Some(a + b));
        }
    }
}
