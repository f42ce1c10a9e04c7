//! An index of selectors by the labels they restrict and mention, so that a changed object is
//! evaluated only against selectors that could match it (by the labels it has) or whose verdict
//! could have changed (by the labels that changed), never against every selector.

use std::collections::HashMap;
use std::hash::Hash;

use super::eval::LabelSource;
use super::expr::{
    Label, LabelKind, NAMESPACE_LABEL, NAMESPACE_PREFIX, SERVICE_ACCOUNT_LABEL,
    SERVICE_ACCOUNT_PREFIX,
};
use super::restrict::Placement;
use super::Selector;

/// Ids filed under label names and values of one label source (the object itself, its
/// namespace or its service account).
#[derive(Debug)]
struct Keyed<Id> {
    values: HashMap<String, HashMap<String, Vec<Id>>>,
    present: HashMap<String, Vec<Id>>,
    mentions: HashMap<String, Vec<Id>>,
}

impl<Id> Default for Keyed<Id> {
    fn default() -> Self {
        Self {
            values: HashMap::new(),
            present: HashMap::new(),
            mentions: HashMap::new(),
        }
    }
}

fn remove_id<K: Hash + Eq, Id: PartialEq>(map: &mut HashMap<K, Vec<Id>>, key: &K, id: &Id) {
    if let Some(ids) = map.get_mut(key) {
        if let Some(at) = ids.iter().position(|x| x == id) {
            ids.swap_remove(at);
        }
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

impl<Id: Clone + PartialEq> Keyed<Id> {
    fn lookup(&self, key: &str, value: &str, out: &mut Vec<Id>) {
        if let Some(ids) = self.values.get(key).and_then(|m| m.get(value)) {
            out.extend(ids.iter().cloned());
        }
        if let Some(ids) = self.present.get(key) {
            out.extend(ids.iter().cloned());
        }
    }
}

/// Selectors (by id) indexed for candidate lookups. The same id may be filed once.
#[derive(Debug)]
pub struct SelectorIndex<Id> {
    own: Keyed<Id>,
    namespace: Keyed<Id>,
    service_account: Keyed<Id>,
    everywhere: Vec<Id>,
    len: usize,
}

impl<Id> Default for SelectorIndex<Id> {
    fn default() -> Self {
        Self {
            own: Keyed::default(),
            namespace: Keyed::default(),
            service_account: Keyed::default(),
            everywhere: Vec::new(),
            len: 0,
        }
    }
}

impl<Id: Clone + Eq + Hash + Ord> SelectorIndex<Id> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn keyed_mut(&mut self, label: &Label) -> (&mut Keyed<Id>, String) {
        match label.kind() {
            LabelKind::FromNamespace => (&mut self.namespace, label.parent_key().to_string()),
            LabelKind::FromServiceAccount => {
                (&mut self.service_account, label.parent_key().to_string())
            }
            _ => (&mut self.own, label.name().to_string()),
        }
    }

    fn mentioned(selector: &Selector) -> Vec<Label> {
        let mut labels = Vec::new();
        selector.expr().labels(&mut labels);
        labels.sort();
        labels.dedup();
        labels
    }

    /// Files `id` under the selector's placement and the labels it mentions.
    pub fn insert(&mut self, id: Id, selector: &Selector) {
        self.len += 1;
        match selector.placement() {
            Placement::Nowhere => {}
            Placement::Everywhere => self.everywhere.push(id.clone()),
            Placement::Present(label) => {
                let (keyed, key) = self.keyed_mut(&label);
                keyed.present.entry(key).or_default().push(id.clone());
            }
            Placement::Value { label, values } => {
                let (keyed, key) = self.keyed_mut(&label);
                let by_value = keyed.values.entry(key).or_default();
                for value in values {
                    by_value.entry(value).or_default().push(id.clone());
                }
            }
        }
        for label in Self::mentioned(selector) {
            let (keyed, key) = self.keyed_mut(&label);
            keyed.mentions.entry(key).or_default().push(id.clone());
        }
    }

    /// Removes `id`, which was inserted with this same selector.
    pub fn remove(&mut self, id: &Id, selector: &Selector) {
        self.len = self.len.saturating_sub(1);
        match selector.placement() {
            Placement::Nowhere => {}
            Placement::Everywhere => {
                if let Some(at) = self.everywhere.iter().position(|x| x == id) {
                    self.everywhere.swap_remove(at);
                }
            }
            Placement::Present(label) => {
                let (keyed, key) = self.keyed_mut(&label);
                remove_id(&mut keyed.present, &key, id);
            }
            Placement::Value { label, values } => {
                let (keyed, key) = self.keyed_mut(&label);
                if let Some(by_value) = keyed.values.get_mut(&key) {
                    for value in values {
                        remove_id(by_value, &value, id);
                    }
                    if by_value.is_empty() {
                        keyed.values.remove(&key);
                    }
                }
            }
        }
        for label in Self::mentioned(selector) {
            let (keyed, key) = self.keyed_mut(&label);
            remove_id(&mut keyed.mentions, &key, id);
        }
    }

    /// Every selector that could match `source`: a superset, to be evaluated. Sorted, without
    /// duplicates.
    pub fn candidates<S: LabelSource + ?Sized>(&self, source: &S, out: &mut Vec<Id>) {
        let start = out.len();
        out.extend(self.everywhere.iter().cloned());
        source.for_each_own(&mut |key, value| {
            self.own.lookup(key, value, out);
            // An own `pcns.x` label stands in for the namespace's `x`.
            if let Some(parent) = key.strip_prefix(NAMESPACE_PREFIX) {
                self.namespace.lookup(parent, value, out);
            } else if let Some(parent) = key.strip_prefix(SERVICE_ACCOUNT_PREFIX) {
                self.service_account.lookup(parent, value, out);
            }
        });
        if let Some(ns) = source.namespace() {
            self.own.lookup(NAMESPACE_LABEL, ns, out);
        }
        if let Some(sa) = source.service_account() {
            self.own.lookup(SERVICE_ACCOUNT_LABEL, sa, out);
        }
        source.for_each_namespace_label(&mut |key, value| self.namespace.lookup(key, value, out));
        source.for_each_service_account_label(&mut |key, value| {
            self.service_account.lookup(key, value, out)
        });
        if start == 0 {
            out.sort_unstable();
            out.dedup();
        } else {
            let mut found = out.split_off(start);
            found.sort_unstable();
            found.dedup();
            out.append(&mut found);
        }
    }

    /// Selectors that read the object's own label `key` (directly, or as `pcns.`/`pcsa.`).
    pub fn mentioning_own(&self, key: &str, out: &mut Vec<Id>) {
        if let Some(ids) = self.own.mentions.get(key) {
            out.extend(ids.iter().cloned());
        }
        if let Some(parent) = key.strip_prefix(NAMESPACE_PREFIX) {
            self.mentioning_namespace_label(parent, out);
        } else if let Some(parent) = key.strip_prefix(SERVICE_ACCOUNT_PREFIX) {
            self.mentioning_service_account_label(parent, out);
        }
    }

    /// Selectors that read the namespace label `key` (as `pcns.key`).
    pub fn mentioning_namespace_label(&self, key: &str, out: &mut Vec<Id>) {
        if let Some(ids) = self.namespace.mentions.get(key) {
            out.extend(ids.iter().cloned());
        }
    }

    pub fn mentioning_service_account_label(&self, key: &str, out: &mut Vec<Id>) {
        if let Some(ids) = self.service_account.mentions.get(key) {
            out.extend(ids.iter().cloned());
        }
    }
}
