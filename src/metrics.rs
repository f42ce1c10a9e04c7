//! Prometheus metrics and the health endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::compiler::desired::Counted;
use crate::counters::CounterUpdate;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric: {0}")]
    Register(#[from] prometheus::Error),
    #[error("serving metrics on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Every metric Palisade exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub sync_duration: Histogram,
    pub apply_duration: Histogram,
    pub syncs: IntCounter,
    pub sync_errors: IntCounterVec,
    pub restore_calls: IntCounterVec,
    pub restore_errors: IntCounterVec,
    pub rules: IntGaugeVec,
    pub chains: IntGaugeVec,
    pub ipsets: IntGaugeVec,
    pub ipset_members: IntGaugeVec,
    pub local_pods: IntGauge,
    pub isolated_pods: IntGaugeVec,
    pub policies: IntGauge,
    pub policies_invalid: IntGauge,
    pub watch_events: IntCounterVec,
    pub watch_relists: IntCounterVec,
    /// 1 while the API server answers its health check in time.
    pub apiserver_up: IntGauge,
    pub apiserver_check_failures: IntCounterVec,
    pub watch_restarts: IntCounter,
    pub ipsets_over_capacity: IntGauge,
    pub drift_repairs: IntCounter,
    pub kernel_reads: IntCounter,
    pub syncs_without_changes: IntCounter,
    pub last_successful_sync: IntGauge,
    /// Per policy rule on this node (both families summed), from the kernel's rule counters.
    pub policy_rule_packets: IntCounterVec,
    pub policy_rule_bytes: IntCounterVec,
    /// Per local pod and direction: dropped at the end of a tier, no policy allowed them.
    pub denied_packets: IntCounterVec,
    pub counter_read_duration: Histogram,
    pub counter_read_errors: IntCounter,
    /// The denied-flow log's lines by verdict (denied, audited).
    pub denied_flow_lines: IntCounterVec,
    pub denied_flow_suppressed: IntCounter,
    pub denied_flow_overruns: IntCounter,
    pub denied_flow_errors: IntCounter,
    ready: AtomicBool,
}

/// The labels of a policy rule's counters.
pub const POLICY_RULE_LABELS: [&str; 7] = [
    "tier",
    "namespace",
    "policy",
    "direction",
    "rule",
    "action",
    "enforcement",
];
/// The labels of a pod's default-deny counter.
pub const DENIED_LABELS: [&str; 4] = ["namespace", "pod", "direction", "enforcement"];

