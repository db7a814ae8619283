//! Kubernetes Events about the agent (`kubectl describe pod` of the agent shows them): when the
//! source has listed everything (`PalisadeSynced`) and when the API server answers again after
//! failing (`PalisadeReconnected`, with the number of failed calls). Best effort:
//! an event that cannot be posted is retried each second and logged (once as a warning).

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client,
};

use super::Shared;

/// The object the events are about: the agent's own Pod when the downward API names it
/// (`POD_NAME`, `POD_NAMESPACE`, as the DaemonSet sets them), else its Node. A Node's events
/// go to namespace `default`, which is named in the reference too: a 1.20 API server rejects an
/// events.k8s.io/v1 Event whose namespace differs from its object's ("involvedObject.namespace:
/// does not match event.namespace").
fn reference(node: &str) -> ObjectReference {
    match (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE")) {
        (Ok(name), Ok(namespace)) => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(namespace),
            ..ObjectReference::default()
        },
        _ => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            namespace: Some("default".into()),
            ..ObjectReference::default()
        },
    }
}

/// Posts events about the agent as the source's state changes, until the task is dropped.
pub async fn run(client: Client, shared: Arc<Shared>, node: String) {
    let reporter = Reporter {
        controller: "palisade".into(),
        instance: Some(format!("palisade-{node}")),
    };
    let recorder = Recorder::new(client, reporter);
    let reference = reference(&node);
    let (mut synced, mut reconnects, mut warned) = (false, 0u64, false);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let health = shared.lock().health(|_| 0);
        let now_reconnects: u64 = health.resources.values().map(|h| h.reconnects).sum();
        let errors: u64 = health.resources.values().map(|h| h.errors).sum();
        let first_sync = health.synced && !synced;
        let back = now_reconnects > reconnects && health.resources.values().all(|h| !h.failing);
        let event = if first_sync {
            Some((
                "PalisadeSynced",
                format!(
                    "listed namespaces, pods, services and network policies (generation {})",
                    health.generation
                ),
            ))
        } else if back {
            Some((
                "PalisadeReconnected",
                format!(
                    "the API server answers again; watching from the last known state ({errors} failed calls so far)"
                ),
            ))
        } else {
            None
        };
        let Some((reason, note)) = event else {
            continue;
        };
        let ev = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: "Watch".into(),
            secondary: None,
        };
        match recorder.publish(&ev, &reference).await {
            Ok(()) if first_sync => synced = true,
            Ok(()) => reconnects = now_reconnects,
            Err(e) if warned => tracing::debug!(node, reason, "posting an event: {e}"),
            Err(e) => {
                warned = true;
                tracing::warn!(node, reason, "posting an event (retried every second): {e}");
            }
        }
    }
}
