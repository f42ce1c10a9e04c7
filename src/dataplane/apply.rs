//! Making the kernel match a desired state with the fewest writes: chains whose rules are in
//! place are not mentioned (their counters survive), and a state already in place costs only
//! the reads.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use crate::compiler::desired::DesiredState;
use crate::model::Family;

use super::error::DataplaneError;
use super::memory::{plan_from_memory, remember, RememberedPlan};
use super::placement::{to_write, visible_steps, Held, Placement};
use super::plan::FamilyStats;
use super::read::plan_both_families;
use super::restore::{render_plan, Stage};
use super::validate::validate_family;
use super::Dataplane;

/// How long `iptables-restore` waits for the xtables lock (held by kube-proxy while it
/// writes). Bounded so a stuck holder turns into an error the agent retries, not a hang.
const XTABLES_LOCK_WAIT_SECONDS: &str = "10";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Compute the restore inputs and return them without running any restore.
    pub dry_run: bool,
}

/// One restore input, with the command that receives (or would receive) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub family: Family,
    pub stage: Stage,
    pub program: String,
    pub args: Vec<String>,
    pub input: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Chains written and deleted, set members added and removed, sets created and
    /// destroyed, hooks inserted and removed. Zero means no restore ran.
    pub changes: usize,
    pub v4: FamilyStats,
    pub v6: FamilyStats,
    /// In order. For a dry run, what would have been sent.
    pub restores: Vec<Restore>,
    pub dry_run: bool,
    /// The plan came from reading the kernel, not from the memory of the last apply.
    pub read_kernel: bool,
    pub elapsed: Duration,
}

impl ApplyReport {
    pub fn family(&self, family: Family) -> &FamilyStats {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    fn family_mut(&mut self, family: Family) -> &mut FamilyStats {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }
}

impl Dataplane {
    /// Makes Palisade's chains, hook and sets in both families match `desired`, touching
    /// nothing else. Blocking: it runs the restore tools; call it from a blocking thread.
    ///
    /// The first apply reads the kernel; later ones plan from what the previous one wrote,
    /// until a failed write or a refresh that finds drift. A failure leaves the kernel partly updated
    /// (each iptables transaction is atomic, `ipset restore` is not); the next apply reads the
    /// kernel again and finishes the job.
    pub fn apply(
        &self,
        desired: &DesiredState,
        options: ApplyOptions,
    ) -> Result<ApplyReport, DataplaneError> {
        let mut written = self.serialize();
        let started = Instant::now();
        let read_kernel = written.is_none();
        // `state` is `desired` under the set names it is written at (see `placement`).
        let (state, plans) = match written.as_ref() {
            Some(known) => plan_placed(known, desired)?,
            None => {
                let (state, plans) =
                    plan_both_families(self.runner.as_ref(), self.backend, desired)?;
                let plans = plans
                    .into_iter()
                    .map(|(family, plan)| {
                        let plan = plan.map(|plan| RememberedPlan {
                            plan,
                            deltas: Default::default(),
                        });
                        (family, plan)
                    })
                    .collect();
                (state, plans)
            }
        };
        let mut report = ApplyReport {
            dry_run: options.dry_run,
            read_kernel,
            ..ApplyReport::default()
        };
        for (family, plan) in &plans {
            let family = *family;
            let Some(RememberedPlan { plan, .. }) = plan else {
                report.family_mut(family).skipped = true;
                continue;
            };
            let wanted = state.family(family);
            let stats = plan.stats(wanted);
            *report.family_mut(family) = stats;
            for (stage, input) in render_plan(plan, wanted) {
                let restore = self.restore(family, stage, input);
                if !options.dry_run {
                    tracing::debug!(%family, ?stage, program = %restore.program, input = %restore.input, "restoring");
                    if let Err(error) =
                        self.runner
                            .run(&restore.program, &restore.args, Some(&restore.input))
                    {
                        // Part of the input may be in the kernel: only a read can tell.
                        *written = None;
                        return Err(error);
                    }
                }
                report.restores.push(restore);
            }
            if stats.changes() > 0 {
                tracing::info!(
                    %family,
                    backend = %self.backend,
                    dry_run = options.dry_run,
                    read_kernel,
                    changes = stats.changes(),
                    chains_written = stats.chains_written,
                    chains_deleted = stats.chains_deleted,
                    sets_created = stats.sets_created,
                    sets_destroyed = stats.sets_destroyed,
                    members_added = stats.members_added,
                    members_removed = stats.members_removed,
                    hooks_inserted = stats.hooks_inserted,
                    hooks_removed = stats.hooks_removed,
                    "dataplane updated"
                );
            }
        }
        if !options.dry_run {
            match written.as_mut() {
                Some(known) => {
                    for (family, plan) in plans {
                        if let Some(plan) = plan {
                            remember(known.family_mut(family), state.family(family), plan);
                        }
                    }
                }
                None => *written = Some(state.into_owned()),
            }
        }
        report.changes = report.v4.changes() + report.v6.changes();
        report.elapsed = started.elapsed();
        tracing::debug!(
            changes = report.changes,
            restores = report.restores.len(),
            read_kernel,
            elapsed_ms = report.elapsed.as_millis() as u64,
            dry_run = options.dry_run,
            "dataplane apply finished"
        );
        Ok(report)
    }

    fn restore(&self, family: Family, stage: Stage, input: String) -> Restore {
        let (program, args) = if stage.is_iptables() {
            (
                self.backend.restore_binary(family).to_string(),
                vec![
                    "--noflush".to_string(),
                    "--wait".to_string(),
                    XTABLES_LOCK_WAIT_SECONDS.to_string(),
                ],
            )
        } else {
            ("ipset".to_string(), vec!["restore".to_string()])
        };
        Restore {
            family,
            stage,
            program,
            args,
            input,
        }
    }
}

/// Each family's plan from memory, `None` for a family left untouched.
type RememberedPlans = Vec<(Family, Option<RememberedPlan>)>;

/// The state to write and its plans, from the memory of the last apply: in place when the
/// whole sync is one step the rules in force can see, else as a switch (see `placement`).
fn plan_placed<'a>(
    known: &DesiredState,
    desired: &'a DesiredState,
) -> Result<(Cow<'a, DesiredState>, RememberedPlans), DataplaneError> {
    // The same checks a read would make. Placement renames sets only, so they hold for the
    // state under either placement.
    for family in Family::ALL {
        validate_family(family, desired.family(family))?;
    }
    let held = [Held::of(&known.v4), Held::of(&known.v6)];
    let in_place = to_write(desired, &held, Placement::InPlace);
    let plans = plan_from(known, &in_place);
    let steps: usize = plans
        .iter()
        .zip(&held)
        .filter_map(|((_, plan), held)| Some(visible_steps(&plan.as_ref()?.plan, held)))
        .sum();
    if steps <= 1 {
        return Ok((in_place, plans));
    }
    let state = to_write(desired, &held, Placement::Switch);
    let plans = plan_from(known, &state);
    Ok((state, plans))
}

/// Both families planned from the memory of the last apply.
fn plan_from(known: &DesiredState, desired: &DesiredState) -> RememberedPlans {
    Family::ALL
        .into_iter()
        .map(|family| {
            let plan = plan_from_memory(family, desired.family(family), known.family(family));
            (family, plan)
        })
        .collect()
}
