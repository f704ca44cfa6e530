//! Calendar days for daily tables and rollups: `Day` is a civil date (`YYYYMMDD` as a number)
//! in a fixed offset from UTC, converted to and from Unix milliseconds without a time library.

use crate::ParseError;

const MS_PER_DAY: i64 = 86_400_000;

/// A civil date, stored as the number `YYYYMMDD` (also the suffix of `events_YYYYMMDD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(u32);

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (`civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Day {
    /// The day holding `ts_ms`, with days starting at `offset_ms` from UTC midnight
    /// (`+8 h` = 28,800,000 for China Standard Time).
    pub fn of(ts_ms: i64, offset_ms: i64) -> Self {
        let (y, m, d) = civil_from_days((ts_ms + offset_ms).div_euclid(MS_PER_DAY));
        // Years 0..=9999 only; timestamps outside are clamped by the callers' validation.
        let n = y.clamp(0, 9999) * 10_000 + m * 100 + d;
        Self(u32::try_from(n).unwrap_or(0))
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new("day", "must be a date as YYYY-MM-DD");
        let mut parts = s.split('-');
        let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let (y, m, d): (i64, i64, i64) =
            (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
        if !(1..=12).contains(&m) || d < 1 {
            return Err(bad());
        }
        // A real date round-trips through the day count; 2026-02-30 does not.
        if civil_from_days(days_from_civil(y, m, d)) != (y, m, d) {
            return Err(bad());
        }
        Ok(Self(u32::try_from(y * 10_000 + m * 100 + d).map_err(|_| bad())?))
    }

    /// `YYYYMMDD` as a number.
    pub fn number(self) -> u32 {
        self.0
    }

    /// From a stored `YYYYMMDD`, if it is a real date.
    pub fn from_number(n: u32) -> Option<Self> {
        Self::parse(&Self(n).to_string()).ok()
    }

    fn parts(self) -> (i64, i64, i64) {
        (i64::from(self.0 / 10_000), i64::from(self.0 / 100 % 100), i64::from(self.0 % 100))
    }

    /// Unix milliseconds at which this day starts, for days starting at `offset_ms` from UTC.
    pub fn start_ms(self, offset_ms: i64) -> i64 {
        let (y, m, d) = self.parts();
        days_from_civil(y, m, d) * MS_PER_DAY - offset_ms
    }

    /// The day after.
    pub fn next(self) -> Self {
        let (y, m, d) = self.parts();
        Self::of((days_from_civil(y, m, d) + 1) * MS_PER_DAY, 0)
    }

    /// Days from `self` to `other` inclusive (0 when `other` is earlier).
    pub fn span_to(self, other: Day) -> u32 {
        let (a, b) = (self.parts(), other.parts());
        let n = days_from_civil(b.0, b.1, b.2) - days_from_civil(a.0, a.1, a.2) + 1;
        u32::try_from(n.max(0)).unwrap_or(0)
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0 / 10_000, self.0 / 100 % 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_follow_the_offset() {
        // 2026-11-20T20:00:00Z is already the 21st in Beijing.
        let ts = 1_795_204_800_000;
        assert_eq!(Day::of(ts, 0).to_string(), "2026-11-20");
        assert_eq!(Day::of(ts, 8 * 3_600_000).to_string(), "2026-11-21");
        assert_eq!(Day::of(0, 0).number(), 19_700_101);
        assert_eq!(Day::of(-1, 0).to_string(), "1969-12-31");
    }

    #[test]
    fn parse_start_and_next_agree() {
        let d = Day::parse("2024-02-28").unwrap();
        assert_eq!(d.next().to_string(), "2024-02-29");
        assert_eq!(d.next().next().to_string(), "2024-03-01");
        assert_eq!(Day::parse("2026-12-31").unwrap().next().to_string(), "2027-01-01");
        for offset in [0, 8 * 3_600_000, -5 * 3_600_000] {
            let start = d.start_ms(offset);
            assert_eq!(Day::of(start, offset), d);
            assert_eq!(Day::of(start - 1, offset).next(), d);
        }
        assert_eq!(d.span_to(Day::parse("2024-03-02").unwrap()), 4);
        assert_eq!(d.span_to(Day::parse("2024-02-01").unwrap()), 0);
        assert_eq!(Day::from_number(20_240_228), Some(d));
    }

    #[test]
    fn bad_dates_are_refused() {
        for s in ["2026-02-30", "2026-13-01", "2026-1-01", "26-01-01", "2026-01-01-01", "", "yyyy-mm-dd", "2026-00-10"]
        {
            assert!(Day::parse(s).is_err(), "{s}");
        }
        assert_eq!(Day::from_number(20_260_230), None);
    }
}
