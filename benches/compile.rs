//! Compiler benchmarks on the "large" cluster of the performance issue: 150,000 pods on 5,000
//! nodes (110 on `node-0`), 2,000 namespaces, 10,000 policies; then its Calico variant, the
//! same cluster plus 2,000 Calico policies in 3 tiers and 500 network sets
//! (`support/calico.rs`), whose benchmarks carry the prefix `calico_`.
//!
//! `cargo bench --bench compile` runs, for each variant:
//! - `cold_compile_node`: `NodeCompiler::new(&index, "node-0", ..)`, the node's desired state
//!   from scratch, as the agent builds it at start (target ≤ 300 ms; Calico variant ≤ 150 ms);
//! - `pod_label_change_remote` / `pod_label_change_local`: one pod's labels toggle between two
//!   label sets, moving it in and out of sets node-0 uses; each iteration is
//!   `index.upsert_pod` + `NodeCompiler::apply` (target ≤ 100 µs);
//! - `render_node`: the full `ipset restore` + `iptables-restore` text of node-0 (both families).
//!
//! Index construction is timed once and printed. A summary of the key figures follows the
//! criterion output.
//!
//! Environment:
//! - `PALISADE_BENCH_QUICK=1`: fewer samples and shorter measurement, for CI.
//! - `PALISADE_BENCH_CLUSTER=small`: the small cluster instead of the large one.
//! - `PALISADE_BENCH_SEED=N`: another cluster of the same shape (the default seed is fixed).
//! - `PALISADE_BENCH_BREAKDOWN=1`: also print where a cold compile spends its time, per set.
//! - `PALISADE_BENCH_VARIANT=kubernetes|calico`: only that variant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use palisade::compiler::{compile, DesiredState, Marks, NodeCompiler};
use palisade::index::ClusterIndex;
use palisade::model::{Family, Pod};
use palisade::render::full_text;

#[path = "support/cluster.rs"]
mod cluster;

#[path = "support/calico.rs"]
mod calico;

use cluster::{LabelToggle, LOCAL_NODE};

const COLD_COMPILE_TARGET: Duration = Duration::from_millis(300);
const CALICO_COLD_COMPILE_TARGET: Duration = Duration::from_millis(150);
const LABEL_CHANGE_TARGET: Duration = Duration::from_micros(100);

/// Sample settings of one benchmark.
#[derive(Clone, Copy)]
struct Settings {
    samples: usize,
    warm_up: Duration,
    measurement: Duration,
}

impl Settings {
    fn apply(self, c: Criterion) -> Criterion {
        c.sample_size(self.samples)
            .warm_up_time(self.warm_up)
            .measurement_time(self.measurement)
    }
}

/// On-CPU time of the calling thread (Linux `schedstat`), to tell the code's own cost from time
/// spent waiting for a core when the machine is busy.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Wall-clock and on-CPU time of a stretch of work.
#[derive(Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Option<Duration>,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            wall: Duration::ZERO,
            cpu: Some(Duration::ZERO),
        }
    }
}

impl Timing {
    fn add(&mut self, other: Timing) {
        self.wall += other.wall;
        self.cpu = self.cpu.zip(other.cpu).map(|(a, b)| a + b);
    }
}

