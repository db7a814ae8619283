//! What the watchers have built: the model, its generation and each resource's health. Pure
//! (no I/O), so the relist and outage semantics are unit-tested without an API server.
//!
//! kube-runtime's watcher: after `Init`, "a series of `InitApply` events are expected to follow
//! until all matching objects have been listed"; at `InitDone`, "any objects that were
//! previously Applied but are not listed in any of the `InitApply` events should be assumed to
//! have been Deleted". We buffer a relist and replace the kind's objects at `InitDone`, so a
//! snapshot never shows half a relist.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use serde::Serialize;

use super::kinds::ResourceKind;
use crate::{
    model::{Model, ModelChange, ObjectKey},
    source::manifest::ManifestError,
};

/// One watched resource's health.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceHealth {
    /// Listed completely at least once: the model holds every object of this kind.
    pub synced: bool,
    /// Objects in the reflector's store.
    pub objects: usize,
    /// Watch events applied (list items included).
    pub events: u64,
    /// Failed list or watch calls (each is retried after a backoff).
    pub errors: u64,
    /// Times the API server answered again after a failure (the watch resumes or relists).
    pub reconnects: u64,
    /// Complete relists after the first list (watch expired: 410 Gone, API server restarted).
    pub relists: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    pub last_event_at: Option<SystemTime>,
    /// True from an error until the next successful event.
    pub failing: bool,
    /// The highest `metadata.resourceVersion` of this kind's objects the model reflects
    /// (deletions included; a relist counts at its end). With etcd behind the API server it is
    /// the store's revision, so a client that wrote an object can wait for the model to hold it
    /// (the conformance runner does). 0 before any; a version that is not a number is ignored.
    pub resource_version: u64,
}

/// The whole source's health.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Every resource listed at least once (only then does the source offer a snapshot).
    pub synced: bool,
    pub generation: u64,
    pub resources: BTreeMap<ResourceKind, ResourceHealth>,
    /// Objects that could not be read into the model (they are left out of it).
    pub notes: Vec<String>,
}

/// One object of a relist in progress: its key and its model form (or why it has none).
type Listed = (ObjectKey, Result<ModelChange, String>);

/// The shared state the watcher tasks write and the agent reads.
#[derive(Debug, Default)]
pub struct State {
    model: Model,
    generation: u64,
    health: BTreeMap<ResourceKind, ResourceHealth>,
    /// Relists in progress: the objects listed so far.
    relisting: BTreeMap<ResourceKind, Vec<Listed>>,
    /// Relists in progress: the highest resourceVersion listed so far.
    relisting_version: BTreeMap<ResourceKind, u64>,
    notes: BTreeMap<(ResourceKind, ObjectKey), String>,
}

impl State {
    pub fn new() -> Self {
        let health = ResourceKind::ALL
            .iter()
            .map(|k| (*k, ResourceHealth::default()))
            .collect();
        Self {
            health,
            ..Self::default()
        }
    }

    fn synced(&self) -> bool {
        self.health.values().all(|h| h.synced)
    }

    /// The generation, once every resource has been listed.
    pub fn generation(&self) -> Option<u64> {
        self.synced().then_some(self.generation)
    }

    pub fn snapshot(&self) -> Option<(u64, Model)> {
        self.synced().then(|| (self.generation, self.model.clone()))
    }

    pub fn health(&self, objects: impl Fn(ResourceKind) -> usize) -> Health {
        let mut resources = self.health.clone();
        for (kind, h) in &mut resources {
            h.objects = objects(*kind);
        }
        Health {
            synced: self.synced(),
            generation: self.generation,
            resources,
            notes: self.notes.values().cloned().collect(),
        }
    }

    fn seen(&mut self, kind: ResourceKind) -> &mut ResourceHealth {
        self.recovered(kind);
        let h = self.health.entry(kind).or_default();
        h.events += 1;
        h.last_event_at = Some(SystemTime::now());
        h
    }

    /// Whether the last list or watch call of `kind` failed with nothing working since.
    pub fn failing(&self, kind: ResourceKind) -> bool {
        self.health.get(&kind).is_some_and(|h| h.failing)
    }

    /// How many kinds are failing.
    pub fn failing_count(&self) -> usize {
        self.health.values().filter(|h| h.failing).count()
    }

