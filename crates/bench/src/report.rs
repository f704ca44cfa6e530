//! What a run measured and found, as one JSON object and as a summary for people; and the
//! table comparing engines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cpu::CpuSplit;
use crate::verify::{Audit, Verification};

/// The machine the bench ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// The 1-minute load average when the run started: other work shares the cores.
    pub load_avg_1m: Option<f64>,
}

impl Machine {
    /// This machine.
    pub fn detect() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let load_avg_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|l| l.parse().ok()));
        Self { cpus, cpu_model, load_avg_1m }
    }
}

/// One engine's run.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// `memory`, `redis` or `sql` (with --target: the label given).
    pub engine: String,
    /// `self-started (sqlite)`, `self-started (mariadb …)` or `target <url>`.
    pub server: String,
    /// Where it ran.
    pub machine: Machine,
    /// Concurrent clients.
    pub clients: usize,
    /// Buyer accounts.
    pub users: usize,
    /// Units on sale.
    pub stock: i64,
    /// Units per buyer.
    pub per_user_limit: i64,
    /// Configured length of each phase.
    pub duration_s: u64,
    /// The sale.
    pub sale_id: String,
    /// Purchase attempts completed in the storm.
    pub attempts: u64,
    /// … per second of the storm.
    pub attempts_per_sec: f64,
    /// `/healthz` requests per second under the same load.
    pub baseline_per_sec: f64,
    /// attempts_per_sec / baseline_per_sec.
    pub ratio_to_baseline: f64,
    /// attempts_per_sec / the sql engine's, in a `--compare` run that included sql.
    pub ratio_to_sql: Option<f64>,
    /// Accepted (202) purchases.
    pub accepted: usize,
    /// Units in them.
    pub accepted_units: i64,
    /// Accepted purchases per second, until the last acceptance.
    pub accepted_per_sec: f64,
    /// When the accepted units reached the stock, from the storm's start.
    pub sold_out_after_ms: Option<f64>,
    /// Refusals by problem code.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Requests that failed otherwise (transport, 5xx without a code, odd bodies).
    pub errors: u64,
    /// … by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Storm latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Baseline 99th percentile.
    pub baseline_p99_ms: f64,
    /// Units accepted beyond the stock.
    pub oversold: i64,
    /// Buyers over the per-user limit.
    pub over_limit_users: usize,
    /// Accepted tickets that vanished, were released, or never became orders.
    pub lost_reservations: usize,
    /// Orders made twice.
    pub duplicate_orders: usize,
    /// Orders missing for their buyer or unlike their ticket.
    pub bad_orders: usize,
    /// The rest of the verification.
    pub verification: Verification,
    /// `flashback audit flash-sale`.
    pub audit: Audit,
    /// CPU of the bench and the server during the baseline, percent of one core.
    pub cpu_baseline: CpuSplit,
    /// … during the storm.
    pub cpu_storm: CpuSplit,
    /// Whether the server exited cleanly on SIGTERM (self-started only).
    pub server_stopped_cleanly: Option<bool>,
    /// Everything checked out.
    pub verified: bool,
}

