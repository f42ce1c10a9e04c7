//! Dataplane benchmarks against the real kernel, on `node-0` of the "large" cluster of the
//! performance issue (150,000 pods on 5,000 nodes, 110 on `node-0`, 2,000 namespaces, 10,000
//! policies): about 175 sets, 34k members, 324 chains and 1,380 rules.
//!
//! `cargo bench --bench apply` (as root; otherwise it prints "skipping: needs root") measures,
//! for each iptables backend (nft, then legacy):
//! 1. `full apply`: `Dataplane::apply` of node-0's compiled state into a fresh network namespace
//!    (`pal-bench-<pid>-<n>`), one new namespace per repetition; wall time by our own timer and
//!    the report's `elapsed`, split into the commands the dataplane ran and the rest;
//! 2. `bare restore`: the very restore inputs the dataplane sent (from a dry run against an
//!    empty namespace), fed to the same tools with `ip netns exec NS <tool> < file` in a fresh
//!    namespace; the ratio apply / bare against the 1.2x target. Apply and bare repetitions are
//!    interleaved so a busy machine slows both alike;
//! 3. the in-process part of an apply (validation, parsing the saves, planning, rendering) with
//!    a `RecordingRunner` that answers with empty saves (fresh), with the saves of a programmed
//!    namespace (no-op), and with those saves against the empty state (mostly parsing); plus
//!    `render::ipset_restore` + `render::iptables_restore` of the state as a reference;
//! 4. `label toggles`: one remote pod, then one local pod, flips a label so it moves in and out
//!    of sets node-0 uses (`index.upsert_pod` + `NodeCompiler::apply` + `Dataplane::apply` on
//!    the programmed namespace), checking the report against the state diff (a remote toggle
//!    must only change members, a local one rewrites chains). After the initial apply the
//!    dataplane plans from memory, so these are the event-to-kernel figures of a running agent
//!    (median and p99);
//! 5. `no-op re-apply`: the applied state again (from memory: no read, no restore); then the
//!    kernel is read back and must match the state, which proves the memory was right.
//!
//! Every namespace is deleted when its guard drops, panics included; namespaces left by a
//! killed run (their pid gone) are deleted at start.
//!
//! Environment:
//! - `PALISADE_BENCH_QUICK=1`: 3 repetitions and 40 toggles instead of 5 and 200;
//! - `PALISADE_BENCH_REPS=N`: N repetitions of the full apply and bare restore;
//! - `PALISADE_BENCH_CLUSTER=small`: the small cluster instead of the large one;
//! - `PALISADE_BENCH_BACKENDS=nft|legacy|nft,legacy`: which backends (default both).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade::agent::{Agent, AgentConfig, AgentMessage, SourceEvent};
use palisade::compiler::desired::SetEntry;
use palisade::compiler::{DesiredState, Marks, NodeCompiler};
use palisade::dataplane::{
    ApplyOptions, ApplyReport, Backend, CommandOutput, CommandRunner, Dataplane, DataplaneError,
    FamilyStats, NetnsRunner, RecordingRunner, Restore,
};
use palisade::index::ClusterIndex;
use palisade::metrics::Metrics;
use palisade::model::{Family, PolicyKind};
use palisade::render;
use prometheus::core::Metric as _;

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/manifests.rs"]
mod manifests;

use cluster::{LabelToggle, LOCAL_NODE};

/// Apply of a full state into an empty namespace may cost at most this much more than
/// restoring the same text with the bare tools.
const RATIO_TARGET: f64 = 1.2;

// ---- small helpers -------------------------------------------------------------------------

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            // Uid: real effective saved fs
            line.split_whitespace().nth(2).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

fn have_program(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn ms(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 1e-3 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{:.0} µs", secs * 1e6)
    }
}

/// Median, min and max of some durations.
#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    /// The 99th percentile (nearest rank): the maximum below 100 samples.
    p99: Duration,
    min: Duration,
    max: Duration,
    n: usize,
}

impl Stats {
    fn of(values: impl IntoIterator<Item = Duration>) -> Option<Stats> {
        let mut v: Vec<Duration> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort();
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2
        };
        let p99 = v[(n * 99).div_ceil(100).clamp(1, n) - 1];
        Some(Stats {
            median,
            p99,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (p99 {}, min {}, max {}, n={})",
            ms(self.median),
            ms(self.p99),
            ms(self.min),
            ms(self.max),
            self.n
        )
    }
}

fn stats_text(stats: Option<Stats>) -> String {
    stats.map_or_else(|| "not run".to_string(), |s| s.to_string())
}

/// CPU time of this process and of its waited-for children, from `/proc/self/stat`, in clock
/// ticks (10 ms on Linux): coarse, only meaningful summed over several applies.
#[derive(Clone, Copy, Default)]
struct CpuTicks {
    own: u64,
    children: u64,
}

impl CpuTicks {
    fn now() -> CpuTicks {
        let parse = || -> Option<CpuTicks> {
            let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
            let after = &stat[stat.rfind(')')? + 1..];
            let f: Vec<u64> = after
                .split_whitespace()
                .map(|w| w.parse().unwrap_or(0))
                .collect();
            // Fields 14..17 of proc(5), counted from field 3 (the state) here.
            Some(CpuTicks {
                own: f.get(11)? + f.get(12)?,
                children: f.get(13)? + f.get(14)?,
            })
        };
        parse().unwrap_or_default()
    }

    fn since(self, earlier: CpuTicks) -> CpuTicks {
        CpuTicks {
            own: self.own.saturating_sub(earlier.own),
            children: self.children.saturating_sub(earlier.children),
        }
    }