    /// An event about an object at `version` was applied to the model (call with the change,
    /// under the same lock). A listed object counts only when its relist is complete.
    pub fn saw_version(&mut self, kind: ResourceKind, version: Option<&str>, listed: bool) {
        let Some(v) = version.and_then(|v| v.parse::<u64>().ok()) else {
            return;
        };
        let slot = if listed {
            self.relisting_version.entry(kind).or_default()
        } else {
            &mut self.health.entry(kind).or_default().resource_version
        };
        *slot = (*slot).max(v);
    }

    /// The API server answers again for `kind` (an event arrived, or a check call worked).
    pub fn recovered(&mut self, kind: ResourceKind) {
        let h = self.health.entry(kind).or_default();
        if h.failing {
            h.failing = false;
            h.reconnects += 1;
            tracing::info!(
                resource = kind.as_str(),
                errors = h.errors,
                "the API server answers again; watching from the last known state"
            );
        }
    }

    /// An object was added or modified.
    pub fn apply(
        &mut self,
        kind: ResourceKind,
        key: ObjectKey,
        change: Result<ModelChange, ManifestError>,
    ) {
        self.seen(kind);
        self.put(kind, key, change.map_err(|e| e.to_string()));
        self.generation += 1;
    }

    fn put(&mut self, kind: ResourceKind, key: ObjectKey, change: Result<ModelChange, String>) {
        match change {
            Ok(change) => {
                self.notes.remove(&(kind, key));
                self.model.apply(change);
            }
            Err(e) => {
                tracing::warn!(resource = kind.as_str(), object = %key, "left out: {e}");
                kind.remove(&mut self.model, &key);
                self.notes
                    .insert((kind, key.clone()), format!("{kind:?} {key}: {e}"));
            }
        }
    }

    /// An object was deleted.
    pub fn delete(&mut self, kind: ResourceKind, key: &ObjectKey) {
        self.seen(kind);
        self.notes.remove(&(kind, key.clone()));
        kind.remove(&mut self.model, key);
        self.generation += 1;
    }

    /// A (re)list starts.
    pub fn init(&mut self, kind: ResourceKind) {
        let h = self.seen(kind);
        let first = !h.synced && h.relists == 0;
        if !first {
            h.relists += 1;
        }
        tracing::info!(
            resource = kind.as_str(),
            "{}",
            if first { "listing" } else { "relisting" }
        );
        self.relisting.insert(kind, Vec::new());
        self.relisting_version.remove(&kind);
    }

    /// One listed object.
    pub fn init_apply(
        &mut self,
        kind: ResourceKind,
        key: ObjectKey,
        change: Result<ModelChange, ManifestError>,
    ) {
        self.seen(kind);
        let change = change.map_err(|e| e.to_string());
        self.relisting.entry(kind).or_default().push((key, change));
    }

    /// The list is complete: the kind's objects become exactly the listed ones.
    pub fn init_done(&mut self, kind: ResourceKind) {
        self.seen(kind);
        let listed = self.relisting.remove(&kind).unwrap_or_default();
        let keep: BTreeSet<&ObjectKey> = listed.iter().map(|(k, _)| k).collect();
        let gone: Vec<ObjectKey> = kind
            .keys(&self.model)
            .into_iter()
            .filter(|k| !keep.contains(k))
            .collect();
        for key in &gone {
            kind.remove(&mut self.model, key);
            self.notes.remove(&(kind, key.clone()));
        }
        let count = listed.len();
        for (key, change) in listed {
            self.put(kind, key, change);
        }
        let listed_version = self.relisting_version.remove(&kind).unwrap_or_default();
        let h = self.health.entry(kind).or_default();
        h.synced = true;
        h.resource_version = h.resource_version.max(listed_version);
        self.generation += 1;
        tracing::info!(
            resource = kind.as_str(),
            objects = count,
            removed = gone.len(),
            generation = self.generation,
            "listed"
        );
    }

