//! Running cases: each case's steps against the environment, each probe step measured for
//! every IP family and target, results turned into report entries (and printed tables for
//! failures).
//!
//! A case whose policies hold templates is run once per family (the templates are filled in
//! from that family's pod IPs); any other case runs once and probes all families at once.
//! The environment is reused between cases and rebuilt after a failed one, so that a
//! failure cannot leak into the next case.
//!
//! With `--source kube` a case whose objects lose a field in the API server (a 1.20 server
//! drops `endPort`) stops there and is listed in [`Runner::rerouted`], to be run through the
//! manifest source instead.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::Value;

use super::case::{Action, Case};
use super::cli::Source;
use super::env::{Env, EnvError};
use super::report::{self, CaseReport, ProbeReport, Status, Target};
use super::step::{self, StepCtx, StepError};
use super::template::{self, TemplateError};
use super::world::{World, WorldError};
use crate::addr::{Family, IpFamily};

/// Consecutive environment build failures after which remaining cases are not attempted.
const MAX_BUILD_FAILURES: u32 = 2;

/// A case could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("initial state: {0}")]
    Initial(WorldError),
    #[error("step {step}: {source}")]
    World {
        step: u32,
        #[source]
        source: WorldError,
    },
    #[error("step {step}: {source}")]
    Step {
        step: u32,
        #[source]
        source: StepError,
    },
    #[error("step {step}: filling in templates: {source}")]
    Fill {
        step: u32,
        #[source]
        source: Box<TemplateError>,
    },
    #[error("the environment could not be built {0} times in a row; not trying again")]
    GaveUp(u32),
    #[error("interrupted")]
    Interrupted,
    #[error("step {step}: action {action} is not supported with --source kube yet")]
    NotWithKube { step: u32, action: String },
}

impl RunError {
    /// What the API server dropped, when that stopped the case.
    fn dropped_fields(&self) -> Option<String> {
        match self {
            RunError::Env(e) => e.dropped_fields(),
            _ => None,
        }
    }
}

/// The actions `--source kube` carries out through the API.
fn kube_supports(action: &Action) -> bool {
    matches!(
        action,
        Action::CreatePolicy { .. }
            | Action::UpdatePolicy { .. }
            | Action::DeletePolicy { .. }
            | Action::DeleteAllPolicies {}
            | Action::AddNamespaceLabels { .. }
            | Action::SetNamespaceLabels { .. }
            | Action::AddPodLabels { .. }
            | Action::SetPodLabels { .. }
            | Action::CreateNamespace { .. }
            | Action::DeleteNamespace { .. }
            | Action::CreatePod { .. }
            | Action::DeletePod { .. }
            | Action::Probe(_)
    )
}

/// A case that needs the manifest source: its id and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rerouted {
    pub id: String,
    pub reason: String,
}

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub family: Family,
    pub targets: Vec<Target>,
    pub agent_bin: PathBuf,
}

/// Runs cases, keeping one environment across them.
#[derive(Debug)]
pub struct Runner<'a> {
    opts: Options,
    source: Source,
    rerouted: Vec<Rerouted>,
    env: Option<Env>,
    build_failures: u32,
    interrupted: &'a AtomicBool,
}

/// One run of a case's steps: which family fills the templates, which families are probed.
#[derive(Clone, Debug)]
struct Pass {
    template: Option<IpFamily>,
    families: Vec<IpFamily>,
}

fn passes(case: &Case, family: Family) -> Vec<Pass> {
    let all = family.ip_families();
    if case.has_templates() {
        all.iter()
            .map(|f| Pass {
                template: Some(*f),
                families: vec![*f],
            })
            .collect()
    } else {
        vec![Pass {
            template: None,
            families: all.to_vec(),
        }]
    }
}

impl<'a> Runner<'a> {
    pub fn new(opts: Options, interrupted: &'a AtomicBool) -> Self {
        Runner {
            opts,
            source: Source::Manifests,
            rerouted: Vec::new(),
            env: None,
            build_failures: 0,
            interrupted,
        }
    }

