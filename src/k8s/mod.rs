//! The Kubernetes source: kube-runtime watchers for Pods, Namespaces and NetworkPolicies,
//! turned into [`SourceEvent`]s. The only module that talks to the API server.
//!
//! Objects are converted to the model as they arrive, so only the fields Palisade needs stay in
//! memory. A watcher restart (a 410 Gone, a dropped connection) re-lists: the listing is
//! buffered until complete and then replaces what the agent knows, so nothing is lost or
//! removed in between. While the API server is unreachable the watchers back off and retry,
//! and the agent keeps the rules it has.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod as K8sPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};

use crate::agent::{AgentMessage, InvalidPolicy, SourceEvent};
use crate::metrics::Metrics;
use crate::model::{convert, ObjectKey, PolicyId, PolicyKind};

/// The reason on Events about policies Palisade cannot enforce as written.
pub const POLICY_INVALID_REASON: &str = "PolicyInvalid";

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no usable Kubernetes configuration (kubeconfig or in-cluster): {0}")]
    Config(#[from] kube::Error),
}

pub async fn client() -> Result<Client, SourceError> {
    Ok(Client::try_default().await?)
}

/// Runs the three watchers until the agent stops listening.
pub async fn run(
    client: Client,
    node: String,
    sender: Sender<AgentMessage>,
    metrics: Arc<Metrics>,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "palisade".into(),
            instance: Some(node),
        },
    );
    let pods = watch(
        Api::all(client.clone()),
        "pod",
        Pods::default(),
        sender.clone(),
        Arc::clone(&metrics),
    );
    let namespaces = watch(
        Api::all(client.clone()),
        "namespace",
        Namespaces::default(),
        sender.clone(),
        Arc::clone(&metrics),
    );
    let policies = Policies {
        recorder,
        valid: Vec::new(),
        invalid: Vec::new(),
    };
    let policies = watch(Api::all(client), "networkpolicy", policies, sender, metrics);
    futures::join!(pods, namespaces, policies);
}

fn events<K>(api: Api<K>) -> impl Stream<Item = Result<Event<K>, watcher::Error>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default())
}

/// Retry delay of a failing watcher. kube-runtime's own backoff resets on the `Init` event that
/// precedes every list attempt, so a watcher that keeps failing would retry about once a
/// second forever; this one grows until the watch delivers a listing or an event again.
struct Backoff {
    next: std::time::Duration,
}

impl Backoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(800);
    // Short enough that an agent resumes within seconds of an API server outage ending.
    const MAX: std::time::Duration = std::time::Duration::from_secs(5);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Self::MAX);
    }
}

fn send(sender: &Sender<AgentMessage>, event: SourceEvent) -> bool {
    sender.send(AgentMessage::Source(Box::new(event))).is_ok()
}

fn key_of<K: Resource>(object: &K) -> ObjectKey {
    ObjectKey::new(object.namespace().unwrap_or_default(), object.name_any())
}

async fn watch_error(metrics: &Metrics, kind: &str, error: &watcher::Error, backoff: &mut Backoff) {
    metrics.sync_errors.with_label_values(&["watch"]).inc();
    tracing::warn!(
        kind,
        %error,
        retry_in_ms = backoff.next.as_millis() as u64,
        "watch failed; retrying with backoff (rules stay as they are)"
    );
    backoff.wait().await;
}

/// How one kind's watch events become source events.
trait Translate<K> {
    /// Takes one object of a listing in progress.
    fn list_item(&mut self, object: &K);
    /// The finished listing.
    fn listed(&mut self) -> SourceEvent;
    fn applied(&mut self, object: &K) -> SourceEvent;
    fn deleted(&mut self, object: &K) -> SourceEvent;
}

