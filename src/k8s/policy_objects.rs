//! Which stored object, at which version, each policy of the model came from: what an Event
//! about a policy found wrong after conversion (in the compiler or the kernel) refers to.
//!
//! The policy watchers keep it as they keep the agent's index: a listing replaces what their
//! kind had, an update or a delete changes one entry. It mirrors the objects that exist, so
//! it does not grow with churn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;

use crate::model::{PolicyId, PolicyKind};

#[derive(Clone, Default)]
pub(super) struct PolicyObjects(Arc<Mutex<HashMap<PolicyId, ObjectReference>>>);

impl PolicyObjects {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<PolicyId, ObjectReference>> {
        // A panic elsewhere while holding it leaves a map that is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a listing of `kind`: exactly `listed`.
    pub(super) fn listed(&self, kind: PolicyKind, listed: Vec<(PolicyId, ObjectReference)>) {
        let mut entries = self.entries();
        entries.retain(|id, _| id.kind != kind);
        entries.extend(listed);
    }

    pub(super) fn applied(&self, id: PolicyId, reference: ObjectReference) {
        self.entries().insert(id, reference);
    }

    pub(super) fn removed(&self, id: &PolicyId) {
        self.entries().remove(id);
    }

    pub(super) fn reference(&self, id: &PolicyId) -> Option<ObjectReference> {
        self.entries().get(id).cloned()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: PolicyKind, name: &str) -> PolicyId {
        PolicyId {
            kind,
            namespace: "web".into(),
            name: name.into(),
        }
    }

    fn reference(name: &str, version: &str) -> ObjectReference {
        ObjectReference {
            name: Some(name.into()),
            resource_version: Some(version.into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn a_listing_replaces_its_kind_only() {
        let objects = PolicyObjects::default();
        objects.applied(id(PolicyKind::Kubernetes, "gone"), reference("gone", "1"));
        objects.applied(id(PolicyKind::Calico, "calico"), reference("calico", "2"));
        objects.listed(
            PolicyKind::Kubernetes,
            vec![(id(PolicyKind::Kubernetes, "kept"), reference("kept", "3"))],
        );
        assert_eq!(objects.len(), 2);
        assert!(objects
            .reference(&id(PolicyKind::Kubernetes, "gone"))
            .is_none());
        assert!(objects
            .reference(&id(PolicyKind::Calico, "calico"))
            .is_some());

        objects.applied(id(PolicyKind::Kubernetes, "kept"), reference("kept", "4"));
        let kept = objects.reference(&id(PolicyKind::Kubernetes, "kept"));
        assert_eq!(kept.and_then(|r| r.resource_version).as_deref(), Some("4"));
        objects.removed(&id(PolicyKind::Kubernetes, "kept"));
        assert_eq!(objects.len(), 1);
    }
}
