//! Per-packet cost of Palisade's TC programs through BPF_PROG_TEST_RUN, against the empty
//! `pal_baseline` classifier measured the same way in the same rounds.
//!
//! `palisade` bench `packet` [--quick] [--out FILE.json]; needs root (loads programs into a
//! private bpffs; nothing is attached anywhere). `cargo xtask bench` runs it and renders the
//! report; the method is described in docs/performance.md.

mod fixture;
#[path = "../shared/maps.rs"]
mod maps;
mod measure;
#[allow(
    dead_code,
    reason = "shared by several bench binaries, each using a subset"
)]
#[path = "../shared/stats.rs"]
mod stats;

use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use fixture::{Family, Fixture};
use maps::MapMemory;
use measure::{Plan, Point};
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Config {
    rules: u32,
    peers: u32,
    /// Identity-trie prefixes: every peer has an IPv4 and an IPv6 address.
    identity_prefixes: u32,
    /// Loading the programs and filling the maps.
    setup_ms: f64,
    maps: Vec<MapMemory>,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    quick: bool,
    kernel: String,
    plan: Plan,
    seconds: f64,
    configs: Vec<Config>,
    points: Vec<Point>,
    /// Cheap paths at 10 rules and 10 peers, IPv4: where the time goes.
    breakdown: Vec<Point>,
}

struct Args {
    quick: bool,
    out: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        quick: false,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => out.quick = true,
            "--out" => out.out = Some(it.next().context("--out needs a file")?.into()),
            // `cargo bench` passes --bench to harness-less benches.
            "--bench" => {}
            other => {
                anyhow::bail!("unknown argument {other}; usage: packet [--quick] [--out FILE]")
            }
        }
    }
    Ok(out)
}

/// (rules, peers) to measure.
fn grid(quick: bool) -> Vec<(u32, u32)> {
    let sizes: &[u32] = if quick {
        &[10, 100_000]
    } else {
        &[10, 1_000, 10_000, 100_000]
    };
    let mut out = Vec::new();
    for &peers in sizes {
        for &rules in sizes {
            out.push((rules, peers));
        }
    }
    out
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("packet bench: needs root (BPF_PROG_TEST_RUN, bpffs)");
        std::process::exit(2);
    }
    let plan = if args.quick {
        Plan {
            rounds: 7,
            repeat: 4096,
            singles: 128,
        }
    } else {
        Plan {
            rounds: 21,
            repeat: 8192,
            singles: 256,
        }
    };
    let start = Instant::now();
    let mut configs = Vec::new();
    let mut points = Vec::new();
    let mut breakdown = Vec::new();
    for (rules, peers) in grid(args.quick) {
        let t = Instant::now();
        let mut fix = Fixture::new(rules, peers)?;
        let built = t.elapsed().as_secs_f64() * 1e3;
        for fam in Family::BOTH {
            let got = measure::measure(&mut fix, fam, &plan)
                .with_context(|| format!("{rules} rules, {peers} peers, {}", fam.name()))?;
            for p in &got {
                eprintln!(
                    "packet: {rules:>6} rules {peers:>6} peers {} {:?}/{:?}: {:.0} ns raw, {:.0} ns above baseline",
                    fam.name(),
                    p.case,
                    p.method,
                    p.raw_ns.median,
                    p.above_baseline_ns.median
                );
            }
            points.extend(got);
        }
        let maps = fix.map_memory()?;
        if rules == 10 && peers == 10 {
            breakdown.extend(measure::breakdown(&mut fix, &plan)?);
        }
        configs.push(Config {
            rules,
            peers,
            identity_prefixes: peers * 2,
            setup_ms: built,
            maps,
        });
    }
    let report = Report {
        bench: "packet",
        quick: args.quick,
        kernel: kernel(),
        plan,
        seconds: start.elapsed().as_secs_f64(),
        configs,
        points,
        breakdown,
    };
    let json = serde_json::to_string_pretty(&report)?;
    match &args.out {
        Some(path) => std::fs::write(path, json).with_context(|| format!("{}", path.display()))?,
        None => println!("{json}"),
    }
    Ok(())
}
