//! Checks on the desired state before anything is written.
//!
//! The restore tools stop at the first bad line (`ipset restore` keeping the lines before it),
//! and a name with a space or newline would change the meaning of the input. So a state that
//! would produce such input is refused as a whole, with a message naming the culprit.

use crate::compiler::desired::FamilyState;
use crate::compiler::naming::{is_owned_chain, set_prefix, MAX_CHAIN_NAME, MAX_SET_NAME};
use crate::model::Family;

use super::error::DataplaneError;
use super::set_members::entry_fits;

pub fn validate_family(family: Family, state: &FamilyState) -> Result<(), DataplaneError> {
    let invalid = |reason: String| DataplaneError::InvalidDesiredState {
        family: family.to_string(),
        reason,
    };
    for (name, set) in &state.ipsets {
        if !name.starts_with(set_prefix(family))
            || name.len() > MAX_SET_NAME
            || !is_plain_name(name)
        {
            return Err(invalid(format!(
                "set name {name:?} must start with {:?}, use only [A-Za-z0-9_.-] and have at most {MAX_SET_NAME} characters",
                set_prefix(family)
            )));
        }
        if set.family != family {
            return Err(invalid(format!(
                "set {name} is declared for {}",
                set.family
            )));
        }
        if let Some(entry) = set
            .members
            .iter()
            .find(|entry| !entry_fits(entry, set.kind, family))
        {
            return Err(invalid(format!(
                "set {name} ({} {family}) cannot hold {entry}",
                set.kind.as_str()
            )));
        }
    }
    for (name, chain) in &state.chains {
        if !is_owned_chain(name) || name.len() > MAX_CHAIN_NAME || !is_plain_name(name) {
            return Err(invalid(format!(
                "chain name {name:?} must start with \"PAL-\", use only [A-Za-z0-9_.-] and have at most {MAX_CHAIN_NAME} characters"
            )));
        }
        for rule in &chain.rules {
            if let Some(target) = rule.jump_target() {
                if !state.chains.contains_key(target) {
                    return Err(invalid(format!(
                        "chain {name} jumps to {target:?}, which is not a desired chain"
                    )));
                }
            }
            if let Some(set) = rule
                .referenced_sets()
                .find(|set| !state.ipsets.contains_key(*set))
            {
                return Err(invalid(format!(
                    "chain {name} matches set {set:?}, which is not a desired {family} set"
                )));
            }
        }
    }
    Ok(())
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::compiler::desired::{
        Action, Chain, IpSet, IpSetKind, Match, Rule, SetDims, SetEntry,
    };

    fn state_with(set_name: &str, set_family: Family, rule: Rule) -> FamilyState {
        let mut state = FamilyState::default();
        state.ipsets.insert(
            set_name.to_string(),
            IpSet {
                kind: IpSetKind::HashIp,
                family: set_family,
                description: String::new(),
                members: BTreeSet::from([SetEntry::Ip("10.0.0.1".parse().expect("ip"))]),
            },
        );
        state
            .chains
            .insert("PAL-FORWARD".to_string(), Chain { rules: vec![rule] });
        state
    }

    fn reason(result: Result<(), DataplaneError>) -> String {
        match result {
            Err(DataplaneError::InvalidDesiredState { reason, .. }) => reason,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_consistent_state_passes() {
        let rule = Rule::new(
            vec![Match::in_set("pal4-p-1", SetDims::Src)],
            Action::Accept,
            "ns/p ingress[0]",
        );
        assert!(validate_family(Family::V4, &state_with("pal4-p-1", Family::V4, rule)).is_ok());
    }

    #[test]
    fn dangling_references_wrong_families_and_unsafe_text_are_refused() {
        let accept = Rule::new(vec![], Action::Accept, "x");
        let dangling_set = Rule::new(
            vec![Match::in_set("pal4-p-2", SetDims::Src)],
            Action::Accept,
            "x",
        );
        assert!(reason(validate_family(
            Family::V4,
            &state_with("pal4-p-1", Family::V4, dangling_set)
        ))
        .contains("pal4-p-2"));
        let dangling_jump = Rule::new(vec![], Action::Jump("PAL-TO-x".into()), "x");
        assert!(reason(validate_family(
            Family::V4,
            &state_with("pal4-p-1", Family::V4, dangling_jump)
        ))
        .contains("PAL-TO-x"));
        assert!(reason(validate_family(
            Family::V6,
            &state_with("pal4-p-1", Family::V4, accept.clone())
        ))
        .contains("pal6-"));
        assert!(reason(validate_family(
            Family::V4,
            &state_with("pal4-p-1", Family::V6, accept.clone())
        ))
        .contains("declared for ipv6"));
        assert!(reason(validate_family(
            Family::V4,
            &state_with("pal4-p 1", Family::V4, accept)
        ))
        .contains("pal4-p 1"));
        // A line break in a comment cannot smuggle a rule in: rendering folds it into a space.
        let newline = Rule::new(vec![], Action::Accept, "evil\n-A FORWARD -j DROP");
        assert!(!crate::render::rule_spec(&newline).contains('\n'));
    }

    #[test]
    fn members_must_fit_their_set() {
        let mut state = state_with(
            "pal4-p-1",
            Family::V4,
            Rule::new(vec![], Action::Accept, "x"),
        );
        if let Some(set) = state.ipsets.get_mut("pal4-p-1") {
            set.members
                .insert(SetEntry::Ip("fd00::1".parse().expect("ip")));
        }
        assert!(reason(validate_family(Family::V4, &state)).contains("fd00::1"));
    }
}
