//! Evaluating an expression against an endpoint's labels, with Calico's label inheritance.
//!
//! A pod's labels, as Calico's selectors see them: its own labels, overridden by
//! `projectcalico.org/namespace`, `projectcalico.org/orchestrator=k8s` and
//! `projectcalico.org/serviceaccount`; then, for a label its object lacks, `pcns.<key>` from its
//! namespace and `pcsa.<key>` from its service account (each also has
//! `projectcalico.org/name`). Network sets have their own labels and, when namespaced, their
//! namespace's.

use super::expr::ORCHESTRATOR_K8S;
use super::expr::{Expr, Label, LabelKind};
use super::Labels;

/// An object selectors can be evaluated against.
pub trait LabelSource {
    /// The object's own label.
    fn own(&self, key: &str) -> Option<&str>;
    /// Its namespace, for namespaced objects.
    fn namespace(&self) -> Option<&str> {
        None
    }
    /// Pods are workload endpoints: their orchestrator is `k8s`.
    fn is_workload(&self) -> bool {
        false
    }
    fn service_account(&self) -> Option<&str> {
        None
    }
    /// A label of the object's namespace (`projectcalico.org/name` included).
    fn namespace_label(&self, _key: &str) -> Option<&str> {
        None
    }
    /// A label of the pod's service account (`projectcalico.org/name` included).
    fn service_account_label(&self, _key: &str) -> Option<&str> {
        None
    }
    /// Calls `f` with each own label.
    fn for_each_own(&self, f: &mut dyn FnMut(&str, &str));
    /// Calls `f` with each label of the namespace (`projectcalico.org/name` included).
    fn for_each_namespace_label(&self, _f: &mut dyn FnMut(&str, &str)) {}
    fn for_each_service_account_label(&self, _f: &mut dyn FnMut(&str, &str)) {}
}

/// Plain labels: nothing derived, nothing inherited.
impl LabelSource for Labels {
    fn own(&self, key: &str) -> Option<&str> {
        self.get(key).map(super::LabelText::as_str)
    }

    fn for_each_own(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self {
            f(k, v);
        }
    }
}

/// The value a selector sees for `label`, or `None` when the label is absent.
pub fn lookup<'a, S: LabelSource + ?Sized>(source: &'a S, label: &Label) -> Option<&'a str> {
    match label.kind() {
        LabelKind::Plain => source.own(label.name()),
        LabelKind::Namespace => source.namespace().or_else(|| source.own(label.name())),
        LabelKind::Orchestrator => {
            if source.is_workload() {
                Some(ORCHESTRATOR_K8S)
            } else {
                source.own(label.name())
            }
        }
        LabelKind::ServiceAccount => source
            .service_account()
            .or_else(|| source.own(label.name())),
        LabelKind::FromNamespace => source
            .own(label.name())
            .or_else(|| source.namespace_label(label.parent_key())),
        LabelKind::FromServiceAccount => source
            .own(label.name())
            .or_else(|| source.service_account_label(label.parent_key())),
    }
}

pub fn matches<S: LabelSource + ?Sized>(expr: &Expr, source: &S) -> bool {
    match expr {
        Expr::All | Expr::Global => true,
        Expr::Has(l) => lookup(source, l).is_some(),
        Expr::Eq(l, v) => lookup(source, l) == Some(v.as_str()),
        // Absent labels are not equal to anything.
        Expr::Ne(l, v) => lookup(source, l) != Some(v.as_str()),
        Expr::Contains(l, v) => lookup(source, l).is_some_and(|x| x.contains(v.as_str())),
        Expr::StartsWith(l, v) => lookup(source, l).is_some_and(|x| x.starts_with(v.as_str())),
        Expr::EndsWith(l, v) => lookup(source, l).is_some_and(|x| x.ends_with(v.as_str())),
        Expr::In(l, set) => lookup(source, l).is_some_and(|x| contains(set, x)),
        Expr::NotIn(l, set) => !lookup(source, l).is_some_and(|x| contains(set, x)),
        Expr::Not(inner) => !matches(inner, source),
        Expr::And(items) => items.iter().all(|e| matches(e, source)),
        Expr::Or(items) => items.iter().any(|e| matches(e, source)),
    }
}

fn contains(sorted: &[String], value: &str) -> bool {
    sorted
        .binary_search_by(|probe| probe.as_str().cmp(value))
        .is_ok()
}
