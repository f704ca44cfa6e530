//! Keyset pagination: opaque cursors and bounded page sizes (never `OFFSET`).

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// Where the next page starts: the id of the last row of the previous page, rows being listed
/// newest (highest id) first. Clients treat it as an opaque string; it is written as the
/// decimal id (`^[1-9][0-9]{0,17}$`), so that any string the pattern admits is a cursor this
/// server answers (an id of no row simply pages from there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Rows with an id strictly below this one come next.
    pub before_id: i64,
}

impl Cursor {
    /// The text form handed to clients.
    pub fn encode(self) -> String {
        self.before_id.to_string()
    }

    /// Parses a cursor as [`Cursor::encode`] writes it.
    pub fn decode(text: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new("cursor", "is not a cursor this server issued");
        let digits = (1..=18).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
        if !digits || text.starts_with('0') {
            return Err(bad());
        }
        Ok(Self { before_id: text.parse().map_err(|_| bad())? })
    }
}

/// How many rows one page holds: 1 to [`PageLimit::MAX`], [`PageLimit::DEFAULT`] when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct PageLimit(u16);

impl PageLimit {
    /// The largest page a client may ask for.
    pub const MAX: u16 = 100;
    /// The page size when the client does not say.
    pub const DEFAULT: PageLimit = PageLimit(20);

    /// The number of rows.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<i64> for PageLimit {
    type Error = ParseError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        u16::try_from(v)
            .ok()
            .filter(|v| (1..=Self::MAX).contains(v))
            .map(PageLimit)
            .ok_or_else(|| ParseError::new("limit", format!("must be 1 to {}", Self::MAX)))
    }
}

impl From<PageLimit> for i64 {
    fn from(p: PageLimit) -> i64 {
        i64::from(p.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let c = Cursor { before_id: 123_456_789 };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in ["nonsense!", "", "0", "012", "-4", "+4", "1234567890123456789", "djE6MTIz"] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
        assert_eq!(Cursor::decode("999999999999999999").unwrap().before_id, 999_999_999_999_999_999);
    }

    #[test]
    fn limits_are_bounded() {
        assert!(PageLimit::try_from(0).is_err());
        assert!(PageLimit::try_from(101).is_err());
        assert_eq!(PageLimit::try_from(100).unwrap().get(), 100);
    }
}
