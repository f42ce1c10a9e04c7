//! The watchers' translation of API objects into source events, without a server: what a
//! listing, an update, a rename and a delete of each kind become, and what is reported.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::DynamicObject;
use serde_json::{json, Value};

use super::calico::CalicoObjects;
use super::events::Report;
use super::kubernetes::ServiceSlices;
use super::policy_objects::PolicyObjects;
use super::watch::Translate;
use crate::agent::SourceEvent;
use crate::model::calico::{ApiGroup, CalicoKind};
use crate::model::{PolicyId, PolicyKind};

/// One report: `(kind, apiVersion, namespace/name, error)`.
type Reported = (String, String, String, String);

/// The reports made.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Reported>>>);

impl Report for Recorded {
    fn policy_invalid(&self, reference: ObjectReference, error: &str, _instead: &str) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.push((
            reference.kind.unwrap_or_default(),
            reference.api_version.unwrap_or_default(),
            format!(
                "{}/{}",
                reference.namespace.unwrap_or_default(),
                reference.name.unwrap_or_default()
            ),
            error.to_string(),
        ));
    }
}

impl Recorded {
    fn taken(&self) -> Vec<Reported> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("a test object")
}

/// A `crd.projectcalico.org/v1` object as Calico stores it: the v3 name and labels in the
/// metadata annotation.
fn stored(
    kind: &str,
    namespace: Option<&str>,
    stored_name: &str,
    meta: Value,
    spec: Value,
) -> DynamicObject {
    let mut metadata = json!({
        "name": stored_name,
        "annotations": {"projectcalico.org/metadata": meta.to_string()},
    });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    dynamic(json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": kind,
        "metadata": metadata,
        "spec": spec,
    }))
}

fn v3(kind: &str, namespace: Option<&str>, name: &str, spec: Value) -> DynamicObject {
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    dynamic(json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": metadata,
        "spec": spec,
    }))
}

