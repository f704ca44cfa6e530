//! `flashback-bench flash-sale` end to end: the real binary starts a real `flashback serve`,
//! storms a small sale that must sell out, and must come back verified.

mod common;

use std::io::Write as _;
use std::process::Command;

use serde_json::Value;

use common::{BENCH, flashback};

const STOCK: i64 = 40;

/// Runs a small storm with `extra` flags; returns the JSON report on stdout's last line.
fn bench(extra: &[&str]) -> Value {
    let stock = STOCK.to_string();
    let out = Command::new(BENCH)
        .args(["flash-sale", "--clients", "8", "--users", "50", "--stock", &stock, "--duration-secs", "2"])
        .args(["--warmup-secs", "0", "--settle-timeout-secs", "30", "--json"])
        .arg("--flashback")
        .arg(flashback())
        .args(extra)
        .output()
        .expect("running flashback-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "flashback-bench {extra:?} failed ({}):\n{stderr}\n{stdout}", out.status);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {last}\n{stderr}"))
}

/// Says so on the terminal: straight to stderr, past the test harness's capture.
fn skipped(suite: &str, var: &str) {
    let _ = writeln!(std::io::stderr().lock(), "\nSKIPPED: {suite} backend suite ({var} is not set)");
}

fn assert_sold_out_and_verified(report: &Value, engine: &str) {
    assert_eq!(report["engine"], engine, "{report}");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["accepted"], STOCK, "a small sale must sell out: {report}");
    assert_eq!(report["oversold"], 0, "{report}");
    assert_eq!(report["over_limit_users"], 0, "{report}");
    assert_eq!(report["lost_reservations"], 0, "{report}");
    assert_eq!(report["duplicate_orders"], 0, "{report}");
    assert_eq!(report["audit"]["result"], "passed", "{report}");
    assert!(report["attempts"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(report["baseline_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{report}");
    assert!(!report["sold_out_after_ms"].is_null(), "{report}");
}

#[test]
fn the_memory_engine_sells_a_small_sale_out_exactly_and_verifies() {
    let report = bench(&["--engine", "memory"]);
    assert_sold_out_and_verified(&report, "memory");
}

#[test]
fn the_sql_engine_on_sqlite_sells_a_small_sale_out_exactly_and_verifies() {
    let report = bench(&["--engine", "sql"]);
    assert_sold_out_and_verified(&report, "sql");
}

#[test]
fn the_sql_engine_on_mariadb_sells_a_small_sale_out_exactly_and_verifies() {
    let Ok(url) = std::env::var("FLASHBACK_TEST_MYSQL_URL") else {
        skipped("flashback-bench sql engine on MariaDB", "FLASHBACK_TEST_MYSQL_URL");
        return;
    };
    let report = bench(&["--engine", "sql", "--store-url", &url]);
    assert_sold_out_and_verified(&report, "sql");
    assert!(report["server"].as_str().unwrap_or_default().contains("mariadb"), "{report}");
}

#[test]
fn the_redis_engine_sells_a_small_sale_out_exactly_and_verifies() {
    let Ok(url) = std::env::var("FLASHBACK_TEST_REDIS_URL") else {
        skipped("flashback-bench redis engine", "FLASHBACK_TEST_REDIS_URL");
        return;
    };
    let report = bench(&["--engine", "redis", "--redis-url", &url]);
    assert_sold_out_and_verified(&report, "redis");
}
