//! What each ipset stands for, its name, its type, and the entries pods and network sets give
//! it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;

use super::desired::{IpSet, IpSetKind, SetEntry};
use super::naming;
use crate::index::ClusterIndex;
use crate::model::{Family, NetworkSet, ObjectKey, Pod, Protocol};
use crate::selector::Selector;

/// The identity of an ipset, independent of family. Equal keys share one set per family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetKey {
    /// The endpoints a selector matches: pods, and network sets' networks unless the selector
    /// matches only pods (`hash:ip` then, `hash:net` otherwise).
    Selector(Selector),
    /// Address, protocol and port of every pod with a container port of this name (of this
    /// protocol, when given), among the pods the selector matches (every pod for `None`).
    NamedPort {
        selector: Option<Selector>,
        name: String,
        protocol: Option<Protocol>,
    },
    /// Networks; `except` entries are `nomatch` and each lies inside one of `nets`.
    Nets {
        nets: Vec<IpNetwork>,
        except: Vec<IpNetwork>,
    },
    /// The endpoint addresses of a Service's EndpointSlices, with their ports when `ports`.
    Service { service: ObjectKey, ports: bool },
}

pub type SetRef = Arc<SetKey>;

impl SetKey {
    /// A named-port set; a selector matching every pod is the same set as none, and must
    /// share its name.
    pub fn named_port(selector: Option<Selector>, name: &str, protocol: Option<Protocol>) -> Self {
        SetKey::NamedPort {
            selector: selector.filter(|s| !s.is_all()),
            name: name.to_string(),
            protocol,
        }
    }

    pub fn canonical(&self) -> String {
        match self {
            SetKey::Selector(selector) => selector.to_string(),
            SetKey::NamedPort {
                selector,
                name,
                protocol,
            } => {
                let scope = selector
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "all()".to_string());
                let protocol = protocol.map(|p| p.as_str()).unwrap_or("any");
                format!("{scope};port={name}/{protocol}")
            }
            SetKey::Nets { nets, except } => {
                let mut out: String = nets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                for e in except {
                    out.push_str(&format!(" except {e}"));
                }
                out
            }
            SetKey::Service { service, ports } => {
                format!("service {service}{}", if *ports { ";ports" } else { "" })
            }
        }
    }

    pub fn name(&self, family: Family) -> String {
        let kind = match self {
            SetKey::Selector(_) => 'p',
            SetKey::NamedPort { .. } => 'n',
            SetKey::Nets { .. } => 'b',
            SetKey::Service { .. } => 's',
        };
        naming::set_name(family, kind, &self.canonical())
    }

    pub fn kind(&self) -> IpSetKind {
        match self {
            SetKey::Selector(selector) if selector.only_pods() => IpSetKind::HashIp,
            SetKey::Selector(_) | SetKey::Nets { .. } => IpSetKind::HashNet,
            SetKey::NamedPort { .. } => IpSetKind::HashIpPort,
            SetKey::Service { ports, .. } => {
                if *ports {
                    IpSetKind::HashIpPort
                } else {
                    IpSetKind::HashIp
                }
            }
        }
    }

    /// The selector whose matches are this set's pods, for sets built from pods.
    pub fn selector(&self) -> Option<&Selector> {
        match self {
            SetKey::Selector(selector) => Some(selector),
            SetKey::NamedPort { selector, .. } => selector.as_ref(),
            _ => None,
        }
    }

    /// Whether members come from pods (selectors and named ports).
    pub fn from_pods(&self) -> bool {
        matches!(self, SetKey::Selector(_) | SetKey::NamedPort { .. })
    }

    /// Whether network sets can be members.
    pub fn takes_network_sets(&self) -> bool {
        matches!(self, SetKey::Selector(s) if !s.only_pods())
    }

    pub fn description(&self) -> String {
        match self {
            SetKey::Selector(selector) if selector.only_pods() => format!("pods {selector}"),
            SetKey::Selector(selector) => format!("pods and network sets {selector}"),
            SetKey::NamedPort {
                selector,
                name,
                protocol,
            } => {
                let protocol = protocol.map(|p| p.as_str()).unwrap_or("any protocol");
                match selector {
                    Some(s) => format!("named port {name}/{protocol} of pods {s}"),
                    None => format!("named port {name}/{protocol} of every pod"),
                }
            }
            SetKey::Nets { .. } => format!("networks {}", self.canonical()),
            SetKey::Service { service, ports } => format!(
                "endpoints of service {service}{}",
                if *ports { " with their ports" } else { "" }
            ),
        }
    }

    /// An empty set of this key's type.
    pub fn empty(&self, family: Family) -> IpSet {
        IpSet {
            kind: self.kind(),
            family,
            description: self.description(),
            members: BTreeSet::new(),
        }
    }

    /// The entries a member pod gives this set.
    pub fn pod_entries(&self, pod: &Pod, family: Family) -> Vec<SetEntry> {
        let mut out = Vec::new();
        self.extend_pod_entries(pod, family, &mut out);
        out
    }

    /// The entry a member pod's address gives a set whose entries are addresses (a selector's),
    /// `None` for sets whose entries need more of the pod.
    pub fn address_entry(&self, ip: IpAddr) -> Option<SetEntry> {
        match self {
            SetKey::Selector(_) if self.kind() == IpSetKind::HashNet => Some(SetEntry::Net {
                net: IpNetwork::from(ip),
                nomatch: false,
            }),
            SetKey::Selector(_) => Some(SetEntry::Ip(ip)),
            _ => None,
        }
    }

    /// Appends the entries a member pod gives this set to `out`.
    pub fn extend_pod_entries(&self, pod: &Pod, family: Family, out: &mut Vec<SetEntry>) {
        match self {
            SetKey::Selector(_) => {
                out.extend(pod.ips_of(family).filter_map(|ip| self.address_entry(ip)));
            }
            SetKey::NamedPort { name, protocol, .. } => {
                for port in &pod.named_ports {
                    if port.name != *name || protocol.is_some_and(|p| p != port.protocol) {
                        continue;
                    }
                    out.extend(pod.ips_of(family).map(|ip| SetEntry::IpPort {
                        ip,
                        protocol: port.protocol,
                        port: port.port,
                    }));
                }
            }
            SetKey::Nets { .. } | SetKey::Service { .. } => {}
        }
    }

    /// The entries a member network set gives this set.
    pub fn network_set_entries(&self, set: &NetworkSet, family: Family) -> Vec<SetEntry> {
        if !self.takes_network_sets() {
            return Vec::new();
        }
        set.nets
            .iter()
            .filter(|net| Family::of_net(net) == family)
            .flat_map(|net| net_entries(*net, false))
            .collect()
    }

    /// The entries that come from no member: networks and service endpoints.
    pub fn static_entries(&self, index: &ClusterIndex, family: Family) -> Vec<SetEntry> {
        match self {
            SetKey::Nets { nets, except } => nets_entries(nets, except, family),
            SetKey::Service { service, ports } => {
                let mut out = Vec::new();
                for slice in index.slices_of_service(service) {
                    for ip in slice.addresses.iter().filter(|ip| Family::of(ip) == family) {
                        if *ports {
                            out.extend(slice.ports.iter().map(|(protocol, port)| {
                                SetEntry::IpPort {
                                    ip: *ip,
                                    protocol: *protocol,
                                    port: *port,
                                }
                            }));
                        } else {
                            out.push(SetEntry::Ip(*ip));
                        }
                    }
                }
                out
            }
            _ => Vec::new(),
        }
    }
}

