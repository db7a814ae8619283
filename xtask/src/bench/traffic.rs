//! The traffic section of the report (from `traffic.json`).

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    data::{arr, count, distinct, f, s, Fig, Target},
    svg::{bar_chart, BarChart},
    Chart,
};

const MODES: [(&str, &str); 4] = [
    ("none", "no enforcement"),
    ("palisade", "Palisade"),
    ("iptables", "iptables (kube-router)"),
    ("nftables", "nftables (kube-network-policies layout)"),
];

const METRICS: [(&str, &str, usize); 5] = [
    ("throughput", "TCP throughput, Gbit/s", 2),
    ("rr_latency_p50", "request/response p50, µs", 0),
    ("rr_latency_p99", "request/response p99, µs", 0),
    ("conn_rate", "new connections/s", 0),
    ("conn_latency_p99", "connection p99, µs", 0),
];

fn find<'a>(
    rows: &'a [Value],
    rules: f64,
    mode: &str,
    placement: &str,
    metric: &str,
) -> Option<&'a Value> {
    rows.iter().find(|r| {
        f(r, "rules") == rules
            && s(r, "mode") == mode
            && s(r, "placement") == placement
            && s(r, "metric") == metric
    })
}

const METHOD: &str = "\
Two test nodes (bridge CNI, IPv4), a client pod on node 0, one server pod on node 0 (same node) \
and one on node 1 (across nodes). Each mode is switched on in turn on the same nodes, at each rule \
count; before measuring, the bench checks that the allowed port answers and that a served port no \
rule allows is blocked (and, after switching off, open again). The rules are ingress rules of the \
server pods: `rules − 1` rules from addresses in 172.16.0.0/12 that never send, one port each, and \
last the client's address on the measured ports (100 rules per NetworkPolicy). \
**Palisade**: the real agent on each node (manifest source). **iptables**: kube-router's layout \
(FORWARD → KUBE-ROUTER-FORWARD → a KUBE-POD-FW chain per pod → a KUBE-NWPLCY chain per policy, an \
ipset per rule's peers, mark-and-return per rule, REJECT unless marked; iptables-nft 1.8.9). \
**nftables**: kube-network-policies' table (inet, postrouting at srcnat − 5, established flows \
first, `podips` sets), but with the verdict taken in the kernel: a verdict map from pod address to \
a per-pod chain holding one concatenated `peer . protocol . port` interval set (kube-network-policies \
itself sends new connections to user space through NFQUEUE, which is not modelled). Metrics: iperf3 \
(one TCP stream); request/response = 1-byte ping-pong on one connection; connection rate = connect, \
1-byte request and reply, close, back to back from one thread. Ratios are against no enforcement \
measured in the same rule round. The client's namespace reuses TIME_WAIT ports and the nodes' \
conntrack TIME_WAIT timeout is 10 s, in every mode. On this shared 2-core machine the bulk \
figures (throughput, connection rate, p99s) move by tens of percent from run to run with the other \
builds' load (see the p10–p90 spreads, and ratios above 1); the request/response p50 is the steady \
one, and only differences far beyond the spreads (such as the iptables connection rate) mean \
something.\n";

