//! The agent container's environment as the DaemonSet gives it, resolved for one node as the
//! kubelet does. The upgrade test's stand-in kubelet runs what the live DaemonSet says; the
//! soak runs with what the shipped install (`manifests/palisade.yaml`, the chart's default
//! rendering) says, so a long run measures the agent as it is deployed.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// The container named `palisade` in a DaemonSet (as JSON).
pub fn agent_container(daemonset: &Value) -> Result<&Value> {
    daemonset
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .and_then(|containers| containers.iter().find(|c| c["name"] == "palisade"))
        .ok_or_else(|| anyhow!("the DaemonSet has no container named palisade"))
}

/// `env` of the agent container in the shipped `manifests/palisade.yaml`.
pub fn shipped() -> Result<Vec<Value>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/palisade.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for document in yaml_serde::Deserializer::from_str(&text) {
        let object =
            Value::deserialize(document).with_context(|| format!("parsing {}", path.display()))?;
        if object["kind"] == "DaemonSet" {
            let container = agent_container(&object)
                .with_context(|| format!("the DaemonSet in {}", path.display()))?;
            return Ok(container["env"].as_array().cloned().unwrap_or_default());
        }
    }
    bail!("{} has no DaemonSet", path.display())
}

/// `env` entries as `(name, value)` on node `node`: plain values, and `fieldRef:
/// spec.nodeName`, the only reference the agent's template uses.
pub fn resolve(env: &[Value], node: &str) -> Result<Vec<(String, String)>> {
    env.iter()
        .map(|variable| {
            let name = variable["name"]
                .as_str()
                .ok_or_else(|| anyhow!("an env entry has no name: {variable}"))?;
            let value = if let Some(value) = variable["value"].as_str() {
                value.to_string()
            } else if variable.pointer("/valueFrom/fieldRef/fieldPath")
                == Some(&Value::from("spec.nodeName"))
            {
                node.to_string()
            } else {
                bail!("env {name}: only values and spec.nodeName are resolved here");
            };
            Ok((name.to_string(), value))
        })
        .collect()
}
