//! Developer and CI entry points: `cargo xtask setup|test|demo|conformance|bench|chaos|soak|fuzz|vm-test`. xtask runs and tests; it never
//! builds the eBPF object itself (agent/build.rs does, through aya-build).

mod bench;
mod chaos;
mod cmd;
mod conformance;
mod demo;
mod fuzz;
mod k8s;
mod setup;
mod soak;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Palisade's developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install everything the build and the tests need (idempotent; never touches Rust toolchains).
    Setup,
    /// Run every test: formatting, clippy, unit tests, and (as root) the privileged tests.
    Test,
    /// Show real enforcement between network namespaces.
    Demo,
    /// Run NetworkPolicy conformance case files through test nodes and the real agent (root).
    Conformance(conformance::Args),
    /// Benchmarks: per-packet cost, control plane, traffic; writes JSON, SVG plots and a report (root).
    Bench(bench::Args),
    /// The agent under faults (kill, restart, source outage, changes while down) with traffic (root).
    Chaos(chaos::Args),
    /// Hostile input: fuzz the manifest loader and the policy compiler for N minutes (release).
    Fuzz(fuzz::Args),
    /// Churn pods and policies with traffic; memory, maps, pins must return to baseline (root).
    Soak(soak::Args),
    /// A real kube-apiserver on loopback: `up` (build once, start, print KUBECONFIG), `down`.
    K8s(k8s::Args),
    /// The privileged tests and the conformance corpus on another kernel (Debian 6.1) in a qemu VM.
    VmTest(vm::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run().map(|_| ()),
        Command::Test => test::run(),
        Command::Demo => demo::run(),
        Command::Conformance(args) => conformance::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Chaos(args) => chaos::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Soak(args) => soak::run(&args),
        Command::K8s(args) => k8s::run(&args),
        Command::VmTest(args) => vm::run(&args),
    }
}
