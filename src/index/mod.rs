//! `ClusterIndex`: the cluster state Palisade enforces, with the lookups the compiler needs.
//!
//! Sources feed it (`upsert_*`, `remove_*`, `replace_*`). Every update that changes something
//! returns a [`Change`] holding the object before and after, so the compiler can update only what
//! the change touches.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{self, Namespace, ObjectKey, Pod, Policy};
use crate::selector::Labels;

pub type PodId = u32;

/// One update to the index, as the object was before and is after. `None` means absent.
#[derive(Debug, Clone)]
pub enum Change {
    Pod {
        before: Option<Arc<Pod>>,
        after: Option<Arc<Pod>>,
    },
    Namespace {
        before: Option<Arc<Namespace>>,
        after: Option<Arc<Namespace>>,
    },
    Policy {
        before: Option<Arc<Policy>>,
        after: Option<Arc<Policy>>,
    },
}

#[derive(Debug, Default)]
pub struct ClusterIndex {
    pods: Vec<Option<Arc<Pod>>>,
    free_ids: Vec<PodId>,
    pod_ids: HashMap<ObjectKey, PodId>,
    pods_by_namespace: HashMap<String, HashSet<PodId>>,
    pods_by_node: HashMap<String, HashSet<PodId>>,
    pods_by_ip: HashMap<IpAddr, Vec<PodId>>,
    pods_by_port_name: HashMap<String, HashSet<PodId>>,
    namespaces: BTreeMap<String, Arc<Namespace>>,
    policies: BTreeMap<ObjectKey, Arc<Policy>>,
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

    fn pod_by_id(&self, id: PodId) -> Option<&Arc<Pod>> {
        self.pods.get(id as usize).and_then(Option::as_ref)
    }

