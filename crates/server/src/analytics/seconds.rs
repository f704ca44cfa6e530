//! Per-second GMV and paid orders of the last few minutes, in memory: a ring of buckets, one
//! per second, reused as time moves on. Filled only by events the store counted as new, so a
//! redelivery never shows twice; empty again after a restart (the minute rollups persist).

use std::sync::Mutex;

use serde::Serialize;
use utoipa::ToSchema;

/// One second's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct SecondPoint {
    /// Start of the second, Unix ms.
    pub at_ms: i64,
    /// Orders paid in it.
    pub paid_orders: i64,
    /// Gross merchandise value paid in it, minor units.
    pub gmv_minor: i64,
}

/// The ring of per-second buckets.
#[derive(Debug)]
pub struct Seconds {
    buckets: Mutex<Vec<SecondPoint>>,
}

impl Seconds {
    /// Keeps `kept` seconds.
    pub fn new(kept: u32) -> Self {
        Self { buckets: Mutex::new(vec![SecondPoint::default(); kept.max(1) as usize]) }
    }

    fn slot(len: usize, second: i64) -> usize {
        usize::try_from(second.rem_euclid(i64::try_from(len).unwrap_or(i64::MAX))).unwrap_or(0)
    }

    /// Adds a paid order of `gmv_minor` at `at_ms` (ignored if older than the ring reaches).
    pub fn record(&self, at_ms: i64, paid_orders: i64, gmv_minor: i64) {
        let second = at_ms.div_euclid(1000);
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = Self::slot(buckets.len(), second);
        let b = &mut buckets[slot];
        if b.at_ms < second * 1000 {
            *b = SecondPoint { at_ms: second * 1000, ..SecondPoint::default() };
        } else if b.at_ms > second * 1000 {
            return; // the slot holds a newer second already: this one fell out of the window
        }
        b.paid_orders += paid_orders;
        b.gmv_minor += gmv_minor;
    }

    /// Every second in `[from_ms, to_ms)` that the ring still holds, oldest first, with zeros
    /// for quiet seconds.
    pub fn series(&self, from_ms: i64, to_ms: i64) -> Vec<SecondPoint> {
        let buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (first, last) = (from_ms.div_euclid(1000), (to_ms - 1).div_euclid(1000));
        let len = i64::try_from(buckets.len()).unwrap_or(i64::MAX);
        (first.max(last - len + 1)..=last)
            .map(|s| {
                let b = buckets[Self::slot(buckets.len(), s)];
                if b.at_ms == s * 1000 { b } else { SecondPoint { at_ms: s * 1000, ..SecondPoint::default() } }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_add_up_and_old_ones_are_forgotten() {
        let s = Seconds::new(60);
        s.record(10_500, 1, 100);
        s.record(10_900, 1, 50);
        s.record(12_000, 1, 7);
        let series = s.series(10_000, 13_000);
        assert_eq!(
            series.iter().map(|p| (p.at_ms, p.gmv_minor)).collect::<Vec<_>>(),
            [(10_000, 150), (11_000, 0), (12_000, 7)]
        );
        s.record(70_000, 1, 1); // reuses second 10's slot
        s.record(10_100, 1, 1000); // too old now: ignored
        assert_eq!(s.series(10_000, 11_000)[0].gmv_minor, 0, "out of reach");
        assert_eq!(s.series(70_000, 71_000)[0].gmv_minor, 1);
        assert_eq!(s.series(0, 200_000).len(), 60, "never more than the ring holds");
    }
}
