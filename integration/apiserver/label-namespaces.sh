#!/usr/bin/env bash
# Give namespaces the kubernetes.io/metadata.name=<name> label.
#
# Usage:
#   label-namespaces.sh KUBECONFIG [NAMESPACE...]
#
#   Without NAMESPACE: labels every namespace that exists now.
#   With NAMESPACE(s): waits (up to 30 s) for each to exist, then labels it.
#
# Why: since 1.21 the apiserver sets this label itself and NetworkPolicy
# namespaceSelectors commonly match on it; v1.20.2 does not, so tests call
# this after creating namespaces. Idempotent (--overwrite).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

(($# >= 1)) || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
KCFG=$1
shift
ensure_cmd kubectl kubernetes-client
kc() { kubectl --kubeconfig "$KCFG" "$@"; }

if (($#)); then
    namespaces=("$@")
    # The apiserver's bootstrap controller creates the system namespaces
    # shortly after /readyz turns ok, so they may not exist yet.
    for ((i = 0; ; i++)); do
        kc get namespace "${namespaces[@]}" -o name >/dev/null 2>&1 && break
        ((i < 150)) || die "namespaces ${namespaces[*]} did not all appear within 30 s"
        sleep 0.2
    done
else
    mapfile -t namespaces < <(kc get namespaces -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
fi

for ns in "${namespaces[@]}"; do
    [[ -n "$ns" ]] || continue
    kc label --overwrite namespace "$ns" "kubernetes.io/metadata.name=$ns" >&2
done
