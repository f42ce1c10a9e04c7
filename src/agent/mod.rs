//! The agent's core: source events in, the kernel kept in step.
//!
//! One thread owns the index, the incremental compiler and the dataplane, so syncs never
//! overlap and need no locks. Sources (the Kubernetes watchers or the manifest directory) send
//! [`SourceEvent`]s. The first change after a quiet period is compiled and applied at once
//! (leading edge); changes that arrive while a sync runs or within `debounce` after it are
//! gathered into the next one, so a burst costs a handful of applies. Nothing touches the
//! kernel until every kind has been listed once, so a restart never applies a partial view or
//! removes rules a previous run left in place.

pub mod files;
pub mod kernel_reader;
pub mod source;
mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::compiler::{CompilerConfig, NodeCompiler, SetOverflow};
use crate::dataplane::Dataplane;
use crate::index::{Change, ClusterIndex};
use crate::metrics::Metrics;
use crate::model::PolicyId;

pub use source::{InvalidPolicy, Kind, SourceEvent};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: String,
    /// The quiet time after a sync: the first change after it is synced at once, changes
    /// within it are gathered into one sync at its end.
    pub debounce: Duration,
    /// How often to compare the kernel with what was written and repair drift.
    pub refresh_interval: Duration,
    /// How often to read the kernel's rule counters for the metrics; zero: never.
    pub counters_interval: Duration,
    /// Marks, deny action and logging of the compiled rules.
    pub compiler: CompilerConfig,
    /// The kinds the source serves: nothing is applied until each has been listed once.
    pub kinds: Vec<Kind>,
    /// Backoff after a failed sync: doubles from `retry_min` up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Remove everything Palisade owns when told to stop (for uninstalls).
    pub cleanup_on_exit: bool,
    /// Read the NFLOG group of the denial rules and write the denied-flow log; `None`: the
    /// log is off (the rules still send to the group).
    pub denied_log: Option<crate::flowlog::DeniedLogConfig>,
    /// Told the sets over capacity after each sync that changed something, while any is.
    pub overflow_listener: Option<OverflowListener>,
}

/// Where the sets over capacity go beyond the log and the metric (the Kubernetes source makes
/// Events of them on the policies that fail closed).
#[derive(Clone)]
pub struct OverflowListener(Arc<TellOverflows>);

type TellOverflows = dyn Fn(&[SetOverflow]) + Send + Sync;

impl OverflowListener {
    pub fn new(listener: impl Fn(&[SetOverflow]) + Send + Sync + 'static) -> Self {
        Self(Arc::new(listener))
    }

    fn tell(&self, overflows: &[SetOverflow]) {
        (self.0)(overflows);
    }
}

impl std::fmt::Debug for OverflowListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OverflowListener")
    }
}

impl AgentConfig {
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            // Bounds a change's wait under steady churn to this plus one sync, inside 100 ms.
            debounce: Duration::from_millis(50),
            refresh_interval: Duration::from_secs(60),
            counters_interval: Duration::from_secs(10),
            compiler: CompilerConfig::default(),
            kinds: Kind::KUBERNETES.to_vec(),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            cleanup_on_exit: false,
            denied_log: None,
            overflow_listener: None,
        }
    }
}

pub enum AgentMessage {
    /// Boxed: listings are large, and most messages are single objects.
    Source(Box<SourceEvent>),
    /// The refresh found the kernel changed behind Palisade's back: repair it now.
    Drift(crate::dataplane::Drift),
    /// Lines of the denied-flow log, to be written with the pods and rules named.
    DeniedFlows(Vec<crate::flowlog::FlowLine>),
    /// Stop; leave the rules in place unless `cleanup_on_exit`.
    Shutdown,
}

