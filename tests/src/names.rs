//! Unique names for everything a run creates, and removal of what dead runs left behind.
//!
//! Every namespace is named `pal-<pid>-<counter>-<what>`: the PID says which process owns it
//! (so stale ones can be told apart from live ones of a parallel test), the counter keeps
//! clusters of one process apart. Interfaces are only ever created inside these namespaces,
//! so their names (`ul0`, `cni0`, the plugins' `veth…`) need not be unique.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns;

/// The prefix of everything the harness names.
pub const PREFIX: &str = "pal-";

/// Where per-run state (host-local IPAM data) lives.
pub const STATE_DIR: &str = "/run/palisade-tests";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The identity of one cluster: `pal-<pid>-<counter>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunId {
    pid: u32,
    counter: u32,
}

impl RunId {
    /// A name no other cluster of any live process uses.
    pub fn fresh() -> Self {
        RunId {
            pid: std::process::id(),
            counter: COUNTER.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// `pal-<pid>-<counter>`.
    pub fn prefix(&self) -> String {
        format!("{PREFIX}{}-{}", self.pid, self.counter)
    }

    /// `pal-<pid>-<counter>-<suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix())
    }

    /// This run's state directory.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_DIR).join(self.prefix())
    }
}

/// The owning PID of a harness name, if `name` is one.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    Some(pid)
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn is_stale(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| !pid_alive(pid))
}

/// Removes namespaces and state directories with the harness prefix whose owning process is
/// dead (a run that was killed before its guards ran). Returns what was removed.
pub fn cleanup_stale() -> Vec<String> {
    let mut removed = Vec::new();
    // Pods first: their host veths live in node namespaces and go with them either way.
    let mut stale: Vec<String> = netns::list().into_iter().filter(|n| is_stale(n)).collect();
    stale.sort_by_key(|n| !n.contains("-p"));
    for name in stale {
        match netns::delete(&name) {
            Ok(()) => removed.push(name),
            Err(e) => eprintln!("palisade-tests: cleanup: {e}"),
        }
    }
    let Ok(dir) = std::fs::read_dir(STATE_DIR) else {
        return removed;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_stale(&name) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path().display().to_string());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_harness_names() {
        assert_eq!(owner_pid("pal-123-4-n0"), Some(123));
        assert_eq!(owner_pid("pal-123-4"), Some(123));
        assert_eq!(owner_pid("pal-x-4-n0"), None);
        assert_eq!(owner_pid("pal-123-n0"), None);
        assert_eq!(owner_pid("cni-1234"), None);
    }

    #[test]
    fn fresh_ids_differ_and_own_pid_is_alive() {
        let (a, b) = (RunId::fresh(), RunId::fresh());
        assert_ne!(a.prefix(), b.prefix());
        assert!(!is_stale(&a.name("n0")));
        assert!(a
            .name("n0")
            .starts_with(&format!("pal-{}-", std::process::id())));
    }
}
