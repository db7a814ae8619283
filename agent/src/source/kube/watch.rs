//! One reflector per watched kind: `watcher` (list, then watch; relist on 410 Gone) with
//! `.modify()` stripping each object before the reflector's store keeps it, retried with
//! backoff, every event applied to the shared [`State`].

use std::{pin::pin, sync::Arc, time::Duration};

use futures::StreamExt as _;
use kube::{
    api::ListParams,
    runtime::{reflector, watcher, WatchStreamExt as _},
    Api, Client,
};

use super::{backoff::Jittered, kinds::Watched, Shared};

/// How the watchers talk to the API server.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// First retry delay after a failed list or watch.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Server-side timeout of each watch call, after which the watcher re-watches from the
    /// last resourceVersion (the API server's default is a random 5 to 10 minutes).
    pub watch_timeout: Duration,
    /// Objects per list page, so that a 100k-pod relist does not arrive as one response.
    pub page_size: u32,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(15),
            watch_timeout: Duration::from_secs(290),
            page_size: 500,
        }
    }
}

/// Runs the reflector of `K` until the task is dropped.
pub async fn run<K: Watched>(client: Client, shared: Arc<Shared>, opts: WatchOptions) {
    let api: Api<K> = Api::all(client);
    let watched = api.clone();
    let (store, writer) = reflector::store::<K>();
    shared.set_store(K::KIND, Box::new(move || store.len()));
    let config = watcher::Config::default()
        .timeout(u32::try_from(opts.watch_timeout.as_secs()).unwrap_or(290))
        .page_size(opts.page_size);
    let stream = watcher(watched, config)
        .modify(K::strip)
        .backoff(Jittered::new(opts.backoff_min, opts.backoff_max));
    let mut events = pin!(reflector(writer, stream));
    // A watch that comes back after a failure emits nothing until something changes, so while
    // failing we also ask the API server directly whether it answers again.
    let mut check = tokio::time::interval(opts.backoff_max.max(Duration::from_millis(200)));
    loop {
        tokio::select! {
            item = events.next() => match item {
                Some(item) => apply(&shared, item),
                None => break,
            },
            _ = check.tick() => {
                if shared.lock().failing(K::KIND)
                    && api.list(&ListParams::default().limit(1)).await.is_ok()
                {
                    shared.lock().recovered(K::KIND);
                }
            }
        }
    }
}

fn apply<K: Watched>(shared: &Shared, item: Result<watcher::Event<K>, watcher::Error>) {
    let mut state = shared.lock();
    match item {
        Ok(watcher::Event::Apply(obj)) => {
            state.apply(K::KIND, obj.model_key(), obj.to_model());
            state.saw_version(K::KIND, obj.meta().resource_version.as_deref(), false);
        }
        Ok(watcher::Event::Delete(obj)) => {
            state.delete(K::KIND, &obj.model_key());
            state.saw_version(K::KIND, obj.meta().resource_version.as_deref(), false);
        }
        Ok(watcher::Event::Init) => state.init(K::KIND),
        Ok(watcher::Event::InitApply(obj)) => {
            state.init_apply(K::KIND, obj.model_key(), obj.to_model());
            state.saw_version(K::KIND, obj.meta().resource_version.as_deref(), true);
        }
        Ok(watcher::Event::InitDone) => state.init_done(K::KIND),
        Err(e) => state.error(K::KIND, &e),
    }
}
