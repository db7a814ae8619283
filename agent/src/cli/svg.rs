//! `palisade matrix --svg FILE`: the reachability matrix as a picture. Rows are sources, columns
//! destinations, pods grouped by namespace (bands and separators), allowed cells green with a
//! check mark, denied cells red with a cross; the protocol and port in the title. Cells a
//! ClusterNetworkPolicy rule decided carry the matrix's letter (`A`/`D` Admin Accept/Deny, `a`/`d`
//! Baseline) in their own shade, and the rule in their tooltip.

use std::{fmt::Write as _, io::Write, path::Path};

use super::matrix::Cell;
use super::{load, matrix_for_model, CliError, Matrix, MatrixArgs};
use crate::compiler::Tier;

const CELL: usize = 28;
const FONT: usize = 13;
const PAD: usize = 16;
const ALLOWED: &str = "#2e9d4f";
const DENIED: &str = "#d64545";
const ADMIN_ACCEPT: &str = "#1b6e34";
const ADMIN_DENY: &str = "#8e1b1b";
const BASELINE_ACCEPT: &str = "#5fbf7a";
const BASELINE_DENY: &str = "#e07b24";

/// A cell's fill, mark and tooltip word.
fn style(cell: &Cell) -> (&'static str, &'static str, String) {
    let rule = cell.rule.as_deref().unwrap_or("?");
    match (cell.tier, cell.allowed) {
        (Some(Tier::Admin), true) => (ADMIN_ACCEPT, "A", format!("allowed by {rule}")),
        (Some(Tier::Admin), false) => (ADMIN_DENY, "D", format!("denied by {rule}")),
        (Some(Tier::Baseline), true) => (BASELINE_ACCEPT, "a", format!("allowed by {rule}")),
        (Some(Tier::Baseline), false) => (BASELINE_DENY, "d", format!("denied by {rule}")),
        (_, true) => (ALLOWED, "✓", "allowed".to_owned()),
        (_, false) => (DENIED, "✗", "denied".to_owned()),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Runs of consecutive pods of one namespace: (namespace, first index, count).
fn groups(pods: &[String]) -> Vec<(String, usize, usize)> {
    let mut out: Vec<(String, usize, usize)> = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let ns = pod.split_once('/').map_or("", |(ns, _)| ns).to_owned();
        match out.last_mut() {
            Some((last, _, n)) if *last == ns => *n += 1,
            _ => out.push((ns, i, 1)),
        }
    }
    out
}

/// The SVG document.
pub fn render(m: &Matrix) -> String {
    let n = m.pods.len();
    let label_w = m.pods.iter().map(|p| p.chars().count()).max().unwrap_or(4) * 8 + 16;
    let left = PAD + label_w;
    let top = PAD + 40 + label_w;
    let title_w = 2 * PAD + 540;
    let width = (left + n * CELL + PAD + 150).max(title_w);
    let height = top + n * CELL + PAD + 30;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="{FONT}">
<rect width="100%" height="100%" fill="white"/>
<text x="{PAD}" y="{}" font-size="18" font-weight="bold">Reachability: {} port {} (rows: from, columns: to)</text>
"#,
        PAD + 18,
        m.protocol,
        m.port
    );
    bands(&mut s, m, left, top);
    labels(&mut s, m, left, top);
    cells(&mut s, m, left, top);
    legend(&mut s, m, left + n * CELL + 24, top);
    s.push_str("</svg>\n");
    s
}

fn bands(s: &mut String, m: &Matrix, left: usize, top: usize) {
    let n = m.pods.len();
    for (k, (ns, first, count)) in groups(&m.pods).into_iter().enumerate() {
        let shade = if k % 2 == 0 { "#eef2f7" } else { "#f7f7f7" };
        let (a, len) = (first * CELL, count * CELL);
        let ns = escape(&ns);
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="{}" height="{len}" fill="{shade}"/>"#,
            PAD,
            top + a,
            left - PAD
        );
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="{len}" height="{}" fill="{shade}"/>"#,
            left + a,
            PAD + 40,
            top - PAD - 40
        );
        let _ = writeln!(s, "<!-- namespace {ns} -->");
        if first > 0 {
            let _ = writeln!(
                s,
                r##"<line x1="{PAD}" y1="{y}" x2="{}" y2="{y}" stroke="#333" stroke-width="2"/><line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#333" stroke-width="2"/>"##,
                left + n * CELL,
                PAD + 40,
                top + n * CELL,
                y = top + a,
                x = left + a
            );
        }
    }
}

fn labels(s: &mut String, m: &Matrix, left: usize, top: usize) {
    for (i, pod) in m.pods.iter().enumerate() {
        let (ns, name) = pod.split_once('/').unwrap_or(("", pod));
        let name = format!(
            r##"<tspan fill="#667">{}/</tspan><tspan font-weight="bold">{}</tspan>"##,
            escape(ns),
            escape(name)
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end"><title>{}</title>{name}</text>"#,
            left - 6,
            top + i * CELL + CELL / 2 + FONT / 2 - 1,
            escape(pod)
        );
        let (x, y) = (left + i * CELL + CELL / 2 + FONT / 2 - 1, top - 6);
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{y}" transform="rotate(-90 {x} {y})"><title>{}</title>{name}</text>"#,
            escape(pod)
        );
    }
}

