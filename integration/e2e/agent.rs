//! `palisade agent` processes, one per node namespace, and their HTTP endpoints.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::metrics::{self, Exposition};
use super::proc;
use super::sockets;
use crate::harness::netns;

/// Inside each node namespace (its own loopback, so no clash with anything else).
pub const METRICS_ADDRESS: &str = "127.0.0.1:9617";

/// Where an agent gets the cluster from.
#[derive(Debug, Clone)]
pub enum Source {
    Kubeconfig(PathBuf),
    Manifests(PathBuf),
}

/// What an agent process holds at one moment.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub rss_kib: u64,
    pub fds: usize,
}

pub struct Agent {
    pub node: String,
    pub netns: String,
    pub log: PathBuf,
    palisade: PathBuf,
    source: Source,
    refresh_interval: String,
    /// `--debounce`; the tests that time enforcement use the agent's default.
    pub debounce: String,
    /// More flags, after the ones every test passes.
    pub extra_args: Vec<String>,
    /// `--backend`: nft unless a test needs the other.
    pub backend: String,
    /// More environment for the agent (and the restore commands it runs).
    pub env: Vec<(String, String)>,
    /// The whole command line after the program, as a DaemonSet's pod template gives it,
    /// in place of the flags above (only the credentials still come from `source`).
    pub pod_args: Option<Vec<String>>,
    child: Option<Child>,
    /// How often the agent was started.
    pub starts: u32,
}

impl Agent {
    pub fn new(
        palisade: &Path,
        node: &str,
        netns: &str,
        source: Source,
        log_dir: &Path,
        refresh_interval: &str,
    ) -> Agent {
        Agent {
            node: node.to_string(),
            netns: netns.to_string(),
            log: log_dir.join(format!("agent-{node}.log")),
            palisade: palisade.to_path_buf(),
            source,
            refresh_interval: refresh_interval.to_string(),
            debounce: "100ms".to_string(),
            extra_args: Vec::new(),
            backend: "nft".to_string(),
            env: Vec::new(),
            pod_args: None,
            child: None,
            starts: 0,
        }
    }

