//! The few header fields of a logged packet the denied-flow log reports: addresses, protocol,
//! destination port or ICMP type. NFLOG hands over the packet from its network header on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// What one logged packet says about its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PacketHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IP protocol number (IPv6: the first next-header).
    pub protocol: u8,
    /// TCP, UDP and SCTP: the destination port.
    pub port: Option<u16>,
    /// ICMP and ICMPv6: type and code.
    pub icmp: Option<(u8, u8)>,
}

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;

impl PacketHeader {
    /// `None` for anything too short or not IP.
    pub fn parse(packet: &[u8]) -> Option<Self> {
        let version = packet.first()? >> 4;
        let (src, dst, protocol, transport) = match version {
            4 => {
                let header_len = usize::from(packet[0] & 0x0f) * 4;
                if header_len < 20 || packet.len() < 20 {
                    return None;
                }
                let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
                let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
                // A fragment after the first carries no transport header.
                let fragment_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
                let transport = if fragment_offset == 0 {
                    packet.get(header_len..).unwrap_or_default()
                } else {
                    &[]
                };
                (
                    IpAddr::V4(Ipv4Addr::from(src)),
                    IpAddr::V4(Ipv4Addr::from(dst)),
                    packet[9],
                    transport,
                )
            }
            6 => {
                let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
                let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
                (
                    IpAddr::V6(Ipv6Addr::from(src)),
                    IpAddr::V6(Ipv6Addr::from(dst)),
                    packet[6],
                    packet.get(40..).unwrap_or_default(),
                )
            }
            _ => return None,
        };
        let (port, icmp) = match protocol {
            TCP | UDP | SCTP => (
                transport
                    .get(2..4)
                    .map(|p| u16::from_be_bytes([p[0], p[1]])),
                None,
            ),
            ICMP | ICMPV6 => (None, transport.get(0..2).map(|t| (t[0], t[1]))),
            _ => (None, None),
        };
        Some(Self {
            src,
            dst,
            protocol,
            port,
            icmp,
        })
    }

    pub fn protocol_name(&self) -> String {
        match self.protocol {
            TCP => "TCP".into(),
            UDP => "UDP".into(),
            SCTP => "SCTP".into(),
            ICMP => "ICMP".into(),
            ICMPV6 => "ICMPv6".into(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(protocol: u8, transport: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0];
        packet.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        packet.extend_from_slice(transport);
        packet
    }

    #[test]
    fn reads_ports_of_tcp_udp_and_sctp_and_icmp_types() {
        let tcp = PacketHeader::parse(&ipv4(6, &[0x9c, 0x40, 0x00, 0x50])).unwrap();
        assert_eq!(tcp.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(tcp.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((tcp.protocol_name().as_str(), tcp.port), ("TCP", Some(80)));
        let udp = PacketHeader::parse(&ipv4(17, &[0, 1, 0, 53])).unwrap();
        assert_eq!(udp.port, Some(53));
        let sctp = PacketHeader::parse(&ipv4(132, &[0, 1, 0x0b, 0xb8])).unwrap();
        assert_eq!(sctp.port, Some(3000));
        let icmp = PacketHeader::parse(&ipv4(1, &[8, 0])).unwrap();
        assert_eq!((icmp.port, icmp.icmp), (None, Some((8, 0))));
        let gre = PacketHeader::parse(&ipv4(47, &[])).unwrap();
        assert_eq!((gre.protocol_name().as_str(), gre.port), ("47", None));
    }

    #[test]
    fn reads_ipv6_and_rejects_what_is_not_ip() {
        let mut packet = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        packet.extend("fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        packet.extend("fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        packet.extend([0x9c, 0x40, 0x1f, 0x90]);
        let udp = PacketHeader::parse(&packet).unwrap();
        assert_eq!(udp.dst, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(udp.port, Some(8080));
        assert_eq!(PacketHeader::parse(&[]), None);
        assert_eq!(PacketHeader::parse(&[0x45, 0, 0]), None);
        assert_eq!(PacketHeader::parse(&[0x20; 40]), None);
        // A transport header cut off by the copy range: no port, still a flow.
        let short = PacketHeader::parse(&ipv4(6, &[0x9c])).unwrap();
        assert_eq!(short.port, None);
    }
}
