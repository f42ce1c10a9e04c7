//! What sources tell the agent: plain model objects, never Kubernetes client types.

use crate::model::{
    Namespace, NetworkSet, NetworkSetKey, ObjectKey, Pod, Policy, PolicyId, PolicyKind,
    ServiceAccount, ServiceSlice, Tier,
};

/// The kinds a source lists and watches. The agent syncs only after each kind its source
/// serves has been listed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Namespace,
    ServiceAccount,
    EndpointSlice,
    NetworkPolicy,
    CalicoNetworkPolicy,
    CalicoGlobalNetworkPolicy,
    NetworkSet,
    GlobalNetworkSet,
    Tier,
}

impl Kind {
    /// What the Kubernetes source watches.
    pub const KUBERNETES: [Kind; 3] = [Kind::Pod, Kind::Namespace, Kind::NetworkPolicy];

    /// Everything a manifest directory holds.
    pub const ALL: [Kind; 10] = [
        Kind::Pod,
        Kind::Namespace,
        Kind::ServiceAccount,
        Kind::EndpointSlice,
        Kind::NetworkPolicy,
        Kind::CalicoNetworkPolicy,
        Kind::CalicoGlobalNetworkPolicy,
        Kind::NetworkSet,
        Kind::GlobalNetworkSet,
        Kind::Tier,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Namespace => "namespace",
            Kind::ServiceAccount => "serviceaccount",
            Kind::EndpointSlice => "endpointslice",
            Kind::NetworkPolicy => "networkpolicy",
            Kind::CalicoNetworkPolicy => "calico-networkpolicy",
            Kind::CalicoGlobalNetworkPolicy => "calico-globalnetworkpolicy",
            Kind::NetworkSet => "networkset",
            Kind::GlobalNetworkSet => "globalnetworkset",
            Kind::Tier => "tier",
        }
    }

    pub fn of_policy(kind: PolicyKind) -> Self {
        match kind {
            PolicyKind::Kubernetes => Kind::NetworkPolicy,
            PolicyKind::Calico => Kind::CalicoNetworkPolicy,
            PolicyKind::CalicoGlobal => Kind::CalicoGlobalNetworkPolicy,
        }
    }
}

/// A policy Palisade could not read, and what it enforces in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPolicy {
    pub id: PolicyId,
    pub error: String,
    /// Fails closed: for a Kubernetes policy it isolates the selected pods and allows nothing;
    /// for a Calico policy it denies, in its tier and at its order, what it selects.
    pub fail_closed: Option<Policy>,
}

#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// A complete listing of pods (initial list or re-list): replaces what the agent knows.
    PodsListed(Vec<Pod>),
    NamespacesListed(Vec<Namespace>),
    ServiceAccountsListed(Vec<ServiceAccount>),
    ServiceSlicesListed(Vec<ServiceSlice>),
    /// Namespaced NetworkSets, or (`namespaced: false`) GlobalNetworkSets.
    NetworkSetsListed {
        namespaced: bool,
        sets: Vec<NetworkSet>,
    },
    TiersListed(Vec<Tier>),
    /// Every policy of one kind.
    PoliciesListed {
        kind: PolicyKind,
        valid: Vec<Policy>,
        invalid: Vec<InvalidPolicy>,
    },
    /// A pod that takes part in policy was added or changed.
    PodApplied(Pod),
    /// A pod is gone, or no longer takes part in policy (finished, lost its IP).
    PodRemoved(ObjectKey),
    NamespaceApplied(Namespace),
    NamespaceRemoved(String),
    ServiceAccountApplied(ServiceAccount),
    ServiceAccountRemoved(ObjectKey),
    ServiceSliceApplied(ServiceSlice),
    ServiceSliceRemoved(ObjectKey),
    NetworkSetApplied(NetworkSet),
    NetworkSetRemoved(NetworkSetKey),
    TierApplied(Tier),
    TierRemoved(String),
    PolicyApplied(Policy),
    PolicyInvalid(InvalidPolicy),
    PolicyRemoved(PolicyId),
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
            SourceEvent::ServiceAccountsListed(_)
            | SourceEvent::ServiceAccountApplied(_)
            | SourceEvent::ServiceAccountRemoved(_) => Kind::ServiceAccount,
            SourceEvent::ServiceSlicesListed(_)
            | SourceEvent::ServiceSliceApplied(_)
            | SourceEvent::ServiceSliceRemoved(_) => Kind::EndpointSlice,
            SourceEvent::NetworkSetsListed { namespaced, .. } => {
                if *namespaced {
                    Kind::NetworkSet
                } else {
                    Kind::GlobalNetworkSet
                }
            }
            SourceEvent::NetworkSetApplied(set) => network_set_kind(&set.key),
            SourceEvent::NetworkSetRemoved(key) => network_set_kind(key),
            SourceEvent::TiersListed(_)
            | SourceEvent::TierApplied(_)
            | SourceEvent::TierRemoved(_) => Kind::Tier,
            SourceEvent::PoliciesListed { kind, .. } => Kind::of_policy(*kind),
            SourceEvent::PolicyApplied(policy) => Kind::of_policy(policy.id.kind),
            SourceEvent::PolicyInvalid(bad) => Kind::of_policy(bad.id.kind),
            SourceEvent::PolicyRemoved(id) => Kind::of_policy(id.kind),
        }
    }
}

fn network_set_kind(key: &NetworkSetKey) -> Kind {
    if key.namespace.is_some() {
        Kind::NetworkSet
    } else {
        Kind::GlobalNetworkSet
    }
}
