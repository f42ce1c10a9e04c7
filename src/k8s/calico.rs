//! Calico's kinds (NetworkPolicy, GlobalNetworkPolicy, NetworkSet, GlobalNetworkSet, Tier) in
//! whichever group the cluster stores them, read as dynamic objects and converted by the same
//! code that reads them from files, so a policy means the same from `kubectl apply` as from a
//! manifest.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};

use super::events::{versioned_ref, Report};
use super::policy_objects::PolicyObjects;
use super::watch::{key_of, Translate};
use crate::agent::{InvalidPolicy, Kind, SourceEvent};
use crate::model::calico::{self, ApiGroup, CalicoKind, CalicoResource};
use crate::model::{NetworkSet, NetworkSetKey, ObjectKey, Policy, PolicyId, PolicyKind, Tier};

/// The Calico kinds the agent watches, with the agent's name for each.
pub const WATCHED: [(CalicoKind, Kind); 5] = [
    (CalicoKind::NetworkPolicy, Kind::CalicoNetworkPolicy),
    (
        CalicoKind::GlobalNetworkPolicy,
        Kind::CalicoGlobalNetworkPolicy,
    ),
    (CalicoKind::NetworkSet, Kind::NetworkSet),
    (CalicoKind::GlobalNetworkSet, Kind::GlobalNetworkSet),
    (CalicoKind::Tier, Kind::Tier),
];

/// The API path of one Calico kind in one group.
pub fn api_resource(group: ApiGroup, kind: CalicoKind) -> ApiResource {
    let (group_name, version) = match group {
        ApiGroup::V3 => ("projectcalico.org", "v3"),
        ApiGroup::CrdV1 => ("crd.projectcalico.org", "v1"),
    };
    let plural = match kind {
        CalicoKind::NetworkPolicy => "networkpolicies",
        CalicoKind::GlobalNetworkPolicy => "globalnetworkpolicies",
        CalicoKind::StagedNetworkPolicy => "stagednetworkpolicies",
        CalicoKind::StagedGlobalNetworkPolicy => "stagedglobalnetworkpolicies",
        CalicoKind::StagedKubernetesNetworkPolicy => "stagedkubernetesnetworkpolicies",
        CalicoKind::NetworkSet => "networksets",
        CalicoKind::GlobalNetworkSet => "globalnetworksets",
        CalicoKind::Tier => "tiers",
    };
    let gvk = GroupVersionKind::gvk(group_name, version, kind.as_str());
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

/// What one stored object became, so that its deletion (or a change of its Calico name)
/// removes exactly that.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Produced {
    Policy(PolicyId),
    NetworkSet(NetworkSetKey),
    Tier(String),
}

impl Produced {
    fn removal(self) -> SourceEvent {
        match self {
            Produced::Policy(id) => SourceEvent::PolicyRemoved(id),
            Produced::NetworkSet(key) => SourceEvent::NetworkSetRemoved(key),
            Produced::Tier(name) => SourceEvent::TierRemoved(name),
        }
    }
}

/// One object's conversion, before it becomes an event or part of a listing.
enum Outcome {
    Policy(Policy),
    Invalid(InvalidPolicy),
    NetworkSet(NetworkSet),
    Tier(Tier),
    /// Not enforced (staged, host-endpoint only) or unreadable without a policy to fail
    /// closed; already logged.
    Nothing,
}

impl Outcome {
    fn produced(&self) -> Option<Produced> {
        match self {
            Outcome::Policy(policy) => Some(Produced::Policy(policy.id.clone())),
            Outcome::Invalid(bad) => Some(Produced::Policy(bad.id.clone())),
            Outcome::NetworkSet(set) => Some(Produced::NetworkSet(set.key.clone())),
            Outcome::Tier(tier) => Some(Produced::Tier(tier.name.clone())),
            Outcome::Nothing => None,
        }
    }
}

pub(super) struct CalicoObjects<R> {
    group: ApiGroup,
    kind: CalicoKind,
    resource: ApiResource,
    events: R,
    objects: PolicyObjects,
    produced: HashMap<ObjectKey, Produced>,
    listing: Vec<(ObjectKey, ObjectReference, Outcome)>,
}

impl<R: Report> CalicoObjects<R> {
    pub(super) fn new(
        group: ApiGroup,
        kind: CalicoKind,
        events: R,
        objects: PolicyObjects,
    ) -> Self {
        Self {
            group,
            kind,
            resource: api_resource(group, kind),
            events,
            objects,
            produced: HashMap::new(),
            listing: Vec::new(),
        }
    }

