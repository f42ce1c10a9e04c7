//! One spelling for set elements, so desired members and `ipset save` output compare equal.
//!
//! What the kernel prints differs from what we write (verified with ipset 7.17):
//! - `hash:net` prints a host network without its prefix (`192.168.1.5`, `2001:db8::1`);
//! - it normalises host bits (`172.16.5.5/12` becomes `172.16.0.0/12`) and IPv6 spellings;
//! - `hash:ip,port` prints protocol names for numbers (`10.0.0.1,6:81` becomes `…,tcp:81`);
//! - `nomatch` follows the element (`10.1.0.0/16 nomatch`), and `del` refuses it;
//! - `hash:net` rejects a `/0` ("The value of the CIDR parameter of the IP address is
//!   invalid"), so `/0` is stored as its two `/1` halves, as Calico does.
//!
//! Elements are compared without the `nomatch` flag, which is carried beside them: the flag
//! can be flipped in place with `add -exist`, without a window where the element is absent.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::compiler::desired::{IpSet, IpSetKind, SetEntry};
use crate::model::{Family, Protocol};

/// Set elements (canonical text, no flag) and whether each is `nomatch`.
pub type Elements = BTreeMap<String, bool>;

/// The elements the kernel should hold for a desired set.
///
/// When two entries become the same element with different flags (`X` and `X nomatch`, or a
/// `/0` next to one of its halves), `nomatch` wins: excluding an address from an allow-list
/// fails closed.
pub fn desired_elements(set: &IpSet) -> Elements {
    let mut elements = Elements::new();
    for entry in &set.members {
        for (element, nomatch) in kernel_elements(entry) {
            *elements.entry(element).or_insert(nomatch) |= nomatch;
        }
    }
    elements
}

/// How many elements the kernel will hold for a desired set. Only `hash:net` entries can split
/// (`/0`) or merge (an entry and its `nomatch` twin); the others map one to one.
pub fn desired_element_count(set: &IpSet) -> usize {
    match set.kind {
        IpSetKind::HashNet => desired_elements(set).len(),
        IpSetKind::HashIp | IpSetKind::HashIpPort => set.members.len(),
    }
}

fn kernel_elements(entry: &SetEntry) -> Vec<(String, bool)> {
    match entry {
        SetEntry::Ip(ip) => vec![(ip.to_string(), false)],
        SetEntry::Net { net, nomatch } if net.prefix() == 0 => {
            let halves: [IpAddr; 2] = match net {
                IpNetwork::V4(_) => [
                    Ipv4Addr::UNSPECIFIED.into(),
                    Ipv4Addr::new(128, 0, 0, 0).into(),
                ],
                IpNetwork::V6(_) => [
                    Ipv6Addr::UNSPECIFIED.into(),
                    Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0).into(),
                ],
            };
            halves
                .into_iter()
                .map(|half| (format!("{half}/1"), *nomatch))
                .collect()
        }
        SetEntry::Net { net, nomatch } => {
            vec![(format!("{}/{}", net.network(), net.prefix()), *nomatch)]
        }
        SetEntry::IpPort { ip, protocol, port } => {
            vec![(format!("{ip},{protocol}:{port}"), false)]
        }
    }
}

/// The canonical spelling of an element as `ipset save` printed it. Text that does not parse
/// (another type's syntax, a protocol Palisade never writes) is kept as printed: it can never
/// equal a desired element, so it is deleted, and `del` accepts what `save` printed.
pub fn canonical_kernel_element(kind: IpSetKind, family: Family, printed: &str) -> String {
    let parsed = match kind {
        IpSetKind::HashIp => printed.parse::<IpAddr>().ok().map(|ip| ip.to_string()),
        IpSetKind::HashNet => parse_net(printed, family),
        IpSetKind::HashIpPort => parse_ip_port(printed),
    };
    parsed.unwrap_or_else(|| printed.to_string())
}

fn parse_net(printed: &str, family: Family) -> Option<String> {
    let net: IpNetwork = match printed.split_once('/') {
        Some(_) => printed.parse().ok()?,
        None => {
            let ip: IpAddr = printed.parse().ok()?;
            let host_prefix = match family {
                Family::V4 => 32,
                Family::V6 => 128,
            };
            IpNetwork::new(ip, host_prefix).ok()?
        }
    };
    Some(format!("{}/{}", net.network(), net.prefix()))
}

fn parse_ip_port(printed: &str) -> Option<String> {
    let (ip, protocol_port) = printed.split_once(',')?;
    let ip: IpAddr = ip.parse().ok()?;
    let (protocol, port) = protocol_port.split_once(':')?;
    let protocol = Protocol::ALL
        .into_iter()
        .find(|known| known.as_str() == protocol)?;
    let port: u16 = port.parse().ok()?;
    Some(format!("{ip},{protocol}:{port}"))
}

/// The entry a canonical kernel element stands for (see [`canonical_kernel_element`]), or
/// `None` for one Palisade never writes.
pub fn kernel_entry(kind: IpSetKind, element: &str, nomatch: bool) -> Option<SetEntry> {
    match kind {
        IpSetKind::HashIp => element.parse().ok().map(SetEntry::Ip),
        IpSetKind::HashNet => {
            let net = element.parse().ok()?;
            Some(SetEntry::Net { net, nomatch })
        }
        IpSetKind::HashIpPort => {
            let (ip, protocol_port) = element.split_once(',')?;
            let (protocol, port) = protocol_port.split_once(':')?;
            Some(SetEntry::IpPort {
                ip: ip.parse().ok()?,
                protocol: Protocol::ALL
                    .into_iter()
                    .find(|known| known.as_str() == protocol)?,
                port: port.parse().ok()?,
            })
        }
    }
}