/// Starts the core on its own thread, and the kernel reader (refresh and rule counters) on
/// another. Send the core events; it stops on `Shutdown` or when every sender is gone, and
/// the reader stops with it.
pub fn spawn(
    config: AgentConfig,
    dataplane: Arc<Dataplane>,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Sender<AgentMessage>, std::thread::JoinHandle<()>)> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = kernel_reader::KernelReader {
        dataplane: Arc::clone(&dataplane),
        metrics: Arc::clone(&metrics),
        refresh_interval: config.refresh_interval,
        counters_interval: config.counters_interval,
        sync: sender.clone(),
        stop: Arc::clone(&stop),
    };
    if let Some(denied_log) = config.denied_log {
        let (lines, received) = std::sync::mpsc::channel();
        match crate::flowlog::spawn(denied_log, lines, Arc::clone(&metrics), Arc::clone(&stop)) {
            Ok(_) => {
                let forward = sender.clone();
                std::thread::Builder::new()
                    .name("palisade-flow-lines".into())
                    .spawn(move || {
                        for batch in received {
                            if forward.send(AgentMessage::DeniedFlows(batch)).is_err() {
                                return;
                            }
                        }
                    })?;
            }
            Err(error) => tracing::warn!(
                %error,
                group = denied_log.group,
                "the denied-flow log is off: its NFLOG group cannot be read"
            ),
        }
    }
    let core_stop = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("palisade-sync".into())
        .spawn(move || {
            Agent::new(config, dataplane, metrics).run(receiver);
            core_stop.store(true, std::sync::atomic::Ordering::SeqCst);
        })?;
    std::thread::Builder::new()
        .name("palisade-kernel-reader".into())
        .spawn(move || reader.run())?;
    Ok((sender, handle))
}

pub struct Agent {
    config: AgentConfig,
    dataplane: Arc<Dataplane>,
    metrics: Arc<Metrics>,
    index: ClusterIndex,
    compiler: Option<NodeCompiler>,
    /// Index changes the compiler has not seen yet.
    pending: Vec<Change>,
    listed: BTreeSet<Kind>,
    invalid_policies: BTreeMap<PolicyId, String>,
    /// When the oldest change not yet in the kernel arrived.
    dirty_since: Option<Instant>,
    /// When the last sync ended: the next one waits until `debounce` after it.
    last_sync: Option<Instant>,
    /// After a failure: rebuild the compiler's state from scratch at the next sync.
    full_resync: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The sets over capacity at the last sync, as reported then.
    overflows: Vec<crate::compiler::SetOverflow>,
}

impl Agent {
    pub fn new(config: AgentConfig, dataplane: Arc<Dataplane>, metrics: Arc<Metrics>) -> Self {
        let backoff = config.retry_min;
        Self {
            config,
            dataplane,
            metrics,
            index: ClusterIndex::new(),
            compiler: None,
            pending: Vec::new(),
            listed: BTreeSet::new(),
            invalid_policies: BTreeMap::new(),
            dirty_since: None,
            last_sync: None,
            full_resync: false,
            retry_at: None,
            backoff,
            overflows: Vec::new(),
        }
    }

