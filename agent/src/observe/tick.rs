//! The observer's work in the main loop: drain events into the flow log and metrics, refresh
//! counters and occupancy, publish status, answer queued questions.

use std::time::{Instant, SystemTime};

use palisade_common::event::VerdictEvent;

use super::{
    board::{EndpointView, MapUsage, Pending, Query, WatchView},
    flowlog::{self, direction_name, reason_name, verdict_name},
    live,
    metrics::{mirror, MapLabels, ReasonLabels, StateLabels},
    timefmt::{rfc3339, Clock},
    Names, Observer, SyncInfo, View, CONNTRACK_EVERY, COUNTERS_EVERY,
};
use crate::{
    dataplane::{Dataplane, MapKind},
    sync::{EndpointState, SyncReport},
};

/// Most conntrack entries counted (the walk costs one syscall per entry).
const CONNTRACK_COUNT_LIMIT: usize = 1 << 20;

impl Observer {
    /// Every loop iteration: events, counters (every second), conntrack (every 10 s), questions.
    pub fn tick(&mut self, dp: &mut Dataplane, view: &View<'_>) {
        self.drain(dp);
        let now = Instant::now();
        if self
            .last_counters
            .is_none_or(|t| now.duration_since(t) >= COUNTERS_EVERY)
        {
            self.last_counters = Some(now);
            self.counters(dp);
        }
        if self
            .last_conntrack
            .is_none_or(|t| now.duration_since(t) >= CONNTRACK_EVERY)
        {
            self.last_conntrack = Some(now);
            self.conntrack(dp);
        }
        for q in self.board.take_queries() {
            answer(dp, view, q);
        }
    }

