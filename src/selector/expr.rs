//! The selector expression tree, its canonical text, and the rewrites Calico applies to it.

use std::fmt;

/// The labels Calico derives for an endpoint instead of reading them from the object.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";
/// The orchestrator of every pod.
pub const ORCHESTRATOR_K8S: &str = "k8s";
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";
/// Prefixes of labels inherited from the endpoint's namespace and service account.
pub const NAMESPACE_PREFIX: &str = "pcns.";
pub const SERVICE_ACCOUNT_PREFIX: &str = "pcsa.";
/// The label every namespace and service account profile carries with its own name.
pub const PROFILE_NAME_LABEL: &str = "projectcalico.org/name";

/// Where a label's value comes from, decided once from its name so that evaluation needs no
/// string comparisons beyond the lookup itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelKind {
    /// An ordinary label of the object.
    Plain,
    /// `projectcalico.org/namespace`: the endpoint's namespace.
    Namespace,
    /// `projectcalico.org/orchestrator`: `k8s` for pods.
    Orchestrator,
    /// `projectcalico.org/serviceaccount`: the pod's service account.
    ServiceAccount,
    /// `pcns.<key>`: the object's own label if it has one, else its namespace's `<key>`.
    FromNamespace,
    /// `pcsa.<key>`: likewise from the pod's service account.
    FromServiceAccount,
}

/// A label name as written in a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    name: String,
    kind: LabelKind,
}

impl Label {
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let kind = match name.as_str() {
            NAMESPACE_LABEL => LabelKind::Namespace,
            ORCHESTRATOR_LABEL => LabelKind::Orchestrator,
            SERVICE_ACCOUNT_LABEL => LabelKind::ServiceAccount,
            n if n.len() > NAMESPACE_PREFIX.len() && n.starts_with(NAMESPACE_PREFIX) => {
                LabelKind::FromNamespace
            }
            n if n.len() > SERVICE_ACCOUNT_PREFIX.len()
                && n.starts_with(SERVICE_ACCOUNT_PREFIX) =>
            {
                LabelKind::FromServiceAccount
            }
            _ => LabelKind::Plain,
        };
        Self { name, kind }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> LabelKind {
        self.kind
    }

    /// For an inherited label, the key on the parent (`team` for `pcns.team`).
    pub fn parent_key(&self) -> &str {
        match self.kind {
            LabelKind::FromNamespace => &self.name[NAMESPACE_PREFIX.len()..],
            LabelKind::FromServiceAccount => &self.name[SERVICE_ACCOUNT_PREFIX.len()..],
            _ => &self.name,
        }
    }
}

