//! From samples to figures: what a window of the drill served, refused and failed, its worst
//! latency, and how long after a fault ended the load succeeded again.

use std::collections::BTreeMap;

use serde::Serialize;

use super::record::{Class, Sample, Verdict};

/// A success slower than this does not count as recovered: a deployment that answers only
/// after seconds of retrying inside has not come back yet.
pub const PROMPT_MS: u64 = 1_000;

/// What the requests sent in one window got.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Requests sent in the window.
    pub requests: u64,
    /// Served (or refused for a reason of the request's own, such as `sold_out`).
    pub ok: u64,
    /// `503` with `Retry-After`.
    pub refused: u64,
    /// Transport failures, `502`, `504`, `500`, `503` without `Retry-After`, other answers.
    pub errors: u64,
    /// `errors` by kind (kinds with none left out).
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// Requests that were refused or failed, by class (classes with none left out).
    pub failed_by_class: BTreeMap<&'static str, u64>,
    /// The slowest request's time to its answer (or failure), ms.
    pub worst_latency_ms: u64,
}

impl Tally {
    /// Requests that did not succeed: errors and refusals.
    pub fn failed(&self) -> u64 {
        self.errors + self.refused
    }
}

/// The samples of requests sent in `[from_ms, to_ms)`.
pub fn tally(samples: &[Sample], from_ms: u64, to_ms: u64) -> Tally {
    let mut t = Tally::default();
    for s in samples.iter().filter(|s| (from_ms..to_ms).contains(&s.start_ms)) {
        t.requests += 1;
        t.worst_latency_ms = t.worst_latency_ms.max(s.end_ms.saturating_sub(s.start_ms));
        match s.verdict {
            Verdict::Ok => t.ok += 1,
            Verdict::Refused => t.refused += 1,
            Verdict::Failed(kind) => {
                t.errors += 1;
                *t.errors_by_kind.entry(kind.name()).or_default() += 1;
            }
        }
        if s.verdict != Verdict::Ok {
            *t.failed_by_class.entry(s.class.name()).or_default() += 1;
        }
    }
    debug_assert_eq!(t.ok + t.refused + t.errors, t.requests);
    t
}

/// How long after `back_ms` (the dependency or instance is back) the load succeeded again,
/// looking at requests sent in `[back_ms, to_ms)`: until the last of them that failed (or
/// succeeded slower than [`PROMPT_MS`]) had ended. `None` when some class of `classes` has no
/// prompt success after that within the window: it had not recovered when the window closed.
pub fn recovery_ms(samples: &[Sample], classes: &[Class], back_ms: u64, to_ms: u64) -> Option<u64> {
    let after: Vec<&Sample> = samples.iter().filter(|s| (back_ms..to_ms).contains(&s.start_ms)).collect();
    let prompt = |s: &Sample| s.verdict == Verdict::Ok && s.end_ms.saturating_sub(s.start_ms) <= PROMPT_MS;
    let recovered_at = after.iter().filter(|s| !prompt(s)).map(|s| s.end_ms).max().unwrap_or(back_ms);
    let every_class_back =
        classes.iter().all(|&c| after.iter().any(|s| s.class == c && s.start_ms >= recovered_at && prompt(s)));
    every_class_back.then(|| recovered_at.saturating_sub(back_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::record::Failure;

    fn s(class: Class, start_ms: u64, end_ms: u64, verdict: Verdict) -> Sample {
        Sample { class, rid: start_ms, start_ms, end_ms, verdict }
    }

    const OK: Verdict = Verdict::Ok;
    const BAD: Verdict = Verdict::Failed(Failure::BadGateway);

    #[test]
    fn a_window_counts_what_was_sent_in_it_by_outcome() {
        let samples = [
            s(Class::Product, 5, 10, OK),
            s(Class::Product, 10, 40, BAD),
            s(Class::Order, 12, 20, Verdict::Refused),
            s(Class::Order, 30, 35, Verdict::Failed(Failure::Transport)),
            s(Class::Login, 50, 51, BAD),
        ];
        let t = tally(&samples, 10, 50);
        assert_eq!((t.requests, t.ok, t.refused, t.errors, t.failed()), (3, 0, 1, 2, 3));
        assert_eq!(t.errors_by_kind, BTreeMap::from([("502", 1), ("transport", 1)]));
        assert_eq!(t.failed_by_class, BTreeMap::from([("order", 2), ("product", 1)]));
        assert_eq!(t.worst_latency_ms, 30);
    }

    #[test]
    fn recovery_lasts_until_the_last_failure_sent_after_the_return_has_ended() {
        let classes = [Class::Product, Class::Order];
        let samples = [
            // Sent before the return: not counted against recovery.
            s(Class::Order, 90, 400, BAD),
            s(Class::Product, 100, 110, BAD),
            s(Class::Order, 120, 350, BAD),
            s(Class::Product, 300, 310, OK),
            s(Class::Order, 360, 370, OK),
            s(Class::Product, 380, 390, OK),
        ];
        assert_eq!(recovery_ms(&samples, &classes, 100, 1000), Some(250));
        // Nothing failed after the return: recovered at once.
        assert_eq!(recovery_ms(&samples[3..], &classes, 100, 1000), Some(0));
    }

    #[test]
    fn a_class_without_a_prompt_success_after_the_last_failure_has_not_recovered() {
        let classes = [Class::Product, Class::Order];
        let failing_to_the_end = [s(Class::Product, 100, 110, OK), s(Class::Order, 120, 130, BAD)];
        assert_eq!(recovery_ms(&failing_to_the_end, &classes, 100, 1000), None);
        let slow = [s(Class::Product, 100, 110, OK), s(Class::Order, 120, 120 + PROMPT_MS + 1, OK)];
        assert_eq!(recovery_ms(&slow, &classes, 100, 5000), None, "a slow answer is not recovery");
        let then_prompt = [&slow[..], &[s(Class::Order, 1500, 1510, OK), s(Class::Product, 1600, 1610, OK)]].concat();
        assert_eq!(recovery_ms(&then_prompt, &classes, 100, 5000), Some(1021));
    }
}
