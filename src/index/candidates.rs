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

use std::sync::Arc;

use super::views::NamespaceView;
use super::{ClusterIndex, PodId, PodIdSet};
use crate::model::{NetworkSet, NAMESPACE_NAME_LABEL};
use crate::selector::{Expr, Label, LabelKind, LabelSource, Selector, PROFILE_NAME_LABEL};

/// What a candidate still has to satisfy once the buckets have picked it.
#[derive(Debug, Clone)]
pub enum Rest {
    /// Nothing: the buckets hold exactly the matching pods.
    Nothing,
    /// These terms of the selector (the rest are proven by the buckets).
    Terms(Selector),
    /// The whole selector.
    Whole,
}

impl Rest {
    /// The rest after `chosen` proved one term of an `&&` whose other terms are `others`.
    fn and(chosen: Rest, others: Vec<Expr>) -> Rest {
        let mut terms = others;
        match chosen {
            Rest::Nothing => {}
            Rest::Terms(more) => terms.push(more.expr().clone()),
            Rest::Whole => return Rest::Whole,
        }
        if terms.is_empty() {
            Rest::Nothing
        } else {
            Rest::Terms(Selector::from_expr(Expr::and(terms)))
        }
    }
}

/// Pod id buckets whose union holds every pod that can match.
struct Buckets<'a> {
    sets: Vec<&'a PodIdSet>,
    size: usize,
    rest: Rest,
}

impl<'a> Buckets<'a> {
    fn new(sets: Vec<&'a PodIdSet>, rest: Rest) -> Self {
        let size = sets.iter().map(|s| s.len()).sum();
        Self { sets, size, rest }
    }
}

/// The pods a selector can match, each once, by slot, and what is left to test on them.
#[derive(Debug, Clone)]
pub struct Candidates {
    pub ids: Vec<PodId>,
    pub rest: Rest,
}

impl Candidates {
    /// Every candidate matches: no need to evaluate anything on them.
    pub fn exact(&self) -> bool {
        matches!(self.rest, Rest::Nothing)
    }

    /// Whether a candidate matches `selector`, the one these candidates were found for.
    pub fn selects<S: LabelSource + ?Sized>(&self, selector: &Selector, candidate: &S) -> bool {
        match &self.rest {
            Rest::Nothing => true,
            Rest::Terms(terms) => terms.matches(candidate),
            Rest::Whole => selector.matches(candidate),
        }
    }
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
                        out.extend(
                            by_value
                                .get(v.as_str())
                                .into_iter()
                                .flatten()
                                .map(String::as_str),
                        );
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