    fn pods_of<'a>(
        &'a self,
        ids: Option<&'a HashSet<PodId>>,
    ) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
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
        self.pods_by_namespace.keys().map(String::as_str)
    }

    pub fn namespace(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.namespaces.values()
    }

    /// The labels namespace selectors see: those of the Namespace object, or for a namespace
    /// not (yet) known, only its name label.
    pub fn namespace_labels(&self, name: &str) -> Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(ns) => Cow::Borrowed(&ns.labels),
            None => Cow::Owned(model::namespace_name_labels(name)),
        }
    }

    pub fn namespace_default_deny(&self, name: &str) -> bool {
        self.namespaces
            .get(name)
            .is_some_and(|ns| ns.legacy_default_deny)
    }

    pub fn policy(&self, key: &ObjectKey) -> Option<&Arc<Policy>> {
        self.policies.get(key)
    }

    pub fn policies(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.values()
    }

    /// The policies of one namespace, in name order.
    pub fn policies_in_namespace<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = &'a Arc<Policy>> + 'a {
        let start = ObjectKey::new(namespace, "");
        let namespace = namespace.to_string();
        self.policies
            .range(start..)
            .take_while(move |(key, _)| key.namespace == namespace)
            .map(|(_, policy)| policy)
    }

    pub fn upsert_pod(&mut self, pod: Pod) -> Option<Change> {
        let pod = Arc::new(pod);
        if let Some(&id) = self.pod_ids.get(&pod.key) {
            let before = self.pod_by_id(id).cloned();
            if before.as_deref() == Some(&*pod) {
                return None;
            }
            if let Some(before) = &before {
                self.unlink_pod(id, before);
            }
            self.link_pod(id, &pod);
            self.pods[id as usize] = Some(Arc::clone(&pod));
            return Some(Change::Pod {
                before,
                after: Some(pod),
            });
        }
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
            before: None,
            after: Some(pod),
        })
    }

    pub fn remove_pod(&mut self, key: &ObjectKey) -> Option<Change> {
        let id = self.pod_ids.remove(key)?;
        let before = self.pods.get_mut(id as usize).and_then(Option::take)?;
        self.unlink_pod(id, &before);
        self.free_ids.push(id);
        Some(Change::Pod {
            before: Some(before),
            after: None,
        })
    }

    fn link_pod(&mut self, id: PodId, pod: &Pod) {
        self.pods_by_namespace
            .entry(pod.key.namespace.clone())
            .or_default()
            .insert(id);
        if let Some(node) = &pod.node {
            self.pods_by_node
                .entry(node.clone())
                .or_default()
                .insert(id);
        }
        for ip in &pod.ips {
            self.pods_by_ip.entry(*ip).or_default().push(id);
        }
        for port in &pod.named_ports {
            self.pods_by_port_name
                .entry(port.name.clone())
                .or_default()
                .insert(id);
        }
    }

    fn unlink_pod(&mut self, id: PodId, pod: &Pod) {
        fn remove_from<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, HashSet<PodId>>,
            key: &K,
            id: PodId,
        ) {
            if let Some(ids) = map.get_mut(key) {
                ids.remove(&id);
                if ids.is_empty() {
                    map.remove(key);
                }
            }
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
    }

    pub fn upsert_namespace(&mut self, namespace: Namespace) -> Option<Change> {
        let namespace = Arc::new(namespace);
        let before = self
            .namespaces
            .insert(namespace.name.clone(), Arc::clone(&namespace));
        if before.as_deref() == Some(&*namespace) {
            return None;
        }
        Some(Change::Namespace {
            before,
            after: Some(namespace),
        })
    }

    pub fn remove_namespace(&mut self, name: &str) -> Option<Change> {
        let before = self.namespaces.remove(name)?;
        Some(Change::Namespace {
            before: Some(before),
            after: None,
        })
    }

    pub fn upsert_policy(&mut self, policy: Policy) -> Option<Change> {
        let policy = Arc::new(policy);
        let before = self
            .policies
            .insert(policy.key.clone(), Arc::clone(&policy));
        if before.as_deref() == Some(&*policy) {
            return None;
        }
        Some(Change::Policy {
            before,
            after: Some(policy),
        })
    }

    pub fn remove_policy(&mut self, key: &ObjectKey) -> Option<Change> {
        let before = self.policies.remove(key)?;
        Some(Change::Policy {
            before: Some(before),
            after: None,
        })
    }

    /// Makes the pods exactly `pods` (after a re-list), returning what changed.
    pub fn replace_pods(&mut self, pods: Vec<Pod>) -> Vec<Change> {
        let keep: HashSet<ObjectKey> = pods.iter().map(|p| p.key.clone()).collect();
        let stale: Vec<ObjectKey> = self
            .pod_ids
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        let mut changes: Vec<Change> = stale.iter().filter_map(|k| self.remove_pod(k)).collect();
        changes.extend(pods.into_iter().filter_map(|p| self.upsert_pod(p)));
        changes
    }

    pub fn replace_namespaces(&mut self, namespaces: Vec<Namespace>) -> Vec<Change> {
        let keep: HashSet<String> = namespaces.iter().map(|n| n.name.clone()).collect();
        let stale: Vec<String> = self
            .namespaces
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        let mut changes: Vec<Change> = stale
            .iter()
            .filter_map(|k| self.remove_namespace(k))
            .collect();
        changes.extend(
            namespaces
                .into_iter()
                .filter_map(|n| self.upsert_namespace(n)),
        );
        changes
    }

    pub fn replace_policies(&mut self, policies: Vec<Policy>) -> Vec<Change> {
        let keep: HashSet<ObjectKey> = policies.iter().map(|p| p.key.clone()).collect();
        let stale: Vec<ObjectKey> = self
            .policies
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        let mut changes: Vec<Change> = stale.iter().filter_map(|k| self.remove_policy(k)).collect();
        changes.extend(policies.into_iter().filter_map(|p| self.upsert_policy(p)));
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::LabelSelector;

    fn pod(ns: &str, name: &str, node: &str, ip: &str) -> Pod {
        Pod {
            key: ObjectKey::new(ns, name),
            node: Some(node.into()),
            ips: vec![ip.parse().unwrap()],
            labels: Labels::new(),
            named_ports: vec![],
        }
    }

    #[test]
    fn pod_updates_report_before_and_after_and_keep_lookups_current() {
        let mut index = ClusterIndex::new();
        assert!(index.upsert_pod(pod("a", "p", "n1", "10.0.0.1")).is_some());
        assert!(
            index.upsert_pod(pod("a", "p", "n1", "10.0.0.1")).is_none(),
            "no-op update"
        );
        let Some(Change::Pod { before, after }) = index.upsert_pod(pod("a", "p", "n2", "10.0.0.2"))
        else {
            panic!("expected a pod change")
        };
        assert_eq!(before.unwrap().node.as_deref(), Some("n1"));
        assert_eq!(after.unwrap().node.as_deref(), Some("n2"));
        assert_eq!(index.pods_on_node("n1").count(), 0);
        assert_eq!(index.pods_on_node("n2").count(), 1);
        assert_eq!(index.pods_with_ip(&"10.0.0.1".parse().unwrap()).count(), 0);
        assert_eq!(index.pods_with_ip(&"10.0.0.2".parse().unwrap()).count(), 1);
        assert!(index.remove_pod(&ObjectKey::new("a", "p")).is_some());
        assert_eq!(index.pod_count(), 0);
        assert_eq!(index.pods_in_namespace("a").count(), 0);
    }

    #[test]
    fn policies_are_listed_per_namespace_in_name_order() {
        let mut index = ClusterIndex::new();
        for (ns, name) in [("b", "y"), ("a", "z"), ("b", "x"), ("c", "w")] {
            index.upsert_policy(Policy {
                key: ObjectKey::new(ns, name),
                pod_selector: LabelSelector::everything(),
                ingress: Some(vec![]),
                egress: None,
            });
        }
        let names: Vec<_> = index
            .policies_in_namespace("b")
            .map(|p| p.key.name.clone())
            .collect();
        assert_eq!(names, ["x", "y"]);
    }

    #[test]
    fn replace_removes_what_is_gone() {
        let mut index = ClusterIndex::new();
        index.upsert_pod(pod("a", "p", "n1", "10.0.0.1"));
        index.upsert_pod(pod("a", "q", "n1", "10.0.0.2"));
        let changes = index.replace_pods(vec![pod("a", "q", "n1", "10.0.0.2")]);
        assert_eq!(changes.len(), 1);
        assert!(index.pod(&ObjectKey::new("a", "p")).is_none());
    }
}
