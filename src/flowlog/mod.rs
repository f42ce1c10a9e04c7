//! The denied-flow log: the packets the denial rules send to Palisade's NFLOG group, read over
//! netlink, deduplicated and rate-limited per flow, and written as one structured log line
//! per flow and window (target `palisade::denied_flow`).
//!
//! A reader thread owns the socket and the window; the lines it lets through go to the sync
//! thread, which knows the cluster: it names the pods at both ends and the rule that denied.

mod nflog;
pub mod packet;
pub mod window;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::compiler::denied_log::DeniedFlowTag;
use crate::metrics::Metrics;
use crate::model::Enforcement;
use packet::PacketHeader;
pub use window::{FlowKey, FlowLine, FlowWindow};

#[derive(Debug, thiserror::Error)]
pub enum FlowLogError {
    #[error("netlink: {stage}: {source}")]
    Netlink {
        stage: &'static str,
        source: std::io::Error,
    },
    #[error("the kernel refused to {stage}: error {code} (is another program reading this NFLOG group, or is CAP_NET_ADMIN missing?)")]
    Refused { stage: &'static str, code: i32 },
    #[error("undecodable netlink message: {0}")]
    Decode(String),
    #[error("the socket's buffer overflowed: the kernel dropped logged packets")]
    Overrun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeniedLogConfig {
    pub group: u16,
    pub window: Duration,
    pub lines_per_second: u32,
}

/// Flows tracked at once: a flood of distinct flows costs at most this much memory.
const MAX_FLOWS: usize = 16_384;
/// How often ended windows are summarized and shutdown is noticed.
const POLL: Duration = Duration::from_millis(250);

/// Binds the group and starts the reader; `Err` if the kernel refuses the group.
pub fn spawn(
    config: DeniedLogConfig,
    lines: Sender<Vec<FlowLine>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, FlowLogError> {
    let socket = nflog::NflogSocket::bind(config.group, POLL)?;
    std::thread::Builder::new()
        .name("palisade-flow-log".into())
        .spawn(move || read(socket, config, lines, metrics, stop))
        .map_err(|source| FlowLogError::Netlink {
            stage: "start the reader thread",
            source,
        })
}

fn read(
    mut socket: nflog::NflogSocket,
    config: DeniedLogConfig,
    lines: Sender<Vec<FlowLine>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) {
    tracing::info!(
        group = config.group,
        "denied-flow log reading its NFLOG group"
    );
    let mut window = FlowWindow::new(
        config.window,
        config.lines_per_second,
        MAX_FLOWS,
        Instant::now(),
    );
    let mut logged = Vec::new();
    let mut last_expiry = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        logged.clear();
        match socket.receive(&mut logged) {
            Ok(()) => {}
            Err(FlowLogError::Overrun) => metrics.denied_flow_overruns.inc(),
            Err(error) => {
                metrics.denied_flow_errors.inc();
                tracing::warn!(%error, "denied-flow log: reading the NFLOG group failed");
                std::thread::sleep(POLL);
            }
        }
        let now = Instant::now();
        let mut out = Vec::new();
        for packet in &logged {
            let Some(tag) = DeniedFlowTag::parse(&packet.prefix) else {
                continue;
            };
            let Some(header) = PacketHeader::parse(&packet.payload) else {
                metrics.denied_flow_errors.inc();
                continue;
            };
            out.extend(window.observe(FlowKey::new(tag, &header), now));
        }
        if now.saturating_duration_since(last_expiry) >= POLL {
            out.extend(window.expire(now));
            last_expiry = now;
        }
        let suppressed = window.take_suppressed();
        if suppressed > 0 {
            metrics.denied_flow_suppressed.inc_by(suppressed);
        }
        if !out.is_empty() && lines.send(out).is_err() {
            return;
        }
    }
}

/// A line as written: the flow with its ends and its rule named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedFlowRecord {
    pub verdict: &'static str,
    pub direction: String,
    pub source: String,
    pub destination: String,
    pub protocol: String,
    pub port: Option<u16>,
    pub icmp: Option<(u8, u8)>,
    pub chain: String,
    pub rule: String,
    pub packets: u64,
    pub repeated: bool,
}

impl DeniedFlowRecord {
    /// `pod_at` names the pod holding an address, `rule_of` the comment of the rule a tag
    /// stands for.
    pub fn new(
        line: &FlowLine,
        pod_at: impl Fn(&std::net::IpAddr) -> Option<String>,
        rule_of: impl Fn(&DeniedFlowTag) -> Option<String>,
    ) -> Self {
        let flow = &line.flow;
        let name = |ip: &std::net::IpAddr| pod_at(ip).unwrap_or_else(|| ip.to_string());
        Self {
            verdict: match flow.tag.enforcement {
                Enforcement::Enforce => "denied",
                Enforcement::Audit => "audited",
            },
            direction: flow.tag.direction.to_string(),
            source: name(&flow.src),
            destination: name(&flow.dst),
            protocol: flow.protocol_name(),
            port: flow.port,
            icmp: flow.icmp,
            chain: flow.tag.chain.clone(),
            rule: rule_of(&flow.tag).unwrap_or_default(),
            packets: line.packets,
            repeated: line.repeated,
        }
    }

    pub fn write(&self) {
        let port = self.port.map(|p| p.to_string()).unwrap_or_default();
        let icmp = self
            .icmp
            .map(|(t, c)| format!("{t}/{c}"))
            .unwrap_or_default();
        let message = if self.repeated {
            "denied flow repeated"
        } else {
            "denied flow"
        };
        tracing::info!(
            target: "palisade::denied_flow",
            verdict = self.verdict,
            direction = %self.direction,
            src = %self.source,
            dst = %self.destination,
            protocol = %self.protocol,
            port = %port,
            icmp = %icmp,
            chain = %self.chain,
            rule = %self.rule,
            packets = self.packets,
            "{message}"
        );
    }
}