impl RunReport {
    /// The summary for people.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "flash-sale bench: engine {} on {}", self.engine, self.server);
        let load = self.machine.load_avg_1m.map_or_else(String::new, |l| format!(", load average {l:.2} at the start"));
        let _ = writeln!(s, "  machine       {} cpus, {}{load}", self.machine.cpus, self.machine.cpu_model);
        let _ = writeln!(
            s,
            "  load          {} clients, {} buyers, stock {} (limit {} per buyer), {} s per phase",
            self.clients, self.users, self.stock, self.per_user_limit, self.duration_s
        );
        if self.server.starts_with("self-started") {
            let _ = writeln!(s, "  funnel        rate limits raised: this measures the engine, not the limiter");
        } else {
            let _ = writeln!(s, "  funnel        the deployment's own rate limits (refusals show as rate_limited)");
        }
        let _ = writeln!(
            s,
            "  baseline      {:.0} req/s on GET /healthz (p99 {:.2} ms)",
            self.baseline_per_sec, self.baseline_p99_ms
        );
        let _ = writeln!(
            s,
            "  storm         {} attempts, {:.0} /s = {:.2} x baseline",
            self.attempts, self.attempts_per_sec, self.ratio_to_baseline
        );
        let sold_out =
            self.sold_out_after_ms.map_or_else(|| "not sold out".to_owned(), |ms| format!("sold out after {ms:.0} ms"));
        let _ = writeln!(
            s,
            "  accepted      {} ({} units), {:.0} /s until the last one; {sold_out}",
            self.accepted, self.accepted_units, self.accepted_per_sec
        );
        let rejected: Vec<String> = self.rejected_by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ =
            writeln!(s, "  rejected      {}", if rejected.is_empty() { "none".into() } else { rejected.join(", ") });
        let errors: Vec<String> = self.errors_by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "  errors        {}{}",
            self.errors,
            if errors.is_empty() { String::new() } else { format!(" ({})", errors.join(", ")) }
        );
        let _ = writeln!(
            s,
            "  latency       p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms
        );
        let pct = |p: Option<f64>| p.map_or_else(|| "-".to_owned(), |p| format!("{p:.0}%"));
        let _ = writeln!(
            s,
            "  cpu           of one core; baseline: server {}, bench {}; storm: server {}, bench {}",
            pct(self.cpu_baseline.server_pct),
            pct(self.cpu_baseline.bench_pct),
            pct(self.cpu_storm.server_pct),
            pct(self.cpu_storm.bench_pct)
        );
        let v = &self.verification;
        let _ = writeln!(
            s,
            "  verification  {} of {} tickets ordered in {} ms; oversold {}, over-limit buyers {}, lost {}, duplicate orders {}, bad orders {}",
            v.settled,
            self.accepted,
            v.settle_ms,
            self.oversold,
            self.over_limit_users,
            self.lost_reservations,
            self.duplicate_orders,
            self.bad_orders
        );
        if let Some(r) = v.sale_remaining {
            let _ = writeln!(
                s,
                "  sale          remaining {r} (store holds {} units more than accepted)",
                v.taken_mismatch
            );
        }
        let audit = match &self.audit {
            Audit::Passed { report } => format!("passed {report}"),
            Audit::Failed { output } => format!("FAILED\n{output}"),
            Audit::Skipped { why } => format!("skipped ({why}); verification rests on the HTTP checks"),
        };
        let _ = writeln!(s, "  audit         {audit}");
        for p in &v.problems {
            let _ = writeln!(s, "  problem       {p}");
        }
        let _ = write!(s, "  verified      {}", if self.verified { "yes" } else { "NO" });
        s
    }
}

/// One line of `--compare`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum CompareRun {
    /// A run that finished (verified or not).
    Done(Box<RunReport>),
    /// A run that could not be made.
    Failed {
        /// The engine.
        engine: String,
        /// Why not.
        error: String,
        /// Always false.
        verified: bool,
    },
    /// A run left out.
    Skipped {
        /// The engine.
        engine: String,
        /// Why.
        skipped: String,
    },
}

/// Sets each finished run's `ratio_to_sql` from the sql run's attempts/s, when sql ran.
pub fn set_ratio_to_sql(runs: &mut [CompareRun]) {
    let sql = runs.iter().find_map(|r| match r {
        CompareRun::Done(r) if r.engine == "sql" && r.attempts_per_sec > 0.0 => Some(r.attempts_per_sec),
        _ => None,
    });
    for r in runs {
        if let (CompareRun::Done(r), Some(base)) = (r, sql) {
            r.ratio_to_sql = Some(r.attempts_per_sec / base);
        }
    }
}

/// The comparison table.
pub fn compare_table(runs: &[CompareRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<8} {:>12} {:>12} {:>9} {:>8} {:>12} {:>13} {:>9} {:>9}",
        "engine", "attempts/s", "baseline/s", "x base", "x sql", "accepted/s", "sold out ms", "p99 ms", "verified"
    );
    for r in runs {
        match r {
            CompareRun::Done(r) => {
                let vs_sql = r.ratio_to_sql.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
                let sold = r.sold_out_after_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}"));
                let _ = writeln!(
                    s,
                    "{:<8} {:>12.0} {:>12.0} {:>9.2} {:>8} {:>12.0} {:>13} {:>9.2} {:>9}",
                    r.engine,
                    r.attempts_per_sec,
                    r.baseline_per_sec,
                    r.ratio_to_baseline,
                    vs_sql,
                    r.accepted_per_sec,
                    sold,
                    r.p99_ms,
                    if r.verified { "yes" } else { "NO" }
                );
            }
            CompareRun::Failed { engine, error, .. } => {
                let first = error.lines().next().unwrap_or_default();
                let _ = writeln!(s, "{engine:<8} failed: {first}");
            }
            CompareRun::Skipped { engine, skipped } => {
                let _ = writeln!(s, "{engine:<8} skipped: {skipped}");
            }
        }
    }
    s
}
