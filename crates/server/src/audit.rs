//! Audits that do not cry wolf: a live system is always part way through something (a sweep
//! expiring orders, a saga between its two databases, an outbox event on its way), so an audit
//! of a running store looks again before it reports, and reports only what is still wrong.

use std::time::Duration;

/// A report whose violations can be rechecked (one line each, naming what is wrong).
pub trait Violations {
    /// The violation lines.
    fn violations_mut(&mut self) -> &mut Vec<String>;
}

impl Violations for crate::trade::audit::AuditReport {
    fn violations_mut(&mut self) -> &mut Vec<String> {
        &mut self.violations
    }
}

impl Violations for flashback_store::LedgerAudit {
    fn violations_mut(&mut self) -> &mut Vec<String> {
        &mut self.violations
    }
}

impl Violations for crate::flash_sale::audit::FlashAudit {
    fn violations_mut(&mut self) -> &mut Vec<String> {
        &mut self.violations
    }
}

/// How many times an audit looks at most, and how long it waits between looks.
#[derive(Debug, Clone, Copy)]
pub struct Recheck {
    /// Looks in all (at least 1; 1 reports what the first look found).
    pub passes: u32,
    /// The pause between looks: long enough for the work in flight to finish (a sweep, an
    /// outbox dispatch, a flash order pass).
    pub settle: Duration,
}

impl Default for Recheck {
    fn default() -> Self {
        Self { passes: 3, settle: Duration::from_secs(2) }
    }
}

/// Runs `audit` until a look finds nothing or `recheck.passes` looks were made, and reports the
/// last look with only the violations every look found (the same thing wrong with the same
/// thing; the amounts in the line may have moved). The report's other figures are the last
/// look's.
pub async fn confirmed<R, E, F, Fut>(recheck: Recheck, mut audit: F) -> Result<R, E>
where
    R: Violations,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    let mut report = audit().await?;
    let mut seen: Vec<String> = report.violations_mut().iter().map(|v| key(v)).collect();
    for _ in 1..recheck.passes.max(1) {
        if seen.is_empty() {
            break;
        }
        tokio::time::sleep(recheck.settle).await;
        report = audit().await?;
        let now: std::collections::HashSet<String> = report.violations_mut().iter().map(|v| key(v)).collect();
        seen.retain(|k| now.contains(k));
        report.violations_mut().retain(|v| seen.contains(&key(v)));
    }
    Ok(report)
}

/// What a violation line is about, with its amounts masked: numbers right after a word naming
/// a thing (`order 12`, `user:7`, `reservation 3`) are kept, every other number becomes `#`.
fn key(line: &str) -> String {
    const NAMES: [&str; 9] =
        ["order", "user", "product", "reservation", "transaction", "account", "sale", "withdrawal", "id"];
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut number = String::from(c);
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                number.push(d);
            }
            let named = NAMES.iter().any(|n| word.trim_end_matches([' ', ':']).ends_with(n));
            out.push_str(if named { &number } else { "#" });
            word.clear();
        } else {
            out.push(c);
            if c.is_alphabetic() || c == ' ' || c == ':' {
                word.push(c);
            } else {
                word.clear();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Report(Vec<String>);

    impl Violations for Report {
        fn violations_mut(&mut self) -> &mut Vec<String> {
            &mut self.0
        }
    }

    #[test]
    fn keys_keep_what_a_line_is_about_and_mask_its_amounts() {
        assert_eq!(
            key("user 5: points balance 100 but ledger sums to 90"),
            "user 5: points balance # but ledger sums to #"
        );
        assert_eq!(key("reservation for order 9 holds stock"), "reservation for order 9 holds stock");
        assert_eq!(
            key("user:12:pending holds 300 with nothing behind it"),
            "user:12:pending holds # with nothing behind it"
        );
        assert_eq!(
            key("receivable differs from the rows' commissions (500)"),
            "receivable differs from the rows' commissions (#)"
        );
    }

    #[tokio::test]
    async fn a_violation_that_clears_between_looks_is_not_reported_and_one_that_stays_is() {
        let looks = std::sync::Mutex::new(vec![
            vec!["order 1 is cancelled but its reservation is Held", "user 2: points balance 5 but ledger sums to 4"],
            vec!["user 2: points balance 7 but ledger sums to 6", "order 3 is paid but its reservation is Held"],
            vec!["user 2: points balance 7 but ledger sums to 6"],
        ]);
        let recheck = Recheck { passes: 3, settle: Duration::from_millis(1) };
        let report: Report = confirmed(recheck, || {
            let look = looks.lock().unwrap().remove(0);
            async move { Ok::<_, ()>(Report(look.into_iter().map(String::from).collect())) }
        })
        .await
        .unwrap();
        assert_eq!(report.0, ["user 2: points balance 7 but ledger sums to 6"]);
    }

    #[tokio::test]
    async fn a_clean_first_look_is_the_answer() {
        let mut calls = 0;
        let report: Report = confirmed(Recheck::default(), || {
            calls += 1;
            async { Ok::<_, ()>(Report::default()) }
        })
        .await
        .unwrap();
        assert!(report.0.is_empty());
        assert_eq!(calls, 1);
    }
}
