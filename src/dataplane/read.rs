//! Reading what the kernel holds of Palisade's, and deciding per family what to change.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use crate::compiler::desired::{DesiredState, IpSet};
use crate::compiler::naming::set_prefix;
use crate::model::Family;

use super::backend::Backend;
use super::error::DataplaneError;
use super::exec::CommandRunner;
use super::ipset_save::{parse_ipset_save, KernelSet};
use super::iptables_save::{parse_filter_save, FilterSnapshot};
use super::placement::{alternate_set_name, to_write, Held, HeldSets, Placement};
use super::plan::{plan_family, FamilyPlan};
use super::set_members::desired_elements;
use super::validate::validate_family;

/// One family's plan, or `None` when the family has nothing desired and nothing owned: then
/// it is not written to at all (a node without IPv6 never runs `ip6tables-restore`).
pub(crate) type FamilyPlans = Vec<(Family, Option<FamilyPlan>)>;

/// What the kernel holds of Palisade's in one family.
pub(crate) struct KernelFamily {
    family: Family,
    sets: BTreeMap<String, KernelSet>,
    filter: FilterSnapshot,
}

/// Validates `desired`, reads the kernel (one `ipset save`, one `*-save -t filter` per
/// family), places the sets against what it holds and plans both families. Returns the state
/// to write (see `placement`) with the plans.
pub(crate) fn plan_both_families<'a>(
    runner: &dyn CommandRunner,
    backend: Backend,
    desired: &'a DesiredState,
) -> Result<(Cow<'a, DesiredState>, FamilyPlans), DataplaneError> {
    for family in Family::ALL {
        validate_family(family, desired.family(family))?;
    }
    let wanted = Family::ALL.map(|family| !desired.family(family).is_empty());
    let kernel = read_kernel(runner, backend, wanted)?;
    let [v4, v6] = &kernel;
    let mut state = to_write(desired, &[Held::of(v4), Held::of(v6)], Placement::Switch);
    keep_spares(&mut state, &kernel);
    let plans = plan_against(&kernel, &state);
    Ok((state, plans))
}

/// Reads both families, in `Family::ALL` order. `wanted[i]`: something is desired in
/// `Family::ALL[i]`, so an unreadable filter table there is an error rather than an empty one.
/// The three reads run at once: they are independent, and each is mostly the time to start a
/// tool.
pub(crate) fn read_kernel(
    runner: &dyn CommandRunner,
    backend: Backend,
    wanted: [bool; 2],
) -> Result<[KernelFamily; 2], DataplaneError> {
    let [v4, v6] = Family::ALL;
    let (all_sets, filters) = std::thread::scope(|scope| {
        let v6_filter = scope.spawn(|| read_filter(runner, backend, v6, wanted[1]));
        let v4_filter = scope.spawn(|| read_filter(runner, backend, v4, wanted[0]));
        let all_sets = read_owned_sets(runner);
        let joined = |handle: std::thread::ScopedJoinHandle<'_, _>| {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        (all_sets, [joined(v4_filter), joined(v6_filter)])
    });
    let all_sets = all_sets?;
    let [v4_filter, v6_filter] = filters;
    let read = |family, filter| KernelFamily {
        family,
        sets: sets_of_family(&all_sets, family),
        filter,
    };
    Ok([read(v4, v4_filter?), read(v6, v6_filter?)])
}

/// What a read found, as placement sees it.
impl HeldSets for KernelFamily {
    fn referenced(&self) -> HashSet<String> {
        self.filter
            .chains
            .values()
            .flat_map(|chain| chain.rules.iter())
            .flat_map(|rule| rule.sets.iter().cloned())
            .collect()
    }

    fn holds(&self, name: &str, wanted: &IpSet) -> bool {
        self.sets.get(name).is_some_and(|set| {
            set.matches(wanted.kind, wanted.family) && set.elements == desired_elements(wanted)
        })
    }
}

/// Adds the spares the kernel holds to the state to write, with the content they hold, so
/// they are kept (and remembered) rather than destroyed. A spare whose content cannot be read
/// back as entries, or that is of another type than its set, is left out, and so destroyed.
fn keep_spares(state: &mut Cow<'_, DesiredState>, kernel: &[KernelFamily; 2]) {
    for read in kernel {
        let spares: Vec<(String, IpSet)> = read
            .sets
            .iter()
            .filter(|(name, set)| {
                let placed = state.family(read.family);
                !placed.ipsets.contains_key(*name)
                    && alternate_set_name(name)
                        .and_then(|other| placed.ipsets.get(&other))
                        .is_some_and(|wanted| set.matches(wanted.kind, wanted.family))
            })
            .filter_map(|(name, set)| Some((name.clone(), set.as_ipset()?)))
            .collect();
        if !spares.is_empty() {
            state.to_mut().family_mut(read.family).ipsets.extend(spares);
        }
    }
}

/// Plans each family of `desired` against what was read of it.
pub(crate) fn plan_against(kernel: &[KernelFamily], desired: &DesiredState) -> FamilyPlans {
    kernel
        .iter()
        .map(|read| {
            let wanted = desired.family(read.family);
            let untouched =
                wanted.is_empty() && read.sets.is_empty() && !read.filter.owns_anything();
            let plan =
                (!untouched).then(|| plan_family(read.family, wanted, &read.filter, &read.sets));
            (read.family, plan)
        })
        .collect()
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
    wanted: bool,
) -> Result<FilterSnapshot, DataplaneError> {
    let program = backend.save_binary(family);
    match runner.run(program, &["-t".to_string(), "filter".to_string()], None) {
        Ok(output) => Ok(parse_filter_save(&output.stdout)),
        Err(error) if !wanted => {
            tracing::debug!(%family, program, %error, "filter table unreadable; nothing desired there");
            Ok(FilterSnapshot::default())
        }
        Err(error) => Err(error),
    }
}
