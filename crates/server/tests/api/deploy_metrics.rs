//! The Grafana dashboard and the Prometheus alert rules under `deploy/` query only metrics a
//! running server exports: a renamed or missing metric would leave a panel empty and an alert
//! silent, with nothing to say so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::helpers::TestApp;

/// The files whose `flashback_*` names must exist, relative to the repository root.
const QUERYING: [&str; 2] = ["deploy/grafana/flashback.json", "deploy/prometheus/flashback.rules.yml"];

/// Every series name the exposition can hold, from its `# TYPE` lines (printed for every
/// registered family, with or without samples). Counters are named there without `_total`
/// and their samples with it; histograms by their base name, which queries reach through
/// `_bucket`, `_sum` and `_count`.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| match kind.trim() {
            "counter" if !name.ends_with("_total") => format!("{name}_total"),
            _ => name.to_owned(),
        })
        .collect()
}

/// Every `flashback_*` name in `text` (a query, or a file of them), with a histogram's
/// `_bucket`/`_sum`/`_count` taken off.
fn queried_names(text: &str) -> BTreeSet<String> {
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("flashback_") {
        if start > 0 && is_name(bytes[start - 1]) {
            continue;
        }
        let len = bytes[start..].iter().take_while(|&&b| is_name(b)).count();
        let name = &text[start..start + len];
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        names.insert(base.to_owned());
    }
    names
}

#[test]
fn names_are_read_as_prometheus_writes_and_queries_them() {
    let exposition = "# HELP flashback_x_requests X.\n# TYPE flashback_x_requests counter\n\
                      flashback_x_requests_total{a=\"b\"} 1\n# TYPE flashback_x_seconds histogram\n\
                      # TYPE flashback_x_up gauge\n# EOF\n";
    let exported = exported_names(exposition);
    assert_eq!(
        exported,
        ["flashback_x_requests_total", "flashback_x_seconds", "flashback_x_up"].map(String::from).into()
    );
    let query = r#"sum(rate(flashback_x_requests_total{a="b"}[5m])) / histogram_quantile(0.99,
        rate(flashback_x_seconds_bucket[5m])) + my_flashback_y + flashback_x_up"#;
    assert_eq!(
        queried_names(query),
        ["flashback_x_requests_total", "flashback_x_seconds", "flashback_x_up"].map(String::from).into()
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_query_is_exported() {
    let app = TestApp::spawn().await;
    let exposition = app.get("/metrics").await.text().await.expect("metrics");
    let exported = exported_names(&exposition);
    // Counters are matched by their sample names, as queries use them.
    assert!(exported.contains("flashback_http_requests_total"), "{exported:?}");
    assert!(exported.contains("flashback_http_request_duration_seconds"), "{exported:?}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut missing: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for file in QUERYING {
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        let names = queried_names(&text);
        assert!(names.len() >= 10, "{file} queries only {names:?}");
        for name in names.into_iter().filter(|n| !exported.contains(n)) {
            missing.entry(name).or_default().push(file);
        }
    }
    app.shutdown().await;
    assert!(missing.is_empty(), "queried but not exported by the server: {missing:#?}\nexported: {exported:#?}");
}
