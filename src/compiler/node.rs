//! The incremental compiler of one node's state.
//!
//! It keeps the chains of the node's pods, the chains of the policies they use, and the sets
//! those read. Each active set knows its members (pods and network sets), and each member knows
//! its sets, so a change is evaluated only against the sets it can affect: for a label change,
//! the sets whose selectors read a changed label; for a new or moved pod, the sets whose
//! selectors its labels can satisfy (the selector index). Nothing is recomputed from scratch.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::chains::{self, PolicyStep, TierStep};
use super::desired::{Chain, DesiredState, SetEntry};
use super::naming;
use super::rules;
use super::sets::{SetKey, SetRef};
use super::CompilerConfig;

mod capacity;
use crate::index::{Change, ClusterIndex, PodId, PodIdMap, PodIdSet};
use crate::model::{
    DenialHandling, Direction, Family, NetworkSet, NetworkSetKey, ObjectKey, Pod, PolicyId,
    ServiceAccount,
};
use crate::selector::{LabelText, Labels, SelectorIndex};
pub use capacity::SetOverflow;

/// A pod of this node and, per direction, the tiers that have policies for it (`None`: no
/// policy applies: allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalPod {
    ips: Vec<IpAddr>,
    /// What its chains do with the packets they deny, from its namespace and the node.
    handling: DenialHandling,
    ingress: Option<Vec<TierStep>>,
    egress: Option<Vec<TierStep>>,
}

impl LocalPod {
    fn tiers(&self, direction: Direction) -> Option<&Vec<TierStep>> {
        match direction {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }

    /// The policy chains it jumps to in `direction`.
    fn policies(&self, direction: Direction) -> impl Iterator<Item = (&PolicyId, DenialHandling)> {
        self.tiers(direction)
            .into_iter()
            .flatten()
            .flat_map(|t| t.policies.iter().map(|p| (&p.id, p.handling)))
    }

    fn families(&self) -> BTreeSet<Family> {
        self.ips.iter().map(Family::of).collect()
    }
}

/// A policy chain: a pod whose denials are logged or audited uses its own variant of the chain
/// of a policy with Deny rules (see [`rules::policy_chain`]); every other pod the plain one.
type PolicyChainKey = (PolicyId, Direction, Family, DenialHandling);

#[derive(Debug)]
struct ActivePolicyChain {
    refs: u32,
    sets: Vec<SetId>,
}

/// An active set, compared and hashed by address: there is one Arc per active set (see
/// [`NodeCompiler::acquire_set`]), so memberships never compare selectors.
#[derive(Debug, Clone)]
struct SetId(SetRef);

impl PartialEq for SetId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SetId {}

impl std::hash::Hash for SetId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

impl PartialOrd for SetId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SetId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        Arc::as_ptr(&self.0).cmp(&Arc::as_ptr(&other.0))
    }
}

impl std::ops::Deref for SetId {
    type Target = SetKey;

    fn deref(&self) -> &SetKey {
        &self.0
    }
}

impl AsRef<SetKey> for SetId {
    fn as_ref(&self) -> &SetKey {
        &self.0
    }
}

fn slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

fn host_prefix(net: &ipnetwork::IpNetwork) -> u8 {
    match net {
        ipnetwork::IpNetwork::V4(_) => 32,
        ipnetwork::IpNetwork::V6(_) => 128,
    }
}

/// A set some chain of this node reads.
#[derive(Debug, Default)]
struct ActiveSet {
    /// References per family (IPv4, IPv6): the set exists in a family while they are above 0.
    refs: [u32; 2],
    pods: PodIdSet,
    network_sets: HashSet<NetworkSetKey>,
}

impl ActiveSet {
    fn families(&self) -> impl Iterator<Item = Family> + '_ {
        Family::ALL.into_iter().filter(|f| self.refs[slot(*f)] > 0)
    }
}

/// A pod or network set as it was when its set memberships were last computed.
#[derive(Debug)]
struct Record<T> {
    object: Arc<T>,
    sets: Vec<SetId>,
}

/// Records by pod slot, in a dense table: a new set visits its members in slot order, so their
/// records are read in memory order rather than scattered over a hash table.
#[derive(Debug, Default)]
struct PodRecords(Vec<Option<Record<Pod>>>);

