//! Reading what the kernel holds of Palisade's, and deciding per family what to change.

use std::collections::BTreeMap;

use crate::compiler::desired::{DesiredState, FamilyState};
use crate::compiler::naming::set_prefix;
use crate::model::Family;

use super::backend::Backend;
use super::error::DataplaneError;
use super::exec::CommandRunner;
use super::ipset_save::{parse_ipset_save, KernelSet};
use super::iptables_save::{parse_filter_save, FilterSnapshot};
use super::plan::{plan_family, FamilyPlan};
use super::validate::validate_family;

/// One family's plan, or `None` when the family has nothing desired and nothing owned: then
/// it is not written to at all (a node without IPv6 never runs `ip6tables-restore`).
pub(crate) type FamilyPlans = Vec<(Family, Option<FamilyPlan>)>;

/// Validates `desired`, reads the kernel (one `ipset save`, one `*-save -t filter` per
/// family) and plans both families.
pub(crate) fn plan_both_families(
    runner: &dyn CommandRunner,
    backend: Backend,
    desired: &DesiredState,
) -> Result<FamilyPlans, DataplaneError> {
    for family in Family::ALL {
        validate_family(family, desired.family(family))?;
    }
    let all_sets = read_owned_sets(runner)?;
    let mut plans = Vec::with_capacity(2);
    for family in Family::ALL {
        let wanted = desired.family(family);
        let sets = sets_of_family(&all_sets, family);
        let filter = read_filter(runner, backend, family, wanted)?;
        let untouched = wanted.is_empty() && sets.is_empty() && !filter.owns_anything();
        let plan = (!untouched).then(|| plan_family(family, wanted, &filter, &sets));
        plans.push((family, plan));
    }
    Ok(plans)
}

fn read_owned_sets(
    runner: &dyn CommandRunner,
) -> Result<BTreeMap<String, KernelSet>, DataplaneError> {
    let output = runner.run("ipset", &["save".to_string()], None)?;
    Ok(parse_ipset_save(&output.stdout))
}

fn sets_of_family(
    all: &BTreeMap<String, KernelSet>,
    family: Family,
) -> BTreeMap<String, KernelSet> {
    all.iter()
        .filter(|(name, _)| name.starts_with(set_prefix(family)))
        .map(|(name, set)| (name.clone(), set.clone()))
        .collect()
}

/// Reads the filter table. When nothing is desired in this family, a failing read (IPv6
/// disabled on the host, the tool missing) means there is nothing of ours to remove there
/// either, so it counts as an empty table instead of failing the whole apply.
fn read_filter(
    runner: &dyn CommandRunner,
    backend: Backend,
    family: Family,
    wanted: &FamilyState,
) -> Result<FilterSnapshot, DataplaneError> {
    let program = backend.save_binary(family);
    match runner.run(program, &["-t".to_string(), "filter".to_string()], None) {
        Ok(output) => Ok(parse_filter_save(&output.stdout)),
        Err(error) if wanted.is_empty() => {
            tracing::debug!(%family, program, %error, "filter table unreadable; nothing desired there");
            Ok(FilterSnapshot::default())
        }
        Err(error) => Err(error),
    }
}
