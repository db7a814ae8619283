//! `cargo xtask bench [--quick] [--out DIR]`: builds the benchmark binaries (`agent/benches/*`,
//! release profile), runs each (root), and writes `DIR/results.json`, SVG plots and
//! `DIR/performance.md`. A full run also refreshes `docs/performance.md` and
//! `docs/performance/*.svg`. Benchmarks report figures; they never fail on a timing.

mod control;
mod data;
mod packet;
mod report;
mod svg;
mod traffic;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::{cmd, setup};

/// The benchmark binaries, in the order they run (the priorities).
const BENCHES: [&str; 4] = ["packet", "control", "update", "traffic"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A reduced set that runs in a minute or two (smoke test); does not touch docs/.
    #[arg(long)]
    quick: bool,
    /// Where to write results.json, the plots and performance.md (default: target/bench).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Run only these benches (repeatable): packet, control, update, traffic.
    #[arg(long = "only", value_name = "BENCH")]
    only: Vec<String>,
    /// Run nothing: render DIR/performance.md and the plots again from the JSON files of an
    /// earlier run in DIR (and docs/ too when that run was a full one).
    #[arg(long, requires = "out")]
    render_only: bool,
}

/// A rendered chart: file name and SVG text.
#[derive(Debug, Clone)]
pub struct Chart {
    pub file: String,
    pub svg: String,
}

/// What one bench produced.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub seconds: f64,
    pub result: Result<Value, String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    for b in &args.only {
        if !BENCHES.contains(&b.as_str()) {
            bail!("--only {b}: unknown bench (known: {})", BENCHES.join(", "));
        }
    }
    if args.render_only {
        return render_again(args);
    }
    setup::run()?;
    if !cmd::is_root() {
        bail!(
            "cargo xtask bench needs root: it loads eBPF programs and creates network namespaces"
        );
    }
    let started = Instant::now();
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let root = cmd::workspace_root();
    let out = match &args.out {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => std::env::current_dir()?.join(p),
        None => root.join("target").join("bench"),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let selected: Vec<&str> = BENCHES
        .iter()
        .copied()
        .filter(|b| args.only.is_empty() || args.only.iter().any(|o| o == b))
        .collect();
    let exes = build(&root, &selected)?;
    let mut outcomes = Vec::new();
    for name in &selected {
        let exe = exes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("cargo built no executable for bench {name}"))?;
        outcomes.push(run_one(&root, name, &exe, args.quick, &out));
    }
    let mut argv = vec!["cargo xtask bench".to_owned()];
    if args.quick {
        argv.push("--quick".into());
    }
    for o in &args.only {
        argv.push(format!("--only {o}"));
    }
    let ctx = report::Context {
        command: argv.join(" "),
        quick: args.quick,
        seconds: started.elapsed().as_secs_f64(),
        machine: {
            let mut m = report::machine();
            m["loadavg_start"] = Value::from(load_start.trim());
            m
        },
    };
    write_all(
        &root,
        &out,
        &ctx,
        &outcomes,
        !args.quick && args.only.is_empty(),
    )?;
    println!(
        "bench: {} in {:.0} s; results in {}",
        outcomes
            .iter()
            .map(|o| format!(
                "{} {}",
                o.name,
                if o.result.is_ok() { "ok" } else { "FAILED" }
            ))
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    if let Some(failed) = outcomes.iter().find(|o| o.result.is_err()) {
        bail!(
            "bench {} did not finish: {}",
            failed.name,
            failed.result.as_ref().err().map_or("", String::as_str)
        );
    }
    Ok(())
}

/// Renders and writes results.json, performance.md and the plots to `out`, and to docs/ when
/// `docs` is set.
fn write_all(
    root: &Path,
    out: &Path,
    ctx: &report::Context,
    outcomes: &[Outcome],
    docs: bool,
) -> anyhow::Result<()> {
    let (results, markdown, charts) = report::render(ctx, outcomes);
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    write_report(out, &markdown, &charts, "performance")?;
    if docs {
        write_report(&root.join("docs"), &markdown, &charts, "performance")?;
        println!("bench: docs/performance.md and docs/performance/*.svg updated");
    }
    Ok(())
}

