//! `conformance`: runs NetworkPolicy conformance case files through test nodes, the real
//! Palisade agent and real probes. `cargo xtask conformance` builds and runs it; see
//! docs/conformance.md.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use palisade_tests::conformance::cli::{self, Command, Source};
use palisade_tests::conformance::report::{Report, Status};
use palisade_tests::conformance::runner::{Options, Runner};
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
    if args.source == Source::Kube {
        return Err(
            "--source kube: not implemented yet: the Kubernetes source comes with issue 6"
                .to_owned(),
        );
    }
    let cases = case::load_all(&args.cases, &args.only).map_err(|e| e.to_string())?;
    if let Some(why) = palisade_tests::missing_privileges() {
        return Err(format!("cannot run here: {why}"));
    }
    let agent_bin = agent::find_agent_bin().map_err(|e| e.to_string())?;
    println!(
        "conformance: {} case(s), ip family {}, target {}, agent {}",
        cases.len(),
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
    let reports = Runner::new(opts, &INTERRUPTED).run_all(&cases);
    let report = Report::new(
        reports,
        start.elapsed().as_secs_f64(),
        cli::family_flag(args.family),
        &args.targets,
    );
    let s = &report.summary;
    println!(
        "conformance: {} cases: {} passed, {} failed, {} skipped in {:.1} s (probe tables: {} passed, {} failed, {} skipped)",
        s.cases, s.passed, s.failed, s.skipped, s.seconds, s.probes.passed, s.probes.failed, s.probes.skipped
    );
    for c in report.cases.iter().filter(|c| c.status == Status::Failed) {
        println!("  FAILED {}: {}", c.id, c.reason);
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
