//! The guest's initramfs: Debian's static busybox, the few modules needed to mount the 9p
//! shares (everything else is loaded from the shared kernel tree), and `/init`. Written as an
//! uncompressed `newc` cpio archive (the host has no `cpio`; the format is a few lines).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::kernel::Kernel;

/// The modules `/init` loads before it can mount anything (dependencies are added from
/// `modules.dep`).
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// Debian `busybox-static`.
const BUSYBOX: &str = "/bin/busybox";

/// One archive member.
enum Entry {
    Dir(String),
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
}

/// Writes the initramfs for `kernel` with `init` as `/init` to `out`.
pub fn build(kernel: &Kernel, init: &str, out: &Path) -> anyhow::Result<()> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| {
        format!("reading {BUSYBOX} (Debian busybox-static; run cargo xtask setup)")
    })?;
    let mut entries = Vec::new();
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev", "host", "tmp",
    ] {
        entries.push(Entry::Dir(dir.to_owned()));
    }
    entries.push(Entry::File {
        path: "bin/busybox".into(),
        data: busybox,
        mode: 0o755,
    });
    entries.push(Entry::File {
        path: "init".into(),
        data: init.as_bytes().to_vec(),
        mode: 0o755,
    });
    module_entries(kernel, &mut entries)?;
    let mut archive = Vec::new();
    for (ino, entry) in entries.iter().enumerate() {
        write_entry(&mut archive, ino as u32 + 1, entry);
    }
    write_member(&mut archive, 0, "TRAILER!!!", 0, &[]);
    std::fs::write(out, archive).with_context(|| format!("writing {}", out.display()))
}

/// The boot modules, their dependencies and a `modules.dep` for just those.
fn module_entries(kernel: &Kernel, entries: &mut Vec<Entry>) -> anyhow::Result<()> {
    let dep_path = kernel.modules.join("modules.dep");
    let deps = std::fs::read_to_string(&dep_path)
        .with_context(|| format!("reading {}", dep_path.display()))?;
    let mut files: BTreeSet<String> = BTreeSet::new();
    for name in BOOT_MODULES {
        let line = deps
            .lines()
            .find(|l| {
                l.split(':')
                    .next()
                    .and_then(|p| Path::new(p).file_stem())
                    .is_some_and(|s| s.to_str() == Some(*name))
            })
            .with_context(|| format!("module {name} not in {}", dep_path.display()))?;
        files.extend(
            line.split([':', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    let lines: Vec<&str> = deps
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|p| files.contains(p)))
        .collect();
    let base = format!("lib/modules/{}", kernel.release);
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for f in &files {
        let mut d = Path::new(&base).join(f);
        while d.pop() && !d.as_os_str().is_empty() {
            dirs.insert(d.clone());
        }
    }
    entries.extend(dirs.iter().map(|d| Entry::Dir(d.display().to_string())));
    for f in &files {
        let data = std::fs::read(kernel.modules.join(f))?;
        entries.push(Entry::File {
            path: format!("{base}/{f}"),
            data,
            mode: 0o644,
        });
    }
    entries.push(Entry::File {
        path: format!("{base}/modules.dep"),
        data: (lines.join("\n") + "\n").into_bytes(),
        mode: 0o644,
    });
    Ok(())
}

fn write_entry(out: &mut Vec<u8>, ino: u32, entry: &Entry) {
    match entry {
        Entry::Dir(path) => write_member(out, ino, path, 0o040_755, &[]),
        Entry::File { path, data, mode } => write_member(out, ino, path, 0o100_000 | mode, data),
    }
}

/// One `newc` member: the 110-byte ASCII header, the name, the data, each padded to 4 bytes.
fn write_member(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // dev major
        0, // dev minor
        0, // rdev major
        0, // rdev minor
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_members_are_aligned_and_terminated() {
        let mut out = Vec::new();
        write_member(&mut out, 1, "init", 0o100_755, b"#!/bin/sh\n");
        write_member(&mut out, 0, "TRAILER!!!", 0, &[]);
        assert_eq!(&out[..6], b"070701");
        assert_eq!(out.len() % 4, 0);
        // Header (110) + "init\0" (5) = 115, padded to 116; data 10 padded to 12.
        assert_eq!(&out[116..126], b"#!/bin/sh\n");
        assert_eq!(&out[128..134], b"070701");
        let filesize = std::str::from_utf8(&out[6 + 6 * 8..6 + 7 * 8]).unwrap();
        assert_eq!(u32::from_str_radix(filesize, 16).unwrap(), 10);
    }
}
