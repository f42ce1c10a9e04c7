#!/usr/bin/env bash
# Runs Palisade's AFL++ fuzz targets, one after the other, and reports what each did.
#
# Usage: fuzz/run.sh [TARGET...]      (default: every target in fuzz/src/bin)
#
# Environment:
#   FUZZ_SECONDS  how long each target runs (default 600)
#   FUZZ_JOBS     how many targets run at once (default 1; one core each)
#
# Each target starts from fuzz/corpus/TARGET and writes to fuzz/target/out/TARGET. A crash or
# hang is copied to fuzz/regressions/TARGET/, where `make test` replays it
# (tests/fuzz_corpus.rs) until the parser is fixed, and the run exits non-zero.
# Installs cargo-afl 0.18.2 (and builds its AFL++) on first use.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
SECONDS_EACH=${FUZZ_SECONDS:-600}
JOBS=${FUZZ_JOBS:-1}

if ! cargo afl --version >/dev/null 2>&1; then
    echo "installing cargo-afl 0.18.2" >&2
    cargo install cargo-afl --version 0.18.2 --locked >&2
    cargo afl config --build --force >&2
fi
cargo afl build --release >&2

targets=("$@")
if ((${#targets[@]} == 0)); then
    for bin in src/bin/*.rs; do targets+=("$(basename "$bin" .rs)"); done
fi

# No UI, no CPU-governor or core-pattern demands (containers cannot change them).
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1

fuzz_one() {
    local target=$1 out="target/out/$1"
    rm -rf "$out"
    mkdir -p "$out"
    cargo afl fuzz -i "corpus/$target" -o "$out" -V "$SECONDS_EACH" -t 1000 \
        "target/release/$target" >"$out.log" 2>&1 || true
}

running=0
for target in "${targets[@]}"; do
    [[ -d "corpus/$target" ]] || { echo "fuzz/corpus/$target is missing" >&2; exit 1; }
    echo "fuzzing $target for ${SECONDS_EACH}s" >&2
    fuzz_one "$target" &
    running=$((running + 1))
    if ((running >= JOBS)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

stat() { awk -v k="$1" -F' *: *' '$1 == k {print $2}' "$2"; }
status=0
printf '%-14s %10s %12s %9s %10s %8s %7s %6s\n' target seconds executions "exec/s" "edges" coverage crashes hangs
for target in "${targets[@]}"; do
    stats="target/out/$target/default/fuzzer_stats"
    if [[ ! -f $stats ]]; then
        echo "$target: AFL++ did not start; see fuzz/target/out/$target.log" >&2
        tail -n 20 "target/out/$target.log" >&2
        status=1
        continue
    fi
    runtime=$(($(stat last_update "$stats") - $(stat start_time "$stats")))
    crashes=$(stat saved_crashes "$stats")
    hangs=$(stat saved_hangs "$stats")
    printf '%-14s %10s %12s %9s %10s %8s %7s %6s\n' "$target" "$runtime" "$(stat execs_done "$stats")" \
        "$(stat execs_per_sec "$stats")" "$(stat edges_found "$stats")/$(stat total_edges "$stats")" \
        "$(stat bitmap_cvg "$stats")" "$crashes" "$hangs"
    for kind in crashes hangs; do
        for input in "target/out/$target/default/$kind"/id:*; do
            [[ -f $input ]] || continue
            mkdir -p "regressions/$target"
            cp "$input" "regressions/$target/${kind%es}-$(sha256sum "$input" | cut -c1-16)"
            status=1
        done
    done
done
if ((status)); then
    echo "new crashes or hangs are in fuzz/regressions/; cargo test --test fuzz_corpus replays them" >&2
fi
exit "$status"
