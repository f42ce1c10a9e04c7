//! The incremental compiler of one node's state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use super::chains;
use super::desired::{Chain, DesiredState, SetEntry};
use super::naming;
use super::sets::SetKey;
use super::Marks;
use crate::index::{Change, ClusterIndex};
use crate::model::{Direction, Family, NamespaceScope, ObjectKey, Pod, Selection};

/// A pod of this node and the policies that apply to it, per direction.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalPod {
    ips: Vec<IpAddr>,
    /// `None`: not isolated in that direction.
    ingress: Option<Vec<ObjectKey>>,
    egress: Option<Vec<ObjectKey>>,
    isolated_by_namespace: bool,
}

impl LocalPod {
    fn policies(&self, direction: Direction) -> Option<&Vec<ObjectKey>> {
        match direction {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }

    fn families(&self) -> BTreeSet<Family> {
        self.ips.iter().map(Family::of).collect()
    }
}

type PolicyChainKey = (ObjectKey, Direction, Family);

#[derive(Debug)]
struct ActivePolicyChain {
    refs: u32,
    sets: Vec<SetKey>,
}

/// Keeps one node's [`DesiredState`] in step with a [`ClusterIndex`].
///
/// Set memberships are kept only for the sets this node's chains use. Lookups from a namespace to
/// the sets that may contain its pods make a pod change cost only the sets it can affect.
#[derive(Debug)]
pub struct NodeCompiler {
    node: String,
    marks: Marks,
    state: DesiredState,
    local: BTreeMap<ObjectKey, LocalPod>,
    policy_chains: HashMap<PolicyChainKey, ActivePolicyChain>,
    set_refs: HashMap<(SetKey, Family), u32>,
    /// Active sets over exactly one namespace, by that namespace.
    named_sets: HashMap<String, HashSet<SetKey>>,
    /// Active sets over a namespace selector, with the namespaces it matches now.
    selector_sets: HashMap<SetKey, HashSet<String>>,
    selector_sets_by_namespace: HashMap<String, HashSet<SetKey>>,
    /// Sets and chains changed since the last [`NodeCompiler::take_dirty`].
    dirty: BTreeSet<(Family, String)>,
    /// How many rules each local pod has in `PAL-FORWARD`, (egress, ingress), per family
    /// (IPv4 first): where to splice when one pod changes.
    forward_counts: [BTreeMap<ObjectKey, (usize, usize)>; 2],
    /// Namespaces whose selector matches are in `selector_sets`; a pod in any other namespace
    /// has that namespace evaluated first.
    evaluated_namespaces: HashSet<String>,
}

impl NodeCompiler {
    pub fn new(index: &ClusterIndex, node: &str, marks: Marks) -> Self {
        let mut compiler = Self {
            node: node.to_string(),
            marks,
            state: DesiredState::default(),
            local: BTreeMap::new(),
            policy_chains: HashMap::new(),
            set_refs: HashMap::new(),
            named_sets: HashMap::new(),
            selector_sets: HashMap::new(),
            selector_sets_by_namespace: HashMap::new(),
            forward_counts: [BTreeMap::new(), BTreeMap::new()],
            dirty: BTreeSet::new(),
            evaluated_namespaces: index
                .populated_namespaces()
                .map(str::to_string)
                .chain(index.namespaces().map(|ns| ns.name.clone()))
                .collect(),
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
            .filter(|p| p.policies(direction).is_some())
            .count()
    }

    /// Brings the state up to date with `changes`, which `index` already reflects.
    pub fn apply(&mut self, index: &ClusterIndex, changes: &[Change]) {
        // Pods first, against the namespace matches as they were; namespace changes then
        // re-evaluate whole namespaces against the current pods; policies last, since the sets
        // they bring in are built from the current state.
        let mut dirty_local: BTreeSet<ObjectKey> = BTreeSet::new();
        for change in changes {
            if let Change::Pod { before, after } = change {
                let (Some(pod), other) =
                    (after.as_deref().or(before.as_deref()), before.as_deref())
                else {
                    continue;
                };
                self.update_pod_membership(index, other, after.as_deref());
                let on_node = |p: Option<&Pod>| {
                    p.is_some_and(|p| p.node.as_deref() == Some(self.node.as_str()))
                };
                if on_node(before.as_deref()) || on_node(after.as_deref()) {
                    dirty_local.insert(pod.key.clone());
                }
            }
        }
        for change in changes {
            if let Change::Namespace { before, after } = change {
                let Some(name) = after.as_ref().or(before.as_ref()).map(|ns| ns.name.clone())
                else {
                    continue;
                };
                self.update_namespace_matches(index, &name);
                let deny = |ns: &Option<std::sync::Arc<crate::model::Namespace>>| {
                    ns.as_ref().is_some_and(|ns| ns.legacy_default_deny)
                };
                if deny(before) != deny(after) {
                    dirty_local.extend(self.local_pods_in(&name));
                }
            }
        }
        for change in changes {
            if let Change::Policy { before, after } = change {
                let Some(key) = after.as_ref().or(before.as_ref()).map(|p| p.key.clone()) else {
                    continue;
                };
                self.refresh_policy_chains(index, &key);
                dirty_local.extend(self.local_pods_in(&key.namespace));
            }
        }
        for key in dirty_local {
            self.refresh_local_pod(index, &key);
        }
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
            .filter(|pod| pod.node.as_deref() == Some(self.node.as_str()))
            .map(|pod| self.local_pod(index, pod));
        let old = self.local.get(key).cloned();
        if old == new {
            return;
        }
        // Take the new references before dropping the old so shared sets are not rebuilt.
        if let Some(new) = &new {
            for family in new.families() {
                for direction in Direction::ALL {
                    for policy in new.policies(direction).into_iter().flatten() {
                        self.acquire_policy_chain(index, (policy.clone(), direction, family));
                    }
                }
            }
        }
        if let Some(old) = &old {
            for family in old.families() {
                for direction in Direction::ALL {
                    for policy in old.policies(direction).into_iter().flatten() {
                        self.release_policy_chain(&(policy.clone(), direction, family));
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
                        if let Some(policies) = pod.policies(direction) {
                            let rules = chains::pod_chain(
                                key,
                                direction,
                                policies,
                                pod.isolated_by_namespace,
                                &self.marks,
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
        let mut ingress = Vec::new();
        let mut egress = Vec::new();
        for policy in index.policies_in_namespace(&pod.key.namespace) {
            if !policy.pod_selector.matches(&pod.labels) {
                continue;
            }
            if policy.ingress.is_some() {
                ingress.push(policy.key.clone());
            }
            if policy.egress.is_some() {
                egress.push(policy.key.clone());
            }
        }
        let isolated_by_namespace = index.namespace_default_deny(&pod.key.namespace);
        LocalPod {
            ips: pod.ips.clone(),
            ingress: (isolated_by_namespace || !ingress.is_empty()).then_some(ingress),
            egress: (!egress.is_empty()).then_some(egress),
            isolated_by_namespace,
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
            let (egress_before, ingress_before) = counts
                .range(..key.clone())
                .fold((0, 0), |(e, i), (_, (pe, pi))| (e + pe, i + pi));
            let egress_total: usize =
                counts.values().map(|(e, _)| e).sum::<usize>() - old_egress + egress.len();
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
        for set in &sets {
            self.acquire_set(index, set.clone(), key.2);
        }
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
            let (policy, direction, family) = key;
            let name = naming::policy_chain(policy, *direction);
            self.state.family_mut(*family).chains.remove(&name);
            self.dirty.insert((*family, name));
            for set in active.sets {
                self.release_set(&set, *family);
            }
        }
    }

    /// Writes the chain into the state and returns the sets it reads.
    fn write_policy_chain(&mut self, index: &ClusterIndex, key: &PolicyChainKey) -> Vec<SetKey> {
        let (policy_key, direction, family) = key;
        let compiled = match index.policy(policy_key) {
            Some(policy) => chains::policy_chain(policy, *direction, *family, &self.marks),
            // A removed policy: its pods are about to let go of it; until then it allows nothing.
            None => chains::PolicyChain {
                rules: Vec::new(),
                sets: Vec::new(),
            },
        };
        let name = naming::policy_chain(policy_key, *direction);
        self.dirty.insert((*family, name.clone()));
        self.state.family_mut(*family).chains.insert(
            name,
            Chain {
                rules: compiled.rules,
            },
        );
        compiled.sets
    }

    fn refresh_policy_chains(&mut self, index: &ClusterIndex, policy: &ObjectKey) {
        for direction in Direction::ALL {
            for family in Family::ALL {
                let key = (policy.clone(), direction, family);
                if !self.policy_chains.contains_key(&key) {
                    continue;
                }
                let sets = self.write_policy_chain(index, &key);
                for set in &sets {
                    self.acquire_set(index, set.clone(), family);
                }
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

    fn acquire_set(&mut self, index: &ClusterIndex, key: SetKey, family: Family) {
        let refs = self.set_refs.entry((key.clone(), family)).or_insert(0);
        *refs += 1;
        if *refs > 1 {
            return;
        }
        if let Some(selection) = key.selection() {
            self.watch_selection(index, &key, selection.clone());
        }
        let set = match key.selection().map(|s| &s.namespaces) {
            Some(NamespaceScope::Named(ns)) => {
                key.build(index, family, std::iter::once(ns.as_str()))
            }
            Some(NamespaceScope::Selector(_)) => {
                let namespaces = self.selector_sets.get(&key);
                key.build(
                    index,
                    family,
                    namespaces.into_iter().flatten().map(String::as_str),
                )
            }
            None => key.build(index, family, std::iter::empty()),
        };
        let name = key.name(family);
        self.dirty.insert((family, name.clone()));
        self.state.family_mut(family).ipsets.insert(name, set);
    }

    fn release_set(&mut self, key: &SetKey, family: Family) {
        let map_key = (key.clone(), family);
        let Some(refs) = self.set_refs.get_mut(&map_key) else {
            return;
        };
        *refs -= 1;
        if *refs > 0 {
            return;
        }
        self.set_refs.remove(&map_key);
        let name = key.name(family);
        self.state.family_mut(family).ipsets.remove(&name);
        self.dirty.insert((family, name));
        let other = match family {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        };
        if !self.set_refs.contains_key(&(key.clone(), other)) {
            self.unwatch_selection(key);
        }
    }

    fn watch_selection(&mut self, index: &ClusterIndex, key: &SetKey, selection: Selection) {
        match selection.namespaces {
            NamespaceScope::Named(ns) => {
                self.named_sets.entry(ns).or_default().insert(key.clone());
            }
            NamespaceScope::Selector(selector) => {
                if self.selector_sets.contains_key(key) {
                    return;
                }
                // Every namespace this compiler has evaluated must be evaluated for the new set
                // too, even one that is empty now: a pod may return to it later.
                let populated: Vec<String> = index
                    .populated_namespaces()
                    .filter(|ns| !self.evaluated_namespaces.contains(*ns))
                    .map(str::to_string)
                    .collect();
                self.evaluated_namespaces.extend(populated);
                let mut matching: HashSet<String> = index
                    .namespaces()
                    .filter(|ns| selector.matches(&ns.labels))
                    .map(|ns| ns.name.clone())
                    .collect();
                matching.extend(
                    self.evaluated_namespaces
                        .iter()
                        .filter(|ns| index.namespace(ns).is_none())
                        .filter(|ns| selector.matches(&crate::model::namespace_name_labels(ns)))
                        .cloned(),
                );

                for ns in &matching {
                    self.selector_sets_by_namespace
                        .entry(ns.clone())
                        .or_default()
                        .insert(key.clone());
                }
                self.selector_sets.insert(key.clone(), matching);
            }
        }
    }

    fn unwatch_selection(&mut self, key: &SetKey) {
        let Some(selection) = key.selection() else {
            return;
        };
        match &selection.namespaces {
            NamespaceScope::Named(ns) => {
                if let Some(keys) = self.named_sets.get_mut(ns) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.named_sets.remove(ns);
                    }
                }
            }
            NamespaceScope::Selector(_) => {
                for ns in self.selector_sets.remove(key).into_iter().flatten() {
                    if let Some(keys) = self.selector_sets_by_namespace.get_mut(&ns) {
                        keys.remove(key);
                        if keys.is_empty() {
                            self.selector_sets_by_namespace.remove(&ns);
                        }
                    }
                }
            }
        }
    }

    /// Whether `pod` belongs in the set, by the namespace matches this compiler holds.
    fn in_selection(&self, key: &SetKey, pod: &Pod) -> bool {
        let Some(selection) = key.selection() else {
            return false;
        };
        let namespace_ok = match &selection.namespaces {
            NamespaceScope::Named(ns) => *ns == pod.key.namespace,
            NamespaceScope::Selector(_) => self
                .selector_sets
                .get(key)
                .is_some_and(|namespaces| namespaces.contains(&pod.key.namespace)),
        };
        namespace_ok && selection.pods.matches(&pod.labels)
    }

    fn sets_for_namespace(&self, namespace: &str) -> Vec<SetKey> {
        self.named_sets
            .get(namespace)
            .into_iter()
            .flatten()
            .chain(
                self.selector_sets_by_namespace
                    .get(namespace)
                    .into_iter()
                    .flatten(),
            )
            .cloned()
            .collect()
    }

    fn update_pod_membership(
        &mut self,
        index: &ClusterIndex,
        before: Option<&Pod>,
        after: Option<&Pod>,
    ) {
        let Some(namespace) = after.or(before).map(|p| p.key.namespace.clone()) else {
            return;
        };
        if !self.evaluated_namespaces.contains(&namespace) {
            self.update_namespace_matches(index, &namespace);
        }
        for key in self.sets_for_namespace(&namespace) {
            for family in Family::ALL {
                if !self.set_refs.contains_key(&(key.clone(), family)) {
                    continue;
                }
                let wanted: Vec<SetEntry> = match after {
                    Some(pod) if self.in_selection(&key, pod) => key.pod_entries(pod, family),
                    _ => Vec::new(),
                };
                // The set holds the old entries only if the old pod was in the selection.
                let stale: Vec<SetEntry> = match before {
                    Some(pod) if self.in_selection(&key, pod) => key
                        .pod_entries(pod, family)
                        .into_iter()
                        .filter(|e| !wanted.contains(e))
                        .collect(),
                    _ => Vec::new(),
                };
                if stale.is_empty() && wanted.is_empty() {
                    continue;
                }
                self.reconcile_entries(index, &key, family, stale, wanted, after.or(before));
            }
        }
    }

    /// Removes `stale` entries no other pod still contributes, and adds `wanted` ones.
    fn reconcile_entries(
        &mut self,
        index: &ClusterIndex,
        key: &SetKey,
        family: Family,
        stale: Vec<SetEntry>,
        wanted: Vec<SetEntry>,
        changed: Option<&Pod>,
    ) {
        let changed_key = changed.map(|p| &p.key);
        let still_contributed: Vec<bool> = stale
            .iter()
            .map(|entry| {
                let ip = match entry {
                    SetEntry::Ip(ip) | SetEntry::IpPort { ip, .. } => *ip,
                    SetEntry::Net { .. } => return false,
                };
                index.pods_with_ip(&ip).any(|other| {
                    Some(&other.key) != changed_key
                        && self.in_selection(key, other)
                        && key.pod_entries(other, family).contains(entry)
                })
            })
            .collect();
        let Some(set) = self
            .state
            .family_mut(family)
            .ipsets
            .get_mut(&key.name(family))
        else {
            return;
        };
        let mut changed = false;
        for (entry, kept) in stale.iter().zip(still_contributed) {
            if !kept {
                changed |= set.members.remove(entry);
            }
        }
        for entry in wanted {
            changed |= set.members.insert(entry);
        }
        if changed {
            self.dirty.insert((family, key.name(family)));
        }
    }

    fn update_namespace_matches(&mut self, index: &ClusterIndex, namespace: &str) {
        self.evaluated_namespaces.insert(namespace.to_string());
        let labels = index.namespace_labels(namespace).into_owned();
        let keys: Vec<SetKey> = self.selector_sets.keys().cloned().collect();
        for key in keys {
            let Some(NamespaceScope::Selector(selector)) = key.selection().map(|s| &s.namespaces)
            else {
                continue;
            };
            let now = selector.matches(&labels);
            let was = self
                .selector_sets
                .get(&key)
                .is_some_and(|n| n.contains(namespace));
            if now == was {
                continue;
            }
            if let Some(namespaces) = self.selector_sets.get_mut(&key) {
                if now {
                    namespaces.insert(namespace.to_string());
                } else {
                    namespaces.remove(namespace);
                }
            }
            let by_namespace = self
                .selector_sets_by_namespace
                .entry(namespace.to_string())
                .or_default();
            if now {
                by_namespace.insert(key.clone());
            } else {
                by_namespace.remove(&key);
            }
            let pods: Vec<std::sync::Arc<Pod>> =
                index.pods_in_namespace(namespace).cloned().collect();
            for family in Family::ALL {
                if !self.set_refs.contains_key(&(key.clone(), family)) {
                    continue;
                }
                for pod in &pods {
                    let entries = key.pod_entries(pod, family);
                    if now {
                        if self.in_selection(&key, pod) {
                            self.reconcile_entries(
                                index,
                                &key,
                                family,
                                Vec::new(),
                                entries,
                                Some(pod),
                            );
                        }
                    } else {
                        self.reconcile_entries(index, &key, family, entries, Vec::new(), Some(pod));
                    }
                }
            }
        }
    }
}
