//! Hostile input for the manifest loader and the policy compiler: random and mutated YAML and
//! JSON documents and generated models with hostile values go through
//! `palisade::source::load_str` and `palisade::compiler`; nothing may panic and the invariants
//! of `fuzz_util::check` must hold (see there).
//!
//! Runs for `PALISADE_FUZZ_SECS` seconds (default 10: the CI-friendly run `cargo test` does);
//! `cargo xtask fuzz --minutes N` runs it longer in release mode. Other knobs:
//! `PALISADE_FUZZ_SEED` (reproduce a run), `PALISADE_FUZZ_JOBS` (worker threads, default 1),
//! `PALISADE_FUZZ_REPORT` (write the JSON report there), `PALISADE_FUZZ_INPUT` (run one saved
//! input file instead). A finding is saved under `target/tmp/fuzz-findings/` and fails the test
//! with the seed that reproduces it; add it to `fuzz_util/regressions.rs` once fixed.
mod fuzz_util;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuzz_util::{rng::Rng, Checks, Input, Stats};

/// An input that runs longer than this is a hang.
const HANG: Duration = Duration::from_secs(60);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn findings_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings")
}

/// Saves a failing input; returns where.
fn save(input: &Input, why: &str) -> PathBuf {
    let dir = findings_dir();
    let _ = std::fs::create_dir_all(&dir);
    let hash = input.text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let ext = if input.json { "json" } else { "yaml" };
    let path = dir.join(format!("{hash:016x}.{ext}"));
    let _ = std::fs::write(&path, &input.text);
    let _ = std::fs::write(path.with_extension("why.txt"), why);
    path
}

struct Shared {
    stop: AtomicBool,
    /// Per worker: when its current input started (ms since the run began), and the input.
    current: Vec<(AtomicU64, Mutex<Option<Input>>)>,
    finding: Mutex<Option<String>>,
    stats: Mutex<Stats>,
}

fn worker(id: usize, seed: u64, shared: &Shared, began: Instant, deadline: Instant) {
    let seeds = fuzz_util::corpus::seeds();
    let base = fuzz_util::base_model();
    let mut rng = Rng::new(seed);
    let mut stats = Stats::default();
    while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
        let case_seed = rng.next_u64();
        let mut case_rng = Rng::new(case_seed);
        let input = fuzz_util::generate(&mut case_rng, &seeds);
        let checks = Checks::sample(&mut case_rng);
        shared.current[id]
            .0
            .store(began.elapsed().as_millis() as u64, Ordering::Relaxed);
        *shared.current[id]
            .1
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(input.clone());
        if let Err(why) = fuzz_util::run_one(&input, &base, &mut case_rng, checks, &mut stats) {
            let why = format!("{why}\n(PALISADE_FUZZ_CASE_SEED={case_seed} with PALISADE_FUZZ_INPUT=<saved file> replays it)");
            let path = save(&input, &why);
            *shared.finding.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                "{why}\ninput ({}) saved to {}",
                input.strategy,
                path.display()
            ));
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
    shared.current[id].0.store(u64::MAX, Ordering::Relaxed);
    shared
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(&stats);
}

