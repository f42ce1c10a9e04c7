//! Removing everything Palisade put in the kernel (uninstall, `palisade cleanup`).
//!
//! Cleanup is an apply of the empty state: the same plan that removes a stale chain or set
//! removes them all, in the order the kernel needs (hook, then chains, then sets), and only
//! objects with Palisade's prefixes. Running it again finds nothing and changes nothing.

use crate::compiler::desired::DesiredState;

use super::apply::{ApplyOptions, ApplyReport};
use super::error::DataplaneError;
use super::Dataplane;

/// What cleanup removed (or, for a dry run, would remove).
pub type CleanupReport = ApplyReport;

impl Dataplane {
    /// Removes the FORWARD hook, every `PAL-` chain of the filter table and every `pal4-` /
    /// `pal6-` set, in both families.
    pub fn cleanup(&self, options: ApplyOptions) -> Result<CleanupReport, DataplaneError> {
        self.apply(&DesiredState::default(), options)
    }
}
