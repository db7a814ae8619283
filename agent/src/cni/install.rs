//! Installing `palisade-cni` on a node (the DaemonSet's init step and sidecar): copy the
//! binary into the CNI binary directory and chain it into the node's existing network
//! configuration; and undoing both.
//!
//! The runtime uses the network configuration in the lexicographically first `.conflist`,
//! `.conf` or `.json` file of the configuration directory (libcni `ConfFiles`, sorted). We
//! append `{"type": "palisade-cni", "socket": ...}` to that file's `plugins`; a single-plugin
//! `.conf` becomes a `.conflist` of the same name (the original is kept beside it with a
//! `.palisade-orig` suffix, which no runtime loads).

use std::{
    io,
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

/// The plugin's `type` (its file name in the CNI binary directory).
pub const PLUGIN: &str = "palisade-cni";
const ORIG_SUFFIX: &str = ".palisade-orig";

/// What can go wrong installing.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a CNI network configuration: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("no CNI network configuration in {0} yet (the node's CNI writes one)")]
    NoConfig(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename (readers never see half).
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension("palisade-tmp");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Copies `binary` to `<bin_dir>/palisade-cni` unless it is already there; true if copied.
pub fn install_binary(binary: &Path, bin_dir: &Path) -> Result<bool, InstallError> {
    let want = std::fs::read(binary).map_err(io_err(binary))?;
    let dest = bin_dir.join(PLUGIN);
    if std::fs::read(&dest).is_ok_and(|have| have == want) {
        return Ok(false);
    }
    std::fs::create_dir_all(bin_dir).map_err(io_err(bin_dir))?;
    write_atomic(&dest, &want, 0o755)?;
    Ok(true)
}

/// The configuration file the runtime loads: the first `.conflist`, `.conf` or `.json`.
pub fn active_config(conf_dir: &Path) -> Result<PathBuf, InstallError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .map_err(io_err(conf_dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .next()
        .ok_or_else(|| InstallError::NoConfig(conf_dir.to_owned()))
}

/// The configuration with our plugin last in its chain (`None`: already so).
pub fn chained(config: &Value, socket: &Path) -> Result<Option<Value>, String> {
    let ours = json!({"type": PLUGIN, "socket": socket});
    let mut list = match config.get("plugins") {
        Some(Value::Array(_)) => config.clone(),
        Some(_) => return Err("`plugins` is not a list".into()),
        None => {
            // A single-plugin configuration: the same network as a one-plugin list.
            let mut plugin = config.clone();
            let obj = plugin.as_object_mut().ok_or("not a JSON object")?;
            let name = obj.remove("name").unwrap_or(json!("network"));
            let version = obj.remove("cniVersion").unwrap_or(json!("0.3.1"));
            json!({"cniVersion": version, "name": name, "plugins": [plugin]})
        }
    };
    let plugins = list["plugins"]
        .as_array_mut()
        .ok_or("`plugins` is not a list")?;
    let mine: Vec<usize> = (0..plugins.len())
        .filter(|i| plugins[*i]["type"] == PLUGIN)
        .collect();
    if mine.len() == 1 && mine[0] == plugins.len() - 1 && plugins[mine[0]] == ours {
        return Ok(None);
    }
    plugins.retain(|p| p["type"] != PLUGIN);
    plugins.push(ours);
    Ok(Some(list))
}

/// Chains the plugin into the active configuration; returns the file it changed, if any.
pub fn chain(conf_dir: &Path, socket: &Path) -> Result<Option<PathBuf>, InstallError> {
    let path = active_config(conf_dir)?;
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let config: Value = serde_json::from_str(&text).map_err(|e| InstallError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let Some(new) = chained(&config, socket).map_err(|reason| InstallError::Config {
        path: path.clone(),
        reason,
    })?
    else {
        return Ok(None);
    };
    let bytes = serde_json::to_vec_pretty(&new).unwrap_or_default();
    if path.extension().is_some_and(|e| e == "conflist") {
        write_atomic(&path, &bytes, 0o644)?;
        return Ok(Some(path));
    }
    // A .conf/.json becomes a .conflist of the same name; the original is kept aside.
    let list_path = path.with_extension("conflist");
    write_atomic(&list_path, &bytes, 0o644)?;
    let orig = PathBuf::from(format!("{}{ORIG_SUFFIX}", path.display()));
    std::fs::rename(&path, &orig).map_err(io_err(&path))?;
    Ok(Some(list_path))
}

/// Removes the plugin from every configuration of `conf_dir`, restores converted `.conf`
/// files, and removes the binary from `bin_dir`; returns the files it changed.
pub fn unchain(conf_dir: &Path, bin_dir: Option<&Path>) -> Result<Vec<PathBuf>, InstallError> {
    let mut changed = Vec::new();
    let entries: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .map_err(io_err(conf_dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    for path in &entries {
        let name = path.to_string_lossy();
        if let Some(original) = name.strip_suffix(ORIG_SUFFIX) {
            let original = PathBuf::from(original);
            let _ = std::fs::remove_file(original.with_extension("conflist"));
            std::fs::rename(path, &original).map_err(io_err(path))?;
            changed.push(original);
        } else if path.extension().is_some_and(|e| e == "conflist") {
            let Ok(mut v) = std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
            else {
                continue;
            };
            if let Some(plugins) = v["plugins"].as_array_mut() {
                let before = plugins.len();
                plugins.retain(|p| p["type"] != PLUGIN);
                if plugins.len() != before && path.exists() {
                    write_atomic(
                        path,
                        &serde_json::to_vec_pretty(&v).unwrap_or_default(),
                        0o644,
                    )?;
                    changed.push(path.clone());
                }
            }
        }
    }
    if let Some(dir) = bin_dir {
        match std::fs::remove_file(dir.join(PLUGIN)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(dir)(e)),
            _ => {}
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pal-install-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const KINDNET: &str = r#"{"cniVersion": "0.3.1", "name": "kindnet", "plugins": [
        {"type": "ptp", "ipMasq": false, "ipam": {"type": "host-local"}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]}"#;

    #[test]
    fn chains_into_the_first_conflist_once_and_unchains() {
        let d = tmp("list");
        std::fs::write(d.join("10-kindnet.conflist"), KINDNET).unwrap();
        std::fs::write(d.join("99-other.conflist"), KINDNET).unwrap();
        let sock = Path::new("/run/palisade/palisade.sock");
        assert_eq!(
            chain(&d, sock).unwrap(),
            Some(d.join("10-kindnet.conflist"))
        );
        assert_eq!(chain(&d, sock).unwrap(), None, "idempotent");
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("10-kindnet.conflist")).unwrap())
                .unwrap();
        let plugins = v["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 3);
        assert_eq!(plugins[2], json!({"type": "palisade-cni", "socket": sock}));
        assert_eq!(plugins[0]["type"], "ptp", "the rest untouched");
        // Moved socket: replaced, not duplicated.
        chain(&d, Path::new("/other.sock")).unwrap();
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("10-kindnet.conflist")).unwrap())
                .unwrap();
        assert_eq!(v["plugins"].as_array().unwrap().len(), 3);
        assert_eq!(unchain(&d, None).unwrap().len(), 1);
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("10-kindnet.conflist")).unwrap())
                .unwrap();
        assert_eq!(v["plugins"].as_array().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_conflist_and_comes_back() {
        let d = tmp("conf");
        let conf =
            r#"{"cniVersion": "0.4.0", "name": "bridge-net", "type": "bridge", "bridge": "cni0"}"#;
        std::fs::write(d.join("10-bridge.conf"), conf).unwrap();
        let sock = Path::new("/run/palisade/palisade.sock");
        assert_eq!(chain(&d, sock).unwrap(), Some(d.join("10-bridge.conflist")));
        assert_eq!(active_config(&d).unwrap(), d.join("10-bridge.conflist"));
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("10-bridge.conflist")).unwrap())
                .unwrap();
        assert_eq!(v["name"], "bridge-net");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert!(v["plugins"][0].get("name").is_none());
        unchain(&d, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("10-bridge.conf")).unwrap(),
            conf
        );
        assert!(!d.join("10-bridge.conflist").exists());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn binary_is_copied_once_and_missing_config_is_reported() {
        let d = tmp("bin");
        let src = d.join("src");
        std::fs::write(&src, b"\x7fELF...").unwrap();
        assert!(install_binary(&src, &d.join("bin")).unwrap());
        assert!(!install_binary(&src, &d.join("bin")).unwrap());
        std::fs::create_dir_all(d.join("net.d")).unwrap();
        assert!(matches!(
            chain(&d.join("net.d"), Path::new("/s")),
            Err(InstallError::NoConfig(_))
        ));
        unchain(&d.join("net.d"), Some(&d.join("bin"))).unwrap();
        assert!(!d.join("bin").join(PLUGIN).exists());
        let _ = std::fs::remove_dir_all(d);
    }
}
