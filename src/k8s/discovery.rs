//! Which optional API groups the cluster serves: Calico's (and in which form) and
//! EndpointSlices (`discovery.k8s.io/v1` from Kubernetes 1.21, `v1beta1` before).
//!
//! The Calico group is chosen as Calico's own components choose it
//! (`libcalico-go/lib/backend/k8s/discovery.go`): the native `projectcalico.org/v3` CRDs when
//! that group is served and `crd.projectcalico.org` is not, otherwise `crd.projectcalico.org/v1`
//! (where a Calico cluster stores its policies even when its API server serves v3 on top).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroupList;
use kube::Client;

use super::watch::Backoff;
use crate::agent::Kind;
use crate::model::calico::ApiGroup;

/// `--calico-api`: how the agent finds Calico's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalicoApi {
    /// As Calico does; none if neither group is served (picked up when it appears).
    Auto,
    /// `projectcalico.org/v3`, whatever else is served.
    V3,
    /// `crd.projectcalico.org/v1`, whatever else is served.
    CrdV1,
    /// Kubernetes policy only.
    Off,
}

/// The optional groups this agent reads, as found on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub calico: Option<ApiGroup>,
    /// The EndpointSlice version (`v1`, `v1beta1`); `None` if neither is served.
    pub endpoint_slices: Option<&'static str>,
}

impl Served {
    /// The kinds the watchers serve for this: the agent's first sync waits for each.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds = Kind::KUBERNETES.to_vec();
        if self.calico.is_some() {
            kinds.extend(self.calico_kinds());
        }
        kinds
    }

    /// What Calico's resources add: their own kinds, and the ServiceAccounts and
    /// EndpointSlices their rules select by.
    pub fn calico_kinds(&self) -> Vec<Kind> {
        let mut kinds = vec![Kind::ServiceAccount];
        if self.endpoint_slices.is_some() {
            kinds.push(Kind::EndpointSlice);
        }
        kinds.extend(super::calico::WATCHED.iter().map(|(_, kind)| *kind));
        kinds
    }
}

fn serves(groups: &APIGroupList, name: &str, version: &str) -> bool {
    groups
        .groups
        .iter()
        .any(|g| g.name == name && g.versions.iter().any(|v| v.version == version))
}

/// Picks the group from what the server lists.
pub fn choose(choice: CalicoApi, groups: &APIGroupList) -> Served {
    let v3 = serves(groups, "projectcalico.org", "v3");
    let crd = serves(groups, "crd.projectcalico.org", "v1");
    let calico = match choice {
        CalicoApi::Off => None,
        CalicoApi::V3 => Some(ApiGroup::V3),
        CalicoApi::CrdV1 => Some(ApiGroup::CrdV1),
        CalicoApi::Auto if v3 && !crd => Some(ApiGroup::V3),
        CalicoApi::Auto if crd => Some(ApiGroup::CrdV1),
        CalicoApi::Auto => None,
    };
    let endpoint_slices = if serves(groups, "discovery.k8s.io", "v1") {
        Some("v1")
    } else if serves(groups, "discovery.k8s.io", "v1beta1") {
        Some("v1beta1")
    } else {
        None
    };
    Served {
        calico,
        endpoint_slices,
    }
}

/// Asks the server which groups it serves, retrying with backoff until it answers: without
/// an answer the agent cannot know what to wait for, and the kernel keeps its rules meanwhile.
pub async fn discover(client: &Client, choice: CalicoApi) -> Served {
    let mut backoff = Backoff::new();
    loop {
        match client.list_api_groups().await {
            Ok(groups) => {
                let served = choose(choice, &groups);
                let forced = match choice {
                    CalicoApi::V3 => Some(("projectcalico.org", "v3")),
                    CalicoApi::CrdV1 => Some(("crd.projectcalico.org", "v1")),
                    CalicoApi::Auto | CalicoApi::Off => None,
                };
                if let Some((group, version)) = forced.filter(|(g, v)| !serves(&groups, g, v)) {
                    tracing::warn!(
                        group,
                        version,
                        "--calico-api names a group the API server does not serve: the first sync waits until its CRDs are installed"
                    );
                }
                return served;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.next().as_millis() as u64, "cannot list the API server's groups; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// One look, for the periodic check that picks up Calico's CRDs installed after the agent
/// started; `None` when the server did not answer.
pub async fn look(client: &Client, choice: CalicoApi) -> Option<Served> {
    client
        .list_api_groups()
        .await
        .ok()
        .map(|groups| choose(choice, &groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroup, GroupVersionForDiscovery};

    fn groups(served: &[(&str, &str)]) -> APIGroupList {
        APIGroupList {
            groups: served
                .iter()
                .map(|(name, version)| APIGroup {
                    name: name.to_string(),
                    versions: vec![GroupVersionForDiscovery {
                        group_version: format!("{name}/{version}"),
                        version: version.to_string(),
                    }],
                    ..APIGroup::default()
                })
                .collect(),
        }
    }

    #[test]
    fn auto_picks_the_group_as_calico_does() {
        let v3 = ("projectcalico.org", "v3");
        let crd = ("crd.projectcalico.org", "v1");
        let auto = |served: &[(&str, &str)]| choose(CalicoApi::Auto, &groups(served)).calico;
        assert_eq!(auto(&[v3]), Some(ApiGroup::V3));
        // A Calico API server serving v3 over the v1 CRDs: the CRDs are the store.
        assert_eq!(auto(&[v3, crd]), Some(ApiGroup::CrdV1));
        assert_eq!(auto(&[crd]), Some(ApiGroup::CrdV1));
        assert_eq!(auto(&[("projectcalico.org", "v1")]), None);
        assert_eq!(auto(&[]), None);
    }

    #[test]
    fn an_explicit_choice_wins() {
        let none = groups(&[]);
        assert_eq!(choose(CalicoApi::V3, &none).calico, Some(ApiGroup::V3));
        assert_eq!(
            choose(CalicoApi::CrdV1, &none).calico,
            Some(ApiGroup::CrdV1)
        );
        let both = groups(&[("projectcalico.org", "v3"), ("crd.projectcalico.org", "v1")]);
        assert_eq!(choose(CalicoApi::Off, &both).calico, None);
        assert_eq!(choose(CalicoApi::V3, &both).calico, Some(ApiGroup::V3));
    }

    #[test]
    fn endpoint_slices_in_either_version_and_what_the_agent_waits_for() {
        let old = choose(
            CalicoApi::Auto,
            &groups(&[
                ("discovery.k8s.io", "v1beta1"),
                ("crd.projectcalico.org", "v1"),
            ]),
        );
        assert_eq!(old.endpoint_slices, Some("v1beta1"));
        assert!(old.kinds().contains(&Kind::EndpointSlice));
        assert!(old.kinds().contains(&Kind::Tier));
        let bare = choose(CalicoApi::Auto, &groups(&[]));
        assert_eq!(bare.endpoint_slices, None);
        assert_eq!(bare.kinds(), Kind::KUBERNETES.to_vec());
        let no_slices = choose(CalicoApi::V3, &groups(&[]));
        assert!(!no_slices.kinds().contains(&Kind::EndpointSlice));
        assert!(no_slices.kinds().contains(&Kind::ServiceAccount));
    }
}
