//! The per-packet section of the report (from `packet.json`).

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    data::{arr, count, distinct, f, mib, s, Fig, Target},
    svg::{line_chart, LineChart, Series},
    Chart,
};

/// (case, method, label) of the figures shown, in column order.
const COLUMNS: [(&str, &str, &str); 6] = [
    ("ct_hit", "repeat", "conntrack hit"),
    ("ct_hit_reply", "repeat", "conntrack hit, reply"),
    ("new_allowed", "single", "new flow allowed ¹"),
    ("new_denied", "repeat", "new flow denied"),
    ("ct_hit", "single", "conntrack hit ¹"),
    ("new_denied", "single", "new flow denied ¹"),
];

fn find<'a>(
    points: &'a [Value],
    rules: f64,
    peers: f64,
    fam: &str,
    case: &str,
    method: &str,
) -> Option<&'a Value> {
    points.iter().find(|p| {
        f(p, "rules") == rules
            && f(p, "peers") == peers
            && s(p, "family") == fam
            && s(p, "case") == case
            && s(p, "method") == method
    })
}

fn above(p: Option<&Value>) -> Option<Fig> {
    p.and_then(|p| Fig::from(p.get("above_baseline_ns")?))
}

fn raw(p: Option<&Value>) -> Option<Fig> {
    p.and_then(|p| Fig::from(p.get("raw_ns")?))
}

const METHOD: &str = "\
Each figure is the kernel-reported duration of `BPF_PROG_TEST_RUN` on a crafted Ethernet frame, \
for `pal_to_pod` (what a pod receives; its ingress is isolated) or `pal_from_pod` (the pod's \
reply), minus the empty classifier `pal_baseline` run on the same frame in the same round. \
Rounds alternate the baseline and every case (rotating their order), so a slower moment of this \
shared machine hits them alike; the \"above baseline\" spread is that of the per-round differences.\n\n\
- **Repeat method** (conntrack hit, reply, denied): one call runs the same packet `repeat` times \
and the kernel reports the mean per run. A denied packet creates no state, so every repetition \
takes the same path; the events ring is drained before each call and the bench checks that every \
run wrote its event (the ring never overflowed).\n\
- **Single-run method ¹** (new flow allowed): an allowed new flow creates a conntrack entry, so a \
repeated packet is a conntrack hit from its second run on. Each new flow is therefore one call \
with `repeat = 1` on a packet with a fresh source port (a distinct 5-tuple, never seen before), \
and a sample is the median of `singles` such calls. The kernel's per-call duration then includes \
the two clock reads around the run and a cache that the syscall has partly evicted; the baseline \
is measured the same way (single runs), and the conntrack hit and the denied flow are given by both \
methods, so the difference between the methods can be seen.\n\
- The endpoint's ingress table holds `rules` distinct entries (rule *i*: the identity of peer \
*i* mod `peers`, TCP port 1 + *i* / `peers`); the identity trie holds `peers` peers, each with an \
IPv4 /32 and an IPv6 /128 (2 × `peers` prefixes). The measured flow uses rule `rules`/2; the denied \
flow is the same peer on a port no rule allows (exact and any-peer lookups both miss).\n";

