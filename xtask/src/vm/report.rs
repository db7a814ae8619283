//! Reading what the guest left in the results directory: `steps.tsv` (each step's exit status
//! and duration), each step's log (libtest's `test result:` lines, failed test names) and the
//! conformance runner's JSON report.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// One step as the guest recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepResult {
    pub name: String,
    pub status: i32,
    pub millis: u64,
}

/// libtest counts from a step's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    pub failed_names: Vec<String>,
}

/// The conformance report, reduced to what the summary needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conformance {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Case id → status.
    pub cases: BTreeMap<String, String>,
}

pub fn read_steps(results: &Path) -> Vec<StepResult> {
    let text = std::fs::read_to_string(results.join("steps.tsv")).unwrap_or_default();
    parse_steps(&text)
}

fn parse_steps(text: &str) -> Vec<StepResult> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some(StepResult {
                name: f.next()?.to_owned(),
                status: f.next()?.trim().parse().ok()?,
                millis: f.next()?.trim().parse().unwrap_or(0),
            })
        })
        .collect()
}

pub fn test_counts(log: &str) -> TestCounts {
    let mut c = TestCounts::default();
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n
                    .trim_start_matches("ok.")
                    .trim_start_matches("FAILED.")
                    .parse()
                    .unwrap_or(0);
                match kind {
                    "passed" => c.passed += n,
                    "failed" => c.failed += n,
                    "ignored" => c.ignored += n,
                    _ => {}
                }
            }
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            c.failed_names.push(name.to_owned());
        }
    }
    c
}

pub fn conformance(report: &Value) -> Conformance {
    let n = |k: &str| report["summary"][k].as_u64().unwrap_or(0);
    let cases = report["cases"]
        .as_array()
        .map(|cases| {
            cases
                .iter()
                .filter_map(|c| {
                    Some((
                        c["id"].as_str()?.to_owned(),
                        c["status"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Conformance {
        passed: n("passed"),
        failed: n("failed"),
        skipped: n("skipped"),
        cases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_counts() {
        assert_eq!(
            parse_steps("a\t0\t1200\nbad line\nb\t124\t5\n"),
            vec![
                StepResult {
                    name: "a".into(),
                    status: 0,
                    millis: 1200
                },
                StepResult {
                    name: "b".into(),
                    status: 124,
                    millis: 5
                }
            ]
        );
        let c = test_counts(
            "test x ... ok\ntest y ... FAILED\n\
             test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n",
        );
        assert_eq!((c.passed, c.failed, c.ignored), (3, 1, 0));
        assert_eq!(c.failed_names, vec!["y".to_owned()]);
    }

    #[test]
    fn conformance_summary() {
        let v = serde_json::json!({"summary": {"cases": 2, "passed": 1, "failed": 0, "skipped": 1},
            "cases": [{"id": "a", "status": "passed"}, {"id": "b", "status": "skipped"}]});
        let c = conformance(&v);
        assert_eq!((c.passed, c.failed, c.skipped), (1, 0, 1));
        assert_eq!(c.cases["b"], "skipped");
    }
}
