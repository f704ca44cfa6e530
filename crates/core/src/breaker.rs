//! A circuit breaker: fail fast while a dependency is known to be down, let one probe through
//! now and then, and close again on the first probe that succeeds.
//!
//! Written here rather than taken from `failsafe`: that crate lets every call through while
//! half-open and takes a lock per call; this one lets exactly one probe through and costs one
//! atomic load per call while closed (it sits on the flash-sale purchase path).

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A breaker's state, as exported (`flashback_breaker_state`: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed = 0,
    /// Calls fail fast until the open period has passed.
    Open = 1,
    /// One probe is in flight; every other call fails fast until it reports.
    HalfOpen = 2,
}

impl BreakerState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open a closed breaker (at least 1).
    pub failures_to_open: u32,
    /// How long an open breaker fails fast before it lets a probe through.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self { failures_to_open: 5, open_for: Duration::from_secs(1) }
    }
}

/// Told of every state change (for a gauge and a log line).
pub type Observer = Box<dyn Fn(&str, BreakerState) + Send + Sync>;

/// One dependency's breaker; share it in an `Arc`. See the module docs.
pub struct Breaker {
    name: String,
    settings: BreakerSettings,
    state: AtomicU8,
    failures: AtomicU32,
    /// When the breaker last opened, in µs since `epoch`.
    opened_at_us: AtomicU64,
    epoch: Instant,
    observer: OnceLock<Observer>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker").field("name", &self.name).field("state", &self.state()).finish()
    }
}

/// Permission for one call. Report its outcome with [`Permit::success`] or [`Permit::failure`];
/// a permit dropped without either (the call was abandoned) counts as neither, and a probe
/// dropped that way lets the next call probe at once.
#[must_use = "report the call's outcome"]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    /// The call succeeded (the dependency answered, even if with an error of the caller's).
    pub fn success(mut self) {
        self.done = true;
        self.breaker.on_success(self.probe);
    }

    /// The call failed because the dependency did not answer (refused, timed out, dropped).
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.on_failure(self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.done {
            // Back to open, with the period already over: the next call probes.
            let back = self.breaker.now_us().saturating_sub(self.breaker.open_for_us());
            self.breaker.opened_at_us.store(back, Ordering::Relaxed);
            self.breaker.set(BreakerState::HalfOpen, BreakerState::Open);
        }
    }
}

impl Breaker {
    /// A closed breaker for the dependency `name` (the metric label).
    pub fn new(name: impl Into<String>, settings: BreakerSettings) -> Arc<Self> {
        let settings = BreakerSettings { failures_to_open: settings.failures_to_open.max(1), ..settings };
        Arc::new(Self {
            name: name.into(),
            settings,
            state: AtomicU8::new(BreakerState::Closed as u8),
            failures: AtomicU32::new(0),
            opened_at_us: AtomicU64::new(0),
            epoch: Instant::now(),
            observer: OnceLock::new(),
        })
    }

    /// Sets what is told of state changes (once; later calls are ignored), and tells it the
    /// current state.
    pub fn observe(&self, observer: Observer) {
        observer(&self.name, self.state());
        let _ = self.observer.set(observer);
    }

    /// The dependency's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Permission for a call, or `None` to fail fast: while open (until the period has passed,
    /// when this call becomes the probe) and while another call is probing.
    pub fn permit(&self) -> Option<Permit<'_>> {
        match self.state() {
            BreakerState::Closed => Some(Permit { breaker: self, probe: false, done: false }),
            BreakerState::HalfOpen => None,
            BreakerState::Open => {
                let opened = self.opened_at_us.load(Ordering::Relaxed);
                if self.now_us().saturating_sub(opened) < self.open_for_us() {
                    return None;
                }
                self.set(BreakerState::Open, BreakerState::HalfOpen).then_some(Permit {
                    breaker: self,
                    probe: true,
                    done: false,
                })
            }
        }
    }

    /// Whether calls may go through now, without taking the probe: for gates whose probes come
    /// from a background checker reporting through [`Breaker::record`].
    pub fn is_closed(&self) -> bool {
        self.state() == BreakerState::Closed
    }

    /// Reports the outcome of a call made without a permit (a background health check). A
    /// success closes the breaker whatever its state; a failure counts as a call's would.
    pub fn record(&self, ok: bool) {
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            if !self.set(BreakerState::Open, BreakerState::Closed) {
                self.set(BreakerState::HalfOpen, BreakerState::Closed);
            }
        } else if self.state() == BreakerState::Closed {
            self.on_failure(false);
        } else {
            self.opened_at_us.store(self.now_us(), Ordering::Relaxed);
        }
    }

    fn on_success(&self, probe: bool) {
        if probe {
            self.failures.store(0, Ordering::Relaxed);
            self.set(BreakerState::HalfOpen, BreakerState::Closed);
        } else if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    fn on_failure(&self, probe: bool) {
        if probe {
            self.opened_at_us.store(self.now_us(), Ordering::Relaxed);
            self.set(BreakerState::HalfOpen, BreakerState::Open);
            return;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if n >= self.settings.failures_to_open {
            self.opened_at_us.store(self.now_us(), Ordering::Relaxed);
            self.set(BreakerState::Closed, BreakerState::Open);
        }
    }

    /// Moves `from` → `to` if the state is `from`; tells the observer. Whether it moved.
    fn set(&self, from: BreakerState, to: BreakerState) -> bool {
        let moved = self.state.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Relaxed).is_ok();
        if moved && let Some(observer) = self.observer.get() {
            observer(&self.name, to);
        }
        moved
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn open_for_us(&self) -> u64 {
        u64::try_from(self.settings.open_for.as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn breaker(open_ms: u64) -> Arc<Breaker> {
        Breaker::new("dep", BreakerSettings { failures_to_open: 3, open_for: Duration::from_millis(open_ms) })
    }

    #[test]
    fn it_opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let b = breaker(60_000);
        b.permit().unwrap().failure();
        b.permit().unwrap().failure();
        b.permit().unwrap().success();
        b.permit().unwrap().failure();
        b.permit().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.permit().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.permit().is_none(), "an open breaker fails fast");
    }

    #[test]
    fn after_the_open_period_exactly_one_probe_goes_through_and_its_success_closes() {
        let b = breaker(20);
        for _ in 0..3 {
            b.permit().unwrap().failure();
        }
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.permit().expect("the period passed: a probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.permit().is_none(), "one probe at a time");
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.permit().is_some());
    }

    #[test]
    fn a_failed_probe_opens_again_for_a_whole_period() {
        let b = breaker(20);
        for _ in 0..3 {
            b.permit().unwrap().failure();
        }
        std::thread::sleep(Duration::from_millis(30));
        b.permit().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.permit().is_none());
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe_at_once() {
        let b = breaker(20);
        for _ in 0..3 {
            b.permit().unwrap().failure();
        }
        std::thread::sleep(Duration::from_millis(30));
        drop(b.permit().unwrap());
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.permit().is_some(), "no new period after an abandoned probe");
    }

    #[test]
    fn background_checks_open_and_close_it_and_the_observer_hears_each_change() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b = Breaker::new("db", BreakerSettings { failures_to_open: 1, open_for: Duration::from_secs(60) });
        let log = Arc::clone(&seen);
        b.observe(Box::new(move |name, s| log.lock().unwrap().push(format!("{name}:{}", s.as_str()))));
        b.record(false);
        assert!(!b.is_closed());
        b.record(false);
        b.record(true);
        assert!(b.is_closed());
        assert_eq!(*seen.lock().unwrap(), ["db:closed", "db:open", "db:closed"]);
    }
}
