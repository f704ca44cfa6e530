//! The drill's report: per phase what the load got and how long recovery took, what the audits
//! and the read-back found, the dead letters, and each target met or missed.

use std::fmt::Write as _;

use serde::Serialize;

use super::acked::{Found, Writes};
use super::audits::AuditOutcome;
use super::inflight::Attribution;
use super::phases::{Fault, PhaseRun};
use super::summary::Tally;

/// Longest recovery after a backend returns that meets the target, ms.
pub const RECOVERY_TARGET_MS: u64 = 2_000;

/// One phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// `sigkill`, `sigterm`, `redis`, `mariadb` or `rabbitmq`.
    pub phase: &'static str,
    /// What was done.
    pub action: String,
    /// What the requests sent during the phase got.
    #[serde(flatten)]
    pub tally: Tally,
    /// From the fault until the instance or backend was back, ms.
    pub down_ms: u64,
    /// From its return until every class succeeded promptly again, ms; null: not within the
    /// recovery window.
    pub recovery_ms: Option<u64>,
    /// SIGKILL only: the requests the killed instance took down (from nginx's access log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill: Option<Attribution>,
    /// The target of this phase.
    pub target: String,
    /// Whether it was met.
    pub target_met: bool,
    /// Other observations.
    pub notes: Vec<String>,
}

impl PhaseReport {
    /// The phase's figures and its target.
    pub fn new(run: &PhaseRun, tally: Tally, recovery_ms: Option<u64>, kill: Option<Attribution>) -> Self {
        let (target, target_met) = match run.fault {
            Fault::Sigterm => ("0 failed requests".to_owned(), tally.failed() == 0),
            Fault::Sigkill => (
                "failures only among requests in flight on the killed instance".to_owned(),
                kill.as_ref().is_some_and(|k| k.failed_otherwise == 0),
            ),
            _ => (
                format!("recovery ≤ {} s after it is back", RECOVERY_TARGET_MS / 1000),
                recovery_ms.is_some_and(|r| r <= RECOVERY_TARGET_MS),
            ),
        };
        Self {
            phase: run.fault.name(),
            action: run.action.clone(),
            tally,
            down_ms: run.back_ms.saturating_sub(run.fault_ms),
            recovery_ms,
            kill,
            target,
            target_met,
            notes: run.notes.clone(),
        }
    }
}

/// The settings the drill ran with.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `--outage-secs`.
    pub outage_secs: u64,
    /// `--baseline-secs`.
    pub baseline_secs: u64,
    /// `--recovery-secs`.
    pub recovery_secs: u64,
    /// `--rate`, requests per second.
    pub rate: u32,
}

/// Everything.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The settings.
    pub settings: Settings,
    /// Each phase, in order.
    pub phases: Vec<PhaseReport>,
    /// The whole drill's requests.
    pub total: Tally,
    /// Scheduled requests not sent because too many were waiting for answers.
    pub skipped_requests: u64,
    /// `audit trade`, `audit ledger`, `audit flash-sale`.
    pub audits: Vec<AuditOutcome>,
    /// The acknowledged writes, looked for at the end.
    pub acknowledged: Writes,
    /// Messages in the dead-letter queue at the end; null when it could not be read.
    pub dead_letters: Option<u64>,
    /// Why the dead letters could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters_error: Option<String>,
    /// Every target missed, one line each.
    pub missed: Vec<String>,
    /// No target missed.
    pub targets_met: bool,
}

impl Report {
    /// Collects the missed targets.
    pub fn judge(mut self) -> Self {
        let mut missed: Vec<String> =
            self.phases.iter().filter(|p| !p.target_met).map(|p| format!("{}: {}", p.phase, p.target)).collect();
        for (what, f) in [
            ("orders", &self.acknowledged.orders),
            ("flash-sale tickets", &self.acknowledged.tickets),
            ("tracking events", &self.acknowledged.tracking_events),
        ] {
            if f.found != f.recorded {
                missed.push(format!(
                    "acknowledged {what}: {} of {} found ({} lost, {} unverified)",
                    f.found, f.recorded, f.lost, f.unverified
                ));
            }
        }
        match self.dead_letters {
            Some(0) => {}
            Some(n) => missed.push(format!("{n} dead letters")),
            None => missed.push("dead letters: could not be read".into()),
        }
        for a in self.audits.iter().filter(|a| !a.passed()) {
            missed.push(format!("audit {}: {} ({} violations)", a.audit, a.result, a.violations));
        }
        self.targets_met = missed.is_empty();
        self.missed = missed;
        self
    }

    /// The report as a table for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "drill: {} req/s; baseline {} s, outage {} s, recovery window {} s",
            s.rate, s.baseline_secs, s.outage_secs, s.recovery_secs
        );
        let _ = writeln!(
            out,
            "{:<9} {:>8} {:>7} {:>7} {:>7} {:>9} {:>8} {:>9}  target",
            "phase", "requests", "ok", "refused", "errors", "worst ms", "down s", "recovery"
        );
        for p in &self.phases {
            let t = &p.tally;
            let recovery = p.recovery_ms.map_or_else(|| "never".to_owned(), |r| format!("{:.1} s", r as f64 / 1000.0));
            let verdict = if p.target_met { "met" } else { "MISSED" };
            let _ = writeln!(
                out,
                "{:<9} {:>8} {:>7} {:>7} {:>7} {:>9} {:>8.1} {:>9}  {}: {verdict}",
                p.phase,
                t.requests,
                t.ok,
                t.refused,
                t.errors,
                t.worst_latency_ms,
                p.down_ms as f64 / 1000.0,
                recovery,
                p.target
            );
            if !t.failed_by_class.is_empty() {
                let list = |m: &std::collections::BTreeMap<&str, u64>| {
                    let items: Vec<String> = m.iter().map(|(k, n)| format!("{k}×{n}")).collect();
                    if items.is_empty() { "none".to_owned() } else { items.join(" ") }
                };
                let _ = writeln!(
                    out,
                    "          failed by class: {}; errors by kind: {}",
                    list(&t.failed_by_class),
                    list(&t.errors_by_kind)
                );
            }
            if let Some(k) = &p.kill {
                let _ = writeln!(
                    out,
                    "          in flight on the killed instance: {} (unlogged {}); failed otherwise: {}",
                    k.in_flight_on_killed, k.in_flight_unlogged, k.failed_otherwise
                );
            }
            for n in &p.notes {
                let _ = writeln!(out, "          note: {n}");
            }
        }
        let audits: Vec<String> = self.audits.iter().map(|a| format!("{} {}", a.audit, a.result)).collect();
        let _ = writeln!(out, "audits: {}", audits.join(", "));
        let w = &self.acknowledged;
        let line =
            |f: &Found| format!("{}/{} found ({} lost, {} unverified)", f.found, f.recorded, f.lost, f.unverified);
        let _ = writeln!(out, "acknowledged orders: {}", line(&w.orders));
        let _ = writeln!(out, "acknowledged tickets: {} ({} released)", line(&w.tickets), w.tickets_released);
        let _ = writeln!(out, "acknowledged tracking events: {}", line(&w.tracking_events));
        let dead = self.dead_letters.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        let _ = writeln!(out, "dead letters: {dead}; requests skipped (too many waiting): {}", self.skipped_requests);
        if self.targets_met {
            let _ = writeln!(out, "targets: all met");
        } else {
            let _ = writeln!(out, "targets missed:");
            for m in &self.missed {
                let _ = writeln!(out, "  - {m}");
            }
        }
        out
    }
}