/// Times `work`, returning its result (to be dropped outside the timed stretch).
fn timed<T>(work: impl FnOnce() -> T) -> (T, Timing) {
    let cpu_start = thread_cpu();
    let start = Instant::now();
    let out = work();
    let wall = start.elapsed();
    let cpu = match (cpu_start, thread_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    (out, Timing { wall, cpu })
}

/// Per-iteration times of the measured samples of one benchmark, as criterion ran them.
#[derive(Default)]
struct Recorded {
    /// Seconds per iteration (wall, on-CPU) of every call criterion made, warm-up calls first.
    calls: Vec<(f64, Option<f64>)>,
    samples: usize,
}

/// Median, min and max in seconds per iteration.
#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Option<Stats> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

impl Recorded {
    fn new(samples: usize) -> Self {
        Self {
            calls: Vec::new(),
            samples,
        }
    }

    fn push(&mut self, timing: Timing, iters: u64) {
        let n = iters.max(1) as f64;
        self.calls.push((
            timing.wall.as_secs_f64() / n,
            timing.cpu.map(|c| c.as_secs_f64() / n),
        ));
    }

    /// Criterion calls the routine for warm-up, then once per sample: the last `samples` calls.
    fn measured(&self) -> &[(f64, Option<f64>)] {
        let n = self.samples.min(self.calls.len());
        &self.calls[self.calls.len() - n..]
    }

    fn wall(&self) -> Option<Stats> {
        Stats::of(self.measured().iter().map(|(w, _)| *w).collect())
    }

    fn cpu(&self) -> Option<Stats> {
        let cpu: Option<Vec<f64>> = self.measured().iter().map(|(_, c)| *c).collect();
        Stats::of(cpu?)
    }
}

fn format_secs(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 1e-3 {
        format!("{:.1} ms", secs * 1e3)
    } else if secs >= 1e-6 {
        format!("{:.1} µs", secs * 1e6)
    } else {
        format!("{:.0} ns", secs * 1e9)
    }
}

fn summary_line(label: &str, recorded: &Recorded, target: Option<Duration>) -> String {
    let Some(wall) = recorded.wall() else {
        return format!("{label:<22} not run");
    };
    let mut line = format!(
        "{label:<22} {} (range {} .. {}, {} samples)",
        format_secs(wall.median),
        format_secs(wall.min),
        format_secs(wall.max),
        recorded.measured().len()
    );
    if let Some(cpu) = recorded.cpu() {
        line.push_str(&format!(
            "; on-CPU {} (range {} .. {})",
            format_secs(cpu.median),
            format_secs(cpu.min),
            format_secs(cpu.max)
        ));
    }
    if let Some(target) = target {
        let ratio = wall.median / target.as_secs_f64();
        let verdict = if ratio <= 1.0 { "met" } else { "MISSED" };
        line.push_str(&format!(
            "\n{:<22} target {}: {verdict} ({ratio:.2}x target, wall-clock median)",
            "",
            format_secs(target.as_secs_f64())
        ));
    }
    line
}

/// Times `iters` label toggles, each `index.upsert_pod` + `compiler.apply`. Pods are cloned in
/// untimed batches beforehand; everything the agent does with the change is timed, dropping the
/// replaced pod included. `next_b` says which label set goes in next and carries over between
/// calls, so the pod keeps alternating.
fn toggle(
    index: &mut ClusterIndex,
    compiler: &mut NodeCompiler,
    change: &LabelToggle,
    next_b: &mut bool,
    iters: u64,
) -> Timing {
    const BATCH: u64 = 1024;
    let mut total = Timing::default();
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        let pods: Vec<Pod> = (0..n)
            .map(|_| {
                let pod = if *next_b { &change.b } else { &change.a };
                *next_b = !*next_b;
                pod.clone()
            })
            .collect();
        let ((), timing) = timed(|| {
            for pod in pods {
                let change = index
                    .upsert_pod(pod)
                    .expect("the labels differ, so the index changes");
                compiler.apply(index, std::slice::from_ref(&change));
            }
        });
        total.add(timing);
        left -= n;
    }
    total
}

/// Brings the toggled pod back to its original labels (untimed).
fn restore(
    index: &mut ClusterIndex,
    compiler: &mut NodeCompiler,
    change: &LabelToggle,
    next_b: &mut bool,
) {
    if !*next_b {
        toggle(index, compiler, change, next_b, 1);
    }
}

/// Applies the toggle once each way, checks the incremental state against a cold compile, and
/// describes what the toggle changes in node-0's state.
fn check_toggle(
    index: &mut ClusterIndex,
    compiler: &mut NodeCompiler,
    change: &LabelToggle,
    original: &DesiredState,
) -> String {
    let mut next_b = true;
    toggle(index, compiler, change, &mut next_b, 1);
    let cold = compile(index, LOCAL_NODE, Marks::default());
    let matches_cold = compiler.state() == &cold;
    let (sets, changed_sets, members, chains) = cluster::state_diff(original, compiler.state());
    drop(cold);
    toggle(index, compiler, change, &mut next_b, 1);
    let back = compiler.state() == original;
    format!(
        "{} {} ({}): {} sets added/removed, {} sets with {} members changed, {} chains changed; \
         incremental == cold compile: {}; toggled back == original: {}",
        if change.a.node.as_deref() == Some(LOCAL_NODE) {
            "local"
        } else {
            "remote"
        },
        change.key(),
        change.description,
        sets,
        changed_sets,
        members,
        chains,
        matches_cold,
        back,
    )
}

