//! The hostile-input harness behind `fuzz_manifests.rs`: inputs made by mutating seeds (bytes
//! and structure) or by generating well-formed documents with hostile values, run through
//! `palisade::source::load_str` and `palisade::compiler`, with the invariants of [`check`].
//! No libFuzzer, no extra dependency: a deterministic PRNG, so a failure is reproducible from
//! the seed it prints (and the input it saves).

pub mod check;
pub mod corpus;
pub mod fail_closed;
pub mod gen;
pub mod mutate;
pub mod regressions;
pub mod rng;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use palisade::compiler::{compile, CompileOptions};
use palisade::model::{Model, ModelChange, ObjectKey};
use palisade::source::load_str;
use serde_json::Value;

use corpus::Seed;
use rng::Rng;

/// One input: a file's text and whether it is read as JSON, how it was made, and model
/// deletions applied after it (incremental paths remove what they added).
#[derive(Debug, Clone)]
pub struct Input {
    pub text: String,
    pub json: bool,
    pub strategy: &'static str,
}

/// Counters of one run (summed over workers).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub iterations: u64,
    pub by_strategy: BTreeMap<String, u64>,
    pub changes: u64,
    pub notes: u64,
    pub policies_loaded: u64,
    /// Notes about NetworkPolicy documents: a part of `spec` that did not read (a type error;
    /// the policy loads with it failing closed) or a document skipped. The name predates the
    /// lenient reader, when such a policy was dropped whole.
    pub policies_dropped: u64,
    /// Models checked to allow no more than without their unreadable rules.
    pub fail_closed_checks: u64,
    pub problems: u64,
    pub isolated_directions: u64,
    pub compiles: u64,
    pub determinism_checks: u64,
    pub incremental_checks: u64,
    pub reference_checks: u64,
    pub reference_skipped_ambiguous: u64,
    pub slowest_ms: f64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.iterations += o.iterations;
        for (k, v) in &o.by_strategy {
            *self.by_strategy.entry(k.clone()).or_default() += v;
        }
        self.changes += o.changes;
        self.notes += o.notes;
        self.policies_loaded += o.policies_loaded;
        self.policies_dropped += o.policies_dropped;
        self.fail_closed_checks += o.fail_closed_checks;
        self.problems += o.problems;
        self.isolated_directions += o.isolated_directions;
        self.compiles += o.compiles;
        self.determinism_checks += o.determinism_checks;
        self.incremental_checks += o.incremental_checks;
        self.reference_checks += o.reference_checks;
        self.reference_skipped_ambiguous += o.reference_skipped_ambiguous;
        self.slowest_ms = self.slowest_ms.max(o.slowest_ms);
    }
}

/// Which of the costlier checks to run on an input.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    pub determinism: bool,
    pub incremental: bool,
    pub reference: bool,
}

impl Checks {
    pub const ALL: Checks = Checks {
        determinism: true,
        incremental: true,
        reference: true,
    };

    /// The sampled mix of a fuzzing run (the reference check costs the most).
    pub fn sample(rng: &mut Rng) -> Checks {
        Checks {
            determinism: rng.chance(1, 8),
            incremental: rng.chance(1, 4),
            reference: rng.chance(1, 6),
        }
    }
}

/// The model every input is loaded on top of.
pub fn base_model() -> Model {
    let (changes, notes) = load_str(corpus::BASE, Path::new("base.yaml"));
    assert!(notes.is_empty(), "base notes: {notes:?}");
    let mut m = Model::new();
    for c in changes {
        m.apply(c);
    }
    m
}

/// Makes one input.
pub fn generate(rng: &mut Rng, seeds: &[Seed]) -> Input {
    let seed = rng.pick(seeds).clone();
    let other = rng.pick(seeds).text.clone();
    match rng.below(10) {
        0..=3 => Input {
            text: mutate::bytes(rng, &seed.text, &other),
            json: seed.json,
            strategy: "bytes",
        },
        4..=6 => {
            let docs = parse_docs(&seed);
            let donors = parse_docs(rng.pick(seeds));
            let mut docs = if docs.is_empty() {
                vec![Value::Null]
            } else {
                docs
            };
            let donor = donors.into_iter().next().unwrap_or(Value::Null);
            let i = rng.below(docs.len());
            mutate::structure(rng, &mut docs[i], &donor);
            render(rng, docs, "structure")
        }
        7 | 8 => {
            let mut docs = gen::documents(rng);
            if rng.chance(1, 3) {
                let i = rng.below(docs.len());
                let donor = docs[rng.below(docs.len())].clone();
                mutate::structure(rng, &mut docs[i], &donor);
            }
            render(rng, docs, "generated")
        }
        _ => {
            let len = rng.below(400);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            Input {
                text: String::from_utf8_lossy(&bytes).into_owned(),
                json: rng.chance(1, 2),
                strategy: "random",
            }
        }
    }
}

fn parse_docs(seed: &Seed) -> Vec<Value> {
    if seed.json {
        serde_json::from_str(&seed.text).into_iter().collect()
    } else {
        use serde::Deserialize as _;
        serde_yaml::Deserializer::from_str(&seed.text)
            .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
            .filter_map(|v| serde_json::to_value(v).ok())
            .collect()
    }
}

