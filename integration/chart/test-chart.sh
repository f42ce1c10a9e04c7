#!/usr/bin/env bash
# Offline tests of charts/palisade, manifests/palisade.yaml and the chart's
# scripts. No cluster needed (see test-install.sh for a real apiserver).
#
# Usage: integration/chart/test-chart.sh
#
#   1. helm lint (plain and --strict, default and non-default values): clean,
#      i.e. no [INFO]/[WARNING]/[ERROR] findings at all.
#   2. helm template with default values, with every optional feature on
#      (values/all.yaml) and with non-default settings (values/custom.yaml);
#      values.schema.json must reject bad values.
#   3. chart_checks.py on each rendering: kubernetes-validate (strict) of
#      every built-in object for several Kubernetes versions, ServiceMonitor /
#      PrometheusRule against the prometheus-operator CRD schemas, security
#      and wiring assertions, promtool check + unit tests of the alerts,
#      dashboard JSON/PromQL checks, README coverage of every value.
#   4. the real `palisade agent` CLI parses each rendering's arguments (when
#      a binary is built; skipped otherwise).
#   5. shellcheck of the chart scripts; manifests/palisade.yaml not stale.
#
# Prints PASS/FAIL lines and finally `N passed, N failed`; exit 1 on failure.
# Tools come from install-tools.sh (cached under $PALISADE_CACHE_DIR).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CHART="$ROOT/charts/palisade"

if ! tools_env=$("$HERE/install-tools.sh"); then
    echo "FAIL: install-tools.sh"
    echo "0 passed, 1 failed"
    exit 1
fi
eval "$tools_env"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/palisade-chart-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }

# expect_ok NAME CMD...: pass when CMD exits 0; show its output otherwise.
expect_ok() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        pass "$name"
    else
        fail "$name"
        printf '%s\n' "$out" | sed 's/^/    /'
    fi
}

# expect_fail NAME PATTERN CMD...: pass when CMD fails with PATTERN in its output.
expect_fail() {
    local name=$1 pattern=$2 out
    shift 2
    if out=$("$@" 2>&1); then
        fail "$name (command succeeded)"
    elif grep -qE -- "$pattern" <<<"$out"; then
        pass "$name"
    else
        fail "$name (failed without /$pattern/)"
        printf '%s\n' "$out" | sed 's/^/    /'
    fi
}

helm_() { (cd "$ROOT" && "$PALISADE_HELM" "$@"); }

# ---------------------------------------------------------------------------
# 1. helm lint
# ---------------------------------------------------------------------------
lint_clean() { # lint_clean [helm lint args...]
    local out rc=0
    out=$(helm_ lint charts/palisade "$@" 2>&1) || rc=$?
    if ((rc == 0)) && ! grep -qE '\[(INFO|WARNING|ERROR)\]' <<<"$out" \
        && grep -q '1 chart(s) linted, 0 chart(s) failed' <<<"$out"; then
        return 0
    fi
    printf '%s\n' "$out"
    return 1
}
expect_ok "helm lint charts/palisade is clean" lint_clean
expect_ok "helm lint --strict charts/palisade is clean" lint_clean --strict
expect_ok "helm lint --strict (values/all.yaml) is clean" lint_clean --strict -f integration/chart/values/all.yaml
expect_ok "helm lint --strict (values/custom.yaml) is clean" lint_clean --strict -f integration/chart/values/custom.yaml

# ---------------------------------------------------------------------------
# 2. helm template
# ---------------------------------------------------------------------------
render() { # render OUT [helm template args...]
    local out=$1
    shift
    helm_ template palisade charts/palisade --namespace kube-system "$@" >"$out"
}
expect_ok "helm template (default values)" render "$WORK/default.yaml"
expect_ok "helm template (values/all.yaml: serviceMonitor, prometheusRule, dashboards, cleanupOnUninstall)" \
    render "$WORK/all.yaml" -f integration/chart/values/all.yaml
expect_ok "helm template (values/custom.yaml)" render "$WORK/custom.yaml" -f integration/chart/values/custom.yaml
deterministic() {
    render "$WORK/again.yaml" && cmp "$WORK/default.yaml" "$WORK/again.yaml"
}
expect_ok "helm template is deterministic" deterministic

bad_values() { # bad_values NAME PATTERN helm-args...
    local name=$1 pattern=$2
    shift 2
    expect_fail "values rejected: $name" "$pattern" render "$WORK/bad.yaml" "$@"
}
bad_values "backend=iptables" "backend" --set backend=iptables
bad_values "logFormat=xml" "logFormat" --set logFormat=xml
bad_values "refreshInterval=1m30s (the agent takes one unit)" "refreshInterval" --set refreshInterval=1m30s
bad_values "refreshInterval=1h (the agent has no h unit)" "refreshInterval" --set refreshInterval=1h
bad_values "refreshInterval=0s" "refreshInterval.*longer than zero" --set refreshInterval=0s --set prometheusRule.enabled=true
bad_values "debounce=1.5s" "debounce" --set debounce=1.5s
bad_values "metricsPort=0" "metricsPort" --set metricsPort=0
bad_values "unknown top-level value (typo)" "serviceMonitr|additional" --set serviceMonitr.enabled=true
bad_values "unknown serviceMonitor key" "intervall|additional" --set serviceMonitor.intervall=10s
bad_values "serviceAccount.create=false without a name" "serviceAccount.name is required" \
    --set serviceAccount.create=false
