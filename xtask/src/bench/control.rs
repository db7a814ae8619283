//! The control-plane sections of the report (from `control.json` and `update.json`).

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    data::{arr, count, distinct, f, mib, s, Fig, Target},
    svg::{line_chart, LineChart, Series},
    Chart,
};

fn point(points: &[Value], pods: f64, policies: f64) -> Option<&Value> {
    points
        .iter()
        .find(|p| f(p, "pods") == pods && f(p, "policies") == policies)
}

/// Compile time, memory and BPF maps.
pub fn compile_section(v: &Value, charts: &mut Vec<Chart>, targets: &mut Vec<Target>) -> String {
    let points = arr(v, "points");
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Control plane: compile time and memory\n\n\
         Generator: {}. Each grid point runs in a process of its own: the full compile is timed \
         (median of up to 3 runs, one when a run takes over 20 s; spread min–max), the resident \
         set is read after the compile with only the compiler alive (it holds the model, its \
         caches and the output, as the agent does) and at its peak. Then a local pod's label \
         change and a policy add/delete are applied incrementally (14 samples each), and the \
         node's identity prefixes and allow tables are written into fresh BPF maps as the syncer \
         writes them, to read the maps' memory as the kernel accounts it. IPv4-only pods.\n",
        s(v, "generator")
    );
    md.push_str(
        "| pods | policies | full compile, s | RSS after compile | peak RSS | identities | trie prefixes | tables / entries (node0) | label change, ms | policy add/delete, ms | BPF maps | map writes/s |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for p in points {
        if let Some(e) = p.get("error") {
            let _ = writeln!(
                md,
                "| {} | {} | not finished: {} | | | | | | | | | |",
                count(f(p, "pods")),
                count(f(p, "policies")),
                e.as_str().unwrap_or("")
            );
            continue;
        }
        let c = &p["compiled"];
        let m = &p["memory"];
        let b = &p["bpf"];
        let fig = |k: &str, d: usize| {
            Fig::from(&p[k]).map_or("–".into(), |x| {
                format!("{:.d$} ({:.d$}–{:.d$})", x.median, x.min, x.max)
            })
        };
        let writes = f(b, "map_writes") / f(b, "write_seconds");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
            count(f(p, "pods")),
            count(f(p, "policies")),
            fig("compile_seconds", 3),
            mib(f(m, "rss_compiled_bytes")),
            mib(f(m, "peak_rss_bytes")),
            f(c, "identities"),
            f(c, "identity_prefixes"),
            f(c, "tables"),
            f(c, "table_entries"),
            fig("label_change_ms", 1),
            fig("policy_change_ms", 1),
            if b.is_null() {
                "–".into()
            } else {
                mib(f(b, "total_bytes"))
            },
            if writes.is_finite() {
                format!("{:.0}k", writes / 1e3)
            } else {
                "–".into()
            },
        );
    }
    md.push('\n');
    let problems: Vec<String> = points
        .iter()
        .flat_map(|p| arr(&p["bpf"], "problems").iter().filter_map(Value::as_str))
        .map(str::to_owned)
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(
            md,
            "BPF write problems: {}\n",
            problems
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if let Some(cb) = v.get("compiler_bench").filter(|c| !c.is_null()) {
        let secs = |k: &str| {
            let d = &cb[k];
            f(d, "secs") + f(d, "nanos") / 1e9
        };
        let _ = writeln!(
            md,
            "`palisade::compiler::bench::run_default()` (the compiler's own benchmark: {} pods, {} \
             policies, all pods endpoints): full compile {:.3} s, a pod joining another app's \
             identity {:.2} ms ({} endpoints changed), a pod getting a new identity {:.2} ms ({} \
             endpoints changed), revert {:.2} ms.\n",
            f(cb, "pods"),
            f(cb, "policies"),
            secs("full_compile"),
            secs("label_change") * 1e3,
            f(cb, "label_change_endpoints_changed"),
            secs("label_change_new_identity") * 1e3,
            f(cb, "new_identity_endpoints_changed"),
            secs("label_revert") * 1e3,
        );
    }
    let policies = distinct(points, "policies");
    let series: Vec<Series> = policies
        .iter()
        .enumerate()
        .map(|(i, &pol)| Series {
            label: format!("{} policies", count(pol)),
            points: points
                .iter()
                .filter(|p| f(p, "policies") == pol)
                .filter_map(|p| {
                    let x = Fig::from(&p["compile_seconds"])?;
                    Some(super::svg::Pt {
                        x: f(p, "pods"),
                        y: x.median,
                        lo: x.min,
                        hi: x.max,
                    })
                })
                .collect(),
            dashed: false,
            color: Some(i),
        })
        .collect();
    charts.push(Chart {
        file: "compile.svg".into(),
        svg: line_chart(&LineChart {
            title: "Full compile time (one node's view)".into(),
            x_label: "pods (log scale)".into(),
            y_label: "seconds".into(),
            log_x: true,
            series,
        }),
    });
    md.push_str("![compile time](performance/compile.svg)\n\n");
    let p = point(points, 10_000.0, 1_000.0);
    let t = p.and_then(|p| Fig::from(&p["compile_seconds"]));
    let rss = p.map(|p| f(&p["memory"], "rss_compiled_bytes"));
    targets.push(Target {
        what: "compile 10k pods, 1k policies".into(),
        goal: "< 1 s and < 128 MiB RSS".into(),
        measured: match (t, rss) {
            (Some(t), Some(r)) => format!("{:.3} s, {}", t.median, mib(r)),
            _ => "–".into(),
        },
        met: t
            .zip(rss)
            .map(|(t, r)| t.median < 1.0 && r < 128.0 * 1048576.0),
    });
    md
}