/// Documents as one JSON file (a List when several) or one multi-document YAML file.
fn render(rng: &mut Rng, docs: Vec<Value>, strategy: &'static str) -> Input {
    if rng.chance(1, 2) {
        let v = if docs.len() == 1 {
            docs.into_iter().next().unwrap_or(Value::Null)
        } else {
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs})
        };
        Input {
            text: v.to_string(),
            json: true,
            strategy,
        }
    } else {
        let text = docs
            .iter()
            .filter_map(|d| serde_yaml::to_string(d).ok())
            .collect::<Vec<_>>()
            .join("---\n");
        Input {
            text,
            json: false,
            strategy,
        }
    }
}

thread_local! {
    /// Set while [`guarded`] runs code under test on this thread.
    static IN_GUARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The message of the last panic under [`guarded`] (the hook stores it instead of printing).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs (once) a panic hook that records panics under [`guarded`] quietly, with their
/// location, and hands every other panic to the default hook.
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_GUARD.with(std::cell::Cell::get) {
                return default(info);
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{msg}{at}"));
        }));
    });
}

fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    IN_GUARD.with(|g| g.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    IN_GUARD.with(|g| g.set(false));
    r.map_err(|_| {
        let msg = LAST_PANIC
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        format!("panic in {what}: {msg}")
    })
}

/// Random deletions after the input's changes (incremental paths must undo cleanly).
fn deletions(rng: &mut Rng, model: &Model) -> Vec<ModelChange> {
    let mut out = Vec::new();
    for _ in 0..rng.below(3) {
        match rng.below(4) {
            0 => {
                if let Some(k) = nth_key(rng, model.policies.keys()) {
                    out.push(ModelChange::DeletePolicy(k));
                }
            }
            1 => {
                if let Some(k) = nth_key(rng, model.pods.keys()) {
                    out.push(ModelChange::DeletePod(k));
                }
            }
            2 => {
                if let Some(k) = nth_key(rng, model.namespaces.keys()) {
                    out.push(ModelChange::DeleteNamespace(k));
                }
            }
            _ => out.push(ModelChange::DeletePolicy(ObjectKey::new("nope", "nope"))),
        }
    }
    out
}

fn nth_key<'a, K: Clone + 'a>(
    rng: &mut Rng,
    keys: impl ExactSizeIterator<Item = &'a K>,
) -> Option<K> {
    let n = keys.len();
    if n == 0 {
        return None;
    }
    let i = rng.below(n);
    keys.into_iter().nth(i).cloned()
}

/// Runs one input through loading and compiling with the invariants; `Err` is a finding.
pub fn run_one(
    input: &Input,
    base: &Model,
    rng: &mut Rng,
    checks: Checks,
    stats: &mut Stats,
) -> Result<(), String> {
    let started = Instant::now();
    stats.iterations += 1;
    *stats
        .by_strategy
        .entry(input.strategy.to_owned())
        .or_default() += 1;
    let path = Path::new(if input.json { "fuzz.json" } else { "fuzz.yaml" });
    let (mut changes, notes) = guarded("load_str", || load_str(&input.text, path))?;
    stats.changes += changes.len() as u64;
    stats.notes += notes.len() as u64;
    stats.policies_loaded += changes
        .iter()
        .filter(|c| matches!(c, ModelChange::UpsertPolicy(_)))
        .count() as u64;
    stats.policies_dropped += notes
        .iter()
        .filter(|n| n.malformed && n.message.starts_with("NetworkPolicy "))
        .count() as u64;
    let mut model = base.clone();
    guarded("Model::apply", || {
        for c in &changes {
            model.apply(c.clone());
        }
    })?;
    let dels = deletions(rng, &model);
    let mut after = model.clone();
    guarded("Model::apply (deletions)", || {
        for c in &dels {
            after.apply(c.clone());
        }
    })?;
    changes.extend(dels);
    let options = CompileOptions {
        node: rng.chance(1, 2).then(|| "node-1".to_owned()),
        allow_node_traffic: rng.chance(3, 4),
    };
    for m in [&model, &after] {
        if guarded("fail-closed check", || {
            fail_closed::never_more_than_removed(m, &options)
        })?? {
            stats.fail_closed_checks += 1;
        }
        let out = guarded("compile", || compile(m, &options))?;
        stats.compiles += 1;
        stats.problems += out.problems.len() as u64;
        stats.isolated_directions += out
            .endpoints
            .values()
            .map(|e| u64::from(e.ingress.isolated) + u64::from(e.egress.isolated))
            .sum::<u64>();
        check::consistent(&out)?;
        if checks.determinism {
            stats.determinism_checks += 1;
            let again = guarded("compile", || compile(m, &options))?;
            if again != out {
                return Err("compiling the same model twice gave different outputs".into());
            }
        }
        if checks.reference {
            if check::unambiguous(m) {
                stats.reference_checks += 1;
                guarded("reference check", || check::agrees(m, &out, &options))??;
            } else {
                stats.reference_skipped_ambiguous += 1;
            }
        }
    }
    if checks.incremental {
        stats.incremental_checks += 1;
        guarded("incremental compile", || {
            check::incremental(base, &changes, &options)
        })??;
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    stats.slowest_ms = stats.slowest_ms.max(ms);
    Ok(())
}