/// `hash:net` cannot hold a /0, so a whole address space becomes its two halves (the dataplane
/// splits it). An `except` that covers the whole of its network leaves that network out.
fn nets_entries(nets: &[IpNetwork], except: &[IpNetwork], family: Family) -> Vec<SetEntry> {
    let mut entries = Vec::new();
    for net in nets.iter().filter(|n| Family::of_net(n) == family) {
        if except
            .iter()
            .any(|e| e.prefix() <= net.prefix() && e.contains(net.network()))
        {
            continue;
        }
        entries.extend(net_entries(*net, false));
    }
    for e in except.iter().filter(|n| Family::of_net(n) == family) {
        let inside = nets
            .iter()
            .any(|n| e.prefix() > n.prefix() && n.contains(e.network()));
        if inside {
            entries.extend(net_entries(*e, true));
        }
    }
    entries
}

/// One network as `hash:net` entries: a whole address space is its two halves.
///
/// Host bits are cleared (`10.0.0.5/8` is `10.0.0.0/8`, as the kernel stores it), so each
/// network is one entry however it was written, and the dataplane can diff entries as elements.
fn net_entries(net: IpNetwork, nomatch: bool) -> Vec<SetEntry> {
    if net.prefix() != 0 {
        let net = IpNetwork::new(net.network(), net.prefix()).unwrap_or(net);
        return vec![SetEntry::Net { net, nomatch }];
    }
    let halves: [std::net::IpAddr; 2] = match net {
        IpNetwork::V4(_) => [
            std::net::Ipv4Addr::UNSPECIFIED.into(),
            std::net::Ipv4Addr::new(128, 0, 0, 0).into(),
        ],
        IpNetwork::V6(_) => [
            std::net::Ipv6Addr::UNSPECIFIED.into(),
            std::net::Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0).into(),
        ],
    };
    halves
        .iter()
        .filter_map(|ip| IpNetwork::new(*ip, 1).ok())
        .map(|net| SetEntry::Net { net, nomatch })
        .collect()
}

