//! ClusterNetworkPolicies from the API server (`policy.networking.k8s.io/v1alpha2`, a CRD).
//!
//! The CRD is optional: until the API server serves the kind (and lets the agent list it), the
//! watcher is not started and the source is ready without it; a check repeats in the background
//! and the watcher starts once the kind is there. Objects are read by the manifest source's
//! reader, as every other kind.
use std::{borrow::Cow, sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{api::ListParams, core::ClusterResourceScope, Api, Client, Resource};
use serde::{Deserialize, Serialize};

use super::{kinds::Watched, watch, ResourceKind, Shared, WatchOptions};
use crate::model::{CLUSTER_POLICY_API_VERSION, CLUSTER_POLICY_KIND};

const GROUP: &str = "policy.networking.k8s.io";
const VERSION: &str = "v1alpha2";
const PLURAL: &str = "clusternetworkpolicies";

/// The object as the API server sends it; the spec stays JSON until the model reader reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyObject {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: serde_json::Value,
}

fn api_version() -> String {
    CLUSTER_POLICY_API_VERSION.to_owned()
}

fn kind() -> String {
    CLUSTER_POLICY_KIND.to_owned()
}

impl Resource for ClusterNetworkPolicyObject {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(CLUSTER_POLICY_KIND)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(PLURAL)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Watched for ClusterNetworkPolicyObject {
    const KIND: ResourceKind = ResourceKind::ClusterNetworkPolicies;
    const MANIFEST_KIND: &'static str = CLUSTER_POLICY_KIND;

    /// Keeps name, uid, resourceVersion and the spec; the status and bookkeeping go.
    fn strip(&mut self) {
        let meta = &mut self.metadata;
        meta.managed_fields = None;
        meta.annotations = None;
        meta.labels = None;
        meta.owner_references = None;
        meta.finalizers = None;
        meta.generate_name = None;
        meta.creation_timestamp = None;
        // Cluster-scoped; whatever a namespace says is not used.
        meta.namespace = None;
        // The API version the reader checks (lists may omit it on items).
        self.api_version = api_version();
        self.kind = kind();
    }
}

/// Waits until the kind can be listed (the CRD is installed and the agent may list it), then
/// runs its watcher. Never returns while the source runs.
pub async fn run(client: Client, shared: Arc<Shared>, opts: WatchOptions) {
    let api: Api<ClusterNetworkPolicyObject> = Api::all(client.clone());
    let retry = Duration::from_secs(60).max(opts.backoff_max);
    let mut logged = false;
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => break,
            Err(e) => {
                if !logged {
                    tracing::info!(
                        "ClusterNetworkPolicy ({GROUP}/{VERSION}) not available ({e}); \
                         running without it, checking again every {}s",
                        retry.as_secs()
                    );
                    logged = true;
                }
                tokio::time::sleep(retry).await;
            }
        }
    }
    tracing::info!("watching ClusterNetworkPolicies ({GROUP}/{VERSION})");
    watch::run::<ClusterNetworkPolicyObject>(client, shared, opts).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelChange;

    #[test]
    fn converts_through_the_manifest_reader() {
        let mut obj: ClusterNetworkPolicyObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "guard", "managedFields": [{"manager": "kubectl"}],
                "resourceVersion": "5"},
            "spec": {"tier": "Admin", "priority": 3, "subject": {"namespaces": {}},
                "ingress": [{"name": "r", "action": "Deny", "from": [{"namespaces": {}}]}]},
            "status": {"conditions": []}
        }))
        .unwrap();
        obj.strip();
        assert_eq!(obj.model_key(), crate::model::ObjectKey::new("", "guard"));
        let v = serde_json::to_value(&obj).unwrap();
        assert_eq!(v["metadata"]["managedFields"], serde_json::Value::Null);
        let ModelChange::UpsertClusterPolicy(p) = obj.to_model().unwrap() else {
            panic!("not a ClusterNetworkPolicy")
        };
        assert_eq!(p.name, "guard");
        assert_eq!(p.spec.tier, "Admin");
        assert_eq!(p.spec.priority, 3);
        assert_eq!(p.spec.ingress.unwrap()[0].action, "Deny");
        assert_eq!(
            ClusterNetworkPolicyObject::url_path(&(), None),
            "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"
        );
    }
}
