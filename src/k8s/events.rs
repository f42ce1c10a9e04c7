//! Events on the policies Palisade cannot enforce as written, so that their owners see why:
//! a policy it cannot read, and a policy reading a set too big for the kernel.
//!
//! Every agent reads every policy, so each would report the same problem. The Event's name is
//! derived from the object, its resourceVersion and (for a set) the set: the first agent to
//! report it creates it, the others find it there (409) and leave it. One Event per policy
//! version and problem across the cluster, however many nodes.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::compiler::naming::short_hash;
use crate::compiler::SetOverflow;

/// The reason on Events about policies Palisade cannot enforce as written.
pub const POLICY_INVALID_REASON: &str = "PolicyInvalid";
/// The reason on Events about policies failed closed because a set they read is too big.
pub const SET_OVER_CAPACITY_REASON: &str = "IPSetOverCapacity";
const CONTROLLER: &str = "palisade";

/// A reference to this version of `object`: what the Events about it are named after.
/// (`Resource::object_ref` leaves the resourceVersion out.)
pub(super) fn versioned_ref<K: kube::Resource>(
    object: &K,
    dynamic_type: &K::DynamicType,
) -> ObjectReference {
    ObjectReference {
        resource_version: object.meta().resource_version.clone(),
        ..object.object_ref(dynamic_type)
    }
}

/// Where the watchers report objects they cannot enforce as written.
pub(super) trait Report: Clone + Send + 'static {
    /// `error` says what is wrong (naming the field), `instead` what Palisade enforces.
    fn policy_invalid(&self, reference: ObjectReference, error: &str, instead: &str);
}

/// Publishes Events for the cluster's agents together.
#[derive(Clone)]
pub(super) struct Publisher {
    client: Client,
}

impl Publisher {
    pub(super) fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The most an Event's note may hold (events.k8s.io/v1 rejects longer ones).
const NOTE_LIMIT: usize = 1024;

/// The Event about this version of the object: the same name on every node.
pub(super) fn policy_invalid_event(reference: &ObjectReference, note: String) -> Event {
    policy_event(reference, "invalid", "", POLICY_INVALID_REASON, note)
}

/// The Event about a set of this version of the policy that the kernel cannot hold: the same
/// name on every node whose chains read the set.
pub(super) fn set_over_capacity_event(
    reference: &ObjectReference,
    overflow: &SetOverflow,
) -> Event {
    let note = format!(
        "The {} set {} ({}) would hold {} entries, more than the {} an ipset may hold here \
         (--max-ipset-size). Palisade does not write it, and this policy allows nothing \
         through it (it fails closed) until the set fits.",
        overflow.family, overflow.set, overflow.description, overflow.elements, overflow.capacity
    );
    policy_event(
        reference,
        "capacity",
        &format!("{}/{}", overflow.family, overflow.set),
        SET_OVER_CAPACITY_REASON,
        note,
    )
}

/// An Event on `reference`, named after its version, `tag` and `detail`, so that every agent
/// reporting the same thing about the same version gives it the same name.
fn policy_event(
    reference: &ObjectReference,
    tag: &str,
    detail: &str,
    reason: &str,
    mut note: String,
) -> Event {
    let version = format!(
        "{}/{}/{}/{}/{}{}",
        reference.kind.as_deref().unwrap_or_default(),
        reference.namespace.as_deref().unwrap_or_default(),
        reference.name.as_deref().unwrap_or_default(),
        reference.uid.as_deref().unwrap_or_default(),
        reference.resource_version.as_deref().unwrap_or_default(),
        detail,
    );
    let name = reference.name.as_deref().unwrap_or(CONTROLLER);
    // Event names are DNS subdomains (253 characters); a policy name is at most 253 itself.
    let mut prefix: String = name.chars().take(200).collect();
    prefix = prefix.trim_end_matches('.').to_string();
    if note.len() > NOTE_LIMIT {
        let mut end = NOTE_LIMIT - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{prefix}.palisade-{tag}.{}", short_hash(&version))),
            namespace: Some(
                reference
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            ..ObjectMeta::default()
        },
        action: Some("Compile".into()),
        reason: Some(reason.into()),
        note: Some(note),
        type_: Some("Warning".into()),
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        regarding: Some(reference.clone()),
        reporting_controller: Some(CONTROLLER.into()),
        reporting_instance: Some(CONTROLLER.into()),
        ..Event::default()
    }
}

impl Publisher {
    /// Creates `event` unless another agent (or this one, earlier) already did. Sent in the
    /// background: a failure is logged, never holds up the caller.
    fn publish(&self, event: Event) {
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            match events.create(&PostParams::default(), &event).await {
                Ok(_) => {}
                // Another agent (or this one, at an earlier listing) reported this version.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(failure) => {
                    let regarding = event.regarding.unwrap_or_default();
                    tracing::warn!(
                        reason = event.reason.as_deref().unwrap_or_default(),
                        kind = regarding.kind.as_deref().unwrap_or_default(),
                        namespace = regarding.namespace.as_deref().unwrap_or_default(),
                        name = regarding.name.as_deref().unwrap_or_default(),
                        error = %failure,
                        "could not record an event"
                    )
                }
            }
        });
    }

    /// Tells the policy's owner, on the object itself, that a set it reads is over capacity
    /// and the policy fails closed.
    pub(super) fn set_over_capacity(&self, reference: &ObjectReference, overflow: &SetOverflow) {
        self.publish(set_over_capacity_event(reference, overflow));
    }
}

