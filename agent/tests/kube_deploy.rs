//! `deploy/` is valid for a real API server: the whole kustomization is applied with a
//! server-side dry run (every object admitted and validated, nothing stored), after a check
//! that the binaries it runs and the socket it shares match what the code expects.

#[path = "support/kube.rs"]
mod kube_support;

use std::{path::Path, process::Command};

use kube_support::control_plane;

fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
#[ignore = "privileged: needs root and the API server (cargo xtask test runs it)"]
fn deploy_passes_server_side_dry_run() {
    let cp = control_plane();
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(["apply", "--dry-run=server", "-k"])
        .arg(deploy_dir())
        .output()
        .expect("kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubectl apply --dry-run=server -k deploy/ failed:\n{stdout}{stderr}"
    );
    for object in [
        "serviceaccount/palisade",
        "clusterrole.rbac.authorization.k8s.io/palisade",
        "clusterrolebinding.rbac.authorization.k8s.io/palisade",
        "configmap/palisade",
        "daemonset.apps/palisade",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(object) && l.ends_with("(server dry run)")),
            "{object} not admitted:\n{stdout}{stderr}"
        );
    }
}

#[test]
fn deploy_matches_the_binaries() {
    let text = |f: &str| std::fs::read_to_string(deploy_dir().join(f)).expect("deploy file");
    let ds = text("daemonset.yaml");
    let cm = text("configmap.yaml");
    assert!(
        ds.contains("\"/palisade\", \"agent\", \"--source\", \"kube\""),
        "agent command"
    );
    assert!(
        ds.contains("\"/palisade-cni\", \"install\""),
        "CNI install step"
    );
    assert!(
        cm.contains(&format!(
            "socket: {}",
            palisade::cni::plugin::DEFAULT_SOCKET
        )),
        "the ConfigMap's socket is the plugin's default"
    );
    let docker = text("Dockerfile");
    for bin in ["/palisade", "/palisade-cni"] {
        assert!(docker.contains(&format!(" {bin}\n")), "image has {bin}");
    }
}