impl PodRecords {
    fn get(&self, id: &PodId) -> Option<&Record<Pod>> {
        self.0.get(*id as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: &PodId) -> Option<&mut Record<Pod>> {
        self.0.get_mut(*id as usize)?.as_mut()
    }

    fn remove(&mut self, id: &PodId) -> Option<Record<Pod>> {
        self.0.get_mut(*id as usize)?.take()
    }

    fn insert(&mut self, id: PodId, record: Record<Pod>) {
        *self.slot(id) = Some(record);
    }

    fn get_or_insert_with(
        &mut self,
        id: PodId,
        make: impl FnOnce() -> Record<Pod>,
    ) -> &mut Record<Pod> {
        self.slot(id).get_or_insert_with(make)
    }

    fn slot(&mut self, id: PodId) -> &mut Option<Record<Pod>> {
        let at = id as usize;
        if at >= self.0.len() {
            self.0.resize_with(at + 1, || None);
        }
        &mut self.0[at]
    }
}

/// What to evaluate a changed pod or network set against.
enum Touch {
    /// Every set it could match or is in.
    Full,
    /// Only these sets (their selectors read the labels that changed).
    Only(HashSet<SetId>),
}

impl Touch {
    fn merge(slot: &mut Option<Touch>, new: Touch) {
        *slot = Some(match (slot.take(), new) {
            (None, new) => new,
            (Some(Touch::Full), _) | (_, Touch::Full) => Touch::Full,
            (Some(Touch::Only(mut a)), Touch::Only(b)) => {
                a.extend(b);
                Touch::Only(a)
            }
        });
    }
}

/// Keys whose values differ between two label maps.
fn changed_keys<'a>(a: &'a Labels, b: &'a Labels) -> Vec<&'a str> {
    let mut out: Vec<&str> = a
        .iter()
        .filter(|(k, v)| b.get(k) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect();
    out.extend(
        b.keys()
            .filter(|k| !a.contains_key(k))
            .map(LabelText::as_str),
    );
    out
}

/// The labels `pcns.` selectors read for a namespace, object or not.
fn namespace_labels(name: &str, object: Option<&crate::model::Namespace>) -> Labels {
    match object {
        Some(ns) => ns.labels.clone(),
        None => crate::model::namespace_name_labels(name),
    }
}

/// Keeps one node's [`DesiredState`] in step with a [`ClusterIndex`].
#[derive(Debug)]
pub struct NodeCompiler {
    node: String,
    config: CompilerConfig,
    state: DesiredState,
    local: BTreeMap<ObjectKey, LocalPod>,
    policy_chains: HashMap<PolicyChainKey, ActivePolicyChain>,
    sets: HashMap<SetId, ActiveSet>,
    /// The one id of each active set, by what it holds.
    set_ids: HashMap<SetRef, SetId>,
    /// Active sets with a selector, for finding the sets a pod or network set can affect.
    set_selectors: SelectorIndex<SetId>,
    /// Active named-port sets over every pod, by port name.
    sets_by_port_name: HashMap<String, Vec<SetId>>,
    sets_by_service: HashMap<ObjectKey, Vec<SetId>>,
    /// By the pod's slot in the index: what last held it.
    pod_records: PodRecords,
    network_set_records: HashMap<NetworkSetKey, Record<NetworkSet>>,
    /// Sets and chains changed since the last [`NodeCompiler::take_dirty`].
    dirty: BTreeSet<(Family, String)>,
    /// How many rules each local pod has in `PAL-FORWARD`, (egress, ingress), per family
    /// (IPv4 first): where to splice when one pod changes.
    forward_counts: [BTreeMap<ObjectKey, (usize, usize)>; 2],
    /// Sets whose members changed since the capacity was last enforced (see `capacity`).
    resized: BTreeSet<(Family, String)>,
    /// Sets over capacity, with all their members, kept out of the state.
    overflowed: BTreeMap<(Family, String), crate::compiler::desired::IpSet>,
    /// Policy chains written failed closed because they read a set kept out.
    failed_closed: HashSet<PolicyChainKey>,
}

impl NodeCompiler {
    pub fn new(index: &ClusterIndex, node: &str, config: impl Into<CompilerConfig>) -> Self {
        let mut compiler = Self {
            node: node.to_string(),
            config: config.into(),
            state: DesiredState::default(),
            local: BTreeMap::new(),
            policy_chains: HashMap::new(),
            sets: HashMap::new(),
            set_ids: HashMap::new(),
            set_selectors: SelectorIndex::new(),
            sets_by_port_name: HashMap::new(),
            sets_by_service: HashMap::new(),
            pod_records: PodRecords::default(),
            network_set_records: HashMap::new(),
            forward_counts: [BTreeMap::new(), BTreeMap::new()],
            dirty: BTreeSet::new(),
            resized: BTreeSet::new(),
            overflowed: BTreeMap::new(),
            failed_closed: HashSet::new(),
        };
        compiler.state.v4.chains.insert(
            naming::FORWARD_CHAIN.to_string(),
            Chain {
                rules: vec![chains::forward_head()],
            },
        );
        let mut local: Vec<ObjectKey> = index.pods_on_node(node).map(|p| p.key.clone()).collect();
        local.sort();
        for key in local {
            compiler.refresh_local_pod(index, &key);
        }
        compiler.enforce_set_capacity(index);
        compiler
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    pub fn into_state(self) -> DesiredState {
        self.state
    }

    /// The names of the sets and chains that changed (or went away) since the last call: what
    /// a renderer of the change has to look at.
    pub fn take_dirty(&mut self) -> BTreeSet<(Family, String)> {
        std::mem::take(&mut self.dirty)
    }

    pub fn local_pod_count(&self) -> usize {
        self.local.len()
    }

    /// Local pods isolated in `direction`.
    pub fn isolated_pod_count(&self, direction: Direction) -> usize {
        self.local
            .values()
            .filter(|p| p.tiers(direction).is_some())
            .count()
    }

    fn on_node(&self, pod: Option<&Pod>) -> bool {
        pod.is_some_and(|p| p.node.as_deref() == Some(self.node.as_str()))
    }

    /// Brings the state up to date with `changes`, which `index` already reflects.
    pub fn apply(&mut self, index: &ClusterIndex, changes: &[Change]) {
        let mut pod_touches: PodIdMap<Option<Touch>> = PodIdMap::default();
        let mut set_touches: HashMap<NetworkSetKey, Option<Touch>> = HashMap::new();
        let mut dirty_local: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut changed_policies: BTreeSet<PolicyId> = BTreeSet::new();
        let mut services: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut every_local_pod = false;
        for change in changes {
            match change {
                Change::Pod { id, before, after } => {
                    for pod in before.iter().chain(after) {
                        if self.on_node(Some(pod)) {
                            dirty_local.insert(pod.key.clone());
                        }
                    }
                    let touch = match (before, after) {
                        (Some(b), Some(a))
                            if b.ips == a.ips
                                && b.named_ports == a.named_ports
                                && b.service_account == a.service_account =>
                        {
                            let mut sets = Vec::new();
                            for k in changed_keys(&b.labels, &a.labels) {
                                self.set_selectors.mentioning_own(k, &mut sets);
                            }
                            Touch::Only(sets.into_iter().collect())
                        }
                        _ => Touch::Full,
                    };
                    Touch::merge(pod_touches.entry(*id).or_default(), touch);
                }
                Change::Namespace { before, after } => {
                    let Some(name) = after.as_ref().or(before.as_ref()).map(|n| n.name.clone())
                    else {
                        continue;
                    };
                    let old = namespace_labels(&name, before.as_deref());
                    let new = namespace_labels(&name, after.as_deref());
                    let mut sets = Vec::new();
                    for k in changed_keys(&old, &new) {
                        self.set_selectors.mentioning_namespace_label(k, &mut sets);
                    }
                    if !sets.is_empty() {
                        let sets: HashSet<SetId> = sets.into_iter().collect();
                        for id in index.pod_ids_in_namespace(&name) {
                            Touch::merge(
                                pod_touches.entry(id).or_default(),
                                Touch::Only(sets.clone()),
                            );
                        }
                        for set in index.network_sets_in(&name) {
                            Touch::merge(
                                set_touches.entry(set.key.clone()).or_default(),
                                Touch::Only(sets.clone()),
                            );
                        }
                    }
                    dirty_local.extend(self.local_pods_in(&name));
                }
                Change::ServiceAccount { before, after } => {
                    let Some(key) = after.as_ref().or(before.as_ref()).map(|a| a.key.clone())
                    else {
                        continue;
                    };
                    let labels = |a: &Option<Arc<ServiceAccount>>| {
                        a.as_ref().map(|a| a.labels.clone()).unwrap_or_default()
                    };
                    let (old, new) = (labels(before), labels(after));
                    let mut sets = Vec::new();
                    for k in changed_keys(&old, &new) {
                        self.set_selectors
                            .mentioning_service_account_label(k, &mut sets);
                    }
                    let uses = |pod: &Pod| pod.service_account.as_deref() == Some(&key.name);
                    if !sets.is_empty() {
                        let sets: HashSet<SetId> = sets.into_iter().collect();
                        for id in index.pod_ids_in_namespace(&key.namespace) {
                            if index.pod_by_id(id).is_some_and(|p| uses(p)) {
                                Touch::merge(
                                    pod_touches.entry(id).or_default(),
                                    Touch::Only(sets.clone()),
                                );
                            }
                        }
                    }
                    dirty_local.extend(
                        self.local_pods_in(&key.namespace)
                            .into_iter()
                            .filter(|k| index.pod(k).is_some_and(|p| uses(p))),
                    );
                }
                Change::NetworkSet { before, after } => {
                    if let Some(key) = after.as_ref().or(before.as_ref()).map(|s| s.key.clone()) {
                        Touch::merge(set_touches.entry(key).or_default(), Touch::Full);
                    }
                }
                Change::ServiceSlice { before, after } => {
                    for slice in before.iter().chain(after) {
                        services.insert(ObjectKey::new(
                            slice.key.namespace.clone(),
                            slice.service.clone(),
                        ));
                    }
                }
                Change::Tier { .. } => every_local_pod = true,
                Change::Policy { before, after } => {
                    let Some(id) = after.as_ref().or(before.as_ref()).map(|p| p.id.clone()) else {
                        continue;
                    };
                    changed_policies.insert(id);
                    for key in self.local.keys() {
                        let Some(pod) = index.pod(key) else {
                            dirty_local.insert(key.clone());
                            continue;
                        };
                        let view = index.pod_view(pod);
                        let selects = |p: &Option<Arc<crate::model::Policy>>| {
                            p.as_ref().is_some_and(|p| p.selector.matches(&view))
                        };
                        if selects(before) || selects(after) {
                            dirty_local.insert(key.clone());
                        }
                    }
                    // A pod the compiler has not placed yet is refreshed with its own change.
                }
            }
        }
        for (id, touch) in pod_touches {
            if let Some(touch) = touch {
                self.touch_pod(index, id, touch);
            }
        }
        for (key, touch) in set_touches {
            if let Some(touch) = touch {
                self.touch_network_set(index, &key, touch);
            }
        }
        for service in services {
            self.refresh_service(index, &service);
        }
        for id in changed_policies {
            self.refresh_policy_chains(index, &id);
        }
        if every_local_pod {
            dirty_local.extend(self.local.keys().cloned());
        }
        for key in dirty_local {
            self.refresh_local_pod(index, &key);
        }
        self.enforce_set_capacity(index);
    }

    fn local_pods_in(&self, namespace: &str) -> Vec<ObjectKey> {
        let start = ObjectKey::new(namespace, "");
        self.local
            .range(start..)
            .take_while(|(k, _)| k.namespace == namespace)
            .map(|(k, _)| k.clone())
            .collect()
    }

    // ---- local pods and their chains -------------------------------------------------------

    /// Recomputes a local pod's policies, chains and dispatch rules.
    fn refresh_local_pod(&mut self, index: &ClusterIndex, key: &ObjectKey) {
        let new = index
            .pod(key)
            .filter(|pod| self.on_node(Some(pod)))
            .map(|pod| self.local_pod(index, pod));
        let old = self.local.get(key).cloned();
        if old == new {
            return;
        }
        // Take the new references before dropping the old so shared sets are not rebuilt.
        if let Some(new) = &new {
            for family in new.families() {
                for direction in Direction::ALL {
                    for (policy, handling) in new.policies(direction) {
                        self.acquire_policy_chain(
                            index,
                            (policy.clone(), direction, family, handling),
                        );
                    }
                }
            }
        }
        if let Some(old) = &old {
            for family in old.families() {
                for direction in Direction::ALL {
                    for (policy, handling) in old.policies(direction) {
                        self.release_policy_chain(&(policy.clone(), direction, family, handling));
                    }
                }
            }
        }
        for family in Family::ALL {
            for direction in Direction::ALL {
                let name = naming::pod_chain(key, direction);
                let chains = &mut self.state.family_mut(family).chains;
                match &new {
                    Some(pod) if pod.families().contains(&family) => {
                        if let Some(tiers) = pod.tiers(direction) {
                            let rules = chains::pod_chain(
                                key,
                                direction,
                                tiers,
                                pod.handling,
                                &self.config,
                            );
                            chains.insert(name.clone(), Chain { rules });
                        } else {
                            chains.remove(&name);
                        }
                    }
                    _ => {
                        chains.remove(&name);
                    }
                }
                self.dirty.insert((family, name));
            }
        }
        let dispatch_changed = match (&old, &new) {
            (Some(old), Some(new)) => {
                old.ips != new.ips
                    || old.ingress.is_some() != new.ingress.is_some()
                    || old.egress.is_some() != new.egress.is_some()
            }
            (None, None) => false,
            _ => true,
        };
        match new {
            Some(pod) => self.local.insert(key.clone(), pod),
            None => self.local.remove(key),
        };
        if dispatch_changed {
            self.update_forward(key);
        }
    }

    fn local_pod(&self, index: &ClusterIndex, pod: &Pod) -> LocalPod {
        let policies = index.policies_selecting(pod);
        let namespace_denials = index
            .namespace(&pod.key.namespace)
            .map(|ns| ns.denials)
            .unwrap_or_default();
        let handling = DenialHandling::resolve(namespace_denials, self.config.denials);
        let tiers = |direction: Direction| -> Option<Vec<TierStep>> {
            let mut by_tier: BTreeMap<&str, Vec<&Arc<crate::model::Policy>>> = BTreeMap::new();
            for policy in policies.iter().filter(|p| p.rules(direction).is_some()) {
                by_tier
                    .entry(policy.tier.as_str())
                    .or_default()
                    .push(policy);
            }
            if by_tier.is_empty() {
                return None;
            }
            let mut steps: Vec<TierStep> = by_tier
                .into_iter()
                .map(|(name, mut list)| {
                    list.sort_by_cached_key(|p| p.sort_key());
                    TierStep {
                        tier: index.tier(name),
                        policies: list
                            .into_iter()
                            .map(|p| PolicyStep {
                                id: p.id.clone(),
                                origin: p.origin(),
                                can_pass: p.can_pass(direction),
                                // Only a chain that can deny differs between handlings.
                                handling: if p.can_deny(direction) {
                                    handling
                                } else {
                                    DenialHandling::Deny
                                },
                            })
                            .collect(),
                    }
                })
                .collect();
            steps.sort_by(|a, b| a.tier.sort_key().cmp(&b.tier.sort_key()));
            Some(steps)
        };
        LocalPod {
            ips: pod.ips.clone(),
            handling,
            ingress: tiers(Direction::Ingress),
            egress: tiers(Direction::Egress),
        }
    }

    /// Replaces one local pod's rules in `PAL-FORWARD` in place: the chain keeps every pod's
    /// egress jumps, then every pod's ingress jumps, each group in pod order.
    fn update_forward(&mut self, key: &ObjectKey) {
        let pod = self.local.get(key);
        for (slot, family) in Family::ALL.into_iter().enumerate() {
            let addresses: Vec<IpAddr> = pod
                .map(|p| {
                    p.ips
                        .iter()
                        .copied()
                        .filter(|ip| Family::of(ip) == family)
                        .collect()
                })
                .unwrap_or_default();
            let (egress, ingress) = match pod {
                Some(p) => {
                    chains::forward_rules(key, &addresses, p.egress.is_some(), p.ingress.is_some())
                }
                None => (Vec::new(), Vec::new()),
            };
            // IPv4 always carries the dispatch chain so the hook has a target; IPv6 only while
            // this node has IPv6 pods.
            let wanted = family == Family::V4
                || self
                    .local
                    .values()
                    .any(|p| p.ips.iter().any(|ip| Family::of(ip) == family));
            let counts = &mut self.forward_counts[slot];
            let chains = &mut self.state.family_mut(family).chains;
            self.dirty
                .insert((family, naming::FORWARD_CHAIN.to_string()));
            if !wanted {
                chains.remove(naming::FORWARD_CHAIN);
                counts.clear();
                continue;
            }
            let chain = chains
                .entry(naming::FORWARD_CHAIN.to_string())
                .or_insert_with(|| Chain {
                    rules: vec![chains::forward_head()],
                });
            let (old_egress, old_ingress) = counts.get(key).copied().unwrap_or((0, 0));
            let (egress_before, ingress_before, egress_total) =
                counts
                    .iter()
                    .fold((0, 0, 0), |(before_e, before_i, total_e), (k, (e, i))| {
                        if k < key {
                            (before_e + e, before_i + i, total_e + e)
                        } else {
                            (before_e, before_i, total_e + e)
                        }
                    });
            let egress_total = egress_total - old_egress + egress.len();
            let new_counts = (egress.len(), ingress.len());
            let start = 1 + egress_before;
            chain.rules.splice(start..start + old_egress, egress);
            let start = 1 + egress_total + ingress_before;
            chain.rules.splice(start..start + old_ingress, ingress);
            if new_counts == (0, 0) {
                counts.remove(key);
            } else {
                counts.insert(key.clone(), new_counts);
            }
        }
    }

    // ---- policy chains ---------------------------------------------------------------------

    fn acquire_policy_chain(&mut self, index: &ClusterIndex, key: PolicyChainKey) {
        if let Some(active) = self.policy_chains.get_mut(&key) {
            active.refs += 1;
            return;
        }
        let sets = self.write_policy_chain(index, &key);
        let sets: Vec<SetId> = sets
            .into_iter()
            .map(|set| self.acquire_set(index, set, key.2))
            .collect();
        self.policy_chains
            .insert(key, ActivePolicyChain { refs: 1, sets });
    }

    fn release_policy_chain(&mut self, key: &PolicyChainKey) {
        let Some(active) = self.policy_chains.get_mut(key) else {
            return;
        };
        active.refs -= 1;
        if active.refs > 0 {
            return;
        }
        if let Some(active) = self.policy_chains.remove(key) {
            self.failed_closed.remove(key);
            let (policy, direction, family, handling) = key;
            let name = naming::policy_chain(policy, *direction, *handling);
            self.state.family_mut(*family).chains.remove(&name);
            self.dirty.insert((*family, name));
            for set in active.sets {
                self.release_set(&set, *family);
            }
        }
    }

    /// Writes the chain into the state and returns the sets it reads.
    fn write_policy_chain(&mut self, index: &ClusterIndex, key: &PolicyChainKey) -> Vec<SetRef> {
        let (policy_id, direction, family, handling) = key;
        let compiled = match index.policy(policy_id) {
            Some(policy) => {
                rules::policy_chain(policy, *direction, *family, *handling, &self.config)
            }
            // A removed policy: its pods are about to let go of it; until then it decides nothing.
            None => rules::PolicyChain {
                rules: Vec::new(),
                sets: Vec::new(),
            },
        };
        let name = naming::policy_chain(policy_id, *direction, *handling);
        self.dirty.insert((*family, name.clone()));
        self.state.family_mut(*family).chains.insert(
            name,
            Chain {
                rules: compiled.rules,
            },
        );
        compiled.sets
    }

    fn refresh_policy_chains(&mut self, index: &ClusterIndex, policy: &PolicyId) {
        for direction in Direction::ALL {
            for (family, handling) in Family::ALL
                .into_iter()
                .flat_map(|f| DenialHandling::ALL.into_iter().map(move |h| (f, h)))
            {
                let key = (policy.clone(), direction, family, handling);
                if !self.policy_chains.contains_key(&key) {
                    continue;
                }
                let sets = self.write_policy_chain(index, &key);
                let sets: Vec<SetId> = sets
                    .into_iter()
                    .map(|set| self.acquire_set(index, set, family))
                    .collect();
                let old = match self.policy_chains.get_mut(&key) {
                    Some(active) => std::mem::replace(&mut active.sets, sets),
                    None => Vec::new(),
                };
                for set in old {
                    self.release_set(&set, family);
                }
            }
        }
    }

    // ---- sets ------------------------------------------------------------------------------

    /// Takes a reference on a set in `family`, building it if it is new there; returns its id.
    fn acquire_set(&mut self, index: &ClusterIndex, key: SetRef, family: Family) -> SetId {
        let (key, newly) = match self.set_ids.get(&key) {
            Some(id) => (id.clone(), false),
            None => {
                let id = SetId(key.clone());
                self.set_ids.insert(key, id.clone());
                (id, true)
            }
        };
        let active = self.sets.entry(key.clone()).or_default();
        active.refs[slot(family)] += 1;
        if active.refs[slot(family)] > 1 {
            return key;
        }
        let name = key.name(family);
        let mut set = key.empty(family);
        // Gathered first and built in one go: a bulk build of a sorted list is several times
        // cheaper than inserting tens of thousands of entries one by one.
        let mut entries = key.static_entries(index, family);
        if newly {
            self.register_set(index, &key, family, &mut entries);
        } else if let Some(active) = self.sets.get(&key) {
            entries.reserve(active.pods.len());
            for pod in &active.pods {
                if let Some(record) = self.pod_records.get(pod) {
                    key.extend_pod_entries(&record.object, family, &mut entries);
                }
            }
            for network_set in &active.network_sets {
                if let Some(record) = self.network_set_records.get(network_set) {
                    entries.extend(key.network_set_entries(&record.object, family));
                }
            }
        }
        entries.sort_unstable_by_key(SetEntry::order_key);
        set.members = entries.into_iter().collect();
        self.dirty.insert((family, name.clone()));
        self.resized.insert((family, name.clone()));
        self.state.family_mut(family).ipsets.insert(name, set);
        key
    }

    /// Makes a new set's members known: the pods and network sets it selects now. Their
    /// entries in `family` go to `entries`, read while each member is at hand.
    fn register_set(
        &mut self,
        index: &ClusterIndex,
        key: &SetId,
        family: Family,
        entries: &mut Vec<SetEntry>,
    ) {
        match key.as_ref() {
            SetKey::Selector(selector)
            | SetKey::NamedPort {
                selector: Some(selector),
                ..
            } => {
                self.set_selectors.insert(key.clone(), selector);
                let candidates = index.candidate_pods(selector.expr());
                let mut members = Vec::with_capacity(candidates.ids.len());
                for &id in &candidates.ids {
                    if let Some(pod) = index.pod_by_id(id) {
                        let selected = candidates.selects(selector, &index.pod_view(pod));
                        debug_assert_eq!(
                            selected,
                            selector.matches(&index.pod_view(pod)),
                            "exact candidates of {selector} hold {}",
                            pod.key
                        );
                        if selected {
                            members.push((id, pod));
                        }
                    }
                }
                self.add_pod_members(index, key, family, &members, entries);
                if key.takes_network_sets() {
                    let sets: Vec<Arc<NetworkSet>> = index
                        .candidate_network_sets(selector)
                        .into_iter()
                        .filter(|set| selector.matches(&index.network_set_view(set)))
                        .cloned()
                        .collect();
                    for set in sets {
                        entries.extend(key.network_set_entries(&set, family));
                        self.add_network_set_member(key, set);
                    }
                }
            }
            SetKey::NamedPort {
                selector: None,
                name,
                ..
            } => {
                self.sets_by_port_name
                    .entry(name.clone())
                    .or_default()
                    .push(key.clone());
                let members: Vec<(PodId, &Arc<Pod>)> = index
                    .pod_ids_with_port_name(name)
                    .filter_map(|id| Some((id, index.pod_by_id(id)?)))
                    .collect();
                self.add_pod_members(index, key, family, &members, entries);
            }
            SetKey::Service { service, .. } => {
                self.sets_by_service
                    .entry(service.clone())
                    .or_default()
                    .push(key.clone());
            }
            SetKey::Nets { .. } => {}
        }
    }

    /// Records that a new set holds `members` (each offered once) and appends their entries in
    /// `family` to `entries`.
    fn add_pod_members(
        &mut self,
        index: &ClusterIndex,
        key: &SetId,
        family: Family,
        members: &[(PodId, &Arc<Pod>)],
        entries: &mut Vec<SetEntry>,
    ) {
        entries.reserve(members.len());
        if let Some(active) = self.sets.get_mut(key) {
            active.pods.reserve(members.len());
            active.pods.extend(members.iter().map(|(id, _)| *id));
        }
        let by_address = matches!(key.as_ref(), SetKey::Selector(_));
        for (id, pod) in members {
            // The index's dense address table spares reading each pod object.
            let only_v4 = index.pod_address(*id).only_v4();
            if let (true, Some(v4)) = (by_address, only_v4) {
                if family == Family::V4 {
                    entries.extend(key.address_entry(IpAddr::V4(v4)));
                }
            } else {
                key.extend_pod_entries(pod, family, entries);
            }
            let record = self.pod_records.get_or_insert_with(*id, || Record {
                object: Arc::clone(pod),
                sets: Vec::new(),
            });
            debug_assert!(!record.sets.contains(key), "{} offered twice", pod.key);
            record.sets.push(key.clone());
        }
    }

    fn add_network_set_member(&mut self, key: &SetId, set: Arc<NetworkSet>) {
        if let Some(active) = self.sets.get_mut(key) {
            active.network_sets.insert(set.key.clone());
        }
        let record = self
            .network_set_records
            .entry(set.key.clone())
            .or_insert_with(|| Record {
                object: Arc::clone(&set),
                sets: Vec::new(),
            });
        if !record.sets.contains(key) {
            record.sets.push(key.clone());
        }
    }

    fn release_set(&mut self, key: &SetId, family: Family) {
        let Some(active) = self.sets.get_mut(key) else {
            return;
        };
        let refs = &mut active.refs[slot(family)];
        *refs = refs.saturating_sub(1);
        if *refs > 0 {
            return;
        }
        let name = key.name(family);
        self.state.family_mut(family).ipsets.remove(&name);
        self.overflowed.remove(&(family, name.clone()));
        self.dirty.insert((family, name));
        if active.refs != [0, 0] {
            return;
        }
        let Some(active) = self.sets.remove(key) else {
            return;
        };
        self.set_ids.remove(&key.0);
        match key.as_ref() {
            SetKey::Selector(selector)
            | SetKey::NamedPort {
                selector: Some(selector),
                ..
            } => self.set_selectors.remove(key, selector),
            SetKey::NamedPort {
                selector: None,
                name,
                ..
            } => {
                if let Some(list) = self.sets_by_port_name.get_mut(name) {
                    list.retain(|k| k != key);
                    if list.is_empty() {
                        self.sets_by_port_name.remove(name);
                    }
                }
            }
            SetKey::Service { service, .. } => {
                if let Some(list) = self.sets_by_service.get_mut(service) {
                    list.retain(|k| k != key);
                    if list.is_empty() {
                        self.sets_by_service.remove(service);
                    }
                }
            }
            SetKey::Nets { .. } => {}
        }
        for pod in active.pods {
            if let Some(record) = self.pod_records.get_mut(&pod) {
                record.sets.retain(|k| k != key);
                if record.sets.is_empty() {
                    self.pod_records.remove(&pod);
                }
            }
        }
        for set in active.network_sets {
            if let Some(record) = self.network_set_records.get_mut(&set) {
                record.sets.retain(|k| k != key);
                if record.sets.is_empty() {
                    self.network_set_records.remove(&set);
                }
            }
        }
    }

    /// Whether the set's selection holds the pod as it is now.
    fn selects_pod(key: &SetKey, index: &ClusterIndex, pod: &Pod) -> bool {
        match key {
            SetKey::Selector(selector)
            | SetKey::NamedPort {
                selector: Some(selector),
                ..
            } => selector.matches(&index.pod_view(pod)),
            SetKey::NamedPort {
                selector: None,
                name,
                ..
            } => pod.named_ports.iter().any(|p| p.name == *name),
            SetKey::Nets { .. } | SetKey::Service { .. } => false,
        }
    }

    /// Re-evaluates one pod's memberships (all it could have, or only `Touch::Only`'s) against
    /// the pod as the index holds it now, and moves its entries.
    fn touch_pod(&mut self, index: &ClusterIndex, id: PodId, touch: Touch) {
        let current: Option<Arc<Pod>> = index.pod_by_id(id).cloned();
        let record = self.pod_records.remove(&id);
        let (old_pod, old_sets) = match record {
            Some(r) => (Some(r.object), r.sets),
            None => (None, Vec::new()),
        };
        let candidates: Vec<SetId> = match &touch {
            Touch::Full => {
                let mut found = Vec::new();
                if let Some(pod) = &current {
                    self.set_selectors
                        .candidates(&index.pod_view(pod), &mut found);
                    for port in &pod.named_ports {
                        if let Some(sets) = self.sets_by_port_name.get(port.name.as_str()) {
                            found.extend(sets.iter().cloned());
                        }
                    }
                }
                found.extend(old_sets.iter().cloned());
                found.sort();
                found.dedup();
                found
            }
            Touch::Only(sets) => sets.iter().cloned().collect(),
        };
        let mut new_sets: Vec<SetId> = match touch {
            Touch::Full => Vec::new(),
            Touch::Only(_) => old_sets.clone(),
        };
        for set in candidates {
            let Some(active) = self.sets.get(&set) else {
                continue;
            };
            let was = old_sets.contains(&set);
            let now = current
                .as_ref()
                .is_some_and(|pod| Self::selects_pod(&set, index, pod));
            let families: Vec<Family> = active.families().collect();
            for family in families {
                let old: Vec<SetEntry> = match (&old_pod, was) {
                    (Some(pod), true) => set.pod_entries(pod, family),
                    _ => Vec::new(),
                };
                let new: Vec<SetEntry> = match (&current, now) {
                    (Some(pod), true) => set.pod_entries(pod, family),
                    _ => Vec::new(),
                };
                if old == new {
                    continue;
                }
                let stale: Vec<SetEntry> = old.into_iter().filter(|e| !new.contains(e)).collect();
                self.reconcile(index, &set, family, stale, new, id);
            }
            let Some(active) = self.sets.get_mut(&set) else {
                continue;
            };
            if now {
                active.pods.insert(id);
                if !new_sets.contains(&set) {
                    new_sets.push(set);
                }
            } else {
                active.pods.remove(&id);
                new_sets.retain(|k| *k != set);
            }
        }
        if let (Some(pod), false) = (current, new_sets.is_empty()) {
            self.pod_records.insert(
                id,
                Record {
                    object: pod,
                    sets: new_sets,
                },
            );
        }
    }

    fn touch_network_set(&mut self, index: &ClusterIndex, key: &NetworkSetKey, touch: Touch) {
        let current: Option<Arc<NetworkSet>> = index.network_set(key).cloned();
        let record = self.network_set_records.remove(key);
        let (old_set, old_sets) = match record {
            Some(r) => (Some(r.object), r.sets),
            None => (None, Vec::new()),
        };
        let candidates: Vec<SetId> = match &touch {
            Touch::Full => {
                let mut found = Vec::new();
                if let Some(set) = &current {
                    self.set_selectors
                        .candidates(&index.network_set_view(set), &mut found);
                }
                found.extend(old_sets.iter().cloned());
                found.sort();
                found.dedup();
                found
            }
            Touch::Only(sets) => sets.iter().cloned().collect(),
        };
        let mut new_sets: Vec<SetId> = match touch {
            Touch::Full => Vec::new(),
            Touch::Only(_) => old_sets.clone(),
        };
        for set in candidates {
            let Some(active) = self.sets.get(&set) else {
                continue;
            };
            if !set.takes_network_sets() {
                continue;
            }
            let was = old_sets.contains(&set);
            let now = match (&current, set.selector()) {
                (Some(ns), Some(selector)) => selector.matches(&index.network_set_view(ns)),
                _ => false,
            };
            let families: Vec<Family> = active.families().collect();
            for family in families {
                let old: Vec<SetEntry> = match (&old_set, was) {
                    (Some(ns), true) => set.network_set_entries(ns, family),
                    _ => Vec::new(),
                };
                let new: Vec<SetEntry> = match (&current, now) {
                    (Some(ns), true) => set.network_set_entries(ns, family),
                    _ => Vec::new(),
                };
                if old == new {
                    continue;
                }
                let stale: Vec<SetEntry> = old.into_iter().filter(|e| !new.contains(e)).collect();
                self.reconcile_network_set(index, &set, family, stale, new, key);
            }
            let Some(active) = self.sets.get_mut(&set) else {
                continue;
            };
            if now {
                active.network_sets.insert(key.clone());
                if !new_sets.contains(&set) {
                    new_sets.push(set);
                }
            } else {
                active.network_sets.remove(key);
                new_sets.retain(|k| *k != set);
            }
        }
        if let (Some(set), false) = (current, new_sets.is_empty()) {
            self.network_set_records.insert(
                key.clone(),
                Record {
                    object: set,
                    sets: new_sets,
                },
            );
        }
    }

    /// Whether a member other than `pod` / `network_set` still gives the set `entry`.
    fn contributed_by_others(
        &self,
        index: &ClusterIndex,
        set: &SetId,
        family: Family,
        entry: &SetEntry,
        pod: Option<PodId>,
        network_set: Option<&NetworkSetKey>,
    ) -> bool {
        let Some(active) = self.sets.get(set) else {
            return false;
        };
        let host = match entry {
            SetEntry::Ip(ip) | SetEntry::IpPort { ip, .. } => Some(*ip),
            SetEntry::Net { net, .. } if net.prefix() == host_prefix(net) => Some(net.ip()),
            SetEntry::Net { .. } => None,
        };
        // What another member contributes is what the compiler last placed for it (its
        // record), not the index's pod in its slot: within one batch a slot freed by a removed
        // pod can already hold a new pod with the same address, whose own change comes later.
        let by_pod = host.is_some_and(|ip| {
            index.pod_ids_with_ip(&ip).iter().any(|other| {
                Some(*other) != pod
                    && active.pods.contains(other)
                    && self
                        .pod_records
                        .get(other)
                        .is_some_and(|r| set.pod_entries(&r.object, family).contains(entry))
            })
        });
        by_pod
            || active.network_sets.iter().any(|k| {
                Some(k) != network_set
                    && index
                        .network_set(k)
                        .is_some_and(|s| set.network_set_entries(s, family).contains(entry))
            })
    }

    fn write_entries(
        &mut self,
        set: &SetId,
        family: Family,
        remove: Vec<SetEntry>,
        add: Vec<SetEntry>,
    ) {
        let name = set.name(family);
        let Some(ipset) = self.set_mut(family, &name) else {
            return;
        };
        let mut changed = false;
        for entry in &remove {
            changed |= ipset.members.remove(entry);
        }
        for entry in add {
            changed |= ipset.members.insert(entry);
        }
        if changed {
            self.resized.insert((family, name.clone()));
            self.dirty.insert((family, name));
        }
    }

    /// Removes `stale` entries no other member still gives, and adds `wanted` ones.
    fn reconcile(
        &mut self,
        index: &ClusterIndex,
        set: &SetId,
        family: Family,
        stale: Vec<SetEntry>,
        wanted: Vec<SetEntry>,
        pod: PodId,
    ) {
        let remove: Vec<SetEntry> = stale
            .into_iter()
            .filter(|e| !self.contributed_by_others(index, set, family, e, Some(pod), None))
            .collect();
        self.write_entries(set, family, remove, wanted);
    }

    fn reconcile_network_set(
        &mut self,
        index: &ClusterIndex,
        set: &SetId,
        family: Family,
        stale: Vec<SetEntry>,
        wanted: Vec<SetEntry>,
        network_set: &NetworkSetKey,
    ) {
        let remove: Vec<SetEntry> = stale
            .into_iter()
            .filter(|e| !self.contributed_by_others(index, set, family, e, None, Some(network_set)))
            .collect();
        self.write_entries(set, family, remove, wanted);
    }

    /// Recomputes the sets of a Service's endpoints.
    fn refresh_service(&mut self, index: &ClusterIndex, service: &ObjectKey) {
        let sets: Vec<SetId> = self
            .sets_by_service
            .get(service)
            .cloned()
            .unwrap_or_default();
        for set in sets {
            let families: Vec<Family> = match self.sets.get(&set) {
                Some(active) => active.families().collect(),
                None => continue,
            };
            for family in families {
                let name = set.name(family);
                let wanted: BTreeSet<SetEntry> =
                    set.static_entries(index, family).into_iter().collect();
                if let Some(ipset) = self.set_mut(family, &name) {
                    if ipset.members != wanted {
                        ipset.members = wanted;
                        self.resized.insert((family, name.clone()));
                        self.dirty.insert((family, name));
                    }
                }
            }
        }
    }
}