    /// Starts the agent; its output is appended to [`Agent::log`].
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("the agent of {} already runs", self.node);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let log_err = log.try_clone().context("duplicating the log file")?;
        let mut command = netns::in_netns(&self.netns, &self.palisade);
        match &self.pod_args {
            Some(args) => {
                command.args(args).env_remove("NODE_NAME");
            }
            None => {
                command
                    .arg("agent")
                    .args(["--node", &self.node])
                    .args(["--metrics-addr", METRICS_ADDRESS])
                    .args(["--refresh-interval", &self.refresh_interval])
                    .args(["--debounce", &self.debounce])
                    .args(["--backend", &self.backend])
                    .args(&self.extra_args)
                    .env("RUST_LOG", "info")
                    .env_remove("NODE_NAME");
            }
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        match &self.source {
            Source::Kubeconfig(path) => {
                command.env("KUBECONFIG", path);
            }
            Source::Manifests(dir) => {
                command.env_remove("KUBECONFIG").arg("--manifests").arg(dir);
            }
        }
        let line = netns::describe(&command);
        // `ip netns exec` execs the program in place: the child's pid is the agent's.
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{line}`"))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// SIGTERM, then waits (SIGKILL after 10 s). Returns the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("the agent of {} is not running", self.node))?;
        if let Some(status) = child.try_wait().context("checking the agent")? {
            bail!("the agent of {} had already exited: {status}", self.node);
        }
        proc::signal(child.id(), "TERM")?;
        if let Some(status) = proc::wait_exit(&mut child, Duration::from_secs(10))? {
            return Ok(status);
        }
        let _ = child.kill();
        let status = child.wait().context("waiting for the killed agent")?;
        bail!(
            "the agent of {} ignored SIGTERM for 10 s and was killed ({status})",
            self.node
        )
    }

    /// Whether the process is alive; an exited agent is an error with its log tail.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("the agent of {} is not started", self.node);
        };
        if let Some(status) = child.try_wait().context("checking the agent")? {
            self.child = None;
            bail!(
                "the agent of {} exited ({status}); log tail:\n{}",
                self.node,
                self.log_tail(30)
            );
        }
        Ok(())
    }

    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// CPU time the agent process has used (user and system), from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Result<Duration> {
        let child = self.child.as_ref().context("the agent is not running")?;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("no field {i} in {stat:?}"))
        };
        // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name; the
        // kernel counts them in USER_HZ, 100 per second on Linux.
        Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
    }

    /// The agent's resident memory (`VmRSS`, KiB) and open file descriptors, from `/proc`.
    // The soak measures them; agent_e2e, which checks this module is used, does not.
    #[allow(dead_code)]
    pub fn resources(&self) -> Result<Resources> {
        let child = self.child.as_ref().context("the agent is not running")?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .with_context(|| format!("no VmRSS in /proc/{}/status", child.id()))?;
        let fds = std::fs::read_dir(format!("/proc/{}/fd", child.id()))?.count();
        Ok(Resources { rss_kib, fds })
    }

    /// The agent's open files by kind: a socket as [`sockets::by_inode`] describes it,
    /// `pipe`, `anon_inode:[eventfd]`, or the path.
    #[allow(dead_code)] // the soak's report
    pub fn open_files(&self) -> Result<BTreeMap<String, usize>> {
        let child = self.child.as_ref().context("the agent is not running")?;
        let sockets = sockets::by_inode(child.id());
        let mut kinds = BTreeMap::new();
        for entry in std::fs::read_dir(format!("/proc/{}/fd", child.id()))? {
            // A file closed between the listing and the readlink is no longer held.
            let Ok(target) = std::fs::read_link(entry?.path()) else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            let kind = match target.split_once(":[") {
                Some(("socket", inode)) => sockets
                    .get(inode.trim_end_matches(']'))
                    .cloned()
                    .unwrap_or_else(|| "socket".to_string()),
                Some((kind, _)) if kind != "anon_inode" => kind.to_string(),
                _ => target,
            };
            *kinds.entry(kind).or_insert(0) += 1;
        }
        Ok(kinds)
    }

    /// `GET path` on the agent's metrics address: status code and body.
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        let finished = proc::run_limited(
            netns::in_netns(&self.netns, "curl")
                .args(["-sS", "--max-time", "3", "-w", "\n%{http_code}"])
                .arg(format!("http://{METRICS_ADDRESS}{path}")),
            None,
            Duration::from_secs(10),
        )?;
        if !finished.success() {
            bail!(
                "GET {path} on {}: curl failed: {}",
                self.node,
                finished.both()
            );
        }
        let (body, code) = finished
            .stdout
            .rsplit_once('\n')
            .ok_or_else(|| anyhow!("curl printed no status code"))?;
        let code = code
            .trim()
            .parse()
            .map_err(|e| anyhow!("bad status code {code:?}: {e}"))?;
        Ok((code, body.to_string()))
    }

    /// `/metrics`, which must answer 200 and parse.
    pub fn metrics(&self) -> Result<Exposition> {
        let (code, body) = self.http_get("/metrics")?;
        if code != 200 {
            bail!("/metrics of {} answered {code}: {body}", self.node);
        }
        metrics::parse(&body).with_context(|| format!("/metrics of {} does not parse", self.node))
    }

    /// Waits until `/readyz` answers 200 (the first sync is done). Returns how long it took
    /// and whether a 503 was seen before.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(Duration, bool)> {
        let started = Instant::now();
        let mut saw_unready = false;
        let mut last = String::from("no answer yet");
        while started.elapsed() < limit {
            self.check_running()?;
            match self.http_get("/readyz") {
                Ok((200, _)) => return Ok((started.elapsed(), saw_unready)),
                Ok((503, body)) => {
                    saw_unready = true;
                    last = format!("503 {}", body.trim());
                }
                Ok((code, body)) => bail!("/readyz of {} answered {code}: {body}", self.node),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "the agent of {} was not ready within {limit:?} (last: {last}); log tail:\n{}",
            self.node,
            self.log_tail(30)
        )
    }

    pub fn log_tail(&self, lines: usize) -> String {
        super::tail(&self.log, lines)
    }

    /// Warnings and errors of the log, grouped: `(level, "target: message", count)`, the
    /// message cut before its first `key=value` field, so that repeats group together.
    pub fn log_problems(&self) -> Vec<(String, String, usize)> {
        let mut groups: Vec<(String, String, usize)> = Vec::new();
        for line in self.log_text().lines() {
            let mut words = line.split_whitespace();
            let (Some(_time), Some(level)) = (words.next(), words.next()) else {
                continue;
            };
            if level != "WARN" && level != "ERROR" {
                continue;
            }
            let message: Vec<&str> = words
                .take_while(|w| {
                    !w.split_once('=').is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
                })
                .collect();
            let message = message.join(" ");
            match groups
                .iter_mut()
                .find(|(l, m, _)| l == level && *m == message)
            {
                Some(group) => group.2 += 1,
                None => groups.push((level.to_string(), message, 1)),
            }
        }
        groups
    }

    /// The whole log, for searching.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = proc::signal(child.id(), "TERM");
                if !matches!(
                    proc::wait_exit(&mut child, Duration::from_secs(5)),
                    Ok(Some(_))
                ) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

/// Runs `program args` in a node namespace and returns stdout; fails unless it exits 0.
pub fn in_node(netns_name: &str, program: &str, args: &[&str]) -> Result<String> {
    let finished = proc::run_ok(
        netns::in_netns(netns_name, program).args(args),
        None,
        Duration::from_secs(20),
    )?;
    Ok(finished.stdout)
}

/// `ipset save` of a node, as `set name → members`, only Palisade's `pal4-`/`pal6-` sets.
pub fn ipsets(netns_name: &str) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    let text = in_node(netns_name, "ipset", &["save"])?;
    let mut sets = std::collections::BTreeMap::<String, Vec<String>>::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["create", name, ..] if name.starts_with("pal") => {
                sets.entry(name.to_string()).or_default();
            }
            ["add", name, member, ..] if name.starts_with("pal") => {
                sets.entry(name.to_string())
                    .or_default()
                    .push(member.to_string());
            }
            _ => {}
        }
    }
    Ok(sets)
}

/// Whether `member` is in `set` on a node (`ipset test`, exit status 0 = present).
pub fn ipset_has(netns_name: &str, set: &str, member: &str) -> Result<bool> {
    let finished = proc::run_limited(
        netns::in_netns(netns_name, "ipset").args(["-q", "test", set, member]),
        None,
        Duration::from_secs(10),
    )?;
    Ok(finished.success())
}

/// Starts every agent not running yet, then waits (up to 60 s each) until each is ready.
pub fn start_all(agents: &mut [Agent]) -> Result<()> {
    for agent in agents.iter_mut() {
        if !agent.is_started() {
            agent.start()?;
        }
    }
    for agent in agents.iter_mut() {
        let (took, _) = agent.wait_ready(Duration::from_secs(60))?;
        println!("  agent {} ready after {}", agent.node, super::ms(took));
    }
    Ok(())
}
