//! `ClusterIndex`: the cluster state Palisade enforces, with the lookups the compiler needs.
//!
//! Sources feed it (`upsert_*`, `remove_*`, `replace_*`). Every update that changes something
//! returns a [`Change`] holding the object before and after, so the compiler can update only what
//! the change touches. Label indexes answer "which pods could this selector match" and "which
//! policies could select this pod" without testing every pod or every policy.

mod candidates;
mod label_sets;
mod views;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::kubernetes::KubernetesPolicy;
use crate::model::{
    Name, Namespace, NetworkSet, NetworkSetKey, ObjectKey, Pod, Policy, PolicyId, PolicyKind,
    ServiceAccount, ServiceSlice, Tier,
};
use crate::selector::{LabelText, Labels, SelectorIndex};

use label_sets::LabelSets;

pub use candidates::{Candidates, Rest};
pub use views::{NetworkSetView, PodView};

pub type PodId = u32;

/// Hashing for pod slots: small distinct integers, spread over the hash by one multiply.
#[derive(Debug, Default, Clone, Copy)]
pub struct PodIdHasher(u64);

impl std::hash::Hasher for PodIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type PodIdSet = HashSet<PodId, std::hash::BuildHasherDefault<PodIdHasher>>;
pub type PodIdMap<V> = HashMap<PodId, V, std::hash::BuildHasherDefault<PodIdHasher>>;

/// One update to the index, as the object was before and is after. `None` means absent.
#[derive(Debug, Clone)]
pub enum Change {
    /// `id` is the slot the pod holds in the index; a removed pod's slot may later hold
    /// another pod, so consumers that key by it keep what they last saw there.
    Pod {
        id: PodId,
        before: Option<Arc<Pod>>,
        after: Option<Arc<Pod>>,
    },
    Namespace {
        before: Option<Arc<Namespace>>,
        after: Option<Arc<Namespace>>,
    },
    ServiceAccount {
        before: Option<Arc<ServiceAccount>>,
        after: Option<Arc<ServiceAccount>>,
    },
    NetworkSet {
        before: Option<Arc<NetworkSet>>,
        after: Option<Arc<NetworkSet>>,
    },
    ServiceSlice {
        before: Option<Arc<ServiceSlice>>,
        after: Option<Arc<ServiceSlice>>,
    },
    Tier {
        before: Option<Arc<Tier>>,
        after: Option<Arc<Tier>>,
    },
    Policy {
        before: Option<Arc<Policy>>,
        after: Option<Arc<Policy>>,
    },
}

/// A pod's address when it is its only one and IPv4, as most pods have, packed in four bytes;
/// anything else is read from the pod.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PodAddress(u32);

impl PodAddress {
    /// No pod has 0.0.0.0: the value of an empty slot or of a pod to read instead.
    const READ_THE_POD: u32 = 0;

    fn of(pod: &Pod) -> Self {
        match pod.ips.as_slice() {
            [IpAddr::V4(v4)] if u32::from(*v4) != Self::READ_THE_POD => Self(u32::from(*v4)),
            _ => Self(Self::READ_THE_POD),
        }
    }

    /// The pod's one address, or `None` when the pod must be read: it has IPv6 or several
    /// addresses (or the slot is empty).
    pub fn only_v4(self) -> Option<std::net::Ipv4Addr> {
        (self.0 != Self::READ_THE_POD).then(|| std::net::Ipv4Addr::from(self.0))
    }
}

#[derive(Debug, Default)]
pub struct ClusterIndex {
    pods: Vec<Option<Arc<Pod>>>,
    /// Each slot's addresses, beside `pods`: building a set reads them for tens of thousands of
    /// pods in slot order, and a dense table is read in memory order.
    addresses: Vec<PodAddress>,
    free_ids: Vec<PodId>,
    pod_ids: HashMap<ObjectKey, PodId>,
    pods_by_namespace: HashMap<Name, PodIdSet>,
    pods_by_node: HashMap<Name, PodIdSet>,
    pods_by_ip: HashMap<IpAddr, Vec<PodId>>,
    pods_by_port_name: HashMap<Name, PodIdSet>,
    /// The label sets of the pods, each stored once.
    label_sets: LabelSets,
    /// Label key, then value: the pods that carry it.
    pods_by_label: HashMap<LabelText, HashMap<LabelText, PodIdSet>>,
    namespaces: BTreeMap<String, Arc<Namespace>>,
    /// Label key, then value: the Namespace objects that carry it.
    namespaces_by_label: HashMap<LabelText, HashMap<LabelText, BTreeSet<String>>>,
    /// Namespace, then name.
    service_accounts: HashMap<Name, HashMap<Name, Arc<ServiceAccount>>>,
    network_sets: BTreeMap<NetworkSetKey, Arc<NetworkSet>>,
    tiers: BTreeMap<String, Arc<Tier>>,
    slices: HashMap<ObjectKey, Arc<ServiceSlice>>,
    /// Service (namespace/name) to the names of its slices.
    slices_by_service: HashMap<ObjectKey, Vec<Name>>,
    policies: BTreeMap<PolicyId, Arc<Policy>>,
    policy_selectors: SelectorIndex<PolicyId>,
}

