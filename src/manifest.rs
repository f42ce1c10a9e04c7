//! The file source: Kubernetes and Calico manifests (YAML or JSON, one or many documents,
//! `v1 List`s) from files or directories, converted into the model.

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::calico::{self, ApiGroup, CalicoKind, CalicoResource};
use crate::model::{
    convert, Namespace, NetworkSet, Pod, Policy, ServiceAccount, ServiceSlice, Tier, Warning,
};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: document {document}: {message}")]
    Parse {
        path: PathBuf,
        document: usize,
        message: String,
    },
    #[error("{path}: document {document}: {source}")]
    Invalid {
        path: PathBuf,
        document: usize,
        source: convert::ConvertError,
    },
}

/// Where an object came from: for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    /// 1-based index of the document in the file.
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.path.display(), self.document)
    }
}

/// A policy that could not be read, and what is enforced in its place.
#[derive(Debug, Clone)]
pub struct FailedPolicy {
    pub policy: Policy,
    /// The full error, with file, document, object and field.
    pub error: String,
}

/// Everything read from a set of manifests.
#[derive(Debug, Default)]
pub struct Manifests {
    pub namespaces: Vec<Namespace>,
    /// Pods that take part in policy (see [`convert::pod`]).
    pub pods: Vec<Pod>,
    pub service_accounts: Vec<ServiceAccount>,
    pub service_slices: Vec<ServiceSlice>,
    /// Every policy, of every API, in the one model.
    pub policies: Vec<Policy>,
    pub network_sets: Vec<NetworkSet>,
    pub tiers: Vec<Tier>,
    /// Non-fatal findings, each prefixed with its origin.
    pub warnings: Vec<String>,
    /// Objects read and deliberately not enforced (staged policies), each with its origin.
    pub notices: Vec<String>,
    /// Objects that could not be read, in file order.
    pub errors: Vec<ManifestError>,
    /// Stand-ins for invalid policies: they fail closed.
    pub fail_closed: Vec<FailedPolicy>,
}

/// Reads every manifest under `paths`. Directories are read recursively, taking `*.yaml`,
/// `*.yml` and `*.json` files in name order. Any invalid object fails the whole load, with the
/// first error.
pub fn load(paths: &[PathBuf]) -> Result<Manifests, ManifestError> {
    let mut manifests = load_lenient(paths);
    if manifests.errors.is_empty() {
        Ok(manifests)
    } else {
        Err(manifests.errors.remove(0))
    }
}

/// Reads what can be read: each unreadable file or object lands in `errors`, and the rest load.
/// For long-running sources, where one bad file must not stop the others from being enforced.
pub fn load_lenient(paths: &[PathBuf]) -> Manifests {
    let mut manifests = Manifests::default();
    let mut files = Vec::new();
    for path in paths {
        if let Err(error) = collect_files(path, &mut files) {
            manifests.errors.push(error);
        }
    }
    for part in load_files(&files) {
        manifests.append(part);
    }
    manifests
}

