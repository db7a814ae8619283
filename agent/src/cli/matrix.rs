//! `palisade matrix`: the truth table over all pods with an IP, through the compiled structures.
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::{load, CliError};
use crate::compiler::{
    compile, verdict, CompileOptions, CompiledOutput, SideDecision, Tier, Verdict,
};
use crate::model::{Model, ObjectKey, Protocol};

/// Arguments of `palisade matrix --manifests DIR --port PORT [--protocol P] [--json]`.
#[derive(Debug, Clone)]
pub struct MatrixArgs {
    pub manifests: PathBuf,
    pub port: u16,
    pub protocol: Protocol,
    pub json: bool,
}

/// One cell: may `from` connect to `to`?
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub from: String,
    pub to: String,
    pub allowed: bool,
    /// `Admin` or `Baseline` when a ClusterNetworkPolicy rule decided the cell: the denying
    /// side's Deny rule, else an Accept rule that allowed a side (Admin before Baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// That rule, e.g. `ClusterNetworkPolicy deny-x (Admin) ingress[0] "name"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Cell {
    /// The cell's character: `.` allowed, `X` denied (by NetworkPolicy isolation), and when a
    /// ClusterNetworkPolicy decided it `A`/`D` (Admin Accept/Deny) or `a`/`d` (Baseline
    /// Accept/Deny).
    pub fn mark(&self) -> char {
        match (self.tier, self.allowed) {
            (Some(Tier::Admin), true) => 'A',
            (Some(Tier::Admin), false) => 'D',
            (Some(Tier::Baseline), true) => 'a',
            (Some(Tier::Baseline), false) => 'd',
            (_, true) => '.',
            (_, false) => 'X',
        }
    }
}

/// The legend printed under a matrix that has ClusterNetworkPolicy marks.
pub const LEGEND: &str = "legend: . allowed  X denied by NetworkPolicy isolation  A/D allowed/denied by an Admin ClusterNetworkPolicy rule  a/d allowed/denied by a Baseline ClusterNetworkPolicy rule";

/// The ClusterNetworkPolicy rule that decided a verdict, if one did.
fn cluster_decider(v: &Verdict) -> Option<(Tier, String)> {
    let sides = [&v.egress, &v.ingress];
    let cluster = |d: &SideDecision| {
        d.rule()
            .filter(|r| r.is_cluster())
            .map(|r| (r.tier, r.to_string()))
    };
    if !v.allowed {
        let denier = sides.into_iter().find(|d| !d.allows())?;
        return cluster(denier);
    }
    let accepts: Vec<(Tier, String)> = sides.into_iter().filter_map(cluster).collect();
    accepts
        .into_iter()
        .min_by_key(|(tier, _)| *tier != Tier::Admin)
}

/// The table, rows = from, columns = to, in pod order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub protocol: Protocol,
    pub port: u16,
    #[serde(skip)]
    pub pods: Vec<String>,
    pub cells: Vec<Cell>,
}

impl Matrix {
    /// Upstream's print format: a header `-\tx/a\tx/b...`, then rows `x/a\t.\tX...` (`.` allowed,
    /// `X` denied).
    pub fn render_text(&self) -> String {
        let mut out = String::from("-");
        for pod in &self.pods {
            out.push('\t');
            out.push_str(pod);
        }
        out.push('\n');
        for (row, from) in self.pods.iter().enumerate() {
            out.push_str(from);
            for col in 0..self.pods.len() {
                let allowed = self
                    .cells
                    .get(row * self.pods.len() + col)
                    .is_some_and(|c| c.allowed);
                let mark = self
                    .cells
                    .get(row * self.pods.len() + col)
                    .map_or(if allowed { '.' } else { 'X' }, Cell::mark);
                out.push('\t');
                out.push(mark);
            }
            out.push('\n');
        }
        if self.cells.iter().any(|c| c.tier.is_some()) {
            out.push_str(LEGEND);
            out.push('\n');
        }
        out
    }

    /// Exactly one JSON object: `{"protocol":"TCP","port":80,"cells":[...]}`.
    pub fn render_json(&self) -> Result<String, CliError> {
        serde_json::to_string(self).map_err(CliError::Json)
    }
}

/// The pods the matrix covers (every pod with an IP) and the address each is probed at: its
/// first IP of `family` if given (`true` = IPv6), else its first IP.
pub fn matrix_pods(model: &Model, ipv6: Option<bool>) -> Vec<(ObjectKey, IpAddr)> {
    model
        .pods
        .values()
        .filter_map(|pod| {
            let ip = pod
                .ips
                .iter()
                .find(|ip| ipv6.is_none_or(|v6| ip.is_ipv6() == v6))?;
            Some((pod.key(), *ip))
        })
        .collect()
}

/// Computes the table from compiled output with the dataplane's lookup.
pub fn compute_matrix(
    compiled: &CompiledOutput,
    pods: &[(ObjectKey, IpAddr)],
    protocol: Protocol,
    port: u16,
) -> Matrix {
    let mut cells = Vec::with_capacity(pods.len() * pods.len());
    for (from, from_ip) in pods {
        for (to, to_ip) in pods {
            let v = verdict(compiled, *from_ip, *to_ip, protocol, port);
            let (tier, rule) = cluster_decider(&v).unzip();
            cells.push(Cell {
                from: from.to_string(),
                to: to.to_string(),
                allowed: v.allowed,
                tier,
                rule,
            });
        }
    }
    Matrix {
        protocol,
        port,
        pods: pods.iter().map(|(k, _)| k.to_string()).collect(),
        cells,
    }
}

/// Compiles `model` for all nodes and computes its matrix: the code path of `palisade matrix`.
pub fn matrix_for_model(
    model: &Model,
    protocol: Protocol,
    port: u16,
    ipv6: Option<bool>,
) -> (Matrix, CompiledOutput) {
    let compiled = compile(model, &CompileOptions::default());
    let pods = matrix_pods(model, ipv6);
    (compute_matrix(&compiled, &pods, protocol, port), compiled)
}

/// `palisade matrix`: prints the table to `out`, manifest notes and policy problems to `err`.
pub fn matrix(args: &MatrixArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), CliError> {
    let model = load(&args.manifests, err)?;
    let (table, compiled) = matrix_for_model(&model, args.protocol, args.port, None);
    for problem in &compiled.problems {
        writeln!(err, "{problem}").map_err(CliError::Io)?;
    }
    if args.json {
        writeln!(out, "{}", table.render_json()?).map_err(CliError::Io)?;
    } else {
        write!(out, "{}", table.render_text()).map_err(CliError::Io)?;
    }
    Ok(())
}
