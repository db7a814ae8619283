//! `deploy/` is valid for a real API server: the whole kustomization is applied with a
//! server-side dry run (every object admitted and validated, nothing stored); its RBAC is enough
//! for the API source (which runs as the ServiceAccount, by impersonation) and grants nothing
//! else; and the binaries it runs and the socket it shares match what the code expects.

#[path = "support/kube.rs"]
mod kube_support;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use kube_support::{control_plane, settings};
use palisade::source::kube::KubeSource;
use palisade_tests::kube::TestApi;

const SA: &str = "system:serviceaccount:kube-system:palisade";

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

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

#[test]
#[ignore = "privileged: needs root and the API server (cargo xtask test runs it)"]
fn deploy_rbac_is_enough_for_the_agent_and_no_more() {
    let cp = control_plane();
    let kc = cp.kubeconfig();
    for file in ["serviceaccount.yaml", "rbac.yaml"] {
        let path = deploy_dir().join(file);
        let (ok, out) = kubectl(
            &kc,
            &[
                "apply",
                "-n",
                "kube-system",
                "-f",
                &path.display().to_string(),
            ],
        );
        assert!(ok, "{out}");
    }
    // The admin kubeconfig, impersonating the agent's ServiceAccount.
    let admin = std::fs::read_to_string(&kc).expect("kubeconfig");
    let token_line = admin
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .expect("token");
    let as_sa = admin.replace(token_line, &format!("{token_line}\n    as: {SA}"));
    let sa_kubeconfig = cp.dir().join("kubeconfig-palisade-sa");
    std::fs::write(&sa_kubeconfig, as_sa).expect("write kubeconfig");

    let (ok, out) = kubectl(&sa_kubeconfig, &["get", "secrets", "-A"]);
    assert!(
        !ok && out.contains("forbidden"),
        "the kubeconfig impersonates: {out}"
    );
    let source = KubeSource::start(settings(&sa_kubeconfig)).expect("source");
    let api = TestApi::connect(&kc).expect("admin client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = source.health();
        let posted = api.event_reasons("default", "node-0").expect("events");
        if health.synced && posted.iter().any(|r| r == "PalisadeSynced") {
            for (kind, h) in &health.resources {
                assert_eq!(
                    h.errors, 0,
                    "{kind:?} as the ServiceAccount: {:?}",
                    h.last_error
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not synced as {SA}: {health:#?}; events {posted:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let can = |verb: &str, resource: &str| {
        kubectl(
            &kc,
            &[
                "auth",
                "can-i",
                verb,
                resource,
                "--all-namespaces",
                "--as",
                SA,
            ],
        )
        .0
    };
    for (verb, resource) in [
        ("watch", "pods"),
        ("list", "networkpolicies.networking.k8s.io"),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(can(verb, resource), "{SA} cannot {verb} {resource}");
    }
    for (verb, resource) in [
        ("list", "secrets"),
        ("create", "pods"),
        ("update", "networkpolicies.networking.k8s.io"),
        ("list", "nodes"),
        ("delete", "events.events.k8s.io"),
    ] {
        assert!(
            !can(verb, resource),
            "{SA} may {verb} {resource}: more than it needs"
        );
    }
}
