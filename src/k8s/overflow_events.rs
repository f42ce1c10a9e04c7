//! Events on the policies that fail closed because a set they read is over capacity: the
//! agent tells the sets over capacity after each sync; each policy version reading one gets
//! an Event (the same one from every node, see [`super::events`]).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::watch;

use super::events::Publisher;
use super::policy_objects::PolicyObjects;
use crate::compiler::SetOverflow;
use crate::model::{Family, PolicyId};

/// Reports each policy version and set over capacity once, until the agent stops.
pub(super) async fn report(
    publisher: Publisher,
    objects: PolicyObjects,
    mut overflows: watch::Receiver<Vec<SetOverflow>>,
) {
    let mut reported = Reported::default();
    loop {
        let now = overflows.borrow_and_update().clone();
        for (reference, overflow) in reported.update(&now, |id| objects.reference(id)) {
            publisher.set_over_capacity(&reference, overflow);
        }
        if overflows.changed().await.is_err() {
            return;
        }
    }
}

/// One report: the policy, its resourceVersion, the set.
type Key = (PolicyId, String, Family, String);

/// What is over capacity as reported: a policy version and set reported once stays quiet
/// while it stays over, and is reported again if it goes over again after fitting.
#[derive(Default)]
struct Reported(BTreeSet<Key>);

impl Reported {
    /// The policy objects and sets over capacity in `now` that were not at the last call.
    /// A policy whose object is not known (deleted meanwhile) is left out.
    fn update<'a>(
        &mut self,
        now: &'a [SetOverflow],
        reference_of: impl Fn(&PolicyId) -> Option<ObjectReference>,
    ) -> Vec<(ObjectReference, &'a SetOverflow)> {
        let mut current = BTreeSet::new();
        let mut fresh = Vec::new();
        for overflow in now {
            for policy in &overflow.policies {
                let Some(reference) = reference_of(policy) else {
                    tracing::debug!(policy = %policy, set = %overflow.set, "no object known for a policy failed closed: no event");
                    continue;
                };
                let key = (
                    policy.clone(),
                    reference.resource_version.clone().unwrap_or_default(),
                    overflow.family,
                    overflow.set.clone(),
                );
                if !self.0.contains(&key) {
                    fresh.push((reference, overflow));
                }
                current.insert(key);
            }
        }
        self.0 = current;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PolicyKind;

    fn policy(name: &str) -> PolicyId {
        PolicyId {
            kind: PolicyKind::Kubernetes,
            namespace: "web".into(),
            name: name.into(),
        }
    }

    fn overflow(set: &str, policies: &[&str]) -> SetOverflow {
        SetOverflow {
            family: Family::V4,
            set: set.into(),
            description: "app == 'crowd'".into(),
            elements: 5,
            capacity: 3,
            policies: policies.iter().map(|p| policy(p)).collect(),
        }
    }

    fn reported(log: &mut Reported, now: &[SetOverflow], version: &str) -> Vec<(String, String)> {
        log.update(now, |id| {
            (id.name != "deleted").then(|| ObjectReference {
                name: Some(id.name.clone()),
                resource_version: Some(version.into()),
                ..ObjectReference::default()
            })
        })
        .into_iter()
        .map(|(r, o)| (r.name.unwrap_or_default(), o.set.clone()))
        .collect()
    }

    #[test]
    fn each_policy_version_and_set_is_reported_once_while_over() {
        let mut log = Reported::default();
        let pair = |p: &str, s: &str| (p.to_string(), s.to_string());
        let both = [overflow("s1", &["a", "b", "deleted"])];
        assert_eq!(
            reported(&mut log, &both, "1"),
            [pair("a", "s1"), pair("b", "s1")]
        );
        assert!(
            reported(&mut log, &both, "1").is_empty(),
            "still over: quiet"
        );
        // A new version of the policies: a new report each.
        assert_eq!(
            reported(&mut log, &both, "2"),
            [pair("a", "s1"), pair("b", "s1")]
        );
        // Another set of `a` goes over.
        let more = [overflow("s1", &["a", "b"]), overflow("s2", &["a"])];
        assert_eq!(reported(&mut log, &more, "2"), [pair("a", "s2")]);
        // s1 fits again, then goes over again: reported again.
        let fewer = [overflow("s2", &["a"])];
        assert!(reported(&mut log, &fewer, "2").is_empty());
        assert_eq!(
            reported(&mut log, &more, "2"),
            [pair("a", "s1"), pair("b", "s1")]
        );
    }
}
