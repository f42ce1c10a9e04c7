//! The prefix an NFLOG rule of a denial carries, so the denied-flow log can tell which rule
//! sent it a packet: `pal D I PAL-TO-62a3dacc164a3626 0` (denied, ingress, the chain, and the
//! tier's position in a pod chain or the rule's index in a policy chain); `A` for audited.
//! The kernel keeps 63 bytes of a prefix; these stay under 40.

use std::fmt;

use crate::model::{Direction, Enforcement};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeniedFlowTag {
    pub enforcement: Enforcement,
    pub direction: Direction,
    pub chain: String,
    pub position: usize,
}

impl fmt::Display for DeniedFlowTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.enforcement {
            Enforcement::Enforce => 'D',
            Enforcement::Audit => 'A',
        };
        let direction = match self.direction {
            Direction::Ingress => 'I',
            Direction::Egress => 'E',
        };
        write!(
            f,
            "pal {verdict} {direction} {} {}",
            self.chain, self.position
        )
    }
}

impl DeniedFlowTag {
    /// Reads a prefix this module wrote; anything else (another program's rules sending to the
    /// same group) is `None`.
    pub fn parse(prefix: &str) -> Option<Self> {
        let mut words = prefix.split(' ');
        if words.next()? != "pal" {
            return None;
        }
        let enforcement = match words.next()? {
            "D" => Enforcement::Enforce,
            "A" => Enforcement::Audit,
            _ => return None,
        };
        let direction = match words.next()? {
            "I" => Direction::Ingress,
            "E" => Direction::Egress,
            _ => return None,
        };
        let chain = words.next()?.to_string();
        let position = words.next()?.parse().ok()?;
        if words.next().is_some() || !super::naming::is_owned_chain(&chain) {
            return None;
        }
        Some(Self {
            enforcement,
            direction,
            chain,
            position,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_reads_back_as_written_and_fits_the_kernel() {
        let tag = DeniedFlowTag {
            enforcement: Enforcement::Audit,
            direction: Direction::Egress,
            chain: "PAL-PEA-0123456789abcdef".into(),
            position: 12,
        };
        let prefix = tag.to_string();
        assert_eq!(prefix, "pal A E PAL-PEA-0123456789abcdef 12");
        assert!(prefix.len() < 64);
        assert_eq!(DeniedFlowTag::parse(&prefix), Some(tag));
    }

    #[test]
    fn foreign_prefixes_are_not_tags() {
        for prefix in [
            "",
            "calico-packet",
            "pal X I PAL-TO-1 0",
            "pal D I KUBE-FOO 0",
            "pal D I PAL-TO-1",
            "pal D I PAL-TO-1 0 extra",
            "pal D I PAL-TO-1 x",
        ] {
            assert_eq!(DeniedFlowTag::parse(prefix), None, "{prefix:?}");
        }
    }
}
