//! Running external tools (ip, iptables-restore, CNI plugins) with useful errors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// A tool failed to start or exited non-zero.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} failed ({status}): {stderr}{stdout}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
        stdout: String,
        stderr: String,
    },
}

/// Renders a command line for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` with `stdin` fed to it, and fails unless it exits 0.
pub fn run_with_input(cmd: &mut Command, stdin: &[u8]) -> Result<Output, ExecError> {
    let name = describe(cmd);
    let spawn_err = |source| ExecError::Spawn {
        cmd: name.clone(),
        source,
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut pipe) = child.stdin.take() {
        // A tool that exits early closes its stdin; its exit status tells why.
        let _ = pipe.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    check(name, out)
}

/// Runs `cmd` without input and fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<Output, ExecError> {
    run_with_input(cmd, &[])
}

fn check(cmd: String, out: Output) -> Result<Output, ExecError> {
    if out.status.success() {
        return Ok(out);
    }
    Err(ExecError::Failed {
        cmd,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
