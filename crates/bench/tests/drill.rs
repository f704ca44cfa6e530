//! `flashback-bench drill` end to end, short: the real binaries bring up their own mariadbd,
//! redis-server, RabbitMQ node, two `flashback serve` instances and nginx, run every phase with
//! a 3 s outage, and report. This checks the report's shape and that the acknowledged writes
//! were recorded and found; whether the targets hold is the drill's verdict, not this test's.
//!
//! A backend suite: runs when FLASHBACK_TEST_MYSQL_URL, FLASHBACK_TEST_REDIS_URL and
//! FLASHBACK_TEST_AMQP_URL are set (the drill starts its own services; the variables are how CI
//! turns the backend suites on), and says `SKIPPED:` otherwise.

mod common;

use std::io::Write as _;
use std::process::Command;

use serde_json::Value;

use common::{BENCH, flashback};

const PHASES: [&str; 5] = ["sigkill", "sigterm", "redis", "mariadb", "rabbitmq"];

/// The variable that is not set, if any.
fn backends_off() -> Option<&'static str> {
    ["FLASHBACK_TEST_MYSQL_URL", "FLASHBACK_TEST_REDIS_URL", "FLASHBACK_TEST_AMQP_URL"]
        .into_iter()
        .find(|v| std::env::var_os(v).is_none())
}

fn number(v: &Value, at: &str) -> u64 {
    v.pointer(at).and_then(Value::as_u64).unwrap_or_else(|| panic!("{at} is not a count in {v}"))
}

#[test]
fn a_short_drill_reports_every_phase_loses_nothing_and_stops_without_errors() {
    if let Some(var) = backends_off() {
        let _ = writeln!(std::io::stderr().lock(), "\nSKIPPED: flashback-bench drill backend suite ({var} is not set)");
        return;
    }
    let out = Command::new(BENCH)
        .args(["drill", "--outage-secs", "3", "--baseline-secs", "2", "--recovery-secs", "4"])
        .args(["--settle-timeout-secs", "30", "--json", "--flashback"])
        .arg(flashback())
        .output()
        .expect("running flashback-bench drill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0: every target met, 1: some missed (both are reports); anything else is a failure.
    assert!(matches!(out.status.code(), Some(0 | 1)), "the drill failed ({}):\n{stderr}\n{stdout}", out.status);
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {last}\n{stderr}"));

    let phases = report["phases"].as_array().unwrap_or_else(|| panic!("no phases: {report}"));
    let names: Vec<&str> = phases.iter().filter_map(|p| p["phase"].as_str()).collect();
    assert_eq!(names, PHASES, "{report}");
    for p in phases {
        let requests = number(p, "/requests");
        assert!(requests > 0, "a phase without load: {p}");
        assert_eq!(number(p, "/ok") + number(p, "/refused") + number(p, "/errors"), requests, "{p}");
        assert!(p["recovery_ms"].is_null() || p["recovery_ms"].is_u64(), "{p}");
        assert!(p["target_met"].is_boolean() && p["target"].is_string(), "{p}");
    }
    let kill = &phases[0]["kill"];
    assert!(kill["in_flight_on_killed"].is_u64() && kill["failed_otherwise"].is_u64(), "{report}");

    let audits: Vec<&str> =
        report["audits"].as_array().into_iter().flatten().filter_map(|a| a["audit"].as_str()).collect();
    assert_eq!(audits, ["trade", "ledger", "flash-sale"], "{report}");
    for kind in ["orders", "tickets", "tracking_events"] {
        let found = &report["acknowledged"][kind];
        let recorded = number(found, "/recorded");
        assert!(recorded > 0, "no acknowledged {kind} recorded: {report}");
        assert!(number(found, "/found") > 0, "none of the acknowledged {kind} found: {report}");
        assert_eq!(
            number(found, "/found") + number(found, "/lost") + number(found, "/unverified"),
            recorded,
            "{kind}: {report}"
        );
    }
    assert!(report["dead_letters"].is_u64(), "the dead-letter queue was not read: {report}");

    // The targets that do not depend on how fast this machine is today: nothing acknowledged
    // is lost, no outage dead-letters an event, the audits pass, a SIGTERM fails no request.
    // (Recovery times are the drill's to judge, not a test's.)
    for kind in ["orders", "tickets", "tracking_events"] {
        assert_eq!(number(&report["acknowledged"][kind], "/lost"), 0, "acknowledged {kind} lost: {report}");
    }
    assert_eq!(report["dead_letters"].as_u64(), Some(0), "an outage dead-lettered events: {report}");
    for a in report["audits"].as_array().into_iter().flatten() {
        assert_eq!(a["result"], "passed", "{a}");
    }
    let sigterm = phases.iter().find(|p| p["phase"] == "sigterm").expect("a sigterm phase");
    assert_eq!(number(sigterm, "/errors") + number(sigterm, "/refused"), 0, "a stop failed requests: {sigterm}");
    let missed = report["missed"].as_array().map_or(0, Vec::len);
    assert_eq!(report["targets_met"].as_bool(), Some(missed == 0), "{report}");
    assert_eq!(out.status.code(), Some(if missed == 0 { 0 } else { 1 }), "exit status follows the targets: {report}");
}
