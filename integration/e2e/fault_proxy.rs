//! A proxy in front of the apiserver that the test tells to misbehave (`fault-proxy.py`): it
//! runs in the api namespace, serves the apiserver's own certificate, and forwards, answers
//! 500, or leaves connections hanging on command. Agents reach the apiserver through it;
//! kubectl goes straight to the apiserver, so the test can change the cluster while the
//! agents cannot see it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::apiserver::{ApiServer, ADDRESS};
use crate::harness::netns;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Every open connection closed, every new request answered `500`.
    Error500,
    /// Every open connection left hanging for good; new ones accepted and never answered.
    Hang,
}

impl Mode {
    fn command(self) -> &'static str {
        match self {
            Mode::Pass => "pass",
            Mode::Error500 => "500",
            Mode::Hang => "hang",
        }
    }
}

pub struct FaultProxy {
    /// A copy of the apiserver's admin kubeconfig that points at the proxy.
    pub kubeconfig: PathBuf,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl FaultProxy {
    /// Starts the proxy in front of `api`, writing its kubeconfig into `dir`.
    pub fn start(api: &ApiServer, dir: &Path) -> Result<FaultProxy> {
        let pki = api.dir.join("pki");
        let upstream = api
            .url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("the apiserver's URL {} is not https", api.url))?
            .to_string();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/apiserver/fault-proxy.py");
        let mut child = netns::in_netns(&api.netns, "python3")
            .arg(&script)
            .args(["--listen", &ADDRESS.to_string(), "--upstream", &upstream])
            .arg("--cert")
            .arg(pki.join("serving.crt"))
            .arg("--key")
            .arg(pki.join("serving.key"))
            .arg("--ca")
            .arg(pki.join("ca.crt"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting fault-proxy.py")?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("fault-proxy.py has no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("fault-proxy.py has no stdout"))?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let mut proxy = FaultProxy {
            kubeconfig: dir.join("proxy.kubeconfig"),
            child,
            stdin,
            lines,
        };
        let first = proxy
            .next_line()
            .context("waiting for fault-proxy.py to listen")?;
        let address = first
            .strip_prefix("listening ")
            .ok_or_else(|| anyhow!("fault-proxy.py said {first:?} instead of `listening ADDR`"))?;
        let admin = std::fs::read_to_string(&api.kubeconfig)
            .with_context(|| format!("reading {}", api.kubeconfig.display()))?;
        if !admin.contains(&api.url) {
            bail!("{} does not name {}", api.kubeconfig.display(), api.url);
        }
        let proxied = admin.replace(&api.url, &format!("https://{address}"));
        std::fs::write(&proxy.kubeconfig, proxied)
            .with_context(|| format!("writing {}", proxy.kubeconfig.display()))?;
        Ok(proxy)
    }

    fn next_line(&mut self) -> Result<String> {
        match self.lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => Ok(line),
            Err(_) => {
                let status = self.child.try_wait().ok().flatten();
                bail!("fault-proxy.py said nothing for 20 s (exit status {status:?})")
            }
        }
    }

    /// Switches the mode; returns the proxy's account (connections closed, left hanging).
    pub fn set(&mut self, mode: Mode) -> Result<String> {
        writeln!(self.stdin, "{}", mode.command()).context("writing to fault-proxy.py")?;
        self.stdin.flush().context("writing to fault-proxy.py")?;
        let answer = self.next_line()?;
        if !answer.starts_with("mode ") {
            bail!("fault-proxy.py answered {answer:?} to {mode:?}");
        }
        Ok(answer)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