    /// Where the agents get the cluster state (default: manifests).
    pub fn with_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// The cases that stopped because the API server dropped a field they need (their reports
    /// are `skipped` placeholders), in the order they ran.
    pub fn rerouted(&self) -> &[Rerouted] {
        &self.rerouted
    }

    /// Runs every case in order, printing one line per case (and tables for failures).
    /// Stops early when interrupted.
    pub fn run_all(&mut self, cases: &[Case]) -> Vec<CaseReport> {
        let mut out = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            if self.interrupted.load(Ordering::Relaxed) {
                println!("interrupted: {} case(s) not run", cases.len() - i);
                break;
            }
            let report = self.run_case(case);
            let mut line = format!(
                "[{:>2}/{}] {} {} ({:.1} s)",
                i + 1,
                cases.len(),
                case.id,
                report.status.as_str(),
                report.seconds
            );
            if report.status != Status::Passed || !report.reason.is_empty() {
                line.push_str(": ");
                line.push_str(report.reason.lines().next().unwrap_or_default());
            }
            println!("{line}");
            out.push(report);
        }
        self.env = None;
        out
    }

    /// Runs one case through every pass it needs.
    pub fn run_case(&mut self, case: &Case) -> CaseReport {
        let start = Instant::now();
        let mut probes = Vec::new();
        let mut problems = Vec::new();
        let mut error = None;
        for pass in passes(case, self.opts.family) {
            if let Err(e) = self.run_pass(case, &pass, &mut probes, &mut problems) {
                error = Some(e);
                break;
            }
        }
        let dropped = error.as_ref().and_then(RunError::dropped_fields);
        if let Some(why) = &dropped {
            self.rerouted.push(Rerouted {
                id: case.id.clone(),
                reason: why.clone(),
            });
        }
        let status = match (&error, &dropped) {
            (_, Some(_)) => Status::Skipped,
            (Some(_), None) => Status::Failed,
            (None, None) => report::case_status(&probes),
        };
        if status == Status::Failed {
            if let Some(env) = &self.env {
                println!("{}: agent logs:\n{}", case.id, env.agent_logs(15));
            }
            // A fresh environment for the next case.
            self.env = None;
        }
        let reason = match (&error, &dropped) {
            (_, Some(why)) => format!("needs the manifest source: {why}"),
            (Some(e), None) => e.to_string(),
            (None, None) => case_reason(&probes),
        };
        self.fill_not_run(case, &mut probes, error.as_ref());
        probes.sort_by_key(|p| (p.step, p.family, p.target));
        CaseReport {
            id: case.id.clone(),
            status,
            reason,
            probes,
            name: case.name.clone(),
            seconds: start.elapsed().as_secs_f64(),
            agent_problems: problems,
        }
    }

    fn env(&mut self) -> Result<&mut Env, RunError> {
        if self.env.is_none() {
            if self.build_failures >= MAX_BUILD_FAILURES {
                return Err(RunError::GaveUp(self.build_failures));
            }
            match Env::build(self.opts.family, &self.opts.agent_bin, self.source) {
                Ok(env) => {
                    self.build_failures = 0;
                    self.env = Some(env);
                }
                Err(e) => {
                    self.build_failures += 1;
                    return Err(e.into());
                }
            }
        }
        Ok(self.env.as_mut().expect("just built"))
    }

    fn run_pass(
        &mut self,
        case: &Case,
        pass: &Pass,
        out: &mut Vec<ProbeReport>,
        problems: &mut Vec<Value>,
    ) -> Result<(), RunError> {
        if self.source == Source::Kube {
            if let Some(step) = case.steps.iter().find(|s| !kube_supports(&s.action)) {
                return Err(RunError::NotWithKube {
                    step: step.step,
                    action: action_name(&step.action),
                });
            }
        }
        let mut world = World::new(&case.initial_state).map_err(RunError::Initial)?;
        let refs = template::reference_pods(case);
        let targets = self.opts.targets.clone();
        let interrupted = self.interrupted;
        let env = self.env()?;
        env.sync(&world)?;
        for step in &case.steps {
            if interrupted.load(Ordering::Relaxed) {
                return Err(RunError::Interrupted);
            }
            let world_err = |source| RunError::World {
                step: step.step,
                source,
            };
            match &step.action {
                Action::Probe(probe) => {
                    world.check_pods(probe.pods.as_deref()).map_err(world_err)?;
                    let ctx = StepCtx {
                        step: step.step,
                        probe,
                        world: &world,
                        refs: &refs,
                        families: &pass.families,
                        targets: &targets,
                    };
                    let reports =
                        step::probe_step(env, &ctx, problems).map_err(|source| RunError::Step {
                            step: step.step,
                            source,
                        })?;
                    out.extend(reports);
                }
                other => {
                    let action = fill_templates(env, other, pass.template).map_err(|source| {
                        RunError::Fill {
                            step: step.step,
                            source: Box::new(source),
                        }
                    })?;
                    world.apply(&action).map_err(world_err)?;
                    env.sync(&world)?;
                }
            }
        }
        Ok(())
    }

    /// Adds a skipped entry for every probe × family × target the case did not reach.
    fn fill_not_run(&self, case: &Case, probes: &mut Vec<ProbeReport>, error: Option<&RunError>) {
        let why = error.map_or("not run".to_owned(), |e| format!("not run: {e}"));
        for (step, probe) in case.probes() {
            for &family in self.opts.family.ip_families() {
                for &target in &self.opts.targets {
                    let have = probes
                        .iter()
                        .any(|p| (p.step, p.family, p.target) == (step, family, target));
                    if !have {
                        probes.push(step::skipped(step, probe, family, target, &why));
                    }
                }
            }
        }
    }
}

