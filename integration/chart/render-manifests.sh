#!/usr/bin/env bash
# Render the generated files of the chart and the plain install:
#   charts/palisade/crds/projectcalico.org.yaml  the projectcalico.org/v3 CRDs,
#       from `palisade crds` (generated from the Rust types the agent reads);
#   manifests/palisade.yaml  the plain `kubectl apply` install:
#       `helm template palisade charts/palisade --namespace kube-system` with
#       the chart's default values (the CRDs are applied on their own).
#
# Usage: integration/chart/render-manifests.sh [--stdout|--stdout-crds]
#
#   Writes both files (atomically), or prints one of them.
#   Deterministic: same sources + same helm version => same bytes.
#   The palisade binary is $PALISADE_BIN, else target/release/palisade.
#   This is what `make manifests` runs; check-manifests.sh compares.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

to_stdout=""
case "${1:-}" in
    "") ;;
    --stdout) to_stdout=manifests ;;
    --stdout-crds) to_stdout=crds ;;
    *) echo "usage: $0 [--stdout|--stdout-crds]" >&2; exit 2 ;;
esac
PALISADE_BIN="${PALISADE_BIN:-$ROOT/target/release/palisade}"
if [[ ! -x "$PALISADE_BIN" ]]; then
    echo "$PALISADE_BIN is not built: run \`make build\` first" >&2
    exit 1
fi

render_crds() {
    cat <<'HEADER'
# The projectcalico.org/v3 CustomResourceDefinitions Palisade enforces.
#
# GENERATED FILE, do not edit. Produced by `make manifests`, which runs
# `palisade crds --group v3`: the schemas come from the Rust types the agent
# reads, so the API server keeps every field Palisade enforces. Helm installs
# them only where they are absent and never deletes them (nor your policies)
# on uninstall. On a cluster that runs Calico or its API server, install the
# chart with --skip-crds.
HEADER
    "$PALISADE_BIN" crds --group v3
}

eval "$("$HERE/install-tools.sh")"

render() {
    cat <<'HEADER'
# Palisade: plain install, `kubectl apply -f manifests/palisade.yaml`.
#
# GENERATED FILE, do not edit. Produced by `make manifests`
# (integration/chart/render-manifests.sh), which runs
#   helm template palisade charts/palisade --namespace kube-system
# with the chart's default values. Calico's projectcalico.org/v3 CRDs are in
# charts/palisade/crds/projectcalico.org.yaml, applied on their own, so that
# deleting this file never deletes them with everyone's policies. Change
# charts/palisade instead and re-run
# `make manifests`; `make test` fails while this file is stale.
#
# To uninstall AND remove Palisade's iptables chains and ipsets from the
# nodes, see charts/palisade/README.md, "Uninstalling".
HEADER
    # Relative chart path and fixed release name/namespace: the output must
    # not depend on where the repository is checked out.
    (cd "$ROOT" && "$PALISADE_HELM" template palisade charts/palisade --namespace kube-system)
}

# write FILE RENDERER: FILE gets RENDERER's output, atomically.
write() {
    local out=$1 tmp
    mkdir -p "$(dirname "$out")"
    tmp=$(mktemp "$out.XXXXXX")
    if ! "$2" >"$tmp"; then
        rm -f "$tmp"
        exit 1
    fi
    chmod 644 "$tmp"
    mv -f "$tmp" "$out"
    echo "wrote ${out#"$ROOT"/}" >&2
}

case "$to_stdout" in
    manifests) render ;;
    crds) render_crds ;;
    *)
        write "$ROOT/charts/palisade/crds/projectcalico.org.yaml" render_crds
        write "$ROOT/manifests/palisade.yaml" render
        ;;
esac