    fn namespace_buckets<'a>(&'a self, names: &[&str]) -> Vec<&'a PodIdSet> {
        names
            .iter()
            .filter_map(|ns| self.pods_by_namespace.get(*ns))
            .collect()
    }

    fn own_buckets(&self, name: &str, values: Option<&[String]>) -> Vec<&PodIdSet> {
        let Some(by_value) = self.pods_by_label.get(name) else {
            return Vec::new();
        };
        match values {
            Some(values) => values
                .iter()
                .filter_map(|v| by_value.get(v.as_str()))
                .collect(),
            None => by_value.values().collect(),
        }
    }

    /// The buckets for "label has one of `values`" (or "label is present").
    fn label_buckets(&self, label: &Label, values: Option<&[String]>) -> Option<Buckets<'_>> {
        let mut exact = true;
        let sets = match label.kind() {
            LabelKind::Plain => self.own_buckets(label.name(), values),
            LabelKind::Namespace => match values {
                Some(values) => values
                    .iter()
                    .filter_map(|ns| self.pods_by_namespace.get(ns.as_str()))
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
        Some(Buckets::new(
            sets,
            if exact { Rest::Nothing } else { Rest::Whole },
        ))
    }

    /// Whether `expr` reads nothing a pod holds itself: only its namespace, the namespace's
    /// labels (when no pod overrides them with its own `pcns.` label) and the orchestrator,
    /// so it is true or false for all of a namespace's pods at once.
    fn namespace_wide(&self, expr: &Expr) -> bool {
        let mut labels = Vec::new();
        expr.labels(&mut labels);
        labels.iter().all(|l| match l.kind() {
            LabelKind::Namespace | LabelKind::Orchestrator => true,
            LabelKind::FromNamespace => !self.pods_by_label.contains_key(l.name()),
            LabelKind::Plain | LabelKind::ServiceAccount | LabelKind::FromServiceAccount => false,
        })
    }

    /// Namespaces that can satisfy a namespace-wide term (a superset), or `None` for any.
    fn namespaces_for<'a>(&'a self, expr: &'a Expr) -> Option<Vec<&'a str>> {
        let values = |label: &'a Label, values: Option<&'a [String]>| -> Option<Vec<&'a str>> {
            match label.kind() {
                LabelKind::Namespace => Some(values?.iter().map(String::as_str).collect()),
                LabelKind::FromNamespace => Some(self.namespaces_where(label.parent_key(), values)),
                _ => None,
            }
        };
        match expr {
            Expr::Eq(label, value) => values(label, Some(std::slice::from_ref(value))),
            Expr::In(label, set) => values(label, Some(set)),
            Expr::Has(label) => values(label, None),
            Expr::And(items) => items
                .iter()
                .filter_map(|e| self.namespaces_for(e))
                .min_by_key(Vec::len),
            Expr::Or(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.extend(self.namespaces_for(item)?);
                }
                out.sort_unstable();
                out.dedup();
                Some(out)
            }
            _ => None,
        }
    }

    /// The pods of the namespaces in `names` where the namespace-wide `terms` hold: the terms
    /// are evaluated once per namespace rather than once per pod.
    fn namespace_buckets_where(&self, terms: &Selector, names: Vec<&str>) -> Buckets<'_> {
        let sets = names
            .into_iter()
            .filter(|name| {
                let object = self.namespace(name).map(|n| n.as_ref());
                terms.matches(&NamespaceView::new(name, object))
            })
            .filter_map(|name| self.pods_by_namespace.get(name))
            .collect();
        Buckets::new(sets, Rest::Nothing)
    }

    fn buckets(&self, expr: &Expr) -> Option<Buckets<'_>> {
        match expr {
            Expr::Eq(label, value) => self.label_buckets(label, Some(std::slice::from_ref(value))),
            Expr::In(label, values) => self.label_buckets(label, Some(values)),
            Expr::Has(label) => self.label_buckets(label, None),
            Expr::Contains(label, _) | Expr::StartsWith(label, _) | Expr::EndsWith(label, _) => {
                self.label_buckets(label, None).map(|b| Buckets {
                    rest: Rest::Whole,
                    ..b
                })
            }
            Expr::And(items) => self.and_buckets(items),
            Expr::Or(items) => {
                let mut sets = Vec::new();
                let mut exact = true;
                for item in items {
                    let buckets = self.buckets(item)?;
                    exact &= matches!(buckets.rest, Rest::Nothing);
                    sets.extend(buckets.sets);
                }
                Some(Buckets::new(
                    sets,
                    if exact { Rest::Nothing } else { Rest::Whole },
                ))
            }
            _ => None,
        }
    }

    /// An `&&`: the smallest of its terms' buckets, or of the pods of the namespaces where its
    /// namespace-wide terms hold; the terms not proven by the choice are left to test.
    fn and_buckets(&self, items: &[Expr]) -> Option<Buckets<'_>> {
        let (wide, narrow): (Vec<usize>, Vec<usize>) =
            (0..items.len()).partition(|i| self.namespace_wide(&items[*i]));
        // The smallest buckets, and the terms they prove.
        let mut best: Option<(Buckets<'_>, Vec<usize>)> = None;
        for i in &narrow {
            if let Some(buckets) = self.buckets(&items[*i]) {
                if best.as_ref().is_none_or(|(b, _)| buckets.size < b.size) {
                    best = Some((buckets, vec![*i]));
                }
            }
        }
        if !wide.is_empty() {
            let terms =
                Selector::from_expr(Expr::and(wide.iter().map(|i| items[*i].clone()).collect()));
            let names = self.namespaces_for(terms.expr());
            // Testing every namespace only pays when no term narrows the pods already.
            if names.is_some() || best.is_none() {
                let names = names.unwrap_or_else(|| self.populated_namespaces().collect());
                let buckets = self.namespace_buckets_where(&terms, names);
                if best.as_ref().is_none_or(|(b, _)| buckets.size < b.size) {
                    best = Some((buckets, wide));
                }
            }
        }
        let (buckets, proven) = best?;
        let others: Vec<Expr> = (0..items.len())
            .filter(|i| !proven.contains(i))
            .map(|i| items[i].clone())
            .collect();
        Some(Buckets {
            rest: Rest::and(buckets.rest, others),
            ..buckets
        })
    }

    /// Every pod that could match `expr`, each once, by slot, with what is left to test.
    pub fn candidate_pods(&self, expr: &Expr) -> Candidates {
        match self.buckets(expr) {
            None => Candidates {
                ids: (0..self.pods.len() as PodId)
                    .filter(|id| self.pods[*id as usize].is_some())
                    .collect(),
                rest: if matches!(expr, Expr::All | Expr::Global) {
                    Rest::Nothing
                } else {
                    Rest::Whole
                },
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
                    rest: buckets.rest,
                }
            }
        }
    }

    /// The network sets a selector could match: those of the namespaces it names when it
    /// names some (a namespaced policy's rule selectors always do), else every one.
    pub fn candidate_network_sets(&self, selector: &Selector) -> Vec<&Arc<NetworkSet>> {
        let restrictions = selector.restrictions();
        let namespaces = restrictions
            .iter()
            .find(|(label, _)| label.kind() == LabelKind::Namespace)
            .and_then(|(_, r)| r.values.clone());
        match namespaces {
            Some(names) => {
                let mut out = Vec::new();
                for ns in &names {
                    out.extend(self.network_sets_in(ns));
                }
                out
            }
            None => self.network_sets().collect(),
        }
    }
}
