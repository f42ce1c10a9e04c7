//! Running external commands with a time limit, and signalling processes by pid.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::harness::netns;

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Both streams, for error messages.
    pub fn both(&self) -> String {
        format!("{}{}", self.stderr.trim_end(), {
            let out = self.stdout.trim_end();
            if out.is_empty() {
                String::new()
            } else {
                format!("\n{out}")
            }
        })
    }
}

/// Reads a pipe to its end on a thread; the result arrives on the returned channel.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = sender.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    receiver
}

/// Runs `command` (stdin fed from `input`, or empty) and waits at most `limit`. A command that
/// overruns is killed and reported as an error; a non-zero exit is NOT an error here.
pub fn run_limited(
    command: &mut Command,
    input: Option<&str>,
    limit: Duration,
) -> Result<Finished> {
    let line = netns::describe(command);
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A command that exits without reading its input is not our error; its status tells.
        let _ = stdin.write_all(text.as_bytes());
    }
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{line}`"))?
        {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{line}` did not finish within {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A daemon started by the command may hold a pipe open; do not wait for it forever.
    let collect = |receiver: Option<mpsc::Receiver<String>>| {
        receiver
            .and_then(|r| r.recv_timeout(Duration::from_secs(5)).ok())
            .unwrap_or_default()
    };
    Ok(Finished {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Like [`run_limited`], but a non-zero exit is an error carrying the command's output.
pub fn run_ok(command: &mut Command, input: Option<&str>, limit: Duration) -> Result<Finished> {
    let line = netns::describe(command);
    let finished = run_limited(command, input, limit)?;
    if !finished.success() {
        bail!("`{line}` failed ({}): {}", finished.status, finished.both());
    }
    Ok(finished)
}

/// Sends `signal` (`TERM`, `KILL`) to `pid` with the shell's built-in kill (no procps needed).
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    if !signal.chars().all(|c| c.is_ascii_uppercase()) {
        bail!("bad signal name {signal:?}");
    }
    let finished = run_limited(
        Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{signal} {pid}")),
        None,
        Duration::from_secs(5),
    )?;
    if !finished.success() {
        bail!("kill -{signal} {pid}: {}", finished.both());
    }
    Ok(())
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            return Ok(Some(status));
        }
        if started.elapsed() > limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `program` is on PATH.
pub fn has_command(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the Debian package `package` when `program` is missing (as the apiserver scripts
/// do; they would try the same inside a network namespace, where no package mirror is reachable).
pub fn ensure_command(program: &str, package: &str) -> Result<()> {
    if has_command(program) {
        return Ok(());
    }
    let install = |update: bool| -> Result<bool> {
        let script = if update {
            format!("apt-get update && apt-get install -y --no-install-recommends {package}")
        } else {
            format!("apt-get install -y --no-install-recommends {package}")
        };
        let finished = run_limited(
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            None,
            Duration::from_secs(600),
        )?;
        Ok(finished.success())
    };
    if !install(false)? && !install(true)? {
        bail!("{program} is missing and installing {package} failed");
    }
    if !has_command(program) {
        bail!("{program} is still missing after installing {package}");
    }
    Ok(())
}
