//! Read-only comparison of the kernel with a desired state: what the agent's periodic refresh
//! uses to notice (and count) objects someone else changed, before repairing them with apply.

use crate::compiler::desired::DesiredState;
use crate::model::Family;

use super::error::DataplaneError;
use super::read::{plan_against, plan_both_families, read_kernel, FamilyPlans};
use super::Dataplane;

/// Objects that differ from the desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Chains missing, different, or present but no longer desired.
    pub chains: Vec<(Family, String)>,
    /// Sets missing, with other members or type, or present but no longer desired.
    pub sets: Vec<(Family, String)>,
    /// Families whose FORWARD hook is missing, or present without a desired `PAL-FORWARD`.
    pub hooks: Vec<Family>,
}

impl Drift {
    /// How many objects differ: the number of drift repairs an apply would make.
    pub fn len(&self) -> usize {
        self.chains.len() + self.sets.len() + self.hooks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn drift_of(plans: FamilyPlans) -> Drift {
    let mut drift = Drift::default();
    for (family, plan) in plans {
        let Some(plan) = plan else { continue };
        let chains = plan.write_chains.iter().chain(&plan.delete_chains);
        drift
            .chains
            .extend(chains.map(|name| (family, name.clone())));
        let sets = plan
            .create_sets
            .iter()
            .chain(plan.edit_sets.keys())
            .chain(plan.replace_sets.iter().map(|r| &r.name))
            .chain(&plan.destroy_sets);
        drift.sets.extend(sets.map(|name| (family, name.clone())));
        if plan.insert_hook || !plan.remove_hooks.is_empty() {
            drift.hooks.push(family);
        }
    }
    drift
}

impl Dataplane {
    /// Compares without writing: three reads, no restore. Waits for a running apply, whose
    /// half-done writes would otherwise count as drift. Afterwards the dataplane remembers
    /// `desired` if the kernel matched it, and forgets what it wrote if not.
    pub fn verify(&self, desired: &DesiredState) -> Result<Drift, DataplaneError> {
        let mut written = self.serialize();
        let (state, plans) = plan_both_families(self.runner.as_ref(), self.backend, desired)?;
        let drift = drift_of(plans);
        // The kernel was just read: with no drift it holds `desired` (under the set names it
        // was placed at), and with drift the memory of the last apply is wrong, so the next
        // apply must read again.
        *written = drift.is_empty().then(|| state.into_owned());
        if !drift.is_empty() {
            tracing::info!(
                chains = drift.chains.len(),
                sets = drift.sets.len(),
                hooks = drift.hooks.len(),
                "dataplane drift found"
            );
        }
        Ok(drift)
    }

    /// The periodic refresh: compares the kernel with what was last written, reading the
    /// kernel without holding the lock, so applies go on meanwhile and the caller need not be
    /// the thread that applies. `Ok(None)` when there is nothing to compare with (nothing
    /// written, or the last write failed) or something was written during the read (the read
    /// may be half old, half new; the next refresh compares again). On drift the memory of the
    /// last write is dropped, so the next apply reads the kernel and repairs it.
    pub fn check_drift(&self) -> Result<Option<Drift>, DataplaneError> {
        let (generation, wanted) = {
            let written = self.peek();
            let Some(state) = written.as_ref() else {
                return Ok(None);
            };
            (
                self.generation(),
                Family::ALL.map(|family| !state.family(family).is_empty()),
            )
        };
        let kernel = read_kernel(self.runner.as_ref(), self.backend, wanted)?;
        let mut written = self.peek();
        if self.generation() != generation {
            return Ok(None);
        }
        let Some(state) = written.as_ref() else {
            return Ok(None);
        };
        let drift = drift_of(plan_against(&kernel, state));
        if !drift.is_empty() {
            *written = None;
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tracing::info!(
                chains = drift.chains.len(),
                sets = drift.sets.len(),
                hooks = drift.hooks.len(),
                "dataplane drift found"
            );
        }
        Ok(Some(drift))
    }
}
