//! The generated Calico CRDs keep every field of every Calico object the tests hold: the API
//! server prunes fields a structural schema does not name and rejects values of another type,
//! so a field Palisade reads but the schema lacks would be silently lost on `kubectl apply`.
//! Each object of the golden, dataplane and scenario inputs is walked against the schema of
//! its kind in both groups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use palisade::k8s::crds::calico_crds;
use palisade::model::calico::ApiGroup;
use serde_json::Value;

/// Where `value` does not fit `schema`: fields the server would prune, and type mismatches.
fn misfits(value: &Value, schema: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
    if schema.x_kubernetes_int_or_string == Some(true) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            out.push(format!(
                "{path}: {value} is neither an integer nor a string"
            ));
        }
        return;
    }
    if value.is_null() {
        if schema.nullable != Some(true) {
            out.push(format!("{path}: null where the schema does not allow it"));
        }
        return;
    }
    match (schema.type_.as_deref(), value) {
        (Some("object"), Value::Object(map)) => {
            for (key, item) in map {
                let at = format!("{path}.{key}");
                match (&schema.properties, &schema.additional_properties) {
                    (Some(properties), _) if properties.contains_key(key) => {
                        misfits(item, &properties[key], &at, out)
                    }
                    (_, Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(inner))) => {
                        misfits(item, inner, &at, out)
                    }
                    _ => out.push(format!("{at}: not in the schema (the API server would prune it)")),
                }
            }
        }
        (Some("array"), Value::Array(items)) => {
            let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(inner)) = &schema.items else {
                out.push(format!("{path}: an array without an item schema"));
                return;
            };
            for (i, item) in items.iter().enumerate() {
                misfits(item, inner, &format!("{path}[{i}]"), out);
            }
        }
        (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => {}
        (Some("integer"), v) if v.is_i64() || v.is_u64() => {}
        (Some("number"), Value::Number(_)) => {}
        (expected, v) => out.push(format!("{path}: {v} is not of type {expected:?}")),
    }
}

/// `kind` → the schema of its `spec`, for one group.
fn spec_schemas(group: ApiGroup) -> BTreeMap<String, JSONSchemaProps> {
    calico_crds(group)
        .into_iter()
        .map(|crd| {
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| s.properties.as_ref())
                .and_then(|p| p.get("spec"))
                .cloned()
                .expect("a spec schema");
            (crd.spec.names.kind.clone(), schema)
        })
        .collect()
}

/// Every YAML file under `dir`.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a test input directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

/// Calico objects anywhere inside `value` (scenario files nest them in steps).
fn calico_objects<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            let api_version = map.get("apiVersion").and_then(Value::as_str);
            if matches!(
                api_version,
                Some("projectcalico.org/v3" | "crd.projectcalico.org/v1")
            ) {
                out.push(value);
                return;
            }
            for item in map.values() {
                calico_objects(item, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| calico_objects(item, out)),
        _ => {}
    }
}

#[test]
fn every_calico_object_the_tests_hold_fits_the_generated_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["tests/golden", "tests/dataplane", "integration/scenarios"] {
        yaml_files(&root.join(dir), &mut files);
    }
    let schemas = [spec_schemas(ApiGroup::V3), spec_schemas(ApiGroup::CrdV1)];
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a readable test input");
        for document in yaml_serde::Deserializer::from_str(&text) {
            let Ok(value) = <Value as serde::Deserialize>::deserialize(document) else {
                continue;
            };
            let mut objects = Vec::new();
            calico_objects(&value, &mut objects);
            for object in objects {
                let kind = object["kind"].as_str().unwrap_or_default();
                if kind.starts_with("Staged") {
                    continue;
                }
                let Some(spec) = object.get("spec") else {
                    continue;
                };
                for group_schemas in &schemas {
                    let schema = group_schemas
                        .get(kind)
                        .unwrap_or_else(|| panic!("no CRD for kind {kind} ({})", file.display()));
                    let mut out = Vec::new();
                    misfits(spec, schema, "spec", &mut out);
                    let name = object["metadata"]["name"].as_str().unwrap_or_default();
                    problems.extend(
                        out.into_iter()
                            .map(|p| format!("{}: {kind} {name}: {p}", file.display())),
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} Calico objects found in the test inputs"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_schema_walk_finds_a_field_the_crd_lacks_and_a_wrong_type() {
    let schemas = spec_schemas(ApiGroup::V3);
    let spec: Value = serde_json::json!({
        "order": 10,
        "selector": "all()",
        "ingress": [{"action": "Allow", "bogus": 1, "destination": {"ports": [80, "http", "1000:2000"]}}],
        "types": "Ingress",
    });
    let mut out = Vec::new();
    misfits(&spec, &schemas["NetworkPolicy"], "spec", &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].contains("spec.ingress[0].bogus"), "{out:?}");
    assert!(out[1].contains("spec.types"), "{out:?}");
}
