//! `cargo xtask setup`: installs what the build and tests need, idempotently.
//!
//! - Debian packages (network tools, the reference CNI plugins, LLVM for bpf-linker);
//! - `rust-src` for the preinstalled nightly (needed by `-Z build-std=core`);
//! - bpf-linker 0.13.0 built against an LLVM whose major version equals the nightly's.
//!
//! It never installs or updates a Rust toolchain: a newer nightly would change LLVM under
//! bpf-linker (see ../shared/TOOLCHAIN.md).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::cmd;

/// Debian packages the build and the tests use.
const PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "nftables",
    "ipset",
    "conntrack",
    "containernetworking-plugins",
    "iperf3",
    "socat",
    "bpftool",
    "tcpdump",
    "util-linux",
    // The VM tier (`cargo xtask vm-test`): qemu, and a static busybox for the guest's initramfs.
    "qemu-system-x86",
    "busybox-static",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every step; returns how many changed something.
pub fn run() -> anyhow::Result<usize> {
    let mut changed = 0;
    let major = nightly_llvm_major()?;
    let mut packages: Vec<String> = PACKAGES.iter().map(|p| (*p).to_owned()).collect();
    let llvm_dev = format!("llvm-{major}-dev");
    if apt_available(&llvm_dev) {
        packages.push(llvm_dev);
    }
    changed += apt_install(&packages)?;
    changed += rust_src()?;
    changed += bpf_linker(major)?;
    if changed == 0 {
        println!("setup: nothing to do (packages, rust-src and bpf-linker {BPF_LINKER_VERSION} for LLVM {major} present)");
    } else {
        println!("setup: done ({changed} step(s) installed something)");
    }
    Ok(changed)
}

/// The LLVM major version of the preinstalled nightly (`rustc +nightly -vV`).
fn nightly_llvm_major() -> anyhow::Result<u32> {
    let out = cmd::output(Command::new("rustc").args(["+nightly", "-vV"]))
        .context("the preinstalled nightly toolchain is required (see ../shared/TOOLCHAIN.md)")?;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc +nightly -vV printed no LLVM version")?;
    let major = line.split('.').next().unwrap_or_default();
    major
        .parse()
        .with_context(|| format!("unexpected LLVM version {line:?}"))
}

fn installed(pkg: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

fn apt_available(pkg: &str) -> bool {
    if installed(pkg) {
        return true;
    }
    cmd::output(Command::new("apt-cache").args(["policy", pkg]))
        .is_ok_and(|s| s.contains("Candidate:") && !s.contains("Candidate: (none)"))
        || {
            apt_update().is_ok()
                && cmd::output(Command::new("apt-cache").args(["policy", pkg]))
                    .is_ok_and(|s| s.contains("Candidate:") && !s.contains("Candidate: (none)"))
        }
}

fn apt_update() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    println!("setup: apt-get update");
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    let _ = DONE.set(());
    Ok(())
}

pub(crate) fn apt_install(packages: &[String]) -> anyhow::Result<usize> {
    let missing: Vec<&String> = packages.iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(0);
    }
    if !cmd::is_root() {
        bail!("setup: missing Debian packages {missing:?}; run as root to install them");
    }
    apt_update()?;
    println!("setup: apt-get install {missing:?}");
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(1)
}

fn rust_src() -> anyhow::Result<usize> {
    let list = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if list.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(0);
    }
    println!("setup: rustup component add rust-src --toolchain nightly");
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    Ok(1)
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

/// A stamp beside the binary records which LLVM it was built against.
fn bpf_linker(major: u32) -> anyhow::Result<usize> {
    let bin = cargo_home().join("bin").join("bpf-linker");
    let stamp = cargo_home().join("bin").join(".bpf-linker.palisade-stamp");
    let want = format!("{BPF_LINKER_VERSION} llvm-{major}\n");
    let version_ok = cmd::output(Command::new(&bin).arg("--version"))
        .is_ok_and(|v| v.contains(BPF_LINKER_VERSION));
    let stamp_ok = std::fs::read_to_string(&stamp).is_ok_and(|s| s == want);
    if version_ok && stamp_ok {
        return Ok(0);
    }
    let debian_llvm = PathBuf::from(format!("/usr/lib/llvm-{major}"));
    let mut install = Command::new("cargo");
    install.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--force",
    ]);
    install.args([
        "--no-default-features",
        "--features",
        &format!("llvm-{major}"),
    ]);
    if debian_llvm.join("bin/llvm-config").exists() {
        let path = std::env::var("PATH").unwrap_or_default();
        install.env(
            "PATH",
            format!("{}:{path}", debian_llvm.join("bin").display()),
        );
        println!("setup: building bpf-linker {BPF_LINKER_VERSION} against Debian's LLVM {major}");
    } else {
        let prefix = nightly_llvm_prefix(major)?;
        install.env("LLVM_PREFIX", &prefix);
        println!(
            "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's libLLVM {major}"
        );
    }
    cmd::run(&mut install)?;
    std::fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(1)
}

/// A directory `P/lib` with links to the nightly sysroot's own libLLVM, for `LLVM_PREFIX=P`.
fn nightly_llvm_prefix(major: u32) -> anyhow::Result<PathBuf> {
    let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let so = std::fs::read_dir(&lib)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("libLLVM.so.{major}"))
                    || n.starts_with(&format!("libLLVM-{major}"))
            })
        })
        .with_context(|| {
            format!(
                "no LLVM {major} found: neither Debian's llvm-{major}-dev nor a libLLVM in {}",
                lib.display()
            )
        })?;
    let prefix = std::env::temp_dir().join(format!("palisade-llvm-{major}"));
    let dir = prefix.join("lib");
    std::fs::create_dir_all(&dir)?;
    for name in [
        "libLLVM.so".into(),
        so.file_name().map(|n| n.to_os_string()).unwrap_or_default(),
    ] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&so, &link)?;
    }
    Ok(prefix)
}
