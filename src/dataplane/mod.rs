//! Makes the kernel match a desired state: Palisade's ipsets and filter-table chains, and the
//! one FORWARD hook that leads to them. It reads what is there, writes only the difference
//! (per family: an `ipset restore` that prepares sets no rule uses yet, one `iptables-restore
//! --noflush` transaction that switches to them, and an `ipset restore` that destroys what is no
//! longer used), and never touches a chain or set without Palisade's prefix.
//!
//! Every command goes through a [`CommandRunner`], so the whole layer can be driven by a
//! [`RecordingRunner`] in tests or pointed at a network namespace with a [`NetnsRunner`].

mod apply;
pub mod backend;
mod cleanup;
mod counters;
mod error;
pub mod exec;
mod ipset_save;
mod iptables_save;
mod memory;
mod placement;
mod plan;
mod read;
pub mod recording;
mod restore;
mod set_members;
mod validate;
mod verify;

#[cfg(test)]
mod memory_tests;
#[cfg(test)]
mod switch_tests;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::compiler::desired::DesiredState;

pub use apply::{ApplyOptions, ApplyReport, Restore};
pub use backend::{detect_backend, resolve_backend, Backend, BackendChoice, BackendReason};
pub use cleanup::CleanupReport;
pub use counters::{CounterReading, CounterSnapshot};
pub use error::DataplaneError;
pub use exec::{CommandOutput, CommandRunner, NetnsRunner, SystemRunner};
pub use plan::FamilyStats;
pub use recording::{RecordedCall, RecordingRunner};
pub use restore::{Stage, HOOK_RULE};
pub use verify::Drift;

/// The `iptables-save` parser on arbitrary text, for the fuzz targets: how many chains it read.
pub fn parse_filter_save_for_fuzzing(text: &str) -> usize {
    iptables_save::parse_filter_save(text).chains.len()
}

/// The `ipset save` parser on arbitrary text, for the fuzz targets: how many sets it read.
pub fn parse_ipset_save_for_fuzzing(text: &str) -> usize {
    ipset_save::parse_ipset_save(text).len()
}

/// The kernel side of Palisade for one node and one iptables backend.
pub struct Dataplane {
    runner: Arc<dyn CommandRunner>,
    backend: Backend,
    /// What the last successful apply wrote, when nothing since gives reason to doubt that
    /// the kernel still holds it; `None` makes the next apply read the kernel. The lock also
    /// serializes writers: two applies at once (an event-driven one and the periodic refresh)
    /// would each write a diff computed before the other's writes.
    written: Mutex<Option<DesiredState>>,
    /// Counts the times a writer held the lock, so a reader that reads the kernel between
    /// two looks at `written` knows whether anything was written in between.
    generation: AtomicU64,
}

impl Dataplane {
    /// `backend` comes from [`resolve_backend`]; it is fixed for the life of the process,
    /// as the node's backend does not change under a running agent.
    pub fn new(runner: Arc<dyn CommandRunner>, backend: Backend) -> Self {
        Self {
            runner,
            backend,
            written: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the next apply plans from memory, without reading the kernel.
    pub fn remembers(&self) -> bool {
        self.peek().is_some()
    }

    /// The lock of everything that writes to the kernel or to `written`.
    fn serialize(&self) -> MutexGuard<'_, Option<DesiredState>> {
        let guard = self.peek();
        self.generation.fetch_add(1, Ordering::SeqCst);
        guard
    }

    /// The lock, for looking only.
    fn peek(&self) -> MutexGuard<'_, Option<DesiredState>> {
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}
