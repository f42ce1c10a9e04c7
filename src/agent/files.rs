//! The manifest-directory source: the agent without an API server, for standalone hosts and
//! tests. It re-reads the directory when a file changes and sends complete listings; the index
//! turns them into the few changes they contain.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::source::{InvalidPolicy, SourceEvent};
use super::AgentMessage;
use crate::manifest::{self, ManifestError};

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
    let mut invalid: Vec<InvalidPolicy> = Vec::new();
    for error in &manifests.errors {
        tracing::error!(%error, "skipping an object that cannot be read");
    }
    for policy in manifests.fail_closed {
        let object = format!("NetworkPolicy {}", policy.key);
        let error = manifests
            .errors
            .iter()
            .find_map(|e| match e {
                ManifestError::Invalid { source, .. } if source.object == object => {
                    Some(e.to_string())
                }
                _ => None,
            })
            .unwrap_or_else(|| "invalid".to_string());
        invalid.push(InvalidPolicy {
            key: policy.key.clone(),
            error,
            fail_closed: Some(policy),
        });
    }
    vec![
        SourceEvent::NamespacesListed(manifests.namespaces),
        SourceEvent::PodsListed(manifests.pods),
        SourceEvent::PoliciesListed {
            valid: manifests.policies,
            invalid,
        },
    ]
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
                if sender.send(AgentMessage::Source(event)).is_err() {
                    return;
                }
            }
            last = Some(current);
        }
        std::thread::sleep(poll);
    }
}
