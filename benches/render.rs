//! The whole `palisade render` process on the large cluster written as manifests: 150,000 pods
//! on 5,000 nodes, 2,000 namespaces and 10,000 NetworkPolicies as YAML over 25 files
//! (`support/manifests.rs`), rendered for `node-0`. Targets: ≤ 6 s wall, ≤ 500 MiB peak.
//!
//! Each run is a fresh process, timed from spawn to exit, with its own account of the loading
//! and the compile-and-print parts and of its peak resident memory (its debug log). Its output
//! must equal the text compiled in this process from the same generated objects, so the
//! manifests provably describe the benchmarked cluster.
//!
//! Also reported, in this process: parsing the same files from YAML alone, to show what the
//! YAML library's share of the loading is.
//!
//! Environment: `PALISADE_BENCH_QUICK=1` runs the command once instead of three times;
//! `PALISADE_BENCH_CLUSTER=small` uses the small cluster; `PALISADE_BENCH_MANIFESTS=DIR` writes
//! the manifests into DIR (created, kept afterwards) instead of a scratch directory.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use palisade::compiler::{compile, CompilerConfig};
use palisade::model::Family;
use palisade::render;

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/manifests.rs"]
mod manifests;

use cluster::{ClusterParams, LOCAL_NODE};

const WALL_TARGET: Duration = Duration::from_secs(6);
const RSS_TARGET_MIB: u64 = 500;

/// The text `palisade render --node NODE` prints for a compiled state.
fn expected_text(state: &palisade::compiler::DesiredState) -> String {
    let mut out = String::new();
    for family in Family::ALL {
        let family_state = state.family(family);
        if family_state.chains.is_empty() {
            continue;
        }
        out.push_str(&render::full_text(family_state, family));
    }
    out
}

/// `key=value` of the command's debug line.
fn field(log: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("rendered"))?;
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

struct Run {
    wall: Duration,
    load_ms: u64,
    compile_and_print_ms: u64,
    peak_rss_mib: u64,
}

fn run(dir: &Path, expected: &str) -> Run {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["render", "--manifests"])
        .arg(dir)
        .args(["--node", LOCAL_NODE])
        .env("RUST_LOG", "palisade=debug")
        .output()
        .expect("running palisade render");
    let wall = started.elapsed();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "palisade render failed: {log}");
    let text = String::from_utf8(output.stdout).expect("render prints UTF-8");
    assert!(
        text == expected,
        "palisade render of the written manifests differs from the compiled cluster ({} vs {} bytes)",
        text.len(),
        expected.len()
    );
    let get = |key| field(&log, key).unwrap_or_else(|| panic!("no {key} in the log: {log}"));
    Run {
        wall,
        load_ms: get("load_ms"),
        compile_and_print_ms: get("compile_and_print_ms"),
        peak_rss_mib: get("peak_rss_mib"),
    }
}

fn yaml_parse_only(dir: &Path) -> Duration {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("the manifest directory")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    let started = Instant::now();
    let mut documents = 0usize;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a manifest");
        for document in yaml_serde::Deserializer::from_str(&text) {
            let value: serde_json::Value =
                serde::Deserialize::deserialize(document).expect("valid YAML");
            documents += usize::from(!value.is_null());
        }
    }
    let took = started.elapsed();
    std::hint::black_box(documents);
    took
}

fn main() {
    let quick = std::env::var_os("PALISADE_BENCH_QUICK").is_some();
    let params = match std::env::var("PALISADE_BENCH_CLUSTER").as_deref() {
        Ok("small") => ClusterParams::small(),
        _ => ClusterParams::large(),
    };
    let started = Instant::now();
    let objects = cluster::generate_for_manifests(&params);
    let scratch = tempfile::Builder::new()
        .prefix("palisade-render-bench-")
        .tempdir()
        .expect("a scratch directory");
    let kept = std::env::var_os("PALISADE_BENCH_MANIFESTS").map(std::path::PathBuf::from);
    let dir = match &kept {
        Some(dir) => {
            std::fs::create_dir_all(dir).expect("creating PALISADE_BENCH_MANIFESTS");
            dir.as_path()
        }
        None => scratch.path(),
    };
    let written = manifests::write(&objects, dir);
    println!(
        "render: {} pods, {} namespaces, {} policies written as {} objects in {} files, {:.1} MB of YAML ({:.1}s)",
        objects.pods.len(),
        objects.namespaces.len(),
        objects.policies.len(),
        written.objects,
        written.files,
        written.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let state = compile(
        &objects.build_index(),
        LOCAL_NODE,
        CompilerConfig::default(),
    );
    let expected = expected_text(&state);
    drop(state);

    let parse = yaml_parse_only(dir);
    println!(
        "render: YAML to documents alone (yaml_serde, one thread): {} ms",
        parse.as_millis()
    );

    let runs: Vec<Run> = (0..if quick { 1 } else { 3 })
        .map(|_| run(dir, &expected))
        .collect();
    for (i, r) in runs.iter().enumerate() {
        println!(
            "render run {}: wall {} ms (loading {} ms, compile and print {} ms), peak RSS {} MiB, output {} bytes, equal to the compiled cluster",
            i + 1,
            r.wall.as_millis(),
            r.load_ms,
            r.compile_and_print_ms,
            r.peak_rss_mib,
            expected.len()
        );
    }
    let mut walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    walls.sort();
    let median = walls[walls.len() / 2];
    let peak = runs.iter().map(|r| r.peak_rss_mib).max().unwrap_or(0);
    println!(
        "render summary: median wall {} ms (target ≤ {} ms) {}; peak RSS {} MiB (target ≤ {} MiB) {}",
        median.as_millis(),
        WALL_TARGET.as_millis(),
        if median <= WALL_TARGET { "met" } else { "MISSED" },
        peak,
        RSS_TARGET_MIB,
        if peak <= RSS_TARGET_MIB { "met" } else { "MISSED" }
    );
}
