#!/usr/bin/env bash
# Render manifests/palisade.yaml (the plain `kubectl apply` install) from the chart.
#
# Usage: integration/chart/render-manifests.sh [--stdout]
#
#   Runs `helm template palisade charts/palisade --namespace kube-system` with
#   the chart's default values and writes the result, behind a header, to
#   manifests/palisade.yaml (atomically), or to stdout with --stdout.
#   Deterministic: same chart + same helm version => same bytes.
#   This is what `make manifests` runs; check-manifests.sh compares.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

to_stdout=0
case "${1:-}" in
    "") ;;
    --stdout) to_stdout=1 ;;
    *) echo "usage: $0 [--stdout]" >&2; exit 2 ;;
esac

eval "$("$HERE/install-tools.sh")"

render() {
    cat <<'HEADER'
# Palisade: plain install, `kubectl apply -f manifests/palisade.yaml`.
#
# GENERATED FILE, do not edit. Produced by `make manifests`
# (integration/chart/render-manifests.sh), which runs
#   helm template palisade charts/palisade --namespace kube-system
# with the chart's default values. Change charts/palisade instead and re-run
# `make manifests`; `make test` fails while this file is stale.
#
# To uninstall AND remove Palisade's iptables chains and ipsets from the
# nodes, see charts/palisade/README.md, "Uninstalling".
HEADER
    # Relative chart path and fixed release name/namespace: the output must
    # not depend on where the repository is checked out.
    (cd "$ROOT" && "$PALISADE_HELM" template palisade charts/palisade --namespace kube-system)
}

if ((to_stdout)); then
    render
else
    out="$ROOT/manifests/palisade.yaml"
    mkdir -p "$(dirname "$out")"
    tmp=$(mktemp "$out.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    render >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$out"
    echo "wrote ${out#"$ROOT"/}" >&2
fi
