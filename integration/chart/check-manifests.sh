#!/usr/bin/env bash
# Fail when manifests/palisade.yaml or charts/palisade/crds/projectcalico.org.yaml
# is not what `make manifests` would write now.
#
# Usage: integration/chart/check-manifests.sh
#   exit 0: up to date; exit 1: stale or missing (a diff is printed).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

fresh=$(mktemp)
trap 'rm -f "$fresh"' EXIT
stale=0
# compare FILE RENDER-FLAG
compare() {
    local committed="$ROOT/$1"
    "$HERE/render-manifests.sh" "$2" >"$fresh"
    if [[ ! -f "$committed" ]]; then
        echo "$1 is missing: run \`make manifests\`" >&2
        stale=1
    elif ! diff -u --label "$1" --label "generated now" "$committed" "$fresh" >&2; then
        echo "$1 is stale: run \`make manifests\` and commit the result" >&2
        stale=1
    else
        echo "$1 is up to date" >&2
    fi
}
compare charts/palisade/crds/projectcalico.org.yaml --stdout-crds
compare manifests/palisade.yaml --stdout
exit "$stale"
