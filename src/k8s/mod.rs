//! The Kubernetes source: kube-runtime watchers for Pods, Namespaces and NetworkPolicies, and
//! where the cluster serves them Calico's resources with the ServiceAccounts and EndpointSlices
//! their rules select by, turned into [`SourceEvent`](crate::agent::SourceEvent)s. The only
//! module that talks to the API server.
//!
//! Objects are converted to the model as they arrive, so only the fields Palisade needs stay in
//! memory. A watcher restart (a 410 Gone, a dropped connection) re-lists: the listing is
//! buffered until complete and then replaces what the agent knows, so nothing is lost or
//! removed in between. While the API server is unreachable the watchers back off and retry,
//! and the agent keeps the rules it has; a health check notices a server that stopped
//! answering, which a watch alone cannot tell from a quiet one.

mod calico;
pub mod crds;
pub mod discovery;
mod events;
mod health;
mod kubernetes;
mod overflow_events;
mod policy_objects;
mod snapshot;
#[cfg(test)]
mod tests;
mod watch;

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::core::DynamicObject;
use kube::{Api, Client};
use policy_objects::PolicyObjects;

use crate::agent::AgentMessage;
use crate::compiler::SetOverflow;
use crate::metrics::Metrics;
use crate::model::calico::ApiGroup;

pub use discovery::{discover, CalicoApi, Served};
pub use events::{POLICY_INVALID_REASON, SET_OVER_CAPACITY_REASON};
pub use snapshot::snapshot;

/// How often an agent that found no Calico group looks for one again.
const CALICO_DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no usable Kubernetes configuration (kubeconfig or in-cluster): {0}")]
    Config(#[from] kube::Error),
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("the API server does not answer")]
    Unreachable,
    #[error("listing {kind}: {source}")]
    List { kind: String, source: kube::Error },
}

/// The agent's way to the API server: a client, and the configuration it was made from, to
/// make a new one when the old one's connections cannot be trusted.
pub struct Connection {
    config: kube::Config,
    client: Client,
}

impl Connection {
    /// From the kubeconfig, or the in-cluster account.
    pub async fn infer() -> Result<Connection, SourceError> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| SourceError::Config(kube::Error::InferConfig(e)))?;
        let client = Client::try_from(config.clone())?;
        Ok(Connection { config, client })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

pub async fn client() -> Result<Client, SourceError> {
    Ok(Client::try_default().await?)
}

