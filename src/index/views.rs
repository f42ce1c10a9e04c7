//! Pods and network sets as Calico's selectors see them: own labels, the labels Calico derives,
//! and the labels inherited from the namespace (`pcns.`) and the service account (`pcsa.`).

use super::ClusterIndex;
use crate::model::{Namespace, NetworkSet, Pod, ServiceAccount, NAMESPACE_NAME_LABEL};
use crate::selector::{LabelSource, LabelText, PROFILE_NAME_LABEL, SERVICE_ACCOUNT_LABEL};

/// Calico sets `projectcalico.org/serviceaccount` only for names shorter than 63 characters.
const MAX_SERVICE_ACCOUNT_LABEL: usize = 62;

/// The labels of a namespace: those of its object, or for a namespace with no object (yet)
/// only its name label; with `projectcalico.org/name` either way.
fn namespace_label<'a>(name: &'a str, object: Option<&'a Namespace>, key: &str) -> Option<&'a str> {
    if key == PROFILE_NAME_LABEL {
        return Some(name);
    }
    match object {
        Some(ns) => ns.labels.get(key).map(LabelText::as_str),
        None => (key == NAMESPACE_NAME_LABEL).then_some(name),
    }
}

fn for_each_namespace_label(name: &str, object: Option<&Namespace>, f: &mut dyn FnMut(&str, &str)) {
    match object {
        Some(ns) => ns.labels.iter().for_each(|(k, v)| f(k, v)),
        None => f(NAMESPACE_NAME_LABEL, name),
    }
    f(PROFILE_NAME_LABEL, name);
}

/// A pod's labels as selectors see them. The namespace and service account are looked up only
/// when a selector reads an inherited label: most selectors never do.
pub struct PodView<'a> {
    pod: &'a Pod,
    index: &'a ClusterIndex,
}

impl<'a> PodView<'a> {
    pub fn new(pod: &'a Pod, index: &'a ClusterIndex) -> Self {
        Self { pod, index }
    }

    fn namespace_object(&self) -> Option<&'a Namespace> {
        self.index
            .namespace(&self.pod.key.namespace)
            .map(|ns| ns.as_ref())
    }

    fn account(&self) -> Option<&'a ServiceAccount> {
        let name = self.pod.service_account.as_deref()?;
        self.index
            .service_account(&self.pod.key.namespace, name)
            .map(|sa| sa.as_ref())
    }
}

impl LabelSource for PodView<'_> {
    fn own(&self, key: &str) -> Option<&str> {
        self.pod.labels.get(key).map(LabelText::as_str)
    }

    fn namespace(&self) -> Option<&str> {
        Some(&self.pod.key.namespace)
    }

    fn is_workload(&self) -> bool {
        true
    }

    fn service_account(&self) -> Option<&str> {
        self.pod
            .service_account
            .as_deref()
            .filter(|sa| sa.len() <= MAX_SERVICE_ACCOUNT_LABEL)
    }

    fn namespace_label(&self, key: &str) -> Option<&str> {
        namespace_label(&self.pod.key.namespace, self.namespace_object(), key)
    }

    fn service_account_label(&self, key: &str) -> Option<&str> {
        let name = self.pod.service_account.as_deref()?;
        if key == PROFILE_NAME_LABEL {
            return Some(name);
        }
        self.account()?.labels.get(key).map(LabelText::as_str)
    }

    fn for_each_own(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in &self.pod.labels {
            // The derived label replaces a pod label of the same name.
            if k != SERVICE_ACCOUNT_LABEL || self.service_account().is_none() {
                f(k, v);
            }
        }
    }

    fn for_each_namespace_label(&self, f: &mut dyn FnMut(&str, &str)) {
        for_each_namespace_label(&self.pod.key.namespace, self.namespace_object(), f);
    }

    fn for_each_service_account_label(&self, f: &mut dyn FnMut(&str, &str)) {
        let Some(name) = self.pod.service_account.as_deref() else {
            return;
        };
        if let Some(account) = self.account() {
            account.labels.iter().for_each(|(k, v)| f(k, v));
        }
        f(PROFILE_NAME_LABEL, name);
    }
}

/// What every pod of a namespace has in common, for the terms of a selector that read only
/// the namespace (its name, its labels, the orchestrator): a pod with no labels of its own.
pub struct NamespaceView<'a> {
    name: &'a str,
    object: Option<&'a Namespace>,
}

impl<'a> NamespaceView<'a> {
    pub fn new(name: &'a str, object: Option<&'a Namespace>) -> Self {
        Self { name, object }
    }
}

impl LabelSource for NamespaceView<'_> {
    fn own(&self, _key: &str) -> Option<&str> {
        None
    }

    fn namespace(&self) -> Option<&str> {
        Some(self.name)
    }

    fn is_workload(&self) -> bool {
        true
    }

    fn namespace_label(&self, key: &str) -> Option<&str> {
        namespace_label(self.name, self.object, key)
    }

    fn for_each_own(&self, _f: &mut dyn FnMut(&str, &str)) {}

    fn for_each_namespace_label(&self, f: &mut dyn FnMut(&str, &str)) {
        for_each_namespace_label(self.name, self.object, f);
    }
}

/// A NetworkSet has its own labels and, namespaced, its namespace's; a GlobalNetworkSet only
/// its own.
pub struct NetworkSetView<'a> {
    set: &'a NetworkSet,
    namespace: Option<&'a Namespace>,
}

impl<'a> NetworkSetView<'a> {
    pub fn new(set: &'a NetworkSet, namespace: Option<&'a Namespace>) -> Self {
        Self { set, namespace }
    }
}

impl LabelSource for NetworkSetView<'_> {
    fn own(&self, key: &str) -> Option<&str> {
        self.set.labels.get(key).map(LabelText::as_str)
    }

    fn namespace(&self) -> Option<&str> {
        self.set.key.namespace.as_deref()
    }

    fn namespace_label(&self, key: &str) -> Option<&str> {
        let name = self.set.key.namespace.as_deref()?;
        namespace_label(name, self.namespace, key)
    }

    fn for_each_own(&self, f: &mut dyn FnMut(&str, &str)) {
        self.set.labels.iter().for_each(|(k, v)| f(k, v));
    }

    fn for_each_namespace_label(&self, f: &mut dyn FnMut(&str, &str)) {
        if let Some(name) = self.set.key.namespace.as_deref() {
            for_each_namespace_label(name, self.namespace, f);
        }
    }
}
