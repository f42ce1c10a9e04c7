//! Deduplication and rate limiting of denied-flow log lines, so that a flood never floods the
//! log: a flow (its NFLOG tag, addresses, protocol and port) is written when its first packet
//! arrives; its further packets within the window are only counted, and one line with their
//! count is written when the window ends. A token bucket bounds the lines per second over
//! all flows, and the number of flows tracked at once is bounded too; what either leaves out
//! is counted, never silently lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::packet::PacketHeader;
use crate::compiler::denied_log::DeniedFlowTag;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub tag: DeniedFlowTag,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub protocol: u8,
    pub port: Option<u16>,
    pub icmp: Option<(u8, u8)>,
}

impl FlowKey {
    pub fn new(tag: DeniedFlowTag, header: &PacketHeader) -> Self {
        Self {
            tag,
            src: header.src,
            dst: header.dst,
            protocol: header.protocol,
            port: header.port,
            icmp: header.icmp,
        }
    }

    pub fn protocol_name(&self) -> String {
        PacketHeader {
            src: self.src,
            dst: self.dst,
            protocol: self.protocol,
            port: self.port,
            icmp: self.icmp,
        }
        .protocol_name()
    }
}

/// A line to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLine {
    pub flow: FlowKey,
    /// Packets the line reports: 1 for a flow's first packet, else those of the window that
    /// no line reported yet.
    pub packets: u64,
    /// A window's summary rather than its first packet.
    pub repeated: bool,
}

#[derive(Debug)]
struct Tracked {
    window_started: Instant,
    unreported: u64,
}

#[derive(Debug)]
pub struct FlowWindow {
    window: Duration,
    max_flows: usize,
    rate_per_second: f64,
    tokens: f64,
    refilled: Instant,
    flows: HashMap<FlowKey, Tracked>,
    /// Lines the rate limit or the flow bound left out since the last take.
    suppressed: u64,
}

impl FlowWindow {
    pub fn new(window: Duration, rate_per_second: u32, max_flows: usize, now: Instant) -> Self {
        let rate = f64::from(rate_per_second.max(1));
        Self {
            window,
            max_flows: max_flows.max(1),
            rate_per_second: rate,
            tokens: rate,
            refilled: now,
            flows: HashMap::new(),
            suppressed: 0,
        }
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate_per_second).min(self.rate_per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// One logged packet: the line to write now, if any.
    pub fn observe(&mut self, flow: FlowKey, now: Instant) -> Option<FlowLine> {
        if let Some(tracked) = self.flows.get_mut(&flow) {
            if now.saturating_duration_since(tracked.window_started) < self.window {
                tracked.unreported += 1;
                return None;
            }
        }
        // A new flow, or one whose window ended without a summary yet: report what is owed
        // with the new packet.
        let owed = self.flows.remove(&flow).map_or(0, |t| t.unreported);
        if self.flows.len() >= self.max_flows {
            self.suppressed += 1;
            return None;
        }
        let allowed = self.take_token(now);
        self.flows.insert(
            flow.clone(),
            Tracked {
                window_started: now,
                unreported: if allowed { 0 } else { 1 },
            },
        );
        allowed.then_some(FlowLine {
            flow,
            packets: 1 + owed,
            repeated: owed > 0,
        })
    }

    /// The summaries of the windows that ended by `now`; quiet flows are forgotten.
    pub fn expire(&mut self, now: Instant) -> Vec<FlowLine> {
        let window = self.window;
        let ended: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.window_started) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        let mut lines = Vec::new();
        for flow in ended {
            let Some(tracked) = self.flows.remove(&flow) else {
                continue;
            };
            if tracked.unreported == 0 {
                continue;
            }
            if self.take_token(now) {
                lines.push(FlowLine {
                    flow,
                    packets: tracked.unreported,
                    repeated: true,
                });
            }
        }
        lines
    }

    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    pub fn tracked_flows(&self) -> usize {
        self.flows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, Enforcement};

    fn flow(src: u8) -> FlowKey {
        FlowKey {
            tag: DeniedFlowTag {
                enforcement: Enforcement::Enforce,
                direction: Direction::Ingress,
                chain: "PAL-TO-1".into(),
                position: 0,
            },
            src: std::net::IpAddr::from([10, 0, 0, src]),
            dst: std::net::IpAddr::from([10, 0, 1, 1]),
            protocol: 6,
            port: Some(80),
            icmp: None,
        }
    }

    #[test]
    fn a_flow_is_written_once_per_window_with_the_count_of_its_repeats() {
        let start = Instant::now();
        let mut window = FlowWindow::new(Duration::from_secs(10), 100, 1000, start);
        let first = window
            .observe(flow(1), start)
            .expect("the first packet is written");
        assert_eq!((first.packets, first.repeated), (1, false));
        for i in 1..10_000u64 {
            let at = start + Duration::from_micros(i * 100);
            assert_eq!(window.observe(flow(1), at), None);
        }
        assert!(window.expire(start + Duration::from_secs(9)).is_empty());
        let summary = window.expire(start + Duration::from_secs(10));
        assert_eq!(summary.len(), 1);
        assert_eq!((summary[0].packets, summary[0].repeated), (9_999, true));
        assert_eq!(window.tracked_flows(), 0);
        let again = window.observe(flow(1), start + Duration::from_secs(11));
        assert_eq!(again.map(|l| (l.packets, l.repeated)), Some((1, false)));
        assert_eq!(window.take_suppressed(), 0);
    }

    #[test]
    fn a_packet_after_the_window_carries_what_the_window_owed() {
        let start = Instant::now();
        let mut window = FlowWindow::new(Duration::from_secs(1), 100, 1000, start);
        window.observe(flow(1), start);
        window.observe(flow(1), start + Duration::from_millis(10));
        let line = window
            .observe(flow(1), start + Duration::from_secs(2))
            .unwrap();
        assert_eq!((line.packets, line.repeated), (2, true));
    }

    #[test]
    fn the_rate_and_the_flow_bound_limit_lines_and_count_what_they_leave_out() {
        let start = Instant::now();
        let mut window = FlowWindow::new(Duration::from_secs(10), 50, 10_000, start);
        let written = (0..=255u8)
            .filter_map(|src| window.observe(flow(src), start))
            .count();
        assert_eq!(written, 50);
        assert_eq!(window.take_suppressed(), 206);
        // A second later the bucket holds 50 lines again.
        let later = start + Duration::from_secs(1);
        let mut other = flow(1);
        other.port = Some(81);
        assert!(window.observe(other, later).is_some());

        let mut bounded = FlowWindow::new(Duration::from_secs(10), 1000, 3, start);
        let written = (0..10u8)
            .filter_map(|src| bounded.observe(flow(src), start))
            .count();
        assert_eq!((written, bounded.tracked_flows()), (3, 3));
        assert_eq!(bounded.take_suppressed(), 7);
    }
}