/// Renders the section; adds its charts and targets.
pub fn section(v: &Value, charts: &mut Vec<Chart>, targets: &mut Vec<Target>) -> String {
    let points = arr(v, "points");
    let mut md = String::new();
    let plan = v.get("plan").cloned().unwrap_or(Value::Null);
    let _ = writeln!(md, "## Per-packet cost (BPF_PROG_TEST_RUN)\n\n{METHOD}");
    let _ = writeln!(
        md,
        "Plan: {} rounds, repeat = {}, {} single runs per sample; kernel {}; {:.0} s.\n",
        f(&plan, "rounds"),
        f(&plan, "repeat"),
        f(&plan, "singles"),
        s(v, "kernel"),
        f(v, "seconds")
    );
    let rules_all = distinct(points, "rules");
    let peers_all = distinct(points, "peers");
    let (Some(&r_min), Some(&r_max), Some(&p_max)) =
        (rules_all.first(), rules_all.last(), peers_all.last())
    else {
        md.push_str("No per-packet figures in this run.\n\n");
        return md;
    };
    // Baseline.
    md.push_str("### The baseline (empty classifier)\n\n| family | repeat method, ns/run | single-run method, ns/run |\n| --- | --- | --- |\n");
    for fam in ["ipv4", "ipv6"] {
        let cell = |m| {
            raw(find(points, r_min, peers_all[0], fam, "baseline", m))
                .map_or("–".into(), |x| x.cell(0))
        };
        let _ = writeln!(md, "| {fam} | {} | {} |", cell("repeat"), cell("single"));
    }
    md.push('\n');
    // Full tables.
    for fam in ["ipv4", "ipv6"] {
        let _ = writeln!(
            md,
            "### {}: ns above the baseline, median (p10–p90)\n",
            fam.replace("ip", "IP")
        );
        md.push_str("| rules | peers |");
        for (_, _, label) in COLUMNS {
            let _ = write!(md, " {label} |");
        }
        md.push_str("\n| ---: | ---: |");
        md.push_str(&" ---: |".repeat(COLUMNS.len()));
        md.push('\n');
        for &peers in &peers_all {
            for &rules in &rules_all {
                let _ = write!(md, "| {} | {} |", count(rules), count(peers));
                for (case, method, _) in COLUMNS {
                    let cell = above(find(points, rules, peers, fam, case, method))
                        .map_or("–".into(), |x| x.cell(0));
                    let _ = write!(md, " {cell} |");
                }
                md.push('\n');
            }
        }
        md.push('\n');
    }
    // Charts.
    let series = |x_key: &str, fixed: f64| -> Vec<Series> {
        let xs = if x_key == "rules" {
            &rules_all
        } else {
            &peers_all
        };
        let mut out = Vec::new();
        for fam in ["ipv4", "ipv6"] {
            for (k, (case, method, label)) in COLUMNS[..4].iter().enumerate() {
                let pts = xs
                    .iter()
                    .filter_map(|&x| {
                        let (r, p) = if x_key == "rules" {
                            (x, fixed)
                        } else {
                            (fixed, x)
                        };
                        above(find(points, r, p, fam, case, method)).map(|fig| fig.pt(x))
                    })
                    .collect();
                out.push(Series {
                    label: format!("{} {fam}", label.trim_end_matches(" ¹")),
                    points: pts,
                    dashed: fam == "ipv6",
                    color: Some(k),
                });
            }
        }
        out
    };
    charts.push(Chart {
        file: "packet-vs-rules.svg".into(),
        svg: line_chart(&LineChart {
            title: format!(
                "Per-packet cost above baseline vs rules ({} peers)",
                count(p_max)
            ),
            x_label: "policy entries in the endpoint's table (log scale)".into(),
            y_label: "ns per packet above baseline".into(),
            log_x: true,
            series: series("rules", p_max),
        }),
    });
    charts.push(Chart {
        file: "packet-vs-peers.svg".into(),
        svg: line_chart(&LineChart {
            title: format!(
                "Per-packet cost above baseline vs peers ({} rules)",
                count(r_max)
            ),
            x_label: "peer addresses (log scale; two prefixes each, IPv4 and IPv6)".into(),
            y_label: "ns per packet above baseline".into(),
            log_x: true,
            series: series("peers", r_max),
        }),
    });
    md.push_str("![per-packet cost vs rules](performance/packet-vs-rules.svg)\n\n");
    md.push_str("![per-packet cost vs peers](performance/packet-vs-peers.svg)\n\n");
    breakdown(v, &mut md);
    maps(v, &mut md);
    // Targets.
    for fam in ["ipv4", "ipv6"] {
        for (case, method, goal, what) in [
            ("ct_hit", "repeat", 40.0, "conntrack hit"),
            ("new_allowed", "single", 80.0, "new flow allowed"),
        ] {
            let at = |r| above(find(points, r, p_max, fam, case, method));
            let (lo, hi) = (at(r_min), at(r_max));
            let met = lo.zip(hi).map(|(a, b)| a.median < goal && b.median < goal);
            targets.push(Target {
                what: format!("{what}, {fam}, above baseline"),
                goal: format!(
                    "< {goal:.0} ns at {} and {} rules",
                    count(r_min),
                    count(r_max)
                ),
                measured: format!(
                    "{} / {} ns",
                    lo.map_or("–".into(), |x| format!("{:.0}", x.median)),
                    hi.map_or("–".into(), |x| format!("{:.0}", x.median))
                ),
                met,
            });
        }
    }
    md
}

fn breakdown(v: &Value, md: &mut String) {
    let rows = arr(v, "breakdown");
    if rows.is_empty() {
        return;
    }
    md.push_str("### Where the time goes (IPv4, 10 rules, 10 peers, repeat method)\n\n| path | ns raw | ns above baseline |\n| --- | ---: | ---: |\n");
    for p in rows {
        let label = match s(p, "case") {
            "no_record" => {
                "endpoint record missing: fails closed (lookup miss, parse, drop counter, event)"
            }
            "arp" => "ARP at an endpoint (endpoint lookup, parse, counter)",
            other => other,
        };
        let _ = writeln!(
            md,
            "| {label} | {} | {} |",
            raw(Some(p)).map_or("–".into(), |x| x.cell(0)),
            above(Some(p)).map_or("–".into(), |x| x.cell(0)),
        );
    }
    md.push('\n');
}

fn maps(v: &Value, md: &mut String) {
    let configs = arr(v, "configs");
    let Some(big) = configs
        .iter()
        .max_by(|a, b| (f(a, "rules") + f(a, "peers")).total_cmp(&(f(b, "rules") + f(b, "peers"))))
    else {
        return;
    };
    let _ = writeln!(
        md,
        "### BPF map memory at {} rules and {} peers ({} identity prefixes)\n\n\
         As the kernel accounts it (`memlock` in each map's fdinfo): hash maps are preallocated at \
         their maximum size, LPM tries grow with their entries.\n\n\
         | map | type | max entries | key + value bytes | memory |\n| --- | --- | ---: | ---: | ---: |",
        count(f(big, "rules")),
        count(f(big, "peers")),
        count(f(big, "identity_prefixes")),
    );
    let mut total = 0.0;
    for m in arr(big, "maps") {
        let bytes = f(m, "memlock_bytes");
        total += bytes;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} + {} | {} |",
            s(m, "name"),
            s(m, "map_type"),
            f(m, "max_entries"),
            f(m, "key_size"),
            f(m, "value_size"),
            mib(bytes)
        );
    }
    let _ = writeln!(md, "| total | | | | {} |\n", mib(total));
    md.push_str("Trie memory by size (identity trie: 2 prefixes per peer; policy trie: one entry per rule):\n\n| rules | peers | identity trie | policy trie |\n| ---: | ---: | ---: | ---: |\n");
    for c in configs {
        let mem = |prefix: &str| {
            arr(c, "maps")
                .iter()
                .find(|m| s(m, "name").starts_with(prefix))
                .map_or("–".into(), |m| mib(f(m, "memlock_bytes")))
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            count(f(c, "rules")),
            count(f(c, "peers")),
            mem("PAL_IDENT"),
            mem("PAL_POLICY")
        );
    }
    md.push('\n');
}
