//! Compiling and applying: the sync, the periodic refresh, and what they report.

use std::time::{Duration, Instant};

use super::{gauge, Agent};
use crate::compiler::{NodeCompiler, SetOverflow};
use crate::dataplane::{ApplyOptions, ApplyReport, DataplaneError};
use crate::model::{Direction, Family};

impl Agent {
    /// Brings the kernel in line with the index: incremental compile, then apply.
    pub(super) fn sync(&mut self) {
        let started = self.dirty_since.unwrap_or_else(Instant::now);
        let compile_started = Instant::now();
        let rebuilt = match &mut self.compiler {
            Some(compiler) if !self.full_resync => {
                compiler.apply(&self.index, &self.pending);
                false
            }
            _ => {
                self.compiler = Some(NodeCompiler::new(
                    &self.index,
                    &self.config.node,
                    self.config.compiler.clone(),
                ));
                true
            }
        };
        let pending = std::mem::take(&mut self.pending).len();
        let compile_time = compile_started.elapsed();
        let Some(compiler) = &mut self.compiler else {
            return;
        };
        // Changes elsewhere in the cluster often change nothing here: then there is nothing
        // to plan, as long as the kernel is known to hold the last state written. A rebuilt
        // compiler has no record of what changed, so its state is always applied.
        let unchanged = compiler.take_dirty().is_empty();
        if !unchanged || rebuilt {
            let overflows = compiler.overflowing_sets();
            report_overflows(&self.overflows, &overflows);
            if let Some(listener) = &self.config.overflow_listener {
                // A policy changed while its set stays over is a new version to report.
                if !overflows.is_empty() || !self.overflows.is_empty() {
                    listener.tell(&overflows);
                }
            }
            self.metrics
                .ipsets_over_capacity
                .set(i64::try_from(overflows.len()).unwrap_or(i64::MAX));
            self.overflows = overflows;
        }
        if !rebuilt && unchanged && self.dataplane.remembers() {
            self.metrics.syncs.inc();
            self.metrics.syncs_without_changes.inc();
            self.metrics
                .sync_duration
                .observe(started.elapsed().as_secs_f64());
            self.mark_in_sync();
            tracing::debug!(
                index_changes = pending,
                compile_us = compile_time.as_micros() as u64,
                "synced: nothing changed for this node"
            );
            self.dirty_since = None;
            self.last_sync = Some(Instant::now());
            return;
        }
        let result = self
            .dataplane
            .apply(compiler.state(), ApplyOptions::default());
        self.last_sync = Some(Instant::now());
        match result {
            Ok(report) => {
                self.record_success(&report, started, compile_time, pending);
                self.dirty_since = None;
                self.retry_at = None;
                self.full_resync = false;
                self.backoff = self.config.retry_min;
            }
            Err(error) => self.record_failure(&error),
        }
    }

    fn record_success(
        &self,
        report: &ApplyReport,
        started: Instant,
        compile_time: Duration,
        changes_seen: usize,
    ) {
        let metrics = &self.metrics;
        metrics.syncs.inc();
        metrics
            .sync_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.apply_duration.observe(report.elapsed.as_secs_f64());
        if report.read_kernel {
            metrics.kernel_reads.inc();
        }
        for restore in &report.restores {
            metrics
                .restore_calls
                .with_label_values(&[tool_label(&restore.program)])
                .inc();
        }
        self.mark_in_sync();
        if let Some(compiler) = &self.compiler {
            let state = compiler.state();
            for family in Family::ALL {
                let label = [family.to_string()];
                let family_state = state.family(family);
                metrics
                    .rules
                    .with_label_values(&label)
                    .set(gauge(family_state.rule_count()));
                metrics
                    .chains
                    .with_label_values(&label)
                    .set(gauge(family_state.chains.len()));
                metrics
                    .ipsets
                    .with_label_values(&label)
                    .set(gauge(family_state.ipsets.len()));
                metrics
                    .ipset_members
                    .with_label_values(&label)
                    .set(gauge(family_state.member_count()));
            }
            metrics.local_pods.set(gauge(compiler.local_pod_count()));
            for direction in Direction::ALL {
                metrics
                    .isolated_pods
                    .with_label_values(&[direction.as_str()])
                    .set(gauge(compiler.isolated_pod_count(direction)));
            }
        }
        tracing::info!(
            changes = report.changes,
            index_changes = changes_seen,
            compile_us = compile_time.as_micros() as u64,
            apply_ms = report.elapsed.as_millis() as u64,
            read_kernel = report.read_kernel,
            latency_ms = started.elapsed().as_millis() as u64,
            "synced"
        );
    }

