//! Running commands, inside network namespaces or not, and removing namespaces by name prefix.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// Where `ip netns` keeps the names of the namespaces it created.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Whether this process runs with effective user id 0, which creating namespaces needs.
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|effective| effective == "0")
}

/// A prefix no other test (in this process or any other) uses: `TAG-PID-COUNTER-`. The pid
/// makes it unique among processes running at once and lets [`reap_stale`] recognise
/// namespaces whose owner died without cleaning up.
pub fn unique_prefix(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{}-{counter}-", std::process::id())
}

/// The command line, for messages.
pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command` to completion; fails with its stderr unless it exits 0.
pub fn run(command: &mut Command) -> Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("cannot start `{}`", describe(command)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}{}",
            describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end(),
            String::from_utf8_lossy(&output.stdout).trim_end(),
        );
    }
    Ok(output)
}

/// `program args...` run inside network namespace `netns`.
pub fn in_netns(netns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns]).arg(program);
    command
}

/// `ip -n NETNS -batch -`, fed `lines`: many `ip` commands for one namespace in one process.
pub fn ip_batch(netns: &str, lines: &[String]) -> Result<()> {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut command = Command::new("ip");
    command
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{}`", describe(&command)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(lines.join("\n").as_bytes())
            .context("writing to ip -batch")?;
    }
    let output = child.wait_with_output().context("waiting for ip -batch")?;
    if !output.status.success() {
        bail!(
            "`ip -n {netns} -batch` failed ({}): {}\ninput:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end(),
            lines.join("\n")
        );
    }
    Ok(())
}

/// Sets sysctls inside `netns`, each `key=value` (`net.ipv4.ip_forward=1`). Written to
/// `/proc/sys` by a shell inside the namespace, so that no `sysctl` (procps) is needed.
pub fn sysctl(netns: &str, settings: &[String]) -> Result<()> {
    let mut script = String::from("set -e");
    for setting in settings {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("sysctl setting {setting:?} is not key=value"))?;
        if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || !value.chars().all(|c| c.is_ascii_alphanumeric())
        {
            bail!("unexpected characters in sysctl setting {setting:?}");
        }
        script.push_str(&format!(
            "; echo {value} > /proc/sys/{}",
            key.replace('.', "/")
        ));
    }
    run(in_netns(netns, "sh").arg("-c").arg(script))?;
    Ok(())
}

pub fn add_netns(name: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "add", name]))?;
    Ok(())
}

/// Every named network namespace.
pub fn list_netns() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect()
}

/// Kills every process inside `netns` (a namespace outlives its deletion while a process holds
/// it), then deletes it. Returns what went wrong, if anything.
pub fn delete_netns(name: &str) -> Result<()> {
    if let Ok(output) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            if pid.chars().all(|c| c.is_ascii_digit()) {
                // The shell's built-in kill: no procps needed.
                let _ = Command::new("sh")
                    .arg("-c")
                    .arg(format!("kill -KILL {pid}"))
                    .output();
            }
        }
    }
    match run(Command::new("ip").args(["netns", "del", name])) {
        Ok(_) => Ok(()),
        // Someone else (a concurrent cleanup after a signal) removed it first: fine.
        Err(_) if !Path::new(NETNS_DIR).join(name).exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes every namespace whose name starts with `prefix`; returns the failures.
pub fn delete_netns_with_prefix(prefix: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for name in list_netns() {
        if name.starts_with(prefix) {
            if let Err(e) = delete_netns(&name) {
                failures.push(format!("{name}: {e:#}"));
            }
        }
    }
    failures
}

/// Deletes namespaces left behind by runs that were killed before their cleanup ran: those
/// named `TAG-PID-...` whose PID no longer exists. Namespaces of live processes are not touched.
pub fn reap_stale(tag: &str) {
    let marker = format!("{tag}-");
    for name in list_netns() {
        let Some(rest) = name.strip_prefix(&marker) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if pid.is_empty() || !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if !Path::new("/proc").join(pid).exists() {
            let _ = delete_netns(&name);
        }
    }
}
