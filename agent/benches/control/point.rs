//! One grid point, measured in a process of its own so that its memory figures are its own:
//! full compile time, agent memory, incremental updates, and the BPF maps the syncer would fill.

use std::time::{Duration, Instant};

use palisade::{
    compiler::{CompileOptions, Compiler},
    dataplane::{Dataplane, PrivateBpffs},
    model::{ModelChange, NetworkPolicy, NetworkPolicySpec, Pod},
    sync::{SyncReport, TableWriter},
};
use serde::Serialize;

use crate::{
    gen::{self, Size, NODE},
    maps::{map_memory, MapMemory},
    stats::Stat,
};

/// Full compiles at most; fewer when one takes longer than this.
const RUNS: usize = 3;
const SLOW: Duration = Duration::from_secs(20);
/// Incremental changes per kind (each applied, then reverted).
const INCREMENTAL_RUNS: usize = 7;

#[derive(Debug, Serialize)]
pub struct Compiled {
    pub identities: usize,
    pub identity_prefixes: usize,
    pub tables: usize,
    pub table_entries: usize,
    pub local_endpoints: usize,
    pub problems: usize,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    /// Resident set before the cluster was generated (the process itself).
    pub rss_start_bytes: u64,
    /// Resident set after the compile, holding only the compiler (its model, caches and output),
    /// as the agent does; freed memory returned to the kernel first (`malloc_trim`).
    pub rss_compiled_bytes: u64,
    /// Peak resident set of the process (generation and compile included).
    pub peak_rss_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Bpf {
    pub write_seconds: f64,
    pub map_writes: u64,
    pub problems: Vec<String>,
    pub maps: Vec<MapMemory>,
    pub total_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct PointReport {
    pub pods: usize,
    pub policies: usize,
    pub namespaces: usize,
    pub nodes: usize,
    pub compile_seconds: Stat,
    pub compiled: Compiled,
    pub memory: Memory,
    /// A local pod's labels changed to another app's and back (ms).
    pub label_change_ms: Stat,
    /// A policy selecting local pods added and deleted again (ms).
    pub policy_change_ms: Stat,
    /// None without root (no BPF).
    pub bpf: Option<Bpf>,
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let kib = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_maxrss
    };
    u64::try_from(kib).unwrap_or(0) * 1024
}

fn trim() {
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

fn options() -> CompileOptions {
    CompileOptions {
        node: Some(NODE.to_owned()),
        ..CompileOptions::default()
    }
}

/// Milliseconds of applying `forward` then `back`, `INCREMENTAL_RUNS` times (both directions
/// are samples).
fn incremental(compiler: &mut Compiler, forward: &ModelChange, back: &ModelChange) -> Stat {
    let mut ms = Vec::new();
    for _ in 0..INCREMENTAL_RUNS {
        for c in [forward, back] {
            let t = Instant::now();
            compiler.apply([c.clone()]);
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Stat::of(&ms)
}

fn local_pod(compiler: &Compiler) -> Option<Pod> {
    compiler
        .model()
        .pods
        .values()
        .find(|p| p.node_name.as_deref() == Some(NODE))
        .cloned()
}

pub fn run(size: Size, with_bpf: bool) -> anyhow::Result<PointReport> {
    let rss_start = rss_bytes();
    let mut times = Vec::new();
    let mut compiler = Compiler::new(options());
    for i in 0..RUNS {
        let changes = gen::changes(&size);
        compiler = Compiler::new(options());
        let t = Instant::now();
        compiler.apply(changes);
        let took = t.elapsed();
        times.push(took.as_secs_f64());
        eprintln!(
            "control: {} pods {} policies: compile {} took {:.2} s",
            size.pods,
            size.policies,
            i + 1,
            took.as_secs_f64()
        );
        if took > SLOW {
            break;
        }
    }
    trim();
    let rss_compiled = rss_bytes();
    let out = compiler.output();
    let compiled = Compiled {
        identities: out.identities.identities.len(),
        identity_prefixes: out.identities.prefixes.len(),
        tables: out.tables.len(),
        table_entries: out.tables.values().map(|t| t.entries.len()).sum(),
        local_endpoints: out.endpoints.len(),
        problems: out.problems.len(),
    };
    let pod = local_pod(&compiler).ok_or_else(|| anyhow::anyhow!("no pod on {NODE}"))?;
    let mut moved = pod.clone();
    let app = moved.labels.get("app").cloned().unwrap_or_default();
    let other = if app == "app1" { "app2" } else { "app1" };
    moved.labels.insert("app".to_owned(), other.to_owned());
    let label_change_ms = incremental(
        &mut compiler,
        &ModelChange::UpsertPod(moved),
        &ModelChange::UpsertPod(pod.clone()),
    );
    let extra = NetworkPolicy {
        namespace: pod.namespace.clone(),
        name: "bench-extra".to_owned(),
        spec: NetworkPolicySpec {
            pod_selector: palisade::model::LabelSelector::default(),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ..Default::default()
        },
    };
    let extra_key = palisade::model::ObjectKey::new(&extra.namespace, &extra.name);
    let policy_change_ms = incremental(
        &mut compiler,
        &ModelChange::UpsertPolicy(extra),
        &ModelChange::DeletePolicy(extra_key),
    );
    let bpf = if with_bpf {
        Some(bpf(&compiler)?)
    } else {
        None
    };
    Ok(PointReport {
        pods: size.pods,
        policies: size.policies,
        namespaces: size.namespaces(),
        nodes: size.nodes(),
        compile_seconds: Stat::of(&times),
        compiled,
        memory: Memory {
            rss_start_bytes: rss_start,
            rss_compiled_bytes: rss_compiled,
            peak_rss_bytes: peak_rss_bytes(),
        },
        label_change_ms,
        policy_change_ms,
        bpf,
    })
}

/// Writes the node's identity prefixes and allow tables into fresh maps, as the syncer does,
/// and reads what the kernel accounts for each map.
fn bpf(compiler: &Compiler) -> anyhow::Result<Bpf> {
    let fs = PrivateBpffs::new("bench-ctl")?;
    let mut dp = Dataplane::load(fs.path())?;
    let out = compiler.output();
    let t = Instant::now();
    let mut report = SyncReport::default();
    let mut problems = Vec::new();
    for (net, id) in &out.identities.prefixes {
        if let Err(e) = dp.set_identity(*net, *id) {
            problems.push(format!("identity {net}: {e}"));
            break;
        }
    }
    let mut tables = TableWriter::default();
    tables.write_new(&mut dp, out, &mut report);
    let write_seconds = t.elapsed().as_secs_f64();
    problems.extend(report.problems.iter().map(|p| p.message.clone()));
    let maps = map_memory(&dp.pin_root().join("maps"))?;
    let total_bytes = maps.iter().map(|m| m.memlock_bytes).sum();
    Ok(Bpf {
        write_seconds,
        map_writes: report.map_writes + out.identities.prefixes.len() as u64,
        problems,
        maps,
        total_bytes,
    })
}
