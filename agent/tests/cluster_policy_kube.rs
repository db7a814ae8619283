//! ClusterNetworkPolicies through the Kubernetes API source, against a real kube-apiserver: with
//! `deploy/crd-clusternetworkpolicies.yaml` installed the source lists, follows and deletes them
//! (through the manifest reader, the same as the directory source); without the CRD the source
//! is ready without them. Each test starts its own control plane.

#[path = "support/kube.rs"]
mod kube_support;

use std::{path::Path, process::Command};

use kube_support::{control_plane, settings, wait_model};
use palisade::source::kube::KubeSource;

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const GUARD: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {team: red}}}
  ingress:
  - name: no-blue
    action: Deny
    from: [{namespaces: {matchLabels: {team: blue}}}]
    protocols: [{tcp: {destinationPort: {range: {start: 8000, end: 9000}}}}]
"#;

#[test]
#[ignore = "privileged: needs root and the API server (cargo xtask test runs it)"]
fn kube_source_follows_cluster_network_policies() {
    let cp = control_plane();
    let kc = cp.kubeconfig();
    let crd =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crd-clusternetworkpolicies.yaml");
    kubectl(&kc, &["apply", "-f", &crd.display().to_string()], None);
    kubectl(
        &kc,
        &[
            "wait",
            "--for=condition=established",
            "--timeout=30s",
            "crd/clusternetworkpolicies.policy.networking.k8s.io",
        ],
        None,
    );
    kubectl(&kc, &["apply", "-f", "-"], Some(GUARD));

    let source = KubeSource::start(settings(&kc)).expect("source");
    let (_, m) = wait_model(&source, "the ClusterNetworkPolicy", |m| {
        m.cluster_policies.contains_key("guard")
    });
    let guard = &m.cluster_policies["guard"];
    assert_eq!(guard.spec.tier, "Admin");
    assert_eq!(guard.spec.priority, 10);
    let rules = guard.spec.ingress.as_ref().expect("ingress");
    assert_eq!(rules[0].name.as_deref(), Some("no-blue"));
    assert_eq!(rules[0].action, "Deny");

    // An update (priority) and a delete reach the model.
    kubectl(
        &kc,
        &["apply", "-f", "-"],
        Some(&GUARD.replace("priority: 10", "priority: 3")),
    );
    wait_model(&source, "the new priority", |m| {
        m.cluster_policies
            .get("guard")
            .is_some_and(|p| p.spec.priority == 3)
    });
    kubectl(&kc, &["delete", "clusternetworkpolicy", "guard"], None);
    wait_model(&source, "the deletion", |m| m.cluster_policies.is_empty());
}

#[test]
#[ignore = "privileged: needs root and the API server (cargo xtask test runs it)"]
fn kube_source_is_ready_without_the_crd() {
    let cp = control_plane();
    let source = KubeSource::start(settings(&cp.kubeconfig())).expect("source");
    let (_, m) = wait_model(&source, "a snapshot without the CRD", |_| true);
    assert!(m.cluster_policies.is_empty());
    let health = source.health();
    assert!(health.synced, "{health:#?}");
}
