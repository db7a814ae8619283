//! `cargo xtask demo`: real enforcement between network namespaces.

use std::process::Command;

use anyhow::bail;

use crate::{cmd, setup};

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    if !cmd::is_root() {
        bail!("cargo xtask demo needs root: it creates network namespaces and loads eBPF programs");
    }
    std::env::set_current_dir(cmd::workspace_root())?;
    cmd::run(Command::new("cargo").args([
        "build",
        "--release",
        "-p",
        "palisade",
        "-p",
        "palisade-tests",
    ]))?;
    cmd::run(&mut Command::new("target/release/demo"))
}
