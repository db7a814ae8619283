//! The guest kernel: a Debian `linux-image-*` package fetched with `apt-get download` and
//! unpacked with `dpkg -x` into a cache under `target/vm/` (never installed on the host), with a
//! `modules.dep` made by `busybox depmod` (the .deb ships none).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::cmd;

/// A kernel the VM tier knows how to fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    /// Debian 12's own kernel (6.1 LTS): no tcx, so the legacy clsact attach path is used.
    #[value(name = "debian-6.1")]
    Debian61,
    /// Debian 12's newer LTS kernel (6.12, from bookworm-security/updates): tcx.
    #[value(name = "debian-6.12")]
    Debian612,
}

impl KernelChoice {
    /// The Debian meta package whose dependency names the current image package.
    fn meta_package(self) -> &'static str {
        match self {
            KernelChoice::Debian61 => "linux-image-amd64",
            KernelChoice::Debian612 => "linux-image-6.12-amd64",
        }
    }

    /// The version prefix the image package must have (guards against a meta package that
    /// moved on to another series).
    fn series(self) -> &'static str {
        match self {
            KernelChoice::Debian61 => "6.1.",
            KernelChoice::Debian612 => "6.12.",
        }
    }
}

/// An unpacked kernel, ready to boot.
#[derive(Debug)]
pub struct Kernel {
    /// The image package (`linux-image-6.1.0-56-amd64`) and its version.
    pub package: String,
    pub version: String,
    /// `uname -r` of the guest (the directory under `lib/modules`).
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `<root>/lib/modules/<release>`, with `modules.dep`.
    pub modules: PathBuf,
}

/// Finds (or fetches and unpacks) the kernel `choice` names, under `cache`.
pub fn prepare(choice: KernelChoice, cache: &Path) -> anyhow::Result<Kernel> {
    let package = image_package(choice)?;
    let version = candidate_version(&package)?;
    if !version.starts_with(choice.series()) {
        bail!("{package} is version {version}, not {}x", choice.series());
    }
    let root = cache.join(format!("{package}_{version}"));
    if !root.join(".complete").is_file() {
        fetch(&package, &root)?;
    }
    locate(&root, package, version)
}

/// The image package the meta package currently depends on.
fn image_package(choice: KernelChoice) -> anyhow::Result<String> {
    let meta = choice.meta_package();
    let out = cmd::output(Command::new("apt-cache").args(["depends", meta]))
        .with_context(|| format!("apt-cache depends {meta} (is apt's package list current?)"))?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_owned)
        .with_context(|| format!("{meta} depends on no linux-image-*-amd64 package:\n{out}"))
}

fn candidate_version(package: &str) -> anyhow::Result<String> {
    let out = cmd::output(Command::new("apt-cache").args(["policy", package]))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(str::to_owned)
        .with_context(|| format!("apt has no candidate version of {package}"))
}

/// `apt-get download` into a scratch directory, `dpkg -x` into `root`, `busybox depmod`.
fn fetch(package: &str, root: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(root);
    let download = PathBuf::from(format!("{}.download", root.display()));
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    println!("vm-test: apt-get download {package}");
    // apt drops to the `_apt` user for downloads; let it write here.
    let _ = Command::new("chmod").arg("777").arg(&download).status();
    cmd::run(
        Command::new("apt-get")
            .args(["download", "-qq", package])
            .current_dir(&download),
    )?;
    let deb = std::fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    println!("vm-test: dpkg -x {} (not installed)", deb.display());
    cmd::run(Command::new("dpkg").arg("-x").arg(&deb).arg(root))?;
    std::fs::remove_dir_all(&download)?;
    let release = release_of(root)?;
    cmd::run(
        Command::new("busybox")
            .args(["depmod", "-b"])
            .arg(root)
            .arg(&release),
    )
    .context("busybox depmod (Debian busybox-static; run cargo xtask setup)")?;
    std::fs::write(root.join(".complete"), format!("{package}\n"))?;
    Ok(())
}

fn release_of(root: &Path) -> anyhow::Result<String> {
    let dir = root.join("lib/modules");
    let mut releases: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    releases.sort();
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {releases:?}",
            dir.display()
        ),
    }
}

fn locate(root: &Path, package: String, version: String) -> anyhow::Result<Kernel> {
    let release = release_of(root)?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    let modules = root.join("lib/modules").join(&release);
    if !vmlinuz.is_file() || !modules.join("modules.dep").is_file() {
        bail!(
            "{} is incomplete (no vmlinuz or modules.dep): remove it and retry",
            root.display()
        );
    }
    Ok(Kernel {
        package,
        version,
        release,
        vmlinuz,
        modules,
    })
}
