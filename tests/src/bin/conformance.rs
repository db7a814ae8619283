//! `conformance`: runs NetworkPolicy conformance case files through test nodes, the real
//! Palisade agent and real probes. `cargo xtask conformance` builds and runs it; see
//! docs/conformance.md.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use palisade_tests::conformance::case::Case;
use palisade_tests::conformance::cli::{self, Command, Source};
use palisade_tests::conformance::report::{CaseReport, Report, Status, ViaManifests};
use palisade_tests::conformance::runner::{Options, Rerouted, Runner};
use palisade_tests::conformance::{agent, case};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM stop the run after the current step, so that everything is cleaned up.
fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("conformance: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let args = match cli::parse(std::env::args().skip(1)).map_err(|e| e.to_string())? {
        Command::Help => {
            println!("{}", cli::USAGE);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Run(args) => args,
    };
    if args.source == Source::Kube && !cfg!(feature = "kube") {
        return Err("--source kube: this runner was built without the `kube` feature (cargo build --release -p palisade-tests --features kube)".to_owned());
    }
    let cases = case::load_all(&args.cases, &args.only).map_err(|e| e.to_string())?;
    if let Some(why) = palisade_tests::missing_privileges() {
        return Err(format!("cannot run here: {why}"));
    }
    let agent_bin = agent::find_agent_bin().map_err(|e| e.to_string())?;
    println!(
        "conformance: {} case(s), source {}, ip family {}, target {}, agent {}",
        cases.len(),
        source_name(args.source),
        cli::family_flag(args.family),
        args.targets
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join("+"),
        agent_bin.display()
    );
    catch_signals();
    let start = Instant::now();
    let opts = Options {
        family: args.family,
        targets: args.targets.clone(),
        agent_bin,
    };
    let mut runner = Runner::new(opts.clone(), &INTERRUPTED).with_source(args.source);
    let mut reports = runner.run_all(&cases);
    let rerouted = runner.rerouted().to_vec();
    drop(runner);
    if !rerouted.is_empty() && !INTERRUPTED.load(Ordering::Relaxed) {
        run_via_manifests(opts, &cases, &rerouted, &mut reports);
    }
    let mut report = Report::new(
        reports,
        start.elapsed().as_secs_f64(),
        cli::family_flag(args.family),
        &args.targets,
    );
    report.source = source_name(args.source).to_owned();
    report.via_manifests = rerouted
        .iter()
        .map(|r| ViaManifests {
            id: r.id.clone(),
            reason: r.reason.clone(),
        })
        .collect();
    let s = &report.summary;
    println!(
        "conformance: {} cases: {} passed, {} failed, {} skipped in {:.1} s (probe tables: {} passed, {} failed, {} skipped)",
        s.cases, s.passed, s.failed, s.skipped, s.seconds, s.probes.passed, s.probes.failed, s.probes.skipped
    );
    for c in report.cases.iter().filter(|c| c.status == Status::Failed) {
        println!("  FAILED {}: {}", c.id, c.reason);
    }
    for v in &report.via_manifests {
        println!(
            "  run through the manifest source instead: {}: {}",
            v.id, v.reason
        );
    }
    if let Some(path) = &args.report {
        report.write(path).map_err(|e| e.to_string())?;
        println!("conformance: report written to {}", path.display());
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Ok(ExitCode::from(130));
    }
    Ok(if s.failed > 0 || s.cases < cases.len() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn source_name(source: Source) -> &'static str {
    match source {
        Source::Manifests => "manifests",
        Source::Kube => "kube",
    }
}

/// Runs the cases the API server could not carry through the manifest source, in this run,
/// and puts their reports in place of the placeholders.
fn run_via_manifests(
    opts: Options,
    cases: &[Case],
    rerouted: &[Rerouted],
    reports: &mut [CaseReport],
) {
    let ids: Vec<&str> = rerouted.iter().map(|r| r.id.as_str()).collect();
    println!(
        "conformance: {} case(s) need a field the API server dropped; running them through the manifest source: {}",
        ids.len(),
        ids.join(", ")
    );
    let again: Vec<Case> = cases
        .iter()
        .filter(|c| ids.contains(&c.id.as_str()))
        .cloned()
        .collect();
    let done = Runner::new(opts, &INTERRUPTED).run_all(&again);
    for mut new in done {
        let why = rerouted
            .iter()
            .find(|r| r.id == new.id)
            .map(|r| r.reason.clone());
        let note = format!(
            "through the manifest source (the API server dropped a field: {})",
            why.unwrap_or_default()
        );
        new.reason = if new.reason.is_empty() {
            note
        } else {
            format!("{note}; {}", new.reason)
        };
        if let Some(slot) = reports.iter_mut().find(|r| r.id == new.id) {
            *slot = new;
        }
    }
}