    /// "own X ms + children Y ms per run".
    fn per_run(self, runs: usize) -> String {
        let tick_ms = 10.0;
        let runs = runs.max(1) as f64;
        format!(
            "own {:.0} ms + children {:.0} ms per run",
            self.own as f64 * tick_ms / runs,
            self.children as f64 * tick_ms / runs
        )
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

// ---- network namespaces --------------------------------------------------------------------

/// A network namespace that lives as long as the value; deleted on drop, panics included.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "pal-bench-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns add`: {e}"));
        assert!(
            out.status.success(),
            "`ip netns add {name}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns { name }
    }

    /// Runs a command in the namespace; it must succeed. Returns stdout.
    fn run(&self, argv: &[&str]) -> String {
        NetnsRunner::new(self.name.clone())
            .run(
                argv[0],
                &argv[1..].iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                None,
            )
            .unwrap_or_else(|e| panic!("{argv:?} in {}: {e}", self.name))
            .stdout
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Deletes `pal-bench-<pid>-<n>` namespaces whose process is gone (a run killed by a signal
/// does not unwind).
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("pal-bench-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            println!("deleting stale namespace {name}");
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

// ---- a runner that times every command -----------------------------------------------------

/// One command the dataplane (or the bare restore) ran.
#[derive(Debug, Clone)]
struct Call {
    /// `ipset save`, `ipset restore`, `iptables-nft-save`, ...
    what: String,
    wall: Duration,
    stdin_bytes: usize,
    stdout_bytes: usize,
}

fn call_name(program: &str, args: &[String]) -> String {
    match args.first() {
        Some(sub) if program == "ipset" => format!("ipset {sub}"),
        _ => program.to_string(),
    }
}

/// Runs in a namespace like [`NetnsRunner`] and records how long each command took.
struct Timed {
    inner: NetnsRunner,
    calls: Mutex<Vec<Call>>,
}

impl Timed {
    fn new(ns: &Netns) -> Arc<Timed> {
        Arc::new(Timed {
            inner: NetnsRunner::new(ns.name.clone()),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl CommandRunner for Timed {
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, DataplaneError> {
        let start = Instant::now();
        let result = self.inner.run(program, args, stdin);
        let wall = start.elapsed();
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Call {
                what: call_name(program, args),
                wall,
                stdin_bytes: stdin.map_or(0, str::len),
                stdout_bytes: result.as_ref().map_or(0, |o| o.stdout.len()),
            });
        result
    }
}

// ---- one timed apply -----------------------------------------------------------------------

struct ApplySample {
    wall: Duration,
    report: ApplyReport,
    calls: Vec<Call>,
}

impl ApplySample {
    fn commands(&self) -> Duration {
        self.calls.iter().map(|c| c.wall).sum()
    }
}

fn timed_apply(dp: &Dataplane, runner: &Timed, state: &DesiredState) -> ApplySample {
    runner.take();
    let start = Instant::now();
    let report = dp
        .apply(state, ApplyOptions { dry_run: false })
        .unwrap_or_else(|e| panic!("apply failed: {e}"));
    let wall = start.elapsed();
    ApplySample {
        wall,
        report,
        calls: runner.take(),
    }
}

/// Median time per command kind over samples (each sample's calls of one kind summed), in the
/// order the commands ran, then the rest of the wall time ("in-process").
fn breakdown(samples: &[(Duration, &[Call])]) -> Vec<(String, Stats, usize, usize)> {
    let mut order: Vec<String> = Vec::new();
    for (_, calls) in samples {
        for c in calls.iter() {
            if !order.contains(&c.what) {
                order.push(c.what.clone());
            }
        }
    }
    let mut rows = Vec::new();
    for what in &order {
        let mut times = Vec::new();
        let (mut stdin, mut stdout) = (0, 0);
        for (_, calls) in samples {
            let mine: Vec<&Call> = calls.iter().filter(|c| &c.what == what).collect();
            times.push(mine.iter().map(|c| c.wall).sum());
            stdin = stdin.max(mine.iter().map(|c| c.stdin_bytes).sum());
            stdout = stdout.max(mine.iter().map(|c| c.stdout_bytes).sum());
        }
        if let Some(s) = Stats::of(times) {
            rows.push((what.clone(), s, stdin, stdout));
        }
    }
    let rest = samples
        .iter()
        .map(|(wall, calls)| wall.saturating_sub(calls.iter().map(|c| c.wall).sum()));
    if let Some(s) = Stats::of(rest) {
        rows.push(("in-process (wall - commands)".to_string(), s, 0, 0));
    }
    rows
}

fn breakdown_text(rows: &[(String, Stats, usize, usize)], indent: &str) -> String {
    let mut out = String::new();
    for (what, stats, stdin, stdout) in rows {
        let mut io = String::new();
        if *stdin > 0 {
            io.push_str(&format!(", stdin {} KiB", stdin.div_ceil(1024)));
        }
        if *stdout > 0 {
            io.push_str(&format!(", stdout {} KiB", stdout.div_ceil(1024)));
        }
        out.push_str(&format!(
            "{indent}{what:<30} {:>9} (min {}, max {}){io}\n",
            ms(stats.median),
            ms(stats.min),
            ms(stats.max)
        ));
    }
    out
}

/// One line of what a report says changed.
fn report_text(report: &ApplyReport) -> String {
    let mut parts = Vec::new();
    for family in Family::ALL {
        let s = report.family(family);
        if s.skipped {
            parts.push(format!("{family}: skipped"));
            continue;
        }
        parts.push(format!(
            "{family}: +{} -{} members, {} sets created, {} destroyed, {} chains written, {} deleted, {} hooks",
            s.members_added,
            s.members_removed,
            s.sets_created,
            s.sets_destroyed,
            s.chains_written,
            s.chains_deleted,
            s.hooks_inserted + s.hooks_removed
        ));
    }
    format!(
        "{} changes, {} restores; {}",
        report.changes,
        report.restores.len(),
        parts.join("; ")
    )
}

// ---- bare restore --------------------------------------------------------------------------

/// The restore inputs written to files, to be fed with `<` as a shell would.
struct BareInput {
    restore: Restore,
    path: PathBuf,
}

fn bare_restore(ns: &Netns, inputs: &[BareInput]) -> (Duration, Vec<Call>) {
    let mut calls = Vec::new();
    let start = Instant::now();
    for input in inputs {
        let t = Instant::now();
        let stdin = File::open(&input.path).expect("restore input file");
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, &input.restore.program])
            .args(&input.restore.args)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("cannot run ip netns exec");
        assert!(
            out.status.success(),
            "bare {} failed: {}",
            input.restore.program,
            String::from_utf8_lossy(&out.stderr)
        );
        calls.push(Call {
            what: call_name(&input.restore.program, &input.restore.args),
            wall: t.elapsed(),
            stdin_bytes: input.restore.input.len(),
            stdout_bytes: 0,
        });
    }
    (start.elapsed(), calls)
}

// ---- in-process cost, no kernel ------------------------------------------------------------

/// Median wall time of `reps` dry-run applies of `state` over a runner that answers every read
/// with `saves` (program, stdout); nothing runs, so this is validation, parsing, planning and
/// rendering only.
fn in_process(
    backend: Backend,
    saves: &[(String, String)],
    state: &DesiredState,
    reps: usize,
) -> (Stats, ApplyReport) {
    let runner = Arc::new(RecordingRunner::new());
    for (program, stdout) in saves {
        runner.set_output(program, stdout);
    }
    let dp = Dataplane::new(runner.clone(), backend);
    let mut times = Vec::new();
    let mut last = ApplyReport::default();
    for _ in 0..reps {
        runner.clear_calls();
        let start = Instant::now();
        last = dp
            .apply(state, ApplyOptions { dry_run: true })
            .expect("dry run over a recording runner");
        times.push(start.elapsed());
    }
    (Stats::of(times).expect("reps > 0"), last)
}

/// What the dataplane reads from a namespace: `ipset save` and both filter-table saves.
fn kernel_saves(ns: &Netns, backend: Backend) -> Vec<(String, String)> {
    let mut saves = vec![("ipset".to_string(), ns.run(&["ipset", "save"]))];
    for family in Family::ALL {
        let program = backend.save_binary(family);
        saves.push((program.to_string(), ns.run(&[program, "-t", "filter"])));
    }
    saves
}

// ---- label toggles -------------------------------------------------------------------------

struct ToggleSample {
    /// `index.upsert_pod` + `NodeCompiler::apply`.
    compile: Duration,
    apply: Duration,
    total: Duration,
    report: ApplyReport,
    calls: Vec<Call>,
    /// (sets added/removed, sets with changed members, members changed, chains changed) by
    /// comparing the states before and after.
    expected: (usize, usize, usize, usize),
    /// What the report should say, per family, from the same comparison.
    expected_stats: [FamilyStats; 2],
}

impl ToggleSample {
    /// Whether the report changed exactly what the state diff says, and nothing else.
    fn consistent(&self) -> bool {
        Family::ALL.into_iter().all(|family| {
            let mut reported = *self.report.family(family);
            reported.skipped = false;
            (reported.hooks_inserted, reported.hooks_removed) = (0, 0);
            reported == self.expected_stats[family_slot(family)]
        })
    }
}

fn family_slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// The content each set's spare name holds, for the sets the toggles have switched (see the
/// dataplane's placement), by family slot.
type Spares = [BTreeMap<String, BTreeSet<SetEntry>>; 2];

/// What an apply must change to go from `before` to `after` (hooks left out): created sets
/// count their members as added, chains added or changed count as written. A set whose members
/// change while rules use it is written under its other name and every chain using it is
/// rewritten; that name is its spare, holding the content before its last switch, so only the
/// members that differ from the spare are written (a set without one is created whole). The
/// exception: a change that is one member of one used set and nothing else is an edit in place.
fn expected_stats(
    before: &DesiredState,
    after: &DesiredState,
    spares: &mut Spares,
) -> [FamilyStats; 2] {
    let changed_used = |family: Family| -> BTreeSet<String> {
        let (b, a) = (before.family(family), after.family(family));
        a.ipsets
            .iter()
            .filter(|(name, set)| {
                b.ipsets
                    .get(*name)
                    .is_some_and(|old| old.members != set.members)
                    && b.chains.values().any(|chain| chain.references_set(name))
            })
            .map(|(name, _)| name.clone())
            .collect()
    };
    let used_edits: usize = Family::ALL
        .into_iter()
        .flat_map(|family| {
            let (b, a) = (before.family(family), after.family(family));
            changed_used(family).into_iter().map(move |name| {
                let (old, new) = (&b.ipsets[&name].members, &a.ipsets[&name].members);
                old.symmetric_difference(new).count()
            })
        })
        .sum();
    let chains_change = Family::ALL
        .into_iter()
        .any(|family| before.family(family).chains != after.family(family).chains);
    let in_place = used_edits <= 1 && !chains_change;

    let mut out = [FamilyStats::default(); 2];
    for family in Family::ALL {
        let (b, a) = (before.family(family), after.family(family));
        let spares = &mut spares[family_slot(family)];
        let s = &mut out[family_slot(family)];
        let moved = if in_place {
            BTreeSet::new()
        } else {
            changed_used(family)
        };
        for (name, set) in &a.ipsets {
            match b.ipsets.get(name) {
                None => {
                    s.sets_created += 1;
                    s.members_added += set.members.len();
                }
                Some(old) if moved.contains(name) => {
                    match spares.get(name) {
                        Some(spare) => {
                            s.members_added += set.members.difference(spare).count();
                            s.members_removed += spare.difference(&set.members).count();
                        }
                        None => {
                            s.sets_created += 1;
                            s.members_added += set.members.len();
                        }
                    }
                    spares.insert(name.clone(), old.members.clone());
                }
                Some(old) => {
                    s.members_added += set.members.difference(&old.members).count();
                    s.members_removed += old.members.difference(&set.members).count();
                }
            }
        }
        for gone in b.ipsets.keys().filter(|k| !a.ipsets.contains_key(*k)) {
            s.sets_destroyed += 1 + usize::from(spares.remove(gone).is_some());
        }
        s.chains_written = a
            .chains
            .iter()
            .filter(|(name, chain)| {
                b.chains.get(*name) != Some(chain)
                    || moved.iter().any(|set| chain.references_set(set))
            })
            .count();
        s.chains_deleted = b
            .chains
            .keys()
            .filter(|k| !a.chains.contains_key(*k))
            .count();
    }
    out
}

fn run_toggles(
    index: &mut ClusterIndex,
    compiler: &mut NodeCompiler,
    dp: &Dataplane,
    runner: &Timed,
    spec: &LabelToggle,
    count: usize,
    spares: &mut Spares,
) -> Vec<ToggleSample> {
    let mut samples = Vec::new();
    let mut next_b = true;
    // An even count ends where it started.
    let count = count + count % 2;
    for _ in 0..count {
        let pod = if next_b {
            spec.b.clone()
        } else {
            spec.a.clone()
        };
        next_b = !next_b;
        let before = compiler.state().clone();
        runner.take();
        let start = Instant::now();
        let change = index
            .upsert_pod(pod)
            .expect("the labels differ, so the index changes");
        compiler.apply(index, std::slice::from_ref(&change));
        let compiled = Instant::now();
        let report = dp
            .apply(compiler.state(), ApplyOptions { dry_run: false })
            .unwrap_or_else(|e| panic!("toggle apply failed: {e}"));
        let end = Instant::now();
        drop(change);
        let expected = cluster::state_diff(&before, compiler.state());
        let expected_stats = expected_stats(&before, compiler.state(), spares);
        samples.push(ToggleSample {
            compile: compiled - start,
            apply: end - compiled,
            total: end - start,
            report,
            calls: runner.take(),
            expected,
            expected_stats,
        });
    }
    samples
}

struct ToggleResult {
    label: String,
    description: String,
    compile: Option<Stats>,
    apply: Option<Stats>,
    total: Option<Stats>,
    elapsed: Option<Stats>,
    breakdown: Vec<(String, Stats, usize, usize)>,
    reports: BTreeSet<String>,
    expected: BTreeSet<String>,
    consistent: bool,
}

fn summarize_toggles(label: &str, spec: &LabelToggle, samples: &[ToggleSample]) -> ToggleResult {
    let pairs: Vec<(Duration, &[Call])> = samples
        .iter()
        .map(|s| (s.apply, s.calls.as_slice()))
        .collect();
    ToggleResult {
        label: label.to_string(),
        description: format!("{} ({})", spec.key(), spec.description),
        compile: Stats::of(samples.iter().map(|s| s.compile)),
        apply: Stats::of(samples.iter().map(|s| s.apply)),
        total: Stats::of(samples.iter().map(|s| s.total)),
        elapsed: Stats::of(samples.iter().map(|s| s.report.elapsed)),
        breakdown: breakdown(&pairs),
        reports: samples.iter().map(|s| report_text(&s.report)).collect(),
        expected: samples
            .iter()
            .map(|s| {
                let (sets, changed, members, chains) = s.expected;
                format!(
                    "{sets} sets added/removed, {members} members in {changed} sets, {chains} chains"
                )
            })
            .collect(),
        consistent: samples.iter().all(ToggleSample::consistent),
    }
}

// ---- one backend ---------------------------------------------------------------------------

struct BackendResult {
    backend: Backend,
    dry_run: Duration,
    apply_wall: Option<Stats>,
    apply_elapsed: Option<Stats>,
    apply_breakdown: Vec<(String, Stats, usize, usize)>,
    apply_cpu: String,
    apply_report: String,
    bare_wall: Option<Stats>,
    bare_breakdown: Vec<(String, Stats, usize, usize)>,
    bare_cpu: String,
    /// Median of apply/bare over the interleaved pairs of repetitions.
    paired_ratio: Option<f64>,
    texts_identical: bool,
    in_process_fresh: Stats,
    in_process_noop: Stats,
    in_process_parse: Stats,
    /// `render::ipset_restore` + `render::iptables_restore` of the state: the plain renderer,
    /// a reference for what writing the fresh-apply text can cost.
    plain_render: Stats,
    toggles: Vec<ToggleResult>,
    noop_wall: Option<Stats>,
    noop_breakdown: Vec<(String, Stats, usize, usize)>,
    noop_report: BTreeSet<String>,
    /// `Dataplane::verify` of the whole state (the periodic refresh): reads and compares.
    verify_wall: Option<Stats>,
    /// `Dataplane::read_counters` of the whole state, and how many rules it read.
    counter_read_wall: Option<Stats>,
    counted_rules: usize,
    memory_matches_kernel: bool,
    state_restored: bool,
}

struct Context<'a> {
    index: &'a mut ClusterIndex,
    compiler: &'a mut NodeCompiler,
    state: &'a DesiredState,
    toggles: &'a [(&'static str, LabelToggle)],
    reps: usize,
    toggle_count: usize,
    scratch: &'a Path,
}

fn bench_backend(backend: Backend, cx: &mut Context<'_>) -> BackendResult {
    println!("---- backend {backend} ----");
    let state = cx.state;
    // Namespaces live until the end of this backend's run, so the kernel does not tear one
    // down while the next is being measured.
    let mut namespaces: Vec<Netns> = Vec::new();

    // The exact texts: a dry run against an empty namespace.
    namespaces.push(Netns::new());
    let empty = namespaces.last().expect("just pushed");
    let dp = Dataplane::new(Arc::new(NetnsRunner::new(empty.name.clone())), backend);
    let start = Instant::now();
    let dry = dp
        .apply(state, ApplyOptions { dry_run: true })
        .unwrap_or_else(|e| panic!("dry run failed: {e}"));
    let dry_run = start.elapsed();
    let inputs: Vec<BareInput> = dry
        .restores
        .iter()
        .enumerate()
        .map(|(i, restore)| {
            let path = cx
                .scratch
                .join(format!("{backend}-{i}-{:?}.txt", restore.stage));
            std::fs::write(&path, &restore.input).expect("write restore input");
            BareInput {
                restore: restore.clone(),
                path,
            }
        })
        .collect();
    println!(
        "dry run against an empty namespace: {}; restores: {}",
        ms(dry_run),
        inputs
            .iter()
            .map(|i| format!(
                "{} {} ({:?}, {} KiB, {} lines)",
                i.restore.program,
                i.restore.args.join(" "),
                i.restore.stage,
                i.restore.input.len().div_ceil(1024),
                i.restore.input.lines().count()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // ---- full apply vs bare restore, interleaved -------------------------------------------
    let mut applies: Vec<ApplySample> = Vec::new();
    let mut bares: Vec<(Duration, Vec<Call>)> = Vec::new();
    let (mut apply_cpu, mut bare_cpu) = (CpuTicks::default(), CpuTicks::default());
    let mut texts_identical = true;
    for rep in 0..cx.reps {
        let mut do_apply = |namespaces: &mut Vec<Netns>| {
            namespaces.push(Netns::new());
            let ns = namespaces.last().expect("just pushed");
            let runner = Timed::new(ns);
            let dp = Dataplane::new(runner.clone(), backend);
            let cpu = CpuTicks::now();
            let sample = timed_apply(&dp, &runner, state);
            let used = CpuTicks::now().since(cpu);
            apply_cpu.own += used.own;
            apply_cpu.children += used.children;
            texts_identical &= sample.report.restores == dry.restores;
            println!(
                "  apply #{rep}: wall {}, report.elapsed {}, commands {} ({})",
                ms(sample.wall),
                ms(sample.report.elapsed),
                ms(sample.commands()),
                sample
                    .calls
                    .iter()
                    .map(|c| format!("{} {}", c.what, ms(c.wall)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            applies.push(sample);
        };
        let mut do_bare = |namespaces: &mut Vec<Netns>| {
            namespaces.push(Netns::new());
            let ns = namespaces.last().expect("just pushed");
            let cpu = CpuTicks::now();
            let (wall, calls) = bare_restore(ns, &inputs);
            let used = CpuTicks::now().since(cpu);
            bare_cpu.own += used.own;
            bare_cpu.children += used.children;
            println!(
                "  bare  #{rep}: wall {} ({})",
                ms(wall),
                calls
                    .iter()
                    .map(|c| format!("{} {}", c.what, ms(c.wall)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            bares.push((wall, calls));
        };
        // Alternate which goes first, so slow drift of the machine hits both alike.
        if rep % 2 == 0 {
            do_apply(&mut namespaces);
            do_bare(&mut namespaces);
        } else {
            do_bare(&mut namespaces);
            do_apply(&mut namespaces);
        }
    }
    let apply_pairs: Vec<(Duration, &[Call])> = applies
        .iter()
        .map(|s| (s.wall, s.calls.as_slice()))
        .collect();
    let bare_pairs: Vec<(Duration, &[Call])> =
        bares.iter().map(|(w, c)| (*w, c.as_slice())).collect();
    let mut ratios: Vec<f64> = applies
        .iter()
        .zip(&bares)
        .map(|(a, (b, _))| a.wall.as_secs_f64() / b.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let paired_ratio = ratios.get(ratios.len() / 2).copied();
    let apply_report = applies
        .first()
        .map(|s| report_text(&s.report))
        .unwrap_or_default();

    // ---- in-process cost over recorded kernel output ---------------------------------------
    // The last namespace holds the full state, whether an apply or a bare restore wrote it.
    let programmed = namespaces.last().expect("at least one namespace");
    let empty_saves: Vec<(String, String)> = Vec::new();
    let full_saves = kernel_saves(programmed, backend);
    let (in_process_fresh, fresh_report) = in_process(backend, &empty_saves, state, cx.reps * 2);
    let (in_process_noop, noop_dry) = in_process(backend, &full_saves, state, cx.reps * 2);
    let (in_process_parse, _) =
        in_process(backend, &full_saves, &DesiredState::default(), cx.reps * 2);
    assert_eq!(
        fresh_report.restores, dry.restores,
        "a recording runner with empty saves plans like an empty namespace"
    );
    assert!(
        noop_dry.restores.is_empty(),
        "the saves of a programmed namespace need no restore: {}",
        report_text(&noop_dry)
    );
    let plain_render = Stats::of((0..cx.reps * 2).map(|_| {
        let start = Instant::now();
        let text: usize = Family::ALL
            .into_iter()
            .map(|f| {
                let family = state.family(f);
                render::ipset_restore(family).len() + render::iptables_restore(family).len()
            })
            .sum();
        std::hint::black_box(text);
        start.elapsed()
    }))
    .expect("reps > 0");
    println!(
        "in-process only (recording runner): fresh {}, no-op {}, parse+plan of the empty state {}; \
         plain render::ipset_restore + iptables_restore {}",
        in_process_fresh, in_process_noop, in_process_parse, plain_render
    );

    // ---- label toggles and no-op on a programmed namespace ---------------------------------
    namespaces.push(Netns::new());
    let ns = namespaces.last().expect("just pushed");
    let runner = Timed::new(ns);
    let dp = Dataplane::new(runner.clone(), backend);
    let initial = timed_apply(&dp, &runner, cx.compiler.state());
    println!(
        "toggle namespace {}: initial apply {}",
        ns.name,
        ms(initial.wall)
    );
    let mut toggles = Vec::new();
    let mut spares = Spares::default();
    for (label, spec) in cx.toggles {
        let samples = run_toggles(
            cx.index,
            cx.compiler,
            &dp,
            &runner,
            spec,
            cx.toggle_count,
            &mut spares,
        );
        for (i, s) in samples.iter().enumerate().take(4) {
            println!(
                "  {label} toggle #{i}: compile {}, apply {} (report.elapsed {}), total {}; {}",
                ms(s.compile),
                ms(s.apply),
                ms(s.report.elapsed),
                ms(s.total),
                report_text(&s.report)
            );
        }
        toggles.push(summarize_toggles(label, spec, &samples));
    }
    let state_restored = cx.compiler.state() == state;

    let mut noops = Vec::new();
    for _ in 0..cx.reps.max(5) {
        noops.push(timed_apply(&dp, &runner, cx.compiler.state()));
    }
    let noop_pairs: Vec<(Duration, &[Call])> =
        noops.iter().map(|s| (s.wall, s.calls.as_slice())).collect();
    let noop_wall = Stats::of(noops.iter().map(|s| s.wall));
    println!("  no-op re-apply: {}", stats_text(noop_wall));
    // Everything above after the initial apply was planned from memory: read the kernel back.
    let verify_started = Instant::now();
    let drift = dp
        .verify(cx.compiler.state())
        .unwrap_or_else(|e| panic!("verify failed: {e}"));
    let mut verifies = vec![verify_started.elapsed()];
    let memory_matches_kernel = drift.is_empty();
    for _ in 1..cx.reps.max(3) {
        let started = Instant::now();
        let _ = dp.verify(cx.compiler.state());
        verifies.push(started.elapsed());
    }
    let verify_wall = Stats::of(verifies);
    let mut counter_reads = Vec::new();
    let mut counted_rules = 0;
    for _ in 0..cx.reps.max(5) {
        let started = Instant::now();
        let snapshot = dp
            .read_counters()
            .unwrap_or_else(|e| panic!("counter read failed: {e}"))
            .unwrap_or_else(|| panic!("no written state to read counters of"));
        counter_reads.push(started.elapsed());
        counted_rules = snapshot.readings.len();
    }
    let counter_read_wall = Stats::of(counter_reads);
    println!(
        "  refresh (verify) {}; counter read of {counted_rules} rules {}",
        stats_text(verify_wall),
        stats_text(counter_read_wall)
    );
    println!("  kernel read back after the toggles matches the state: {memory_matches_kernel} ({drift:?})");

    let result = BackendResult {
        backend,
        dry_run,
        apply_wall: Stats::of(applies.iter().map(|s| s.wall)),
        apply_elapsed: Stats::of(applies.iter().map(|s| s.report.elapsed)),
        apply_breakdown: breakdown(&apply_pairs),
        apply_cpu: apply_cpu.per_run(applies.len()),
        apply_report,
        bare_wall: Stats::of(bares.iter().map(|(w, _)| *w)),
        bare_breakdown: breakdown(&bare_pairs),
        bare_cpu: bare_cpu.per_run(bares.len()),
        paired_ratio,
        texts_identical,
        in_process_fresh,
        in_process_noop,
        in_process_parse,
        plain_render,
        toggles,
        noop_wall,
        noop_breakdown: breakdown(&noop_pairs),
        noop_report: noops.iter().map(|s| report_text(&s.report)).collect(),
        verify_wall,
        counter_read_wall,
        counted_rules,
        state_restored,
        memory_matches_kernel,
    };
    drop(namespaces);
    result
}

/// Median cost of starting a command in a namespace (`ip netns exec NS true`) and on the host.
fn spawn_overhead(reps: usize) -> (Stats, Stats) {
    let ns = Netns::new();
    let time = |argv: &[&str]| {
        let times = (0..reps).map(|_| {
            let start = Instant::now();
            let status = Command::new(argv[0])
                .args(&argv[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("spawn");
            assert!(status.success(), "{argv:?}");
            start.elapsed()
        });
        Stats::of(times.collect::<Vec<_>>()).expect("reps > 0")
    };
    let netns = time(&["ip", "netns", "exec", &ns.name, "true"]);
    let host = time(&["true"]);
    (netns, host)
}

/// The latency of every sync that wrote to the kernel (its oldest change to the kernel
/// updated), read from the agent's own `synced` log event, so the churn can report the exact
/// median and worst rather than histogram buckets.
static SYNC_LATENCIES_MS: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

struct SyncLatencies;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SyncLatencies {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            synced: bool,
            latency_ms: Option<u64>,
        }
        impl tracing::field::Visit for Fields {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "latency_ms" {
                    self.latency_ms = Some(value);
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" && format!("{value:?}") == "synced" {
                    self.synced = true;
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let (true, Some(ms)) = (fields.synced, fields.latency_ms) {
            if let Ok(mut all) = SYNC_LATENCIES_MS.lock() {
                all.push(ms);
            }
        }
    }
}

fn sync_latencies_taken() -> Vec<u64> {
    SYNC_LATENCIES_MS
        .lock()
        .map(|mut all| std::mem::take(&mut *all))
        .unwrap_or_default()
}

fn main() {
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer as _;
        let subscriber = tracing_subscriber::registry()
            .with(SyncLatencies.with_filter(tracing_subscriber::filter::LevelFilter::INFO));
        let _ = tracing::subscriber::set_global_default(subscriber);
    }
    if !is_root() {
        println!("skipping: needs root");
        return;
    }
    for program in ["ip", "ipset"] {
        if !have_program(program) {
            println!("skipping: `{program}` not found");
            return;
        }
    }
    remove_stale_namespaces();
    let bench_start = Instant::now();
    let load_start = loadavg();

    let quick = env_flag("PALISADE_BENCH_QUICK");
    let small = std::env::var("PALISADE_BENCH_CLUSTER").is_ok_and(|v| v == "small");
    let reps = std::env::var("PALISADE_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(if quick { 3 } else { 5 });
    // Toggles after the first apply write from memory and cost milliseconds: enough of them for
    // a p99.
    let toggle_count = if quick { 40 } else { 200 };
    let churn_seconds = if quick { 10 } else { 60 };
    let wanted = std::env::var("PALISADE_BENCH_BACKENDS").unwrap_or_else(|_| "nft,legacy".into());
    let backends: Vec<Backend> = [Backend::Nft, Backend::Legacy]
        .into_iter()
        .filter(|b| wanted.split(',').any(|w| w.trim() == b.as_str()))
        .filter(|b| {
            let ok = Family::ALL
                .iter()
                .all(|f| have_program(b.save_binary(*f)) && have_program(b.restore_binary(*f)));
            if !ok {
                println!("skipping backend {b}: its tools are missing");
            }
            ok
        })
        .collect();

    // ---- cluster and node-0's state --------------------------------------------------------
    let params = if small {
        cluster::ClusterParams::small()
    } else {
        cluster::ClusterParams::large()
    };
    let size = if small { "small" } else { "large" };
    let start = Instant::now();
    let objects = cluster::generate_for_manifests(&params);
    let mut index = objects.clone().build_index();
    let index_time = start.elapsed();
    let start = Instant::now();
    let mut compiler = NodeCompiler::new(&index, LOCAL_NODE, Marks::default());
    let compile_time = start.elapsed();
    let state = compiler.state().clone();
    println!(
        "palisade apply bench: {size} cluster, {} repetitions, {toggle_count} toggles; load average {load_start}",
        reps
    );
    println!("cluster: {}", cluster::describe_index(&index));
    println!(
        "index built in {}, {LOCAL_NODE} compiled in {}",
        ms(index_time),
        ms(compile_time)
    );
    println!("{LOCAL_NODE} state: {}", cluster::describe_state(&state));

    let mut toggles: Vec<(&'static str, LabelToggle)> = Vec::new();
    for (label, local) in [("remote", false), ("local", true)] {
        match cluster::label_toggle(&index, LOCAL_NODE, local) {
            Some(spec) => toggles.push((label, spec)),
            None => println!("no {label} pod to toggle"),
        }
    }

    let (spawn_netns, spawn_host) = spawn_overhead(10);
    println!(
        "spawn: `ip netns exec NS true` {}, host `true` {}",
        spawn_netns, spawn_host
    );

    let scratch = tempfile::tempdir().expect("temporary directory");
    let mut results = Vec::new();
    {
        let mut cx = Context {
            index: &mut index,
            compiler: &mut compiler,
            state: &state,
            toggles: &toggles,
            reps,
            toggle_count,
            scratch: scratch.path(),
        };
        for backend in &backends {
            results.push(bench_backend(*backend, &mut cx));
        }
    }
    let agent_core: Vec<AgentCoreResult> = backends
        .iter()
        .map(|backend| bench_agent_core(*backend, &objects, &toggles, toggle_count, churn_seconds))
        .collect();

    // ---- summary ---------------------------------------------------------------------------
    println!();
    println!("==== palisade apply bench summary ({size} cluster, {LOCAL_NODE}) ====");
    println!("state:        {}", cluster::describe_state(&state));
    println!(
        "machine:      {} CPUs, load average {load_start} at start, {} at end; total run {:.1} s",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        bench_start.elapsed().as_secs_f64()
    );
    println!(
        "spawn:        `ip netns exec NS true` {}; host `true` {}",
        ms(spawn_netns.median),
        ms(spawn_host.median)
    );
    for r in &results {
        println!("-- backend {} --", r.backend);
        println!(
            "full apply, fresh netns:   wall {}",
            stats_text(r.apply_wall)
        );
        println!(
            "                           report.elapsed {}",
            stats_text(r.apply_elapsed)
        );
        println!("                           {}", r.apply_report);
        println!("                           CPU: {}", r.apply_cpu);
        print!("{}", breakdown_text(&r.apply_breakdown, "    "));
        println!(
            "bare restore, fresh netns: wall {}",
            stats_text(r.bare_wall)
        );
        println!("                           CPU: {}", r.bare_cpu);
        print!("{}", breakdown_text(&r.bare_breakdown, "    "));
        if let (Some(apply), Some(bare)) = (r.apply_wall, r.bare_wall) {
            let ratio = apply.median.as_secs_f64() / bare.median.as_secs_f64();
            let verdict = if ratio <= RATIO_TARGET {
                "met"
            } else {
                "MISSED"
            };
            println!(
                "ratio apply/bare:          {ratio:.2}x (target <= {RATIO_TARGET}x: {verdict}); apply - bare = {}",
                ms(apply.median.saturating_sub(bare.median))
            );
        }
        if let Some(paired) = r.paired_ratio {
            println!("                           median of per-repetition ratios {paired:.2}x");
        }
        println!(
            "texts sent == dry-run texts: {}; dry run against an empty netns {}",
            r.texts_identical,
            ms(r.dry_run)
        );
        println!(
            "in-process only (no kernel): fresh {}; no-op {}; parse saves + plan empty state {}; \
             reference: plain render of the state {}",
            ms(r.in_process_fresh.median),
            ms(r.in_process_noop.median),
            ms(r.in_process_parse.median),
            ms(r.plain_render.median)
        );
        for t in &r.toggles {
            println!("{} label toggle: {}", t.label, t.description);
            println!(
                "    upsert+compile+apply {}; apply {}; upsert+compile {}; report.elapsed {}",
                stats_text(t.total),
                t.apply.map_or_else(|| "-".into(), |s| ms(s.median)),
                t.compile.map_or_else(|| "-".into(), |s| ms(s.median)),
                t.elapsed.map_or_else(|| "-".into(), |s| ms(s.median)),
            );
            for report in &t.reports {
                println!("    report: {report}");
            }
            for expected in &t.expected {
                println!("    state diff: {expected}");
            }
            println!("    report == state diff on every toggle: {}", t.consistent);
            print!("{}", breakdown_text(&t.breakdown, "      "));
        }
        println!(
            "no-op re-apply:            wall {}",
            stats_text(r.noop_wall)
        );
        for report in &r.noop_report {
            println!("    report: {report}");
        }
        print!("{}", breakdown_text(&r.noop_breakdown, "    "));
        println!(
            "refresh (read and compare): wall {}",
            stats_text(r.verify_wall)
        );
        let read_verdict = match r.counter_read_wall {
            Some(s) if s.median <= Duration::from_millis(50) => "met",
            _ => "MISSED",
        };
        println!(
            "counter read ({} counted rules): wall {} (target <= 50 ms: {read_verdict})",
            r.counted_rules,
            stats_text(r.counter_read_wall)
        );
        println!(
            "state after all toggles == initial state: {}",
            r.state_restored
        );
        println!(
            "kernel after every toggle was written from memory == desired state (read back): {}",
            r.memory_matches_kernel
        );
    }
    print_agent_core(&agent_core);
    for r in &results {
        assert!(
            r.memory_matches_kernel,
            "{}: the kernel does not hold what the dataplane remembered writing",
            r.backend
        );
    }
}

// ---- the agent core: watch event to kernel ---------------------------------------------------

/// What a running agent does with an event, on the same node state: the core (index, compiler,
/// dataplane with its memory) fed model objects as the watchers feed it, into a fresh
/// namespace.
struct AgentCoreResult {
    backend: Backend,
    /// Listings ingested to the first apply finished.
    first_sync: Duration,
    /// The same from the JSON lists the API server sends: parsed, converted, ingested, applied.
    cold_start: ColdStart,
    /// Event ingested to kernel updated, each event the first after a quiet period.
    toggles: Vec<(String, Option<Stats>)>,
    /// An event that changes nothing for the node.
    noop: Option<Stats>,
    noop_commands: usize,
    /// The real loop on its own thread: events sent back to back, syncs and restore calls made.
    burst_events: usize,
    burst_syncs: u64,
    burst_restores: usize,
    burst_catch_up: Duration,
    churn: ChurnResult,
    kernel_matches: bool,
}

fn listings(objects: &cluster::ClusterObjects) -> Vec<SourceEvent> {
    vec![
        SourceEvent::NamespacesListed(objects.namespaces.clone()),
        SourceEvent::PodsListed(objects.pods.clone()),
        SourceEvent::PoliciesListed {
            kind: PolicyKind::Kubernetes,
            valid: objects.policies.iter().map(|p| p.to_policy()).collect(),
            invalid: Vec::new(),
        },
    ]
}

/// The initial lists of every kind as the API server sends them.
struct ApiLists {
    namespaces: Vec<u8>,
    pods: Vec<u8>,
    policies: Vec<u8>,
}

/// The metadata and status fields an API server adds to every object it lists.
fn as_served(mut object: serde_json::Value, i: usize) -> serde_json::Value {
    let metadata = &mut object["metadata"];
    metadata["uid"] = serde_json::json!(format!("5b0e6a52-{i:04x}-4c1d-9f7e-3a8c2b1d{i:04x}"));
    metadata["resourceVersion"] = serde_json::json!((100_000 + i).to_string());
    metadata["creationTimestamp"] = serde_json::json!("2026-11-30T08:12:45Z");
    metadata["managedFields"] = serde_json::json!([{
        "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
        "time": "2026-11-30T08:12:45Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}, "f:spec": {"f:containers": {}}},
    }]);
    object
}

fn api_pod(pod: &palisade::model::Pod, i: usize) -> serde_json::Value {
    let mut object = as_served(manifests::pod(pod), i);
    object["metadata"]["ownerReferences"] = serde_json::json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{}-rs", pod.key.name),
        "uid": "0d7c2f4e-1111-4a2b-8c3d-000000000001", "controller": true, "blockOwnerDeletion": true,
    }]);
    let spec = &mut object["spec"];
    spec["restartPolicy"] = "Always".into();
    spec["dnsPolicy"] = "ClusterFirst".into();
    spec["terminationGracePeriodSeconds"] = 30.into();
    spec["schedulerName"] = "default-scheduler".into();
    spec["containers"][0]["resources"] =
        serde_json::json!({"requests": {"cpu": "100m", "memory": "128Mi"}});
    spec["containers"][0]["imagePullPolicy"] = "IfNotPresent".into();
    spec["volumes"] = serde_json::json!([{"name": "kube-api-access", "projected": {"sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}]);
    let status = &mut object["status"];
    status["hostIP"] = "192.0.2.10".into();
    status["startTime"] = "2026-11-30T08:12:46Z".into();
    status["qosClass"] = "Burstable".into();
    status["conditions"] = serde_json::json!([
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-30T08:12:50Z"},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-30T08:12:45Z"},
    ]);
    status["containerStatuses"] = serde_json::json!([{"name": "app", "ready": true,
        "restartCount": 0, "image": "registry.example/app:1.0", "imageID": "sha256:0f0e",
        "containerID": "containerd://8a7b", "started": true,
        "state": {"running": {"startedAt": "2026-11-30T08:12:49Z"}}}]);
    object
}

fn api_list(kind: &str, items: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": if kind == "NetworkPolicyList" { "networking.k8s.io/v1" } else { "v1" },
        "kind": kind,
        "metadata": {"resourceVersion": "250000"},
        "items": items,
    }))
    .expect("serializing a list")
}

fn api_lists(objects: &cluster::ClusterObjects) -> ApiLists {
    ApiLists {
        namespaces: api_list(
            "NamespaceList",
            objects
                .namespaces
                .iter()
                .enumerate()
                .map(|(i, ns)| as_served(manifests::namespace(ns), i))
                .collect(),
        ),
        pods: api_list(
            "PodList",
            objects
                .pods
                .iter()
                .enumerate()
                .map(|(i, pod)| api_pod(pod, i))
                .collect(),
        ),
        policies: api_list(
            "NetworkPolicyList",
            objects
                .policies
                .iter()
                .enumerate()
                .map(|(i, policy)| as_served(manifests::policy(policy), i))
                .collect(),
        ),
    }
}

#[derive(Debug, Clone, Copy)]
struct ColdStart {
    took: Duration,
    json_bytes: usize,
}

/// Agent cold start: the JSON lists in, parsed as kube-runtime parses a listing, converted as
/// the watchers convert each object, ingested, and the first apply finished in a fresh
/// network namespace. The JSON is built beforehand (not timed).
fn cold_start_from_json(backend: Backend, objects: &cluster::ClusterObjects) -> ColdStart {
    use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod as K8sPod};
    use k8s_openapi::api::networking::v1::NetworkPolicy as K8sPolicy;
    use kube::core::ObjectList;
    use palisade::model::convert;

    let lists = api_lists(objects);
    let json_bytes = lists.namespaces.len() + lists.pods.len() + lists.policies.len();
    let ns = Netns::new();
    let runner = Timed::new(&ns);
    let dataplane = Arc::new(Dataplane::new(runner.clone(), backend));
    let metrics = Metrics::new().expect("metrics");
    let mut agent = Agent::new(AgentConfig::new(LOCAL_NODE), dataplane, metrics.clone());
    let start = Instant::now();
    let mut warnings = Vec::new();
    let namespaces: ObjectList<K8sNamespace> =
        serde_json::from_slice(&lists.namespaces).expect("the namespace list");
    let namespaces = namespaces
        .items
        .iter()
        .map(|ns| convert::namespace(ns, &mut warnings))
        .collect();
    agent.ingest(SourceEvent::NamespacesListed(namespaces));
    let pods: ObjectList<K8sPod> = serde_json::from_slice(&lists.pods).expect("the pod list");
    let pods = pods
        .items
        .iter()
        .filter_map(|pod| convert::pod(pod, &mut warnings).ok().flatten())
        .collect();
    agent.ingest(SourceEvent::PodsListed(pods));
    let policies: ObjectList<K8sPolicy> =
        serde_json::from_slice(&lists.policies).expect("the policy list");
    let valid = policies
        .items
        .iter()
        .map(|p| {
            convert::policy(p, &mut warnings)
                .expect("the generated policies are valid")
                .to_policy()
        })
        .collect();
    agent.ingest(SourceEvent::PoliciesListed {
        kind: PolicyKind::Kubernetes,
        valid,
        invalid: Vec::new(),
    });
    agent.run_due_work();
    let took = start.elapsed();
    assert_eq!(metrics.syncs.get(), 1, "the first apply ran");
    assert!(
        !runner.take().is_empty(),
        "the first apply wrote the kernel"
    );
    ColdStart { took, json_bytes }
}

fn bench_agent_core(
    backend: Backend,
    objects: &cluster::ClusterObjects,
    toggles: &[(&'static str, LabelToggle)],
    count: usize,
    churn_seconds: u64,
) -> AgentCoreResult {
    println!("---- agent core, backend {backend} ----");
    let ns = Netns::new();
    let runner = Timed::new(&ns);
    let dataplane = Arc::new(Dataplane::new(runner.clone(), backend));
    let metrics = Metrics::new().expect("metrics");
    let config = AgentConfig::new(LOCAL_NODE);
    let quiet = config.debounce + Duration::from_millis(2);
    let mut agent = Agent::new(config.clone(), dataplane.clone(), metrics.clone());
    let start = Instant::now();
    for event in listings(objects) {
        agent.ingest(event);
    }
    agent.run_due_work();
    let first_sync = start.elapsed();
    println!("listings to first apply: {}", ms(first_sync));
    let cold_start = cold_start_from_json(backend, objects);
    println!(
        "JSON lists ({:.0} MB) to first apply: {}",
        cold_start.json_bytes as f64 / 1e6,
        ms(cold_start.took)
    );

    let mut toggle_stats = Vec::new();
    for (label, spec) in toggles {
        let mut times = Vec::new();
        for i in 0..count + count % 2 {
            let pod = if i % 2 == 0 { &spec.b } else { &spec.a };
            std::thread::sleep(quiet);
            runner.take();
            let start = Instant::now();
            agent.ingest(SourceEvent::PodApplied(pod.clone()));
            agent.run_due_work();
            times.push(start.elapsed());
            assert!(
                !runner.take().is_empty(),
                "a {label} toggle changes the kernel"
            );
        }
        let stats = Stats::of(times);
        println!("{label} pod event to kernel: {}", stats_text(stats));
        toggle_stats.push((label.to_string(), stats));
    }

    // An event that changes nothing here: a remote pod gains and loses a label no selector reads.
    let mut noop_times = Vec::new();
    let mut noop_commands = 0;
    if let Some((_, spec)) = toggles.iter().find(|(label, _)| *label == "remote") {
        for i in 0..20 {
            let mut pod = spec.a.clone();
            if i % 2 == 0 {
                pod.labels
                    .insert("bench.palisade.io/unread".into(), "x".into());
            }
            std::thread::sleep(quiet);
            runner.take();
            let start = Instant::now();
            agent.ingest(SourceEvent::PodApplied(pod));
            agent.run_due_work();
            noop_times.push(start.elapsed());
            noop_commands += runner.take().len();
        }
    }
    let noop = Stats::of(noop_times);
    println!(
        "no-op event: {} ({noop_commands} commands run)",
        stats_text(noop)
    );
    drop(agent);

    // The real loop: a burst of events, sent as fast as the channel takes them.
    let burst_ns = Netns::new();
    let burst_runner = Timed::new(&burst_ns);
    let burst_dataplane = Arc::new(Dataplane::new(burst_runner.clone(), backend));
    let burst_metrics = Metrics::new().expect("metrics");
    let (sender, handle) =
        palisade::agent::spawn(config, burst_dataplane.clone(), burst_metrics.clone())
            .expect("agent thread");
    for event in listings(objects) {
        let _ = sender.send(AgentMessage::Source(Box::new(event)));
    }
    let wait_for_syncs = |at_least: u64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while burst_metrics.syncs.get() < at_least && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for_syncs(1);
    std::thread::sleep(quiet);
    burst_runner.take();
    // Odd, so the burst ends in a state other than the one it started from.
    let burst_events = 1001;
    let syncs_before = burst_metrics.syncs.get();
    let remote = toggles.iter().find(|(label, _)| *label == "remote");
    let start = Instant::now();
    if let Some((_, spec)) = remote {
        for i in 0..burst_events {
            let pod = if i % 2 == 0 { &spec.b } else { &spec.a };
            let _ = sender.send(AgentMessage::Source(Box::new(SourceEvent::PodApplied(
                pod.clone(),
            ))));
        }
    }
    // Caught up when no sync happened for two debounce windows.
    let mut last = (burst_metrics.syncs.get(), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = burst_metrics.syncs.get();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > 2 * quiet {
            break;
        }
    }
    let burst_catch_up = last.1.saturating_duration_since(start);
    let burst_syncs = burst_metrics.syncs.get() - syncs_before;
    let burst_restores = burst_runner
        .take()
        .iter()
        .filter(|c| c.what.contains("restore"))
        .count();
    let churn = churn(
        &sender,
        &burst_metrics,
        &burst_runner,
        objects,
        churn_seconds,
    );
    let _ = sender.send(AgentMessage::Shutdown);
    let _ = handle.join();
    println!(
        "burst of {burst_events} events: {burst_syncs} syncs, {burst_restores} restore calls, caught up {} after the first was sent",
        ms(burst_catch_up)
    );

    // The toggles above ended where they started, and the dataplane wrote them all from memory.
    let compiled = NodeCompiler::new(
        &cluster::ClusterObjects::clone(objects).build_index(),
        LOCAL_NODE,
        Marks::default(),
    )
    .into_state();
    let drift = dataplane
        .verify(&compiled)
        .unwrap_or_else(|e| panic!("verify failed: {e}"));
    let kernel_matches = drift.is_empty();
    println!("kernel read back == compiled state: {kernel_matches} ({drift:?})");
    AgentCoreResult {
        backend,
        first_sync,
        cold_start,
        toggles: toggle_stats,
        noop,
        noop_commands,
        burst_events,
        burst_syncs,
        burst_restores,
        burst_catch_up,
        churn,
        kernel_matches,
    }
}

/// Pods restarted across the cluster at a steady rate, as rollouts do: each event removes a
/// random pod or brings a removed one back, with the same address.
struct ChurnResult {
    seconds: u64,
    events: usize,
    syncs: u64,
    restores: usize,
    /// Per sync, time from its oldest change to the kernel updated: (upper bound, share).
    latency_buckets: Vec<(f64, f64)>,
    mean_latency: Duration,
    /// Exact median and worst over the syncs that wrote to the kernel.
    written_median_ms: u64,
    written_worst_ms: u64,
    written_syncs: usize,
    /// CPU of the agent process (the sender thread included) and of the restore tools, as a
    /// share of one core.
    own_cpu: f64,
    children_cpu: f64,
}

const CHURN_RATE: u64 = 200;

fn churn(
    sender: &std::sync::mpsc::Sender<AgentMessage>,
    metrics: &Metrics,
    runner: &Timed,
    objects: &cluster::ClusterObjects,
    seconds: u64,
) -> ChurnResult {
    let before = metrics.sync_duration.metric();
    let (count_before, sum_before) = (
        before.get_histogram().get_sample_count(),
        before.get_histogram().get_sample_sum(),
    );
    let buckets_before: Vec<u64> = before
        .get_histogram()
        .get_bucket()
        .iter()
        .map(|b| b.cumulative_count())
        .collect();
    let syncs_before = metrics.syncs.get();
    runner.take();
    sync_latencies_taken();
    let mut rng = cluster::Rng::new(0x5eed_c4a2);
    let mut removed: Vec<usize> = Vec::new();
    let interval = Duration::from_micros(1_000_000 / CHURN_RATE);
    let cpu_start = CpuTicks::now();
    let start = Instant::now();
    let total = (seconds * CHURN_RATE) as usize;
    for i in 0..total {
        let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let event = if !removed.is_empty() && (removed.len() > 50 || i % 2 == 1) {
            let pod = removed.swap_remove(rng.below(removed.len()));
            SourceEvent::PodApplied(objects.pods[pod].clone())
        } else {
            let pod = rng.below(objects.pods.len());
            removed.push(pod);
            SourceEvent::PodRemoved(objects.pods[pod].key.clone())
        };
        let _ = sender.send(AgentMessage::Source(Box::new(event)));
    }
    for pod in removed {
        let _ = sender.send(AgentMessage::Source(Box::new(SourceEvent::PodApplied(
            objects.pods[pod].clone(),
        ))));
    }
    // Let the last sync finish.
    std::thread::sleep(Duration::from_millis(500));
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = CpuTicks::now().since(cpu_start);
    let after = metrics.sync_duration.metric();
    let histogram = after.get_histogram();
    let syncs_in_churn = histogram.get_sample_count() - count_before;
    let latency_buckets = histogram
        .get_bucket()
        .iter()
        .zip(&buckets_before)
        .map(|(bucket, before)| {
            let share = (bucket.cumulative_count() - before) as f64 / syncs_in_churn.max(1) as f64;
            (bucket.upper_bound(), share)
        })
        .collect();
    let mean_latency = Duration::from_secs_f64(
        (histogram.get_sample_sum() - sum_before) / syncs_in_churn.max(1) as f64,
    );
    let restores = runner
        .take()
        .iter()
        .filter(|c| c.what.contains("restore"))
        .count();
    let mut written = sync_latencies_taken();
    written.sort_unstable();
    let tick = 0.01;
    let result = ChurnResult {
        written_median_ms: written.get(written.len() / 2).copied().unwrap_or(0),
        written_worst_ms: written.last().copied().unwrap_or(0),
        written_syncs: written.len(),
        seconds,
        events: total,
        syncs: metrics.syncs.get() - syncs_before,
        restores,
        latency_buckets,
        mean_latency,
        own_cpu: cpu.own as f64 * tick / elapsed,
        children_cpu: cpu.children as f64 * tick / elapsed,
    };
    println!("churn: {}", churn_text(&result));
    result
}

fn churn_text(r: &ChurnResult) -> String {
    let shares: Vec<String> = r
        .latency_buckets
        .iter()
        .filter(|(bound, _)| [0.005, 0.01, 0.025, 0.05, 0.1].contains(bound))
        .map(|(bound, share)| format!("<= {:.0} ms {:.1}%", bound * 1e3, share * 100.0))
        .collect();
    format!(
        "{} pod events at {CHURN_RATE}/s for {} s: {} syncs, {} restore calls; sync latency (oldest change to kernel) mean {}, {}; the {} syncs that wrote: median {} ms, worst {} ms; CPU agent {:.1}% of a core, restore tools {:.1}%",
        r.events,
        r.seconds,
        r.syncs,
        r.restores,
        ms(r.mean_latency),
        shares.join(", "),
        r.written_syncs,
        r.written_median_ms,
        r.written_worst_ms,
        r.own_cpu * 100.0,
        r.children_cpu * 100.0
    )
}

fn print_agent_core(results: &[AgentCoreResult]) {
    for r in results {
        println!(
            "-- agent core (event to kernel, default 50 ms debounce), backend {} --",
            r.backend
        );
        println!("listings to first apply:   {}", ms(r.first_sync));
        println!(
            "JSON lists to first apply: {} (target ≤ 3 s) {}",
            ms(r.cold_start.took),
            if r.cold_start.took <= Duration::from_secs(3) {
                "met"
            } else {
                "MISSED"
            }
        );
        for (label, stats) in &r.toggles {
            let (median_target, p99_target) = if label == "remote" {
                (Duration::from_millis(10), Some(Duration::from_millis(30)))
            } else {
                (Duration::from_millis(25), None)
            };
            let verdict = stats.map_or("not run", |s| {
                let p99_ok = p99_target.is_none_or(|t| s.p99 <= t);
                if s.median <= median_target && p99_ok {
                    "met"
                } else {
                    "MISSED"
                }
            });
            let p99 = p99_target.map_or(String::new(), |t| format!(", p99 <= {}", ms(t)));
            println!(
                "{label:<6} pod event:          {} (target median <= {}{p99}: {verdict})",
                stats_text(*stats),
                ms(median_target)
            );
        }
        let noop_verdict = r.noop.map_or("not run", |s| {
            if s.median <= Duration::from_millis(1) && r.noop_commands == 0 {
                "met"
            } else {
                "MISSED"
            }
        });
        println!(
            "no-op event:               {}; {} commands (target <= 1 ms, none: {noop_verdict})",
            stats_text(r.noop),
            r.noop_commands
        );
        println!(
            "burst:                     {} events -> {} syncs, {} restore calls, caught up {}",
            r.burst_events,
            r.burst_syncs,
            r.burst_restores,
            ms(r.burst_catch_up)
        );
        let within = r
            .churn
            .latency_buckets
            .iter()
            .find(|(bound, _)| *bound == 0.1)
            .map_or(0.0, |(_, share)| *share);
        let verdict = if within >= 1.0 && r.churn.own_cpu <= 0.10 {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "churn:                     {} (target every change <= 100 ms, agent <= 10% of a core: {verdict})",
            churn_text(&r.churn)
        );
        println!("kernel read back == compiled state: {}", r.kernel_matches);
    }
    for r in results {
        assert!(
            r.kernel_matches,
            "{}: the kernel does not hold the compiled state",
            r.backend
        );
    }
}
