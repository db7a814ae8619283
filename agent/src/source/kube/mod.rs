//! The Kubernetes API source: reflectors on Namespaces, Pods, Services and NetworkPolicies
//! feeding the same [`Model`] as the manifest source.
//!
//! [`KubeSource::start`] runs the watchers on their own thread with a single-threaded tokio
//! runtime. The agent's loop polls [`KubeSource::generation`] and takes a
//! [`KubeSource::snapshot`] when it changed. Until every resource has been listed once there
//! is no snapshot (the agent keeps what it enforces). When the API server goes away, the
//! watchers retry with backoff and the model keeps its last known state; when it comes back,
//! they re-watch or relist and the model converges. [`KubeSource::health`] says, per resource,
//! whether it is synced, its last error, and how often it reconnected and relisted.

mod backoff;
mod cluster_policy;
mod events;
mod kinds;
mod slim;
mod state;
mod watch;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
};

use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};

pub use kinds::{ResourceKind, Watched};
pub use slim::{SlimContainer, SlimPod, SlimPodSpec, SlimPodStatus};
pub use state::{Health, ResourceHealth};
pub use watch::WatchOptions;

use crate::model::Model;
use state::State;

/// Where the API server is and how to watch it.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    /// A kubeconfig file; without it, the in-cluster service account (or `$KUBECONFIG`, or
    /// `~/.kube/config`), as kubectl infers it.
    pub kubeconfig: Option<PathBuf>,
    pub watch: WatchOptions,
    /// This node's name: the source posts Events about itself on the Node object.
    pub node: Option<String>,
}

/// Why the source could not start (once started, it only reports errors through health).
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("no Kubernetes configuration found (in-cluster, $KUBECONFIG, ~/.kube/config): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("starting the watcher thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the watcher thread ended before it started")]
    Gone,
}

type StoreLen = Box<dyn Fn() -> usize + Send>;

/// What the watcher tasks share with the agent.
pub(crate) struct Shared {
    state: Mutex<State>,
    stores: Mutex<BTreeMap<ResourceKind, StoreLen>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_store(&self, kind: ResourceKind, len: StoreLen) {
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(kind, len);
    }
}

/// The running source; dropping it stops the watchers.
pub struct KubeSource {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource").finish_non_exhaustive()
    }
}

impl KubeSource {
    /// Reads the configuration, builds the client and starts the watchers. Fails only on a bad
    /// configuration: an unreachable API server is retried in the background.
    pub fn start(settings: KubeSettings) -> Result<Self, KubeError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            stores: Mutex::new(BTreeMap::new()),
        });
        let (started_tx, started_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let task_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kube-source".into())
            .spawn(move || run_thread(settings, task_shared, started_tx, stop_rx))
            .map_err(KubeError::Thread)?;
        started_rx.recv().map_err(|_| KubeError::Gone)??;
        Ok(Self {
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The model's generation, once every resource has been listed; it grows with each event.
    pub fn generation(&self) -> Option<u64> {
        self.shared.lock().generation()
    }

    /// How many watched kinds are failing right now (cheap; for noticing outages).
    pub fn failing(&self) -> usize {
        self.shared.lock().failing_count()
    }

    /// The model and its generation, once every resource has been listed.
    pub fn snapshot(&self) -> Option<(u64, Model)> {
        self.shared.lock().snapshot()
    }

    pub fn health(&self) -> Health {
        let stores = self
            .shared
            .stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let len = |kind: ResourceKind| stores.get(&kind).map_or(0, |f| f());
        self.shared.lock().health(len)
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn client(settings: &KubeSettings) -> Result<Client, KubeError> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    tracing::info!(server = %config.cluster_url, "Kubernetes API source");
    Ok(Client::try_from(config)?)
}

fn run_thread(
    settings: KubeSettings,
    shared: Arc<Shared>,
    started: mpsc::Sender<Result<(), KubeError>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = started.send(Err(KubeError::Thread(e)));
            return;
        }
    };
    runtime.block_on(async move {
        let client = match client(&settings).await {
            Ok(c) => c,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let _ = started.send(Ok(()));
        let opts = settings.watch;
        let events = async {
            match settings.node {
                Some(node) => events::run(client.clone(), shared.clone(), node).await,
                None => futures::future::pending().await,
            }
        };
        let all = futures::future::join(
            futures::future::join5(
                watch::run::<Namespace>(client.clone(), shared.clone(), opts.clone()),
                watch::run::<SlimPod>(client.clone(), shared.clone(), opts.clone()),
                watch::run::<Service>(client.clone(), shared.clone(), opts.clone()),
                watch::run::<NetworkPolicy>(client.clone(), shared.clone(), opts.clone()),
                events,
            ),
            // Optional: starts once the API server serves the kind.
            cluster_policy::run(client.clone(), shared.clone(), opts),
        );
        tokio::select! {
            _ = all => tracing::warn!("watchers ended"),
            _ = stop => tracing::info!("Kubernetes API source stopped"),
        }
    });
}