/// Where a cold compile of node-0 spends its time, measured through the compiler's public
/// pieces: the policy chains, and for every set the chains read, the pods the label index
/// offers and the evaluation of the selector on them. Printed with `PALISADE_BENCH_BREAKDOWN=1`.
fn breakdown(index: &ClusterIndex) {
    use palisade::compiler::rules;
    use palisade::compiler::sets::SetKey;
    use palisade::compiler::CompilerConfig;
    use palisade::model::Direction;

    let config = CompilerConfig::default();
    let mut local: Vec<_> = index.pods_on_node(LOCAL_NODE).collect();
    local.sort_by(|a, b| a.key.cmp(&b.key));
    let mut seen = BTreeSet::new();
    let mut keys: BTreeSet<(SetKey, Family)> = BTreeSet::new();
    let mut chain_time = Duration::ZERO;
    for pod in &local {
        let families: BTreeSet<Family> = pod.ips.iter().map(Family::of).collect();
        for policy in index.policies_selecting(pod) {
            for direction in Direction::ALL {
                for family in &families {
                    if policy.rules(direction).is_none()
                        || !seen.insert((policy.id.clone(), direction, *family))
                    {
                        continue;
                    }
                    let (chain, timing) = timed(|| {
                        rules::policy_chain(
                            &policy,
                            direction,
                            *family,
                            palisade::model::DenialHandling::Deny,
                            &config,
                        )
                    });
                    chain_time += timing.wall;
                    keys.extend(chain.sets.into_iter().map(|k| (SetKey::clone(&k), *family)));
                }
            }
        }
    }
    struct Row {
        build: Duration,
        members: usize,
        candidates: usize,
        category: &'static str,
        canonical: String,
    }
    let mut rows = Vec::new();
    for (key, _family) in &keys {
        let mut best = Duration::MAX;
        let (mut members, mut candidates) = (0, 0);
        for _ in 0..3 {
            let start = Instant::now();
            // Candidates are tested only on what their buckets leave open, as the compiler does.
            members = match key.selector() {
                Some(selector) => {
                    let found = index.candidate_pods(selector.expr());
                    candidates = found.ids.len();
                    found
                        .ids
                        .iter()
                        .filter(|pod| {
                            index
                                .pod_by_id(**pod)
                                .is_some_and(|p| found.selects(selector, &index.pod_view(p)))
                        })
                        .count()
                }
                None => {
                    let offered: Vec<_> = match key {
                        SetKey::NamedPort { name, .. } => {
                            index.pod_ids_with_port_name(name).collect()
                        }
                        _ => Vec::new(),
                    };
                    candidates = offered.len();
                    offered.len()
                }
            };
            black_box(members);
            best = best.min(start.elapsed());
        }
        let category = match key {
            SetKey::Selector(_) => "selector",
            SetKey::NamedPort {
                selector: Some(_), ..
            } => "named port of selected pods",
            SetKey::NamedPort { selector: None, .. } => "named port of every pod",
            SetKey::Nets { .. } => "networks",
            SetKey::Service { .. } => "service",
        };
        rows.push(Row {
            build: best,
            members,
            candidates,
            category,
            canonical: key.canonical(),
        });
    }
    let total_build: Duration = rows.iter().map(|r| r.build).sum();
    println!("---- breakdown of a cold compile of {LOCAL_NODE} (best of 3 per set) ----");
    println!(
        "{} policy chains: {}; {} sets: candidates + evaluation {}",
        seen.len(),
        format_secs(chain_time.as_secs_f64()),
        rows.len(),
        format_secs(total_build.as_secs_f64()),
    );
    let mut categories: BTreeMap<&str, (usize, Duration, usize, usize)> = BTreeMap::new();
    for r in &rows {
        let e = categories.entry(r.category).or_default();
        e.0 += 1;
        e.1 += r.build;
        e.2 += r.members;
        e.3 += r.candidates;
    }
    for (category, (count, build, members, candidates)) in categories {
        println!(
            "  {category:<28} {count:>4} sets, {members:>7} members of {candidates:>7} candidates: {:>9}",
            format_secs(build.as_secs_f64()),
        );
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.build));
    println!("  costliest sets:");
    for r in rows.iter().take(12) {
        let mut text = r.canonical.clone();
        if text.len() > 110 {
            let mut cut = 110;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        println!(
            "  {:>9}  {:>6} of {:>6}  {}: {text}",
            format_secs(r.build.as_secs_f64()),
            r.members,
            r.candidates,
            r.category,
        );
    }
}