/// `--render-only`: the report of an earlier run, from its JSON files.
fn render_again(args: &Args) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    let out = args.out.clone().context("--render-only needs --out DIR")?;
    let prev: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json"))
            .with_context(|| format!("{}/results.json", out.display()))?,
    )?;
    let mut outcomes = Vec::new();
    for name in BENCHES {
        let stored = &prev["benches"][name];
        if stored.is_null() {
            continue;
        }
        let file = out.join(format!("{name}.json"));
        let result = match stored.get("error").and_then(Value::as_str) {
            Some(e) => Err(e.to_owned()),
            None => std::fs::read_to_string(&file)
                .map_err(|e| format!("{}: {e}", file.display()))
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string())),
        };
        outcomes.push(Outcome {
            name: name.to_owned(),
            seconds: stored["seconds"].as_f64().unwrap_or(0.0),
            result,
        });
    }
    let quick = prev["quick"].as_bool().unwrap_or(true);
    let command = prev["command"]
        .as_str()
        .unwrap_or("cargo xtask bench")
        .to_owned();
    let full = !quick && outcomes.len() == BENCHES.len() && !command.contains("--only");
    let ctx = report::Context {
        command,
        quick,
        seconds: prev["seconds"].as_f64().unwrap_or(0.0),
        machine: prev["machine"].clone(),
    };
    write_all(&root, &out, &ctx, &outcomes, full)
}

/// Writes `<dir>/performance.md` and `<dir>/<charts_dir>/*.svg`.
fn write_report(
    dir: &Path,
    markdown: &str,
    charts: &[Chart],
    charts_dir: &str,
) -> anyhow::Result<()> {
    let cdir = dir.join(charts_dir);
    std::fs::create_dir_all(&cdir)?;
    for c in charts {
        std::fs::write(cdir.join(&c.file), &c.svg)?;
    }
    std::fs::write(dir.join("performance.md"), markdown)?;
    Ok(())
}

/// `cargo build --release` of the agent, the probe binary and the selected benches; returns
/// each bench's executable.
fn build(root: &Path, benches: &[&str]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).args([
        "build",
        "--release",
        "-p",
        "palisade",
        "-p",
        "palisade-tests",
        "--bins",
        "--message-format=json-render-diagnostics",
    ]);
    for b in benches {
        cmd.args(["--bench", b]);
    }
    let stdout = cmd::output(&mut cmd)?;
    let mut exes = Vec::new();
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let is_bench = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bench"));
        if let (true, Some(exe), Some(name)) = (
            is_bench,
            msg["executable"].as_str(),
            msg["target"]["name"].as_str(),
        ) {
            exes.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    Ok(exes)
}

/// Runs one bench binary with `--out DIR/<name>.json`; its progress goes to the terminal.
fn run_one(root: &Path, name: &str, exe: &Path, quick: bool, out: &Path) -> Outcome {
    let file = out.join(format!("{name}.json"));
    let _ = std::fs::remove_file(&file);
    println!(
        "bench: running {name}{}",
        if quick { " (quick)" } else { "" }
    );
    let start = Instant::now();
    let mut cmd = Command::new(exe);
    cmd.current_dir(root).arg("--out").arg(&file);
    if quick {
        cmd.arg("--quick");
    }
    let release = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    cmd.env("PALISADE_AGENT_BIN", release.join("palisade"))
        .env("PALISADE_PROBE_BIN", release.join("probe"))
        .stdin(Stdio::null());
    let result = match cmd.status() {
        Ok(st) if st.success() => std::fs::read_to_string(&file)
            .map_err(|e| format!("{}: {e}", file.display()))
            .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{}: {e}", file.display()))),
        Ok(st) => Err(format!("{} exited with {st}", exe.display())),
        Err(e) => Err(format!("starting {}: {e}", exe.display())),
    };
    Outcome {
        name: name.to_owned(),
        seconds: start.elapsed().as_secs_f64(),
        result,
    }
}
