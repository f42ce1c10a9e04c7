#!/usr/bin/env bash
# Builds the `palisade` binary of an older commit, for the upgrade test, and prints its path.
#
#   integration/upgrade/build-old.sh COMMIT
#
# The sources come from `git archive` (the working tree is not touched); the build has its own
# target directory under target/upgrade-from/, so it never replaces the binary under test.
# A binary already built for COMMIT is reused.
set -euo pipefail

commit=${1:?usage: build-old.sh COMMIT}
root=$(git rev-parse --show-toplevel)
full=$(git -C "$root" rev-parse --verify "$commit^{commit}") || {
    echo "build-old.sh: $commit is not a commit of this repository (a shallow clone lacks history: git fetch --unshallow)" >&2
    exit 1
}
base="$root/target/upgrade-from"
out="$base/$full/palisade"
if [[ -x $out ]]; then
    echo "$out"
    exit 0
fi
src="$base/src-$full"
rm -rf "$src"
mkdir -p "$src"
git -C "$root" archive "$full" | tar -x -C "$src"
echo "build-old.sh: building palisade at ${full:0:12} (release)" >&2
cargo build --quiet --release --locked --bin palisade \
    --manifest-path "$src/Cargo.toml" --target-dir "$base/target" >&2
mkdir -p "$(dirname "$out")"
cp "$base/target/release/palisade" "$out"
rm -rf "$src"
echo "$out"