    fn drain(&mut self, dp: &mut Dataplane) {
        let events = match dp.drain_events() {
            Ok(e) => e,
            Err(e) => {
                self.board
                    .update(|l| l.error(format!("reading events: {e}")));
                return;
            }
        };
        if events.is_empty() {
            return;
        }
        let clock = Clock::now();
        let to_wall = |ns: u64| clock.wall(ns);
        let now = Instant::now();
        let mut failed = None;
        for ev in &events {
            self.count(ev);
            let Some(flow) = self.flow.as_mut() else {
                continue;
            };
            let rec = flowlog::record(ev, &self.names, &to_wall);
            match flow.log(&rec, now) {
                Ok(true) => {
                    self.metrics.flow_log_written.inc();
                }
                Ok(false) => {
                    self.metrics.flow_log_dropped.inc();
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        if let Some(flow) = self.flow.as_mut() {
            if let Err(e) = flow.flush() {
                failed = Some(e.to_string());
            }
            let stats = flow.stats;
            self.board.update(|l| {
                if let Some(v) = l.flow_log.as_mut() {
                    v.counts(stats);
                }
            });
        }
        let received = self.metrics.events.get();
        self.board.update(|l| {
            l.events_received = received;
            if let Some(e) = failed {
                l.error(e);
            }
        });
    }

    fn count(&self, ev: &VerdictEvent) {
        self.metrics.events.inc();
        let namespace = self
            .names
            .endpoints
            .get(&ev.ifindex)
            .map_or("", |e| e.pod.namespace.as_str());
        self.metrics.verdict(
            direction_name(ev.direction),
            verdict_name(ev.decision),
            reason_name(ev.reason),
            namespace,
        );
        // Events carry the rule id of a ClusterNetworkPolicy Accept or Deny; name it.
        let rule = (ev.rule_id != 0)
            .then(|| self.names.rules.get(&ev.rule_id))
            .flatten();
        if let Some(rule) = rule.filter(|r| r.is_cluster()) {
            self.metrics
                .cluster_verdict(rule, verdict_name(ev.decision));
        }
    }

    fn counters(&mut self, dp: &mut Dataplane) {
        let packets = dp.counters();
        let audited = dp.audited_counters();
        let (packets, audited) = match (packets, audited) {
            (Ok(p), Ok(a)) => (p, a),
            (Err(e), _) | (_, Err(e)) => {
                self.board
                    .update(|l| l.error(format!("reading counters: {e}")));
                return;
            }
        };
        for (reason, n) in &packets {
            let labels = ReasonLabels {
                reason: reason.name().to_owned(),
            };
            mirror(&self.metrics.datapath_packets.get_or_create(&labels), *n);
        }
        for (reason, n) in audited.iter().filter(|(_, n)| *n > 0) {
            let labels = ReasonLabels {
                reason: reason.name().to_owned(),
            };
            mirror(&self.metrics.datapath_audited.get_or_create(&labels), *n);
        }
        self.board.update(|l| {
            l.datapath = packets
                .iter()
                .map(|(r, n)| (r.name().to_owned(), *n))
                .collect();
            l.audited = audited
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.name().to_owned(), *n))
                .collect();
        });
    }

    /// Removes timed-out flows (nothing else does until LRU pressure) and reports what is left.
    fn conntrack(&mut self, dp: &mut Dataplane) {
        match dp.expire_flows(monotonic_ns(), CONNTRACK_COUNT_LIMIT) {
            Ok((left, removed)) => {
                self.metrics.conntrack_expired.inc_by(removed);
                self.set_usage(dp, MapKind::Conntrack, left);
            }
            Err(e) => self
                .board
                .update(|l| l.error(format!("expiring conntrack: {e}"))),
        }
    }

    fn set_usage(&self, dp: &Dataplane, kind: MapKind, entries: u64) {
        let labels = MapLabels {
            map: kind.label().to_owned(),
        };
        let capacity = u64::from(dp.capacity(kind).unwrap_or(0));
        self.metrics
            .map_entries
            .get_or_create(&labels)
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.metrics
            .map_capacity
            .get_or_create(&labels)
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
        let usage = MapUsage {
            map: kind.label().to_owned(),
            entries,
            capacity,
            percent: if capacity == 0 {
                0.0
            } else {
                (entries as f64 * 1000.0 / capacity as f64).round() / 10.0
            },
        };
        self.board
            .update(|l| match l.maps.iter_mut().find(|m| m.map == usage.map) {
                Some(m) => *m = usage,
                None => {
                    l.maps.push(usage);
                    l.maps.sort_by_key(|m| {
                        MapKind::ALL
                            .iter()
                            .position(|k| k.label() == m.map)
                            .unwrap_or(usize::MAX)
                    });
                }
            });
    }

    /// After each sync: names for the flow log, sync metrics, endpoint and map state.
    pub fn synced(
        &mut self,
        dp: &Dataplane,
        view: &View<'_>,
        report: &SyncReport,
        info: &SyncInfo,
    ) {
        self.names = Names::new(view.node, view.output, view.model, view.attached);
        // Count conntrack again soon after a policy change (at most once a second).
        if self
            .last_conntrack
            .is_some_and(|t| t.elapsed() >= COUNTERS_EVERY)
        {
            self.last_conntrack = None;
        }
        self.sync_metrics(view, report, info);
        for (kind, n) in occupancy(view) {
            self.set_usage(dp, kind, n);
        }
        let endpoints = endpoint_views(dp, view, report);
        let audited_ns = audited_namespaces(view);
        let seen = SystemTime::now() - info.seen.elapsed();
        let syncs = self.metrics.syncs.get();
        self.board.update(|l| {
            l.policy_generation = view.generation;
            l.endpoints = endpoints;
            l.audit.namespaces = audited_ns;
            l.watch = WatchView {
                source: info.source.clone(),
                healthy: info.healthy,
                detail: info.detail.clone(),
                last_change_seen: Some(rfc3339(seen)),
                last_sync: Some(rfc3339(SystemTime::now())),
                last_sync_ms: u64::try_from(info.latency.as_millis()).unwrap_or(u64::MAX),
                last_compile_ms: u64::try_from(info.compile.as_millis()).unwrap_or(u64::MAX),
                syncs,
            };
            for p in &report.problems {
                let who = p.endpoint.as_deref().unwrap_or("dataplane");
                l.error(format!("sync: {who}: {}", p.message));
            }
        });
    }
}

impl Observer {
    fn sync_metrics(&self, view: &View<'_>, report: &SyncReport, info: &SyncInfo) {
        let m = &self.metrics;
        m.syncs.inc();
        m.compile_seconds.observe(info.compile.as_secs_f64());
        m.sync_latency_seconds.observe(info.latency.as_secs_f64());
        m.sync_problems
            .set(i64::try_from(report.problems.len()).unwrap_or(i64::MAX));
        m.policy_generation.set(i64::from(view.generation));
        for state in ["attached", "fail_closed", "error"] {
            let n = report
                .endpoints
                .values()
                .filter(|s| state_name(**s) == state)
                .count();
            m.endpoints
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

fn answer(dp: &Dataplane, view: &View<'_>, q: Pending) {
    let result = match &q.query {
        Query::Explain(e) => live::explain(dp, view, e),
        Query::Lint => live::lint(view),
    };
    let _ = q.reply.send(result);
}

fn state_name(s: EndpointState) -> &'static str {
    match s {
        EndpointState::Attached => "attached",
        EndpointState::FailClosed => "fail_closed",
        EndpointState::Error => "error",
    }
}

/// Entries the syncer has written, per map (conntrack is counted separately).
fn occupancy(view: &View<'_>) -> [(MapKind, u64); 4] {
    let out = view.output;
    let identities = out.identities.prefixes.len()
        + out.identities.host.values().map(|s| s.len()).sum::<usize>();
    let policy: usize = out.tables.values().map(|t| t.entries.len()).sum();
    let services: usize = view
        .model
        .services
        .values()
        .map(|s| s.cluster_ips.len() * s.ports.len())
        .sum();
    [
        (MapKind::Endpoints, view.attached.len() as u64),
        (MapKind::Identities, identities as u64),
        (MapKind::Policy, policy as u64),
        (MapKind::Services, services as u64),
    ]
}

fn audited_namespaces(view: &View<'_>) -> Vec<String> {
    view.model
        .namespaces
        .keys()
        .filter(|ns| view.model.namespace_audited(ns))
        .cloned()
        .collect()
}

/// One direction for the board: NetworkPolicy isolation and the ClusterNetworkPolicies in it.
fn direction_text(d: &crate::compiler::DirectionPolicy) -> String {
    let by: Vec<String> = d.isolated_by.iter().map(ToString::to_string).collect();
    let np = d.isolated.then(|| format!("isolated by {}", by.join(", ")));
    let cnp = (!d.cluster_policies.is_empty())
        .then(|| format!("cluster policies {}", d.cluster_policies.join(", ")));
    match (np, cnp) {
        (Some(np), Some(cnp)) => format!("{np}; {cnp}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => "open".to_owned(),
    }
}

fn endpoint_views(dp: &Dataplane, view: &View<'_>, report: &SyncReport) -> Vec<EndpointView> {
    view.attached
        .iter()
        .map(|(key, att)| {
            let name = key.to_string();
            let record = dp.endpoint_record(att.ifindex).ok().flatten();
            let ep = view.output.endpoints.get(key);
            let side = |d: Option<&crate::compiler::DirectionPolicy>| match (record, d) {
                (Some(r), _) if r.flags & palisade_common::endpoint::EP_FAIL_CLOSED != 0 => {
                    "fail_closed".to_owned()
                }
                (_, Some(d)) => direction_text(d),
                _ => "open".to_owned(),
            };
            EndpointView {
                state: report
                    .endpoints
                    .get(&name)
                    .map_or("unknown", |s| state_name(*s))
                    .to_owned(),
                attach: dp.attach_mode_of(att.ifindex).to_owned(),
                ingress: side(ep.map(|e| &e.ingress)),
                egress: side(ep.map(|e| &e.egress)),
                audit: view.audit(key),
                generation: record.map_or(0, |r| r.generation),
                pod: name,
                ifname: att.ifname.clone(),
                ifindex: att.ifindex,
            }
        })
        .collect()
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`, which stamps flows.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}