impl Metrics {
    pub fn new() -> Result<Arc<Self>, MetricsError> {
        let registry = Registry::new();
        // Sync latency spans sub-millisecond incremental updates to multi-second full loads.
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.clone()))
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label])
        };
        let gauge_vec =
            |name: &str, help: &str, label: &str| IntGaugeVec::new(Opts::new(name, help), &[label]);
        let metrics = Self {
            sync_duration: histogram(
                "palisade_sync_duration_seconds",
                "Time from the first unsynced change to the kernel matching it: compile plus apply.",
            )?,
            apply_duration: histogram(
                "palisade_apply_duration_seconds",
                "Time to plan and write the difference to the kernel (reading the kernel first when the last write is not known to be in place).",
            )?,
            syncs: IntCounter::new("palisade_syncs_total", "Successful syncs of the kernel to the desired state.")?,
            sync_errors: counter_vec("palisade_sync_errors_total", "Failed syncs, by reason.", "reason")?,
            restore_calls: counter_vec(
                "palisade_restore_calls_total",
                "Calls of iptables-restore, ip6tables-restore and ipset restore.",
                "tool",
            )?,
            restore_errors: counter_vec("palisade_restore_errors_total", "Failed restore calls.", "tool")?,
            rules: gauge_vec("palisade_rules", "Rules in Palisade's chains.", "family")?,
            chains: gauge_vec("palisade_chains", "Palisade's chains.", "family")?,
            ipsets: gauge_vec("palisade_ipsets", "Palisade's ipsets.", "family")?,
            ipset_members: gauge_vec("palisade_ipset_members", "Members of Palisade's ipsets.", "family")?,
            local_pods: IntGauge::new("palisade_local_pods", "Pods on this node that take part in policy.")?,
            isolated_pods: gauge_vec(
                "palisade_isolated_pods",
                "Pods on this node isolated in a direction.",
                "direction",
            )?,
            policies: IntGauge::new("palisade_policies", "NetworkPolicies known to this agent.")?,
            policies_invalid: IntGauge::new(
                "palisade_policies_invalid",
                "NetworkPolicies that could not be compiled; they isolate their pods and allow nothing.",
            )?,
            watch_events: counter_vec("palisade_watch_events_total", "Watch events received, by kind.", "kind")?,
            watch_relists: counter_vec(
                "palisade_watch_relists_total",
                "Listings after the first, by kind: a watch whose resourceVersion expired (410 Gone) or could not resume.",
                "kind",
            )?,
            apiserver_up: IntGauge::new(
                "palisade_apiserver_up",
                "1 while the API server answered the last health check within 5 s, else 0.",
            )?,
            apiserver_check_failures: counter_vec(
                "palisade_apiserver_check_failures_total",
                "API server health checks that failed, by reason: error (an error answer or a failed connection) or timeout (no answer within 5 s).",
                "reason",
            )?,
            watch_restarts: IntCounter::new(
                "palisade_watch_restarts_total",
                "Times the watches started afresh because the API server answered again after leaving a health check unanswered.",
            )?,
            ipsets_over_capacity: IntGauge::new(
                "palisade_ipsets_over_capacity",
                "Sets kept out of the kernel because they would hold more than --max-ipset-size elements; the policies reading them fail closed.",
            )?,
            drift_repairs: IntCounter::new(
                "palisade_drift_repairs_total",
                "Chains, sets and hooks the periodic refresh found changed behind Palisade's back and repaired.",
            )?,
            kernel_reads: IntCounter::new(
                "palisade_kernel_reads_total",
                "Applies that read the kernel state before writing (at start, after a failure or drift); the others diff against what the last apply wrote.",
            )?,
            syncs_without_changes: IntCounter::new(
                "palisade_syncs_without_changes_total",
                "Syncs whose changes left this node's desired state as it was: nothing was planned or written.",
            )?,
            last_successful_sync: IntGauge::new(
                "palisade_last_successful_sync_timestamp_seconds",
                "Unix time of the last successful sync.",
            )?,
            policy_rule_packets: IntCounterVec::new(
                Opts::new(
                    "palisade_policy_rule_packets_total",
                    "Packets a policy rule matched on this node (allowed, denied, passed or logged), from the kernel's rule counters; a Deny rule of an audited namespace counts with enforcement=\"audit\" the packets it let through. Established flows skip policy, so this counts each flow's packets until it is established: one for TCP, each one for unanswered UDP.",
                ),
                &POLICY_RULE_LABELS,
            )?,
            policy_rule_bytes: IntCounterVec::new(
                Opts::new(
                    "palisade_policy_rule_bytes_total",
                    "Bytes of the packets counted by palisade_policy_rule_packets_total.",
                ),
                &POLICY_RULE_LABELS,
            )?,
            denied_packets: IntCounterVec::new(
                Opts::new(
                    "palisade_denied_packets_total",
                    "Packets to or from a local pod dropped because no policy allowed them (the end of a tier), from the kernel's rule counters; enforcement=\"audit\" counts those an audited namespace let through instead.",
                ),
                &DENIED_LABELS,
            )?,
            counter_read_duration: histogram(
                "palisade_counter_read_duration_seconds",
                "Time to read the kernel's rule counters (one iptables-save -c per family).",
            )?,
            counter_read_errors: IntCounter::new(
                "palisade_counter_read_errors_total",
                "Reads of the kernel's rule counters that failed.",
            )?,
            denied_flow_lines: IntCounterVec::new(
                Opts::new(
                    "palisade_denied_flow_lines_total",
                    "Lines the denied-flow log wrote, by verdict (denied, audited): one per flow when it starts, one per window with its further packets.",
                ),
                &["verdict"],
            )?,
            denied_flow_suppressed: IntCounter::new(
                "palisade_denied_flow_lines_suppressed_total",
                "Denied-flow lines left out by the rate limit or the bound on tracked flows.",
            )?,
            denied_flow_overruns: IntCounter::new(
                "palisade_denied_flow_overruns_total",
                "Times the NFLOG socket's buffer overflowed and the kernel dropped logged packets.",
            )?,
            denied_flow_errors: IntCounter::new(
                "palisade_denied_flow_errors_total",
                "Failed reads of the NFLOG group and logged packets that could not be decoded.",
            )?,
            ready: AtomicBool::new(false),
            registry,
        };
        metrics.register_all()?;
        Ok(Arc::new(metrics))
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.sync_duration.clone()),
            Box::new(self.apply_duration.clone()),
            Box::new(self.syncs.clone()),
            Box::new(self.sync_errors.clone()),
            Box::new(self.restore_calls.clone()),
            Box::new(self.restore_errors.clone()),
            Box::new(self.rules.clone()),
            Box::new(self.chains.clone()),
            Box::new(self.ipsets.clone()),
            Box::new(self.ipset_members.clone()),
            Box::new(self.local_pods.clone()),
            Box::new(self.isolated_pods.clone()),
            Box::new(self.policies.clone()),
            Box::new(self.policies_invalid.clone()),
            Box::new(self.watch_events.clone()),
            Box::new(self.watch_relists.clone()),
            Box::new(self.apiserver_up.clone()),
            Box::new(self.apiserver_check_failures.clone()),
            Box::new(self.watch_restarts.clone()),
            Box::new(self.ipsets_over_capacity.clone()),
            Box::new(self.drift_repairs.clone()),
            Box::new(self.kernel_reads.clone()),
            Box::new(self.syncs_without_changes.clone()),
            Box::new(self.last_successful_sync.clone()),
            Box::new(self.policy_rule_packets.clone()),
            Box::new(self.policy_rule_bytes.clone()),
            Box::new(self.denied_packets.clone()),
            Box::new(self.counter_read_duration.clone()),
            Box::new(self.counter_read_errors.clone()),
            Box::new(self.denied_flow_lines.clone()),
            Box::new(self.denied_flow_suppressed.clone()),
            Box::new(self.denied_flow_overruns.clone()),
            Box::new(self.denied_flow_errors.clone()),
        ];
        for collector in collectors {
            self.registry.register(collector)?;
        }
        Ok(())
    }

    /// Adds what a counter read found to the exported counters, and ends the series of what
    /// the node no longer counts.
    pub fn record_counters(&self, update: &CounterUpdate) {
        for (counted, packets, bytes) in &update.added {
            match counter_labels(counted) {
                CounterLabels::PolicyRule(labels) => {
                    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                    self.policy_rule_packets
                        .with_label_values(&labels)
                        .inc_by(*packets);
                    self.policy_rule_bytes
                        .with_label_values(&labels)
                        .inc_by(*bytes);
                }
                CounterLabels::Denied(labels) => {
                    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                    self.denied_packets
                        .with_label_values(&labels)
                        .inc_by(*packets);
                }
            }
        }
        for counted in &update.ended {
            // A series that never counted anything was never created; nothing to remove then.
            match counter_labels(counted) {
                CounterLabels::PolicyRule(labels) => {
                    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                    let _ = self.policy_rule_packets.remove_label_values(&labels);
                    let _ = self.policy_rule_bytes.remove_label_values(&labels);
                }
                CounterLabels::Denied(labels) => {
                    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                    let _ = self.denied_packets.remove_label_values(&labels);
                }
            }
        }
    }

    /// The kernel is known to match the desired state now: after an apply, a sync that had
    /// nothing to write, or a refresh that found no drift. A quiet cluster stays fresh for the
    /// staleness alert.
    pub fn mark_in_sync(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.last_successful_sync
            .set(i64::try_from(now).unwrap_or(i64::MAX));
        self.set_ready(true);
    }

    /// Ready once an apply has succeeded, and not while the last one failed.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

