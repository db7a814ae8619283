//! Named network namespaces (`ip netns` style, under /var/run/netns) and running code in them.
//!
//! Code runs in a namespace by `setns(2)` on a fresh thread, and commands by `setns(2)` in the
//! child between fork and exec. Unlike `ip netns exec` this leaves the mount namespace alone, so
//! a process started this way (the agent) still sees the host's bpffs and /sys/fs/bpf pins.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::exec::{self, ExecError};

/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Failure to create, enter or delete a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot create network namespace {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: ExecError,
    },
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setns into {name} failed: {source}")]
    Enter {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread running code in {name} panicked")]
    Panicked { name: String },
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` (`ip netns add`). The name must not exist yet.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        exec::run(Command::new("ip").args(["netns", "add", name])).map_err(|source| {
            NetnsError::Create {
                name: name.to_owned(),
                source,
            }
        })?;
        let ns = Netns {
            name: name.to_owned(),
        };
        // A fresh namespace has lo down; every real node and pod has it up.
        exec::run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"])).map_err(
            |source| NetnsError::Create {
                name: name.to_owned(),
                source,
            },
        )?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`: what CNI_NETNS and setns want.
    pub fn path(&self) -> PathBuf {
        path_of(&self.name)
    }

    /// A command that will run inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command, NetnsError> {
        command_in(&self.name, program)
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its result.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T, NetnsError> {
        run_in(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = delete(&self.name) {
            eprintln!("palisade-tests: {e}");
        }
    }
}

/// The bind-mount path of a named namespace.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Deletes a named namespace (`ip netns del`).
pub fn delete(name: &str) -> Result<(), ExecError> {
    exec::run(Command::new("ip").args(["netns", "del", name])).map(drop)
}

/// The names of all named namespaces.
pub fn list() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

fn open(name: &str) -> Result<OwnedFd, NetnsError> {
    let path = path_of(name);
    File::open(&path)
        .map(OwnedFd::from)
        .map_err(|source| NetnsError::Open { path, source })
}

fn setns(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `fd` keeps open.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A command whose process enters namespace `name` before exec.
pub fn command_in(name: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command, NetnsError> {
    let fd = open(name)?;
    let mut cmd = Command::new(program);
    // SAFETY: the closure runs between fork and exec and makes one async-signal-safe syscall;
    // the descriptor is CLOEXEC, so it does not leak into the program.
    unsafe {
        cmd.pre_exec(move || setns(&fd));
    }
    Ok(cmd)
}

/// Runs `f` on a scoped thread that has entered namespace `name`. The thread ends with `f`, so
/// no other code ever runs in the wrong namespace.
pub fn run_in<T: Send, F: FnOnce() -> T + Send>(name: &str, f: F) -> Result<T, NetnsError> {
    let fd = open(name)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&fd).map_err(|source| NetnsError::Enter {
                name: name.to_owned(),
                source,
            })?;
            Ok(f())
        })
        .join()
        .map_err(|_| NetnsError::Panicked {
            name: name.to_owned(),
        })?
    })
}

/// The ifindex of interface `ifname` inside namespace `ns` (0 if there is none).
pub fn ifindex(ns: &str, ifname: &str) -> Result<u32, NetnsError> {
    let cname = std::ffi::CString::new(ifname).unwrap_or_default();
    // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
    run_in(ns, || unsafe { libc::if_nametoindex(cname.as_ptr()) })
}
