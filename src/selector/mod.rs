//! The one selector language: Calico's expressions (`==`, `!=`, `in`, `not in`, `has()`, `!`,
//! `&&`, `||`, `all()`, `global()`, `contains`, `starts with`, `ends with`), lexed and parsed
//! exactly as Calico does, with its canonical text and its absent-label semantics. Kubernetes
//! label selectors are converted into the same expressions, so every policy API shares one
//! selector type, one matcher and one index.

mod eval;
mod expr;
mod index;
mod labels;
mod lexer;
mod parser;
mod restrict;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use eval::{lookup, LabelSource};
pub use expr::{
    Expr, Label, LabelKind, NAMESPACE_LABEL, NAMESPACE_PREFIX, ORCHESTRATOR_K8S,
    ORCHESTRATOR_LABEL, PROFILE_NAME_LABEL, SERVICE_ACCOUNT_LABEL, SERVICE_ACCOUNT_PREFIX,
};
pub use index::SelectorIndex;
pub use restrict::{Placement, Restriction};

/// Label keys and values: most fit the 24 bytes of a `CompactString` inline, so a pod's labels
/// cost no allocation each (with 150,000 pods, that is most of the agent's memory).
pub type LabelText = compact_str::CompactString;

pub use labels::Labels;

/// Labels from string pairs, such as an object's `metadata.labels`.
pub fn labels_of<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (LabelText::from(k.as_ref()), LabelText::from(v.as_ref())))
        .collect()
}

/// A selector that does not parse, with the byte offset where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct SelectorError {
    pub position: usize,
    pub message: String,
}

impl SelectorError {
    pub fn new(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}

/// A parsed selector. Cheap to clone; equal selectors have equal canonical text.
#[derive(Clone)]
pub struct Selector(Arc<Parsed>);

/// The expression, and what is asked of it on every member of a set.
struct Parsed {
    expr: Expr,
    only_pods: bool,
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.expr == other.0.expr
    }
}

impl Eq for Selector {}

impl std::hash::Hash for Selector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.expr.hash(state);
    }
}

impl PartialOrd for Selector {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Selector {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.expr.cmp(&other.0.expr)
    }
}

