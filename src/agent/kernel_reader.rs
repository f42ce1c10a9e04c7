//! The thread that reads the kernel while the sync thread writes it: the periodic refresh
//! (is the kernel still what was written?) and the rule counters of the metrics. Both read
//! without holding up an apply, so a change is never kept waiting by a read of the whole
//! kernel state (tens of milliseconds on a large node).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::AgentMessage;
use crate::counters::CounterTotals;
use crate::dataplane::{Dataplane, Drift};
use crate::metrics::Metrics;

/// Shutdown is noticed within this.
const STOP_CHECK: Duration = Duration::from_millis(200);

pub struct KernelReader {
    pub dataplane: Arc<Dataplane>,
    pub metrics: Arc<Metrics>,
    pub refresh_interval: Duration,
    /// Zero: no counter reads.
    pub counters_interval: Duration,
    /// Where drift is reported, for the sync thread to repair.
    pub sync: Sender<AgentMessage>,
    pub stop: Arc<AtomicBool>,
}

impl KernelReader {
    pub fn run(self) {
        let mut totals = CounterTotals::new();
        let start = Instant::now();
        let mut next_refresh = start + self.refresh_interval;
        let mut next_counters =
            (!self.counters_interval.is_zero()).then(|| start + self.counters_interval);
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let due = next_counters.map_or(next_refresh, |c| c.min(next_refresh));
            if now < due {
                std::thread::sleep((due - now).min(STOP_CHECK));
                continue;
            }
            if now >= next_refresh {
                next_refresh = now + self.refresh_interval;
                if let Some(drift) = refresh(&self.dataplane, &self.metrics) {
                    // The sync thread is gone when this fails; then nothing is left to repair.
                    let _ = self.sync.send(AgentMessage::Drift(drift));
                }
            }
            if let Some(at) = next_counters.filter(|at| now >= *at) {
                next_counters = Some(at.max(now) + self.counters_interval);
                read_counters(&self.dataplane, &self.metrics, &mut totals);
            }
        }
    }
}

/// One refresh: the drift found, if any. A kernel matching what was written keeps the node
/// fresh for the staleness alert.
pub fn refresh(dataplane: &Dataplane, metrics: &Metrics) -> Option<Drift> {
    match dataplane.check_drift() {
        Ok(Some(drift)) if drift.is_empty() => {
            tracing::debug!("refresh: the kernel matches");
            metrics.mark_in_sync();
            None
        }
        Ok(Some(drift)) => Some(drift),
        // Nothing written to compare with, or a write happened during the read.
        Ok(None) => None,
        Err(error) => {
            metrics.sync_errors.with_label_values(&["refresh"]).inc();
            tracing::error!(%error, "refresh could not read the kernel");
            None
        }
    }
}

/// One counter read, recorded in `metrics`.
pub fn read_counters(dataplane: &Dataplane, metrics: &Metrics, totals: &mut CounterTotals) {
    let started = Instant::now();
    match dataplane.read_counters() {
        Ok(Some(snapshot)) => {
            let update = totals.update(&snapshot);
            metrics.record_counters(&update);
            metrics
                .counter_read_duration
                .observe(started.elapsed().as_secs_f64());
            tracing::debug!(
                rules = snapshot.readings.len(),
                skipped_chains = snapshot.skipped.len(),
                grew = update.added.len(),
                ended = update.ended.len(),
                read_ms = started.elapsed().as_millis() as u64,
                "rule counters read"
            );
        }
        // Nothing written yet, or the last write failed: nothing to pair counters with.
        Ok(None) => {}
        Err(error) => {
            metrics.counter_read_errors.inc();
            tracing::warn!(%error, "cannot read the kernel's rule counters");
        }
    }
}
