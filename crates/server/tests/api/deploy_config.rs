//! The `FLASHBACK_*` settings that `deploy/compose.yaml` and the Kubernetes ConfigMap and Secret
//! give an instance are a configuration the real binary accepts: an unknown or misspelt
//! variable stops start-up, which would take the whole cluster down at its first deploy.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// `KEY=value` lines of an env file.
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Every `FLASHBACK_NAME: value` mapping line of a YAML file (a later one wins), the value
/// unquoted and its `${VAR}` / `${VAR:?…}` / `${VAR:-…}` references replaced from `vars`.
fn flashback_variables(yaml: &str, vars: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in yaml.lines() {
        let Some((key, value)) = line.trim_start().split_once(':') else { continue };
        if !line.starts_with(' ') || !key.starts_with("FLASHBACK_") || key.contains(' ') {
            continue;
        }
        let value = value.trim();
        let unquoted = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(value);
        out.insert(key.to_owned(), interpolate(unquoted, vars));
    }
    out
}

fn interpolate(value: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map(|i| start + i).expect("a closing brace");
        let name = rest[start + 2..end].split([':', '-', '?']).next().unwrap_or("");
        out.push_str(vars.get(name).unwrap_or_else(|| panic!("{name} is not in deploy/.env.example")));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Runs `flashback migrate` with exactly `vars` (and a scratch data directory): it must get
/// past the configuration and fail only at connecting, since the hosts named do not exist here.
fn assert_accepted(source: &str, vars: &BTreeMap<String, String>) {
    assert!(vars.len() >= 8, "{source}: only {vars:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_flashback"))
        .env_clear()
        .envs(vars)
        .env("FLASHBACK_DATA_DIR", dir.path())
        .env("FLASHBACK_STORE_ACQUIRE_TIMEOUT_MS", "1000")
        .arg("migrate")
        .output()
        .expect("run flashback");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{source}: no store is reachable here, so migrate must fail: {stderr}");
    assert!(!stderr.contains("invalid configuration"), "{source}: the configuration is refused: {stderr}");
    assert!(stderr.contains("error:"), "{source}: {stderr}");
}

#[test]
fn the_compose_instances_configuration_is_accepted() {
    let vars = env_file(&repo_file("deploy/.env.example"));
    let config = flashback_variables(&repo_file("deploy/compose.yaml"), &vars);
    assert_eq!(config.get("FLASHBACK_FLASH_SALE_ENGINE").map(String::as_str), Some("redis"));
    assert!(!config.contains_key("FLASHBACK_NODE_ID"), "instances lease their node numbers: {config:?}");
    assert_accepted("deploy/compose.yaml", &config);
}

#[test]
fn the_kubernetes_configmap_and_secret_are_accepted() {
    let none = BTreeMap::new();
    let mut config = flashback_variables(&repo_file("deploy/k8s/configmap.yaml"), &none);
    config.extend(flashback_variables(&repo_file("deploy/k8s/secret.yaml"), &none));
    assert_accepted("deploy/k8s", &config);
}
