//! `flashback-bench track` end to end: the real binary starts a real `flashback serve`,
//! ingests a small run through `POST /api/v1/track`, and must account for every event once.

mod common;

use std::process::Command;

use serde_json::Value;

use common::{BENCH, flashback};

fn bench(extra: &[&str]) -> Value {
    let out = Command::new(BENCH)
        .args(["track", "--events", "20000", "--batch", "500", "--clients", "4", "--json", "--flashback"])
        .arg(flashback())
        .args(extra)
        .output()
        .expect("running flashback-bench track");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "flashback-bench track {extra:?} failed ({}):\n{stderr}\n{stdout}", out.status);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {last}\n{stderr}"))
}

#[test]
fn a_small_track_run_stores_every_distinct_event_once_and_reports_its_rates() {
    let report = bench(&[]);
    assert_eq!(report["verified"], true, "{report}");
    let unique = report["unique_events"].as_u64().expect("unique_events");
    let resent = report["duplicates_sent"].as_u64().expect("duplicates_sent");
    assert_eq!(unique + resent, 20_000, "{report}");
    assert!(resent > 0, "the run re-sends some events: {report}");
    assert_eq!(report["accepted"], unique, "{report}");
    assert_eq!(report["duplicates_reported"], resent, "{report}");
    assert_eq!(report["stored_rows"], unique, "{report}");
    assert_eq!(report["backlog"], 0, "{report}");
    for key in ["events_per_sec", "drain_per_sec", "raw_insert_per_sec", "ingest_ratio_to_raw", "drain_ratio_to_raw"] {
        assert!(report[key].as_f64().unwrap_or(0.0) > 0.0, "{key} in {report}");
    }
}

#[test]
fn gzip_bodies_are_accounted_for_the_same_way() {
    let report = bench(&["--gzip", "--raw-events", "1000"]);
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["gzip"], true, "{report}");
    assert_eq!(report["accepted"], report["unique_events"], "{report}");
    assert_eq!(report["raw_insert_events"], 1000, "{report}");
}
