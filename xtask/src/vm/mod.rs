//! `cargo xtask vm-test`: the privileged tests and the conformance corpus on another kernel,
//! in a qemu VM. See docs/vm-tier.md.
//!
//! 1. fetch the guest kernel with `apt-get download` and unpack it (`kernel`);
//! 2. build the test executables and binaries on the host (`artefacts`);
//! 3. write a busybox initramfs (`initramfs`) whose `/init` mounts the host's `/` read-only
//!    over 9p and runs the steps chrooted into it (`guest`);
//! 4. boot it with KVM if that works here, TCG otherwise (`qemu`), streaming the console;
//! 5. read the results directory the guest wrote into (`report`) and summarize.

mod artefacts;
mod guest;
mod initramfs;
mod kernel;
mod qemu;
mod report;
mod suite;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::{cmd, setup};
pub use kernel::KernelChoice;
pub use suite::Suite;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The guest kernel (a Debian package, fetched with apt-get download, never installed).
    #[arg(long, value_enum, default_value = "debian-6.1")]
    kernel: KernelChoice,
    /// `full`: every privileged test and the whole upstream corpus; `quick`: the packet
    /// tests, one enforcement test and the three SCTP cases (what CI runs).
    #[arg(long, value_enum, default_value = "full")]
    suite: Suite,
    /// Use software emulation even where KVM works.
    #[arg(long)]
    no_kvm: bool,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 3072)]
    memory_mib: u32,
    /// Stop the VM after this many minutes (the run then fails).
    #[arg(long, default_value_t = 150)]
    time_limit_min: u64,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let (ok, results) = run_suite(args)?;
    if !ok {
        bail!("vm-test failed (logs in {})", results.display());
    }
    Ok(())
}

/// The `cargo xtask test` step (root): the quick suite on Debian's 6.1 kernel. Whether it
/// passed; an error only when it could not run at all.
pub fn quick() -> anyhow::Result<bool> {
    let args = Args {
        kernel: KernelChoice::Debian61,
        suite: Suite::Quick,
        no_kvm: false,
        cpus: 2,
        memory_mib: 3072,
        time_limit_min: 40,
    };
    run_suite(&args).map(|(ok, _)| ok)
}

/// Builds, boots, runs `args.suite` and prints the summary. Whether everything passed, and
/// the results directory.
fn run_suite(args: &Args) -> anyhow::Result<(bool, PathBuf)> {
    let started = Instant::now();
    setup::run()?;
    qemu::check_installed()?;
    let root = cmd::workspace_root();
    let vm_dir = root.join("target/vm");
    let kernel = kernel::prepare(args.kernel, &vm_dir.join("kernels"))?;
    let built = artefacts::build(&root)?;
    if args.suite == Suite::Full {
        // The kube_* tests start real API servers from these (built once, cached).
        crate::k8s::prepare_tests();
    }
    let run = RunDir::new(&vm_dir, &kernel.release)?;
    let corpus = suite::corpus(&root)?;
    let accel = choose_accel(args, &kernel, &run)?;
    let tcg = matches!(accel, qemu::Accel::Tcg { .. });
    let plan = suite::plan(args.suite, &built, &corpus, &run.results, tcg);
    let steps = &plan.steps;
    let binds = built.snapshot(&run.dir.join("bin"))?;
    write_guest_files(&kernel, &root, &run, steps, &binds, tcg)?;
    print_plan(args, &kernel, &accel, &built, steps, &run);
    let boot = qemu::Boot {
        vmlinuz: &kernel.vmlinuz,
        initramfs: &run.dir.join("initramfs.cpio"),
        memory_mib: args.memory_mib,
        cpus: args.cpus,
        shares: vec![
            (PathBuf::from("/"), guest::HOST_TAG, true),
            (run.results.clone(), guest::RESULTS_TAG, false),
        ],
    };
    let vm_started = Instant::now();
    let limit = Duration::from_secs(args.time_limit_min * 60);
    let ended = qemu::run(&boot, &accel, limit, &mut |line| println!("{line}"))?;
    let outcome = suite::Outcome::read(&run.results, &plan);
    let times = (vm_started.elapsed(), started.elapsed());
    outcome.print(&ended, &accel, &kernel.release, times.0, times.1);
    Ok((outcome.ok(), run.results))
}

