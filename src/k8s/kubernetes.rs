//! Kubernetes' own kinds: Pods, Namespaces and NetworkPolicies for every cluster, and the
//! ServiceAccounts and EndpointSlices that Calico rules select by.

use k8s_openapi::api::core::v1::{
    Namespace as K8sNamespace, ObjectReference, Pod as K8sPod, ServiceAccount as K8sServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::ResourceExt;

use super::events::{versioned_ref, Report};
use super::policy_objects::PolicyObjects;
use super::watch::{key_of, Translate};
use crate::agent::{InvalidPolicy, SourceEvent};
use crate::model::{convert, PolicyId, PolicyKind};

fn log_warnings(warnings: Vec<convert::Warning>) {
    for warning in warnings {
        tracing::warn!("{warning}");
    }
}

#[derive(Default)]
pub(super) struct Pods {
    listing: Vec<crate::model::Pod>,
}

impl Pods {
    fn convert(pod: &K8sPod) -> Option<crate::model::Pod> {
        let mut warnings = Vec::new();
        let converted = convert::pod(pod, &mut warnings);
        log_warnings(warnings);
        converted.unwrap_or_else(|error| {
            tracing::warn!(%error, "ignoring a pod Palisade cannot read");
            None
        })
    }
}

impl Translate<K8sPod> for Pods {
    fn list_item(&mut self, pod: &K8sPod) {
        self.listing.extend(Self::convert(pod));
    }

    fn listed(&mut self) -> SourceEvent {
        SourceEvent::PodsListed(std::mem::take(&mut self.listing))
    }

    fn applied(&mut self, pod: &K8sPod) -> Vec<SourceEvent> {
        vec![match Self::convert(pod) {
            Some(converted) => SourceEvent::PodApplied(converted),
            // Finished, host-networked or without an IP: no longer part of policy.
            None => SourceEvent::PodRemoved(key_of(pod)),
        }]
    }

    fn deleted(&mut self, pod: &K8sPod) -> Vec<SourceEvent> {
        vec![SourceEvent::PodRemoved(key_of(pod))]
    }
}

#[derive(Default)]
pub(super) struct Namespaces {
    listing: Vec<crate::model::Namespace>,
}

impl Namespaces {
    fn convert(ns: &K8sNamespace) -> crate::model::Namespace {
        let mut warnings = Vec::new();
        let converted = convert::namespace(ns, &mut warnings);
        log_warnings(warnings);
        converted
    }
}

impl Translate<K8sNamespace> for Namespaces {
    fn list_item(&mut self, ns: &K8sNamespace) {
        self.listing.push(Self::convert(ns));
    }

    fn listed(&mut self) -> SourceEvent {
        SourceEvent::NamespacesListed(std::mem::take(&mut self.listing))
    }

    fn applied(&mut self, ns: &K8sNamespace) -> Vec<SourceEvent> {
        vec![SourceEvent::NamespaceApplied(Self::convert(ns))]
    }

    fn deleted(&mut self, ns: &K8sNamespace) -> Vec<SourceEvent> {
        vec![SourceEvent::NamespaceRemoved(ns.name_any())]
    }
}

#[derive(Default)]
pub(super) struct ServiceAccounts {
    listing: Vec<crate::model::ServiceAccount>,
}

impl Translate<K8sServiceAccount> for ServiceAccounts {
    fn list_item(&mut self, account: &K8sServiceAccount) {
        self.listing.push(convert::service_account(account));
    }

    fn listed(&mut self) -> SourceEvent {
        SourceEvent::ServiceAccountsListed(std::mem::take(&mut self.listing))
    }

    fn applied(&mut self, account: &K8sServiceAccount) -> Vec<SourceEvent> {
        vec![SourceEvent::ServiceAccountApplied(
            convert::service_account(account),
        )]
    }

    fn deleted(&mut self, account: &K8sServiceAccount) -> Vec<SourceEvent> {
        vec![SourceEvent::ServiceAccountRemoved(key_of(account))]
    }
}

/// The API path of EndpointSlices in the version the server serves.
pub(super) fn endpoint_slice_resource(version: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("discovery.k8s.io", version, "EndpointSlice");
    ApiResource::from_gvk_with_plural(&gvk, "endpointslices")
}

#[derive(Default)]
pub(super) struct ServiceSlices {
    listing: Vec<crate::model::ServiceSlice>,
}

impl ServiceSlices {
    /// Reads a slice of either version: `v1beta1` has the same shape in every field Palisade
    /// reads (addresses, ports, the service-name label).
    fn convert(object: &DynamicObject) -> Option<crate::model::ServiceSlice> {
        let mut value = match serde_json::to_value(object) {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(%error, "ignoring an EndpointSlice Palisade cannot read");
                return None;
            }
        };
        value["apiVersion"] = "discovery.k8s.io/v1".into();
        value["kind"] = "EndpointSlice".into();
        let slice: EndpointSlice = match serde_json::from_value(value) {
            Ok(slice) => slice,
            Err(error) => {
                tracing::warn!(slice = %key_of(object), %error, "ignoring an EndpointSlice Palisade cannot read");
                return None;
            }
        };
        let mut warnings = Vec::new();
        let converted = convert::endpoint_slice(&slice, &mut warnings);
        log_warnings(warnings);
        converted.unwrap_or_else(|error| {
            tracing::warn!(%error, "ignoring an EndpointSlice Palisade cannot read");
            None
        })
    }
}

