//! Repeated event ids dropped at ingest, within a window: two generations of id sets, the
//! older dropped when the newer is half a window old or half the capacity full. An id is
//! remembered for at least half a window and at most a whole one (shorter under a flood that
//! fills the capacity). Sixteen shards keep the lock short. The day tables refuse a repeated
//! id for good; this window only saves the queue and the writer the work.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

#[derive(Debug)]
struct Generations {
    current: HashSet<u128>,
    previous: HashSet<u128>,
    started: Instant,
}

/// The ids seen lately.
#[derive(Debug)]
pub struct DedupWindow {
    shards: Vec<Mutex<Generations>>,
    half_window: Duration,
    half_capacity: usize,
}

impl DedupWindow {
    /// Remembers ids for about `window`, at most `capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Generations { current: HashSet::new(), previous: HashSet::new(), started: Instant::now() })
            })
            .collect();
        Self { shards, half_window: window / 2, half_capacity: (capacity / SHARDS / 2).max(1) }
    }

    fn shard(&self, id: u128) -> &Mutex<Generations> {
        // The low bits of a v4 or v7 UUID are random.
        &self.shards[usize::try_from(id % SHARDS as u128).unwrap_or(0)]
    }

    /// True the first time `id` is offered within the window (and remembers it).
    pub fn first_sighting(&self, id: u128, now: Instant) -> bool {
        let Ok(mut g) = self.shard(id).lock() else { return true };
        if now.duration_since(g.started) >= self.half_window || g.current.len() >= self.half_capacity {
            g.previous = std::mem::take(&mut g.current);
            g.started = now;
        }
        if g.previous.contains(&id) {
            return false;
        }
        g.current.insert(id)
    }

    /// Forgets `id` (its batch was not queued, so a retry must not count as a repeat).
    pub fn forget(&self, id: u128) {
        if let Ok(mut g) = self.shard(id).lock() {
            g.current.remove(&id);
            g.previous.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_caught_and_a_forgotten_id_is_new_again() {
        let w = DedupWindow::new(Duration::from_secs(60), 1_000);
        let now = Instant::now();
        assert!(w.first_sighting(7, now));
        assert!(!w.first_sighting(7, now + Duration::from_secs(10)));
        // Still caught from the previous generation after one rotation.
        assert!(w.first_sighting(8, now + Duration::from_secs(31)));
        assert!(!w.first_sighting(7, now + Duration::from_secs(40)));
        w.forget(8);
        assert!(w.first_sighting(8, now + Duration::from_secs(41)));
        // Two rotations later it is gone.
        assert!(w.first_sighting(9, now + Duration::from_secs(75)));
        assert!(w.first_sighting(7, now + Duration::from_secs(110)));
    }
}
