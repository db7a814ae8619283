//! The `conformance` command line:
//! `--cases FILE [--cases FILE]... [--case ID]... [--ip-family ipv4|ipv6|dual]
//! [--target service|pod|both] [--source manifests|kube] [--report OUT.json]`.

use std::path::PathBuf;

use super::report::Target;
use crate::addr::Family;

pub const USAGE: &str = "\
usage: conformance --cases FILE [--cases FILE]... [--case ID]...
                   [--ip-family ipv4|ipv6|dual] [--target service|pod|both]
                   [--source manifests|kube] [--report OUT.json]

Runs NetworkPolicy conformance cases (shared/conformance/README.md format) through test
nodes, the real Palisade agent per node and real probes. Needs root.

  --cases FILE     a case file (repeatable; at least one)
  --case ID        run only this case (repeatable; default: all)
  --ip-family F    ipv4 (default), ipv6, or dual (each case for IPv4 and for IPv6)
  --target T       service (default: through the ClusterIP, as upstream), pod, or both
  --source S       manifests (default: a manifest directory per cluster), or kube (a real
                   API server the agents watch; needs `cargo xtask k8s build` once; cases
                   that need a field the 1.20 server drops run through manifests instead)
  --report FILE    write the JSON report there

Exit status: 0 all cases passed or skipped, 1 a case failed, 2 usage or setup error.";

/// The command line is wrong.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("{flag} needs a value\n\n{USAGE}")]
    MissingValue { flag: String },
    #[error("{flag}: {value:?} is not one of {allowed}\n\n{USAGE}")]
    BadValue {
        flag: String,
        value: String,
        allowed: &'static str,
    },
    #[error("unknown argument {0:?}\n\n{USAGE}")]
    Unknown(String),
    #[error("--cases FILE is required\n\n{USAGE}")]
    NoCases,
    #[error("{flag} given twice")]
    Repeated { flag: String },
}

/// Where the agents get the cluster state from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Manifests,
    Kube,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub cases: Vec<PathBuf>,
    pub only: Vec<String>,
    pub family: Family,
    pub targets: Vec<Target>,
    pub source: Source,
    pub report: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Run(Args),
}

/// The family flag's name for reports.
pub fn family_flag(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
        Family::Dual => "dual",
    }
}

fn choice<T: Copy>(
    flag: &str,
    value: &str,
    options: &[(&str, T)],
    allowed: &'static str,
) -> Result<T, CliError> {
    options
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| CliError::BadValue {
            flag: flag.to_owned(),
            value: value.to_owned(),
            allowed,
        })
}

/// Parses the arguments after the program name. Accepts `--flag value` and `--flag=value`.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, CliError> {
    let mut out = Args {
        cases: Vec::new(),
        only: Vec::new(),
        family: Family::Ipv4,
        targets: vec![Target::Service],
        source: Source::Manifests,
        report: None,
    };
    let mut seen: Vec<String> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let known = [
            "--cases",
            "--case",
            "--ip-family",
            "--target",
            "--source",
            "--report",
        ];
        if !known.contains(&flag.as_str()) {
            return Err(CliError::Unknown(arg));
        }
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| CliError::MissingValue { flag: flag.clone() })?;
        if !["--cases", "--case"].contains(&flag.as_str()) {
            if seen.contains(&flag) {
                return Err(CliError::Repeated { flag });
            }
            seen.push(flag.clone());
        }
        apply(&mut out, &flag, value)?;
    }
    if out.cases.is_empty() {
        return Err(CliError::NoCases);
    }
    Ok(Command::Run(out))
}

fn apply(out: &mut Args, flag: &str, value: String) -> Result<(), CliError> {
    match flag {
        "--cases" => out.cases.push(PathBuf::from(value)),
        "--case" => out.only.push(value),
        "--ip-family" => {
            let families = [
                ("ipv4", Family::Ipv4),
                ("ipv6", Family::Ipv6),
                ("dual", Family::Dual),
            ];
            out.family = choice(flag, &value, &families, "ipv4, ipv6, dual")?;
        }
        "--target" => {
            let targets = [
                ("service", &[Target::Service][..]),
                ("pod", &[Target::Pod][..]),
                ("both", &[Target::Service, Target::Pod][..]),
            ];
            out.targets = choice(flag, &value, &targets, "service, pod, both")?.to_vec();
        }
        "--source" => {
            let sources = [("manifests", Source::Manifests), ("kube", Source::Kube)];
            out.source = choice(flag, &value, &sources, "manifests, kube")?;
        }
        _ => out.report = Some(PathBuf::from(value)),
    }
    Ok(())
}