impl Report for Publisher {
    /// Tells the policy's owner, on the object itself, that Palisade cannot enforce it as
    /// written and what it does instead. Sent in the background: a failure is logged, never
    /// holds up the watch.
    fn policy_invalid(&self, reference: ObjectReference, error: &str, instead: &str) {
        self.publish(policy_invalid_event(
            &reference,
            format!("{error}. {instead}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(version: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("NetworkPolicy".into()),
            namespace: Some("web".into()),
            name: Some("broken".into()),
            uid: Some("1234".into()),
            resource_version: Some(version.into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn one_name_per_object_version_whoever_reports_it() {
        let name = |r: &ObjectReference| policy_invalid_event(r, "x".into()).metadata.name;
        assert_eq!(name(&reference("7")), name(&reference("7")));
        assert_ne!(name(&reference("7")), name(&reference("8")));
        let event = policy_invalid_event(&reference("7"), "bad".into());
        assert_eq!(event.metadata.namespace.as_deref(), Some("web"));
        assert_eq!(event.reporting_instance.as_deref(), Some("palisade"));
        let global = ObjectReference {
            namespace: None,
            name: Some("g".repeat(253)),
            ..reference("1")
        };
        let event = policy_invalid_event(&global, "bad".into());
        assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
        assert!(event.metadata.name.is_some_and(|n| n.len() <= 253));
    }

    fn overflow(set: &str, description: &str) -> SetOverflow {
        SetOverflow {
            family: crate::model::Family::V4,
            set: set.into(),
            description: description.into(),
            elements: 1_048_577,
            capacity: 1_048_576,
            policies: Vec::new(),
        }
    }

    #[test]
    fn one_capacity_event_per_policy_version_and_set() {
        let event = |version: &str, set: &str| {
            set_over_capacity_event(&reference(version), &overflow(set, "app == 'web'"))
        };
        let name = |version: &str, set: &str| event(version, set).metadata.name;
        assert_eq!(name("7", "s1"), name("7", "s1"));
        assert_ne!(name("7", "s1"), name("8", "s1"));
        assert_ne!(name("7", "s1"), name("7", "s2"));
        assert_ne!(
            name("7", "s1"),
            policy_invalid_event(&reference("7"), "x".into())
                .metadata
                .name
        );
        let first = event("7", "s1");
        assert_eq!(first.reason.as_deref(), Some(SET_OVER_CAPACITY_REASON));
        let note = first.note.unwrap_or_default();
        assert!(
            note.contains("s1 (app == 'web') would hold 1048577 entries")
                && note.contains("--max-ipset-size"),
            "{note}"
        );
    }

    #[test]
    fn a_long_note_is_cut_to_what_the_api_accepts() {
        let selector = "é".repeat(2000);
        let event = set_over_capacity_event(&reference("1"), &overflow("s", &selector));
        let note = event.note.unwrap_or_default();
        assert!(note.len() <= NOTE_LIMIT, "{} bytes", note.len());
        assert!(note.ends_with('…'));
    }
}
