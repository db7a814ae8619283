//! `probe`: the probe server and client that run inside pod namespaces.
//!
//! ```text
//! probe serve --id NS/NAME [--tcp 80,81] [--udp 80,81] [--sctp 80,81]
//!                                                        prints "ready" once bound; exits on stdin EOF
//! probe connect --tcp|--udp|--sctp ADDR:PORT [--timeout-ms N]
//!                                                        prints one JSON outcome; exit 0 allowed, 1 not
//! probe batch                                            JSON array of targets on stdin, one JSON line each
//! ```
//!
//! `--sctp` needs a kernel with SCTP: serving fails (exit 2, the kernel's error on stderr) and
//! probing reports not allowed, with the error, where `socket(.., IPPROTO_SCTP)` fails.

use std::io::{Read, Write};
use std::process::ExitCode;

use palisade_tests::probe::{self, Proto, Target};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("connect") => connect(&args[1..]),
        Some("batch") => batch(),
        _ => Err(usage()),
    };
    result.unwrap_or_else(|msg| {
        eprintln!("probe: {msg}");
        ExitCode::from(2)
    })
}

fn usage() -> String {
    "usage: probe serve --id ID [--tcp P,..] [--udp P,..] [--sctp P,..] | \
     probe connect --tcp|--udp|--sctp ADDR:PORT [--timeout-ms N] | probe batch"
        .to_owned()
}

/// `--flag value` pairs.
fn flags(args: &[String]) -> Result<Vec<(&str, &str)>, String> {
    args.chunks(2)
        .map(|pair| match pair {
            [k, v] if k.starts_with("--") => Ok((k.as_str(), v.as_str())),
            _ => Err(usage()),
        })
        .collect()
}

fn ports(list: &str) -> Result<Vec<u16>, String> {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|e| format!("bad port {p:?}: {e}")))
        .collect()
}

fn serve(args: &[String]) -> Result<ExitCode, String> {
    let (mut id, mut tcp, mut udp, mut sctp) =
        ("probe".to_owned(), Vec::new(), Vec::new(), Vec::new());
    for (k, v) in flags(args)? {
        match k {
            "--id" => id = v.to_owned(),
            "--tcp" => tcp = ports(v)?,
            "--udp" => udp = ports(v)?,
            "--sctp" => sctp = ports(v)?,
            _ => return Err(usage()),
        }
    }
    probe::serve(&id, &tcp, &udp).map_err(|e| e.to_string())?;
    if !sctp.is_empty() {
        probe::serve_sctp(&id, &sctp).map_err(|e| e.to_string())?;
    }
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // The harness holds our stdin open; EOF means it is gone, so we go too.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(ExitCode::SUCCESS)
}

fn connect(args: &[String]) -> Result<ExitCode, String> {
    let (mut target, mut timeout_ms) = (None, 1000);
    for (k, v) in flags(args)? {
        let addr = || v.parse().map_err(|e| format!("bad address {v:?}: {e}"));
        match k {
            "--tcp" => target = Some((Proto::Tcp, addr()?)),
            "--udp" => target = Some((Proto::Udp, addr()?)),
            "--sctp" => target = Some((Proto::Sctp, addr()?)),
            "--timeout-ms" => timeout_ms = v.parse().map_err(|e| format!("bad timeout: {e}"))?,
            _ => return Err(usage()),
        }
    }
    let (proto, addr) = target.ok_or_else(usage)?;
    let outcome = probe::connect(&Target {
        proto,
        addr,
        timeout_ms,
    });
    println!(
        "{}",
        serde_json::to_string(&outcome).map_err(|e| e.to_string())?
    );
    Ok(if outcome.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn batch() -> Result<ExitCode, String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| e.to_string())?;
    let targets: Vec<Target> = serde_json::from_str(&input).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    for outcome in probe::batch(&targets) {
        let line = serde_json::to_string(&outcome).map_err(|e| e.to_string())?;
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}
