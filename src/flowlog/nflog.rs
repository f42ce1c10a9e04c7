//! The NFLOG group's netlink socket: bound once, then read for the packets the denial rules
//! send it (prefix and the first bytes of each packet).

use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};

use super::FlowLogError;

/// Enough of a packet for its IP header (up to 60 bytes for IPv4, 40 for IPv6) and ports.
const COPY_RANGE: u32 = 128;
/// The kernel sends a batch when it holds this many packets, or after the timeout: a single
/// denied packet reaches the log within 50 ms, a flood in batches.
const QUEUE_THRESHOLD: u32 = 32;
const FLUSH_HUNDREDTHS: u32 = 5;
const RECEIVE_BUFFER: usize = 4 << 20;

/// One packet the kernel logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub prefix: String,
    pub payload: Vec<u8>,
}

pub struct NflogSocket {
    socket: Socket,
    buffer: Vec<u8>,
}

impl NflogSocket {
    /// Binds `group` for IPv4 and IPv6. Fails when the kernel refuses (no CAP_NET_ADMIN, or
    /// another process holds the group).
    pub fn bind(group: u16, poll: Duration) -> Result<Self, FlowLogError> {
        let io = |stage: &'static str| move |source| FlowLogError::Netlink { stage, source };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io("open socket"))?;
        socket.bind_auto().map_err(io("bind socket"))?;
        let handle = socket2::SockRef::from(&socket);
        handle
            .set_read_timeout(Some(poll))
            .map_err(io("set receive timeout"))?;
        // A larger buffer rides out bursts; what still overflows is reported as lost.
        let _ = socket.set_rx_buf_sz(RECEIVE_BUFFER);
        let mut this = Self {
            socket,
            buffer: vec![0; 1 << 16],
        };
        for family in [NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6] {
            this.request(config_request(family, 0, vec![ConfigCmd::PfBind.into()]))?;
        }
        this.request(config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(COPY_RANGE).into(),
                Timeout::new(FLUSH_HUNDREDTHS).into(),
                netlink_packet_netfilter::nflog::ConfigNla::QThresh(QUEUE_THRESHOLD),
            ],
        ))
        .map_err(|error| match error {
            FlowLogError::Refused { code, .. } => FlowLogError::Refused {
                stage: "bind the NFLOG group",
                code,
            },
            other => other,
        })?;
        Ok(this)
    }

    /// Sends a configuration request and waits for its acknowledgement.
    fn request(
        &mut self,
        mut message: NetlinkMessage<NetfilterMessage>,
    ) -> Result<(), FlowLogError> {
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        self.socket
            .send(&bytes, 0)
            .map_err(|source| FlowLogError::Netlink {
                stage: "send configuration",
                source,
            })?;
        let size = self
            .socket
            .recv(&mut &mut self.buffer[..], 0)
            .map_err(|source| FlowLogError::Netlink {
                stage: "read acknowledgement",
                source,
            })?;
        let reply = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buffer[..size])
            .map_err(|e| FlowLogError::Decode(e.to_string()))?;
        match reply.payload {
            NetlinkPayload::Error(error) => match error.code {
                None => Ok(()),
                Some(code) => Err(FlowLogError::Refused {
                    stage: "configure NFLOG",
                    code: code.get(),
                }),
            },
            _ => Ok(()),
        }
    }

    /// The packets of one read; empty when the poll interval passed without any. Messages
    /// the kernel dropped because the buffer was full come back as `Err(Overrun)`.
    pub fn receive(&mut self, out: &mut Vec<Logged>) -> Result<(), FlowLogError> {
        let size = match self.socket.recv(&mut &mut self.buffer[..], 0) {
            Ok(size) => size,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(())
            }
            Err(error) if error.raw_os_error() == Some(105) => return Err(FlowLogError::Overrun),
            Err(source) => {
                return Err(FlowLogError::Netlink {
                    stage: "receive",
                    source,
                })
            }
        };
        let mut offset = 0;
        while offset < size {
            let bytes = &self.buffer[offset..size];
            let message = NetlinkMessage::<NetfilterMessage>::deserialize(bytes)
                .map_err(|e| FlowLogError::Decode(e.to_string()))?;
            let length = message.header.length as usize;
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = message.payload
            {
                let mut logged = Logged {
                    prefix: String::new(),
                    payload: Vec::new(),
                };
                for nla in nlas {
                    match nla {
                        PacketNla::Prefix(prefix) => {
                            logged.prefix = prefix.to_string_lossy().into_owned()
                        }
                        PacketNla::Payload(payload) => logged.payload = payload,
                        _ => {}
                    }
                }
                out.push(logged);
            }
            if length == 0 {
                break;
            }
            // Netlink messages are aligned to 4 bytes.
            offset += (length + 3) & !3;
        }
        Ok(())
    }
}
