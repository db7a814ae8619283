//! Building kube-apiserver and kube-controller-manager once, from Debian bookworm's
//! `kubernetes` source package (upstream v1.20.2 with `vendor/`), and caching them under
//! `~/.cache/palisade/k8s/bin` (see ../shared/TOOLCHAIN.md, "A real Kubernetes API server").
//!
//! TOOLCHAIN.md: "Build with Debian's `golang-1.19-go` (plus `rsync`): `CGO_ENABLED=0
//! GOPROXY=off make WHAT=...` (use `make`, not `go build`). The vendored
//! `github.com/modern-go/reflect2` v1.0.1 segfaults under Go 1.19: replace it with Debian's
//! `golang-github-modern-go-reflect2-dev` (v1.0.2) files first."

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _};

use crate::{cmd, setup};

/// Debian packages the build and the running control plane need.
pub const PACKAGES: &[&str] = &[
    "golang-1.19-go",
    "rsync",
    "golang-github-modern-go-reflect2-dev",
    "dpkg-dev",
    "etcd-server",
    "openssl",
];

const TARGETS: [&str; 2] = ["kube-apiserver", "kube-controller-manager"];
const STAMP: &str = "debian-bookworm kubernetes source package, golang-1.19, reflect2 1.0.2\n";
const DEB_SRC_LIST: &str = "/etc/apt/sources.list.d/palisade-deb-src.sources";
const GO_ROOT: &str = "/usr/lib/go-1.19";
const REFLECT2: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";

/// The directory with the binaries, building them first if the cache does not have them.
pub fn ensure_built() -> anyhow::Result<PathBuf> {
    let cache = palisade_tests::kube::cache_dir();
    let bin = cache.join("bin");
    let stamp = bin.join(".stamp");
    let have = TARGETS.iter().all(|t| bin.join(t).is_file())
        && std::fs::read_to_string(&stamp).is_ok_and(|s| s == STAMP);
    if have {
        setup::apt_install(&strings(&["etcd-server", "openssl"]))?;
        return Ok(bin);
    }
    if !cmd::is_root() {
        bail!("building the API server needs root (apt-get); run `sudo cargo xtask k8s up` once");
    }
    let started = Instant::now();
    println!("k8s: building kube-apiserver and kube-controller-manager (once; about 10 minutes)");
    setup::apt_install(&strings(PACKAGES))?;
    let src = cache.join("src");
    let tree = fetch_source(&src)?;
    replace_reflect2(&tree)?;
    make(&tree, &src.join("gocache"))?;
    std::fs::create_dir_all(&bin)?;
    for t in TARGETS {
        let from = tree.join("_output/bin").join(t);
        std::fs::copy(&from, bin.join(t)).with_context(|| format!("copying {}", from.display()))?;
    }
    std::fs::write(&stamp, STAMP)?;
    // The tree, its Go build cache and the tarballs are several GB; the binaries are all we keep.
    std::fs::remove_dir_all(&src).with_context(|| format!("removing {}", src.display()))?;
    println!(
        "k8s: built and cached in {} ({} s)",
        bin.display(),
        started.elapsed().as_secs()
    );
    Ok(bin)
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A `deb-src` twin of the machine's own Debian sources, then `apt-get source kubernetes`.
fn fetch_source(src: &Path) -> anyhow::Result<PathBuf> {
    if let Some(tree) = source_tree(src)? {
        return Ok(tree);
    }
    deb_src_list()?;
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    std::fs::create_dir_all(src)?;
    println!("k8s: apt-get source kubernetes");
    cmd::run(
        Command::new("apt-get")
            .args(["source", "-qq", "kubernetes"])
            .current_dir(src),
    )?;
    source_tree(src)?.context("apt-get source kubernetes left no kubernetes-* directory")
}

fn source_tree(src: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(src) else {
        return Ok(None);
    };
    Ok(entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.is_dir()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kubernetes-"))
            && p.join("Makefile").is_file()
    }))
}

/// "Add a `deb-src` twin of the machine's own apt source list (copy
/// `/etc/apt/sources.list.d/debian.sources` with `Types: deb` changed to `Types: deb-src`)".
fn deb_src_list() -> anyhow::Result<()> {
    let deb822 = Path::new("/etc/apt/sources.list.d/debian.sources");
    let twin = if deb822.is_file() {
        let text = std::fs::read_to_string(deb822)?;
        text.lines()
            .map(|l| {
                if l.trim() == "Types: deb" {
                    "Types: deb-src"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        let text = std::fs::read_to_string("/etc/apt/sources.list")
            .context("no /etc/apt/sources.list.d/debian.sources nor /etc/apt/sources.list")?;
        let lines: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("deb "))
            .map(|rest| format!("deb-src {rest}"))
            .collect();
        return write_list(
            &DEB_SRC_LIST.replace(".sources", ".list"),
            &lines.join("\n"),
        );
    };
    write_list(DEB_SRC_LIST, &twin)
}

fn write_list(path: &str, text: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t.trim() == text.trim()) {
        return Ok(());
    }
    println!("k8s: adding {path} (deb-src twin of the machine's Debian sources)");
    std::fs::write(path, format!("{}\n", text.trim())).with_context(|| format!("writing {path}"))
}

fn replace_reflect2(tree: &Path) -> anyhow::Result<()> {
    let vendored = tree.join("vendor/github.com/modern-go/reflect2");
    if vendored.is_dir() {
        std::fs::remove_dir_all(&vendored)?;
    }
    std::fs::create_dir_all(&vendored)?;
    cmd::run(
        Command::new("cp")
            .arg("-rL")
            .arg(format!("{REFLECT2}/."))
            .arg(&vendored),
    )
}

fn make(tree: &Path, gocache: &Path) -> anyhow::Result<()> {
    let path = format!(
        "{GO_ROOT}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let what = TARGETS.map(|t| format!("cmd/{t}")).join(" ");
    println!("k8s: make WHAT=\"{what}\" in {}", tree.display());
    cmd::run(
        Command::new("make")
            .arg(format!("WHAT={what}"))
            .current_dir(tree)
            .env("PATH", path)
            .env("CGO_ENABLED", "0")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=vendor")
            .env("GOCACHE", gocache),
    )
}
