//! The CustomResourceDefinitions of the Calico kinds Palisade enforces, generated from the same
//! Rust types the manifest loader reads, so that what the API server stores is what Palisade
//! accepts. Two groups carry them: `projectcalico.org/v3` (the chart's CRDs, Calico's native
//! form since v3.32) and `crd.projectcalico.org/v1` (where Calico itself stores them; Palisade
//! generates those only for tests and for clusters that have no Calico).
//!
//! The schemas check shape only (field names and types), as Calico's own CRDs do; selectors,
//! protocols, ports and actions are validated by the agent, which reports an invalid policy
//! with an Event on it and fails it closed.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// One CustomResource type per kind and group. The derive needs the group as a literal, hence a
/// module per group stamped out by a macro; the spec types are the loader's.
macro_rules! calico_group {
    ($module:ident, $group:tt, $version:tt) => {
        pub mod $module {
            use kube::CustomResource;
            use schemars::JsonSchema;
            use serde::{Deserialize, Serialize};

            use crate::model::calico::api;

            /// Ordered rules for the pods of one namespace.
            #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
            #[kube(group = $group, version = $version, kind = "NetworkPolicy")]
            #[kube(plural = "networkpolicies", namespaced)]
            #[kube(doc = "A Calico NetworkPolicy: ordered rules, in a tier, for the pods of its namespace.")]
            #[kube(printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"))]
            #[kube(printcolumn(name = "Order", type_ = "number", json_path = ".spec.order"))]
            pub struct NetworkPolicySpec {
                #[serde(flatten)]
                pub spec: api::PolicySpec,
            }

            /// Ordered rules for pods in any namespace.
            #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
            #[kube(group = $group, version = $version, kind = "GlobalNetworkPolicy")]
            #[kube(plural = "globalnetworkpolicies")]
            #[kube(doc = "A Calico GlobalNetworkPolicy: ordered rules, in a tier, for pods of any namespace.")]
            #[kube(printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"))]
            #[kube(printcolumn(name = "Order", type_ = "number", json_path = ".spec.order"))]
            pub struct GlobalNetworkPolicySpec {
                #[serde(flatten)]
                pub spec: api::PolicySpec,
            }

            /// Labelled address ranges of one namespace, for rule selectors.
            #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
            #[kube(group = $group, version = $version, kind = "NetworkSet")]
            #[kube(plural = "networksets", namespaced)]
            #[kube(doc = "A Calico NetworkSet: labelled address ranges for the rule selectors of its namespace.")]
            pub struct NetworkSetSpec {
                #[serde(flatten)]
                pub spec: api::NetworkSetSpec,
            }

            /// Labelled address ranges for rule selectors of every namespace.
            #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
            #[kube(group = $group, version = $version, kind = "GlobalNetworkSet")]
            #[kube(plural = "globalnetworksets")]
            #[kube(doc = "A Calico GlobalNetworkSet: labelled address ranges for rule selectors of every namespace.")]
            pub struct GlobalNetworkSetSpec {
                #[serde(flatten)]
                pub spec: api::NetworkSetSpec,
            }

            /// An ordered group of policies with the verdict for what none of them decides.
            #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
            #[kube(group = $group, version = $version, kind = "Tier")]
            #[kube(plural = "tiers")]
            #[kube(doc = "A Calico Tier: an ordered group of policies and the verdict for what none of them decides.")]
            #[kube(printcolumn(name = "Order", type_ = "number", json_path = ".spec.order"))]
            #[kube(printcolumn(name = "DefaultAction", type_ = "string", json_path = ".spec.defaultAction"))]
            pub struct TierSpec {
                #[serde(flatten)]
                pub spec: api::TierSpec,
            }

            pub fn crds() -> Vec<super::CustomResourceDefinition> {
                use super::CustomResourceExt;
                vec![
                    NetworkPolicy::crd(),
                    GlobalNetworkPolicy::crd(),
                    NetworkSet::crd(),
                    GlobalNetworkSet::crd(),
                    Tier::crd(),
                ]
            }
        }
    };
}

calico_group!(v3, "projectcalico.org", "v3");
calico_group!(crd_v1, "crd.projectcalico.org", "v1");

/// The CRDs of one Calico API group.
pub fn calico_crds(group: crate::model::calico::ApiGroup) -> Vec<CustomResourceDefinition> {
    let mut crds = match group {
        crate::model::calico::ApiGroup::V3 => v3::crds(),
        crate::model::calico::ApiGroup::CrdV1 => crd_v1::crds(),
    };
    for crd in &mut crds {
        spec_optional(crd);
    }
    crds
}

/// Calico objects may leave `spec` out (a Tier with the default order, say), and Palisade
/// reads them so; the derive marks it required, so the requirement is lifted here.
fn spec_optional(crd: &mut CustomResourceDefinition) {
    for version in &mut crd.spec.versions {
        let schema = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut());
        if let Some(schema) = schema {
            if let Some(required) = schema.required.as_mut() {
                required.retain(|field| field != "spec");
            }
            if schema.required.as_ref().is_some_and(Vec::is_empty) {
                schema.required = None;
            }
        }
    }
}

/// The CRDs as one multi-document YAML stream, in a fixed order.
pub fn calico_crds_yaml(
    group: crate::model::calico::ApiGroup,
) -> Result<String, yaml_serde::Error> {
    let mut out = String::new();
    for crd in calico_crds(group) {
        out.push_str("---\n");
        out.push_str(&yaml_serde::to_string(&crd)?);
    }
    Ok(out)
}
