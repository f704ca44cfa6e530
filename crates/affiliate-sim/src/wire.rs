//! TOP's wire formats: money as yuan with two decimals, rates with four, and times as
//! `YYYY-MM-DD HH:MM:SS` in Beijing time (UTC+8).

use time::format_description::FormatItem;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Beijing time, UTC+8: every time on TOP's wire is in it.
pub const BEIJING: UtcOffset = offset!(+8);

const TIME_FORMAT: &[FormatItem<'static>] = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// Renders fen (minor units) as yuan with two decimals: `12345` → `"123.45"`.
pub fn format_fen(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Parses a yuan amount with at most two decimals into fen: `"123.45"` → `12345`, `"7"` → `700`.
pub fn parse_fen(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || fraction.len() > 2 || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<2}").parse().ok()? };
    let fen = whole.checked_mul(100)?.checked_add(fraction)?;
    Some(if negative { -fen } else { fen })
}

/// Renders a rate in basis points of one (1/10000) with four decimals: `500` → `"0.0500"`.
pub fn format_rate_bp(bp: u32) -> String {
    format!("{}.{:04}", bp / 10_000, bp % 10_000)
}

/// Renders Unix milliseconds as Beijing time, `YYYY-MM-DD HH:MM:SS` (milliseconds dropped).
pub fn format_beijing(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.to_offset(BEIJING).format(TIME_FORMAT).unwrap_or_default()
}

/// Parses `YYYY-MM-DD HH:MM:SS` as Beijing time into Unix milliseconds.
pub fn parse_beijing(text: &str) -> Option<i64> {
    let local = PrimitiveDateTime::parse(text.trim(), TIME_FORMAT).ok()?;
    Some(local.assume_offset(BEIJING).unix_timestamp() * 1000)
}

/// The Beijing calendar month `(year, month 1..=12)` of Unix milliseconds.
pub fn beijing_month(ms: i64) -> (i32, u8) {
    let at = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let local = at.to_offset(BEIJING);
    (local.year(), u8::from(local.month()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_round_trips_through_its_text() {
        for fen in [0, 1, 9, 10, 99, 100, 12345, 100_000_007, -250] {
            assert_eq!(parse_fen(&format_fen(fen)), Some(fen), "{fen}");
        }
        assert_eq!(format_fen(12345), "123.45");
        assert_eq!(format_fen(5), "0.05");
        assert_eq!(parse_fen("7"), Some(700));
        assert_eq!(parse_fen("7.5"), Some(750));
        assert_eq!(parse_fen("7.555"), None);
        assert_eq!(parse_fen("abc"), None);
        assert_eq!(parse_fen(".5"), None);
    }

    #[test]
    fn rates_have_four_decimals() {
        assert_eq!(format_rate_bp(500), "0.0500");
        assert_eq!(format_rate_bp(1234), "0.1234");
        assert_eq!(format_rate_bp(10_000), "1.0000");
    }

    #[test]
    fn times_are_beijing_wall_clock() {
        // 2025-06-01T00:00:00Z is 08:00 in Beijing.
        let ms = 1_748_736_000_000;
        assert_eq!(format_beijing(ms), "2025-06-01 08:00:00");
        assert_eq!(format_beijing(ms + 999), "2025-06-01 08:00:00");
        assert_eq!(parse_beijing("2025-06-01 08:00:00"), Some(ms));
        assert_eq!(parse_beijing("2025-06-01T08:00:00"), None);
        assert_eq!(beijing_month(ms - 8 * 3_600_000 - 1000), (2025, 5));
        assert_eq!(beijing_month(ms - 8 * 3_600_000), (2025, 6));
    }
}
