#!/usr/bin/env bash
# Fail when manifests/palisade.yaml is not what `make manifests` would write now.
#
# Usage: integration/chart/check-manifests.sh
#   exit 0: up to date; exit 1: stale or missing (a diff is printed).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
committed="$ROOT/manifests/palisade.yaml"

fresh=$(mktemp)
trap 'rm -f "$fresh"' EXIT
"$HERE/render-manifests.sh" --stdout >"$fresh"

if [[ ! -f "$committed" ]]; then
    echo "manifests/palisade.yaml is missing: run \`make manifests\`" >&2
    exit 1
fi
if ! diff -u --label manifests/palisade.yaml --label "rendered from charts/palisade" "$committed" "$fresh" >&2; then
    echo "manifests/palisade.yaml is stale: run \`make manifests\` and commit the result" >&2
    exit 1
fi
echo "manifests/palisade.yaml is up to date" >&2