fn cells(s: &mut String, m: &Matrix, left: usize, top: usize) {
    let n = m.pods.len();
    for (idx, cell) in m.cells.iter().enumerate().take(n * n) {
        let (row, col) = (idx / n, idx % n);
        let (x, y) = (left + col * CELL, top + row * CELL);
        let (fill, mark, word) = style(cell);
        let word = escape(&word);
        let _ = writeln!(
            s,
            r#"<g><title>{} → {} {}/{}: {word}</title><rect x="{}" y="{}" width="{}" height="{}" rx="3" fill="{fill}"/><text x="{}" y="{}" fill="white" text-anchor="middle" font-weight="bold">{mark}</text></g>"#,
            escape(&cell.from),
            escape(&cell.to),
            m.protocol,
            m.port,
            x + 1,
            y + 1,
            CELL - 2,
            CELL - 2,
            x + CELL / 2,
            y + CELL / 2 + FONT / 2 - 1
        );
    }
}

fn legend(s: &mut String, m: &Matrix, x: usize, y: usize) {
    let mut entries = vec![(ALLOWED, "✓", "allowed"), (DENIED, "✗", "denied")];
    let tiered = [
        (ADMIN_ACCEPT, "A", "Admin Accept"),
        (ADMIN_DENY, "D", "Admin Deny"),
        (BASELINE_ACCEPT, "a", "Baseline Accept"),
        (BASELINE_DENY, "d", "Baseline Deny"),
    ];
    for entry in tiered {
        if m.cells.iter().any(|c| style(c).1 == entry.1) {
            entries.push(entry);
        }
    }
    for (i, (fill, mark, text)) in entries.into_iter().enumerate() {
        let y = y + i * (CELL + 6);
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{y}" width="{c}" height="{c}" rx="3" fill="{fill}"/><text x="{}" y="{}" fill="white" text-anchor="middle" font-weight="bold">{mark}</text><text x="{}" y="{}">{text}</text>"#,
            x + CELL / 2,
            y + CELL / 2 + FONT / 2 - 1,
            x + CELL + 8,
            y + CELL / 2 + FONT / 2 - 1,
            c = CELL - 2
        );
    }
}

/// `palisade matrix --manifests DIR --port P --svg FILE`: writes the picture to `file`.
pub fn write(args: &MatrixArgs, file: &Path, err: &mut dyn Write) -> Result<(), CliError> {
    let model = load(&args.manifests, err)?;
    let (table, compiled) = matrix_for_model(&model, args.protocol, args.port, None);
    for problem in &compiled.problems {
        writeln!(err, "{problem}").map_err(CliError::Io)?;
    }
    std::fs::write(file, render(&table)).map_err(|source| CliError::Write {
        path: file.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::matrix::Cell;
    use crate::model::Protocol;

    #[test]
    fn groups_namespaces_and_colours_cells() {
        let pods: Vec<String> = ["x/a", "x/b", "y/c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cells = pods
            .iter()
            .flat_map(|f| {
                pods.iter().map(move |t| Cell {
                    from: f.clone(),
                    to: t.clone(),
                    allowed: f == t,
                    tier: None,
                    rule: None,
                })
            })
            .collect();
        let m = Matrix {
            protocol: Protocol::Tcp,
            port: 80,
            pods,
            cells,
        };
        let svg = render(&m);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("TCP port 80"));
        assert_eq!(
            svg.matches(ALLOWED).count(),
            3 + 1,
            "3 allowed cells and the legend"
        );
        assert_eq!(svg.matches(DENIED).count(), 6 + 1);
        assert_eq!(
            groups(&m.pods),
            vec![("x".into(), 0, 2), ("y".into(), 2, 1)]
        );
        assert!(svg.contains("x/a → y/c TCP/80: denied"));
        assert!(
            !svg.contains(ADMIN_DENY),
            "no tier shades without tier cells"
        );
    }

    #[test]
    fn tier_cells_get_their_letter_shade_rule_and_legend() {
        let pods: Vec<String> = vec!["x/a".into(), "y/b".into()];
        let cell = |from: &str, to: &str, allowed, tier| Cell {
            from: from.into(),
            to: to.into(),
            allowed,
            tier,
            rule: tier.map(|_| "ClusterNetworkPolicy p (Admin) ingress[0]".to_owned()),
        };
        let m = Matrix {
            protocol: Protocol::Tcp,
            port: 80,
            pods,
            cells: vec![
                cell("x/a", "x/a", true, None),
                cell("x/a", "y/b", false, Some(Tier::Admin)),
                cell("y/b", "x/a", false, Some(Tier::Baseline)),
                cell("y/b", "y/b", true, None),
            ],
        };
        let svg = render(&m);
        assert_eq!(svg.matches(ADMIN_DENY).count(), 1 + 1, "cell and legend");
        assert_eq!(svg.matches(BASELINE_DENY).count(), 1 + 1);
        assert!(
            !svg.contains(ADMIN_ACCEPT),
            "legend lists only marks in use"
        );
        assert!(
            svg.contains("x/a → y/b TCP/80: denied by ClusterNetworkPolicy p (Admin) ingress[0]")
        );
        assert!(svg.contains(">D</text>") && svg.contains(">Admin Deny</text>"));
    }
}
