//! Replays the fuzz targets' inputs (`fuzz/corpus/<target>/*`, the seeds, and
//! `fuzz/regressions/<target>/*`, every input a fuzzer ever crashed or hung on) through the same
//! entry points `make fuzz` drives, so a parser change that brings a crash back fails here.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fuzz target's entry point.
type Target = fn(&[u8]);

/// What a fuzz target calls; the names are the directory names under `fuzz/corpus`.
const TARGETS: [(&str, Target); 4] = [
    ("manifest", palisade::fuzzing::manifest),
    ("selector", palisade::fuzzing::selector),
    ("iptables_save", palisade::fuzzing::iptables_save),
    ("ipset_save", palisade::fuzzing::ipset_save),
];

/// An input that takes this long is a hang (AFL's own limit is 1 s, on an optimised build).
const SLOW: Duration = Duration::from_secs(5);

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        files.extend(
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_file()),
        );
    }
    files.sort();
    files
}

fn replay(target: &str, run: Target) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "fuzz/corpus/{target} has no inputs: the replay would prove nothing"
    );
    let mut failures = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let started = Instant::now();
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failures.push(format!("{}: panicked", file.display()));
        }
        let took = started.elapsed();
        if took > SLOW {
            failures.push(format!("{}: took {took:?}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {target} inputs failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fuzz_input_is_handled_without_a_panic_or_a_hang() {
    for (target, run) in TARGETS {
        replay(target, run);
    }
}

#[test]
fn the_replay_notices_a_panicking_target() {
    fn panics(_: &[u8]) {
        panic!("deliberate");
    }
    let caught = catch_unwind(|| replay("selector", panics));
    assert!(
        caught.is_err(),
        "a target that panics on every input passed the replay"
    );
}