pub fn section(v: &Value, charts: &mut Vec<Chart>, targets: &mut Vec<Target>) -> String {
    let rows = arr(v, "results");
    let mut md = String::new();
    let plan = &v["plan"];
    let _ = writeln!(
        md,
        "## Traffic between pods\n\n{METHOD}\nPlan: {} runs of {} s per metric; {:.0} s in all.\n",
        f(plan, "runs"),
        f(plan, "seconds_per_run"),
        f(v, "seconds")
    );
    let rules_all = distinct(rows, "rules");
    for placement in ["same_node", "cross_node"] {
        let _ = writeln!(
            md,
            "### {}: median (p10–p90), and × no enforcement\n",
            placement.replace('_', " ")
        );
        md.push_str("| rules | mode |");
        for (_, label, _) in METRICS {
            let _ = write!(md, " {label} |");
        }
        md.push_str("\n| ---: | --- |");
        md.push_str(&" ---: |".repeat(METRICS.len()));
        md.push('\n');
        for &rules in &rules_all {
            for (mode, label) in MODES {
                let _ = write!(md, "| {} | {label} |", count(rules));
                for (metric, _, d) in METRICS {
                    let cell =
                        find(rows, rules, mode, placement, metric).map_or("–".into(), |r| {
                            let fig = Fig::from(&r["stat"]).map_or("–".into(), |x| x.cell(d));
                            match r["vs_none"].as_f64() {
                                Some(x) if mode != "none" => format!("{fig}, ×{x:.2}"),
                                _ => fig,
                            }
                        });
                    let _ = write!(md, " {cell} |");
                }
                md.push('\n');
            }
        }
        md.push('\n');
        for (metric, label, file) in [
            ("throughput", "TCP throughput, Gbit/s", "throughput"),
            ("conn_rate", "new connections per second", "connrate"),
            (
                "rr_latency_p99",
                "request/response latency p99, µs",
                "rrp99",
            ),
        ] {
            let groups: Vec<String> = rules_all
                .iter()
                .map(|r| format!("{} rules", count(*r)))
                .collect();
            let series = MODES
                .iter()
                .map(|(mode, mlabel)| {
                    let bars = rules_all
                        .iter()
                        .map(|&r| {
                            find(rows, r, mode, placement, metric)
                                .and_then(|row| Fig::from(&row["stat"]))
                                .map(|x| x.pt(0.0))
                        })
                        .collect();
                    // The legend is narrow: the long names are in the table.
                    let short = mlabel.split(" (").next().unwrap_or(mlabel);
                    (short.to_owned(), bars)
                })
                .collect();
            let name = format!("traffic-{file}-{}.svg", placement.replace('_', "-"));
            charts.push(Chart {
                file: name.clone(),
                svg: bar_chart(&BarChart {
                    title: format!("{label}, {}", placement.replace('_', " ")),
                    y_label: label.into(),
                    groups,
                    series,
                }),
            });
            let _ = writeln!(md, "![{label}](performance/{name})\n");
        }
    }
    // Targets at the largest rule count.
    if let Some(&top) = rules_all.last() {
        for placement in ["same_node", "cross_node"] {
            for (metric, what) in [
                ("throughput", "throughput"),
                ("conn_rate", "connection rate"),
            ] {
                let row = |mode| find(rows, top, mode, placement, metric);
                let ratio = row("palisade").and_then(|r| r["vs_none"].as_f64());
                let spread = |mode| {
                    row(mode)
                        .and_then(|r| Fig::from(&r["stat"]))
                        .map_or("–".into(), |x| {
                            format!(
                                "{:.0}–{:.0}%",
                                x.p10 / x.median * 100.0,
                                x.p90 / x.median * 100.0
                            )
                        })
                };
                targets.push(Target {
                    what: format!(
                        "{what}, {}, {} rules",
                        placement.replace('_', " "),
                        count(top)
                    ),
                    goal: "≥ 97% of no enforcement".into(),
                    measured: ratio.map_or("–".into(), |x| {
                        format!(
                            "{:.1}% (runs' p10–p90: {} of their median without, {} with Palisade)",
                            x * 100.0,
                            spread("none"),
                            spread("palisade")
                        )
                    }),
                    met: ratio.map(|x| x >= 0.97),
                });
            }
            let med = |mode| {
                find(rows, top, mode, placement, "conn_rate")
                    .and_then(|r| Fig::from(&r["stat"]))
                    .map(|x| x.median)
            };
            let ratio = med("palisade").zip(med("iptables")).map(|(p, i)| p / i);
            targets.push(Target {
                what: format!(
                    "connection rate vs iptables, {}, {} rules",
                    placement.replace('_', " "),
                    count(top)
                ),
                goal: "≥ 10×".into(),
                measured: ratio.map_or("–".into(), |x| format!("{x:.2}×")),
                met: ratio.map(|x| x >= 10.0),
            });
        }
    }
    md
}
