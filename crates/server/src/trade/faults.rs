//! Injected crashes at named points of the order saga, so tests can prove that a process
//! dying between any two steps leaves stock and points whole once the sweeper has run.
//!
//! Nothing arms a point in production; an unarmed check is one uncontended lock.

use std::sync::Mutex;

use super::TradeError;

/// The points a crash can be injected at, in saga order.
pub const POINTS: &[&str] = &[
    "place.after_reserve",
    "place.after_create",
    "pay.after_payment_recorded",
    "pay.after_order_paid",
    "cancel.after_order_cancelled",
    "refund.after_order_refunded",
];

/// The armed crash point, if any.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<Option<&'static str>>,
}

impl Faults {
    /// Makes the next pass through `point` fail as if the process had died there (once).
    pub fn arm(&self, point: &'static str) {
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = Some(point);
    }

    /// Fails with [`TradeError::Crash`] if `point` is armed, disarming it.
    pub fn check(&self, point: &'static str) -> Result<(), TradeError> {
        let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        if *armed == Some(point) {
            *armed = None;
            return Err(TradeError::Crash(point));
        }
        Ok(())
    }
}
