//! What an expression demands of the labels of anything it matches: the basis of indexing
//! selectors by label, as Calico's label index does, so that a changed object is tested only
//! against the selectors that could match it.

use std::collections::BTreeMap;

use super::expr::{Expr, Label, LabelKind};

/// Necessary conditions on one label for an expression to match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restriction {
    pub present: bool,
    pub absent: bool,
    /// `Some`: the label must have one of these values (sorted). `Some(empty)`: nothing can
    /// match.
    pub values: Option<Vec<String>>,
}

impl Restriction {
    pub fn satisfiable(&self) -> bool {
        !(self.present && self.absent) && self.values.as_ref().is_none_or(|v| !v.is_empty())
    }
}

fn single(label: &Label, restriction: Restriction) -> BTreeMap<Label, Restriction> {
    BTreeMap::from([(label.clone(), restriction)])
}

fn present() -> Restriction {
    Restriction {
        present: true,
        ..Restriction::default()
    }
}

fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|v| b.contains(v)).cloned().collect()
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = a.iter().chain(b).cloned().collect();
    out.sort();
    out.dedup();
    out
}

/// The restrictions `expr` places on labels; a label without an entry is unrestricted.
pub fn restrictions(expr: &Expr) -> BTreeMap<Label, Restriction> {
    match expr {
        Expr::All | Expr::Global | Expr::Ne(..) | Expr::NotIn(..) => BTreeMap::new(),
        Expr::Has(l) | Expr::Contains(l, _) | Expr::StartsWith(l, _) | Expr::EndsWith(l, _) => {
            single(l, present())
        }
        Expr::Eq(l, v) => single(
            l,
            Restriction {
                values: Some(vec![v.clone()]),
                ..present()
            },
        ),
        Expr::In(l, set) => single(
            l,
            Restriction {
                values: Some(set.clone()),
                ..present()
            },
        ),
        // `!has(a)` forbids `a`; no other negation says anything certain.
        Expr::Not(inner) => match inner.as_ref() {
            Expr::Has(l) => single(
                l,
                Restriction {
                    absent: true,
                    ..Restriction::default()
                },
            ),
            _ => BTreeMap::new(),
        },
        Expr::And(items) => {
            let mut out: BTreeMap<Label, Restriction> = BTreeMap::new();
            for item in items {
                for (label, r) in restrictions(item) {
                    let base = out.entry(label).or_default();
                    base.present |= r.present;
                    base.absent |= r.absent;
                    base.values = match (base.values.take(), r.values) {
                        (None, v) => v,
                        (v, None) => v,
                        (Some(a), Some(b)) => Some(intersect(&a, &b)),
                    };
                }
            }
            out
        }
        Expr::Or(items) => {
            let mut iter = items.iter();
            let Some(first) = iter.next() else {
                return BTreeMap::new();
            };
            let mut out = restrictions(first);
            for item in iter {
                let other = restrictions(item);
                out = out
                    .into_iter()
                    .filter_map(|(label, r)| {
                        let o = other.get(&label).cloned().unwrap_or_default();
                        let present = r.present && o.present;
                        let absent = r.absent && o.absent;
                        let values = match (present, &r.values, &o.values) {
                            (true, Some(a), Some(b)) => Some(union(a, b)),
                            _ => None,
                        };
                        (present || absent).then_some((
                            label,
                            Restriction {
                                present,
                                absent,
                                values,
                            },
                        ))
                    })
                    .collect();
            }
            out
        }
    }
}

/// Where an index files a selector: under the one restriction that narrows its candidates
/// most, by a fixed ranking: an exact value before mere presence; the namespace first (the
/// selectors of namespaced policies all name theirs, and label values recur across
/// namespaces), then own labels, inherited ones, the service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Value {
        label: Label,
        values: Vec<String>,
    },
    Present(Label),
    /// No usable restriction: tested against everything.
    Everywhere,
    /// Some restriction cannot be satisfied: the selector matches nothing.
    Nowhere,
}

fn rank(kind: LabelKind) -> Option<u8> {
    match kind {
        LabelKind::Namespace => Some(0),
        LabelKind::Plain => Some(1),
        LabelKind::FromNamespace => Some(2),
        LabelKind::FromServiceAccount => Some(3),
        LabelKind::ServiceAccount => Some(4),
        // Every pod has it.
        LabelKind::Orchestrator => None,
    }
}

pub fn placement(expr: &Expr) -> Placement {
    let all = restrictions(expr);
    if all.values().any(|r| !r.satisfiable()) {
        return Placement::Nowhere;
    }
    let by_value = all
        .iter()
        .filter_map(|(l, r)| {
            let values = r.values.as_ref()?;
            Some(((rank(l.kind())?, values.len()), l, values))
        })
        .min_by_key(|(key, _, _)| *key);
    if let Some((_, label, values)) = by_value {
        return Placement::Value {
            label: label.clone(),
            values: values.clone(),
        };
    }
    // Presence of the namespace label holds for every pod: as good as nothing.
    let by_presence = all
        .iter()
        .filter(|(l, r)| r.present && l.kind() != LabelKind::Namespace)
        .filter_map(|(l, _)| Some((rank(l.kind())?, l)))
        .min_by_key(|(rank, _)| *rank);
    match by_presence {
        Some((_, label)) => Placement::Present(label.clone()),
        None => Placement::Everywhere,
    }
}