    fn convert(&self, object: &DynamicObject) -> Outcome {
        let key = key_of(object);
        let value = match serde_json::to_value(object) {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(kind = self.kind.as_str(), object = %key, %error, "cannot read a Calico object");
                return Outcome::Nothing;
            }
        };
        let mut warnings = Vec::new();
        let converted = calico::convert(self.group, self.kind, &value, &mut warnings);
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        match converted {
            Ok(CalicoResource::Policy(policy)) => Outcome::Policy(policy),
            Ok(CalicoResource::NetworkSet(set)) => Outcome::NetworkSet(set),
            Ok(CalicoResource::Tier(tier)) => Outcome::Tier(tier),
            Ok(CalicoResource::Ignored(why)) => {
                tracing::info!(kind = self.kind.as_str(), object = %key, "not enforced: {why}");
                Outcome::Nothing
            }
            Err(error) => self.invalid(object, &value, error.to_string()),
        }
    }

    /// An object Palisade cannot read: an Event on it, and for a policy, its fail-closed
    /// stand-in. A network set or tier that cannot be read is left out, as if absent.
    fn invalid(&self, object: &DynamicObject, value: &serde_json::Value, error: String) -> Outcome {
        let fail_closed = calico::fail_closed(self.group, self.kind, value);
        let instead = match &fail_closed {
            Some(_) => "Palisade denies, in the policy's tier and order, what it selects until the policy is fixed.",
            None => "Palisade leaves it out until it is fixed.",
        };
        self.events
            .policy_invalid(versioned_ref(object, &self.resource), &error, instead);
        match fail_closed {
            Some(policy) => Outcome::Invalid(InvalidPolicy {
                id: policy.id.clone(),
                error,
                fail_closed: Some(policy),
            }),
            None => {
                tracing::warn!(kind = self.kind.as_str(), object = %key_of(object), %error, "ignoring a Calico object Palisade cannot read");
                Outcome::Nothing
            }
        }
    }

    fn policy_kind(&self) -> PolicyKind {
        match self.kind {
            CalicoKind::GlobalNetworkPolicy => PolicyKind::CalicoGlobal,
            _ => PolicyKind::Calico,
        }
    }
}

impl<R: Report> Translate<DynamicObject> for CalicoObjects<R> {
    fn list_item(&mut self, object: &DynamicObject) {
        let outcome = self.convert(object);
        self.listing.push((
            key_of(object),
            versioned_ref(object, &self.resource),
            outcome,
        ));
    }

    fn listed(&mut self) -> SourceEvent {
        self.produced.clear();
        let mut policies = Vec::new();
        let mut invalid = Vec::new();
        let mut sets = Vec::new();
        let mut tiers = Vec::new();
        let mut objects = Vec::new();
        for (key, reference, outcome) in std::mem::take(&mut self.listing) {
            if let Some(produced) = outcome.produced() {
                if let Produced::Policy(id) = &produced {
                    objects.push((id.clone(), reference));
                }
                self.produced.insert(key, produced);
            }
            match outcome {
                Outcome::Policy(policy) => policies.push(policy),
                Outcome::Invalid(bad) => invalid.push(bad),
                Outcome::NetworkSet(set) => sets.push(set),
                Outcome::Tier(tier) => tiers.push(tier),
                Outcome::Nothing => {}
            }
        }
        match self.kind {
            CalicoKind::NetworkSet | CalicoKind::GlobalNetworkSet => {
                SourceEvent::NetworkSetsListed {
                    namespaced: self.kind == CalicoKind::NetworkSet,
                    sets,
                }
            }
            CalicoKind::Tier => SourceEvent::TiersListed(tiers),
            _ => {
                self.objects.listed(self.policy_kind(), objects);
                SourceEvent::PoliciesListed {
                    kind: self.policy_kind(),
                    valid: policies,
                    invalid,
                }
            }
        }
    }

    fn applied(&mut self, object: &DynamicObject) -> Vec<SourceEvent> {
        let key = key_of(object);
        let outcome = self.convert(object);
        let now = outcome.produced();
        let mut events = Vec::new();
        let before = match &now {
            Some(produced) => self.produced.insert(key, produced.clone()),
            None => self.produced.remove(&key),
        };
        if let Some(before) = before.filter(|b| Some(b) != now.as_ref()) {
            if let Produced::Policy(id) = &before {
                self.objects.removed(id);
            }
            events.push(before.removal());
        }
        if let Some(Produced::Policy(id)) = &now {
            self.objects
                .applied(id.clone(), versioned_ref(object, &self.resource));
        }
        match outcome {
            Outcome::Policy(policy) => events.push(SourceEvent::PolicyApplied(policy)),
            Outcome::Invalid(bad) => events.push(SourceEvent::PolicyInvalid(bad)),
            Outcome::NetworkSet(set) => events.push(SourceEvent::NetworkSetApplied(set)),
            Outcome::Tier(tier) => events.push(SourceEvent::TierApplied(tier)),
            Outcome::Nothing => {}
        }
        events
    }

    fn deleted(&mut self, object: &DynamicObject) -> Vec<SourceEvent> {
        let produced = self.produced.remove(&key_of(object));
        if let Some(Produced::Policy(id)) = &produced {
            self.objects.removed(id);
        }
        produced.map(Produced::removal).into_iter().collect()
    }
}
