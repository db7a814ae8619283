//! `soak`: pods and policies churn on two test nodes while traffic flows; agent memory, map
//! entries, pins and conntrack are sampled and must return to their baseline. `cargo xtask
//! soak --minutes N` builds and runs it; see docs/reliability.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use palisade_tests::soak::{plot, Options};

const USAGE: &str = "usage: soak [--minutes N] [--out DIR]
  --minutes N  how long (default 1; a tenth warms up, a tenth is measured after the drain)
  --out DIR    where soak.json and soak.svg go (default: the current directory)";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn parse() -> Result<Option<(f64, PathBuf)>, String> {
    let (mut minutes, mut out) = (1.0, PathBuf::from("."));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--minutes" => {
                minutes = args
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|m| *m > 0.0)
                    .ok_or("--minutes needs a positive number")?;
            }
            "--out" => out = PathBuf::from(args.next().ok_or("--out needs a directory")?),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Some((minutes, out)))
}

fn main() -> ExitCode {
    let (minutes, out) = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(why) = palisade_tests::missing_privileges() {
        eprintln!("soak: cannot run here: {why}");
        return ExitCode::from(2);
    }
    let agent_bin = match palisade_tests::conformance::agent::find_agent_bin() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let handler = on_signal as extern "C" fn(libc::c_int);
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
    println!("soak: {minutes} min, agent {}", agent_bin.display());
    let report = match palisade_tests::soak::run(&Options { minutes, agent_bin }, &INTERRUPTED) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}", report.summary_text());
    let written = std::fs::create_dir_all(&out)
        .and_then(|()| {
            let json = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
            std::fs::write(out.join("soak.json"), json)
        })
        .and_then(|()| {
            let title = format!("palisade soak: {:.1} min, 2 nodes", report.minutes);
            std::fs::write(
                out.join("soak.svg"),
                plot::svg(&report.samples, report.churn_phase_s, &title),
            )
        });
    if let Err(e) = written {
        eprintln!("soak: writing to {}: {e}", out.display());
        return ExitCode::from(2);
    }
    println!("soak: wrote {0}/soak.json and {0}/soak.svg", out.display());
    if INTERRUPTED.load(Ordering::Relaxed) {
        ExitCode::from(130)
    } else if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
