//! What runs inside the guest: `/init` (busybox sh, in the initramfs) mounts the host's `/`
//! read-only over 9p, loads modules from the shared kernel tree, mounts fresh `proc`, `sys`,
//! `dev`, `tmp`, `run` and bpffs over the shared tree, mounts the results directory writable,
//! and runs the step script chrooted into the host's `/`, so the host-built test binaries run
//! unchanged (same paths, same shared libraries). Then it powers the VM off.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Modules loaded before the steps run. Most would be auto-loaded on first use (the kernel
/// calls the initramfs's busybox `modprobe` with the shared modules tree), but sctp needs
/// crc32c first (busybox ignores the soft dependency) and loading them up front shows any
/// problem at once.
pub const PRELOAD: &[&str] = &[
    // SCTP's checksum: the SSE 4.2 implementation where the CPU has it (TCG's `-cpu max`
    // does), much cheaper to emulate than the table-driven generic one.
    "crc32c_intel",
    "crc32c_generic",
    "sctp",
    "veth",
    "bridge",
    "br_netfilter",
    "sch_ingress",
    "cls_bpf",
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "xt_sctp",
];

/// The 9p mount options; the host's tree is read-only and does not change during a run, so
/// the guest may cache it.
const P9: &str = "trans=virtio,version=9p2000.L,msize=262144";

/// Mount tags of the two shares.
pub const HOST_TAG: &str = "host";
pub const RESULTS_TAG: &str = "results";

/// The `/init` script. `modules`, `results` and the (snapshot, original) pairs of `binds` are
/// host paths; `steps` is the step script.
pub fn init_script(
    release: &str,
    modules: &Path,
    results: &Path,
    steps: &Path,
    binds: &[(PathBuf, PathBuf)],
) -> String {
    let modules = modules.display();
    let results = results.display();
    let steps = steps.display();
    let preload = PRELOAD.join(" ");
    let mut bind = String::new();
    for (snap, original) in binds {
        let _ = writeln!(
            bind,
            "mount --bind /host{} /host{} || fail \"binding the snapshot of {}\"",
            snap.display(),
            original.display(),
            original.display()
        );
    }
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mkdir -p /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
say() {{ echo "vm-guest: $*"; }}
fail() {{ say "SETUP FAILED: $*"; poweroff -f; sleep 5; }}
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_pci 9pnet_virtio 9p; do modprobe $m || fail "modprobe $m"; done
mount -t 9p -o {P9},ro,cache=loose {HOST_TAG} /host || fail "mounting the host's / over 9p"
mount --bind /host{modules} /lib/modules/{release} || fail "binding the kernel's modules"
for m in {preload}; do modprobe $m || say "cannot load module $m"; done
mount -t proc proc /host/proc && mount -t sysfs sys /host/sys && mount -t devtmpfs dev /host/dev \
  && mount -t tmpfs -o mode=1777 tmp /host/tmp && mount -t tmpfs -o mode=755 run /host/run \
  && mount -t bpf bpf /host/sys/fs/bpf || fail "mounting proc, sys, dev, tmp, run, bpffs"
mount -t 9p -o {P9} {RESULTS_TAG} /host{results} || fail "mounting the results directory"
{bind}ip link set lo up
ulimit -l unlimited
say "kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime) s; running the steps"
chroot /host /bin/bash {steps}
echo $? > /host{results}/exit-status
say "steps done, up $(cut -d' ' -f1 /proc/uptime) s"
umount /host{results}
sync
poweroff -f
"#
    )
}

/// One command the guest runs, with its own time limit.
#[derive(Clone, Debug)]
pub struct Step {
    /// A file-name-safe name: its output goes to `<results>/<name>.log`.
    pub name: String,
    pub argv: Vec<String>,
    pub limit_secs: u64,
}

/// The step script (bash, run chrooted into the host's `/`). Each step's exit status and
/// duration (ms) go to `<results>/steps.tsv`; its output to the console and `<results>/<name>.log`.
pub fn steps_script(
    workspace: &Path,
    results: &Path,
    env: &[(String, String)],
    steps: &[Step],
) -> String {
    let mut s = String::from(
        "#!/bin/bash\nset -u\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
         NO_COLOR=1 RUST_BACKTRACE=1 TERM=dumb\n",
    );
    for (k, v) in env {
        let _ = writeln!(s, "export {k}={}", quote(v));
    }
    let _ = writeln!(
        s,
        "R={}\ncd {} || exit 125",
        quote(&results.display().to_string()),
        quote(&workspace.display().to_string())
    );
    s.push_str(
        r#"step() {
  local name=$1 limit=$2; shift 2
  local start=$(date +%s%N)
  echo "vm-guest: === step $name: $*"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$R/$name.log"
  local rc=${PIPESTATUS[0]}
  local ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%s\t%s\t%s\n' "$name" "$rc" "$ms" >> "$R/steps.tsv"
  echo "vm-guest: === step $name: exit $rc after $((ms / 1000)) s"
}
"#,
    );
    for step in steps {
        let argv: Vec<String> = step.argv.iter().map(|a| quote(a)).collect();
        let _ = writeln!(
            s,
            "step {} {} {}",
            quote(&step.name),
            step.limit_secs,
            argv.join(" ")
        );
    }
    s.push_str("exit 0\n");
    s
}

/// Single-quotes `s` for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_quoted_and_recorded() {
        let steps = [Step {
            name: "t1".into(),
            argv: vec!["/bin/echo".into(), "it's".into()],
            limit_secs: 60,
        }];
        let s = steps_script(
            Path::new("/w"),
            Path::new("/r"),
            &[("CI".into(), "true".into())],
            &steps,
        );
        assert!(s.contains("step 't1' 60 '/bin/echo' 'it'\\''s'\n"), "{s}");
        assert!(s.contains("export CI='true'\n"));
        assert!(s.contains("R='/r'\ncd '/w'"));
    }
}
