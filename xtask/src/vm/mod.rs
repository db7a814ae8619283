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
    let started = Instant::now();
    setup::run()?;
    qemu::check_installed()?;
    let root = cmd::workspace_root();
    let vm_dir = root.join("target/vm");
    let kernel = kernel::prepare(args.kernel, &vm_dir.join("kernels"))?;
    let built = artefacts::build(&root)?;
    let run = RunDir::new(&vm_dir, &kernel.release)?;
    let corpus = suite::corpus(&root)?;
    let steps = suite::steps(args.suite, &built, &corpus, &run.results);
    let binds = built.snapshot(&run.dir.join("bin"))?;
    write_guest_files(&kernel, &root, &run, &steps, &binds)?;
    let accel = if args.no_kvm {
        qemu::Accel::Tcg {
            why_not_kvm: "--no-kvm was given".to_owned(),
        }
    } else {
        qemu::choose_accel(&kernel.vmlinuz, &run.dir.join("kvm-probe.cpio"))
    };
    print_plan(args, &kernel, &accel, &built, &steps, &run);
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
    let outcome = suite::Outcome::read(&run.results, &steps);
    let times = (vm_started.elapsed(), started.elapsed());
    outcome.print(&ended, &accel, &kernel.release, times.0, times.1);
    if !outcome.ok() {
        bail!("vm-test failed (logs in {})", run.results.display());
    }
    Ok(())
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
) -> anyhow::Result<()> {
    let mut env = Vec::new();
    if let Ok(ci) = std::env::var("CI") {
        env.push(("CI".to_owned(), ci));
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
    initramfs::build(kernel, &init, &run.dir.join("initramfs.cpio"))?;
    initramfs::build(kernel, &qemu::probe_init(), &run.dir.join("kvm-probe.cpio"))
}
