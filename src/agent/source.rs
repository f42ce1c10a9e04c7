//! What sources tell the agent: plain model objects, never Kubernetes client types.

use crate::model::{Namespace, ObjectKey, Pod, Policy};

/// The kinds a source lists and watches. The agent syncs only after each has been listed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Namespace,
    NetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Pod, Kind::Namespace, Kind::NetworkPolicy];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Namespace => "namespace",
            Kind::NetworkPolicy => "networkpolicy",
        }
    }
}

/// A policy Palisade could not read, and what it enforces in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPolicy {
    pub key: ObjectKey,
    pub error: String,
    /// Isolates the selected pods and allows nothing (see `convert::policy_fail_closed`).
    pub fail_closed: Option<Policy>,
}

#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// A complete listing of pods (initial list or re-list): replaces what the agent knows.
    PodsListed(Vec<Pod>),
    NamespacesListed(Vec<Namespace>),
    PoliciesListed {
        valid: Vec<Policy>,
        invalid: Vec<InvalidPolicy>,
    },
    /// A pod that takes part in policy was added or changed.
    PodApplied(Pod),
    /// A pod is gone, or no longer takes part in policy (finished, lost its IP).
    PodRemoved(ObjectKey),
    NamespaceApplied(Namespace),
    NamespaceRemoved(String),
    PolicyApplied(Policy),
    PolicyInvalid(InvalidPolicy),
    PolicyRemoved(ObjectKey),
}

impl SourceEvent {
    pub fn kind(&self) -> Kind {
        match self {
            SourceEvent::PodsListed(_)
            | SourceEvent::PodApplied(_)
            | SourceEvent::PodRemoved(_) => Kind::Pod,
            SourceEvent::NamespacesListed(_)
            | SourceEvent::NamespaceApplied(_)
            | SourceEvent::NamespaceRemoved(_) => Kind::Namespace,
            SourceEvent::PoliciesListed { .. }
            | SourceEvent::PolicyApplied(_)
            | SourceEvent::PolicyInvalid(_)
            | SourceEvent::PolicyRemoved(_) => Kind::NetworkPolicy,
        }
    }
}
