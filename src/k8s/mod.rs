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
use crate::model::{convert, ObjectKey};

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
    let pods = watch_pods(
        Api::all(client.clone()),
        sender.clone(),
        Arc::clone(&metrics),
    );
    let namespaces = watch_namespaces(
        Api::all(client.clone()),
        sender.clone(),
        Arc::clone(&metrics),
    );
    let policies = watch_policies(Api::all(client), recorder, sender, metrics);
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
    sender.send(AgentMessage::Source(event)).is_ok()
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

async fn watch_pods(api: Api<K8sPod>, sender: Sender<AgentMessage>, metrics: Arc<Metrics>) {
    let convert_pod = |pod: &K8sPod| {
        let mut warnings = Vec::new();
        let converted = convert::pod(pod, &mut warnings);
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        converted.unwrap_or_else(|error| {
            tracing::warn!(%error, "ignoring a pod Palisade cannot read");
            None
        })
    };
    let mut listing = Vec::new();
    let mut stream = std::pin::pin!(events(api));
    let mut backoff = Backoff::new();
    while let Some(event) = stream.next().await {
        if matches!(
            event,
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_))
        ) {
            backoff.reset();
        }
        let delivered = match event {
            Ok(Event::Init) => {
                listing.clear();
                true
            }
            Ok(Event::InitApply(pod)) => {
                listing.extend(convert_pod(&pod));
                true
            }
            Ok(Event::InitDone) => send(
                &sender,
                SourceEvent::PodsListed(std::mem::take(&mut listing)),
            ),
            Ok(Event::Apply(pod)) => match convert_pod(&pod) {
                Some(converted) => send(&sender, SourceEvent::PodApplied(converted)),
                None => send(&sender, SourceEvent::PodRemoved(key_of(&pod))),
            },
            Ok(Event::Delete(pod)) => send(&sender, SourceEvent::PodRemoved(key_of(&pod))),
            Err(error) => {
                watch_error(&metrics, "pod", &error, &mut backoff).await;
                continue;
            }
        };
        if !delivered {
            return;
        }
    }
}

async fn watch_namespaces(
    api: Api<K8sNamespace>,
    sender: Sender<AgentMessage>,
    metrics: Arc<Metrics>,
) {
    let convert_namespace = |ns: &K8sNamespace| {
        let mut warnings = Vec::new();
        let converted = convert::namespace(ns, &mut warnings);
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        converted
    };
    let mut listing = Vec::new();
    let mut stream = std::pin::pin!(events(api));
    let mut backoff = Backoff::new();
    while let Some(event) = stream.next().await {
        if matches!(
            event,
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_))
        ) {
            backoff.reset();
        }
        let delivered = match event {
            Ok(Event::Init) => {
                listing.clear();
                true
            }
            Ok(Event::InitApply(ns)) => {
                listing.push(convert_namespace(&ns));
                true
            }
            Ok(Event::InitDone) => send(
                &sender,
                SourceEvent::NamespacesListed(std::mem::take(&mut listing)),
            ),
            Ok(Event::Apply(ns)) => send(
                &sender,
                SourceEvent::NamespaceApplied(convert_namespace(&ns)),
            ),
            Ok(Event::Delete(ns)) => send(&sender, SourceEvent::NamespaceRemoved(ns.name_any())),
            Err(error) => {
                watch_error(&metrics, "namespace", &error, &mut backoff).await;
                continue;
            }
        };
        if !delivered {
            return;
        }
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
        Ok(valid) => Converted::Valid(valid),
        Err(error) => Converted::Invalid(InvalidPolicy {
            key: key_of(policy),
            error: error.to_string(),
            fail_closed: convert::policy_fail_closed(policy),
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

async fn watch_policies(
    api: Api<NetworkPolicy>,
    recorder: Recorder,
    sender: Sender<AgentMessage>,
    metrics: Arc<Metrics>,
) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    let mut stream = std::pin::pin!(events(api));
    let mut backoff = Backoff::new();
    while let Some(event) = stream.next().await {
        if matches!(
            event,
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_))
        ) {
            backoff.reset();
        }
        let delivered = match event {
            Ok(Event::Init) => {
                valid.clear();
                invalid.clear();
                true
            }
            Ok(Event::InitApply(policy)) => {
                match convert_policy(&policy) {
                    Converted::Valid(p) => valid.push(p),
                    Converted::Invalid(bad) => {
                        publish_invalid(&recorder, &policy, &bad.error);
                        invalid.push(bad);
                    }
                }
                true
            }
            Ok(Event::InitDone) => send(
                &sender,
                SourceEvent::PoliciesListed {
                    valid: std::mem::take(&mut valid),
                    invalid: std::mem::take(&mut invalid),
                },
            ),
            Ok(Event::Apply(policy)) => match convert_policy(&policy) {
                Converted::Valid(p) => send(&sender, SourceEvent::PolicyApplied(p)),
                Converted::Invalid(bad) => {
                    publish_invalid(&recorder, &policy, &bad.error);
                    send(&sender, SourceEvent::PolicyInvalid(bad))
                }
            },
            Ok(Event::Delete(policy)) => send(&sender, SourceEvent::PolicyRemoved(key_of(&policy))),
            Err(error) => {
                watch_error(&metrics, "networkpolicy", &error, &mut backoff).await;
                continue;
            }
        };
        if !delivered {
            return;
        }
    }
}