#[test]
fn fuzz_manifests_and_compiler() {
    fuzz_util::quiet_panics();
    if let Ok(file) = std::env::var("PALISADE_FUZZ_INPUT") {
        let text = std::fs::read_to_string(&file).expect("input file");
        let input = Input {
            json: file.ends_with(".json"),
            text,
            strategy: "file",
        };
        // Replays a saved finding: the case's generator is advanced past the input's making
        // and the check sampling, exactly as the run did, so deletions and options match.
        let case_seed = env_u64("PALISADE_FUZZ_CASE_SEED").unwrap_or(0);
        let mut case_rng = Rng::new(case_seed);
        let seeds = fuzz_util::corpus::seeds();
        let _ = fuzz_util::generate(&mut case_rng, &seeds);
        let _ = Checks::sample(&mut case_rng);
        let mut stats = Stats::default();
        let r = fuzz_util::run_one(
            &input,
            &fuzz_util::base_model(),
            &mut case_rng,
            Checks::ALL,
            &mut stats,
        );
        r.unwrap_or_else(|e| panic!("{file}: {e}"));
        return;
    }
    let secs = env_u64("PALISADE_FUZZ_SECS").unwrap_or(10);
    let jobs = env_u64("PALISADE_FUZZ_JOBS").unwrap_or(1).max(1) as usize;
    let seed = env_u64("PALISADE_FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "fuzz: {secs} s, {jobs} worker(s), seed {seed} (PALISADE_FUZZ_SEED={seed} reproduces)"
    );
    let began = Instant::now();
    let deadline = began + Duration::from_secs(secs);
    let shared = Shared {
        stop: AtomicBool::new(false),
        current: (0..jobs)
            .map(|_| (AtomicU64::new(0), Mutex::new(None)))
            .collect(),
        finding: Mutex::new(None),
        stats: Mutex::new(Stats::default()),
    };
    let mut hang = None;
    std::thread::scope(|s| {
        for id in 0..jobs {
            let shared = &shared;
            let seed = seed.wrapping_add(id as u64);
            s.spawn(move || worker(id, seed, shared, began, deadline));
        }
        // Watchdog: an input running longer than HANG is a finding (the run stops there).
        while shared
            .current
            .iter()
            .any(|c| c.0.load(Ordering::Relaxed) != u64::MAX)
        {
            std::thread::sleep(Duration::from_millis(200));
            let now = began.elapsed().as_millis() as u64;
            for (started, input) in &shared.current {
                let t = started.load(Ordering::Relaxed);
                if t != u64::MAX && now.saturating_sub(t) > HANG.as_millis() as u64 {
                    if let Some(i) = input.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                        hang = Some(save(&i, "hang"));
                    }
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
            if hang.is_some() {
                // The hung worker cannot be interrupted (nor joined): report and exit.
                eprintln!("fuzz: an input ran longer than {HANG:?}; saved to {hang:?}");
                std::process::exit(101);
            }
        }
    });
    let elapsed = began.elapsed().as_secs_f64();
    let stats = shared
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let finding = shared
        .finding
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let report = serde_json::json!({
        "seconds": elapsed, "seed": seed, "jobs": jobs,
        "crash_free": finding.is_none(),
        "inputs_per_second": stats.iterations as f64 / elapsed.max(1e-9),
        "stats": stats, "finding": finding,
    });
    println!(
        "fuzz: {}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if let Ok(path) = std::env::var("PALISADE_FUZZ_REPORT") {
        std::fs::write(&path, report.to_string()).expect("writing the fuzz report");
    }
    if let Some(f) = finding {
        panic!("fuzz finding after {elapsed:.1} s (seed {seed}): {f}");
    }
}

#[test]
fn fuzz_regressions() {
    fuzz_util::quiet_panics();
    // A regression that hangs again must fail, not hang the test run.
    static DONE: AtomicBool = AtomicBool::new(false);
    std::thread::spawn(|| {
        std::thread::sleep(HANG);
        if !DONE.load(Ordering::Relaxed) {
            eprintln!("fuzz_regressions: still running after {HANG:?}: a hang came back");
            std::process::exit(101);
        }
    });
    let base = fuzz_util::base_model();
    let mut failures = Vec::new();
    for (name, text, json) in fuzz_util::regressions::CASES {
        let input = Input {
            text: (*text).to_owned(),
            json: *json,
            strategy: "regression",
        };
        for seed in 0..8 {
            let mut stats = Stats::default();
            let r = fuzz_util::run_one(&input, &base, &mut Rng::new(seed), Checks::ALL, &mut stats);
            if let Err(e) = r {
                failures.push(format!("{name} (seed {seed}): {e}"));
            }
        }
    }
    DONE.store(true, Ordering::Relaxed);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Found by the fuzzer: deleting a hostNetwork pod (or turning hostNetwork off) left its IP among
/// the node's HOST addresses in an incremental compile (the compiler looked the pod up after
/// the change had removed it), while a full compile dropped it.
#[test]
fn fuzz_found_host_network_pod_removal_is_incremental() {
    use palisade::compiler::CompileOptions;
    use palisade::model::{ModelChange, ObjectKey};
    let base = fuzz_util::base_model();
    let (node, _) = palisade::source::load_str(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus: {addresses: [{address: 192.168.9.9}]}\n",
        Path::new("node.yaml"),
    );
    let mut h = base.pods[&ObjectKey::new("y", "h")].clone();
    h.host_network = false;
    for node_option in [None, Some("node-1".to_owned())] {
        let options = CompileOptions {
            node: node_option,
            allow_node_traffic: true,
        };
        let deleted = [node.clone(), vec![ModelChange::DeletePod(h.key())]].concat();
        fuzz_util::check::incremental(&base, &deleted, &options).expect("pod deleted");
        let unhosted = [node.clone(), vec![ModelChange::UpsertPod(h.clone())]].concat();
        fuzz_util::check::incremental(&base, &unhosted, &options).expect("hostNetwork off");
        let ns_gone = [node.clone(), vec![ModelChange::DeleteNamespace("y".into())]].concat();
        fuzz_util::check::incremental(&base, &ns_gone, &options).expect("namespace deleted");
    }
}

/// Found by the fuzzer: two pods claimed one IP (a terminating pod and the new pod that got its
/// address); the smaller key, a pod on another node, owned it, so the local endpoint's IP had no
/// `endpoint_ips` entry, and deleting the other pod did not give it back incrementally.
#[test]
fn fuzz_found_shared_pod_ip_goes_to_the_local_endpoint() {
    use palisade::compiler::{compile, CompileOptions};
    use palisade::model::{ModelChange, ObjectKey};
    let base = fuzz_util::base_model();
    let (pods, notes) = palisade::source::load_str(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: old, namespace: a}\nspec: {nodeName: node-2}\nstatus: {podIP: \"fd00::3\"}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: new, namespace: z}\nspec: {nodeName: node-1}\nstatus: {podIPs: [{ip: \"fd00::3\"}]}\n",
        Path::new("pods.yaml"),
    );
    assert!(notes.is_empty(), "{notes:?}");
    let options = CompileOptions {
        node: Some("node-1".to_owned()),
        allow_node_traffic: true,
    };
    let mut both = base.clone();
    for c in &pods {
        both.apply(c.clone());
    }
    let out = compile(&both, &options);
    let ip: std::net::IpAddr = "fd00::3".parse().expect("ip");
    assert_eq!(out.endpoint_ips.get(&ip), Some(&ObjectKey::new("z", "new")));
    let changes = [
        pods,
        vec![ModelChange::DeletePod(ObjectKey::new("a", "old"))],
    ]
    .concat();
    fuzz_util::check::incremental(&base, &changes, &options).expect("old pod deleted");
}
