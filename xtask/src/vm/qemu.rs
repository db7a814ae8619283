//! Booting the guest with `qemu-system-x86_64`: KVM when `/dev/kvm` really boots this kernel
//! (checked with a tiny probe VM each run), software emulation (TCG) otherwise. The guest has
//! no network device (`-nic none`); its console is qemu's stdio, streamed to ours line by line.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

const QEMU: &str = "qemu-system-x86_64";

/// How long the KVM probe VM may take to print its marker (it needs about a second when KVM
/// works; where it does not, qemu aborts at once or the guest hangs).
const KVM_PROBE_LIMIT: Duration = Duration::from_secs(20);
const KVM_PROBE_MARKER: &str = "palisade-vm-kvm-probe-ok";

/// How the guest's CPU is provided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// Software emulation, and why KVM was not used.
    Tcg {
        why_not_kvm: String,
    },
}

impl Accel {
    fn args(&self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg { .. } => ["-accel", "tcg", "-cpu", "max"],
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Accel::Kvm => "KVM (hardware virtualization)".to_owned(),
            Accel::Tcg { why_not_kvm } => {
                format!("TCG software emulation, KVM NOT used: {why_not_kvm}")
            }
        }
    }
}

/// What to boot.
#[derive(Debug)]
pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub memory_mib: u32,
    pub cpus: u32,
    /// 9p shares: (host directory, mount tag, read-only).
    pub shares: Vec<(PathBuf, &'static str, bool)>,
}

impl Boot<'_> {
    fn command(&self, accel: &Accel) -> Command {
        let mut cmd = Command::new(QEMU);
        cmd.args(accel.args())
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args([
                "-chardev",
                "stdio,id=con,signal=off",
                "-serial",
                "chardev:con",
            ])
            .args(["-nic", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-initrd")
            .arg(self.initramfs)
            // A busy host starves the vCPU threads now and then: RCU stall reports would only
            // clutter the console.
            .args([
                "-append",
                "console=ttyS0 quiet loglevel=4 panic=-1 rcupdate.rcu_cpu_stall_suppress=1",
            ]);
        for (dir, tag, ro) in &self.shares {
            let ro = if *ro { ",readonly=on" } else { "" };
            cmd.arg("-virtfs").arg(format!(
                "local,path={},mount_tag={tag},security_model=none,multidevs=remap{ro}",
                dir.display()
            ));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// Decides KVM or TCG: KVM only if `/dev/kvm` opens and a probe VM boots this kernel with it.
pub fn choose_accel(vmlinuz: &Path, probe_initramfs: &Path) -> Accel {
    let tcg = |why: String| Accel::Tcg { why_not_kvm: why };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return tcg(format!("/dev/kvm cannot be opened ({e})"));
    }
    let boot = Boot {
        vmlinuz,
        initramfs: probe_initramfs,
        memory_mib: 256,
        cpus: 1,
        shares: Vec::new(),
    };
    let mut console = Vec::new();
    match run(&boot, &Accel::Kvm, KVM_PROBE_LIMIT, &mut |l| {
        console.push(l.to_owned())
    }) {
        Ok(_) if console.iter().any(|l| l.contains(KVM_PROBE_MARKER)) => Accel::Kvm,
        Ok(outcome) => {
            let last = console.iter().rev().find(|l| !l.trim().is_empty());
            tcg(format!(
                "/dev/kvm exists but a probe VM with this kernel did not boot ({outcome}; {})",
                last.map_or("no output".to_owned(), |l| format!(
                    "last line: {}",
                    l.trim()
                ))
            ))
        }
        Err(e) => tcg(format!("the KVM probe VM failed to start: {e:#}")),
    }
}

/// `/init` of the KVM probe VM.
pub fn probe_init() -> String {
    format!("#!/bin/busybox sh\n/bin/busybox echo {KVM_PROBE_MARKER}\n/bin/busybox poweroff -f\n")
}

/// How a VM run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(Option<i32>),
    /// Killed by us after the time limit.
    TimedOut,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(Some(c)) => write!(f, "qemu exited with status {c}"),
            Ended::Exited(None) => write!(f, "qemu was killed by a signal"),
            Ended::TimedOut => write!(f, "time limit reached, qemu killed"),
        }
    }
}

/// Boots, hands every console line (qemu's stdout and stderr) to `on_line`, and waits for
/// qemu to exit or `limit` to pass (then kills our qemu, by its PID).
pub fn run(
    boot: &Boot<'_>,
    accel: &Accel,
    limit: Duration,
    on_line: &mut dyn FnMut(&str),
) -> anyhow::Result<Ended> {
    let mut child = boot.command(accel).spawn().with_context(|| {
        format!("starting {QEMU} (Debian qemu-system-x86; run cargo xtask setup)")
    })?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers = [
        forward(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            tx.clone(),
        ),
        forward(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            tx,
        ),
    ];
    let deadline = Instant::now() + limit;
    let ended = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => on_line(&line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break wait(&mut child)?,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= deadline {
            kill(&mut child);
            break Ended::TimedOut;
        }
    };
    for r in readers.into_iter().flatten() {
        let _ = r.join();
    }
    while let Ok(line) = rx.try_recv() {
        on_line(&line);
    }
    Ok(ended)
}

fn forward(
    src: Option<Box<dyn std::io::Read + Send>>,
    tx: mpsc::Sender<String>,
) -> Option<std::thread::JoinHandle<()>> {
    let src = src?;
    Some(std::thread::spawn(move || {
        let mut reader = BufReader::new(src);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            // The serial console sends CR LF and the firmware some escape sequences.
            let line = String::from_utf8_lossy(&buf).replace('\r', "");
            if tx.send(line.trim_end_matches('\n').to_owned()).is_err() {
                break;
            }
            buf.clear();
        }
    }))
}

fn wait(child: &mut Child) -> anyhow::Result<Ended> {
    Ok(Ended::Exited(child.wait()?.code()))
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::io::stdout().flush();
}

/// Fails early with a clear message when qemu is missing.
pub fn check_installed() -> anyhow::Result<()> {
    match Command::new(QEMU).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!("{QEMU} not found: run cargo xtask setup (Debian qemu-system-x86)"),
    }
}