    pub fn run(mut self, receiver: Receiver<AgentMessage>) {
        let kinds: Vec<&str> = self.config.kinds.iter().map(Kind::as_str).collect();
        tracing::info!(node = %self.config.node, kinds = ?kinds, "waiting for the initial listing of every kind");
        'run: loop {
            let timeout = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            match receiver.recv_timeout(timeout) {
                Ok(AgentMessage::Source(event)) => self.ingest(*event),
                Ok(AgentMessage::Drift(drift)) => self.repair(drift),
                Ok(AgentMessage::DeniedFlows(lines)) => self.write_denied_flows(&lines),
                Ok(AgentMessage::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Everything that queued up (during the last sync, say) goes into the next sync.
            loop {
                match receiver.try_recv() {
                    Ok(AgentMessage::Source(event)) => self.ingest(*event),
                    Ok(AgentMessage::Drift(drift)) => self.repair(drift),
                    Ok(AgentMessage::DeniedFlows(lines)) => self.write_denied_flows(&lines),
                    Ok(AgentMessage::Shutdown) | Err(TryRecvError::Disconnected) => break 'run,
                    Err(TryRecvError::Empty) => break,
                }
            }
            self.run_due_work();
        }
        self.shut_down();
    }

    fn synced_once_listed(&self) -> bool {
        self.config.kinds.iter().all(|k| self.listed.contains(k))
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut deadline = far;
        if let Some(retry) = self.retry_at {
            deadline = deadline.min(retry);
        } else if self.dirty_since.is_some() {
            deadline = deadline.min(self.quiet_until().unwrap_or_else(Instant::now));
        }
        deadline
    }

    /// When the debounce window after the last sync ends; a change before then waits for it.
    /// `None` before the first sync, which waits for nothing.
    fn quiet_until(&self) -> Option<Instant> {
        self.last_sync.map(|ended| ended + self.config.debounce)
    }

    /// Runs the sync and the refresh that are due, as the loop does after each batch of events;
    /// public so that benchmarks can drive the core without its thread.
    pub fn run_due_work(&mut self) {
        if !self.synced_once_listed() {
            return;
        }
        let now = Instant::now();
        let sync_due = match (self.retry_at, self.dirty_since) {
            (Some(retry), _) => now >= retry,
            (None, Some(_)) => self.quiet_until().is_none_or(|quiet| now >= quiet),
            (None, None) => false,
        };
        if sync_due {
            self.sync();
        }
    }

    /// Updates the index; the kernel follows at the next sync.
    pub fn ingest(&mut self, event: SourceEvent) {
        self.metrics
            .watch_events
            .with_label_values(&[event.kind().as_str()])
            .inc();
        let kind = event.kind();
        let is_listing = matches!(
            event,
            SourceEvent::PodsListed(_)
                | SourceEvent::NamespacesListed(_)
                | SourceEvent::ServiceAccountsListed(_)
                | SourceEvent::ServiceSlicesListed(_)
                | SourceEvent::NetworkSetsListed { .. }
                | SourceEvent::TiersListed(_)
                | SourceEvent::PoliciesListed { .. }
        );
        let index = &mut self.index;
        let mut changes: Vec<Change> = Vec::new();
        match event {
            SourceEvent::PodsListed(pods) => changes = index.replace_pods(pods),
            SourceEvent::NamespacesListed(namespaces) => {
                changes = index.replace_namespaces(namespaces)
            }
            SourceEvent::ServiceAccountsListed(accounts) => {
                changes = index.replace_service_accounts(accounts)
            }
            SourceEvent::ServiceSlicesListed(slices) => {
                changes = index.replace_service_slices(slices)
            }
            SourceEvent::NetworkSetsListed { namespaced, sets } => {
                changes = index.replace_network_sets(namespaced, sets)
            }
            SourceEvent::TiersListed(tiers) => changes = index.replace_tiers(tiers),
            SourceEvent::PoliciesListed {
                kind: policy_kind,
                valid,
                invalid,
            } => {
                self.invalid_policies.retain(|id, _| id.kind != policy_kind);
                let mut policies = valid;
                for bad in invalid {
                    report_invalid(&bad);
                    self.invalid_policies.insert(bad.id.clone(), bad.error);
                    policies.extend(bad.fail_closed);
                }
                changes = index.replace_policies(&[policy_kind], policies);
            }
            SourceEvent::PodApplied(pod) => changes.extend(index.upsert_pod(pod)),
            SourceEvent::PodRemoved(key) => changes.extend(index.remove_pod(&key)),
            SourceEvent::NamespaceApplied(namespace) => {
                changes.extend(index.upsert_namespace(namespace))
            }
            SourceEvent::NamespaceRemoved(name) => changes.extend(index.remove_namespace(&name)),
            SourceEvent::ServiceAccountApplied(account) => {
                changes.extend(index.upsert_service_account(account))
            }
            SourceEvent::ServiceAccountRemoved(key) => {
                changes.extend(index.remove_service_account(&key))
            }
            SourceEvent::ServiceSliceApplied(slice) => {
                changes.extend(index.upsert_service_slice(slice))
            }
            SourceEvent::ServiceSliceRemoved(key) => {
                changes.extend(index.remove_service_slice(&key))
            }
            SourceEvent::NetworkSetApplied(set) => changes.extend(index.upsert_network_set(set)),
            SourceEvent::NetworkSetRemoved(key) => changes.extend(index.remove_network_set(&key)),
            SourceEvent::TierApplied(tier) => changes.extend(index.upsert_tier(tier)),
            SourceEvent::TierRemoved(name) => changes.extend(index.remove_tier(&name)),
            SourceEvent::PolicyApplied(policy) => {
                self.invalid_policies.remove(&policy.id);
                changes.extend(index.upsert_policy(policy));
            }
            SourceEvent::PolicyInvalid(bad) => {
                report_invalid(&bad);
                self.invalid_policies
                    .insert(bad.id.clone(), bad.error.clone());
                changes.extend(match bad.fail_closed {
                    Some(policy) => index.upsert_policy(policy),
                    None => index.remove_policy(&bad.id),
                });
            }
            SourceEvent::PolicyRemoved(id) => {
                self.invalid_policies.remove(&id);
                changes.extend(index.remove_policy(&id));
            }
        }
        if is_listing {
            self.listed.insert(kind);
        }
        self.metrics.policies.set(gauge(self.index.policy_count()));
        self.metrics
            .policies_invalid
            .set(gauge(self.invalid_policies.len()));
        if !changes.is_empty() {
            self.pending.extend(changes);
            self.dirty_since.get_or_insert_with(Instant::now);
        }
        // The first sync after the initial listing must happen even when nothing was listed.
        if self.compiler.is_none() && self.synced_once_listed() {
            self.dirty_since.get_or_insert_with(Instant::now);
        }
    }

    fn shut_down(&mut self) {
        if !self.config.cleanup_on_exit {
            tracing::info!("stopping; Palisade's rules stay in place");
            return;
        }
        match self.dataplane.cleanup(Default::default()) {
            Ok(report) => tracing::info!(
                changes = report.changes,
                "stopping; removed Palisade's rules and sets"
            ),
            Err(error) => tracing::error!(%error, "stopping; removing Palisade's rules failed"),
        }
    }

    pub fn index(&self) -> &ClusterIndex {
        &self.index
    }

    /// Writes denied-flow lines, naming the pods at both ends from the index and the rule
    /// from the compiled chains.
    fn write_denied_flows(&self, lines: &[crate::flowlog::FlowLine]) {
        let pod_at = |ip: &std::net::IpAddr| {
            self.index
                .pods_with_ip(ip)
                .next()
                .map(|pod| pod.key.to_string())
        };
        let rule_of = |tag: &crate::compiler::denied_log::DeniedFlowTag| {
            let state = self.compiler.as_ref()?.state();
            let prefix = tag.to_string();
            crate::model::Family::ALL.into_iter().find_map(|family| {
                state
                    .family(family)
                    .chains
                    .get(&tag.chain)?
                    .rules
                    .iter()
                    .find(|rule| {
                        matches!(&rule.action, crate::compiler::desired::Action::Nflog { prefix: p, .. } if *p == prefix)
                    })
                    .map(|rule| rule.comment.trim_end_matches(": logged").to_string())
            })
        };
        for line in lines {
            let record = crate::flowlog::DeniedFlowRecord::new(line, pod_at, rule_of);
            self.metrics
                .denied_flow_lines
                .with_label_values(&[record.verdict])
                .inc();
            record.write();
        }
    }
}

fn report_invalid(bad: &InvalidPolicy) {
    tracing::warn!(
        policy = %bad.id,
        error = %bad.error,
        fail_closed = bad.fail_closed.is_some(),
        "invalid policy: until it is fixed it allows nothing (a Kubernetes policy isolates the pods it selects; a Calico policy denies them in its place)"
    );
}

fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
