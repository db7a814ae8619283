//! Attaching the programs to interfaces: tcx where the kernel has it (links pinned for adoption
//! across restarts), legacy clsact otherwise (kernels before 6.6: a direct-action filter at a
//! fixed priority and handle, replaced in place by a later agent; see docs/kernels.md).

use std::path::PathBuf;

use aya::programs::{
    links::{FdLink, LinkOrder, PinnedLink},
    tc::{self, SchedClassifierLink, TcHandle},
    TcAttachType,
};

use super::{Dataplane, DataplaneError};

/// The priority and handle of Palisade's clsact filters. Fixed, so that a new agent finds the
/// filter of an earlier one and replaces its program in place, and detach finds it.
const CLSACT_PRIORITY: u16 = 1;
const CLSACT_HANDLE: TcHandle = TcHandle::new(0, 0x50a1);

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
        let tcx = tc::TcAttachOptions::TcxOrder(LinkOrder::default());
        match prog.attach_with_options(ifname, hook.attach_type(), tcx) {
            Ok(id) => self.pin_or_keep(hook, id, path),
            // No tcx (kernel < 6.6: the link type is unknown to it).
            Err(_) => self.attach_clsact(ifname, hook),
        }
    }

    /// A direct-action filter on the interface's clsact qdisc. If an earlier agent's filter is
    /// there, its program is replaced in place (netlink without `NLM_F_CREATE`: atomic, never
    /// a moment without a program); otherwise the filter is created.
    fn attach_clsact(&mut self, ifname: &str, hook: Hook) -> Result<AttachMode, DataplaneError> {
        let name = hook.program_name();
        let perr = |source| DataplaneError::Program { name, source };
        // Adding the qdisc again is harmless.
        let _ = tc::qdisc_add_clsact(ifname);
        let prog = self.program(hook)?;
        let existing = SchedClassifierLink::attached(
            ifname,
            hook.attach_type(),
            CLSACT_PRIORITY,
            CLSACT_HANDLE,
            None,
        );
        // A failed replace (no such filter yet) leaves the interface as it was.
        let replaced = existing.ok().and_then(|l| prog.attach_to_link(l).ok());
        let id = match replaced {
            Some(id) => id,
            None => {
                let options = tc::NlOptions {
                    priority: CLSACT_PRIORITY,
                    handle: CLSACT_HANDLE,
                    ..Default::default()
                };
                let options = tc::TcAttachOptions::Netlink(options);
                prog.attach_with_options(ifname, hook.attach_type(), options)
                    .map_err(perr)?
            }
        };
        let link = prog.take_link(id).map_err(perr)?;
        // The filter belongs to the interface and stays after the agent exits.
        std::mem::forget(link);
        Ok(AttachMode::Clsact)
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

    /// Detaches `hook` from the interface with `ifindex`: removes its pinned tcx link, or
    /// else its clsact filter if the interface still exists.
    pub fn detach(&mut self, ifindex: u32, hook: Hook) -> Result<(), DataplaneError> {
        let path = self.link_path(ifindex, hook);
        if let Ok(link) = PinnedLink::from_pin(&path) {
            return link
                .unpin()
                .map(drop)
                .map_err(|source| DataplaneError::Bpffs { path, source });
        }
        if let Some(ifname) = ifname(ifindex) {
            let filter = SchedClassifierLink::attached(
                &ifname,
                hook.attach_type(),
                CLSACT_PRIORITY,
                CLSACT_HANDLE,
                None,
            );
            // Dropping the link deletes the filter; there may be none (nothing to do).
            drop(filter);
        }
        Ok(())
    }
}

/// Removes Palisade's clsact filters from every interface of the current network namespace,
/// whatever their priority (so an earlier agent's go too). For uninstall on kernels without
/// tcx: a filter holds its program, and the program its maps, until the filter is removed.
pub(super) fn remove_clsact_filters() {
    for name in interface_names() {
        for hook in Hook::ALL {
            // NotFound (no such filter, or no clsact qdisc) is the common case.
            let _ = tc::qdisc_detach_program(&name, hook.attach_type(), hook.program_name());
        }
    }
}

/// The names of the interfaces of the current network namespace.
fn interface_names() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array ended by an entry with index 0 (or null on
    // failure); the names are NUL-terminated; the array is freed once, below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut entry = list;
        while (*entry).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*entry).if_name);
            out.push(name.to_string_lossy().into_owned());
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// The name of the interface with `ifindex` in the current network namespace, if it exists.
fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    name.to_str().ok().map(str::to_owned)
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
