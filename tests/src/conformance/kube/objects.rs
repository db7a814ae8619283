//! The API objects of a case's state: the same Namespaces, Pods, Services and NetworkPolicies
//! the manifest source gets (rendered by [`manifests::render`]), made into what an API server
//! accepts from a client: a pod's status goes apart (the kubelet writes it through the status
//! subresource), its container gets an image, a dual-stack Service says so.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::client::{Kind, ObjRef};
use super::KubeFeedError;
use crate::conformance::manifests::{self, Runtime};
use crate::conformance::world::World;

/// The image of every pod's container. Nothing pulls it: there is no kubelet; the pods run on
/// the test nodes.
const IMAGE: &str = "registry.k8s.io/pause:3.9";

/// One object as the runner wants it.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Applied server-side.
    pub object: Value,
    /// A pod's status, written after the pod.
    pub status: Option<Value>,
}

/// Every object of `world` (pods: those in `runtime`).
pub fn render(
    world: &World,
    runtime: &Runtime,
) -> Result<BTreeMap<ObjRef, Desired>, KubeFeedError> {
    let files = manifests::render(world, runtime)?;
    let mut out = BTreeMap::new();
    for (file, object) in files {
        let kind = match file.split('_').next() {
            Some("namespace") => Kind::Namespace,
            Some("pod") => Kind::Pod,
            Some("service") => Kind::Service,
            _ => Kind::NetworkPolicy,
        };
        if let Some((r, desired)) = for_api(kind, object)? {
            out.insert(r, desired);
        }
    }
    Ok(out)
}

fn for_api(kind: Kind, mut object: Value) -> Result<Option<(ObjRef, Desired)>, KubeFeedError> {
    let r = obj_ref(kind, &object)?;
    let mut status = None;
    match kind {
        Kind::NetworkPolicy => {
            let map = object
                .as_object_mut()
                .ok_or_else(|| bad(&r, "not an object"))?;
            map.entry("apiVersion")
                .or_insert_with(|| json!("networking.k8s.io/v1"));
            map.entry("kind").or_insert_with(|| json!("NetworkPolicy"));
        }
        Kind::Pod => {
            status = object.as_object_mut().and_then(|m| m.remove("status"));
            if let Some(containers) = object
                .pointer_mut("/spec/containers")
                .and_then(Value::as_array_mut)
            {
                for c in containers {
                    c["image"] = json!(IMAGE);
                }
            }
        }
        Kind::Service => {
            let ports = object.pointer("/spec/ports").and_then(Value::as_array);
            // A pod serving only SCTP (left out on kernels without it) has no Service port,
            // and an API server accepts no ClusterIP Service without one. The agent does not
            // need it: probes to ClusterIPs are judged after the test node's DNAT.
            if ports.is_none_or(Vec::is_empty) {
                return Ok(None);
            }
            let dual = object
                .pointer("/spec/clusterIPs")
                .and_then(Value::as_array)
                .is_some_and(|ips| ips.len() > 1);
            object["spec"]["ipFamilyPolicy"] = json!(if dual {
                "RequireDualStack"
            } else {
                "SingleStack"
            });
        }
        Kind::Namespace => {}
    }
    Ok(Some((r, Desired { object, status })))
}

fn obj_ref(kind: Kind, object: &Value) -> Result<ObjRef, KubeFeedError> {
    let field = |p: &str| object.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let name = field("/metadata/name").ok_or_else(|| KubeFeedError::BadObject {
        object: format!("{} {object}", kind.as_str()),
        why: "no metadata.name".into(),
    })?;
    let namespace = match kind {
        Kind::Namespace => String::new(),
        _ => field("/metadata/namespace").unwrap_or_default(),
    };
    Ok(ObjRef {
        kind,
        namespace,
        name,
    })
}

fn bad(r: &ObjRef, why: &str) -> KubeFeedError {
    KubeFeedError::BadObject {
        object: r.to_string(),
        why: why.to_owned(),
    }
}
