//! A Pod as the source stores it: only the fields the policy engine reads are even
//! deserialized (serde skips the rest of the API's JSON), so a pod costs a few hundred bytes in
//! the reflector's store instead of several kilobytes (`k8s_openapi`'s `Pod` is 2176 bytes
//! before any of its strings and lists, and each `Container` 2120). Pods are the kind that
//! reaches 100k objects; the other kinds use `k8s_openapi`'s types.

use k8s_openapi::{
    api::core::v1::{ContainerPort, PodIP},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    NamespaceResourceScope,
};
use serde::{Deserialize, Serialize};

/// `v1/Pod`, slim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlimPod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<SlimPodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SlimPodStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    #[serde(default)]
    pub containers: Vec<SlimContainer>,
}

/// A container's name and ports (what named ports resolve against).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlimContainer {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlimPodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(rename = "podIP", default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs", default, skip_serializing_if = "Option::is_none")]
    pub pod_ips: Option<Vec<PodIP>>,
}

impl k8s_openapi::Resource for SlimPod {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Pod";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "pods";
    type Scope = NamespaceResourceScope;
}

impl k8s_openapi::Metadata for SlimPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn much_smaller_than_the_full_pod_and_reads_the_api_json() {
        assert!(size_of::<SlimPod>() * 3 < size_of::<k8s_openapi::api::core::v1::Pod>());
        let json = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "namespace": "x"},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i",
                "ports": [{"containerPort": 80}]}], "volumes": [{"name": "v"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}]}});
        let pod: SlimPod = serde_json::from_value(json).unwrap();
        assert_eq!(
            pod.spec.as_ref().unwrap().containers[0]
                .ports
                .as_ref()
                .unwrap()[0]
                .container_port,
            80
        );
        assert_eq!(
            pod.status.as_ref().unwrap().pod_ip.as_deref(),
            Some("10.0.0.1")
        );
        let back = serde_json::to_value(&pod).unwrap();
        assert_eq!(back["status"]["podIPs"][0]["ip"], "10.0.0.1");
        assert_eq!(back["spec"]["nodeName"], "n");
    }
}
