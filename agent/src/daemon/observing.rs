//! The agent's hooks into observability (`crate::observe`): every loop iteration, and after each
//! sync. Kept apart from the loop itself so that the loop stays about sources and syncing.

use std::time::{Duration, Instant};

use super::{Agent, Settings, Source};
use crate::{
    dataplane::Dataplane,
    observe::{SyncInfo, View},
    sync::SyncReport,
};

impl Agent {
    fn view<'a>(&'a self, s: &'a Settings) -> View<'a> {
        View {
            node: &s.node,
            output: self.compiler.output(),
            model: self.compiler.model(),
            attached: &self.attached,
            audit_all: s.observe.audit,
            generation: self.syncer.generation(),
        }
    }

    /// Every loop iteration: flow log, counters, live questions.
    pub(super) fn observe(&mut self, dp: &mut Dataplane, s: &Settings) {
        let Some(mut obs) = self.observer.take() else {
            return;
        };
        obs.tick(dp, &self.view(s));
        self.observer = Some(obs);
    }

    /// After a sync: metrics and the status board.
    pub(super) fn observed(
        &mut self,
        dp: &Dataplane,
        s: &Settings,
        report: &SyncReport,
        (seen, compile): (Instant, Duration),
    ) {
        let Some(mut obs) = self.observer.take() else {
            return;
        };
        let (source, healthy, detail) = self.source_health(s);
        let info = SyncInfo {
            source,
            healthy,
            detail,
            seen,
            compile,
            latency: seen.elapsed(),
        };
        obs.synced(dp, &self.view(s), report, &info);
        self.observer = Some(obs);
    }

    fn source_health(&self, s: &Settings) -> (String, bool, String) {
        let notes = self.notes.len() + self.endpoint_notes.len();
        let noted = if notes == 0 {
            String::new()
        } else {
            format!("{notes} notes (see status notes)")
        };
        match &s.source {
            Source::Manifests(dir) => (format!("manifests {}", dir.display()), dir.is_dir(), noted),
            Source::Kube(_) => {
                let health = serde_json::to_value(self.running.health()).unwrap_or_default();
                let synced = health["synced"].as_bool().unwrap_or(false);
                let detail = health["resources"].to_string();
                ("kubernetes API".to_owned(), synced, detail)
            }
        }
    }
}
