//! Truth tables: the expected table of a probe (IP-class cells resolved), the comparison with
//! what was observed (loopback cells apart), and upstream's print format (`.` allowed, `X`
//! denied, tab-separated, the `-` corner), alone and side by side.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::case::Probe;
use super::template::{self, PodIps, TemplateError};

/// One cell of an expected table, resolved for one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub from: String,
    pub to: String,
    pub loopback: bool,
    pub allowed: bool,
    /// The cell's own port (partial probes), overriding the probe's.
    pub port: Option<u16>,
}

/// A probe's expected table for one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Row and column order: pods in order of first appearance.
    pub order: Vec<String>,
    pub cells: Vec<Cell>,
}

/// Resolves a probe's expected table with these pod IPs (for `allowed_by_ip_class`).
pub fn expected(probe: &Probe, ips: &PodIps, refs: &[String]) -> Result<Expected, TemplateError> {
    let mut order: Vec<String> = Vec::new();
    let mut cells = Vec::new();
    for c in &probe.expected {
        for pod in [&c.from, &c.to] {
            if !order.contains(pod) {
                order.push(pod.clone());
            }
        }
        cells.push(Cell {
            from: c.from.clone(),
            to: c.to.clone(),
            loopback: c.is_loopback(),
            allowed: template::resolve(c, ips, refs)?,
            port: c.port,
        });
    }
    Ok(Expected { order, cells })
}

/// A cell whose observation differs from the expectation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    pub from: String,
    pub to: String,
    pub expected: bool,
    pub observed: bool,
    /// The cell's own port, when it has one (partial probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Expected against observed: differing cells, loopback ones apart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub differing: Vec<Diff>,
    pub loopback_differing: Vec<Diff>,
}

impl Comparison {
    /// Every non-loopback cell matches, and the loopback ones too when they are required.
    pub fn passes(&self, loopback_required: bool) -> bool {
        self.differing.is_empty() && (!loopback_required || self.loopback_differing.is_empty())
    }
}

/// Compares `observed` (one value per expected cell, same order).
pub fn compare(expected: &Expected, observed: &[bool]) -> Comparison {
    let mut out = Comparison::default();
    for (cell, &seen) in expected.cells.iter().zip(observed) {
        if cell.allowed == seen {
            continue;
        }
        let diff = Diff {
            from: cell.from.clone(),
            to: cell.to.clone(),
            expected: cell.allowed,
            observed: seen,
            port: cell.port,
        };
        if cell.loopback {
            out.loopback_differing.push(diff);
        } else {
            out.differing.push(diff);
        }
    }
    out
}

/// (from, to) → allowed.
pub type Grid = BTreeMap<(String, String), bool>;

/// Builds a grid from cells and values.
pub fn grid(expected: &Expected, values: &[bool]) -> Grid {
    expected
        .cells
        .iter()
        .zip(values)
        .map(|(c, v)| ((c.from.clone(), c.to.clone()), *v))
        .collect()
}

fn mark(v: Option<bool>) -> char {
    match v {
        Some(true) => '.',
        Some(false) => 'X',
        None => '?',
    }
}

/// Upstream's print format: a header row `-\tns/a\t...`, then one row per source.
pub fn upstream_lines(order: &[String], grid: &Grid) -> Vec<String> {
    let mut lines = vec![std::iter::once("-")
        .chain(order.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\t")];
    for from in order {
        let mut row = from.clone();
        for to in order {
            row.push('\t');
            row.push(mark(grid.get(&(from.clone(), to.clone())).copied()));
        }
        lines.push(row);
    }
    lines
}

/// Expected, observed and comparison side by side, padded to columns. In the comparison,
/// `.` is a match, `X` a differing cell that counts, `x` a differing loopback cell that is
/// reported but not required.
pub fn side_by_side(
    order: &[String],
    expected: &Grid,
    observed: &Grid,
    loopback_required: bool,
) -> String {
    let width = order.iter().map(String::len).max().unwrap_or(1).max(1);
    let comparison: BTreeMap<(String, String), char> = expected
        .iter()
        .map(|(k, e)| {
            let c = match observed.get(k) {
                None => '?',
                Some(o) if o == e => '.',
                Some(_) if k.0 == k.1 && !loopback_required => 'x',
                Some(_) => 'X',
            };
            (k.clone(), c)
        })
        .collect();
    let block = |title: &str, cell: &dyn Fn(&(String, String)) -> char| -> Vec<String> {
        let total = (width + 1) * (order.len() + 1) - 1;
        let mut rows = vec![format!("{title:<total$}")];
        let mut header = format!("{:<width$}", "-");
        for to in order {
            let _ = write!(header, " {to:<width$}");
        }
        rows.push(header);
        for from in order {
            let mut row = format!("{from:<width$}");
            for to in order {
                let c = cell(&(from.clone(), to.clone()));
                let _ = write!(row, " {c:<width$}");
            }
            rows.push(row);
        }
        rows
    };
    let e = block("expected", &|k| mark(expected.get(k).copied()));
    let o = block("observed", &|k| mark(observed.get(k).copied()));
    let c = block("comparison", &|k| comparison.get(k).copied().unwrap_or('?'));
    let mut out = String::new();
    for ((a, b), c) in e.iter().zip(&o).zip(&c) {
        let _ = writeln!(out, "{}", format!("{a} | {b} | {c}").trim_end());
    }
    out
}

/// The differing cells, one per line: `x/a -> y/b: expected . observed X`.
pub fn describe(diffs: &[Diff]) -> String {
    diffs
        .iter()
        .map(|d| {
            format!(
                "{} -> {}{}: expected {} observed {}",
                d.from,
                d.to,
                d.port.map(|p| format!(":{p}")).unwrap_or_default(),
                mark(Some(d.expected)),
                mark(Some(d.observed))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A partial table, one judged cell per line (`from -> to:port expected . observed X`), for
/// probes whose cells do not fill a grid (a pair may appear on several ports).
pub fn cell_lines(expected: &Expected, observed: &[bool]) -> String {
    let mut out = String::new();
    for (c, &o) in expected.cells.iter().zip(observed) {
        let port = c.port.map(|p| format!(":{p}")).unwrap_or_default();
        let verdict = if c.allowed == o { "ok" } else { "DIFFERS" };
        let _ = writeln!(
            out,
            "{} -> {}{port}: expected {} observed {} {verdict}",
            c.from,
            c.to,
            mark(Some(c.allowed)),
            mark(Some(o))
        );
    }
    out
}
