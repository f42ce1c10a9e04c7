//! How a namespace's denied packets are handled: enforced or only audited, logged or not.
//!
//! Set per namespace by annotations, with the node's flags as the default: a namespace that
//! says nothing follows the node.

use std::fmt;
use std::str::FromStr;

/// `palisade.io/enforcement: enforce|audit`.
pub const ENFORCEMENT_ANNOTATION: &str = "palisade.io/enforcement";
/// `palisade.io/log-denied: "true"|"false"`.
pub const LOG_DENIED_ANNOTATION: &str = "palisade.io/log-denied";

/// Whether denials block packets or are only logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Enforcement {
    #[default]
    Enforce,
    /// Every rule stays in place, but what would be denied is logged, counted and let through:
    /// for trying a policy on production traffic before it blocks anything.
    Audit,
}

impl Enforcement {
    pub fn as_str(&self) -> &'static str {
        match self {
            Enforcement::Enforce => "enforce",
            Enforcement::Audit => "audit",
        }
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Enforcement {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "enforce" => Ok(Enforcement::Enforce),
            "audit" => Ok(Enforcement::Audit),
            other => Err(format!("{other:?} is neither \"enforce\" nor \"audit\"")),
        }
    }
}

/// What a namespace's annotations say; `None` leaves the choice to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NamespaceDenials {
    pub enforcement: Option<Enforcement>,
    pub log_denied: Option<bool>,
}

/// The node's defaults for namespaces that do not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NodeDenials {
    pub enforcement: Enforcement,
    pub log_denied: bool,
}

/// What the rules of one pod do with a packet they deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum DenialHandling {
    /// Drop (or reject) it.
    #[default]
    Deny,
    /// Send it to the denied-flow log, then drop it.
    LogAndDeny,
    /// Send it to the denied-flow log, count it, and let it through.
    Audit,
}

impl DenialHandling {
    pub const ALL: [DenialHandling; 3] = [
        DenialHandling::Deny,
        DenialHandling::LogAndDeny,
        DenialHandling::Audit,
    ];

    /// The handling for a pod of a namespace with these annotations on a node with these
    /// defaults. Audit always logs: a would-be denial nobody sees would be pointless.
    pub fn resolve(namespace: NamespaceDenials, node: NodeDenials) -> Self {
        match namespace.enforcement.unwrap_or(node.enforcement) {
            Enforcement::Audit => DenialHandling::Audit,
            Enforcement::Enforce if namespace.log_denied.unwrap_or(node.log_denied) => {
                DenialHandling::LogAndDeny
            }
            Enforcement::Enforce => DenialHandling::Deny,
        }
    }

    pub fn logs(&self) -> bool {
        !matches!(self, DenialHandling::Deny)
    }

    pub fn enforcement(&self) -> Enforcement {
        match self {
            DenialHandling::Audit => Enforcement::Audit,
            _ => Enforcement::Enforce,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_annotation_overrides_the_node() {
        let audit_node = NodeDenials {
            enforcement: Enforcement::Audit,
            log_denied: false,
        };
        let enforcing = NamespaceDenials {
            enforcement: Some(Enforcement::Enforce),
            log_denied: None,
        };
        assert_eq!(
            DenialHandling::resolve(enforcing, audit_node),
            DenialHandling::Deny
        );
        assert_eq!(
            DenialHandling::resolve(NamespaceDenials::default(), audit_node),
            DenialHandling::Audit
        );
        let logging_node = NodeDenials {
            enforcement: Enforcement::Enforce,
            log_denied: true,
        };
        assert_eq!(
            DenialHandling::resolve(NamespaceDenials::default(), logging_node),
            DenialHandling::LogAndDeny
        );
        let quiet = NamespaceDenials {
            enforcement: None,
            log_denied: Some(false),
        };
        assert_eq!(
            DenialHandling::resolve(quiet, logging_node),
            DenialHandling::Deny
        );
    }

    #[test]
    fn enforcement_parses_case_insensitively_and_rejects_the_rest() {
        assert_eq!("Audit".parse(), Ok(Enforcement::Audit));
        assert_eq!(" enforce ".parse(), Ok(Enforcement::Enforce));
        assert!("audti".parse::<Enforcement>().is_err());
    }
}