    /// The kernel is known to match the desired state now: after an apply, a sync that had
    /// nothing to write, or a refresh that found no drift. A quiet cluster stays fresh for the
    /// staleness alert.
    fn mark_in_sync(&self) {
        self.metrics.mark_in_sync();
    }

    fn record_failure(&mut self, error: &DataplaneError) {
        let reason = match error {
            DataplaneError::InvalidDesiredState { .. } => "invalid-state",
            DataplaneError::Spawn { .. } => "command-missing",
            DataplaneError::CommandFailed { program, .. } => {
                if program.contains("restore") || program == "ipset" {
                    self.metrics
                        .restore_errors
                        .with_label_values(&[tool_label(program)])
                        .inc();
                    "restore"
                } else {
                    "read"
                }
            }
        };
        self.metrics.sync_errors.with_label_values(&[reason]).inc();
        self.metrics.set_ready(false);
        self.full_resync = true;
        self.retry_at = Some(Instant::now() + self.backoff);
        tracing::error!(%error, reason, retry_in_ms = self.backoff.as_millis() as u64, "sync failed; retrying with a full resync");
        self.backoff = (self.backoff * 2).min(self.config.retry_max);
    }

    /// A refresh now, on this thread: what the kernel reader does in the running agent.
    #[cfg(test)]
    pub(super) fn refresh(&mut self) {
        if let Some(drift) = super::kernel_reader::refresh(&self.dataplane, &self.metrics) {
            self.repair(drift);
        }
    }

    /// Repairs what the refresh found changed behind Palisade's back. The dataplane has
    /// dropped its memory of the last write, so this apply reads the kernel first.
    pub(super) fn repair(&mut self, drift: crate::dataplane::Drift) {
        for (family, chain) in &drift.chains {
            tracing::warn!(%family, chain, "drift: chain changed outside Palisade");
        }
        for (family, set) in &drift.sets {
            tracing::warn!(%family, set, "drift: ipset changed outside Palisade");
        }
        for family in &drift.hooks {
            tracing::warn!(%family, "drift: FORWARD hook missing");
        }
        self.metrics.drift_repairs.inc_by(drift.len() as u64);
        if self.compiler.is_none() || self.retry_at.is_some() {
            // Nothing compiled yet, or a retry is due anyway: it reads the kernel too.
            return;
        }
        self.dirty_since.get_or_insert_with(Instant::now);
        self.sync();
    }
}

/// `iptables-nft-restore` and `iptables-legacy-restore` are both `iptables-restore` to a reader
/// of the metrics.
fn tool_label(program: &str) -> &'static str {
    let name = program.rsplit('/').next().unwrap_or(program);
    if name.starts_with("ip6tables") {
        "ip6tables-restore"
    } else if name.starts_with("iptables") {
        "iptables-restore"
    } else {
        "ipset"
    }
}

/// Logs each set that went over capacity since the last sync (or whose failed policies
/// changed), naming what it selects and the policies failed closed, and each one that fits
/// again. A set growing further while over capacity is not logged again.
fn report_overflows(before: &[SetOverflow], now: &[SetOverflow]) {
    let same = |a: &SetOverflow, b: &SetOverflow| {
        a.family == b.family && a.set == b.set && a.policies == b.policies
    };
    for overflow in now.iter().filter(|o| !before.iter().any(|b| same(b, o))) {
        let policies: Vec<String> = overflow.policies.iter().map(|p| p.canonical()).collect();
        tracing::error!(
            family = %overflow.family,
            set = %overflow.set,
            selects = %overflow.description,
            elements = overflow.elements,
            capacity = overflow.capacity,
            policies = ?policies,
            "a set would exceed the ipset capacity (maxelem): it is not written, and the policies reading it fail closed"
        );
    }
    for fits in before
        .iter()
        .filter(|o| !now.iter().any(|n| n.family == o.family && n.set == o.set))
    {
        tracing::info!(
            family = %fits.family,
            set = %fits.set,
            selects = %fits.description,
            "a set fits the ipset capacity again: its policies are enforced as written"
        );
    }
}
