//! Names and labels of Calico objects in both storage forms.
//!
//! `projectcalico.org/v3` objects carry them as written. `crd.projectcalico.org/v1` objects,
//! as `kubectl get -o yaml` shows them on a Calico cluster, keep the real v3 metadata as JSON in
//! the annotation `projectcalico.org/metadata`; their own labels are merged under it (the
//! annotation wins), as Calico's reader does (`libcalico-go/lib/backend/k8s/resources/
//! resources.go`). When that annotation lacks a name, a default-tier policy's stored name loses
//! the `default.` prefix Calico 3.30 and earlier wrote; without the annotation the stored name is
//! the name, as in Calico.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::api::ObjectMeta;
use crate::selector::Labels;

/// The annotation holding the v3 metadata of a `crd.projectcalico.org/v1` object.
pub const METADATA_ANNOTATION: &str = "projectcalico.org/metadata";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiGroup {
    /// `projectcalico.org/v3`.
    V3,
    /// `crd.projectcalico.org/v1`.
    CrdV1,
}

impl ApiGroup {
    pub fn as_str(&self) -> &'static str {
        match self {
            ApiGroup::V3 => "projectcalico.org/v3",
            ApiGroup::CrdV1 => "crd.projectcalico.org/v1",
        }
    }

    pub fn of(api_version: &str) -> Option<Self> {
        match api_version {
            "projectcalico.org/v3" => Some(ApiGroup::V3),
            "crd.projectcalico.org/v1" => Some(ApiGroup::CrdV1),
            _ => None,
        }
    }
}

/// The part of the metadata annotation Palisade reads.
#[derive(Debug, Default, Deserialize)]
struct StoredMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// An object's v3 name, namespace and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub namespace: Option<String>,
    pub labels: Labels,
}

/// Reads the identity. `tier` is the policy's tier for policy kinds (for the legacy name
/// prefix), `None` for others. An unreadable annotation is an error naming it.
pub fn identity(
    group: ApiGroup,
    meta: &ObjectMeta,
    tier: Option<&str>,
) -> Result<Identity, String> {
    let stored_name = meta.name.clone().unwrap_or_default();
    let mut labels = meta.labels.clone().unwrap_or_default();
    let annotation = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(METADATA_ANNOTATION));
    let name = match (group, annotation) {
        (ApiGroup::CrdV1, Some(text)) => {
            let stored: StoredMeta = serde_json::from_str(text).map_err(|e| {
                format!("metadata.annotations[{METADATA_ANNOTATION}]: not the JSON of an ObjectMeta: {e}")
            })?;
            labels.extend(stored.labels.unwrap_or_default());
            match stored.name.filter(|n| !n.is_empty()) {
                Some(name) => name,
                None => match tier {
                    Some("default" | "") => stored_name
                        .strip_prefix("default.")
                        .unwrap_or(&stored_name)
                        .to_string(),
                    _ => stored_name,
                },
            }
        }
        _ => stored_name,
    };
    Ok(Identity {
        name,
        namespace: meta.namespace.clone().filter(|n| !n.is_empty()),
        labels: crate::selector::labels_of(labels),
    })
}
