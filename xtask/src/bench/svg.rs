//! Minimal SVG charts (no dependencies): line charts with a log or linear x axis and p10–p90
//! error bars, and grouped bar charts with error bars.

use std::fmt::Write as _;

const W: f64 = 760.0;
const H: f64 = 380.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// A point: x, median, and the spread shown as an error bar.
#[derive(Debug, Clone, Copy)]
pub struct Pt {
    pub x: f64,
    pub y: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<Pt>,
    pub dashed: bool,
    /// Palette index (series that belong together share a colour); default: the series index.
    pub color: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
}

/// One bar: median and spread; `None` when not measured.
pub type Bar = Option<Pt>;

#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    /// Group labels along the x axis.
    pub groups: Vec<String>,
    /// One entry per series: its label and one bar per group.
    pub series: Vec<(String, Vec<Bar>)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" upper bound and tick step for values up to `max`.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 && v % 1e6 == 0.0 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 && v % 1e3 == 0.0 {
        format!("{}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn header(out: &mut String, title: &str, y_label: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15" font-weight="bold">{}</text>
<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>
"#,
        LEFT,
        esc(title),
        TOP + (H - TOP - BOTTOM) / 2.0,
        esc(y_label)
    );
}

fn y_axis(out: &mut String, y_max: f64, step: f64) -> impl Fn(f64) -> f64 {
    let plot_h = H - TOP - BOTTOM;
    let ys = move |v: f64| TOP + plot_h * (1.0 - v / y_max);
    let mut v = 0.0;
    while v <= y_max + step / 2.0 {
        let y = ys(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            fmt_num(v)
        );
        v += step;
    }
    ys
}

fn legend(out: &mut String, labels: &[(String, bool, usize)]) {
    for (i, (label, dashed, color)) in labels.iter().enumerate() {
        let y = TOP + 10.0 + 18.0 * i as f64;
        let x = W - RIGHT + 14.0;
        let c = COLORS[color % COLORS.len()];
        let dash = if *dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{x}" x2="{}" y1="{y}" y2="{y}" stroke="{c}" stroke-width="3"{dash}/><text x="{}" y="{}">{}</text>"#,
            x + 22.0,
            x + 28.0,
            y + 4.0,
            esc(label)
        );
    }
}

/// Renders a line chart.
pub fn line_chart(c: &LineChart) -> String {
    let mut out = String::new();
    header(&mut out, &c.title, &c.y_label);
    let all: Vec<Pt> = c.series.iter().flat_map(|s| s.points.clone()).collect();
    let y_top = all.iter().map(|p| p.hi.max(p.y)).fold(0.0, f64::max);
    let (y_max, step) = nice_axis(y_top * 1.05);
    let ys = y_axis(&mut out, y_max, step);
    let tx = |x: f64| if c.log_x { x.max(1e-9).log10() } else { x };
    let xs_all: Vec<f64> = all.iter().map(|p| tx(p.x)).collect();
    let x_min = xs_all.iter().copied().fold(f64::INFINITY, f64::min);
    let x_max = xs_all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = if x_max > x_min { x_max - x_min } else { 1.0 };
    let plot_w = W - LEFT - RIGHT;
    let xs = |x: f64| LEFT + 20.0 + (plot_w - 40.0) * (tx(x) - x_min) / span;
    let mut ticks: Vec<f64> = all.iter().map(|p| p.x).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for t in &ticks {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            xs(*t),
            H - BOTTOM + 18.0,
            fmt_num(*t)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        H - 16.0,
        esc(&c.x_label)
    );
    for (i, s) in c.series.iter().enumerate() {
        let col = COLORS[s.color.unwrap_or(i) % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", xs(p.x), ys(p.y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{col}" stroke-width="2"{dash} points="{}"/>"#,
            pts.join(" ")
        );
        for p in &s.points {
            let (x, y) = (xs(p.x), ys(p.y));
            let _ = writeln!(
                out,
                r#"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="{col}"/><circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{col}"/>"#,
                ys(p.lo),
                ys(p.hi)
            );
        }
    }
    let labels: Vec<(String, bool, usize)> = c
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| (s.label.clone(), s.dashed, s.color.unwrap_or(i)))
        .collect();
    legend(&mut out, &labels);
    out.push_str("</svg>\n");
    out
}

/// Renders a grouped bar chart.
pub fn bar_chart(c: &BarChart) -> String {
    let mut out = String::new();
    header(&mut out, &c.title, &c.y_label);
    let y_top = c
        .series
        .iter()
        .flat_map(|(_, bars)| bars.iter().flatten())
        .map(|p| p.hi.max(p.y))
        .fold(0.0, f64::max);
    let (y_max, step) = nice_axis(y_top * 1.05);
    let ys = y_axis(&mut out, y_max, step);
    let plot_w = W - LEFT - RIGHT;
    let groups = c.groups.len().max(1) as f64;
    let group_w = plot_w / groups;
    let n = c.series.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / n;
    for (g, label) in c.groups.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + group_w * (g as f64 + 0.5),
            H - BOTTOM + 18.0,
            esc(label)
        );
    }
    for (i, (_, bars)) in c.series.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        for (g, bar) in bars.iter().enumerate() {
            let Some(p) = bar else { continue };
            let x = LEFT + group_w * g as f64 + group_w * 0.1 + bar_w * i as f64;
            let (y0, y1) = (ys(0.0), ys(p.y));
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="{col}"/>"#,
                bar_w * 0.9,
                (y0 - y1).max(0.0)
            );
            let cx = x + bar_w * 0.45;
            let _ = writeln!(
                out,
                r##"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="#000"/>"##,
                ys(p.lo),
                ys(p.hi)
            );
        }
    }
    let labels: Vec<(String, bool, usize)> = c
        .series
        .iter()
        .enumerate()
        .map(|(i, (l, _))| (l.clone(), false, i))
        .collect();
    legend(&mut out, &labels);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_is_nice() {
        assert_eq!(nice_axis(97.0), (100.0, 20.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        let (max, step) = nice_axis(1234.0);
        assert!(max >= 1234.0 && step > 0.0);
    }

    #[test]
    fn charts_render() {
        let pt = |x, y| Pt {
            x,
            y,
            lo: y * 0.9,
            hi: y * 1.1,
        };
        let svg = line_chart(&LineChart {
            title: "a <b>".into(),
            x_label: "rules".into(),
            y_label: "ns".into(),
            log_x: true,
            series: vec![Series {
                label: "s".into(),
                points: vec![pt(10.0, 5.0), pt(1e5, 7.0)],
                dashed: true,
                color: None,
            }],
        });
        assert!(svg.starts_with("<svg") && svg.contains("a &lt;b&gt;") && svg.contains("100k"));
        let svg = bar_chart(&BarChart {
            title: "t".into(),
            y_label: "Gbit/s".into(),
            groups: vec!["10".into(), "1k".into()],
            series: vec![("none".into(), vec![Some(pt(0.0, 3.0)), None])],
        });
        assert!(svg.contains("<rect x="));
    }
}
