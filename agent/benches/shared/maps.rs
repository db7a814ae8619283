//! Kernel-accounted memory of pinned BPF maps (`memlock` in each map fd's fdinfo).

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use aya::maps::MapData;
use serde::Serialize;

/// Memory of one map as the kernel accounts it.
#[derive(Debug, Clone, Serialize)]
pub struct MapMemory {
    pub name: String,
    pub map_type: String,
    pub max_entries: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub memlock_bytes: u64,
}

/// Every map pinned in `maps_dir`, by name.
pub fn map_memory(maps_dir: &Path) -> anyhow::Result<Vec<MapMemory>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(maps_dir)? {
        let path = entry?.path();
        let map = MapData::from_pin(&path)?;
        let info = map.info()?;
        let fd = map.fd().as_fd().as_raw_fd();
        let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
        let memlock = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.push(MapMemory {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            map_type: format!("{:?}", info.map_type()?),
            max_entries: info.max_entries(),
            key_size: info.key_size(),
            value_size: info.value_size(),
            memlock_bytes: memlock,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
