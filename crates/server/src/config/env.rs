//! Which `FLASHBACK_*` environment variables are configuration. People keep other variables
//! with the prefix in their shells and scripts (`FLASHBACK_BIN`, a test suite's settings), so
//! a variable that names no key is left out and named in a warning, while an unknown key in
//! the configuration file is still an error.

use serde_json::Value;

/// The prefix every configuration variable starts with.
pub(super) const PREFIX: &str = "FLASHBACK_";

/// Whether `path` (`section.key`, lower case) names a configuration key, judged against the
/// serialized defaults: every segment must exist, except inside a map whose default is empty
/// (`rebate.category_bp.<category>`).
pub(super) fn is_key(defaults: &Value, path: &str) -> bool {
    let mut at = defaults;
    for segment in path.split('.') {
        match at {
            Value::Object(map) if map.is_empty() => return true,
            Value::Object(map) => match map.get(segment) {
                Some(next) => at = next,
                None => return false,
            },
            _ => return false,
        }
    }
    true
}

/// Whether a variable (after the prefix, any case) is a test suite's setting, not an instance's.
pub(super) fn is_test_setting(key: &str) -> bool {
    key.to_ascii_lowercase().starts_with("test_")
}

/// The `FLASHBACK_*` variables set in this process that name no configuration key.
pub(super) fn unknown(defaults: &Value, to_path: impl Fn(&str) -> String) -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.strip_prefix(PREFIX).is_some_and(|k| !is_test_setting(k) && !is_key(defaults, &to_path(k))))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_known_by_the_defaults_and_maps_take_any_key() {
        let d = json!({"listen": "x", "store": {"url": null}, "rebate": {"category_bp": {}, "hold_days": 1}});
        assert!(is_key(&d, "listen"));
        assert!(is_key(&d, "store.url"));
        assert!(is_key(&d, "rebate.category_bp"));
        assert!(is_key(&d, "rebate.category_bp.electronics"));
        assert!(!is_key(&d, "bin"));
        assert!(!is_key(&d, "store.uri"));
        assert!(!is_key(&d, "listen.port"));
        assert!(!is_key(&d, "rebate.hold_days.x"));
    }
}
