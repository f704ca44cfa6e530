//! The network's clock: real time × scale + offset, movable at run time. Every row, refund,
//! postback and report is computed from it, so moving it moves the whole network.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

/// The simulated network's "now", in Unix milliseconds.
///
/// `now = anchor + (real time elapsed since the anchor) × scale`. A scale of `0.0` freezes the
/// clock (it then moves only when set or advanced: the usual choice in tests); `1.0` runs at
/// wall-clock speed; `3600.0` runs an hour per second.
///
/// A `SimClock` is a handle: clones share one clock. The one in [`crate::SimConfig::time`] is
/// the one the running network reads, so a test may keep a clone and move it directly instead
/// of calling `POST /sim/clock`.
#[derive(Debug, Clone)]
pub struct SimClock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    anchor_real: Instant,
    anchor_ms: i64,
    scale: f64,
}

impl State {
    fn now_ms(&self) -> i64 {
        let elapsed_ms = self.anchor_real.elapsed().as_secs_f64() * 1000.0 * self.scale;
        self.anchor_ms.saturating_add(f64_to_ms(elapsed_ms))
    }
}

#[expect(clippy::cast_possible_truncation, reason = "a float of milliseconds, floored and saturated by `as`")]
fn f64_to_ms(ms: f64) -> i64 {
    ms.floor() as i64
}

impl SimClock {
    /// A clock frozen at `now_ms` (scale 0): it moves only when set or advanced.
    pub fn fixed(now_ms: i64) -> Self {
        Self::scaled(now_ms, 0.0)
    }

    /// A clock that reads `start_ms` now and runs at `scale` × real time (negative and
    /// non-finite scales count as 0).
    pub fn scaled(start_ms: i64, scale: f64) -> Self {
        let state = State { anchor_real: Instant::now(), anchor_ms: start_ms, scale: clean_scale(scale) };
        let (changed, _) = watch::channel(0);
        SimClock { inner: Arc::new(Inner { state: Mutex::new(state), changed }) }
    }

    /// A clock that follows the wall clock (scale 1, starting at the real time).
    pub fn wall() -> Self {
        Self::scaled(unix_now_ms(), 1.0)
    }

    /// The network's now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.lock().now_ms()
    }

    /// How many simulated milliseconds pass per real millisecond.
    pub fn scale(&self) -> f64 {
        self.lock().scale
    }

    /// Jumps to `now_ms` (backwards is allowed; postbacks already sent are not sent again).
    pub fn set_ms(&self, now_ms: i64) {
        self.update(|state| {
            state.anchor_real = Instant::now();
            state.anchor_ms = now_ms;
        });
    }

    /// Moves the clock by `delta_ms` (may be negative). Returns the new now.
    pub fn advance_ms(&self, delta_ms: i64) -> i64 {
        let mut now = 0;
        self.update(|state| {
            now = state.now_ms().saturating_add(delta_ms);
            state.anchor_real = Instant::now();
            state.anchor_ms = now;
        });
        now
    }

    /// Changes the speed from now on (the current reading is kept).
    pub fn set_scale(&self, scale: f64) {
        self.update(|state| {
            state.anchor_ms = state.now_ms();
            state.anchor_real = Instant::now();
            state.scale = clean_scale(scale);
        });
    }

    /// Wakes whenever the clock is set, advanced or rescaled.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        {
            let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            change(&mut state);
        }
        self.inner.changed.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    fn lock(&self) -> State {
        *self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn clean_scale(scale: f64) -> f64 {
    if scale.is_finite() && scale > 0.0 { scale } else { 0.0 }
}

/// The real wall-clock time in Unix milliseconds.
pub(crate) fn unix_now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_moves_only_when_told_and_clones_share_it() {
        let clock = SimClock::fixed(1_000);
        let other = clock.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(clock.now_ms(), 1_000);
        other.advance_ms(500);
        assert_eq!(clock.now_ms(), 1_500);
        clock.set_ms(10);
        assert_eq!(other.now_ms(), 10);
    }

    #[test]
    fn a_scaled_clock_runs_faster_than_real_time() {
        let clock = SimClock::scaled(0, 1000.0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(clock.now_ms() >= 20_000, "{}", clock.now_ms());
        clock.set_scale(0.0);
        let frozen = clock.now_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(clock.now_ms(), frozen);
    }
}
