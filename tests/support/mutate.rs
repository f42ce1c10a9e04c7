//! Random updates to a cluster, planned as object updates that run on both the plain
//! [`Cluster`] and the `ClusterIndex`, returning the `Change` the index reports.

use std::net::IpAddr;

use palisade::index::{Change, ClusterIndex};
use palisade::model::kubernetes::KubernetesPolicy as Policy;
use palisade::model::{Enforcement, Namespace, NamespaceDenials, ObjectKey, Pod, PolicyId};
use palisade::selector::Labels;
use proptest::prelude::*;
use proptest::sample::Index;

use super::cluster::{describe_policy, labels_text, Cluster};
use super::gen::{self, PodGen, PolicyBody, NAMESPACES};

#[derive(Debug, Clone)]
pub enum Mutation {
    PodLabels {
        pod: Index,
        labels: Labels,
    },
    PodAdd {
        namespace: Index,
        pod: PodGen,
        v4: Index,
        v6: Index,
    },
    PodDelete {
        pod: Index,
    },
    /// New IPv4 address; IPv6: `None` drops it, `Some` takes a new one.
    PodIps {
        pod: Index,
        v4: Index,
        v6: Option<Index>,
    },
    NamespaceLabels {
        namespace: Index,
        labels: Labels,
    },
    NamespaceDenyToggle {
        namespace: Index,
    },
    /// Sets the namespace's palisade.io/enforcement and palisade.io/log-denied annotations.
    NamespaceDenials {
        namespace: Index,
        denials: NamespaceDenials,
    },
    /// Removes the Namespace object if there is one, else creates it with these labels.
    NamespaceObjectToggle {
        namespace: Index,
        labels: Labels,
    },
    PolicyAdd {
        namespace: Index,
        body: PolicyBody,
    },
    PolicyUpdate {
        policy: Index,
        body: PolicyBody,
    },
    PolicyDelete {
        policy: Index,
    },
    /// Every pod of a namespace goes (workloads scaled to zero, jobs finished).
    NamespaceEmptied {
        namespace: Index,
    },
    /// What deleting a namespace does: its pods, policies and object go, one change each.
    /// `one_by_one`: the compiler sees each change in its own `apply` (else all in one).
    NamespaceDelete {
        namespace: Index,
        one_by_one: bool,
    },
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    // Weighted toward what touches the most compiler state: pods coming and going, policies
    // bringing in sets, namespaces being emptied.
    prop_oneof![
        2 => (any::<Index>(), gen::labels(gen::POD_LABELS, 0, 2))
            .prop_map(|(pod, labels)| Mutation::PodLabels { pod, labels }),
        3 => (
            any::<Index>(),
            gen::pod_gen(),
            any::<Index>(),
            any::<Index>()
        )
            .prop_map(|(namespace, pod, v4, v6)| Mutation::PodAdd {
                namespace,
                pod,
                v4,
                v6
            }),
        2 => any::<Index>().prop_map(|pod| Mutation::PodDelete { pod }),
        2 => (
            any::<Index>(),
            any::<Index>(),
            prop::option::of(any::<Index>())
        )
            .prop_map(|(pod, v4, v6)| Mutation::PodIps { pod, v4, v6 }),
        2 => (any::<Index>(), gen::labels(gen::NAMESPACE_LABELS, 0, 2))
            .prop_map(|(namespace, labels)| Mutation::NamespaceLabels { namespace, labels }),
        1 => any::<Index>().prop_map(|namespace| Mutation::NamespaceDenyToggle { namespace }),
        1 => (
            any::<Index>(),
            proptest::option::of(prop_oneof![Just(Enforcement::Enforce), Just(Enforcement::Audit)]),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(namespace, enforcement, log_denied)| Mutation::NamespaceDenials {
                namespace,
                denials: NamespaceDenials {
                    enforcement,
                    log_denied
                },
            }),
        2 => (any::<Index>(), gen::labels(gen::NAMESPACE_LABELS, 0, 2))
            .prop_map(|(namespace, labels)| Mutation::NamespaceObjectToggle { namespace, labels }),
        4 => (any::<Index>(), gen::policy_body())
            .prop_map(|(namespace, body)| Mutation::PolicyAdd { namespace, body }),
        3 => (any::<Index>(), gen::policy_body())
            .prop_map(|(policy, body)| Mutation::PolicyUpdate { policy, body }),
        1 => any::<Index>().prop_map(|policy| Mutation::PolicyDelete { policy }),
        1 => any::<Index>().prop_map(|namespace| Mutation::NamespaceEmptied { namespace }),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(namespace, one_by_one)| {
            Mutation::NamespaceDelete {
                namespace,
                one_by_one,
            }
        }),
    ]
}