impl Translate<DynamicObject> for ServiceSlices {
    fn list_item(&mut self, slice: &DynamicObject) {
        self.listing.extend(Self::convert(slice));
    }

    fn listed(&mut self) -> SourceEvent {
        SourceEvent::ServiceSlicesListed(std::mem::take(&mut self.listing))
    }

    fn applied(&mut self, slice: &DynamicObject) -> Vec<SourceEvent> {
        vec![match Self::convert(slice) {
            Some(converted) => SourceEvent::ServiceSliceApplied(converted),
            // No longer tied to a Service, or unreadable: its addresses are no service's.
            None => SourceEvent::ServiceSliceRemoved(key_of(slice)),
        }]
    }

    fn deleted(&mut self, slice: &DynamicObject) -> Vec<SourceEvent> {
        vec![SourceEvent::ServiceSliceRemoved(key_of(slice))]
    }
}

enum Converted {
    Valid(crate::model::Policy),
    Invalid(InvalidPolicy),
}

pub(super) struct Policies<R> {
    events: R,
    objects: PolicyObjects,
    valid: Vec<crate::model::Policy>,
    invalid: Vec<InvalidPolicy>,
    listed_objects: Vec<(PolicyId, ObjectReference)>,
}

impl<R: Report> Policies<R> {
    pub(super) fn new(events: R, objects: PolicyObjects) -> Self {
        Self {
            events,
            objects,
            valid: Vec::new(),
            invalid: Vec::new(),
            listed_objects: Vec::new(),
        }
    }

    /// Converts, and reports an unreadable policy on the object itself.
    fn convert(&self, policy: &NetworkPolicy) -> Converted {
        let mut warnings = Vec::new();
        let converted = convert::policy(policy, &mut warnings);
        log_warnings(warnings);
        match converted {
            Ok(valid) => Converted::Valid(valid.to_policy()),
            Err(error) => {
                let error = error.to_string();
                self.events.policy_invalid(
                    versioned_ref(policy, &()),
                    &error,
                    "Palisade isolates the selected pods and allows nothing until the policy is fixed.",
                );
                Converted::Invalid(InvalidPolicy {
                    id: PolicyId::kubernetes(&key_of(policy)),
                    error,
                    fail_closed: Some(convert::policy_fail_closed(policy).to_policy()),
                })
            }
        }
    }
}

impl<R: Report> Translate<NetworkPolicy> for Policies<R> {
    fn list_item(&mut self, policy: &NetworkPolicy) {
        self.listed_objects.push((
            PolicyId::kubernetes(&key_of(policy)),
            versioned_ref(policy, &()),
        ));
        match self.convert(policy) {
            Converted::Valid(p) => self.valid.push(p),
            Converted::Invalid(bad) => self.invalid.push(bad),
        }
    }

    fn listed(&mut self) -> SourceEvent {
        self.objects.listed(
            PolicyKind::Kubernetes,
            std::mem::take(&mut self.listed_objects),
        );
        SourceEvent::PoliciesListed {
            kind: PolicyKind::Kubernetes,
            valid: std::mem::take(&mut self.valid),
            invalid: std::mem::take(&mut self.invalid),
        }
    }

    fn applied(&mut self, policy: &NetworkPolicy) -> Vec<SourceEvent> {
        self.objects.applied(
            PolicyId::kubernetes(&key_of(policy)),
            versioned_ref(policy, &()),
        );
        vec![match self.convert(policy) {
            Converted::Valid(p) => SourceEvent::PolicyApplied(p),
            Converted::Invalid(bad) => SourceEvent::PolicyInvalid(bad),
        }]
    }

    fn deleted(&mut self, policy: &NetworkPolicy) -> Vec<SourceEvent> {
        let id = PolicyId::kubernetes(&key_of(policy));
        self.objects.removed(&id);
        vec![SourceEvent::PolicyRemoved(id)]
    }
}
