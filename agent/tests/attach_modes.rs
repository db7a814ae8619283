//! The attach path the kernel offers: pinned tcx links (Linux 6.6 and later) or legacy clsact
//! filters (older kernels; `cargo xtask vm-test` runs this on Debian's 6.1). Either way a second
//! agent on the same bpffs takes over the attachment in place (one filter per hook, never two),
//! and detach removes it. On a veth pair in a namespace of its own. Privileged (root).

use std::process::Command;

use palisade::dataplane::{AttachMode, Dataplane, Hook, PrivateBpffs};
use palisade_tests::names::RunId;
use palisade_tests::netns::Netns;
use palisade_tests::require_root;

/// Whether the running kernel has tcx (6.6+), from `uname -r`.
fn kernel_has_tcx() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 6)
}

/// Palisade's clsact filters on `dev` (both directions), as `tc` lists them.
fn pal_filters(ns: &Netns, dev: &str) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["ingress", "egress"] {
        let mut cmd: Command = ns.command("tc").expect("netns");
        let o = cmd
            .args(["filter", "show", "dev", dev, dir])
            .output()
            .expect("tc");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        out.extend(
            text.lines()
                .filter(|l| l.contains("pal_"))
                .map(|l| format!("{dir}: {l}")),
        );
    }
    out
}

fn attach_both(dp: &mut Dataplane) -> Vec<AttachMode> {
    [Hook::FromPod, Hook::ToPod]
        .into_iter()
        .map(|h| dp.attach("pv0", h).expect("attach"))
        .collect()
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn attach_mode_matches_the_kernel_and_a_second_agent_takes_over_in_place() {
    require_root!();
    let ns = Netns::create(&RunId::fresh().name("attach")).expect("netns");
    for args in [
        &["link", "add", "pv0", "type", "veth", "peer", "name", "pv1"][..],
        &["link", "set", "pv0", "up"],
        &["link", "set", "pv1", "up"],
    ] {
        let st = ns.command("ip").expect("netns").args(args).status();
        assert!(st.expect("ip").success(), "ip {args:?}");
    }
    let tcx = kernel_has_tcx();
    let fs = PrivateBpffs::new("attach").expect("bpffs");
    ns.run(|| {
        let mut first = Dataplane::load(fs.path()).expect("load");
        let want = if tcx {
            AttachMode::Tcx
        } else {
            AttachMode::Clsact
        };
        assert_eq!(attach_both(&mut first), [want, want]);
        // A new agent (restart or upgrade) on the same pins.
        let mut second = Dataplane::load(fs.path()).expect("load again");
        let want = if tcx {
            AttachMode::TcxAdopted
        } else {
            AttachMode::Clsact
        };
        assert_eq!(attach_both(&mut second), [want, want]);
        drop(first);
        if !tcx {
            let filters = pal_filters(&ns, "pv0");
            assert_eq!(filters.len(), 2, "one filter per hook: {filters:#?}");
            assert!(filters.iter().any(|f| f.contains("pal_from_pod")));
            assert!(filters.iter().any(|f| f.contains("pal_to_pod")));
        }
        let ifindex = palisade::dataplane::ifindex("pv0").expect("ifindex");
        for hook in [Hook::FromPod, Hook::ToPod] {
            second.detach(ifindex, hook).expect("detach");
        }
        assert_eq!(pal_filters(&ns, "pv0"), Vec::<String>::new());
        // Uninstall leaves nothing attached either (clsact filters hold programs and maps).
        attach_both(&mut second);
        second.uninstall().expect("uninstall");
        assert_eq!(pal_filters(&ns, "pv0"), Vec::<String>::new());
    })
    .expect("netns");
}
