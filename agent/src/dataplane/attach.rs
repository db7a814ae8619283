//! Attaching the programs to interfaces: tcx where the kernel has it (links pinned for adoption
//! across restarts), legacy clsact otherwise.

use std::path::PathBuf;

use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{self, SchedClassifierLink},
    TcAttachType,
};

use super::{Dataplane, DataplaneError};

/// Where a program sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// tc ingress of a pod's host veth: the pod's egress.
    FromPod,
    /// tc egress of a pod's host veth: the pod's ingress.
    ToPod,
    /// tc egress of the node's uplink: deferred egress verdicts of Service traffic leaving the node.
    Uplink,
    /// A classifier that does nothing, only ever test-run: the baseline of per-packet costs.
    Baseline,
}

impl Hook {
    pub const ALL: [Hook; 4] = [Hook::FromPod, Hook::ToPod, Hook::Uplink, Hook::Baseline];

    pub const fn program_name(self) -> &'static str {
        match self {
            Hook::FromPod => "pal_from_pod",
            Hook::ToPod => "pal_to_pod",
            Hook::Uplink => "pal_uplink",
            Hook::Baseline => "pal_baseline",
        }
    }

    const fn attach_type(self) -> TcAttachType {
        match self {
            Hook::FromPod => TcAttachType::Ingress,
            Hook::ToPod | Hook::Uplink | Hook::Baseline => TcAttachType::Egress,
        }
    }

    const fn tag(self) -> &'static str {
        match self {
            Hook::FromPod => "from-pod",
            Hook::ToPod => "to-pod",
            Hook::Uplink => "uplink",
            Hook::Baseline => "baseline",
        }
    }
}

/// How a program was attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// A tcx link, pinned; a new agent replaces the program in it atomically.
    Tcx,
    /// A tcx link that already existed and now runs this agent's program.
    TcxAdopted,
    /// A legacy clsact filter (kernels without tcx).
    Clsact,
}

impl Dataplane {
    pub(super) fn link_path(&self, ifindex: u32, hook: Hook) -> PathBuf {
        self.root
            .join("links")
            .join(format!("{ifindex}-{}", hook.tag()))
    }

    /// Attaches `hook`'s program to `ifname` in the current network namespace.
    pub fn attach(&mut self, ifname: &str, hook: Hook) -> Result<AttachMode, DataplaneError> {
        let ifindex = ifindex(ifname)?;
        let path = self.link_path(ifindex, hook);
        let name = hook.program_name();
        let perr = |source| DataplaneError::Program { name, source };
        if let Ok(old) = PinnedLink::from_pin(&path) {
            let link = SchedClassifierLink::try_from(FdLink::from(old)).map_err(|source| {
                DataplaneError::Link {
                    path: path.clone(),
                    source,
                }
            })?;
            let prog = self.program(hook)?;
            let id = prog.attach_to_link(link).map_err(perr)?;
            // Keep the link alive through its pin, not through this process.
            let link = prog.take_link(id).map_err(perr)?;
            std::mem::forget(link);
            return Ok(AttachMode::TcxAdopted);
        }
        let prog = self.program(hook)?;
        match prog.attach(ifname, hook.attach_type()) {
            Ok(id) => self.pin_or_keep(hook, id, path),
            Err(_) => {
                // No tcx (kernel < 6.6): legacy clsact. Adding the qdisc again is harmless.
                let _ = tc::qdisc_add_clsact(ifname);
                let prog = self.program(hook)?;
                let id = prog
                    .attach_with_options(
                        ifname,
                        hook.attach_type(),
                        tc::TcAttachOptions::Netlink(tc::NlOptions::default()),
                    )
                    .map_err(perr)?;
                let link = prog.take_link(id).map_err(perr)?;
                // The filter stays on the interface after the agent exits.
                std::mem::forget(link);
                Ok(AttachMode::Clsact)
            }
        }
    }

    fn pin_or_keep(
        &mut self,
        hook: Hook,
        id: tc::SchedClassifierLinkId,
        path: PathBuf,
    ) -> Result<AttachMode, DataplaneError> {
        let name = hook.program_name();
        let prog = self.program(hook)?;
        let link = prog
            .take_link(id)
            .map_err(|source| DataplaneError::Program { name, source })?;
        match FdLink::try_from(link) {
            Ok(fd) => {
                fd.pin(&path)
                    .map_err(|source| DataplaneError::Pin { path, source })?;
                Ok(AttachMode::Tcx)
            }
            Err(_) => Ok(AttachMode::Clsact),
        }
    }

    /// Detaches `hook` from the interface with `ifindex` by removing its pinned tcx link.
    pub fn detach(&mut self, ifindex: u32, hook: Hook) -> Result<(), DataplaneError> {
        let path = self.link_path(ifindex, hook);
        match PinnedLink::from_pin(&path) {
            Ok(link) => link
                .unpin()
                .map(drop)
                .map_err(|source| DataplaneError::Bpffs { path, source }),
            Err(_) => Ok(()),
        }
    }
}

/// The ifindex of `ifname` in the current network namespace.
pub fn ifindex(ifname: &str) -> Result<u32, DataplaneError> {
    let err = |source| DataplaneError::Interface {
        name: ifname.to_owned(),
        source,
    };
    let c = std::ffi::CString::new(ifname)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(idx)
}
