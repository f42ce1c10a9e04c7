//! The cluster read once, for `palisade explain` against a live cluster: every kind the agent
//! watches, listed page by page and converted exactly as the watchers convert it, into the
//! same [`Manifests`] a manifest directory gives. Nothing is written to the cluster (invalid
//! policies are reported on the terminal, not as Events).

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ListParams;
use kube::core::DynamicObject;
use kube::{Api, Client, Resource};

use super::discovery::{self, CalicoApi};
use super::events::Report;
use super::policy_objects::PolicyObjects;
use super::watch::Translate;
use super::{calico, kubernetes, SourceError};
use crate::agent::SourceEvent;
use crate::manifest::Manifests;

/// Objects per page: large clusters are read in pieces, as kubectl does.
const PAGE: u32 = 500;

/// Reports invalid policies on the terminal only.
#[derive(Clone)]
struct Terminal;

impl Report for Terminal {
    fn policy_invalid(
        &self,
        reference: k8s_openapi::api::core::v1::ObjectReference,
        error: &str,
        instead: &str,
    ) {
        tracing::warn!(
            kind = reference.kind.as_deref().unwrap_or_default(),
            namespace = reference.namespace.as_deref().unwrap_or_default(),
            name = reference.name.as_deref().unwrap_or_default(),
            "{error}. {instead}"
        );
    }
}

async fn list_once<K, T>(
    api: Api<K>,
    kind: &str,
    mut translate: T,
) -> Result<SourceEvent, SourceError>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    T: Translate<K>,
{
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|source| SourceError::List {
                kind: kind.to_string(),
                source,
            })?;
        for object in &page.items {
            translate.list_item(object);
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    Ok(translate.listed())
}

/// Lists every kind the agent would watch with `choice`, once.
pub async fn snapshot(client: &Client, choice: CalicoApi) -> Result<Manifests, SourceError> {
    let served = discovery::look(client, choice)
        .await
        .ok_or(SourceError::Unreachable)?;
    let c = || client.clone();
    let mut events = vec![
        list_once(Api::<Pod>::all(c()), "pods", kubernetes::Pods::default()).await?,
        list_once(
            Api::<Namespace>::all(c()),
            "namespaces",
            kubernetes::Namespaces::default(),
        )
        .await?,
        list_once(
            Api::<NetworkPolicy>::all(c()),
            "networkpolicies",
            kubernetes::Policies::new(Terminal, PolicyObjects::default()),
        )
        .await?,
    ];
    if let Some(group) = served.calico {
        events.push(
            list_once(
                Api::<ServiceAccount>::all(c()),
                "serviceaccounts",
                kubernetes::ServiceAccounts::default(),
            )
            .await?,
        );
        if let Some(version) = served.endpoint_slices {
            let resource = kubernetes::endpoint_slice_resource(version);
            events.push(
                list_once(
                    Api::<DynamicObject>::all_with(c(), &resource),
                    "endpointslices",
                    kubernetes::ServiceSlices::default(),
                )
                .await?,
            );
        }
        for (kind, agent_kind) in calico::WATCHED {
            let resource = calico::api_resource(group, kind);
            events.push(
                list_once(
                    Api::<DynamicObject>::all_with(c(), &resource),
                    agent_kind.as_str(),
                    calico::CalicoObjects::new(group, kind, Terminal, PolicyObjects::default()),
                )
                .await?,
            );
        }
    }
    let mut manifests = Manifests::default();
    for event in events {
        match event {
            SourceEvent::PodsListed(pods) => manifests.pods = pods,
            SourceEvent::NamespacesListed(namespaces) => manifests.namespaces = namespaces,
            SourceEvent::ServiceAccountsListed(accounts) => manifests.service_accounts = accounts,
            SourceEvent::ServiceSlicesListed(slices) => manifests.service_slices = slices,
            SourceEvent::NetworkSetsListed { sets, .. } => manifests.network_sets.extend(sets),
            SourceEvent::TiersListed(tiers) => manifests.tiers = tiers,
            SourceEvent::PoliciesListed { valid, invalid, .. } => {
                manifests.policies.extend(valid);
                for bad in invalid {
                    manifests
                        .warnings
                        .push(format!("{}: {} (it fails closed)", bad.id, bad.error));
                    manifests.policies.extend(bad.fail_closed);
                }
            }
            _ => {}
        }
    }
    Ok(manifests)
}