existing_sa() {
    local f="$WORK/existing-sa.yaml"
    render "$f" --set serviceAccount.create=false --set serviceAccount.name=existing-sa || return 1
    ! grep -q '^kind: ServiceAccount' "$f" || { echo "a ServiceAccount is still rendered"; return 1; }
    grep -q 'serviceAccountName: existing-sa' "$f" || { echo "DaemonSet does not use existing-sa"; return 1; }
    grep -A3 '^subjects:' "$f" | grep -q 'name: existing-sa' || { echo "binding does not name existing-sa"; return 1; }
}
expect_ok "serviceAccount.create=false with a name binds that existing account" existing_sa

# ---------------------------------------------------------------------------
# 3. Object checks (python)
# ---------------------------------------------------------------------------
mkdir -p "$WORK/seeds"
for seed in "$ROOT"/integration/seed/*.yaml; do
    "$HERE/seed-to-v1.sh" "$seed" >"$WORK/seeds/$(basename "$seed")"
done
checks_out="$WORK/chart_checks.out"
"$PALISADE_TOOLS_PY" "$HERE/chart_checks.py" --chart "$CHART" --promtool "$PALISADE_PROMTOOL" \
    --workdir "$WORK" --root "$ROOT" --seeds "$WORK/seeds" \
    "$WORK/default.yaml:default" "$WORK/all.yaml:all" "$WORK/custom.yaml:custom" \
    >"$checks_out" 2>&1
checks_rc=$?
grep -E '^(PASS|FAIL|INFO):' "$checks_out"
# Its own PASS/FAIL lines count; anything else it printed is a crash.
n_pass=$(grep -c '^PASS:' "$checks_out")
n_fail=$(grep -c '^FAIL:' "$checks_out")
passed=$((passed + n_pass))
failed=$((failed + n_fail))
if ((checks_rc != 0 && n_fail == 0)) || ((n_pass == 0)); then
    fail "chart_checks.py ran to completion (exit $checks_rc)"
    grep -vE '^(PASS|FAIL|INFO):' "$checks_out" | sed 's/^/    /'
fi

# ---------------------------------------------------------------------------
# 4. The agent's CLI accepts the arguments each rendering passes (src/cli.rs).
#    Needs a built binary (cargo build); run in a throw-away network namespace
#    with no cluster access, so it stops at "cannot reach Kubernetes" without
#    touching this machine's netfilter state. Only argument errors count.
# ---------------------------------------------------------------------------
skipped=0
agent_bin=${PALISADE_BIN:-}
if [[ -z "$agent_bin" ]]; then
    for candidate in "$ROOT/target/release/palisade" "$ROOT/target/debug/palisade"; do
        if [[ -x "$candidate" ]] && { [[ -z "$agent_bin" ]] || [[ "$candidate" -nt "$agent_bin" ]]; }; then
            agent_bin=$candidate
        fi
    done
fi
agent_accepts() { # agent_accepts RENDERING
    local args_file="$WORK/args.txt" err="$WORK/agent.err" args=()
    "$PALISADE_TOOLS_PY" -c '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "DaemonSet":
        print("\n".join(d["spec"]["template"]["spec"]["containers"][0]["args"]))
' "$1" >"$args_file" || return 1
    mapfile -t args <"$args_file"
    ((${#args[@]} > 0)) || { echo "no args found in $1"; return 1; }
    timeout 20 unshare --net env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        NODE_NAME=chart-test KUBECONFIG=/nonexistent HOME="$WORK" RUST_LOG=info \
        "$agent_bin" "${args[@]}" >/dev/null 2>"$err" || true
    if grep -qE "^(error: |Usage: )" "$err"; then
        echo "palisade ${args[*]}"
        cat "$err"
        return 1
    fi
}
if [[ -z "$agent_bin" ]]; then
    skipped=$((skipped + 1))
    echo "SKIP: palisade agent accepts the chart's arguments (no built binary; cargo build or set PALISADE_BIN)"
elif ! unshare --net true 2>/dev/null; then
    skipped=$((skipped + 1))
    echo "SKIP: palisade agent accepts the chart's arguments (cannot create a network namespace here)"
else
    for profile in default all custom; do
        expect_ok "palisade agent accepts the arguments of the $profile rendering (${agent_bin#"$ROOT"/})" \
            agent_accepts "$WORK/$profile.yaml"
    done
fi

# ---------------------------------------------------------------------------
# 5. Scripts, CI workflow, generated manifest
# ---------------------------------------------------------------------------
for script in "$HERE"/*.sh; do
    expect_ok "shellcheck ${script#"$ROOT"/}" "$PALISADE_SHELLCHECK" -x "$script"
done
expect_ok "manifests/palisade.yaml is up to date (check-manifests.sh)" "$HERE/check-manifests.sh"

echo
if ((skipped)); then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
((failed == 0))
