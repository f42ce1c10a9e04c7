//! The manifest-directory source: the agent without an API server, for standalone hosts and
//! tests. It re-reads the directory when a file changes and sends complete listings; the index
//! turns them into the few changes they contain.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::source::{InvalidPolicy, SourceEvent};
use super::AgentMessage;
use crate::manifest;
use crate::model::{Policy, PolicyKind};

/// What the directory looked like: each file's path, size and modification time.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(metadata) = std::fs::metadata(&path) else {
            out.push((path, 0, None));
            continue;
        };
        if metadata.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else {
            out.push((path, metadata.len(), metadata.modified().ok()));
        }
    }
    out.sort();
    out
}

/// The listings for one read of the manifests; invalid objects are logged and, for policies,
/// enforced fail-closed.
pub fn read_listings(paths: &[PathBuf]) -> Vec<SourceEvent> {
    let manifests = manifest::load_lenient(paths);
    for warning in &manifests.warnings {
        tracing::warn!("{warning}");
    }
    for notice in &manifests.notices {
        tracing::info!("{notice}");
    }
    for error in &manifests.errors {
        tracing::error!(%error, "skipping an object that cannot be read");
    }
    let mut policies: BTreeMap<PolicyKind, (Vec<Policy>, Vec<InvalidPolicy>)> = [
        PolicyKind::Kubernetes,
        PolicyKind::Calico,
        PolicyKind::CalicoGlobal,
    ]
    .into_iter()
    .map(|kind| (kind, Default::default()))
    .collect();
    for policy in manifests.policies {
        if let Some((valid, _)) = policies.get_mut(&policy.id.kind) {
            valid.push(policy);
        }
    }
    for failed in manifests.fail_closed {
        if let Some((_, invalid)) = policies.get_mut(&failed.policy.id.kind) {
            invalid.push(InvalidPolicy {
                id: failed.policy.id.clone(),
                error: failed.error,
                fail_closed: Some(failed.policy),
            });
        }
    }
    let (namespaced, global): (Vec<_>, Vec<_>) = manifests
        .network_sets
        .into_iter()
        .partition(|set| set.key.namespace.is_some());
    let mut events = vec![
        SourceEvent::NamespacesListed(manifests.namespaces),
        SourceEvent::ServiceAccountsListed(manifests.service_accounts),
        SourceEvent::PodsListed(manifests.pods),
        SourceEvent::ServiceSlicesListed(manifests.service_slices),
        SourceEvent::TiersListed(manifests.tiers),
        SourceEvent::NetworkSetsListed {
            namespaced: true,
            sets: namespaced,
        },
        SourceEvent::NetworkSetsListed {
            namespaced: false,
            sets: global,
        },
    ];
    events.extend(policies.into_iter().map(|(kind, (valid, invalid))| {
        SourceEvent::PoliciesListed {
            kind,
            valid,
            invalid,
        }
    }));
    events
}

/// Watches `paths` until `stop` is set or the agent is gone, sending listings on each change.
pub fn watch(
    paths: Vec<PathBuf>,
    sender: Sender<AgentMessage>,
    poll: Duration,
    stop: Arc<AtomicBool>,
) {
    let mut last: Option<Fingerprint> = None;
    while !stop.load(Ordering::SeqCst) {
        let current = fingerprint(&paths);
        if last.as_ref() != Some(&current) {
            if last.is_some() {
                tracing::info!("manifests changed; re-reading");
            }
            for event in read_listings(&paths) {
                if sender.send(AgentMessage::Source(Box::new(event))).is_err() {
                    return;
                }
            }
            last = Some(current);
        }
        std::thread::sleep(poll);
    }
}
