//! What a process's sockets are, from `/proc/<pid>/net`: by inode, the protocol, the TCP
//! state and the far end, so that a report can tell a connection kept open for good from
//! one the peer closed and the process never did (CLOSE_WAIT: a leak).

use std::collections::HashMap;

/// `socket:[inode]` → e.g. `tcp established to 198.19.0.250:6443`, `tcp listening on :9617`,
/// `netlink 12`, `unix`.
pub fn by_inode(pid: u32) -> HashMap<String, String> {
    let mut sockets = HashMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) =
                (fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let described = match *state {
                "0A" => format!("tcp listening on :{}", port(fields[1])),
                state => format!("tcp {} to {}", tcp_state(state), endpoint(remote)),
            };
            sockets.insert(inode.to_string(), described);
        }
    }
    let netlink = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")).unwrap_or_default();
    for line in netlink.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let (Some(protocol), Some(inode)) = (fields.get(1), fields.last()) {
            sockets.insert(inode.to_string(), format!("netlink {protocol}"));
        }
    }
    let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    for line in unix.lines().skip(1) {
        if let Some(inode) = line.split_whitespace().nth(6) {
            sockets.insert(inode.to_string(), "unix".to_string());
        }
    }
    sockets
}

fn tcp_state(code: &str) -> &'static str {
    match code {
        "01" => "established",
        "02" => "syn-sent",
        "06" => "time-wait",
        "07" => "closed",
        "08" => "close-wait",
        "04" | "05" => "fin-wait",
        "09" | "0B" => "closing",
        _ => "other",
    }
}

fn port(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        .unwrap_or(0)
}

/// `0100007F:1F90` (little-endian IPv4) → `127.0.0.1:8080`; IPv6 as the kernel prints it.
fn endpoint(address: &str) -> String {
    let Some((ip, _)) = address.rsplit_once(':') else {
        return address.to_string();
    };
    match u32::from_str_radix(ip, 16) {
        Ok(raw) if ip.len() == 8 => {
            format!(
                "{}:{}",
                std::net::Ipv4Addr::from(raw.swap_bytes()),
                port(address)
            )
        }
        _ => format!("[{ip}]:{}", port(address)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_addresses_read_as_people_write_them() {
        assert_eq!(super::endpoint("0100007F:1F90"), "127.0.0.1:8080");
        assert_eq!(super::port("00000000:2591"), 9617);
    }
}