/// Whether `nets` minus `not_nets` can be one `hash:net` set with `nomatch` entries, where the
/// most specific entry holding an address decides: exactly when every excluded network that
/// meets an allowed one lies strictly inside it (two CIDRs that meet nest).
pub fn nomatch_fits(nets: &[IpNetwork], not_nets: &[IpNetwork]) -> bool {
    not_nets.iter().all(|e| {
        nets.iter()
            .filter(|n| n.contains(e.network()) || e.contains(n.network()))
            .all(|n| e.prefix() > n.prefix() && n.contains(e.network()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn members(key: &SetKey, family: Family) -> Vec<String> {
        let mut out: Vec<String> = key
            .static_entries(&ClusterIndex::new(), family)
            .iter()
            .map(|m| m.to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn excepts_become_nomatch_entries() {
        let key = SetKey::Nets {
            nets: nets(&["10.0.0.0/8"]),
            except: nets(&["10.1.0.0/16"]),
        };
        assert_eq!(
            members(&key, Family::V4),
            ["10.0.0.0/8", "10.1.0.0/16 nomatch"]
        );
        assert_eq!(key.canonical(), "10.0.0.0/8 except 10.1.0.0/16");
        assert_eq!(key.kind(), IpSetKind::HashNet);
    }

    #[test]
    fn a_whole_address_space_is_split_in_halves() {
        let key = SetKey::Nets {
            nets: nets(&["0.0.0.0/0", "::/0"]),
            except: vec![],
        };
        assert_eq!(members(&key, Family::V4), ["0.0.0.0/1", "128.0.0.0/1"]);
        assert_eq!(members(&key, Family::V6), ["8000::/1", "::/1"]);
    }

    #[test]
    fn an_except_covering_the_network_empties_it() {
        let key = SetKey::Nets {
            nets: nets(&["10.0.0.0/8"]),
            except: nets(&["10.0.0.0/8"]),
        };
        assert!(members(&key, Family::V4).is_empty());
    }

    #[test]
    fn several_networks_share_one_set() {
        let key = SetKey::Nets {
            nets: nets(&["10.0.0.0/8", "192.168.0.0/16"]),
            except: vec![],
        };
        assert_eq!(key.canonical(), "10.0.0.0/8,192.168.0.0/16");
        assert_eq!(members(&key, Family::V4), ["10.0.0.0/8", "192.168.0.0/16"]);
        assert!(members(&key, Family::V6).is_empty());
    }

    #[test]
    fn nomatch_fits_only_when_the_most_specific_entry_decides_rightly() {
        assert!(nomatch_fits(
            &nets(&["10.0.0.0/8"]),
            &nets(&["10.1.0.0/16"])
        ));
        assert!(nomatch_fits(
            &nets(&["10.0.0.0/8"]),
            &nets(&["192.168.0.0/16"])
        ));
        // The excluded network holds an allowed one: the allowed one would win inside it.
        assert!(!nomatch_fits(
            &nets(&["10.1.2.0/24"]),
            &nets(&["10.1.0.0/16"])
        ));
        assert!(!nomatch_fits(
            &nets(&["10.0.0.0/8", "10.1.2.0/24"]),
            &nets(&["10.1.0.0/16"])
        ));
        // Equal networks cannot be both an entry and its nomatch.
        assert!(!nomatch_fits(
            &nets(&["10.0.0.0/8"]),
            &nets(&["10.0.0.0/8"])
        ));
    }

    #[test]
    fn selector_sets_hold_host_networks_when_network_sets_can_join() {
        let pod = Pod {
            key: ObjectKey::new("a", "p"),
            node: None,
            ips: vec!["10.0.0.1".parse().unwrap()],
            labels: Default::default(),
            named_ports: vec![],
            service_account: None,
        };
        let pods_only =
            SetKey::Selector(Selector::parse("projectcalico.org/orchestrator == 'k8s'").unwrap());
        assert_eq!(pods_only.kind(), IpSetKind::HashIp);
        assert_eq!(
            pods_only.pod_entries(&pod, Family::V4)[0].to_string(),
            "10.0.0.1"
        );
        let any = SetKey::Selector(Selector::parse("role == 'db'").unwrap());
        assert_eq!(any.kind(), IpSetKind::HashNet);
        assert_eq!(
            any.pod_entries(&pod, Family::V4)[0].to_string(),
            "10.0.0.1/32"
        );
    }
}
