//! Kubernetes label selectors in a canonical form.
//!
//! `matchLabels` entries are folded into `In` requirements so that two selectors that select the
//! same pods by the same rules share one canonical text, and therefore one ipset.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            // Kubernetes: NotIn also matches objects that lack the key.
            Operator::NotIn(values) => !value.is_some_and(|v| values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label selector. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSelector {
    requirements: BTreeSet<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unknown operator {0:?} (expected In, NotIn, Exists or DoesNotExist)")]
    UnknownOperator(String),
    #[error("operator {0} needs a non-empty values list")]
    MissingValues(&'static str),
    #[error("operator {0} must not have values")]
    UnexpectedValues(&'static str),
    #[error("empty label key")]
    EmptyKey,
}

impl LabelSelector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> impl Iterator<Item = &Requirement> {
        self.requirements.iter()
    }

    pub fn from_match_labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut selector = Self::default();
        for (key, value) in pairs {
            selector.require(key, Operator::In(BTreeSet::from([value.to_string()])));
        }
        selector
    }

    pub fn require(&mut self, key: &str, operator: Operator) {
        self.requirements.insert(Requirement {
            key: key.to_string(),
            operator,
        });
    }

    /// Adds one `matchExpressions` entry, validating it as the API server does.
    pub fn require_expression(
        &mut self,
        key: &str,
        operator: &str,
        values: &[String],
    ) -> Result<(), SelectorError> {
        if key.is_empty() {
            return Err(SelectorError::EmptyKey);
        }
        let values: BTreeSet<String> = values.iter().cloned().collect();
        let operator = match operator {
            "In" | "NotIn" if values.is_empty() => {
                return Err(SelectorError::MissingValues(if operator == "In" {
                    "In"
                } else {
                    "NotIn"
                }))
            }
            "In" => Operator::In(values),
            "NotIn" => Operator::NotIn(values),
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(SelectorError::UnexpectedValues(if operator == "Exists" {
                    "Exists"
                } else {
                    "DoesNotExist"
                }))
            }
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => return Err(SelectorError::UnknownOperator(other.to_string())),
        };
        self.require(key, operator);
        Ok(())
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The `key=value` pairs that a matching object must carry: the most selective way into a
    /// label index.
    pub fn required_pairs(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.requirements.iter().filter_map(|r| match &r.operator {
            Operator::In(values) => Some((r.key.as_str(), values)),
            _ => None,
        })
    }
}

/// The canonical text, in the syntax of `kubectl get -l`: `a in (b),c notin (d,e),f,!g`.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for requirement in &self.requirements {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            let join =
                |values: &BTreeSet<String>| values.iter().cloned().collect::<Vec<_>>().join(",");
            match &requirement.operator {
                Operator::In(values) => write!(f, "{} in ({})", requirement.key, join(values))?,
                Operator::NotIn(values) => {
                    write!(f, "{} notin ({})", requirement.key, join(values))?
                }
                Operator::Exists => write!(f, "{}", requirement.key)?,
                Operator::DoesNotExist => write!(f, "!{}", requirement.key)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        let mut s = LabelSelector::everything();
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        s.require_expression(key, op, &values).unwrap();
        s
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::everything().matches(&labels(&[])));
        assert!(LabelSelector::everything().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_requires_every_pair() {
        let s = LabelSelector::from_match_labels([("role", "db"), ("tier", "backend")]);
        assert!(s.matches(&labels(&[("role", "db"), ("tier", "backend"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("role", "db")])));
        assert!(!s.matches(&labels(&[("role", "web"), ("tier", "backend")])));
    }

    #[test]
    fn in_and_not_in() {
        let s = expr("env", "In", &["prod", "staging"]);
        assert!(s.matches(&labels(&[("env", "prod")])));
        assert!(!s.matches(&labels(&[("env", "dev")])));
        assert!(!s.matches(&labels(&[])));
        let s = expr("env", "NotIn", &["prod"]);
        assert!(s.matches(&labels(&[("env", "dev")])));
        assert!(
            s.matches(&labels(&[])),
            "NotIn matches objects without the key"
        );
        assert!(!s.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn exists_and_does_not_exist() {
        assert!(expr("a", "Exists", &[]).matches(&labels(&[("a", "")])));
        assert!(!expr("a", "Exists", &[]).matches(&labels(&[("b", "1")])));
        assert!(expr("a", "DoesNotExist", &[]).matches(&labels(&[("b", "1")])));
        assert!(!expr("a", "DoesNotExist", &[]).matches(&labels(&[("a", "1")])));
    }

    #[test]
    fn bad_expressions_are_rejected() {
        let mut s = LabelSelector::everything();
        assert_eq!(
            s.require_expression("a", "Equals", &[]),
            Err(SelectorError::UnknownOperator("Equals".into()))
        );
        assert!(s.require_expression("a", "In", &[]).is_err());
        assert!(s.require_expression("a", "Exists", &["x".into()]).is_err());
        assert!(s.require_expression("", "Exists", &[]).is_err());
    }

    #[test]
    fn match_labels_and_in_expression_share_a_canonical_form() {
        let a = LabelSelector::from_match_labels([("role", "db")]);
        let b = expr("role", "In", &["db"]);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "role in (db)");
        let c = expr("x", "NotIn", &["b", "a"]);
        assert_eq!(c.to_string(), "x notin (a,b)");
    }
}
