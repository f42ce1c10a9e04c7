//! What each ipset stands for, its name, and its members.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::desired::{IpSet, IpSetKind, SetEntry};
use super::naming;
use crate::index::ClusterIndex;
use crate::model::{Family, IpBlock, NamespaceScope, Pod, Protocol, Selection};

/// The identity of an ipset, independent of family. Equal keys share one set per family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetKey {
    /// Addresses of the pods in a selection (`hash:ip`).
    Pods(Selection),
    /// Address, protocol and port of every pod in a selection that has this named port
    /// (`hash:ip,port`).
    NamedPort {
        selection: Selection,
        name: String,
        protocol: Protocol,
    },
    /// An ipBlock (`hash:net`, with `except` entries as `nomatch`).
    Block(IpBlock),
}

impl SetKey {
    pub fn canonical(&self) -> String {
        match self {
            SetKey::Pods(selection) => selection.to_string(),
            SetKey::NamedPort {
                selection,
                name,
                protocol,
            } => format!("{selection};port={name}/{protocol}"),
            SetKey::Block(block) => block.to_string(),
        }
    }

    pub fn name(&self, family: Family) -> String {
        let kind = match self {
            SetKey::Pods(_) => 'p',
            SetKey::NamedPort { .. } => 'n',
            SetKey::Block(_) => 'b',
        };
        naming::set_name(family, kind, &self.canonical())
    }

    pub fn kind(&self) -> IpSetKind {
        match self {
            SetKey::Pods(_) => IpSetKind::HashIp,
            SetKey::NamedPort { .. } => IpSetKind::HashIpPort,
            SetKey::Block(_) => IpSetKind::HashNet,
        }
    }

    pub fn selection(&self) -> Option<&Selection> {
        match self {
            SetKey::Pods(selection) | SetKey::NamedPort { selection, .. } => Some(selection),
            SetKey::Block(_) => None,
        }
    }

    fn description(&self) -> String {
        match self {
            SetKey::Pods(selection) => format!("pods {selection}"),
            SetKey::NamedPort {
                selection,
                name,
                protocol,
            } => format!("named port {name}/{protocol} of pods {selection}"),
            SetKey::Block(block) => format!("ipBlock {block}"),
        }
    }

    /// The set with its members computed from scratch. `namespaces` are the namespaces the
    /// selection covers (resolved by the caller, who keeps them for later updates).
    pub fn build<'a>(
        &self,
        index: &ClusterIndex,
        family: Family,
        namespaces: impl Iterator<Item = &'a str>,
    ) -> IpSet {
        let mut members = BTreeSet::new();
        match self {
            SetKey::Block(block) => members.extend(block_entries(block)),
            SetKey::Pods(selection) | SetKey::NamedPort { selection, .. } => {
                let mut add = |pod: &Pod| {
                    if selection.pods.matches(&pod.labels) {
                        members.extend(self.pod_entries(pod, family));
                    }
                };
                match (self, &selection.namespaces) {
                    // Every namespace: the pods that have the port name are the fewer.
                    (SetKey::NamedPort { name, .. }, NamespaceScope::Selector(all))
                        if all.is_everything() =>
                    {
                        index.pods_with_port_name(name).for_each(|p| add(p))
                    }
                    _ => {
                        for namespace in namespaces {
                            index.pods_in_namespace(namespace).for_each(|p| add(p));
                        }
                    }
                }
            }
        }
        IpSet {
            kind: self.kind(),
            family,
            description: self.description(),
            members,
        }
    }

    /// The entries a pod contributes to this set, if it is in the selection.
    pub fn pod_entries(&self, pod: &Pod, family: Family) -> Vec<SetEntry> {
        match self {
            SetKey::Pods(_) => pod.ips_of(family).map(SetEntry::Ip).collect(),
            SetKey::NamedPort { name, protocol, .. } => match pod.named_port(name, *protocol) {
                Some(port) => pod
                    .ips_of(family)
                    .map(|ip| SetEntry::IpPort {
                        ip,
                        protocol: *protocol,
                        port,
                    })
                    .collect(),
                None => Vec::new(),
            },
            SetKey::Block(_) => Vec::new(),
        }
    }
}

/// `hash:net` cannot hold a /0, so a whole address space becomes its two halves. An `except`
/// that covers the whole block leaves nothing.
fn block_entries(block: &IpBlock) -> Vec<SetEntry> {
    if block
        .except
        .iter()
        .any(|e| e.prefix() <= block.cidr.prefix())
    {
        return Vec::new();
    }
    let mut entries: Vec<SetEntry> = split_default_route(block.cidr)
        .into_iter()
        .map(|net| SetEntry::Net {
            net,
            nomatch: false,
        })
        .collect();
    entries.extend(block.except.iter().map(|net| SetEntry::Net {
        net: *net,
        nomatch: true,
    }));
    entries
}

fn split_default_route(net: IpNetwork) -> Vec<IpNetwork> {
    if net.prefix() != 0 {
        return vec![net];
    }
    let halves: [IpAddr; 2] = match net {
        IpNetwork::V4(_) => [
            Ipv4Addr::new(0, 0, 0, 0).into(),
            Ipv4Addr::new(128, 0, 0, 0).into(),
        ],
        IpNetwork::V6(_) => [
            Ipv6Addr::UNSPECIFIED.into(),
            Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0).into(),
        ],
    };
    halves
        .iter()
        .filter_map(|ip| IpNetwork::new(*ip, 1).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cidr: &str, except: &[&str]) -> IpBlock {
        IpBlock {
            cidr: cidr.parse().unwrap(),
            except: except.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn block_excepts_become_nomatch_entries() {
        let set = SetKey::Block(block("10.0.0.0/8", &["10.1.0.0/16"])).build(
            &ClusterIndex::new(),
            Family::V4,
            std::iter::empty(),
        );
        let text: Vec<String> = set.members.iter().map(|m| m.to_string()).collect();
        assert_eq!(text, ["10.0.0.0/8", "10.1.0.0/16 nomatch"]);
    }

    #[test]
    fn a_whole_address_space_is_split_in_halves() {
        let set = SetKey::Block(block("0.0.0.0/0", &[])).build(
            &ClusterIndex::new(),
            Family::V4,
            std::iter::empty(),
        );
        let text: Vec<String> = set.members.iter().map(|m| m.to_string()).collect();
        assert_eq!(text, ["0.0.0.0/1", "128.0.0.0/1"]);
        let set = SetKey::Block(block("::/0", &[])).build(
            &ClusterIndex::new(),
            Family::V6,
            std::iter::empty(),
        );
        let text: Vec<String> = set.members.iter().map(|m| m.to_string()).collect();
        assert_eq!(text, ["::/1", "8000::/1"]);
    }

    #[test]
    fn an_except_covering_the_block_empties_it() {
        let set = SetKey::Block(block("10.0.0.0/8", &["10.0.0.0/8"])).build(
            &ClusterIndex::new(),
            Family::V4,
            std::iter::empty(),
        );
        assert!(set.members.is_empty());
    }
}
