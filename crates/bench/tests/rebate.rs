//! `flashback-bench rebate --json` end to end: a small ingest, update and posting run must
//! come back verified, with the figures on the last line.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_small_rebate_run_is_verified_and_reports_its_rates() {
    let out = Command::new(env!("CARGO_BIN_EXE_flashback-bench"))
        .args(["rebate", "--rows", "3000", "--batch", "500", "--users", "40", "--transactions", "3000", "--json"])
        .output()
        .expect("running flashback-bench rebate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "flashback-bench rebate failed ({}):\n{stderr}\n{stdout}", out.status);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}):\n{stdout}"));
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["rows"], 3000);
    assert_eq!(report["postings"], 12_000, "four entries per transaction");
    assert!(report["rows_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["postings_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(report["update_rows"], 900, "the rows reported paid are moved on");
    assert!(report["update_rows_per_sec"].as_f64().unwrap() > 0.0);
}