enum CounterLabels {
    PolicyRule([String; 7]),
    Denied([String; 4]),
}

fn counter_labels(counted: &Counted) -> CounterLabels {
    match counted {
        Counted::PolicyRule(rule) => CounterLabels::PolicyRule([
            rule.tier.clone(),
            rule.namespace.clone(),
            rule.policy.clone(),
            rule.direction.to_string(),
            rule.rule.to_string(),
            rule.action.as_str().to_ascii_lowercase(),
            rule.enforcement.to_string(),
        ]),
        Counted::DefaultDeny {
            pod,
            direction,
            enforcement,
        } => CounterLabels::Denied([
            pod.namespace.to_string(),
            pod.name.to_string(),
            direction.to_string(),
            enforcement.to_string(),
        ]),
    }
}

/// Serves the endpoints until the listener fails.
pub async fn serve(metrics: Arc<Metrics>, addr: SocketAddr) -> Result<(), MetricsError> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Serve { addr, source })?;
    let for_metrics = Arc::clone(&metrics);
    let for_ready = Arc::clone(&metrics);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&for_metrics);
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let metrics = Arc::clone(&for_ready);
                async move {
                    if metrics.is_ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: no successful sync yet, or the last one failed\n",
                        )
                    }
                }
            }),
        );
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app)
        .await
        .map_err(|source| MetricsError::Serve { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exported_with_the_palisade_prefix() {
        let metrics = Metrics::new().unwrap();
        metrics.syncs.inc();
        metrics.sync_errors.with_label_values(&["apply"]).inc();
        metrics.rules.with_label_values(&["ipv4"]).set(3);
        metrics.sync_duration.observe(0.01);
        let text = metrics.render();
        for name in [
            "palisade_syncs_total 1",
            "palisade_sync_errors_total{reason=\"apply\"} 1",
            "palisade_rules{family=\"ipv4\"} 3",
            "palisade_sync_duration_seconds_bucket",
            "palisade_drift_repairs_total 0",
            "palisade_last_successful_sync_timestamp_seconds 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
