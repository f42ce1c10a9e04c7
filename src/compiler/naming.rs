//! Names of Palisade's kernel objects. They are part of Palisade's interface (see the README):
//! chains start with `PAL-`, ipsets with `pal4-` or `pal6-`, and every name is derived from a
//! stable hash so that it fits the kernel's limits (chains ≤ 28 characters, sets ≤ 31).

use crate::model::{DenialHandling, Direction, Family, ObjectKey, PolicyId};

pub const CHAIN_PREFIX: &str = "PAL-";
pub const FORWARD_CHAIN: &str = "PAL-FORWARD";
pub const MAX_CHAIN_NAME: usize = 28;
pub const MAX_SET_NAME: usize = 31;

/// 64-bit FNV-1a: stable across builds and platforms, unlike `std`'s hasher.
pub fn stable_hash(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

pub fn short_hash(text: &str) -> String {
    format!("{:016x}", stable_hash(text))
}

pub fn set_prefix(family: Family) -> &'static str {
    match family {
        Family::V4 => "pal4-",
        Family::V6 => "pal6-",
    }
}

/// Whether a set name belongs to Palisade.
pub fn is_owned_set(name: &str) -> bool {
    name.starts_with("pal4-") || name.starts_with("pal6-")
}

pub fn is_owned_chain(name: &str) -> bool {
    name.starts_with(CHAIN_PREFIX)
}

/// The chain a local pod's traffic in `direction` goes through.
pub fn pod_chain(pod: &ObjectKey, direction: Direction) -> String {
    let kind = match direction {
        Direction::Ingress => "TO",
        Direction::Egress => "FROM",
    };
    format!("{CHAIN_PREFIX}{kind}-{}", short_hash(&pod.to_string()))
}

/// The chain holding one policy's rules for one direction, shared by every pod it selects whose
/// denials are handled alike (`PAL-PI-…` plain, `PAL-PIL-…` logging, `PAL-PIA-…` auditing).
pub fn policy_chain(policy: &PolicyId, direction: Direction, handling: DenialHandling) -> String {
    let kind = match direction {
        Direction::Ingress => "PI",
        Direction::Egress => "PE",
    };
    let variant = match handling {
        DenialHandling::Deny => "",
        DenialHandling::LogAndDeny => "L",
        DenialHandling::Audit => "A",
    };
    format!(
        "{CHAIN_PREFIX}{kind}{variant}-{}",
        short_hash(&policy.canonical())
    )
}

/// A set's name: `kind` is one letter (`p` selector, `b` networks, `n` named port, `s` service
/// endpoints), `canonical` the
/// canonical text of what the set holds, so equal selectors share one set.
pub fn set_name(family: Family, kind: char, canonical: &str) -> String {
    format!("{}{kind}-{}", set_prefix(family), short_hash(canonical))
}

/// A temporary name for building a replacement set before swapping it in.
pub fn temporary_set_name(name: &str) -> String {
    let family = if name.starts_with("pal6-") {
        Family::V6
    } else {
        Family::V4
    };
    format!("{}t-{}", set_prefix(family), short_hash(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_kernel_limits_for_the_longest_inputs() {
        let long = ObjectKey::new("n".repeat(63), "p".repeat(253));
        for direction in Direction::ALL {
            assert!(pod_chain(&long, direction).len() <= MAX_CHAIN_NAME);
            for handling in DenialHandling::ALL {
                let kubernetes = PolicyId::kubernetes(&long);
                assert!(policy_chain(&kubernetes, direction, handling).len() <= MAX_CHAIN_NAME);
                let global = PolicyId::global(&"g".repeat(253));
                assert!(policy_chain(&global, direction, handling).len() <= MAX_CHAIN_NAME);
            }
        }
        let set = set_name(Family::V6, 'p', &"x".repeat(10_000));
        assert!(set.len() <= MAX_SET_NAME);
        assert!(temporary_set_name(&set).len() <= MAX_SET_NAME);
        assert!(temporary_set_name(&set).starts_with("pal6-t-"));
    }

    #[test]
    fn names_are_stable_and_distinct() {
        let a = ObjectKey::new("default", "a");
        assert_eq!(pod_chain(&a, Direction::Ingress), "PAL-TO-62a3dacc164a3626");
        assert_ne!(
            pod_chain(&a, Direction::Ingress),
            pod_chain(&a, Direction::Egress)
        );
        assert_ne!(
            set_name(Family::V4, 'p', "x"),
            set_name(Family::V6, 'p', "x")
        );
        assert!(is_owned_set(&set_name(Family::V4, 'b', "x")));
        let k8s = PolicyId::kubernetes(&a);
        let calico = PolicyId::calico("default", "a");
        let plain = DenialHandling::Deny;
        assert_ne!(
            policy_chain(&k8s, Direction::Ingress, plain),
            policy_chain(&calico, Direction::Ingress, plain),
            "a Calico policy never shares a chain with a Kubernetes policy of the same name"
        );
        let variants: std::collections::BTreeSet<String> = DenialHandling::ALL
            .into_iter()
            .map(|h| policy_chain(&calico, Direction::Ingress, h))
            .collect();
        assert_eq!(variants.len(), 3, "{variants:?}");
        assert!(!is_owned_set("KUBE-foo"));
    }
}
