//! `palisade-cni`: the chained CNI plugin. Reads the network configuration on stdin and the
//! CNI_* environment, tells the Palisade agent (local socket) about the pod, and prints the
//! previous plugin's result once the agent has attached the pod with its policy. See
//! `palisade::cni::plugin`.

use std::io::{Read as _, Write as _};

use palisade::cni::plugin::{self, Env};

fn main() {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "1.0.0".to_owned());
    let result = match read {
        Ok(_) => plugin::run(&env, &stdin),
        Err(e) => Err(plugin::CniError {
            code: plugin::Code::Io,
            msg: "cannot read stdin".into(),
            details: e.to_string(),
        }),
    };
    let mut out = std::io::stdout().lock();
    match result {
        Ok(Some(value)) => {
            let _ = writeln!(out, "{value}");
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            drop(out);
            std::process::exit(1);
        }
    }
}
