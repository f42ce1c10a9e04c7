//! The pods a selector could match, from the label indexes: what a new ipset is built from
//! without testing every pod in the cluster.
//!
//! Each term names the pods that can satisfy it (an own label's value, a namespace, a namespace
//! label's value); an `&&` takes its smallest term, an `||` the union of its operands when each
//! has one. A selector with no such term (only negations, say) falls back to every pod.
//!
//! Where the buckets hold exactly the pods that match (a label's value, a namespace, and `||`s
//! of those), the candidates say so and the compiler skips evaluating them: the largest sets
//! are usually of this shape, and evaluating tens of thousands of pods would dominate a cold
//! compile.

use std::collections::HashSet;

use super::{ClusterIndex, PodId};
use crate::model::NAMESPACE_NAME_LABEL;
use crate::selector::{Expr, Label, LabelKind, PROFILE_NAME_LABEL};

/// Pod id buckets whose union holds every pod that can match.
struct Buckets<'a> {
    sets: Vec<&'a HashSet<PodId>>,
    size: usize,
    /// Whether every pod in them matches too.
    exact: bool,
}

impl<'a> Buckets<'a> {
    fn new(sets: Vec<&'a HashSet<PodId>>, exact: bool) -> Self {
        let size = sets.iter().map(|s| s.len()).sum();
        Self { sets, size, exact }
    }
}

/// The pods a selector can match, each once, by slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    pub ids: Vec<PodId>,
    /// Every candidate matches: no need to evaluate the selector on them.
    pub exact: bool,
}

impl ClusterIndex {
    /// Namespace names whose labels make `key` one of `values` (any value when `None`).
    fn namespaces_where<'a>(&'a self, key: &str, values: Option<&'a [String]>) -> Vec<&'a str> {
        let by_name = key == PROFILE_NAME_LABEL || key == NAMESPACE_NAME_LABEL;
        let mut out: Vec<&str> = Vec::new();
        match values {
            // A namespace's name labels name it, with an object or without.
            Some(values) if by_name => out.extend(values.iter().map(String::as_str)),
            None if by_name => return self.populated_namespaces().collect(),
            _ => {}
        }
        if let Some(by_value) = self.namespaces_by_label.get(key) {
            match values {
                Some(values) => {
                    for v in values {
                        out.extend(by_value.get(v).into_iter().flatten().map(String::as_str));
                    }
                }
                None => out.extend(by_value.values().flatten().map(String::as_str)),
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Namespaces holding a service account whose labels make `key` one of `values`.
    fn service_account_namespaces(&self, key: &str, values: Option<&[String]>) -> Vec<&str> {
        if key == PROFILE_NAME_LABEL {
            // Every pod's service account is named, with an object or without.
            return self.populated_namespaces().collect();
        }
        let wanted = |v: &str| values.is_none_or(|values| values.iter().any(|x| x == v));
        let mut out: Vec<&str> = self
            .service_accounts()
            .filter(|sa| sa.labels.get(key).is_some_and(|v| wanted(v)))
            .map(|sa| sa.key.namespace.as_str())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn namespace_buckets<'a>(&'a self, names: &[&str]) -> Vec<&'a HashSet<PodId>> {
        names
            .iter()
            .filter_map(|ns| self.pods_by_namespace.get(*ns))
            .collect()
    }

    fn own_buckets(&self, name: &str, values: Option<&[String]>) -> Vec<&HashSet<PodId>> {
        let Some(by_value) = self.pods_by_label.get(name) else {
            return Vec::new();
        };
        match values {
            Some(values) => values.iter().filter_map(|v| by_value.get(v)).collect(),
            None => by_value.values().collect(),
        }
    }

    /// The buckets for "label has one of `values`" (or "label is present").
    fn label_buckets(&self, label: &Label, values: Option<&[String]>) -> Option<Buckets<'_>> {
        // A value test is exact; `contains` and the like only narrow to the label's holders.
        let mut exact = true;
        let sets = match label.kind() {
            LabelKind::Plain => self.own_buckets(label.name(), values),
            LabelKind::Namespace => match values {
                Some(values) => values
                    .iter()
                    .filter_map(|ns| self.pods_by_namespace.get(ns))
                    .collect(),
                // Every pod has a namespace.
                None => return None,
            },
            LabelKind::FromNamespace => {
                let names = self.namespaces_where(label.parent_key(), values);
                let mut sets = self.namespace_buckets(&names);
                // A pod's own `pcns.x` label stands in for its namespace's, so a namespace's
                // pods all match only when no pod has one; a namespace without an object (or
                // a label) is named by its name labels only through `projectcalico.org/name`.
                exact = !self.pods_by_label.contains_key(label.name())
                    && label.parent_key() != NAMESPACE_NAME_LABEL;
                sets.extend(self.own_buckets(label.name(), values));
                sets
            }
            LabelKind::FromServiceAccount => {
                // Namespaces stand in for their service accounts' pods: a superset.
                exact = false;
                let names = self.service_account_namespaces(label.parent_key(), values);
                let mut sets = self.namespace_buckets(&names);
                sets.extend(self.own_buckets(label.name(), values));
                sets
            }
            LabelKind::ServiceAccount | LabelKind::Orchestrator => return None,
        };
        Some(Buckets::new(sets, exact))
    }

    fn buckets(&self, expr: &Expr) -> Option<Buckets<'_>> {
        match expr {
            Expr::Eq(label, value) => self.label_buckets(label, Some(std::slice::from_ref(value))),
            Expr::In(label, values) => self.label_buckets(label, Some(values)),
            Expr::Has(label) => self.label_buckets(label, None),
            Expr::Contains(label, _) | Expr::StartsWith(label, _) | Expr::EndsWith(label, _) => {
                self.label_buckets(label, None)
                    .map(|b| Buckets { exact: false, ..b })
            }
            Expr::And(items) => {
                let smallest = items
                    .iter()
                    .filter_map(|e| self.buckets(e))
                    .min_by_key(|b| b.size)?;
                Some(Buckets {
                    exact: smallest.exact && items.len() == 1,
                    ..smallest
                })
            }
            Expr::Or(items) => {
                let mut sets = Vec::new();
                let mut exact = true;
                for item in items {
                    let buckets = self.buckets(item)?;
                    exact &= buckets.exact;
                    sets.extend(buckets.sets);
                }
                Some(Buckets::new(sets, exact))
            }
            _ => None,
        }
    }

    /// Every pod that could match `expr`, each once, by slot; `exact` when they all do.
    pub fn candidate_pods(&self, expr: &Expr) -> Candidates {
        match self.buckets(expr) {
            None => Candidates {
                ids: (0..self.pods.len() as PodId)
                    .filter(|id| self.pods[*id as usize].is_some())
                    .collect(),
                exact: matches!(expr, Expr::All | Expr::Global),
            },
            Some(buckets) => {
                let several = buckets.sets.len() > 1;
                let mut ids: Vec<PodId> = buckets.sets.into_iter().flatten().copied().collect();
                if several {
                    ids.sort_unstable();
                    ids.dedup();
                }
                Candidates {
                    ids,
                    exact: buckets.exact,
                }
            }
        }
    }
}
