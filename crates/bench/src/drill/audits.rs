//! The audits after the drill (`flashback audit trade`, `audit ledger`, `audit flash-sale`)
//! run with the drill's configuration, and what each found.

use serde::Serialize;
use serde_json::Value;

use super::cluster::Cluster;

/// Violations quoted in the report at most, per audit.
const MAX_QUOTED: usize = 3;
/// Characters of an audit's error output kept.
const MAX_OUTPUT: usize = 600;

/// What one audit said.
#[derive(Debug, Clone, Serialize)]
pub struct AuditOutcome {
    /// `trade`, `ledger` or `flash-sale`.
    pub audit: String,
    /// `passed`, `violations` (it ran and found some) or `error` (it did not run to the end).
    pub result: &'static str,
    /// Violations found.
    pub violations: u64,
    /// The first violations, or why it did not run.
    pub detail: Vec<String>,
}

impl AuditOutcome {
    /// Whether it ran and found nothing.
    pub fn passed(&self) -> bool {
        self.result == "passed"
    }
}

/// Runs the three audits one after another.
pub async fn run(cluster: &Cluster, sale_id: &str) -> Vec<AuditOutcome> {
    let mut outcomes = Vec::new();
    for args in [vec!["audit", "trade"], vec!["audit", "ledger"], vec!["audit", "flash-sale", sale_id]] {
        let name = args[1].to_owned();
        let outcome = match cluster.flashback(&args).await {
            Ok(out) => judge(name, out.status.success(), &out.stdout, &out.stderr),
            Err(e) => AuditOutcome { audit: name, result: "error", violations: 0, detail: vec![format!("{e:#}")] },
        };
        eprintln!("drill: audit {}: {} ({} violations)", outcome.audit, outcome.result, outcome.violations);
        outcomes.push(outcome);
    }
    outcomes
}

/// An audit's outcome from its exit status and output: the JSON report on standard output
/// lists `violations`; anything else is an error.
fn judge(audit: String, success: bool, stdout: &[u8], stderr: &[u8]) -> AuditOutcome {
    let report: Option<Value> = serde_json::from_slice(stdout).ok();
    let violations = report.as_ref().and_then(|r| r.get("violations")).and_then(Value::as_array);
    match (success, violations) {
        (true, Some(v)) if v.is_empty() => AuditOutcome { audit, result: "passed", violations: 0, detail: vec![] },
        (_, Some(v)) if !v.is_empty() => AuditOutcome {
            audit,
            result: "violations",
            violations: v.len() as u64,
            detail: v.iter().take(MAX_QUOTED).map(Value::to_string).collect(),
        },
        _ => {
            let text =
                format!("{}\n{}", String::from_utf8_lossy(stdout).trim(), String::from_utf8_lossy(stderr).trim());
            let text: String = text.trim().chars().take(MAX_OUTPUT).collect();
            AuditOutcome { audit, result: "error", violations: 0, detail: vec![text] }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_passes_only_when_it_ran_and_listed_no_violation() {
        let passed = judge("trade".into(), true, br#"{"violations": []}"#, b"");
        assert!(passed.passed());
        let found = judge("trade".into(), false, br#"{"violations": [{"order": 1}, {"order": 2}]}"#, b"error");
        assert_eq!((found.result, found.violations), ("violations", 2));
        let broken = judge("ledger".into(), false, b"", b"error: store unavailable");
        assert_eq!(broken.result, "error");
        assert!(broken.detail[0].contains("store unavailable"));
        // Exit 0 without a report is not a pass.
        assert_eq!(judge("ledger".into(), true, b"not json", b"").result, "error");
    }
}