/// A policy action with its templates filled in from `family`'s pod IPs as they are now
/// (upstream builds the CIDR when it creates the policy); other actions unchanged.
fn fill_templates(
    env: &Env,
    action: &Action,
    family: Option<IpFamily>,
) -> Result<Action, TemplateError> {
    let fill = |policy: &Value| match family {
        Some(f) => template::fill_value(policy, &env.pod_ips(f)),
        None => Ok(policy.clone()),
    };
    Ok(match action {
        Action::CreatePolicy { namespace, policy } => Action::CreatePolicy {
            namespace: namespace.clone(),
            policy: fill(policy)?,
        },
        Action::UpdatePolicy { namespace, policy } => Action::UpdatePolicy {
            namespace: namespace.clone(),
            policy: fill(policy)?,
        },
        Action::CreateClusterPolicy { policy } => Action::CreateClusterPolicy {
            policy: fill(policy)?,
        },
        Action::UpdateClusterPolicy { policy } => Action::UpdateClusterPolicy {
            policy: fill(policy)?,
        },
        other => other.clone(),
    })
}

/// An action's name as the case file spells it (`create_policy`).
fn action_name(action: &Action) -> String {
    serde_json::to_value(action)
        .ok()
        .and_then(|v| v.get("action").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| format!("{action:?}"))
}

fn case_reason(probes: &[ProbeReport]) -> String {
    let failed: Vec<&ProbeReport> = probes
        .iter()
        .filter(|p| p.status == Status::Failed)
        .collect();
    let skipped: Vec<&ProbeReport> = probes
        .iter()
        .filter(|p| p.status == Status::Skipped)
        .collect();
    if let Some(first) = failed.first() {
        return format!(
            "{} of {} probe tables failed; first: step {} {} {}/{} via {}: {}",
            failed.len(),
            probes.len(),
            first.step,
            step::family_name(first.family),
            first.protocol,
            first.port.map_or("?".to_owned(), |p| p.to_string()),
            first.target.as_str(),
            first.reason
        );
    }
    match skipped.first() {
        Some(first) => format!(
            "{} of {} probe tables skipped: {}",
            skipped.len(),
            probes.len(),
            first.reason
        ),
        None => String::new(),
    }
}
