//! One reflector per watched kind: `watcher` (list, then watch; relist on 410 Gone) with
//! `.modify()` stripping each object before the reflector's store keeps it, retried with
//! backoff, every event applied to the shared [`State`].

use std::{pin::pin, sync::Arc, time::Duration};

use futures::StreamExt as _;
use kube::{
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
    let (store, writer) = reflector::store::<K>();
    shared.set_store(K::KIND, Box::new(move || store.len()));
    let config = watcher::Config::default()
        .timeout(u32::try_from(opts.watch_timeout.as_secs()).unwrap_or(290))
        .page_size(opts.page_size);
    let stream = watcher(api, config)
        .modify(K::strip)
        .backoff(Jittered::new(opts.backoff_min, opts.backoff_max));
    let mut events = pin!(reflector(writer, stream));
    while let Some(item) = events.next().await {
        let mut state = shared.lock();
        match item {
            Ok(watcher::Event::Apply(obj)) => state.apply(K::KIND, obj.model_key(), obj.to_model()),
            Ok(watcher::Event::Delete(obj)) => state.delete(K::KIND, &obj.model_key()),
            Ok(watcher::Event::Init) => state.init(K::KIND),
            Ok(watcher::Event::InitApply(obj)) => {
                state.init_apply(K::KIND, obj.model_key(), obj.to_model());
            }
            Ok(watcher::Event::InitDone) => state.init_done(K::KIND),
            Err(e) => state.error(K::KIND, &e),
        }
    }
}
