//! What a pod costs the API source, measured with a counting allocator: realistic pod JSON (as
//! the API sends it: managed fields, annotations, env, volumes, conditions) read into the slim
//! type the reflector stores, stripped, and converted into the model. Printed per pod and for
//! 100k pods, next to what `k8s_openapi`'s full `Pod` would cost; the test fails if a pod costs
//! more than 4 KiB in all.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
};

use palisade::{
    model::Model,
    source::kube::{SlimPod, Watched},
};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn pod_json(i: usize) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("web-7d9f8b6c5d-{i:05}"), "namespace": format!("team-{}", i % 50),
            "uid": "8f0c2f4e-5b1a-4c55-9d7e-2f1f3b0e6a11", "resourceVersion": "123456789",
            "creationTimestamp": "2026-01-01T00:00:00Z", "generateName": "web-7d9f8b6c5d-",
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d", "tier": "frontend"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z",
                "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-7d9f8b6c5d", "uid": "1c9f", "controller": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {
                "f:labels": {".": {}, "f:app": {}}, "f:ownerReferences": {}}, "f:spec": {
                "f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}}}},
                {"manager": "kubelet", "operation": "Update", "subresource": "status",
                "fieldsV1": {"f:status": {"f:conditions": {}, "f:podIP": {}}}}]},
        "spec": {
            "nodeName": format!("node-{}", i % 100), "serviceAccountName": "web",
            "containers": [{"name": "web", "image": "registry.example/web:1.2.3",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "production"}, {"name": "LOG", "value": "info"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}}}],
            "volumes": [{"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]},
        "status": {
            "phase": "Running", "podIP": format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
            "podIPs": [{"ip": format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255)}],
            "hostIP": "198.18.0.1", "qosClass": "Burstable", "startTime": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0,
                "image": "registry.example/web:1.2.3", "imageID": "sha256:abc", "containerID": "containerd://def",
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}
    })
    .to_string()
}

#[test]
fn a_pod_costs_the_api_source_under_four_kib() {
    const N: usize = 10_000;
    let texts: Vec<String> = (0..N).map(pod_json).collect();
    let json_bytes: usize = texts.iter().map(String::len).sum();
    let before = LIVE.load(Ordering::Relaxed);
    let mut store = Vec::with_capacity(N);
    for t in &texts {
        let mut pod: SlimPod = serde_json::from_str(t).expect("pod");
        pod.strip();
        store.push(std::sync::Arc::new(pod));
    }
    let after_store = LIVE.load(Ordering::Relaxed);
    let mut model = Model::new();
    for pod in &store {
        model.apply(pod.to_model().expect("model"));
    }
    let after_model = LIVE.load(Ordering::Relaxed);
    let per_store = (after_store - before) as usize / N;
    let per_model = (after_model - after_store) as usize / N;
    eprintln!(
        "per pod: {} B of API JSON; {per_store} B in the reflector store, {per_model} B in the \
         model; 100k pods: {} MiB",
        json_bytes / N,
        (per_store + per_model) * 100_000 / (1 << 20)
    );
    drop(store);
    let before_full = LIVE.load(Ordering::Relaxed);
    let full: Vec<k8s_openapi::api::core::v1::Pod> = texts
        .iter()
        .map(|t| serde_json::from_str(t).expect("pod"))
        .collect();
    let per_full = (LIVE.load(Ordering::Relaxed) - before_full) as usize / N;
    eprintln!("for comparison, k8s_openapi's Pod, unstripped: {per_full} B per pod");
    drop(full);
    assert_eq!(model.pods.len(), N);
    assert!(
        per_store + per_model < 4096,
        "{per_store} + {per_model} bytes per pod"
    );
}
