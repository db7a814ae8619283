//! What the guest runs (`full` or `quick`), and how the results are judged and summarized.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;

use super::artefacts::Artefacts;
use super::guest::Step;
use super::qemu::{Accel, Ended};
use super::report::{self, Conformance, StepResult, TestCounts};

/// The upstream SCTP cases: they must pass (not be skipped) on a kernel with SCTP.
pub const SCTP_CASES: [&str; 3] = ["upstream-sctp-01", "upstream-sctp-02", "upstream-sctp-03"];

/// Test executables the quick suite runs: the packet tests (every program through the
/// verifier, BPF_PROG_TEST_RUN), the attach path (tcx or clsact, taken over in place) and the
/// agent on real veths with traffic.
const QUICK_TESTS: [&str; 4] = [
    "dataplane_packets",
    "attach_modes",
    "agent_enforcement",
    "sctp",
];

/// How long a denied probe waits under TCG (`PALISADE_PROBE_TIMEOUT_MS`, read by the
/// conformance runner and the SCTP test): 81 concurrent SCTP associations through the test
/// nodes took up to about 1.7 s there, over the runner's 1 s default.
pub const TCG_PROBE_TIMEOUT_MS: u64 = 3000;

/// Test executables not run under software emulation (by name, or name prefix ending in
/// `_`), and why. They need no particular kernel; they run on the host (`cargo xtask test`)
/// and in a VM with KVM.
const NOT_UNDER_TCG: [(&str, &str); 2] = [
    ("kube_", KUBE_WHY),
    (
        "cni_chain",
        "asserts its probes start within 1 ms of CNI ADD returning (else it has not probed the \
         moment it is about); thread wake-ups under TCG take 20-70 ms",
    ),
];
const KUBE_WHY: &str = "Kubernetes API tests (kube_*): the kube-apiservers they start do not \
                        become ready within the harness's 90 s under TCG";

const TEST_LIMIT_SECS: u64 = 45 * 60;
const CONFORMANCE_LIMIT_SECS: u64 = 100 * 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Every privileged test executable, then the whole upstream corpus (IPv4, ClusterIPs).
    Full,
    /// The packet tests, the agent enforcement test and the three SCTP cases.
    Quick,
}

/// The upstream corpus, next to the workspace (as `cargo xtask test` finds it).
pub fn corpus(root: &Path) -> anyhow::Result<PathBuf> {
    let corpus = root.join("../shared/conformance/upstream-e2e.json");
    if !corpus.is_file() {
        bail!(
            "the upstream conformance corpus is missing at {}: vm-test runs its SCTP cases",
            corpus.display()
        );
    }
    Ok(corpus.canonicalize()?)
}

/// What the guest runs, and the test executables it leaves out (with the reason).
#[derive(Debug)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub not_run: Vec<(String, &'static str)>,
}