fn print_plan(
    args: &Args,
    kernel: &kernel::Kernel,
    accel: &qemu::Accel,
    built: &artefacts::Artefacts,
    steps: &[guest::Step],
    run: &RunDir,
) {
    println!(
        "vm-test: kernel {} ({} {}), {} CPUs, {} MiB, {}",
        kernel.release,
        kernel.package,
        kernel.version,
        args.cpus,
        args.memory_mib,
        accel.describe()
    );
    for t in &built.tests {
        let n = t.privileged.len();
        println!("vm-test: {}: {n} privileged test(s)", t.name);
    }
    let (n, dir) = (steps.len(), run.results.display());
    println!(
        "vm-test: {n} step(s) ({:?} suite); results in {dir}",
        args.suite
    );
}

/// Runs kept under `target/vm/runs` (older ones are removed when a run starts).
const KEEP_RUNS: usize = 3;

/// `target/vm/runs/<release>-<unix seconds>`: the initramfs, the step script, the binaries'
/// snapshot (`bin/`) and what the guest writes (`results/`, the only writable share).
struct RunDir {
    dir: PathBuf,
    results: PathBuf,
}

impl RunDir {
    fn new(vm_dir: &Path, release: &str) -> anyhow::Result<Self> {
        let runs = vm_dir.join("runs");
        prune(&runs);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let dir = runs.join(format!("{release}-{secs}"));
        let results = dir.join("results");
        std::fs::create_dir_all(&results)
            .with_context(|| format!("creating {}", results.display()))?;
        Ok(RunDir { dir, results })
    }
}

/// Removes all but the newest `KEEP_RUNS - 1` runs (the new one makes `KEEP_RUNS`).
fn prune(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    dirs.sort();
    let excess = dirs.len().saturating_sub(KEEP_RUNS - 1);
    for (_, dir) in dirs.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn write_guest_files(
    kernel: &kernel::Kernel,
    root: &Path,
    run: &RunDir,
    steps: &[guest::Step],
    binds: &[(PathBuf, PathBuf)],
    tcg: bool,
) -> anyhow::Result<()> {
    let mut env = Vec::new();
    if tcg {
        let ms = suite::TCG_PROBE_TIMEOUT_MS.to_string();
        env.push(("PALISADE_PROBE_TIMEOUT_MS".to_owned(), ms));
    }
    for key in ["CI", palisade_tests::kube::BIN_ENV] {
        if let Ok(value) = std::env::var(key) {
            env.push((key.to_owned(), value));
        }
    }
    let script = run.dir.join("steps.sh");
    std::fs::write(
        &script,
        guest::steps_script(root, &run.results, &env, steps),
    )?;
    let init = guest::init_script(
        &kernel.release,
        &kernel.modules,
        &run.results,
        &script,
        binds,
    );
    initramfs::build(kernel, &init, &run.dir.join("initramfs.cpio"))
}

/// KVM if a probe VM boots with it (unless `--no-kvm`), TCG otherwise.
fn choose_accel(args: &Args, kernel: &kernel::Kernel, run: &RunDir) -> anyhow::Result<qemu::Accel> {
    if args.no_kvm {
        return Ok(qemu::Accel::Tcg {
            why_not_kvm: "--no-kvm was given".to_owned(),
        });
    }
    let probe = run.dir.join("kvm-probe.cpio");
    initramfs::build(kernel, &qemu::probe_init(), &probe)?;
    Ok(qemu::choose_accel(&kernel.vmlinuz, &probe))
}
