//! A real kube-apiserver (and etcd) for one test, running in its own network namespace that
//! hangs off the cluster's fabric bridge, so every node reaches it directly:
//!
//! ```text
//!  api netns (PREFIXapi)                 fabric netns                node netns
//!  eth0 198.19.0.250/24 ──── apisrv ─ br0 ─ nodeK ──── eth0 198.19.0.K/24  (palisade agent)
//!  kube-apiserver on 198.19.0.250:PORT, etcd on its own 127.0.0.1
//! ```
//!
//! No address is added to the root namespace, so tests run in parallel without clashing; the
//! namespace carries the cluster's prefix, so the cluster's teardown removes it (and kills
//! whatever still runs inside) even if this guard never ran. The guard itself stops the
//! apiserver and etcd with `stop.sh` first.
//!
//! kubectl and the apiserver scripts run inside the api namespace (`ip netns exec`), the only
//! place the apiserver can be reached from.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::proc::{self, Finished};
use crate::harness::cluster::Cluster;
use crate::harness::netns;

/// The apiserver's address on the fabric: nodes are `198.19.0.K/24` with K ≤ 200.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 250);
/// The resources of the Calico kinds `palisade crds` defines, in either group.
pub const CALICO_PLURALS: [&str; 5] = [
    "networkpolicies",
    "globalnetworkpolicies",
    "networksets",
    "globalnetworksets",
    "tiers",
];

const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ApiServer {
    pub netns: String,
    /// The `start.sh --dir` directory: certificates, logs, pid files, kubeconfig.
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub url: String,
    scripts: PathBuf,
    kubectl: String,
    /// Whether `stop.sh` still needs to run.
    running: bool,
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/apiserver")
}

/// The kube-apiserver binary: from build.sh's cache, built first if missing (minutes).
fn apiserver_binary(scripts: &Path) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PALISADE_APISERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let finished = proc::run_ok(
        &mut Command::new(scripts.join("build.sh")),
        None,
        Duration::from_secs(40 * 60),
    )?;
    let path = finished
        .stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| anyhow!("build.sh printed no path: {}", finished.both()))?;
    Ok(PathBuf::from(path))
}

impl ApiServer {
    /// Creates the api namespace on the cluster's fabric and starts etcd + kube-apiserver in
    /// it, with their files under `dir` (which must not exist yet or be empty).
    pub fn start(cluster: &Cluster, dir: &Path) -> Result<ApiServer> {
        // The scripts install what is missing with apt-get, which cannot work inside a network
        // namespace: install here first.
        for (program, package) in [
            ("etcd", "etcd-server"),
            ("openssl", "openssl"),
            ("curl", "curl"),
            ("ss", "iproute2"),
            ("setsid", "util-linux"),
            ("flock", "util-linux"),
            ("kubectl", "kubernetes-client"),
        ] {
            proc::ensure_command(program, package)?;
        }
        let scripts = scripts_dir();
        let binary = apiserver_binary(&scripts)?;
        let netns_name = format!("{}api", cluster.prefix);
        netns::add_netns(&netns_name)?;
        netns::ip_batch(
            &cluster.fabric,
            &[
                format!("link add apisrv type veth peer name eth0 netns {netns_name}"),
                "link set apisrv master br0".to_string(),
                "link set apisrv up".to_string(),
            ],
        )?;
        netns::ip_batch(
            &netns_name,
            &[
                "link set lo up".to_string(),
                format!("addr add {ADDRESS}/24 dev eth0"),
                "link set eth0 up".to_string(),
            ],
        )?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let kubectl = std::env::var("PALISADE_KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut server = ApiServer {
            netns: netns_name.clone(),
            kubeconfig: dir.join("admin.kubeconfig"),
            dir: dir.clone(),
            url: String::new(),
            scripts: scripts.clone(),
            kubectl,
            running: true,
        };
        let started = Instant::now();
        let finished = proc::run_ok(
            netns::in_netns(&netns_name, scripts.join("start.sh"))
                .arg("--dir")
                .arg(&dir)
                .args(["--bind-address", &ADDRESS.to_string()])
                .env("PALISADE_APISERVER_BIN", &binary),
            None,
            Duration::from_secs(180),
        )
        .context("start.sh")?;
        server.url = finished
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("export PALISADE_APISERVER_URL="))
            .map(|v| v.trim_matches('\'').to_string())
            .ok_or_else(|| anyhow!("start.sh printed no PALISADE_APISERVER_URL"))?;
        println!(
            "apiserver {} up in {:.1}s (dir {})",
            server.url,
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        Ok(server)
    }

