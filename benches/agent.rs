//! The agent's event path on the large cluster (150,000 pods on 5,000 nodes, 110 on `node-0`,
//! 2,000 namespaces, 10,000 policies): a pod watch event as the API server sends it, converted
//! to the model, applied to the index, compiled incrementally, and the changed sets and chains
//! rendered as restore input. Target: median ≤ 1 ms per pod event.
//!
//! It also reports the resident memory of the index and compiler holding 150,000 pods
//! (target ≤ 200 MiB).
//!
//! `PALISADE_BENCH_QUICK=1` takes fewer samples, for CI.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use k8s_openapi::api::core::v1::Pod as K8sPod;
use palisade::compiler::{Marks, NodeCompiler};
use palisade::index::ClusterIndex;
use palisade::model::{convert, Family, Pod};
use palisade::render;

#[path = "support/cluster.rs"]
mod cluster;

use cluster::LOCAL_NODE;

const EVENT_TARGET: Duration = Duration::from_millis(1);
const RSS_TARGET_MIB: f64 = 200.0;

/// The Pod object a watch event carries for a model pod.
fn api_object(pod: &Pod) -> K8sPod {
    let ports: Vec<serde_json::Value> = pod
        .named_ports
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "containerPort": p.port,
                "protocol": p.protocol.as_str().to_ascii_uppercase(),
            })
        })
        .collect();
    let ips: Vec<serde_json::Value> = pod
        .ips
        .iter()
        .map(|ip| serde_json::json!({"ip": ip.to_string()}))
        .collect();
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.key.name,
            "namespace": pod.key.namespace,
            "labels": pod.labels,
            "uid": "3f1b0c9e-0000-4000-8000-000000000000",
            "resourceVersion": "123456",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}],
        },
        "spec": {
            "nodeName": pod.node,
            "containers": [{"name": "app", "image": "registry.example/app:1.2.3", "ports": ports,
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}],
        },
        "status": {
            "phase": "Running",
            "podIP": ips.first().and_then(|v| v.get("ip")).cloned(),
            "podIPs": ips,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    match serde_json::from_value(value) {
        Ok(pod) => pod,
        Err(error) => panic!("building a Pod object: {error}"),
    }
}

/// One event end to end; returns the rendered bytes so nothing is optimised away.
fn handle_event(index: &mut ClusterIndex, compiler: &mut NodeCompiler, object: &K8sPod) -> usize {
    let mut warnings = Vec::new();
    let Ok(Some(pod)) = convert::pod(object, &mut warnings) else {
        return 0;
    };
    let changes: Vec<_> = index.upsert_pod(pod).into_iter().collect();
    compiler.apply(index, &changes);
    let dirty = compiler.take_dirty();
    let mut bytes = 0;
    for family in Family::ALL {
        let names: Vec<&str> = dirty
            .iter()
            .filter(|(f, _)| *f == family)
            .map(|(_, n)| n.as_str())
            .collect();
        if names.is_empty() {
            continue;
        }
        let (sets, chains) = render::changed_objects(compiler.state().family(family), &names);
        bytes += sets.len() + chains.len();
    }
    bytes
}

fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let quick = std::env::var_os("PALISADE_BENCH_QUICK").is_some();
    let before = rss_mib().unwrap_or(0.0);
    let mut index = cluster::large_cluster();
    let mut compiler = NodeCompiler::new(&index, LOCAL_NODE, Marks::default());
    compiler.take_dirty();
    let after = rss_mib().unwrap_or(0.0);

    let mut c = Criterion::default()
        .sample_size(if quick { 20 } else { 100 })
        .warm_up_time(Duration::from_millis(if quick { 300 } else { 1000 }))
        .measurement_time(Duration::from_secs(if quick { 2 } else { 5 }));
    let mut medians = Vec::new();
    for (local, name) in [(false, "pod_event_remote"), (true, "pod_event_local")] {
        let Some(toggle) = cluster::label_toggle(&index, LOCAL_NODE, local) else {
            println!("{name}: no suitable pod in this cluster");
            continue;
        };
        let objects = [api_object(&toggle.a), api_object(&toggle.b)];
        let mut flip = 0usize;
        let mut samples = Vec::new();
        c.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let start = std::time::Instant::now();
                for _ in 0..iterations {
                    flip += 1;
                    black_box(handle_event(&mut index, &mut compiler, &objects[flip % 2]));
                }
                let elapsed = start.elapsed();
                samples.push(elapsed / u32::try_from(iterations.max(1)).unwrap_or(u32::MAX));
                elapsed
            })
        });
        samples.sort();
        if let Some(median) = samples.get(samples.len() / 2) {
            medians.push((name, *median, toggle.description.clone()));
        }
        // Leave the pod as the cluster had it.
        handle_event(&mut index, &mut compiler, &api_object(&toggle.a));
    }

    println!(
        "==== palisade agent event-path summary (large cluster{}) ====",
        if quick { ", quick mode" } else { "" }
    );
    println!(
        "cluster:          {} pods, {} namespaces, {} policies",
        index.pod_count(),
        index.namespace_count(),
        index.policy_count()
    );
    for (name, median, description) in medians {
        let verdict = if median <= EVENT_TARGET {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "{name:<17} {:.1} µs per event (median); target {} µs: {verdict}  [{description}]",
            median.as_secs_f64() * 1e6,
            EVENT_TARGET.as_micros()
        );
    }
    let held = after - before;
    let verdict = if after <= RSS_TARGET_MIB {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "memory:           RSS {after:.0} MiB with 150,000 pods indexed and node-0 compiled ({held:.0} MiB over the {before:.0} MiB before); target {RSS_TARGET_MIB:.0} MiB: {verdict}"
    );
}
