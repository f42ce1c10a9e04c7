//! Events on the objects Palisade cannot enforce as written, so that their owners see why.
//!
//! Every agent reads every policy, so each would report the same problem. The Event's name is
//! derived from the object and its resourceVersion: the first agent to report a version
//! creates it, the others find it there (409) and leave it. One Event per policy version
//! across the cluster, however many nodes.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::compiler::naming::short_hash;

/// The reason on Events about policies Palisade cannot enforce as written.
pub const POLICY_INVALID_REASON: &str = "PolicyInvalid";
const CONTROLLER: &str = "palisade";

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

/// The Event about this version of the object: the same name on every node.
pub(super) fn policy_invalid_event(reference: &ObjectReference, note: String) -> Event {
    let version = format!(
        "{}/{}/{}/{}/{}",
        reference.kind.as_deref().unwrap_or_default(),
        reference.namespace.as_deref().unwrap_or_default(),
        reference.name.as_deref().unwrap_or_default(),
        reference.uid.as_deref().unwrap_or_default(),
        reference.resource_version.as_deref().unwrap_or_default(),
    );
    let name = reference.name.as_deref().unwrap_or(CONTROLLER);
    // Event names are DNS subdomains (253 characters); a policy name is at most 253 itself.
    let mut prefix: String = name.chars().take(200).collect();
    prefix = prefix.trim_end_matches('.').to_string();
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{prefix}.palisade-invalid.{}",
                short_hash(&version)
            )),
            namespace: Some(
                reference
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            ..ObjectMeta::default()
        },
        action: Some("Compile".into()),
        reason: Some(POLICY_INVALID_REASON.into()),
        note: Some(note),
        type_: Some("Warning".into()),
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        regarding: Some(reference.clone()),
        reporting_controller: Some(CONTROLLER.into()),
        reporting_instance: Some(CONTROLLER.into()),
        ..Event::default()
    }
}

impl Report for Publisher {
    /// Tells the policy's owner, on the object itself, that Palisade cannot enforce it as
    /// written and what it does instead. Sent in the background: a failure is logged, never
    /// holds up the watch.
    fn policy_invalid(&self, reference: ObjectReference, error: &str, instead: &str) {
        let event = policy_invalid_event(&reference, format!("{error}. {instead}"));
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            match events.create(&PostParams::default(), &event).await {
                Ok(_) => {}
                // Another agent (or this one, at an earlier listing) reported this version.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(failure) => tracing::warn!(
                    kind = reference.kind.as_deref().unwrap_or_default(),
                    namespace = reference.namespace.as_deref().unwrap_or_default(),
                    name = reference.name.as_deref().unwrap_or_default(),
                    error = %failure,
                    "could not record the PolicyInvalid event"
                ),
            }
        });
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
}
