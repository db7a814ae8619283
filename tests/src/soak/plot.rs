//! The soak plot: one SVG with two panels over time, agent RSS per node (MB) and BPF map
//! entries per node (endpoints, identities, policy entries, conntrack), with the churn phase
//! shaded.

use std::fmt::Write as _;

use super::sample::Sample;

const W: f64 = 900.0;
const PANEL_H: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const GAP: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

fn panel(
    out: &mut String,
    y0: f64,
    title: &str,
    unit: &str,
    series: &[Series],
    t_max: f64,
    shade: Option<(f64, f64)>,
) {
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let plot_w = W - LEFT - RIGHT;
    let x = |t: f64| LEFT + t / t_max.max(1e-9) * plot_w;
    let y = |v: f64| y0 + PANEL_H - v / y_max * PANEL_H;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{title}</text>"#,
        y0 - 10.0
    );
    if let Some((a, b)) = shade {
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{y0}\" width=\"{:.1}\" height=\"{PANEL_H}\" fill=\"#f0f0f0\"/>",
            x(a),
            (x(b) - x(a)).max(0.0)
        );
    }
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{y0}\" width=\"{plot_w}\" height=\"{PANEL_H}\" fill=\"none\" stroke=\"#888\"/>"
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{v:.0} {unit}</text>",
            LEFT - 5.0,
            y(v) + 3.0
        );
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            pts.join(" ")
        );
        let ly = y0 + 14.0 * i as f64 + 10.0;
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            W - RIGHT + 10.0,
            W - RIGHT + 30.0,
            W - RIGHT + 35.0,
            ly + 4.0,
            s.name
        );
    }
}

/// The SVG of a soak run. `churn` is the churn phase (seconds since start).
pub fn svg(samples: &[Sample], churn: (f64, f64), title: &str) -> String {
    let t_max = samples.last().map_or(1.0, |s| s.t_s);
    let nodes = samples.first().map_or(0, |s| s.nodes.len());
    let mut rss = Vec::new();
    let mut maps = Vec::new();
    for n in 0..nodes {
        rss.push(Series {
            name: format!("node {n} RSS"),
            points: samples
                .iter()
                .map(|s| (s.t_s, s.nodes[n].rss_kb as f64 / 1024.0))
                .collect(),
        });
        for (map, label) in [
            ("PAL_EP_V1", "endpoints"),
            ("PAL_IDENT_V1", "identities"),
            ("PAL_POLICY_V1", "policy"),
            ("PAL_CT_V1", "conntrack"),
        ] {
            maps.push(Series {
                name: format!("node {n} {label}"),
                points: samples
                    .iter()
                    .map(|s| (s.t_s, s.nodes[n].maps.get(map).copied().unwrap_or(0) as f64))
                    .collect(),
            });
        }
    }
    let h = TOP + 2.0 * PANEL_H + GAP + 40.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"20\" font-size=\"15\">{title}</text>\n"
    );
    panel(
        &mut out,
        TOP + 10.0,
        "agent RSS",
        "MB",
        &rss,
        t_max,
        Some(churn),
    );
    panel(
        &mut out,
        TOP + PANEL_H + GAP,
        "BPF map entries",
        "",
        &maps,
        t_max,
        Some(churn),
    );
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"11\">time (s); shaded: churn (pods and policies created, relabelled, deleted); after it, everything churned is deleted</text>",
        h - 12.0
    );
    out.push_str("</svg>\n");
    out
}
