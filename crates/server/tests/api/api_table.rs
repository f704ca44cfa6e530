//! docs/API.md's endpoint table and the OpenAPI document name the same operations, so neither
//! can drift from the other.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::TestApp;

/// What the document leaves out on purpose: a page, and the document itself.
const NOT_IN_THE_DOCUMENT: [(&str, &str); 2] = [("GET", "/dashboard"), ("GET", "/api/v1/openapi.json")];

/// (method, path) of every row of API.md's endpoint table, the query string left off.
fn table() -> BTreeSet<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/API.md")).unwrap();
    let section = doc.split("## Endpoints").nth(1).expect("API.md has an Endpoints section");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| Method"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            let path = cells[2].split('?').next().unwrap_or_default();
            (cells[1].to_owned(), path.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn the_endpoint_table_in_api_md_lists_exactly_the_documented_operations() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let mut listed = table();
    assert!(listed.len() > 50, "{listed:?}");
    for (method, path) in NOT_IN_THE_DOCUMENT {
        listed.remove(&(method.to_owned(), path.to_owned()));
    }
    let missing: Vec<_> = documented.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&documented).collect();
    assert!(missing.is_empty() && extra.is_empty(), "not in API.md: {missing:?}; not in the document: {extra:?}");
    app.shutdown().await;
}