fn add_to<K: std::hash::Hash + Eq>(map: &mut HashMap<K, PodIdSet>, key: K, id: PodId) {
    map.entry(key).or_default().insert(id);
}

fn remove_from<K: std::hash::Hash + Eq>(map: &mut HashMap<K, PodIdSet>, key: &K, id: PodId) {
    if let Some(ids) = map.get_mut(key) {
        ids.remove(&id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

/// The keys of `current` that `kept` lacks: what a re-list removes.
fn stale<K: Ord>(current: impl Iterator<Item = K>, kept: impl Iterator<Item = K>) -> Vec<K> {
    let kept: std::collections::BTreeSet<K> = kept.collect();
    current.filter(|k| !kept.contains(k)).collect()
}

impl ClusterIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn pod_count(&self) -> usize {
        self.pod_ids.len()
    }

    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    pub fn pod(&self, key: &ObjectKey) -> Option<&Arc<Pod>> {
        self.pod_ids.get(key).and_then(|id| self.pod_by_id(*id))
    }

    /// The pod in a slot, if the slot holds one now.
    pub fn pod_by_id(&self, id: PodId) -> Option<&Arc<Pod>> {
        self.pods.get(id as usize).and_then(Option::as_ref)
    }

    /// The addresses of the pod in slot `id` (none for an empty slot).
    pub fn pod_address(&self, id: PodId) -> PodAddress {
        self.addresses.get(id as usize).copied().unwrap_or_default()
    }

    pub fn pod_id(&self, key: &ObjectKey) -> Option<PodId> {
        self.pod_ids.get(key).copied()
    }

    /// Slots of the pods with this address (more than one only while one is terminating).
    pub fn pod_ids_with_ip(&self, ip: &IpAddr) -> &[PodId] {
        self.pods_by_ip
            .get(ip)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Slots of the pods with a container port of this name.
    pub fn pod_ids_with_port_name<'a>(&'a self, name: &str) -> impl Iterator<Item = PodId> + 'a {
        self.pods_by_port_name
            .get(name)
            .into_iter()
            .flatten()
            .copied()
    }

    fn pods_of<'a>(&'a self, ids: Option<&'a PodIdSet>) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
        ids.into_iter()
            .flatten()
            .filter_map(|id| self.pod_by_id(*id))
    }

    pub fn pods_in_namespace<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
        self.pods_of(self.pods_by_namespace.get(namespace))
    }

    /// Slots of the pods of one namespace.
    pub fn pod_ids_in_namespace<'a>(&'a self, namespace: &str) -> impl Iterator<Item = PodId> + 'a {
        self.pods_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .copied()
    }

    pub fn pods_on_node<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
        self.pods_of(self.pods_by_node.get(node))
    }

    pub fn pods_with_ip<'a>(&'a self, ip: &IpAddr) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
        self.pods_by_ip
            .get(ip)
            .into_iter()
            .flatten()
            .filter_map(|id| self.pod_by_id(*id))
    }

    /// Pods with a container port of this name (any protocol).
    pub fn pods_with_port_name<'a>(
        &'a self,
        name: &str,
    ) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
        self.pods_of(self.pods_by_port_name.get(name))
    }

    pub fn pods(&self) -> impl Iterator<Item = &Arc<Pod>> {
        self.pods.iter().flatten()
    }

    /// Names of the namespaces that hold pods.
    pub fn populated_namespaces(&self) -> impl Iterator<Item = &str> {
        self.pods_by_namespace.keys().map(Name::as_str)
    }

    pub fn namespace(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.namespaces.values()
    }

    pub fn service_account(&self, namespace: &str, name: &str) -> Option<&Arc<ServiceAccount>> {
        self.service_accounts.get(namespace)?.get(name)
    }

    pub fn service_accounts(&self) -> impl Iterator<Item = &Arc<ServiceAccount>> {
        self.service_accounts.values().flat_map(HashMap::values)
    }

    pub fn network_set(&self, key: &NetworkSetKey) -> Option<&Arc<NetworkSet>> {
        self.network_sets.get(key)
    }

    pub fn network_sets(&self) -> impl Iterator<Item = &Arc<NetworkSet>> {
        self.network_sets.values()
    }

    /// The namespaced network sets of one namespace.
    pub fn network_sets_in(&self, namespace: &str) -> impl Iterator<Item = &Arc<NetworkSet>> {
        // Keys sort by namespace first: the namespace's sets are one range.
        let namespace = Some(namespace.to_string());
        let start = NetworkSetKey {
            namespace: namespace.clone(),
            name: String::new(),
        };
        self.network_sets
            .range(start..)
            .take_while(move |(key, _)| key.namespace == namespace)
            .map(|(_, set)| set)
    }

    /// The tier of this name: declared by a Tier resource, built in, or only named by policies.
    pub fn tier(&self, name: &str) -> Tier {
        if let Some(tier) = self.tiers.get(name) {
            return Tier::clone(tier);
        }
        Tier::built_in()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| Tier::undeclared(name))
    }

    pub fn slices_of_service<'a>(
        &'a self,
        service: &ObjectKey,
    ) -> impl Iterator<Item = &'a Arc<ServiceSlice>> + 'a {
        let namespace = service.namespace.clone();
        self.slices_by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(move |name| {
                self.slices
                    .get(&ObjectKey::new(namespace.clone(), name.as_str()))
            })
    }

    pub fn policy(&self, id: &PolicyId) -> Option<&Arc<Policy>> {
        self.policies.get(id)
    }

    pub fn policies(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.values()
    }

    /// The labels namespace selectors see for a namespace: its object's, or for a namespace not
    /// (yet) known, only its name label.
    pub fn namespace_labels(&self, name: &str) -> std::borrow::Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(ns) => std::borrow::Cow::Borrowed(&ns.labels),
            None => std::borrow::Cow::Owned(crate::model::namespace_name_labels(name)),
        }
    }

    pub fn pod_view<'a>(&'a self, pod: &'a Pod) -> PodView<'a> {
        PodView::new(pod, self)
    }

    pub fn network_set_view<'a>(&'a self, set: &'a NetworkSet) -> NetworkSetView<'a> {
        let namespace = set
            .key
            .namespace
            .as_ref()
            .and_then(|ns| self.namespaces.get(ns))
            .map(Arc::as_ref);
        NetworkSetView::new(set, namespace)
    }

    /// The policies whose selector matches the pod, in no particular order.
    pub fn policies_selecting(&self, pod: &Pod) -> Vec<Arc<Policy>> {
        let view = self.pod_view(pod);
        let mut ids = Vec::new();
        self.policy_selectors.candidates(&view, &mut ids);
        ids.iter()
            .filter_map(|id| self.policies.get(id))
            .filter(|policy| policy.selector.matches(&view))
            .cloned()
            .collect()
    }

    // ---- updates ---------------------------------------------------------------------------

    pub fn upsert_pod(&mut self, mut pod: Pod) -> Option<Change> {
        if let Some(&id) = self.pod_ids.get(&pod.key) {
            let before = self.pod_by_id(id).cloned();
            if before.as_deref() == Some(&pod) {
                return None;
            }
            pod.labels = self.label_sets.share(std::mem::take(&mut pod.labels));
            let pod = Arc::new(pod);
            if let Some(before) = &before {
                self.unlink_pod(id, before);
                self.label_sets.release();
            }
            self.link_pod(id, &pod);
            self.pods[id as usize] = Some(Arc::clone(&pod));
            return Some(Change::Pod {
                id,
                before,
                after: Some(pod),
            });
        }
        pod.labels = self.label_sets.share(std::mem::take(&mut pod.labels));
        let pod = Arc::new(pod);
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => {
                self.pods.push(None);
                (self.pods.len() - 1) as PodId
            }
        };
        self.pod_ids.insert(pod.key.clone(), id);
        self.link_pod(id, &pod);
        self.pods[id as usize] = Some(Arc::clone(&pod));
        Some(Change::Pod {
            id,
            before: None,
            after: Some(pod),
        })
    }

    pub fn remove_pod(&mut self, key: &ObjectKey) -> Option<Change> {
        let id = self.pod_ids.remove(key)?;
        let before = self.pods.get_mut(id as usize).and_then(Option::take)?;
        self.unlink_pod(id, &before);
        self.label_sets.release();
        self.free_ids.push(id);
        Some(Change::Pod {
            id,
            before: Some(before),
            after: None,
        })
    }

    fn link_pod(&mut self, id: PodId, pod: &Pod) {
        let slot = id as usize;
        if slot >= self.addresses.len() {
            self.addresses.resize(slot + 1, PodAddress::default());
        }
        self.addresses[slot] = PodAddress::of(pod);
        add_to(&mut self.pods_by_namespace, pod.key.namespace.clone(), id);
        if let Some(node) = &pod.node {
            add_to(&mut self.pods_by_node, node.clone(), id);
        }
        for ip in &pod.ips {
            self.pods_by_ip.entry(*ip).or_default().push(id);
        }
        for port in &pod.named_ports {
            add_to(&mut self.pods_by_port_name, port.name.clone(), id);
        }
        for (key, value) in &pod.labels {
            let by_value = match self.pods_by_label.get_mut(key) {
                Some(by_value) => by_value,
                None => self.pods_by_label.entry(key.clone()).or_default(),
            };
            match by_value.get_mut(value) {
                Some(ids) => {
                    ids.insert(id);
                }
                None => {
                    by_value.insert(value.clone(), PodIdSet::from_iter([id]));
                }
            }
        }
    }

    fn unlink_pod(&mut self, id: PodId, pod: &Pod) {
        if let Some(slot) = self.addresses.get_mut(id as usize) {
            *slot = PodAddress::default();
        }
        remove_from(&mut self.pods_by_namespace, &pod.key.namespace, id);
        if let Some(node) = &pod.node {
            remove_from(&mut self.pods_by_node, node, id);
        }
        for port in &pod.named_ports {
            remove_from(&mut self.pods_by_port_name, &port.name, id);
        }
        for ip in &pod.ips {
            if let Some(ids) = self.pods_by_ip.get_mut(ip) {
                ids.retain(|other| *other != id);
                if ids.is_empty() {
                    self.pods_by_ip.remove(ip);
                }
            }
        }
        for (key, value) in &pod.labels {
            if let Some(by_value) = self.pods_by_label.get_mut(key) {
                remove_from(by_value, value, id);
                if by_value.is_empty() {
                    self.pods_by_label.remove(key);
                }
            }
        }
    }

    /// The policy a namespace's legacy annotation stands for, while it is set.
    fn legacy_policy_change(&mut self, name: &str, isolated: bool) -> Option<Change> {
        let legacy = KubernetesPolicy::legacy_default_deny(name).to_policy();
        if isolated {
            self.upsert_policy(legacy)
        } else {
            self.remove_policy(&legacy.id)
        }
    }

    fn index_namespace_labels(&mut self, namespace: &Namespace, present: bool) {
        for (key, value) in &namespace.labels {
            let by_value = self.namespaces_by_label.entry(key.clone()).or_default();
            let names = by_value.entry(value.clone()).or_default();
            if present {
                names.insert(namespace.name.clone());
            } else {
                names.remove(&namespace.name);
                if names.is_empty() {
                    by_value.remove(value);
                }
                if by_value.is_empty() {
                    self.namespaces_by_label.remove(key);
                }
            }
        }
    }

    pub fn upsert_namespace(&mut self, namespace: Namespace) -> Vec<Change> {
        let namespace = Arc::new(namespace);
        let before = self
            .namespaces
            .insert(namespace.name.clone(), Arc::clone(&namespace));
        if before.as_deref() == Some(&*namespace) {
            return Vec::new();
        }
        if let Some(old) = &before {
            self.index_namespace_labels(old, false);
        }
        self.index_namespace_labels(&namespace, true);
        let was = before.as_ref().is_some_and(|ns| ns.legacy_default_deny);
        let mut changes = vec![Change::Namespace {
            before,
            after: Some(Arc::clone(&namespace)),
        }];
        if was != namespace.legacy_default_deny {
            changes
                .extend(self.legacy_policy_change(&namespace.name, namespace.legacy_default_deny));
        }
        changes
    }

    pub fn remove_namespace(&mut self, name: &str) -> Vec<Change> {
        let Some(before) = self.namespaces.remove(name) else {
            return Vec::new();
        };
        self.index_namespace_labels(&before, false);
        let was = before.legacy_default_deny;
        let mut changes = vec![Change::Namespace {
            before: Some(before),
            after: None,
        }];
        if was {
            changes.extend(self.legacy_policy_change(name, false));
        }
        changes
    }

    pub fn upsert_service_account(&mut self, account: ServiceAccount) -> Option<Change> {
        let account = Arc::new(account);
        let before = self
            .service_accounts
            .entry(account.key.namespace.clone())
            .or_default()
            .insert(account.key.name.clone(), Arc::clone(&account));
        (before.as_deref() != Some(&*account)).then_some(Change::ServiceAccount {
            before,
            after: Some(account),
        })
    }

    pub fn remove_service_account(&mut self, key: &ObjectKey) -> Option<Change> {
        let in_namespace = self.service_accounts.get_mut(&key.namespace)?;
        let before = in_namespace.remove(&key.name)?;
        if in_namespace.is_empty() {
            self.service_accounts.remove(&key.namespace);
        }
        Some(Change::ServiceAccount {
            before: Some(before),
            after: None,
        })
    }

    pub fn upsert_network_set(&mut self, set: NetworkSet) -> Option<Change> {
        let set = Arc::new(set);
        let before = self.network_sets.insert(set.key.clone(), Arc::clone(&set));
        (before.as_deref() != Some(&*set)).then_some(Change::NetworkSet {
            before,
            after: Some(set),
        })
    }

    pub fn remove_network_set(&mut self, key: &NetworkSetKey) -> Option<Change> {
        let before = self.network_sets.remove(key)?;
        Some(Change::NetworkSet {
            before: Some(before),
            after: None,
        })
    }

    pub fn upsert_tier(&mut self, tier: Tier) -> Option<Change> {
        let before = Arc::new(self.tier(&tier.name));
        let tier = Arc::new(tier);
        self.tiers.insert(tier.name.clone(), Arc::clone(&tier));
        (*before != *tier).then_some(Change::Tier {
            before: Some(before),
            after: Some(tier),
        })
    }

    /// Removes a Tier resource: the tier goes back to its built-in form, or to an undeclared
    /// tier if its policies remain.
    pub fn remove_tier(&mut self, name: &str) -> Option<Change> {
        let before = self.tiers.remove(name)?;
        let after = Arc::new(self.tier(name));
        (*before != *after).then_some(Change::Tier {
            before: Some(before),
            after: Some(after),
        })
    }

    pub fn upsert_service_slice(&mut self, slice: ServiceSlice) -> Option<Change> {
        let slice = Arc::new(slice);
        let before = self.slices.insert(slice.key.clone(), Arc::clone(&slice));
        if before.as_deref() == Some(&*slice) {
            return None;
        }
        if let Some(old) = &before {
            self.unlink_slice(old);
        }
        let service = ObjectKey::new(slice.key.namespace.clone(), slice.service.clone());
        let names = self.slices_by_service.entry(service).or_default();
        if !names.contains(&slice.key.name) {
            names.push(slice.key.name.clone());
        }
        Some(Change::ServiceSlice {
            before,
            after: Some(slice),
        })
    }

    fn unlink_slice(&mut self, slice: &ServiceSlice) {
        let service = ObjectKey::new(slice.key.namespace.clone(), slice.service.clone());
        if let Some(names) = self.slices_by_service.get_mut(&service) {
            names.retain(|n| *n != slice.key.name);
            if names.is_empty() {
                self.slices_by_service.remove(&service);
            }
        }
    }

    pub fn remove_service_slice(&mut self, key: &ObjectKey) -> Option<Change> {
        let before = self.slices.remove(key)?;
        self.unlink_slice(&before);
        Some(Change::ServiceSlice {
            before: Some(before),
            after: None,
        })
    }

    pub fn upsert_policy(&mut self, policy: Policy) -> Option<Change> {
        let policy = Arc::new(policy);
        let before = self.policies.insert(policy.id.clone(), Arc::clone(&policy));
        if before.as_deref() == Some(&*policy) {
            return None;
        }
        if let Some(old) = &before {
            self.policy_selectors.remove(&old.id, &old.selector);
        }
        self.policy_selectors
            .insert(policy.id.clone(), &policy.selector);
        Some(Change::Policy {
            before,
            after: Some(policy),
        })
    }

    pub fn remove_policy(&mut self, id: &PolicyId) -> Option<Change> {
        let before = self.policies.remove(id)?;
        self.policy_selectors.remove(&before.id, &before.selector);
        Some(Change::Policy {
            before: Some(before),
            after: None,
        })
    }

    /// Makes the pods exactly `pods` (after a re-list), returning what changed.
    pub fn replace_pods(&mut self, pods: Vec<Pod>) -> Vec<Change> {
        let stale = stale(
            self.pod_ids.keys().cloned(),
            pods.iter().map(|p| p.key.clone()),
        );
        let mut changes: Vec<Change> = stale.iter().filter_map(|k| self.remove_pod(k)).collect();
        changes.extend(pods.into_iter().filter_map(|p| self.upsert_pod(p)));
        changes
    }

    pub fn replace_namespaces(&mut self, namespaces: Vec<Namespace>) -> Vec<Change> {
        let stale = stale(
            self.namespaces.keys().cloned(),
            namespaces.iter().map(|n| n.name.clone()),
        );
        let mut changes: Vec<Change> = stale
            .iter()
            .flat_map(|k| self.remove_namespace(k))
            .collect();
        changes.extend(
            namespaces
                .into_iter()
                .flat_map(|n| self.upsert_namespace(n)),
        );
        changes
    }

    pub fn replace_service_accounts(&mut self, accounts: Vec<ServiceAccount>) -> Vec<Change> {
        let current: Vec<ObjectKey> = self.service_accounts().map(|a| a.key.clone()).collect();
        let stale = stale(current.into_iter(), accounts.iter().map(|a| a.key.clone()));
        let mut changes: Vec<Change> = stale
            .iter()
            .filter_map(|k| self.remove_service_account(k))
            .collect();
        changes.extend(
            accounts
                .into_iter()
                .filter_map(|a| self.upsert_service_account(a)),
        );
        changes
    }

    /// Makes the network sets of one scope (namespaced, or global) exactly `sets`.
    pub fn replace_network_sets(&mut self, namespaced: bool, sets: Vec<NetworkSet>) -> Vec<Change> {
        let stale = stale(
            self.network_sets
                .keys()
                .filter(|k| k.namespace.is_some() == namespaced)
                .cloned(),
            sets.iter().map(|s| s.key.clone()),
        );
        let mut changes: Vec<Change> = stale
            .iter()
            .filter_map(|k| self.remove_network_set(k))
            .collect();
        changes.extend(sets.into_iter().filter_map(|s| self.upsert_network_set(s)));
        changes
    }

    pub fn replace_tiers(&mut self, tiers: Vec<Tier>) -> Vec<Change> {
        let stale = stale(
            self.tiers.keys().cloned(),
            tiers.iter().map(|t| t.name.clone()),
        );
        let mut changes: Vec<Change> = stale.iter().filter_map(|k| self.remove_tier(k)).collect();
        changes.extend(tiers.into_iter().filter_map(|t| self.upsert_tier(t)));
        changes
    }

    pub fn replace_service_slices(&mut self, slices: Vec<ServiceSlice>) -> Vec<Change> {
        let stale = stale(
            self.slices.keys().cloned(),
            slices.iter().map(|s| s.key.clone()),
        );
        let mut changes: Vec<Change> = stale
            .iter()
            .filter_map(|k| self.remove_service_slice(k))
            .collect();
        changes.extend(
            slices
                .into_iter()
                .filter_map(|s| self.upsert_service_slice(s)),
        );
        changes
    }

    /// Makes the policies of these kinds exactly `policies`. The policies the legacy annotation
    /// stands for belong to their namespaces, not to a source: they stay.
    pub fn replace_policies(&mut self, kinds: &[PolicyKind], policies: Vec<Policy>) -> Vec<Change> {
        let stale = stale(
            self.policies
                .keys()
                .filter(|id| kinds.contains(&id.kind))
                .filter(|id| id.name != crate::model::kubernetes::LEGACY_DEFAULT_DENY_NAME)
                .cloned(),
            policies.iter().map(|p| p.id.clone()),
        );
        let mut changes: Vec<Change> = stale.iter().filter_map(|k| self.remove_policy(k)).collect();
        changes.extend(policies.into_iter().filter_map(|p| self.upsert_policy(p)));
        changes
    }
}

#[cfg(test)]
mod tests;
