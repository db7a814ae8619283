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
    let results = new_results_dir(&vm_dir, &kernel.release)?;
    let corpus = suite::corpus(&root)?;
    let steps = suite::steps(args.suite, &built, &corpus, &results);
    write_guest_files(&kernel, &root, &results, &steps)?;
    let accel = if args.no_kvm {
        qemu::Accel::Tcg {
            why_not_kvm: "--no-kvm was given".to_owned(),
        }
    } else {
        qemu::choose_accel(&kernel.vmlinuz, &results.join("kvm-probe.cpio"))
    };
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
        println!(
            "vm-test: {}: {} privileged test(s)",
            t.name,
            t.privileged.len()
        );
    }
    println!(
        "vm-test: {} step(s); results in {}",
        steps.len(),
        results.display()
    );
    let boot = qemu::Boot {
        vmlinuz: &kernel.vmlinuz,
        initramfs: &results.join("initramfs.cpio"),
        memory_mib: args.memory_mib,
        cpus: args.cpus,
        shares: vec![
            (PathBuf::from("/"), guest::HOST_TAG, true),
            (results.clone(), guest::RESULTS_TAG, false),
        ],
    };
    let vm_started = Instant::now();
    let limit = Duration::from_secs(args.time_limit_min * 60);
    let ended = qemu::run(&boot, &accel, limit, &mut |line| println!("{line}"))?;
    let outcome = suite::Outcome::read(&results, &steps, args.suite);
    outcome.print(
        &ended,
        &accel,
        &kernel.release,
        vm_started.elapsed(),
        started.elapsed(),
    );
    if !outcome.ok() {
        bail!("vm-test failed (logs in {})", results.display());
    }
    Ok(())
}

/// `target/vm/runs/<release>-<unix seconds>`, kept after the run for its logs.
fn new_results_dir(vm_dir: &Path, release: &str) -> anyhow::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = vm_dir.join("runs").join(format!("{release}-{secs}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn write_guest_files(
    kernel: &kernel::Kernel,
    root: &Path,
    results: &Path,
    steps: &[guest::Step],
) -> anyhow::Result<()> {
    let mut env = Vec::new();
    if let Ok(ci) = std::env::var("CI") {
        env.push(("CI".to_owned(), ci));
    }
    std::fs::write(
        results.join("steps.sh"),
        guest::steps_script(root, results, &env, steps),
    )?;
    let init = guest::init_script(&kernel.release, &kernel.modules, results);
    initramfs::build(kernel, &init, &results.join("initramfs.cpio"))?;
    initramfs::build(kernel, &qemu::probe_init(), &results.join("kvm-probe.cpio"))
}
