//! Another program holding the xtables lock (kube-proxy does while it writes), with real
//! packets: one `palisade agent --backend legacy` in a node namespace reading manifests, its
//! restores pointed at a lock file of the test's own (`XTABLES_LOCKFILE`), held by `flock`.
//!
//! - held 5 s during a sync: the agent waits, applies once the lock is free, and reports no
//!   error (`/readyz` stays ready);
//! - held 15 s, longer than the agent's 10 s wait: the sync fails, `/readyz` turns unready,
//!   the old rules stay in force meanwhile, and the retry applies once the lock is free.
//!
//! The nft backend takes no lock (nftables transactions are atomic in the kernel), so this is
//! legacy only. Needs root; without it the test prints "skipping: needs root".

#[path = "harness/mod.rs"]
// The harness is shared with other targets; this one uses part of it.
#[allow(dead_code)]
mod harness;

#[path = "e2e/mod.rs"]
#[allow(dead_code)]
mod e2e;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use e2e::agent::{Agent, Source as AgentSource};
use e2e::one_server::{self, allow_from, connects, ready, restore_errors};
use e2e::{binaries, kube, RunDir};
use harness::cluster::Cluster;
use harness::netns;

/// Holds the lock file for `seconds` in a `flock` child.
fn hold_lock(lock: &Path, seconds: u64) -> Result<Child> {
    let child = Command::new("flock")
        .arg(lock)
        .args(["sleep", &seconds.to_string()])
        .spawn()
        .context("starting flock")?;
    // flock takes the lock at once when it is free; give it a moment to start.
    std::thread::sleep(Duration::from_millis(200));
    Ok(child)
}

/// Waits until `from` connects (`want`) or not; returns how long it took.
fn until_verdict(cluster: &Cluster, from: &str, want: bool, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if connects(cluster, from)? == want {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{from} -> web/server:80 was not {want} within {limit:?}")
}

fn body(run: &RunDir) -> Result<()> {
    let mut cluster = Cluster::new(binaries(), "pallk", 1)?;
    cluster.add_pods(one_server::pods())?;
    let manifests = kube::ManifestDir::new(&run.path)?;
    manifests.write("10-namespace-web.yaml", &kube::namespace("web", &[]))?;
    manifests.write_pods(&cluster)?;
    manifests.write("30-policy.yaml", &allow_from(&["a"]))?;
    let lock = run.path.join("xtables.lock");
    std::fs::write(&lock, "")?;
    let node = cluster.node(1)?;
    let mut agent = Agent::new(
        &cluster.binaries.palisade,
        &node.name,
        &node.netns,
        AgentSource::Manifests(manifests.path.clone()),
        &run.path,
        "60s",
    );
    agent.backend = "legacy".into();
    agent.env = vec![("XTABLES_LOCKFILE".to_string(), lock.display().to_string())];
    agent.start()?;
    agent.wait_ready(Duration::from_secs(30))?;
    if !connects(&cluster, "web/a")? || connects(&cluster, "web/b")? {
        bail!("the first policy is not in force");
    }

    // Held for 5 s: the sync waits and applies when the lock is free, without an error.
    let errors = restore_errors(&agent)?;
    let mut holder = hold_lock(&lock, 5)?;
    let held = Instant::now();
    manifests.write("30-policy.yaml", &allow_from(&["a", "b"]))?;
    let mut stayed_ready = true;
    while held.elapsed() < Duration::from_secs(4) {
        stayed_ready &= ready(&agent)?;
        if connects(&cluster, "web/b")? {
            bail!("web/b connected while the lock was held: the rules changed without it");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    until_verdict(&cluster, "web/b", true, Duration::from_secs(5))?;
    let applied = held.elapsed();
    let _ = holder.wait();
    let errors_after = restore_errors(&agent)?;
    println!(
        "  lock held 5 s: applied {applied:?} after the lock was taken; restore errors {errors} -> {errors_after}; ready throughout: {stayed_ready}"
    );
    if errors_after != errors || !stayed_ready {
        bail!("a 5 s wait for the lock was reported as a failure");
    }

    // Held for 15 s, longer than the agent waits: the sync fails and the old rules stay.
    let mut holder = hold_lock(&lock, 15)?;
    let held = Instant::now();
    manifests.write("30-policy.yaml", &allow_from(&["a"]))?;
    let mut unready_at = None;
    while held.elapsed() < Duration::from_secs(14) {
        if unready_at.is_none() && !ready(&agent)? {
            unready_at = Some(held.elapsed());
        }
        if !connects(&cluster, "web/b")? {
            bail!("web/b lost its access while the lock was held: the rules changed without it");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let failed = restore_errors(&agent)?;
    let Some(unready_at) = unready_at else {
        bail!("/readyz stayed ready while the sync could not take the lock");
    };
    until_verdict(&cluster, "web/b", false, Duration::from_secs(20))?;
    let in_force = held.elapsed();
    let _ = holder.wait();
    let recovered_ready = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if ready(&agent)? {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    println!(
        "  lock held 15 s: unready {unready_at:?} after it was taken, restore errors {errors_after} -> {failed}, old rules in force until the lock was free, new ones {in_force:?} after it was taken; ready again: {recovered_ready}"
    );
    if failed <= errors_after {
        bail!(
            "the failed sync was not counted in palisade_sync_errors_total{{reason=\"restore\"}}"
        );
    }
    if !recovered_ready {
        bail!("/readyz did not turn ready after the retry");
    }
    if !connects(&cluster, "web/a")? {
        bail!("web/a lost its access");
    }
    let status = agent.stop()?;
    if !status.success() {
        bail!("exit status {status} on SIGTERM");
    }
    Ok(())
}

#[test]
fn a_held_xtables_lock_delays_or_fails_a_sync_and_never_half_writes_it() {
    let test = "a_held_xtables_lock_delays_or_fails_a_sync_and_never_half_writes_it";
    if !netns::is_root() {
        println!("skipping {test}: needs root");
        return;
    }
    let run = match RunDir::new("e2e-xtables-lock") {
        Ok(run) => run,
        Err(e) => panic!("{test}: {e:#}"),
    };
    if let Err(e) = body(&run) {
        println!(
            "--- log tail of the agent:\n{}",
            e2e::tail(&run.path.join("agent-node-1.log"), 30)
        );
        panic!("{test}: {e:#}");
    }
}
