//! Events on the objects Palisade cannot enforce as written, so that their owners see why.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

/// The reason on Events about policies Palisade cannot enforce as written.
pub const POLICY_INVALID_REASON: &str = "PolicyInvalid";

/// Where the watchers report objects they cannot enforce as written.
pub(super) trait Report: Clone + Send + 'static {
    /// `error` says what is wrong (naming the field), `instead` what Palisade enforces.
    fn policy_invalid(&self, reference: ObjectReference, error: &str, instead: &str);
}

/// Publishes Events as this node's agent.
#[derive(Clone)]
pub(super) struct Publisher {
    recorder: Recorder,
}

impl Publisher {
    pub(super) fn new(client: Client, node: String) -> Self {
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "palisade".into(),
                instance: Some(node),
            },
        );
        Self { recorder }
    }
}

impl Report for Publisher {
    /// Tells the policy's owner, on the object itself, that Palisade cannot enforce it as
    /// written and what it does instead. Sent in the background: a failure is logged, never
    /// holds up the watch.
    fn policy_invalid(&self, reference: ObjectReference, error: &str, instead: &str) {
        let event = Event {
            type_: EventType::Warning,
            reason: POLICY_INVALID_REASON.into(),
            note: Some(format!("{error}. {instead}")),
            action: "Compile".into(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(failure) = recorder.publish(&event, &reference).await {
                tracing::warn!(
                    kind = reference.kind.as_deref().unwrap_or_default(),
                    namespace = reference.namespace.as_deref().unwrap_or_default(),
                    name = reference.name.as_deref().unwrap_or_default(),
                    error = %failure,
                    "could not record the PolicyInvalid event"
                );
            }
        });
    }
}