fn applied_ids(events: &[SourceEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| match event {
            SourceEvent::PolicyApplied(p) => format!("applied {}/{}", p.id.namespace, p.id.name),
            SourceEvent::PolicyInvalid(bad) => {
                format!("invalid {}/{}", bad.id.namespace, bad.id.name)
            }
            SourceEvent::PolicyRemoved(id) => format!("removed {}/{}", id.namespace, id.name),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn stored_policies_are_named_by_their_annotation_and_removed_by_what_they_produced() {
    let reports = Recorded::default();
    let objects = PolicyObjects::default();
    let mut policies = CalicoObjects::new(
        ApiGroup::CrdV1,
        CalicoKind::NetworkPolicy,
        reports.clone(),
        objects.clone(),
    );
    let stored_name = |id: &PolicyId| objects.reference(id).and_then(|r| r.name);
    let spec = json!({"selector": "app == 'web'", "ingress": [{"action": "Allow"}]});
    let object = stored(
        "NetworkPolicy",
        Some("shop"),
        "default.allow-web",
        json!({"name": "allow-web", "namespace": "shop"}),
        spec.clone(),
    );
    policies.list_item(&object);
    let SourceEvent::PoliciesListed {
        kind,
        valid,
        invalid,
    } = policies.listed()
    else {
        panic!("a policy listing");
    };
    assert_eq!(kind, PolicyKind::Calico);
    assert!(invalid.is_empty());
    assert_eq!(valid.len(), 1);
    assert_eq!(valid[0].id, PolicyId::calico("shop", "allow-web"));
    // Events about the policy go on the object as stored.
    assert_eq!(
        stored_name(&PolicyId::calico("shop", "allow-web")).as_deref(),
        Some("default.allow-web")
    );

    // The annotation's name changes (a rename through Calico's API keeps the stored name):
    // the old policy goes, the new one comes.
    let renamed = stored(
        "NetworkPolicy",
        Some("shop"),
        "default.allow-web",
        json!({"name": "allow-web-2", "namespace": "shop"}),
        spec,
    );
    assert_eq!(
        applied_ids(&policies.applied(&renamed)),
        ["removed shop/allow-web", "applied shop/allow-web-2"]
    );
    assert_eq!(stored_name(&PolicyId::calico("shop", "allow-web")), None);
    assert_eq!(
        stored_name(&PolicyId::calico("shop", "allow-web-2")).as_deref(),
        Some("default.allow-web")
    );
    // Deleted by its stored name: the policy it produced is removed.
    assert_eq!(
        applied_ids(&policies.deleted(&renamed)),
        ["removed shop/allow-web-2"]
    );
    assert_eq!(objects.len(), 0);
    // Deleting what the agent never saw removes nothing.
    assert!(policies.deleted(&object).is_empty());
    assert!(reports.taken().is_empty());
}

#[test]
fn an_invalid_policy_is_reported_on_its_object_and_failed_closed() {
    let reports = Recorded::default();
    let mut policies = CalicoObjects::new(
        ApiGroup::V3,
        CalicoKind::GlobalNetworkPolicy,
        reports.clone(),
        PolicyObjects::default(),
    );
    let bad = v3(
        "GlobalNetworkPolicy",
        None,
        "broken",
        json!({"tier": "security", "order": 5, "selector": "app == 'db'",
               "ingress": [{"action": "Allow", "source": {"selector": "role == "}}]}),
    );
    let events = policies.applied(&bad);
    let [SourceEvent::PolicyInvalid(invalid)] = events.as_slice() else {
        panic!("one PolicyInvalid, got {events:?}");
    };
    assert_eq!(invalid.id, PolicyId::global("broken"));
    assert!(
        invalid.error.contains("spec.ingress[0].source.selector"),
        "{}",
        invalid.error
    );
    let stand_in = invalid
        .fail_closed
        .as_ref()
        .expect("a fail-closed stand-in");
    assert_eq!(stand_in.tier, "security");
    assert_eq!(stand_in.ingress.as_ref().map(Vec::len), Some(1));
    let reported = reports.taken();
    assert_eq!(reported.len(), 1);
    let (kind, api_version, name, error) = &reported[0];
    assert_eq!(
        (kind.as_str(), api_version.as_str(), name.as_str()),
        ("GlobalNetworkPolicy", "projectcalico.org/v3", "/broken")
    );
    assert!(error.contains("spec.ingress[0].source.selector"));

    // Fixed: the same id, now valid; deleted: removed.
    let fixed = v3(
        "GlobalNetworkPolicy",
        None,
        "broken",
        json!({"tier": "security", "selector": "app == 'db'", "ingress": [{"action": "Allow"}]}),
    );
    assert_eq!(applied_ids(&policies.applied(&fixed)), ["applied /broken"]);
    assert_eq!(applied_ids(&policies.deleted(&fixed)), ["removed /broken"]);
}

#[test]
fn a_policy_that_stops_being_enforced_is_removed() {
    let mut policies = CalicoObjects::new(
        ApiGroup::V3,
        CalicoKind::GlobalNetworkPolicy,
        Recorded::default(),
        PolicyObjects::default(),
    );
    let enforced = v3(
        "GlobalNetworkPolicy",
        None,
        "edge",
        json!({"selector": "all()"}),
    );
    assert_eq!(applied_ids(&policies.applied(&enforced)), ["applied /edge"]);
    // Host endpoints only (doNotTrack): Palisade does not enforce it, so it must go.
    let untracked = v3(
        "GlobalNetworkPolicy",
        None,
        "edge",
        json!({"selector": "all()", "doNotTrack": true, "applyOnForward": true}),
    );
    assert_eq!(
        applied_ids(&policies.applied(&untracked)),
        ["removed /edge"]
    );
    assert!(policies.deleted(&untracked).is_empty());
}

#[test]
fn network_sets_take_their_labels_from_the_annotation_and_tiers_come_and_go() {
    let mut sets = CalicoObjects::new(
        ApiGroup::CrdV1,
        CalicoKind::NetworkSet,
        Recorded::default(),
        PolicyObjects::default(),
    );
    let set = stored(
        "NetworkSet",
        Some("shop"),
        "partners",
        json!({"name": "partners", "namespace": "shop", "labels": {"kind": "partner"}}),
        json!({"nets": ["198.51.100.0/24"]}),
    );
    sets.list_item(&set);
    let SourceEvent::NetworkSetsListed {
        namespaced,
        sets: listed,
    } = sets.listed()
    else {
        panic!("a network set listing");
    };
    assert!(namespaced);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].labels.get("kind").map(|v| v.as_ref()),
        Some("partner")
    );
    let removed = sets.deleted(&set);
    assert!(
        matches!(removed.as_slice(), [SourceEvent::NetworkSetRemoved(key)]
        if key.namespace.as_deref() == Some("shop") && key.name == "partners")
    );

    let mut tiers = CalicoObjects::new(
        ApiGroup::V3,
        CalicoKind::Tier,
        Recorded::default(),
        PolicyObjects::default(),
    );
    let tier = v3("Tier", None, "security", json!({"order": 100}));
    assert!(
        matches!(tiers.applied(&tier).as_slice(), [SourceEvent::TierApplied(t)] if t.name == "security")
    );
    assert!(
        matches!(tiers.deleted(&tier).as_slice(), [SourceEvent::TierRemoved(name)] if name == "security")
    );
}

#[test]
fn endpoint_slices_of_either_version_are_read() {
    let mut slices = ServiceSlices::default();
    for api_version in ["discovery.k8s.io/v1beta1", "discovery.k8s.io/v1"] {
        let slice = dynamic(json!({
            "apiVersion": api_version,
            "kind": "EndpointSlice",
            "metadata": {"name": "db-x1", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.7"], "topology": {"kubernetes.io/hostname": "n1"}}],
            "ports": [{"port": 5432, "protocol": "TCP"}],
        }));
        let events = slices.applied(&slice);
        let [SourceEvent::ServiceSliceApplied(read)] = events.as_slice() else {
            panic!("{api_version}: one ServiceSliceApplied, got {events:?}");
        };
        assert_eq!(read.service, "db");
        assert_eq!(
            read.addresses,
            vec!["10.0.0.7".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(read.ports.len(), 1);
    }
}
