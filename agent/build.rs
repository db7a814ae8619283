//! Builds the eBPF object (crate `palisade-ebpf`) with aya-build, as aya-template does; the agent
//! embeds it with `include_bytes_aligned!`.
use std::{env, fs, path::PathBuf};

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join("palisade-ebpf");
    // `AYA_BUILD_SKIP=1` lets pure-userspace work (compiler, CLI) build without the BPF toolchain;
    // the agent then refuses to load programs at run time, saying why.
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1") {
        if !object.exists() {
            fs::write(&object, []).context("writing empty eBPF placeholder")?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name == "palisade-ebpf")
        .ok_or_else(|| anyhow!("palisade-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("palisade-ebpf manifest has no parent"))?
        .as_str()
        .to_owned();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "palisade-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