/// Reads and parses each file on its own thread, as many at once as there are cores; the
/// results come back in file order, so what is read (and which error is first) does not depend
/// on the scheduling.
fn load_files(files: &[PathBuf]) -> Vec<Manifests> {
    let load_one = |file: &PathBuf| {
        let mut part = Manifests::default();
        match std::fs::read_to_string(file) {
            Ok(text) => load_text(file, &text, &mut part),
            Err(source) => part.errors.push(ManifestError::Io {
                path: file.clone(),
                source,
            }),
        }
        part
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    if workers <= 1 {
        return files.iter().map(load_one).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut parts: Vec<(usize, Manifests)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(file) = files.get(i) else {
                            return done;
                        };
                        done.push((i, load_one(file)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| match handle.join() {
                Ok(done) => done,
                // Loading never panics on input; if it did, the panic belongs to the caller.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    parts.sort_by_key(|(i, _)| *i);
    parts.into_iter().map(|(_, part)| part).collect()
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let io_error = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(io_error)?;
    if !metadata.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io_error)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_files(&entry, files)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(entry);
        }
    }
    Ok(())
}

/// Parses one file's text into `manifests`; what cannot be read lands in `manifests.errors`.
pub fn load_text(path: &Path, text: &str, manifests: &mut Manifests) {
    for (i, document) in documents(path, text).into_iter().enumerate() {
        let origin = Origin {
            path: path.to_path_buf(),
            document: i + 1,
        };
        let result = document.and_then(|value| add_object(&origin, value, manifests));
        if let Err(error) = result {
            manifests.errors.push(error);
        }
    }
}

fn documents(path: &Path, text: &str) -> Vec<Result<Value, ManifestError>> {
    let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
    let parse_error = |document: usize, message: String| ManifestError::Parse {
        path: path.to_path_buf(),
        document,
        message,
    };
    let mut out = Vec::new();
    if is_json {
        for (i, value) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            let failed = value.is_err();
            out.push(value.map_err(|e| parse_error(i + 1, format!("invalid JSON: {e}"))));
            // The parser cannot resynchronise after a syntax error.
            if failed {
                break;
            }
        }
    } else {
        for (i, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
            let value = serde_path_to_error::deserialize::<_, Value>(document)
                .map_err(|e| parse_error(i + 1, format!("invalid YAML: {}", e.inner())));
            let failed = value.is_err();
            out.push(value);
            if failed {
                break;
            }
        }
    }
    out
}

fn add_object(
    origin: &Origin,
    value: Value,
    manifests: &mut Manifests,
) -> Result<(), ManifestError> {
    if value.is_null() {
        return Ok(());
    }
    let parse_error = |message: String| ManifestError::Parse {
        path: origin.path.clone(),
        document: origin.document,
        message,
    };
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let describe = describe(kind, &value);
    let mut warnings = Vec::new();
    match (api_version, kind) {
        (_, kind) if kind.ends_with("List") && value.get("items").is_some() => {
            let items = match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => return Err(parse_error(format!("{describe}: items is not a list"))),
            };
            for item in items {
                add_object(origin, item, manifests)?;
            }
        }
        ("v1", "Namespace") => {
            let object: core::Namespace = typed(&value).map_err(|m| parse_error(format!("{describe}: {m}")))?;
            manifests.namespaces.push(convert::namespace(&object, &mut warnings));
        }
        ("v1", "Pod") => {
            let object: core::Pod = typed(&value).map_err(|m| parse_error(format!("{describe}: {m}")))?;
            let pod = convert::pod(&object, &mut warnings).map_err(|source| invalid(origin, source))?;
            manifests.pods.extend(pod);
        }
        ("v1", "ServiceAccount") => {
            let object: core::ServiceAccount = typed(&value).map_err(|m| parse_error(format!("{describe}: {m}")))?;
            manifests.service_accounts.push(convert::service_account(&object));
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let object: discovery::EndpointSlice = typed(&value).map_err(|m| parse_error(format!("{describe}: {m}")))?;
            let slice = convert::endpoint_slice(&object, &mut warnings).map_err(|source| invalid(origin, source))?;
            manifests.service_slices.extend(slice);
        }
        ("networking.k8s.io/v1" | "extensions/v1beta1" | "networking.k8s.io/v1beta1", "NetworkPolicy") => {
            // The beta API has the same shape as v1 for every field Palisade reads.
            let mut value = value.clone();
            value["apiVersion"] = Value::from("networking.k8s.io/v1");
            let object: networking::NetworkPolicy =
                typed(&value).map_err(|m| parse_error(format!("{describe}: {m}")))?;
            match convert::policy(&object, &mut warnings) {
                Ok(policy) => manifests.policies.push(policy.to_policy()),
                Err(source) => {
                    let error = invalid(origin, source);
                    manifests.fail_closed.push(FailedPolicy {
                        policy: convert::policy_fail_closed(&object).to_policy(),
                        error: error.to_string(),
                    });
                    return Err(error);
                }
            }
        }
        (version, kind) if ApiGroup::of(version).is_some() && CalicoKind::of(kind).is_some() => {
            let (Some(group), Some(calico_kind)) = (ApiGroup::of(version), CalicoKind::of(kind)) else {
                return Ok(());
            };
            match calico::convert(group, calico_kind, &value, &mut warnings) {
                Ok(CalicoResource::Policy(policy)) => manifests.policies.push(policy),
                Ok(CalicoResource::NetworkSet(set)) => manifests.network_sets.push(set),
                Ok(CalicoResource::Tier(tier)) => manifests.tiers.push(tier),
                Ok(CalicoResource::Ignored(why)) => {
                    let line = format!("{origin}: {describe}: not enforced: {why}");
                    if matches!(
                        calico_kind,
                        CalicoKind::StagedNetworkPolicy
                            | CalicoKind::StagedGlobalNetworkPolicy
                            | CalicoKind::StagedKubernetesNetworkPolicy
                    ) {
                        manifests.notices.push(line);
                    } else {
                        manifests.warnings.push(line);
                    }
                }
                Err(source) => {
                    let error = invalid(origin, source);
                    if let Some(policy) = calico::fail_closed(group, calico_kind, &value) {
                        manifests.fail_closed.push(FailedPolicy {
                            policy,
                            error: error.to_string(),
                        });
                    }
                    manifests
                        .warnings
                        .extend(warnings.iter().map(|w: &Warning| format!("{origin}: {w}")));
                    return Err(error);
                }
            }
        }
        _ => manifests.warnings.push(format!(
            "{origin}: skipped {describe}: kind {kind:?} of apiVersion {api_version:?} is not handled"
        )),
    }
    manifests
        .warnings
        .extend(warnings.iter().map(|w: &Warning| format!("{origin}: {w}")));
    Ok(())
}