/// Runs one watcher until the agent stops listening. A listing is buffered until complete;
/// errors back off until the watch delivers again.
async fn watch<K, T>(
    api: Api<K>,
    kind: &'static str,
    mut translate: T,
    sender: Sender<AgentMessage>,
    metrics: Arc<Metrics>,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    T: Translate<K>,
{
    let mut stream = std::pin::pin!(events(api));
    let mut backoff = Backoff::new();
    while let Some(event) = stream.next().await {
        let out = match event {
            Ok(Event::Init) => None,
            Ok(Event::InitApply(object)) => {
                translate.list_item(&object);
                None
            }
            Ok(Event::InitDone) => Some(translate.listed()),
            Ok(Event::Apply(object)) => Some(translate.applied(&object)),
            Ok(Event::Delete(object)) => Some(translate.deleted(&object)),
            Err(error) => {
                watch_error(&metrics, kind, &error, &mut backoff).await;
                continue;
            }
        };
        if let Some(out) = out {
            backoff.reset();
            if !send(&sender, out) {
                return;
            }
        }
    }
}

fn log_warnings(warnings: Vec<convert::Warning>) {
    for warning in warnings {
        tracing::warn!("{warning}");
    }
}

#[derive(Default)]
struct Pods {
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

    fn applied(&mut self, pod: &K8sPod) -> SourceEvent {
        match Self::convert(pod) {
            Some(converted) => SourceEvent::PodApplied(converted),
            // Finished, host-networked or without an IP: no longer part of policy.
            None => SourceEvent::PodRemoved(key_of(pod)),
        }
    }

    fn deleted(&mut self, pod: &K8sPod) -> SourceEvent {
        SourceEvent::PodRemoved(key_of(pod))
    }
}

#[derive(Default)]
struct Namespaces {
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

    fn applied(&mut self, ns: &K8sNamespace) -> SourceEvent {
        SourceEvent::NamespaceApplied(Self::convert(ns))
    }

    fn deleted(&mut self, ns: &K8sNamespace) -> SourceEvent {
        SourceEvent::NamespaceRemoved(ns.name_any())
    }
}

enum Converted {
    Valid(crate::model::Policy),
    Invalid(InvalidPolicy),
}

fn convert_policy(policy: &NetworkPolicy) -> Converted {
    let mut warnings = Vec::new();
    let converted = convert::policy(policy, &mut warnings);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    match converted {
        Ok(valid) => Converted::Valid(valid.to_policy()),
        Err(error) => Converted::Invalid(InvalidPolicy {
            id: PolicyId::kubernetes(&key_of(policy)),
            error: error.to_string(),
            fail_closed: Some(convert::policy_fail_closed(policy).to_policy()),
        }),
    }
}

/// Tells the policy's owner, on the object itself, that Palisade cannot enforce it as written.
fn publish_invalid(recorder: &Recorder, policy: &NetworkPolicy, error: &str) {
    let reference = policy.object_ref(&());
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: POLICY_INVALID_REASON.into(),
        note: Some(format!(
            "{error}. Palisade isolates the selected pods and allows nothing until the policy is fixed."
        )),
        action: "Compile".into(),
        secondary: None,
    };
    let recorder = recorder.clone();
    let key = key_of(policy);
    tokio::spawn(async move {
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::warn!(policy = %key, %error, "could not record the PolicyInvalid event");
        }
    });
}

struct Policies {
    recorder: Recorder,
    valid: Vec<crate::model::Policy>,
    invalid: Vec<InvalidPolicy>,
}

impl Policies {
    /// Converts, and reports an unreadable policy on the object itself.
    fn convert(&self, policy: &NetworkPolicy) -> Converted {
        let converted = convert_policy(policy);
        if let Converted::Invalid(bad) = &converted {
            publish_invalid(&self.recorder, policy, &bad.error);
        }
        converted
    }
}

impl Translate<NetworkPolicy> for Policies {
    fn list_item(&mut self, policy: &NetworkPolicy) {
        match self.convert(policy) {
            Converted::Valid(p) => self.valid.push(p),
            Converted::Invalid(bad) => self.invalid.push(bad),
        }
    }

    fn listed(&mut self) -> SourceEvent {
        SourceEvent::PoliciesListed {
            kind: PolicyKind::Kubernetes,
            valid: std::mem::take(&mut self.valid),
            invalid: std::mem::take(&mut self.invalid),
        }
    }

    fn applied(&mut self, policy: &NetworkPolicy) -> SourceEvent {
        match self.convert(policy) {
            Converted::Valid(p) => SourceEvent::PolicyApplied(p),
            Converted::Invalid(bad) => SourceEvent::PolicyInvalid(bad),
        }
    }

    fn deleted(&mut self, policy: &NetworkPolicy) -> SourceEvent {
        SourceEvent::PolicyRemoved(PolicyId::kubernetes(&key_of(policy)))
    }
}