impl Selector {
    /// Parses Calico selector syntax. An empty (or all-blank) selector is `all()`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        parser::parse(text).map(Self::from_expr)
    }

    pub fn from_expr(expr: Expr) -> Self {
        let only_pods = restrict::restrictions(&expr)
            .iter()
            .any(|(label, r)| label.kind() == LabelKind::Orchestrator && r.present);
        Self(Arc::new(Parsed { expr, only_pods }))
    }

    pub fn all() -> Self {
        Self::from_expr(Expr::All)
    }

    pub fn expr(&self) -> &Expr {
        &self.0.expr
    }

    pub fn is_all(&self) -> bool {
        matches!(self.0.expr, Expr::All)
    }

    pub fn matches<S: LabelSource + ?Sized>(&self, source: &S) -> bool {
        eval::matches(&self.0.expr, source)
    }

    /// `(a) && (b) && ...`, each operand kept whole; `all()` operands are dropped.
    pub fn and(parts: impl IntoIterator<Item = Selector>) -> Self {
        let operands: Vec<Expr> = parts
            .into_iter()
            .filter(|s| !s.is_all())
            .map(|s| s.expr().clone())
            .collect();
        Self::from_expr(Expr::and(operands))
    }

    pub fn negated(&self) -> Self {
        Self::from_expr(Expr::negation(self.expr().clone()))
    }

    /// Every label name prefixed, as Calico does to namespace (`pcns.`) and service-account
    /// (`pcsa.`) selectors.
    pub fn prefixed(&self, prefix: &str) -> Self {
        Self::from_expr(self.0.expr.prefixed(prefix))
    }

    /// Every `all()` replaced by `with`.
    pub fn replace_all(&self, with: Expr) -> Self {
        Self::from_expr(self.0.expr.replace_constant(false, &with))
    }

    /// Every `global()` replaced by `with`.
    pub fn replace_global(&self, with: Expr) -> Self {
        Self::from_expr(self.0.expr.replace_constant(true, &with))
    }

    pub fn mentions_global(&self) -> bool {
        self.0.expr.mentions_global()
    }

    pub fn restrictions(&self) -> BTreeMap<Label, Restriction> {
        restrict::restrictions(&self.0.expr)
    }

    pub fn placement(&self) -> Placement {
        restrict::placement(&self.0.expr)
    }

    /// The labels the selector reads.
    pub fn labels(&self) -> Vec<Label> {
        let mut out = Vec::new();
        self.0.expr.labels(&mut out);
        out.sort();
        out.dedup();
        out
    }

    /// Whether a thing with none of the pod-only labels (a network set) can never match: the
    /// selector requires `projectcalico.org/orchestrator`, which only pods carry.
    pub fn only_pods(&self) -> bool {
        self.0.only_pods
    }

    /// A Kubernetes label selector: `matchLabels` become `==`, `In`/`NotIn` become `in`/`not in`,
    /// `Exists`/`DoesNotExist` become `has()`/`!has()`, all ANDed, in a canonical order so that
    /// equivalent selectors share one set. An empty selector is `all()`.
    pub fn kubernetes<'a>(
        match_labels: impl IntoIterator<Item = (&'a str, &'a str)>,
        expressions: impl IntoIterator<Item = (&'a str, &'a str, &'a [String])>,
    ) -> Result<Self, (usize, KubernetesSelectorError)> {
        let mut terms: Vec<Expr> = match_labels
            .into_iter()
            .map(|(k, v)| Expr::eq(k, v))
            .collect();
        for (i, (key, operator, values)) in expressions.into_iter().enumerate() {
            terms.push(kubernetes_requirement(key, operator, values).map_err(|e| (i, e))?);
        }
        terms.sort();
        terms.dedup();
        Ok(Self::from_expr(Expr::and(terms)))
    }

    /// `matchLabels` only.
    pub fn match_labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        // matchLabels alone cannot fail.
        Self::kubernetes(pairs, std::iter::empty()).unwrap_or_default()
    }
}

/// A `matchExpressions` entry the API server would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubernetesSelectorError {
    #[error("unknown operator {0:?} (expected In, NotIn, Exists or DoesNotExist)")]
    UnknownOperator(String),
    #[error("operator {0} needs a non-empty values list")]
    MissingValues(&'static str),
    #[error("operator {0} must not have values")]
    UnexpectedValues(&'static str),
    #[error("empty label key")]
    EmptyKey,
}

fn kubernetes_requirement(
    key: &str,
    operator: &str,
    values: &[String],
) -> Result<Expr, KubernetesSelectorError> {
    if key.is_empty() {
        return Err(KubernetesSelectorError::EmptyKey);
    }
    let label = Label::new(key);
    let set = || Expr::set(values.iter().cloned());
    match operator {
        "In" if values.is_empty() => Err(KubernetesSelectorError::MissingValues("In")),
        "NotIn" if values.is_empty() => Err(KubernetesSelectorError::MissingValues("NotIn")),
        "In" => Ok(Expr::In(label, set())),
        "NotIn" => Ok(Expr::NotIn(label, set())),
        "Exists" if !values.is_empty() => Err(KubernetesSelectorError::UnexpectedValues("Exists")),
        "DoesNotExist" if !values.is_empty() => {
            Err(KubernetesSelectorError::UnexpectedValues("DoesNotExist"))
        }
        "Exists" => Ok(Expr::Has(label)),
        "DoesNotExist" => Ok(Expr::negation(Expr::Has(label))),
        other => Err(KubernetesSelectorError::UnknownOperator(other.to_string())),
    }
}

/// The empty selector: `all()`.
impl Default for Selector {
    fn default() -> Self {
        Self::all()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.expr)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({self})")
    }
}

#[cfg(test)]
mod tests;