fn render(state: &DesiredState) -> (String, String) {
    (
        full_text(state.family(Family::V4), Family::V4),
        full_text(state.family(Family::V6), Family::V6),
    )
}

/// One cluster to bench: its name (a prefix of the bench names), and its targets.
struct Variant {
    name: &'static str,
    prefix: &'static str,
    cold_target: Duration,
}

fn main() {
    let quick = std::env::var("PALISADE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let small = std::env::var("PALISADE_BENCH_CLUSTER").is_ok_and(|v| v == "small");
    let only = std::env::var("PALISADE_BENCH_VARIANT").ok();
    let mut params = if small {
        cluster::ClusterParams::small()
    } else {
        cluster::ClusterParams::large()
    };
    if let Some(seed) = std::env::var("PALISADE_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        params.seed = seed;
    }
    let size = if small { "small" } else { "large" };
    let mode = if quick { "quick" } else { "full" };
    let mut c = Criterion::default()
        .nresamples(if quick { 10_000 } else { 100_000 })
        .configure_from_args();
    let variants = [
        Variant {
            name: "kubernetes",
            prefix: "",
            cold_target: COLD_COMPILE_TARGET,
        },
        Variant {
            name: "calico",
            prefix: "calico_",
            cold_target: CALICO_COLD_COMPILE_TARGET,
        },
    ];
    let mut summaries = Vec::new();
    for variant in variants {
        if only.as_deref().is_some_and(|o| o != variant.name) {
            continue;
        }
        let (next, summary) = run_variant(c, &variant, &params, quick, size, mode, small);
        c = next;
        summaries.push(summary);
    }
    c.final_summary();
    for summary in summaries {
        println!();
        print!("{summary}");
    }
}

#[allow(clippy::too_many_arguments)]
fn run_variant(
    mut c: Criterion,
    variant: &Variant,
    params: &cluster::ClusterParams,
    quick: bool,
    size: &str,
    mode: &str,
    small: bool,
) -> (Criterion, String) {
    let prefix = variant.prefix;
    // ---- the cluster, generated once and shared --------------------------------------------
    let start = Instant::now();
    let objects = cluster::generate(params);
    let calico_objects = if variant.name == "calico" {
        let calico_params = if small {
            calico::CalicoParams::small()
        } else {
            calico::CalicoParams::large()
        };
        calico::generate(&objects, &calico_params)
    } else {
        Vec::new()
    };
    let generate_time = start.elapsed();
    let start = Instant::now();
    let mut index = objects.build_index();
    calico::add_to_index(&mut index, &calico_objects);
    let index_time = start.elapsed();
    println!(
        "palisade compile bench: {size} {} cluster (seed {:#x}), {mode} mode",
        variant.name, params.seed
    );
    println!("cluster: {}", cluster::describe_index(&index));
    println!(
        "generation: {}; index build (upsert of every namespace, pod and policy): {}",
        format_secs(generate_time.as_secs_f64()),
        format_secs(index_time.as_secs_f64())
    );
    let start = Instant::now();
    let state = compile(&index, LOCAL_NODE, Marks::default());
    let first_compile = start.elapsed();
    let (v4, v6) = render(&state);
    let rendered_bytes = v4.len() + v6.len();
    drop((v4, v6));
    println!("{LOCAL_NODE} state: {}", cluster::describe_state(&state));
    println!(
        "{LOCAL_NODE}: first cold compile {}, rendered text {} KiB",
        format_secs(first_compile.as_secs_f64()),
        rendered_bytes / 1024
    );

    if std::env::var("PALISADE_BENCH_BREAKDOWN").is_ok_and(|v| !v.is_empty() && v != "0") {
        breakdown(&index);
    }

    let (cold, change, render_settings) = if quick {
        (
            Settings {
                samples: 10,
                warm_up: Duration::from_millis(300),
                measurement: Duration::from_secs(2),
            },
            Settings {
                samples: 20,
                warm_up: Duration::from_millis(300),
                measurement: Duration::from_secs(1),
            },
            Settings {
                samples: 10,
                warm_up: Duration::from_millis(300),
                measurement: Duration::from_secs(2),
            },
        )
    } else {
        (
            Settings {
                samples: 20,
                warm_up: Duration::from_secs(2),
                measurement: Duration::from_secs(8),
            },
            Settings {
                samples: 50,
                warm_up: Duration::from_secs(1),
                measurement: Duration::from_secs(4),
            },
            Settings {
                samples: 20,
                warm_up: Duration::from_secs(1),
                measurement: Duration::from_secs(4),
            },
        )
    };
    // Flat sampling of a slow compile needs about samples x compile time; ask for that much so
    // criterion does not warn, whatever the machine.
    let cold = Settings {
        measurement: cold
            .measurement
            .max(first_compile.mul_f64(cold.samples as f64 * 1.3)),
        ..cold
    };

    // ---- cold compile ----------------------------------------------------------------------
    let mut cold_rec = Recorded::new(cold.samples);
    c = cold.apply(c);
    c.bench_function(&format!("{prefix}cold_compile_node"), |b| {
        b.iter_custom(|iters| {
            let mut total = Timing::default();
            for _ in 0..iters {
                let (compiler, timing) = timed(|| {
                    NodeCompiler::new(black_box(&index), black_box(LOCAL_NODE), Marks::default())
                });
                total.add(timing);
                // Dropping the compiler and its state is not part of compiling (the agent keeps
                // both for the changes that follow).
                drop(black_box(compiler));
            }
            cold_rec.push(total, iters);
            total.wall
        })
    });

    // ---- render ----------------------------------------------------------------------------
    let mut render_rec = Recorded::new(render_settings.samples);
    c = render_settings.apply(c);
    c.bench_function(&format!("{prefix}render_node"), |b| {
        b.iter_custom(|iters| {
            let mut total = Timing::default();
            for _ in 0..iters {
                let (text, timing) = timed(|| render(black_box(&state)));
                total.add(timing);
                drop(black_box(text));
            }
            render_rec.push(total, iters);
            total.wall
        })
    });

    // ---- label changes ---------------------------------------------------------------------
    let mut compiler = NodeCompiler::new(&index, LOCAL_NODE, Marks::default());
    let mut checks = Vec::new();
    let mut remote_rec = Recorded::new(change.samples);
    let mut local_rec = Recorded::new(change.samples);
    c = change.apply(c);
    for (name, local, rec) in [
        (
            format!("{prefix}pod_label_change_remote"),
            false,
            &mut remote_rec,
        ),
        (
            format!("{prefix}pod_label_change_local"),
            true,
            &mut local_rec,
        ),
    ] {
        let Some(toggle_spec) = cluster::label_toggle(&index, LOCAL_NODE, local) else {
            checks.push(format!("{name}: no suitable pod found"));
            continue;
        };
        checks.push(check_toggle(
            &mut index,
            &mut compiler,
            &toggle_spec,
            &state,
        ));
        let mut next_b = true;
        c.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let timing = toggle(&mut index, &mut compiler, &toggle_spec, &mut next_b, iters);
                rec.push(timing, iters);
                timing.wall
            })
        });
        restore(&mut index, &mut compiler, &toggle_spec, &mut next_b);
    }
    let consistent = compiler.state() == &state;

    // ---- summary ---------------------------------------------------------------------------
    let mut out = String::new();
    let _ = writeln!(
        out,
        "==== palisade compile bench summary ({size} {} cluster, {mode} mode) ====",
        variant.name
    );
    let _ = writeln!(
        out,
        "cluster:               {}",
        cluster::describe_index(&index)
    );
    let _ = writeln!(
        out,
        "index build:           {} ({} pods, {} namespaces, {} policies; generation {})",
        format_secs(index_time.as_secs_f64()),
        index.pod_count(),
        index.namespace_count(),
        index.policy_count(),
        format_secs(generate_time.as_secs_f64())
    );
    let _ = writeln!(
        out,
        "{LOCAL_NODE} state:         {}",
        cluster::describe_state(&state)
    );
    let _ = writeln!(
        out,
        "{}",
        summary_line("cold compile:", &cold_rec, Some(variant.cold_target))
    );
    let _ = writeln!(
        out,
        "{}",
        summary_line(
            "label change remote:",
            &remote_rec,
            Some(LABEL_CHANGE_TARGET)
        )
    );
    let _ = writeln!(
        out,
        "{}",
        summary_line("label change local:", &local_rec, Some(LABEL_CHANGE_TARGET))
    );
    let _ = writeln!(
        out,
        "{}  ({} KiB)",
        summary_line("render node:", &render_rec, None),
        rendered_bytes / 1024
    );
    for check in checks {
        let _ = writeln!(out, "toggle {check}");
    }
    let _ = writeln!(
        out,
        "state after all toggles == initial cold compile: {consistent}"
    );
    (c, out)
}
