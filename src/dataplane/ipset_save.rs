//! Reading Palisade's sets back from `ipset save` (the `ipset list -o save` format).

use std::collections::{BTreeMap, BTreeSet};

use crate::compiler::desired::{IpSet, IpSetKind, SetEntry};
use crate::compiler::naming::is_owned_set;
use crate::model::Family;

use super::set_members::{canonical_kernel_element, desired_elements, kernel_entry, Elements};

/// An owned set as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSet {
    /// The type as printed (`hash:ip`), kept even when Palisade never creates that type, so a
    /// set of a foreign type under our prefix is replaced rather than misread.
    pub type_name: String,
    /// `None` for types without a family, or a family this code does not know.
    pub family: Option<Family>,
    pub elements: Elements,
}

impl KernelSet {
    /// Whether the set can be edited in place into one of `kind` and `family`. Otherwise it
    /// has to be destroyed and recreated: the kernel refuses to swap sets of different types.
    pub fn matches(&self, kind: IpSetKind, family: Family) -> bool {
        self.type_name == kind.as_str() && self.family == Some(family)
    }
}

impl KernelSet {
    /// The set as entries, when it is of a type and family Palisade writes and every element
    /// reads back as one, such that its desired elements are exactly what the kernel holds.
    pub fn as_ipset(&self) -> Option<IpSet> {
        let kind = kind_of(&self.type_name)?;
        let family = self.family?;
        let members = self
            .elements
            .iter()
            .map(|(element, nomatch)| kernel_entry(kind, element, *nomatch))
            .collect::<Option<BTreeSet<SetEntry>>>()?;
        let set = IpSet {
            kind,
            family,
            description: String::new(),
            members,
        };
        (desired_elements(&set) == self.elements).then_some(set)
    }
}

/// Owned sets by name; every other set is skipped.
pub fn parse_ipset_save(text: &str) -> BTreeMap<String, KernelSet> {
    let mut sets: BTreeMap<String, KernelSet> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("create"), Some(name)) if is_owned_set(name) => {
                let type_name = words.next().unwrap_or_default().to_string();
                let mut family = None;
                while let Some(word) = words.next() {
                    if word == "family" {
                        family = match words.next() {
                            Some("inet") => Some(Family::V4),
                            Some("inet6") => Some(Family::V6),
                            _ => None,
                        };
                    }
                }
                sets.insert(
                    name.to_string(),
                    KernelSet {
                        type_name,
                        family,
                        elements: Elements::new(),
                    },
                );
            }
            (Some("add"), Some(name)) if is_owned_set(name) => {
                let Some(set) = sets.get_mut(name) else {
                    continue;
                };
                let Some(printed) = words.next() else {
                    continue;
                };
                let nomatch = words.any(|word| word == "nomatch");
                let element = match (kind_of(&set.type_name), set.family) {
                    (Some(kind), Some(family)) => canonical_kernel_element(kind, family, printed),
                    _ => printed.to_string(),
                };
                set.elements.insert(element, nomatch);
            }
            _ => {}
        }
    }
    sets
}

fn kind_of(type_name: &str) -> Option<IpSetKind> {
    [IpSetKind::HashIp, IpSetKind::HashNet, IpSetKind::HashIpPort]
        .into_iter()
        .find(|kind| kind.as_str() == type_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real `ipset save` output (ipset 7.17, kernel 6.18) of sets created by our own text.
    const SAVED: &str = r#"create pal4-n hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x3ae5e8d2
add pal4-n 0.0.0.0/1
add pal4-n 10.2.0.0/16
add pal4-n 10.1.0.0/16 nomatch
add pal4-n 192.168.1.5
create pal4-p hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x749cb8fa
add pal4-p 10.0.0.1,sctp:9
add pal4-p 10.0.0.1,tcp:80
create pal6-n hash:net family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0xa2bd9c87
add pal6-n 2001:db8::1
add pal6-n 2001:db8:1::/48 nomatch
create pal6-i hash:ip family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0xe7219b12
add pal6-i ::ffff:1.2.3.4
create foo hash:ip family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0xa8ecd317
add foo 1.2.3.4 comment "hi there"
create pal4-m hash:mac hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1
add pal4-m 00:11:22:33:44:55
"#;

    #[test]
    fn owned_sets_are_parsed_into_canonical_elements() {
        let sets = parse_ipset_save(SAVED);
        assert_eq!(
            sets.keys().collect::<Vec<_>>(),
            ["pal4-m", "pal4-n", "pal4-p", "pal6-i", "pal6-n"]
        );
        let nets = &sets["pal4-n"];
        assert!(nets.matches(IpSetKind::HashNet, Family::V4));
        assert!(!nets.matches(IpSetKind::HashNet, Family::V6));
        assert_eq!(
            nets.elements,
            Elements::from([
                ("0.0.0.0/1".to_string(), false),
                ("10.1.0.0/16".to_string(), true),
                ("10.2.0.0/16".to_string(), false),
                ("192.168.1.5/32".to_string(), false),
            ])
        );
        assert_eq!(
            sets["pal6-n"].elements,
            Elements::from([
                ("2001:db8::1/128".to_string(), false),
                ("2001:db8:1::/48".to_string(), true),
            ])
        );
        assert!(sets["pal4-p"].elements.contains_key("10.0.0.1,tcp:80"));
        let mac = &sets["pal4-m"];
        assert_eq!(mac.family, None);
        assert!(!mac.matches(IpSetKind::HashIp, Family::V4));
        assert!(mac.elements.contains_key("00:11:22:33:44:55"));
    }
}
