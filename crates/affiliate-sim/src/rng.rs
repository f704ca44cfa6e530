//! A small deterministic generator (SplitMix64), owned here so that the data set for a seed
//! never changes when a dependency's generator does.

/// Independent streams, so that one feature's draws never shift another's.
pub(crate) mod stream {
    pub const GROUP: u64 = 1;
    pub const ITEM: u64 = 2;
    pub const POSTBACK: u64 = 3;
    pub const UNKNOWN_ID: u64 = 4;
    pub const IDS: u64 = 5;
    pub const REQUEST_ID: u64 = 6;
}

/// SplitMix64's finaliser: a good 64-bit mix of `x`.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// The generator for draw `index` of `stream` under `seed`.
    pub fn for_stream(seed: u64, stream: u64, index: u64) -> Self {
        Rng(mix(mix(seed ^ 0x5EED_0FF1_A54B_AC00) ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ mix(index))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `[0, n)`; `n` of zero gives zero.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform index into a slice of `len` elements (`len` > 0).
    pub fn index(&mut self, len: usize) -> usize {
        let n = u64::try_from(len).unwrap_or(u64::MAX);
        usize::try_from(self.below(n)).unwrap_or(0)
    }

    /// Uniform in `[lo, hi)`; `lo` when the range is empty.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi.saturating_sub(lo)).unwrap_or(0);
        lo + i64::try_from(self.below(span)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_repeats_for_the_same_seed_and_differs_across_streams() {
        let a: Vec<u64> = (0..4).map(|_| Rng::for_stream(7, stream::ITEM, 3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::for_stream(7, stream::ITEM, 3).next_u64(), Rng::for_stream(7, stream::GROUP, 3).next_u64());
        assert_ne!(Rng::for_stream(7, stream::ITEM, 3).next_u64(), Rng::for_stream(8, stream::ITEM, 3).next_u64());
    }

    #[test]
    fn ranges_stay_inside_their_bounds() {
        let mut rng = Rng::for_stream(1, 1, 1);
        for _ in 0..10_000 {
            let x = rng.range(-5, 5);
            assert!((-5..5).contains(&x));
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(rng.range(3, 3), 3);
    }
}
