//! `chaos`: the agent under faults (SIGKILL, graceful restart, source outage, changes while
//! down) with traffic flowing; counts broken connections, denied attempts that succeeded and
//! allowed attempts that failed. `cargo xtask chaos` builds and runs it; see
//! docs/reliability.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_tests::chaos::{scenario::Kind, Options, SourceMode};

const USAGE: &str = "usage: chaos [--scenarios a,b,c,d] [--quick] [--source manifests|kube] [--source-outage-secs N] [--downtime-secs N] [--report OUT.json]
  a  SIGKILL both agents and restart them
  b  graceful restart (SIGTERM)
  c  the policy source unavailable (default 30 s), then back: the manifest directory moved
     away (a change is made meanwhile), or the API server stopped (the change is written
     through it as soon as it is back)
  d  policies changed while the agents are down
  --quick   short phases (CI); the source outage becomes 4 s unless given
  --source  where the agents read the cluster: a manifest directory (default) or a loopback
            kube-apiserver (needs the `kube` feature and `cargo xtask k8s up`'s binaries)";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

struct Args {
    opts: Options,
    report: Option<PathBuf>,
}

fn secs(v: Option<String>, flag: &str) -> Result<Duration, String> {
    v.and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{flag} needs a number of seconds"))
}

fn parse(agent_bin: PathBuf) -> Result<Option<Args>, String> {
    let mut args = std::env::args().skip(1);
    let (mut scenarios, mut quick, mut outage, mut downtime, mut report) =
        (None, false, None, None, None);
    let mut source = SourceMode::Manifests;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--scenarios" => {
                let list = args.next().ok_or("--scenarios needs a list")?;
                let kinds = list
                    .split(',')
                    .map(|s| Kind::parse(s.trim()).ok_or(format!("unknown scenario {s:?}")))
                    .collect::<Result<Vec<_>, _>>()?;
                scenarios = Some(kinds);
            }
            "--quick" => quick = true,
            "--source" => {
                let text = args.next().ok_or("--source needs manifests or kube")?;
                source =
                    SourceMode::parse(&text).ok_or(format!("unknown source {text:?}\n{USAGE}"))?;
            }
            "--source-outage-secs" => outage = Some(secs(args.next(), &a)?),
            "--downtime-secs" => downtime = Some(secs(args.next(), &a)?),
            "--report" => report = Some(PathBuf::from(args.next().ok_or("--report needs a file")?)),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mut opts = if quick {
        Options::quick(agent_bin)
    } else {
        Options::full(agent_bin)
    };
    if let Some(s) = scenarios {
        opts.scenarios = s;
    }
    if let Some(o) = outage {
        opts.source_outage = o;
    }
    if let Some(d) = downtime {
        opts.downtime = d;
    }
    opts.source = source;
    Ok(Some(Args { opts, report }))
}

fn main() -> ExitCode {
    if let Some(why) = palisade_tests::missing_privileges() {
        eprintln!("chaos: cannot run here: {why}");
        return ExitCode::from(2);
    }
    let agent_bin = match palisade_tests::conformance::agent::find_agent_bin() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let args = match parse(agent_bin) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let handler = on_signal as extern "C" fn(libc::c_int);
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
    let report = match palisade_tests::chaos::run(&args.opts, &INTERRUPTED) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}", report.summary_text());
    if let Some(path) = &args.report {
        if let Err(e) = report.write(path) {
            eprintln!("chaos: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!("chaos: report written to {}", path.display());
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        ExitCode::from(130)
    } else if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