pub fn plan(suite: Suite, built: &Artefacts, corpus: &Path, results: &Path, tcg: bool) -> Plan {
    let excluded = |name: &str| {
        NOT_UNDER_TCG
            .iter()
            .find(|(n, _)| tcg && (*n == name || (n.ends_with('_') && name.starts_with(n))))
            .map(|(_, why)| *why)
    };
    let wanted = built
        .tests
        .iter()
        .filter(|t| suite == Suite::Full || QUICK_TESTS.contains(&t.name.as_str()));
    let not_run = wanted
        .clone()
        .filter_map(|t| Some((t.name.clone(), excluded(&t.name)?)))
        .collect();
    let mut steps: Vec<Step> = wanted
        .filter(|t| excluded(&t.name).is_none())
        .map(|t| Step {
            name: format!("test-{}", t.name),
            argv: vec![t.path.display().to_string(), "--ignored".to_owned()],
            limit_secs: TEST_LIMIT_SECS,
        })
        .collect();
    let mut argv = vec![
        built.conformance.display().to_string(),
        "--cases".to_owned(),
        corpus.display().to_string(),
    ];
    if suite == Suite::Quick {
        for id in SCTP_CASES {
            argv.extend(["--case".to_owned(), id.to_owned()]);
        }
    }
    argv.extend(
        ["--ip-family", "ipv4", "--target", "service", "--report"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    argv.push(results.join("conformance.json").display().to_string());
    steps.push(Step {
        name: "conformance".to_owned(),
        argv,
        limit_secs: CONFORMANCE_LIMIT_SECS,
    });
    Plan { steps, not_run }
}

/// Everything the guest reported.
#[derive(Debug)]
pub struct Outcome {
    exit_status: Option<i32>,
    /// Per planned step: what the guest recorded (None: it never finished) and its counts.
    steps: Vec<(String, Option<StepResult>, TestCounts)>,
    conformance: Option<Conformance>,
    not_run: Vec<(String, &'static str)>,
}

impl Outcome {
    pub fn read(results: &Path, plan: &Plan) -> Self {
        let recorded = report::read_steps(results);
        let steps = plan
            .steps
            .iter()
            .map(|p| {
                let r = recorded.iter().find(|r| r.name == p.name).cloned();
                let log = std::fs::read_to_string(results.join(format!("{}.log", p.name)))
                    .unwrap_or_default();
                (p.name.clone(), r, report::test_counts(&log))
            })
            .collect();
        let conformance = std::fs::read_to_string(results.join("conformance.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .map(|v| report::conformance(&v));
        let exit_status = std::fs::read_to_string(results.join("exit-status"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Outcome {
            exit_status,
            steps,
            conformance,
            not_run: plan.not_run.clone(),
        }
    }

    /// The SCTP cases that did not pass, with their status.
    fn sctp_not_passed(&self) -> Vec<String> {
        SCTP_CASES
            .iter()
            .filter_map(|id| {
                let status = self
                    .conformance
                    .as_ref()
                    .and_then(|c| c.cases.get(*id))
                    .map_or("not run", String::as_str);
                (status != "passed").then(|| format!("{id}: {status}"))
            })
            .collect()
    }

    pub fn ok(&self) -> bool {
        self.exit_status == Some(0)
            && self
                .steps
                .iter()
                .all(|(_, r, c)| r.as_ref().is_some_and(|r| r.status == 0) && c.failed == 0)
            && self.conformance.as_ref().is_some_and(|c| c.failed == 0)
            && self.sctp_not_passed().is_empty()
    }

    pub fn print(&self, ended: &Ended, accel: &Accel, release: &str, vm: Duration, wall: Duration) {
        println!("\nvm-test: results ({release}, {})", accel.describe());
        let mut total = TestCounts::default();
        for (name, r, c) in &self.steps {
            let (status, secs) = match r {
                Some(r) => (format!("exit {}", r.status), r.millis as f64 / 1000.0),
                None => ("did not finish".to_owned(), 0.0),
            };
            let counts = if name == "conformance" {
                self.conformance
                    .as_ref()
                    .map_or("no report".to_owned(), |c| {
                        format!(
                            "cases: {} passed, {} failed, {} skipped",
                            c.passed, c.failed, c.skipped
                        )
                    })
            } else {
                format!("tests: {} passed, {} failed", c.passed, c.failed)
            };
            println!("  {name:<28} {status:<16} {secs:>8.1} s  {counts}");
            for f in &c.failed_names {
                println!("      FAILED {f}");
            }
            total.passed += c.passed;
            total.failed += c.failed;
        }
        for (name, why) in &self.not_run {
            println!("  test-{name:<23} NOT RUN under TCG: {why}");
        }
        let sctp = self.sctp_not_passed();
        if sctp.is_empty() {
            println!("  SCTP cases {SCTP_CASES:?}: passed with real SCTP sockets");
        } else {
            println!("  SCTP cases NOT passed: {}", sctp.join(", "));
        }
        if self.exit_status.is_none() {
            println!("  the guest did not finish its steps: {ended}");
        }
        let conf = self.conformance.clone().unwrap_or_default();
        println!(
            "vm-test: {}: privileged tests {} passed, {} failed ({} executable(s) not run); \
             conformance {} passed, {} failed, {} skipped; VM {:.0} s, wall {:.0} s",
            if self.ok() { "PASSED" } else { "FAILED" },
            total.passed,
            total.failed,
            self.not_run.len(),
            conf.passed,
            conf.failed,
            conf.skipped,
            vm.as_secs_f64(),
            wall.as_secs_f64()
        );
    }
}