fn free_address(cluster: &Cluster, pool: Vec<IpAddr>, pick: &Index) -> Option<IpAddr> {
    let used = cluster.used_addresses();
    let free: Vec<IpAddr> = pool.into_iter().filter(|ip| !used.contains(ip)).collect();
    (!free.is_empty()).then(|| free[pick.index(free.len())])
}

fn nth_pod(cluster: &Cluster, pick: &Index) -> Option<Pod> {
    let n = cluster.pods.len();
    (n > 0).then(|| cluster.pods.values().nth(pick.index(n)).cloned().unwrap())
}

fn nth_policy(cluster: &Cluster, pick: &Index) -> Option<ObjectKey> {
    let n = cluster.policies.len();
    (n > 0).then(|| cluster.policies.keys().nth(pick.index(n)).cloned().unwrap())
}

/// One update of one object.
#[derive(Debug, Clone)]
pub enum Op {
    UpsertPod(Pod),
    RemovePod(ObjectKey),
    UpsertNamespace(Namespace),
    RemoveNamespace(String),
    UpsertPolicy(Policy),
    RemovePolicy(ObjectKey),
}

/// What `mutation` does to the cluster as it is now, as updates to run in order, each with a
/// description for failure reports. Empty when there is nothing to apply it to.
pub fn plan(cluster: &Cluster, mutation: &Mutation, step: usize) -> Vec<(String, Op)> {
    let namespace_name = |pick: &Index| NAMESPACES[pick.index(NAMESPACES.len())];
    match mutation {
        Mutation::PodLabels { pod, labels } => nth_pod(cluster, pod)
            .map(|mut pod| {
                let text = format!("pod {} labels -> {}", pod.key, labels_text(labels));
                pod.labels = labels.clone();
                (text, Op::UpsertPod(pod))
            })
            .into_iter()
            .collect(),
        Mutation::PodAdd {
            namespace,
            pod,
            v4,
            v6,
        } => {
            let Some(v4) = free_address(cluster, gen::v4_pool(), v4) else {
                return Vec::new();
            };
            let v6 = free_address(cluster, gen::v6_pool(), v6);
            let pod = pod.build(namespace_name(namespace), &format!("new{step}"), v4, v6);
            let text = format!(
                "add pod {} on {} ips {:?} labels {} ports {:?}",
                pod.key,
                pod.node.as_deref().unwrap_or("-"),
                pod.ips,
                labels_text(&pod.labels),
                pod.named_ports
            );
            vec![(text, Op::UpsertPod(pod))]
        }
        Mutation::PodDelete { pod } => nth_pod(cluster, pod)
            .map(|pod| (format!("delete pod {}", pod.key), Op::RemovePod(pod.key)))
            .into_iter()
            .collect(),
        Mutation::PodIps { pod, v4, v6 } => {
            let Some(mut pod) = nth_pod(cluster, pod) else {
                return Vec::new();
            };
            let Some(new_v4) = free_address(cluster, gen::v4_pool(), v4) else {
                return Vec::new();
            };
            let new_v6 = match v6 {
                None => None,
                Some(pick) => match free_address(cluster, gen::v6_pool(), pick) {
                    Some(ip) => Some(ip),
                    None => return Vec::new(),
                },
            };
            let text = format!(
                "pod {} ips {:?} -> {:?}",
                pod.key,
                pod.ips,
                [Some(new_v4), new_v6].iter().flatten().collect::<Vec<_>>()
            );
            pod.ips = std::iter::once(new_v4).chain(new_v6).collect();
            vec![(text, Op::UpsertPod(pod))]
        }
        Mutation::NamespaceLabels { namespace, labels } => {
            let name = namespace_name(namespace);
            let Some(old) = cluster.namespaces.get(name) else {
                return Vec::new();
            };
            let ns = gen::namespace_object(name, labels, old.legacy_default_deny);
            let text = format!("namespace {name} labels -> {}", labels_text(&ns.labels));
            vec![(text, Op::UpsertNamespace(ns))]
        }
        Mutation::NamespaceDenyToggle { namespace } => {
            let name = namespace_name(namespace);
            let ns = match cluster.namespaces.get(name) {
                Some(old) => Namespace {
                    legacy_default_deny: !old.legacy_default_deny,
                    ..old.clone()
                },
                None => gen::namespace_object(name, &Labels::new(), true),
            };
            let text = format!(
                "namespace {name} legacy DefaultDeny -> {}",
                ns.legacy_default_deny
            );
            vec![(text, Op::UpsertNamespace(ns))]
        }
        Mutation::NamespaceDenials { namespace, denials } => {
            let name = namespace_name(namespace);
            let ns = Namespace {
                denials: *denials,
                ..cluster
                    .namespaces
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| gen::namespace_object(name, &Labels::new(), false))
            };
            let text = format!("namespace {name} denials -> {denials:?}");
            vec![(text, Op::UpsertNamespace(ns))]
        }
        Mutation::NamespaceObjectToggle { namespace, labels } => {
            let name = namespace_name(namespace);
            if cluster.namespaces.contains_key(name) {
                return vec![(
                    format!("delete Namespace object {name}"),
                    Op::RemoveNamespace(name.to_string()),
                )];
            }
            let ns = gen::namespace_object(name, labels, false);
            let text = format!(
                "create Namespace object {name} labels {}",
                labels_text(&ns.labels)
            );
            vec![(text, Op::UpsertNamespace(ns))]
        }
        Mutation::PolicyAdd { namespace, body } => {
            let policy = body.instantiate(namespace_name(namespace), &format!("new{step}"));
            vec![(
                format!("add {}", describe_policy(&policy)),
                Op::UpsertPolicy(policy),
            )]
        }
        Mutation::PolicyUpdate { policy, body } => nth_policy(cluster, policy)
            .map(|key| {
                let policy = body.instantiate(&key.namespace, &key.name);
                (
                    format!("update {}", describe_policy(&policy)),
                    Op::UpsertPolicy(policy),
                )
            })
            .into_iter()
            .collect(),
        Mutation::PolicyDelete { policy } => nth_policy(cluster, policy)
            .map(|key| (format!("delete policy {key}"), Op::RemovePolicy(key)))
            .into_iter()
            .collect(),
        Mutation::NamespaceEmptied { namespace } => {
            let name = namespace_name(namespace);
            cluster
                .pods
                .keys()
                .filter(|k| k.namespace == name)
                .map(|key| {
                    (
                        format!("delete pod {key} (namespace emptied)"),
                        Op::RemovePod(key.clone()),
                    )
                })
                .collect()
        }
        Mutation::NamespaceDelete { namespace, .. } => {
            let name = namespace_name(namespace);
            let mut ops = Vec::new();
            for key in cluster.pods.keys().filter(|k| k.namespace == name) {
                ops.push((
                    format!("delete pod {key} (namespace deletion)"),
                    Op::RemovePod(key.clone()),
                ));
            }
            for key in cluster.policies.keys().filter(|k| k.namespace == name) {
                ops.push((
                    format!("delete policy {key} (namespace deletion)"),
                    Op::RemovePolicy(key.clone()),
                ));
            }
            if cluster.namespaces.contains_key(name) {
                ops.push((
                    format!("delete Namespace object {name}"),
                    Op::RemoveNamespace(name.to_string()),
                ));
            }
            ops
        }
    }
}

/// Runs one update on both views, returning the changes the index reports.
pub fn execute(cluster: &mut Cluster, index: &mut ClusterIndex, op: Op) -> Vec<Change> {
    match op {
        Op::UpsertPod(pod) => {
            cluster.add_pod(pod.clone());
            index.upsert_pod(pod).into_iter().collect()
        }
        Op::RemovePod(key) => {
            cluster.pods.remove(&key);
            index.remove_pod(&key).into_iter().collect()
        }
        Op::UpsertNamespace(ns) => {
            cluster.add_namespace(ns.clone());
            index.upsert_namespace(ns)
        }
        Op::RemoveNamespace(name) => {
            cluster.namespaces.remove(&name);
            index.remove_namespace(&name)
        }
        Op::UpsertPolicy(policy) => {
            cluster.add_policy(policy.clone());
            index
                .upsert_policy(policy.to_policy())
                .into_iter()
                .collect()
        }
        Op::RemovePolicy(key) => {
            cluster.policies.remove(&key);
            index
                .remove_policy(&PolicyId::kubernetes(&key))
                .into_iter()
                .collect()
        }
    }
}