fn invalid(origin: &Origin, source: convert::ConvertError) -> ManifestError {
    ManifestError::Invalid {
        path: origin.path.clone(),
        document: origin.document,
        source,
    }
}

fn describe(kind: &str, value: &Value) -> String {
    let metadata = value.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    match metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Deserializes into a k8s-openapi type, naming the field that does not fit.
/// Deserializes from the borrowed document: no copy of the tree, only of the strings kept.
fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        format!("{path}: {}", e.inner())
    })
}

impl Manifests {
    /// Adds what another set of files held, after what this one holds.
    fn append(&mut self, mut other: Manifests) {
        self.namespaces.append(&mut other.namespaces);
        self.pods.append(&mut other.pods);
        self.service_accounts.append(&mut other.service_accounts);
        self.service_slices.append(&mut other.service_slices);
        self.policies.append(&mut other.policies);
        self.network_sets.append(&mut other.network_sets);
        self.tiers.append(&mut other.tiers);
        self.warnings.append(&mut other.warnings);
        self.notices.append(&mut other.notices);
        self.errors.append(&mut other.errors);
        self.fail_closed.append(&mut other.fail_closed);
    }

    /// Builds an index of everything read.
    pub fn into_index(self) -> crate::index::ClusterIndex {
        let mut index = crate::index::ClusterIndex::new();
        for namespace in self.namespaces {
            index.upsert_namespace(namespace);
        }
        for account in self.service_accounts {
            index.upsert_service_account(account);
        }
        for pod in self.pods {
            index.upsert_pod(pod);
        }
        for slice in self.service_slices {
            index.upsert_service_slice(slice);
        }
        for tier in self.tiers {
            index.upsert_tier(tier);
        }
        for set in self.network_sets {
            index.upsert_network_set(set);
        }
        for policy in self.policies {
            index.upsert_policy(policy);
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace_yaml(name: &str) -> String {
        format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n")
    }

    /// Files are parsed on several threads; what they hold comes back in file order, and the
    /// first error is the first file's.
    #[test]
    fn files_load_in_parallel_but_merge_in_file_order() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let mut expected = Vec::new();
        for file in 0..12 {
            let mut text = String::new();
            for doc in 0..50 {
                let name = format!("ns-{file:02}-{doc:02}");
                text.push_str(&namespace_yaml(&name));
                expected.push(name);
            }
            if file == 4 || file == 9 {
                text.push_str("---\napiVersion: v1\nkind: Namespace\nmetadata: [not, a, map]\n");
            }
            std::fs::write(dir.path().join(format!("f{file:02}.yaml")), text)
                .expect("writing a manifest");
        }
        let manifests = load_lenient(&[dir.path().to_path_buf()]);
        let names: Vec<String> = manifests
            .namespaces
            .iter()
            .map(|n| n.name.clone())
            .collect();
        assert_eq!(names, expected);
        assert_eq!(manifests.errors.len(), 2);
        let first = manifests.errors[0].to_string();
        assert!(
            first.contains("f04.yaml") && first.contains("document 51"),
            "{first}"
        );
        let error = load(&[dir.path().to_path_buf()]).expect_err("an invalid object");
        assert_eq!(error.to_string(), first);
    }
}
