//! `palisade apply` and `palisade cleanup` as users run them, inside a network namespace of the
//! test's own: exit statuses, idempotence, dry runs, and bad input leaving the kernel untouched.
//!
//! Needs root; without it each test says so and passes.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A network namespace deleted when the value drops, even when the test panics.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "pal-cli-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip netns add {name}");
        Self(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    fn palisade(&self, args: &[&str]) -> Output {
        let mut argv = vec![env!("CARGO_BIN_EXE_palisade")];
        argv.extend_from_slice(args);
        self.run(&argv)
    }

    /// The filter table and the ipsets, without the lines that change on every save.
    fn kernel_state(&self) -> String {
        let mut out = String::new();
        for tool in [
            "iptables-nft-save",
            "iptables-legacy-save",
            "ip6tables-nft-save",
            "ipset",
        ] {
            let output = if tool == "ipset" {
                self.run(&["ipset", "save"])
            } else {
                self.run(&[tool])
            };
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

const CLUSTER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: web, image: web, ports: [{name: http, containerPort: 80}]}]}
status: {phase: Running, podIP: 10.9.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {role: client}}
spec: {nodeName: node-2, containers: [{name: c, image: c}]}
status: {phase: Running, podIP: 10.9.1.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{port: http}]
"#;

const BROKEN_POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: default}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/33}}]
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write manifest");
    path.display().to_string()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_input_leaves_the_kernel_exactly_as_it_was() {
    if !is_root() {
        eprintln!("skipping: needs root (network namespaces)");
        return;
    }
    let netns = Netns::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "cluster.yaml", CLUSTER);
    let applied = netns.palisade(&[
        "apply",
        "--backend",
        "nft",
        "--node",
        "node-1",
        "--manifests",
        &good,
    ]);
    assert_eq!(applied.status.code(), Some(0), "{}", stderr(&applied));
    let before = netns.kernel_state();
    assert!(
        before.contains("PAL-FORWARD") && before.contains("pal4-"),
        "{before}"
    );

    let broken_dir = tempfile::tempdir().expect("temp dir");
    write(broken_dir.path(), "cluster.yaml", CLUSTER);
    write(broken_dir.path(), "zz-broken.yaml", BROKEN_POLICY);
    let rejected = netns.palisade(&[
        "apply",
        "--backend",
        "nft",
        "--node",
        "node-1",
        "--manifests",
        &broken_dir.path().display().to_string(),
    ]);
    assert_eq!(
        rejected.status.code(),
        Some(1),
        "invalid input exits 1: {}",
        stderr(&rejected)
    );
    let message = stderr(&rejected);
    assert!(
        message.contains("zz-broken.yaml: document 1: NetworkPolicy default/broken: spec.ingress[0].from[0].ipBlock.cidr"),
        "{message}"
    );
    assert_eq!(
        netns.kernel_state(),
        before,
        "a rejected apply must not touch the kernel"
    );
}

#[test]
fn a_second_apply_changes_nothing_and_a_dry_run_sends_nothing() {
    if !is_root() {
        eprintln!("skipping: needs root (network namespaces)");
        return;
    }
    let netns = Netns::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "cluster.yaml", CLUSTER);
    let dry = netns.palisade(&[
        "apply",
        "--dry-run",
        "--backend",
        "legacy",
        "--node",
        "node-1",
        "--manifests",
        &good,
    ]);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let diff = stdout(&dry);
    assert!(
        diff.contains("-A PAL-FORWARD") && diff.contains("would make"),
        "{diff}"
    );
    assert!(
        !netns.kernel_state().contains("PAL-"),
        "a dry run writes nothing"
    );

    let first = netns.palisade(&[
        "apply",
        "--backend",
        "legacy",
        "--node",
        "node-1",
        "--manifests",
        &good,
    ]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(
        !stdout(&first).contains("applied 0 changes"),
        "{}",
        stdout(&first)
    );
    let second = netns.palisade(&[
        "apply",
        "--backend",
        "legacy",
        "--node",
        "node-1",
        "--manifests",
        &good,
    ]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        stdout(&second).starts_with("applied 0 changes"),
        "{}",
        stdout(&second)
    );

    let cleanup = netns.palisade(&["cleanup", "--backend", "legacy"]);
    assert_eq!(cleanup.status.code(), Some(0), "{}", stderr(&cleanup));
    assert!(!netns.kernel_state().contains("PAL-"));
    let again = netns.palisade(&["cleanup", "--backend", "legacy"]);
    assert!(
        stdout(&again).starts_with("applied 0 changes"),
        "cleanup is idempotent: {}",
        stdout(&again)
    );
}

#[test]
fn a_kernel_failure_exits_2_with_the_reason() {
    if !is_root() {
        eprintln!("skipping: needs root (network namespaces)");
        return;
    }
    let netns = Netns::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "cluster.yaml", CLUSTER);
    // Without the iptables and ipset tools on PATH, nothing can be read or written.
    let empty = tempfile::tempdir().expect("temp dir");
    let failed = netns.run(&[
        "env",
        &format!("PATH={}", empty.path().display()),
        env!("CARGO_BIN_EXE_palisade"),
        "apply",
        "--backend",
        "nft",
        "--node",
        "node-1",
        "--manifests",
        &good,
    ]);
    assert_eq!(failed.status.code(), Some(2), "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("could not run"),
        "{}",
        stderr(&failed)
    );
}