/// Update latency, per source.
pub fn update_section(v: &Value, targets: &mut Vec<Target>) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Control plane: update latency\n\n\
         Two test nodes, the real agent on each, a client pod on node 0 and a server pod on node 1 \
         behind a default-deny ingress policy. During each change the client starts a new TCP \
         connection to the server every {} ms (non-blocking, a fresh source port each, so no \
         conntrack entry carries the old verdict; a handshake counts as allowed when it completes \
         within 200 ms). The latency is from the change (the first manifest file write, or the API \
         call) to the first connection attempt from which every later one shows the new verdict \
         (held for {} ms). Changes: the allowing policy removed and restored; the client's label \
         changed so that the policy no longer selects it, and restored. Manifest source: the agent \
         polls the directory every {} ms. API source: a loopback kube-apiserver 1.20 with etcd, \
         reached from the node namespaces through a relay, objects written with server-side apply.\n",
        f(v, "probe_interval_ms"),
        f(v, "stable_ms"),
        f(v, "agent_poll_ms"),
    );
    for src in arr(v, "sources") {
        let name = s(src, "source");
        let title = if name == "kube" {
            "API server source"
        } else {
            "manifest source"
        };
        let _ = writeln!(md, "### {title}\n");
        let goal_what = format!("update latency p99 ({title})");
        if let Some(e) = src.get("error").and_then(Value::as_str) {
            let _ = writeln!(md, "{e}\n");
            targets.push(Target {
                what: goal_what,
                goal: "< 50 ms".into(),
                measured: "–".into(),
                met: None,
            });
            continue;
        }
        md.push_str("| change | to | samples | p50, ms | p99, ms | min–max, ms | not observed |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
        for row in arr(src, "summary") {
            let fig = Fig::from(&row["latency_ms"]);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} | {:.1} | {} | {} |",
                s(row, "kind"),
                if row["to_allowed"].as_bool() == Some(true) {
                    "allowed"
                } else {
                    "denied"
                },
                fig.map_or(0, |x| x.n),
                f(row, "p50_ms"),
                f(row, "p99_ms"),
                fig.map_or("–".into(), |x| format!("{:.1}–{:.1}", x.min, x.max)),
                f(row, "not_observed"),
            );
        }
        let all = &src["all"];
        let _ = writeln!(
            md,
            "| all | | {} | {:.1} | {:.1} | | {} |\n",
            Fig::from(&all["latency_ms"]).map_or(0, |x| x.n),
            f(all, "p50_ms"),
            f(all, "p99_ms"),
            f(all, "not_observed"),
        );
        let p99 = f(all, "p99_ms");
        targets.push(Target {
            what: goal_what,
            goal: "< 50 ms".into(),
            measured: format!("{p99:.1} ms (p50 {:.1} ms)", f(all, "p50_ms")),
            met: p99
                .is_finite()
                .then_some(p99 < 50.0 && f(all, "not_observed") == 0.0),
        });
    }
    md
}
