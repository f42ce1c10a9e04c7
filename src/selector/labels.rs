//! `Labels`: an object's labels as one sorted, exactly sized, shareable slice.
//!
//! Every pod carries a handful of labels and the agent holds every pod of the cluster, so the
//! container matters: a `BTreeMap` spends a whole node (eleven key and value slots, about
//! 540 bytes) on five labels, where a slice of five pairs takes 240, and the pods of one
//! ReplicaSet or DaemonSet carry identical labels, which the index stores once (clones share
//! the slice). Labels are read far more often than written (a label change replaces the pod),
//! so lookups are binary searches and an insert rebuilds the slice.

use std::fmt;
use std::sync::Arc;

use super::LabelText;

/// Labels of a pod, namespace, service account or network set, sorted by key, keys unique.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Arc<[(LabelText, LabelText)]>);

impl Default for Labels {
    fn default() -> Self {
        Self(Arc::from([]))
    }
}

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// No other `Labels` shares this slice.
    pub fn is_unshared(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&LabelText> {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key` to `value`, returning the value it replaces.
    pub fn insert(&mut self, key: LabelText, value: LabelText) -> Option<LabelText> {
        match self.position(&key) {
            Ok(i) => {
                let mut pairs = self.0.to_vec();
                let old = std::mem::replace(&mut pairs[i].1, value);
                self.0 = pairs.into();
                Some(old)
            }
            Err(i) => {
                let mut pairs = self.0.to_vec();
                pairs.insert(i, (key, value));
                self.0 = pairs.into();
                None
            }
        }
    }

    /// The pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&LabelText, &LabelText)> + '_ {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &LabelText> + '_ {
        self.0.iter().map(|(k, _)| k)
    }
}

/// Later pairs win over earlier ones with the same key, as they do when a map is built.
impl FromIterator<(LabelText, LabelText)> for Labels {
    fn from_iter<I: IntoIterator<Item = (LabelText, LabelText)>>(pairs: I) -> Self {
        let mut pairs: Vec<(LabelText, LabelText)> = pairs.into_iter().collect();
        // Stable, so among equal keys the last one given is last; keep that one.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(LabelText, LabelText)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match unique.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => unique.push(pair),
            }
        }
        Self(unique.into())
    }
}

impl<const N: usize> From<[(LabelText, LabelText); N]> for Labels {
    fn from(pairs: [(LabelText, LabelText); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl Extend<(LabelText, LabelText)> for Labels {
    fn extend<I: IntoIterator<Item = (LabelText, LabelText)>>(&mut self, pairs: I) {
        let current = self.0.to_vec();
        *self = current.into_iter().chain(pairs).collect();
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a LabelText, &'a LabelText);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (LabelText, LabelText)>,
        fn(&'a (LabelText, LabelText)) -> (&'a LabelText, &'a LabelText),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// As a map, the way `metadata.labels` is written.
impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<LabelText, LabelText>::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_sorted_and_the_last_of_a_key_wins() {
        let labels = crate::selector::labels_of([("b", "1"), ("a", "2"), ("b", "3"), ("c", "4")]);
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(pairs, [("a", "2"), ("b", "3"), ("c", "4")]);
        assert_eq!(labels.get("b").map(LabelText::as_str), Some("3"));
        assert_eq!(labels.get("d"), None);
    }

    #[test]
    fn insert_keeps_the_order_and_replaces_a_value() {
        let mut labels = Labels::from([("b".into(), "1".into())]);
        assert_eq!(labels.insert("a".into(), "0".into()), None);
        assert_eq!(labels.insert("c".into(), "2".into()), None);
        assert_eq!(labels.insert("b".into(), "9".into()).as_deref(), Some("1"));
        let keys: Vec<&str> = labels.keys().map(LabelText::as_str).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(labels.get("b").map(LabelText::as_str), Some("9"));
        labels.extend([("a".into(), "x".into()), ("d".into(), "y".into())]);
        assert_eq!(
            format!("{labels:?}"),
            r#"{"a": "x", "b": "9", "c": "2", "d": "y"}"#
        );
    }
}