/// Whether an entry can live in a set of this kind and family; checked before anything is
/// written, because `ipset restore` stops at the first bad line and leaves the rest unapplied.
pub fn entry_fits(entry: &SetEntry, kind: IpSetKind, family: Family) -> bool {
    match (entry, kind) {
        (SetEntry::Ip(ip), IpSetKind::HashIp) => Family::of(ip) == family,
        // Host bits would make two entries one kernel element.
        (SetEntry::Net { net, .. }, IpSetKind::HashNet) => {
            Family::of_net(net) == family && net.ip() == net.network()
        }
        (SetEntry::IpPort { ip, .. }, IpSetKind::HashIpPort) => Family::of(ip) == family,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn net(text: &str, nomatch: bool) -> SetEntry {
        SetEntry::Net {
            net: text.parse().expect("test network"),
            nomatch,
        }
    }

    fn set(kind: IpSetKind, family: Family, members: Vec<SetEntry>) -> IpSet {
        IpSet {
            kind,
            family,
            description: String::new(),
            members: members.into_iter().collect::<BTreeSet<_>>(),
        }
    }

    #[test]
    fn kernel_spellings_meet_desired_spellings() {
        // Left: as `ipset save` printed it (ipset 7.17). Right: what we wrote.
        let cases = [
            (
                IpSetKind::HashNet,
                Family::V4,
                "192.168.1.5",
                "192.168.1.5/32",
            ),
            (
                IpSetKind::HashNet,
                Family::V4,
                "172.16.0.0/12",
                "172.16.0.0/12",
            ),
            (
                IpSetKind::HashNet,
                Family::V6,
                "2001:db8::1",
                "2001:db8::1/128",
            ),
            (
                IpSetKind::HashNet,
                Family::V6,
                "2001:db8:1::/48",
                "2001:db8:1::/48",
            ),
            (
                IpSetKind::HashIp,
                Family::V6,
                "::ffff:1.2.3.4",
                "::ffff:1.2.3.4",
            ),
            (IpSetKind::HashIp, Family::V6, "2001:db8::5", "2001:db8::5"),
            (
                IpSetKind::HashIpPort,
                Family::V4,
                "10.0.0.1,tcp:80",
                "10.0.0.1,tcp:80",
            ),
            (
                IpSetKind::HashIpPort,
                Family::V6,
                "fd00::1,sctp:9",
                "fd00::1,sctp:9",
            ),
        ];
        for (kind, family, printed, expected) in cases {
            assert_eq!(canonical_kernel_element(kind, family, printed), expected);
        }
        // Protocols Palisade never writes stay as printed, so they get deleted.
        assert_eq!(
            canonical_kernel_element(IpSetKind::HashIpPort, Family::V4, "10.0.0.1,icmp:ping"),
            "10.0.0.1,icmp:ping"
        );
    }

    #[test]
    fn desired_elements_match_what_the_kernel_prints() {
        let ipv6 = "2001:DB8:0::0:5".parse().expect("address");
        let desired = set(IpSetKind::HashIp, Family::V6, vec![SetEntry::Ip(ipv6)]);
        let printed = canonical_kernel_element(IpSetKind::HashIp, Family::V6, "2001:db8::5");
        assert_eq!(
            desired_elements(&desired),
            Elements::from([(printed, false)])
        );

        let nets = set(
            IpSetKind::HashNet,
            Family::V4,
            vec![
                net("10.0.0.0/8", false),
                net("10.1.0.0/16", true),
                net("192.168.1.5/32", false),
            ],
        );
        let kernel: Elements = [
            ("10.0.0.0/8", false),
            ("10.1.0.0/16", true),
            ("192.168.1.5", false),
        ]
        .into_iter()
        .map(|(printed, nomatch)| {
            (
                canonical_kernel_element(IpSetKind::HashNet, Family::V4, printed),
                nomatch,
            )
        })
        .collect();
        assert_eq!(desired_elements(&nets), kernel);
    }

    #[test]
    fn slash_zero_becomes_two_halves_and_nomatch_wins_collisions() {
        let everything = set(
            IpSetKind::HashNet,
            Family::V4,
            vec![net("0.0.0.0/0", false), net("128.0.0.0/1", true)],
        );
        assert_eq!(
            desired_elements(&everything),
            Elements::from([
                ("0.0.0.0/1".to_string(), false),
                ("128.0.0.0/1".to_string(), true),
            ])
        );
        let everything_v6 = set(IpSetKind::HashNet, Family::V6, vec![net("::/0", false)]);
        assert_eq!(
            desired_elements(&everything_v6)
                .into_keys()
                .collect::<Vec<_>>(),
            ["8000::/1", "::/1"]
        );
    }

    #[test]
    fn entries_must_fit_kind_and_family() {
        let v4 = SetEntry::Ip("10.0.0.1".parse().expect("address"));
        assert!(entry_fits(&v4, IpSetKind::HashIp, Family::V4));
        assert!(!entry_fits(&v4, IpSetKind::HashIp, Family::V6));
        assert!(!entry_fits(&v4, IpSetKind::HashNet, Family::V4));
        assert!(entry_fits(
            &net("fd00::/8", true),
            IpSetKind::HashNet,
            Family::V6
        ));
    }
}