/// A selector expression. Sets of `in`/`not in` are sorted and free of duplicates, so equal
/// expressions print equal canonical text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expr {
    All,
    /// True everywhere; its meaning ("not in a namespace") comes from the rewrite of a rule's
    /// `namespaceSelector`.
    Global,
    Has(Label),
    Eq(Label, String),
    Ne(Label, String),
    Contains(Label, String),
    StartsWith(Label, String),
    EndsWith(Label, String),
    In(Label, Vec<String>),
    NotIn(Label, Vec<String>),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    pub fn eq(label: &str, value: &str) -> Self {
        Expr::Eq(Label::new(label), value.to_string())
    }

    pub fn has(label: &str) -> Self {
        Expr::Has(Label::new(label))
    }

    pub fn set(values: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut values: Vec<String> = values.into_iter().collect();
        values.sort();
        values.dedup();
        values
    }

    /// `a && b` with `a`'s and `b`'s structure kept, as Calico's string concatenation
    /// `(a) && (b)` parses.
    pub fn and(operands: Vec<Expr>) -> Self {
        let mut operands = operands;
        match operands.len() {
            0 => Expr::All,
            1 => operands.remove(0),
            _ => Expr::And(operands),
        }
    }

    pub fn negation(inner: Expr) -> Self {
        Expr::Not(Box::new(inner))
    }

    /// Every label the expression reads.
    pub fn labels(&self, out: &mut Vec<Label>) {
        match self {
            Expr::All | Expr::Global => {}
            Expr::Has(l)
            | Expr::Eq(l, _)
            | Expr::Ne(l, _)
            | Expr::Contains(l, _)
            | Expr::StartsWith(l, _)
            | Expr::EndsWith(l, _)
            | Expr::In(l, _)
            | Expr::NotIn(l, _) => out.push(l.clone()),
            Expr::Not(inner) => inner.labels(out),
            Expr::And(items) | Expr::Or(items) => items.iter().for_each(|e| e.labels(out)),
        }
    }

    /// The expression with `prefix` put before every label name, as Calico does to a
    /// namespace selector (`pcns.`) or a service-account selector (`pcsa.`).
    pub fn prefixed(&self, prefix: &str) -> Expr {
        let p = |l: &Label| Label::new(format!("{prefix}{}", l.name));
        match self {
            Expr::All => Expr::All,
            Expr::Global => Expr::Global,
            Expr::Has(l) => Expr::Has(p(l)),
            Expr::Eq(l, v) => Expr::Eq(p(l), v.clone()),
            Expr::Ne(l, v) => Expr::Ne(p(l), v.clone()),
            Expr::Contains(l, v) => Expr::Contains(p(l), v.clone()),
            Expr::StartsWith(l, v) => Expr::StartsWith(p(l), v.clone()),
            Expr::EndsWith(l, v) => Expr::EndsWith(p(l), v.clone()),
            Expr::In(l, v) => Expr::In(p(l), v.clone()),
            Expr::NotIn(l, v) => Expr::NotIn(p(l), v.clone()),
            Expr::Not(inner) => Expr::negation(inner.prefixed(prefix)),
            Expr::And(items) => Expr::And(items.iter().map(|e| e.prefixed(prefix)).collect()),
            Expr::Or(items) => Expr::Or(items.iter().map(|e| e.prefixed(prefix)).collect()),
        }
    }

    /// Replaces every `all()` (or, with `global`, every `global()`) by `with`: Calico's textual
    /// rewrite of `all()` to `has(projectcalico.org/namespace)`, done on the tree.
    pub fn replace_constant(&self, global: bool, with: &Expr) -> Expr {
        let r = |e: &Expr| e.replace_constant(global, with);
        match self {
            Expr::All if !global => with.clone(),
            Expr::Global if global => with.clone(),
            Expr::Not(inner) => Expr::negation(r(inner)),
            Expr::And(items) => Expr::And(items.iter().map(r).collect()),
            Expr::Or(items) => Expr::Or(items.iter().map(r).collect()),
            other => other.clone(),
        }
    }

    pub fn mentions_global(&self) -> bool {
        match self {
            Expr::Global => true,
            Expr::Not(inner) => inner.mentions_global(),
            Expr::And(items) | Expr::Or(items) => items.iter().any(Expr::mentions_global),
            _ => false,
        }
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    if value.contains('"') {
        write!(f, "'{value}'")
    } else {
        write!(f, "\"{value}\"")
    }
}

fn write_set(f: &mut fmt::Formatter<'_>, values: &[String]) -> fmt::Result {
    f.write_str("{")?;
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_quoted(f, value)?;
    }
    f.write_str("}")
}

/// Calico's canonical text: groups in parentheses with single spaces, `!` straight before its
/// operand, strings in double quotes unless they hold one.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Has(l) => write!(f, "has({})", l.name),
            Expr::Eq(l, v) => {
                write!(f, "{} == ", l.name)?;
                write_quoted(f, v)
            }
            Expr::Ne(l, v) => {
                write!(f, "{} != ", l.name)?;
                write_quoted(f, v)
            }
            Expr::Contains(l, v) => {
                write!(f, "{} contains ", l.name)?;
                write_quoted(f, v)
            }
            Expr::StartsWith(l, v) => {
                write!(f, "{} starts with ", l.name)?;
                write_quoted(f, v)
            }
            Expr::EndsWith(l, v) => {
                write!(f, "{} ends with ", l.name)?;
                write_quoted(f, v)
            }
            Expr::In(l, v) => {
                write!(f, "{} in ", l.name)?;
                write_set(f, v)
            }
            Expr::NotIn(l, v) => {
                write!(f, "{} not in ", l.name)?;
                write_set(f, v)
            }
            Expr::Not(inner) => write!(f, "!{inner}"),
            Expr::And(items) | Expr::Or(items) => {
                let op = if matches!(self, Expr::And(_)) {
                    " && "
                } else {
                    " || "
                };
                f.write_str("(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(op)?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(")")
            }
        }
    }
}