    /// A command run inside the api namespace.
    fn inside(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        netns::in_netns(&self.netns, program)
    }

    /// `kubectl ARGS` against this apiserver; fails unless it exits 0.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_input(args, None)
    }

    pub fn kubectl_input(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        Ok(self.kubectl_raw(args, input)?.stdout)
    }

    /// kubectl, returning whatever happened (exit status included).
    pub fn kubectl_raw(&self, args: &[&str], input: Option<&str>) -> Result<Finished> {
        let mut command = self.inside(&self.kubectl);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .arg("--cache-dir")
            .arg(self.dir.with_file_name("kubectl-cache"))
            .args(args);
        let line = format!("kubectl {}", args.join(" "));
        let finished = proc::run_limited(&mut command, input, KUBECTL_TIMEOUT)?;
        if !finished.success() {
            bail!("`{line}` failed ({}): {}", finished.status, finished.both());
        }
        Ok(finished)
    }

    /// `kubectl apply -f -` of `objects`, as one List.
    pub fn apply(&self, objects: &[Value]) -> Result<()> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.kubectl_input(&["apply", "-f", "-"], Some(&list.to_string()))?;
        Ok(())
    }

    /// Installs Calico's CRDs as `palisade crds --group GROUP_ARG` prints them and waits until
    /// each of [`CALICO_PLURALS`] (in the API group `group_name`) is established.
    // calico_e2e and the soak install them; agent_e2e, which checks this module is used, does not.
    #[allow(dead_code)]
    pub fn install_calico_crds(
        &self,
        palisade: &Path,
        group_arg: &str,
        group_name: &str,
    ) -> Result<()> {
        let output = Command::new(palisade)
            .args(["crds", "--group", group_arg])
            .output()
            .context("running palisade crds")?;
        if !output.status.success() {
            bail!(
                "palisade crds failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = String::from_utf8(output.stdout).context("palisade crds printed non-UTF-8")?;
        self.kubectl_input(&["apply", "-f", "-"], Some(&text))?;
        for plural in CALICO_PLURALS {
            // `kubectl wait` fails on a CRD so new that it has no status yet.
            let crd = format!("crd/{plural}.{group_name}");
            let wait = ["wait", "--for=condition=Established", "--timeout=30s", &crd];
            let mut attempts = 0;
            while let Err(error) = self.kubectl(&wait) {
                attempts += 1;
                if attempts == 20 {
                    return Err(error);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        Ok(())
    }

    /// `helm ARGS` against this apiserver, run from the repository root, with its caches in the
    /// run directory. The helm binary is `$PALISADE_HELM`, as
    /// `integration/chart/install-tools.sh` provides it.
    // The upgrade test uses it; agent_e2e, which checks this module is used, does not.
    #[allow(dead_code)]
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let helm = std::env::var("PALISADE_HELM").context(
            "PALISADE_HELM names no helm: `eval \"$(integration/chart/install-tools.sh)\"` first",
        )?;
        let home = self.dir.with_file_name("helm");
        let mut command = self.inside(&helm);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        let line = format!("helm {}", args.join(" "));
        let finished = proc::run_limited(&mut command, None, Duration::from_secs(120))?;
        if !finished.success() {
            bail!("`{line}` failed ({}): {}", finished.status, finished.both());
        }
        Ok(finished.stdout)
    }

    /// `kubectl get ... -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.kubectl(&all)?;
        serde_json::from_str(&text)
            .with_context(|| format!("kubectl get {args:?} printed {text:?}"))
    }

    /// Plays the kubelet: marks the pod Running with `ip` (set-pod-status.sh).
    pub fn set_pod_status(&self, namespace: &str, name: &str, ip: &str) -> Result<()> {
        proc::run_ok(
            self.inside(self.scripts.join("set-pod-status.sh"))
                .arg(&self.kubeconfig)
                .args([namespace, name, ip]),
            None,
            Duration::from_secs(60),
        )?;
        Ok(())
    }

    /// The same status as set-pod-status.sh (Running, Ready, the pod IP), written with one
    /// `kubectl patch --subresource=status`: one call whose return is a precise start for
    /// timing (the script does the PATCH in the middle of several kubectl calls).
    pub fn patch_pod_status(&self, namespace: &str, name: &str, ip: &str) -> Result<()> {
        let condition = |kind: &str| json!({"type": kind, "status": "True"});
        let patch = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [
                condition("Initialized"),
                condition("Ready"),
                condition("ContainersReady"),
                condition("PodScheduled"),
            ],
        }});
        self.kubectl(&[
            "patch",
            "pod",
            "-n",
            namespace,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])?;
        Ok(())
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.kubectl_raw(&["get", "--raw", "/readyz"], None).is_ok()
    }

    /// `stop.sh --only-apiserver`: etcd and all state stay. Returns what stop.sh said.
    pub fn stop_apiserver(&self) -> Result<String> {
        let finished = proc::run_ok(
            Command::new(self.scripts.join("stop.sh"))
                .arg("--dir")
                .arg(&self.dir)
                .arg("--only-apiserver"),
            None,
            Duration::from_secs(60),
        )?;
        Ok(finished.stderr.trim().replace('\n', "; "))
    }

    /// `restart-apiserver.sh`, inside the api namespace (the apiserver binds the address
    /// there). Returns once `/readyz` answers.
    pub fn restart_apiserver(&self) -> Result<()> {
        proc::run_ok(
            self.inside(self.scripts.join("restart-apiserver.sh"))
                .arg("--dir")
                .arg(&self.dir),
            None,
            Duration::from_secs(120),
        )?;
        Ok(())
    }

    /// Compacts etcd's history up to its current revision, as etcd's periodic compaction
    /// does, so a watch that resumes from an older resourceVersion gets `410 Gone`. Returns
    /// the revision. Uses etcd's JSON gateway from inside the api namespace.
    pub fn compact_etcd(&self) -> Result<u64> {
        let env = std::fs::read_to_string(self.dir.join("env"))
            .with_context(|| format!("reading {}/env", self.dir.display()))?;
        let etcd = env
            .lines()
            .find_map(|l| l.strip_prefix("export PALISADE_ETCD_URL="))
            .map(|v| v.trim_matches('\''))
            .ok_or_else(|| anyhow!("{}/env names no PALISADE_ETCD_URL", self.dir.display()))?;
        let post = |path: &str, body: &str| -> Result<Value> {
            let finished = proc::run_ok(
                self.inside("curl").args([
                    "-sSf",
                    "-X",
                    "POST",
                    &format!("{etcd}{path}"),
                    "-d",
                    body,
                ]),
                None,
                Duration::from_secs(20),
            )?;
            serde_json::from_str(&finished.stdout)
                .with_context(|| format!("etcd {path} answered {}", finished.stdout))
        };
        let range = post("/v3/kv/range", r#"{"key":"AA==","limit":1}"#)?;
        let revision: u64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| anyhow!("etcd's range answer has no header.revision: {range}"))?;
        post(
            "/v3/kv/compaction",
            &json!({"revision": revision.to_string(), "physical": true}).to_string(),
        )?;
        Ok(revision)
    }

    /// The last `lines` lines of the apiserver's log.
    pub fn log_tail(&self, lines: usize) -> String {
        super::tail(&self.dir.join("apiserver.log"), lines)
    }

    /// Stops the apiserver and etcd. Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        proc::run_ok(
            Command::new(self.scripts.join("stop.sh"))
                .arg("--dir")
                .arg(&self.dir),
            None,
            Duration::from_secs(60),
        )?;
        self.running = false;
        Ok(())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!(
                "stopping the apiserver of {}: {error:#}",
                self.dir.display()
            );
        }
    }
}
