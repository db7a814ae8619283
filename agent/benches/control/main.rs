//! Control-plane benchmark: full compile time, agent memory, incremental updates and BPF map
//! memory for 1k, 10k and 100k pods with 100, 1k and 10k policies (each grid point in a
//! process of its own), plus the compile benchmark of `agent/src/compiler/bench.rs`.
//!
//! `palisade` bench `control` [--quick] [--out FILE.json]. BPF figures need root.

mod gen;
#[path = "../shared/maps.rs"]
mod maps;
mod point;
#[allow(
    dead_code,
    reason = "shared by several bench binaries, each using a subset"
)]
#[path = "../shared/stats.rs"]
mod stats;

use std::{
    io::Read as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

/// A grid point gets this long before it is stopped and reported as not finished.
const POINT_LIMIT: Duration = Duration::from_secs(900);

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    quick: bool,
    seconds: f64,
    generator: &'static str,
    points: Vec<Value>,
    /// `palisade::compiler::bench::run_default()` (another engineer's compile benchmark).
    compiler_bench: Option<Value>,
}

struct Args {
    quick: bool,
    out: Option<PathBuf>,
    point: Option<(usize, usize)>,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        quick: false,
        out: None,
        point: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => out.quick = true,
            "--out" => out.out = Some(it.next().context("--out needs a file")?.into()),
            "--point" => {
                let pods = it.next().context("--point PODS POLICIES")?.parse()?;
                let policies = it.next().context("--point PODS POLICIES")?.parse()?;
                out.point = Some((pods, policies));
            }
            "--bench" => {}
            other => {
                anyhow::bail!("unknown argument {other}; usage: control [--quick] [--out FILE]")
            }
        }
    }
    Ok(out)
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs one point in a child process; its JSON, or an object saying why there is none.
fn point_in_child(pods: usize, policies: usize) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["--point", &pods.to_string(), &policies.to_string()])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let mut text = String::new();
            if let Some(mut out) = child.stdout.take() {
                out.read_to_string(&mut text)?;
            }
            if !status.success() {
                return Ok(serde_json::json!({"pods": pods, "policies": policies,
                    "error": format!("exited with {status}")}));
            }
            return Ok(serde_json::from_str(&text)?);
        }
        if start.elapsed() > POINT_LIMIT {
            // SAFETY: signalling our own child by its PID.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            return Ok(serde_json::json!({"pods": pods, "policies": policies,
                "error": format!("stopped after {} s", POINT_LIMIT.as_secs())}));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    if let Some((pods, policies)) = args.point {
        let report = point::run(gen::Size { pods, policies }, is_root())?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let start = Instant::now();
    let (pods, policies): (&[usize], &[usize]) = if args.quick {
        (&[1_000, 10_000], &[100, 1_000])
    } else {
        (&[1_000, 10_000, 100_000], &[100, 1_000, 10_000])
    };
    let mut points = Vec::new();
    for &n in pods {
        for &p in policies {
            let v = point_in_child(n, p)?;
            eprintln!(
                "control: {n} pods {p} policies: compile {:.3} s, {:.0} MiB after compile{}",
                v["compile_seconds"]["median"].as_f64().unwrap_or(f64::NAN),
                v["memory"]["rss_compiled_bytes"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
                    / 1048576.0,
                v.get("error")
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            points.push(v);
        }
    }
    let compiler_bench = if args.quick {
        None
    } else {
        eprintln!("control: compiler/bench.rs run_default");
        Some(serde_json::to_value(
            palisade::compiler::bench::run_default(),
        )?)
    };
    let report = Report {
        bench: "control",
        quick: args.quick,
        seconds: start.elapsed().as_secs_f64(),
        generator: "agent/benches/control/gen.rs: 100 pods per namespace (10 apps x 10 replicas), \
                    100 pods per node, policies round-robin over namespaces in four kinds; \
                    compiled for node0",
        points,
        compiler_bench,
    };
    let json = serde_json::to_string_pretty(&report)?;
    match &args.out {
        Some(path) => std::fs::write(path, json).with_context(|| format!("{}", path.display()))?,
        None => println!("{json}"),
    }
    Ok(())
}