/// A client from this kubeconfig file, or as [`client`] does without one.
pub async fn client_from(kubeconfig: Option<&std::path::Path>) -> Result<Client, SourceError> {
    let Some(path) = kubeconfig else {
        return client().await;
    };
    let failed = |message: String| SourceError::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let file = kube::config::Kubeconfig::read_from(path).map_err(|e| failed(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .map_err(|e| failed(e.to_string()))?;
    Client::try_from(config).map_err(SourceError::Config)
}

/// What the watchers share.
#[derive(Clone)]
struct Watchers {
    client: Client,
    events: events::Publisher,
    /// Kept by the policy watchers across restarts (each listing replaces its kind's).
    policy_objects: PolicyObjects,
    sender: Sender<AgentMessage>,
    metrics: Arc<Metrics>,
}

type Task = tokio::task::JoinHandle<()>;

/// Watch tasks that end with their owner: dropping them aborts each, so that a restart of the
/// watches (or of the task that spawned them) leaves none of the old ones running.
struct Tasks(Vec<Task>);

impl Tasks {
    /// Until every task has ended.
    async fn join(&mut self) {
        futures::future::join_all(self.0.iter_mut()).await;
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Watchers {
    fn kubernetes(&self) -> Vec<Task> {
        let c = &self.client;
        vec![
            self.spawn(
                Api::<Pod>::all(c.clone()),
                "pod",
                kubernetes::Pods::default(),
            ),
            self.spawn(
                Api::<Namespace>::all(c.clone()),
                "namespace",
                kubernetes::Namespaces::default(),
            ),
            self.spawn(
                Api::<NetworkPolicy>::all(c.clone()),
                "networkpolicy",
                kubernetes::Policies::new(self.events.clone(), self.policy_objects.clone()),
            ),
        ]
    }

    fn calico(&self, group: ApiGroup, served: Served) -> Vec<Task> {
        let c = &self.client;
        let mut tasks = vec![self.spawn(
            Api::<ServiceAccount>::all(c.clone()),
            "serviceaccount",
            kubernetes::ServiceAccounts::default(),
        )];
        match served.endpoint_slices {
            Some(version) => tasks.push(self.spawn(
                Api::<DynamicObject>::all_with(
                    c.clone(),
                    &kubernetes::endpoint_slice_resource(version),
                ),
                "endpointslice",
                kubernetes::ServiceSlices::default(),
            )),
            None => tracing::warn!(
                "the API server serves no EndpointSlices; Calico rules that match `services` match nothing"
            ),
        }
        for (kind, agent_kind) in calico::WATCHED {
            tasks.push(self.spawn(
                Api::<DynamicObject>::all_with(c.clone(), &calico::api_resource(group, kind)),
                agent_kind.as_str(),
                calico::CalicoObjects::new(
                    group,
                    kind,
                    self.events.clone(),
                    self.policy_objects.clone(),
                ),
            ));
        }
        tasks
    }

    fn spawn<K, T>(&self, api: Api<K>, kind: &'static str, translate: T) -> Task
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        T: watch::Translate<K> + Send + 'static,
    {
        tokio::spawn(watch::watch(
            api,
            kind,
            translate,
            self.sender.clone(),
            Arc::clone(&self.metrics),
        ))
    }

    /// Looks for Calico's group until it appears, then watches it.
    async fn await_calico(self, choice: CalicoApi) {
        loop {
            tokio::time::sleep(CALICO_DISCOVERY_INTERVAL).await;
            if let Some(served) = discovery::look(&self.client, choice).await {
                if let Some(group) = served.calico {
                    tracing::info!(
                        group = group.as_str(),
                        "Calico's API group appeared; watching its policies"
                    );
                    Tasks(self.calico(group, served)).join().await;
                    return;
                }
            }
        }
    }
}

/// Runs the watchers until the agent stops listening. `served` is what [`discover`] found
/// (the agent waits for exactly those kinds before its first sync). `overflows` are the sets
/// over capacity the agent tells after each sync: the policies reading them get Events.
/// Beside them the API server's health is checked; when it answers again after leaving
/// requests unanswered, the watches start afresh (each lists again) with a new client: one
/// may still wait on a connection the server will never answer, and the old client's pool
/// may hold more of them.
pub async fn run(
    connection: Connection,
    choice: CalicoApi,
    served: Served,
    sender: Sender<AgentMessage>,
    metrics: Arc<Metrics>,
    overflows: tokio::sync::watch::Receiver<Vec<SetOverflow>>,
) {
    let mut health = health::Health::default();
    let policy_objects = PolicyObjects::default();
    metrics.apiserver_up.set(1);
    let Connection { config, mut client } = connection;
    let mut served = served;
    loop {
        let watchers = Watchers {
            events: events::Publisher::new(client.clone()),
            client: client.clone(),
            policy_objects: policy_objects.clone(),
            sender: sender.clone(),
            metrics: Arc::clone(&metrics),
        };
        let mut tasks = Tasks(watchers.start(choice, served));
        // Restarted with the watches, on the new client: what is over capacity is reported
        // again, and finds its Events there.
        tasks.0.push(tokio::spawn(overflow_events::report(
            watchers.events.clone(),
            policy_objects.clone(),
            overflows.clone(),
        )));
        tokio::select! {
            () = tasks.join() => return,
            () = health::until_watches_restart(&config, &mut health, &metrics) => {}
        }
        drop(tasks);
        metrics.watch_restarts.inc();
        match Client::try_from(config.clone()) {
            Ok(fresh) => client = fresh,
            Err(error) => {
                tracing::error!(%error, "cannot make a new API client; the watches start afresh on the old one");
            }
        }
        // Calico's CRDs may have appeared meanwhile; without an answer, the groups known stay.
        if let Some(now) = discovery::look(&client, choice).await {
            served = now;
        }
    }
}

impl Watchers {
    /// Spawns the watchers of what the server serves.
    fn start(&self, choice: CalicoApi, served: Served) -> Vec<Task> {
        let mut tasks = self.kubernetes();
        match served.calico {
            Some(group) => {
                tracing::info!(group = group.as_str(), "watching Calico's policies");
                tasks.extend(self.calico(group, served));
            }
            None if choice == CalicoApi::Auto => {
                tracing::info!("the API server serves no Calico API group: enforcing Kubernetes policy only until Calico's CRDs appear");
                tasks.push(tokio::spawn(self.clone().await_calico(choice)));
            }
            None => tracing::info!("--calico-api off: enforcing Kubernetes policy only"),
        }
        tasks
    }
}
