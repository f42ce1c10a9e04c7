//! The `projectcalico.org/v3` resources as written in YAML or JSON: only the shape, with every
//! field Calico defines, so that what Palisade does not enforce can be named rather than lost.
//! The same `spec` is stored in the `crd.projectcalico.org/v1` objects.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A field that takes a number or a string (`protocol`, a port).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumOrString {
    Num(i64),
    Str(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Kubernetes' `int-or-string`: the API server keeps either form, Palisade reads both.
impl JsonSchema for NumOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NumOrString".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

/// NetworkPolicy, GlobalNetworkPolicy and their Staged twins.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// The tier the policy belongs to; `default` when not set.
    #[schemars(extend("default" = "default"))]
    pub tier: Option<String>,
    pub order: Option<f64>,
    pub selector: Option<String>,
    pub types: Option<Vec<String>>,
    pub ingress: Option<Vec<RuleSpec>>,
    pub egress: Option<Vec<RuleSpec>>,
    pub service_account_selector: Option<String>,
    /// GlobalNetworkPolicy only.
    pub namespace_selector: Option<String>,
    pub do_not_track: Option<bool>,
    #[serde(rename = "preDNAT")]
    pub pre_dnat: Option<bool>,
    pub apply_on_forward: Option<bool>,
    pub performance_hints: Option<Vec<String>>,
    /// Staged kinds only.
    pub staged_action: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    pub action: Option<String>,
    pub ip_version: Option<i64>,
    pub protocol: Option<NumOrString>,
    pub not_protocol: Option<NumOrString>,
    #[serde(rename = "icmp")]
    pub icmp: Option<IcmpSpec>,
    #[serde(rename = "notICMP")]
    pub not_icmp: Option<IcmpSpec>,
    pub source: Option<EntitySpec>,
    pub destination: Option<EntitySpec>,
    pub http: Option<HttpSpec>,
    pub metadata: Option<RuleMetadata>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct IcmpSpec {
    #[serde(rename = "type")]
    pub icmp_type: Option<i64>,
    pub code: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitySpec {
    pub nets: Option<Vec<String>>,
    pub not_nets: Option<Vec<String>>,
    pub selector: Option<String>,
    pub not_selector: Option<String>,
    pub namespace_selector: Option<String>,
    pub ports: Option<Vec<NumOrString>>,
    pub not_ports: Option<Vec<NumOrString>>,
    pub service_accounts: Option<ServiceAccountMatch>,
    pub services: Option<ServiceMatch>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ServiceAccountMatch {
    pub names: Option<Vec<String>>,
    pub selector: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ServiceMatch {
    pub name: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct HttpSpec {
    pub methods: Option<Vec<String>>,
    pub paths: Option<Vec<BTreeMap<String, String>>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct RuleMetadata {
    pub annotations: Option<BTreeMap<String, String>>,
}

/// NetworkSet and GlobalNetworkSet.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct NetworkSetSpec {
    pub nets: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierSpec {
    pub order: Option<f64>,
    pub default_action: Option<String>,
}