    /// A list or watch call failed; the model keeps its last known state.
    pub fn error(&mut self, kind: ResourceKind, error: &dyn std::fmt::Display) {
        let h = self.health.entry(kind).or_default();
        h.errors += 1;
        h.failing = true;
        h.last_error = Some(error.to_string());
        h.last_error_at = Some(SystemTime::now());
        tracing::warn!(
            resource = kind.as_str(),
            errors = h.errors,
            "watch failed (keeping the last known state, retrying with backoff): {error}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Namespace;

    fn ns(name: &str) -> (ObjectKey, Result<ModelChange, ManifestError>) {
        (
            ObjectKey::new("", name),
            Ok(ModelChange::UpsertNamespace(Namespace::new(
                name,
                Default::default(),
            ))),
        )
    }

    fn list_all_empty(s: &mut State) {
        for kind in ResourceKind::ALL {
            s.init(kind);
            s.init_done(kind);
        }
    }

    #[test]
    fn no_snapshot_until_every_resource_is_listed() {
        let mut s = State::new();
        s.init(ResourceKind::Namespaces);
        let (k, c) = ns("a");
        s.init_apply(ResourceKind::Namespaces, k, c);
        s.init_done(ResourceKind::Namespaces);
        assert!(s.snapshot().is_none());
        list_all_empty(&mut s);
        assert!(s.generation().is_some());
    }

    #[test]
    fn relist_replaces_atomically_and_drops_what_vanished() {
        let mut s = State::new();
        list_all_empty(&mut s);
        for name in ["a", "b"] {
            let (k, c) = ns(name);
            s.apply(ResourceKind::Namespaces, k, c);
        }
        let before = s.generation().unwrap();
        // The watch fails (outage): the model stays.
        s.error(ResourceKind::Namespaces, &"connection refused");
        assert_eq!(s.snapshot().unwrap().1.namespaces.len(), 2);
        // It comes back with a relist in which "a" is gone and "c" is new.
        s.init(ResourceKind::Namespaces);
        for name in ["b", "c"] {
            let (k, c) = ns(name);
            s.init_apply(ResourceKind::Namespaces, k, c);
        }
        assert_eq!(
            s.snapshot().unwrap().1.namespaces.len(),
            2,
            "half a relist is not shown"
        );
        s.init_done(ResourceKind::Namespaces);
        let (generation, model) = s.snapshot().unwrap();
        assert!(generation > before);
        let names: Vec<&String> = model.namespaces.keys().collect();
        assert_eq!(names, ["b", "c"]);
        let h = &s.health(|_| 0).resources[&ResourceKind::Namespaces];
        assert_eq!((h.errors, h.reconnects, h.relists), (1, 1, 1));
        assert!(!h.failing);
    }

    #[test]
    fn unreadable_objects_are_left_out_with_a_note() {
        let mut s = State::new();
        list_all_empty(&mut s);
        let key = ObjectKey::new("x", "p");
        let err = ManifestError::NotAnObject;
        s.apply(ResourceKind::Pods, key.clone(), Err(err));
        assert_eq!(s.health(|_| 0).notes.len(), 1);
        s.delete(ResourceKind::Pods, &key);
        assert!(s.health(|_| 0).notes.is_empty());
    }

    #[test]
    fn deleting_a_namespace_does_not_cascade() {
        let mut s = State::new();
        list_all_empty(&mut s);
        let (k, c) = ns("x");
        s.apply(ResourceKind::Namespaces, k.clone(), c);
        let pod = crate::model::Pod {
            namespace: "x".into(),
            name: "p".into(),
            labels: Default::default(),
            ips: vec![],
            node_name: None,
            host_network: false,
            container_ports: vec![],
        };
        s.apply(
            ResourceKind::Pods,
            ObjectKey::new("x", "p"),
            Ok(ModelChange::UpsertPod(pod)),
        );
        s.delete(ResourceKind::Namespaces, &k);
        assert_eq!(s.snapshot().unwrap().1.pods.len(), 1);
    }

    #[test]
    fn resource_versions_count_once_applied() {
        let mut s = State::new();
        list_all_empty(&mut s);
        let kind = ResourceKind::Namespaces;
        let version = |s: &State| s.health(|_| 0).resources[&kind].resource_version;
        let (k, c) = ns("a");
        s.apply(kind, k.clone(), c);
        s.saw_version(kind, Some("17"), false);
        s.saw_version(kind, Some("not-a-number"), false);
        assert_eq!(version(&s), 17);
        // A relist's versions show only at its end, and never lower the mark.
        s.init(kind);
        s.init_apply(
            kind,
            k,
            Ok(ModelChange::UpsertNamespace(Namespace::new(
                "a",
                Default::default(),
            ))),
        );
        s.saw_version(kind, Some("12"), true);
        s.saw_version(kind, Some("25"), true);
        assert_eq!(version(&s), 17);
        s.init_done(kind);
        assert_eq!(version(&s), 25);
        s.init(kind);
        s.saw_version(kind, Some("20"), true);
        s.init_done(kind);
        assert_eq!(version(&s), 25);
    }
}
