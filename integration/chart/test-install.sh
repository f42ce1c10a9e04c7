#!/usr/bin/env bash
# Install the chart into a real kube-apiserver v1.20.2 (+ etcd) and check it.
#
# Usage: integration/chart/test-install.sh
#
# Uses integration/apiserver/start.sh / stop.sh (the apiserver is built once
# and cached by integration/apiserver/build.sh; the first run takes ~10 min).
# There is no controller-manager, scheduler or kubelet: objects are stored
# and authorized for real, but no pod ever runs, so nothing here waits for
# the DaemonSet to roll out (kind-e2e.sh does that).
#
# Checks:
#   - the API groups/versions the templates use are served by 1.20, and the
#     PriorityClass system-node-critical exists (apiserver bootstrap);
#   - `kubectl apply --dry-run=server -f manifests/palisade.yaml`;
#   - `helm install palisade ./charts/palisade -n kube-system`: every object
#     exists and kept every rendered field (nothing silently pruned);
#   - `kubectl auth can-i --as=system:serviceaccount:kube-system:palisade`:
#     CAN get/list/watch pods, namespaces, networkpolicies and create/patch
#     events (core and events.k8s.io), CANNOT touch secrets, write pods or
#     policies, read nodes; and the account really creates + patches an
#     events.k8s.io/v1 Event;
#   - `helm upgrade` with the dashboard ConfigMap and cleanupOnUninstall
#     (ServiceMonitor / PrometheusRule: see the note at that step);
#   - `helm uninstall` leaves no Palisade object behind; the plain manifest
#     applies and deletes cleanly too.
# Prints PASS/FAIL lines and finally `N passed, N failed`; exit 1 on failure.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
APISERVER="$ROOT/integration/apiserver"
SA_USER=system:serviceaccount:kube-system:palisade

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
summary() {
    echo
    echo "$passed passed, $failed failed"
}

if [[ ! -x "$APISERVER/start.sh" || ! -x "$APISERVER/stop.sh" ]]; then
    fail "integration/apiserver/start.sh and stop.sh exist"
    summary
    exit 1
fi
if ! tools_env=$("$HERE/install-tools.sh"); then
    fail "install-tools.sh"
    summary
    exit 1
fi
eval "$tools_env"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/palisade-chart-install.XXXXXX")
DIR="$WORK/apiserver"
cleanup() {
    "$APISERVER/stop.sh" --dir "$DIR" >/dev/null 2>&1 || true
    if ((failed)); then
        echo "apiserver logs kept in $DIR" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

if ! env_lines=$("$APISERVER/start.sh" --dir "$DIR"); then
    fail "start kube-apiserver (logs in $DIR)"
    summary
    exit 1
fi
eval "$env_lines"
pass "kube-apiserver started ($PALISADE_APISERVER_URL)"

k() { "$PALISADE_KUBECTL" "$@"; }
helm_() { (cd "$ROOT" && "$PALISADE_HELM" "$@"); }

# check NAME CMD...: pass when CMD exits 0, else fail and show its output.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        pass "$name"
    else
        fail "$name"
        printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /'
    fi
}

# eventually SECONDS CMD...: retry CMD until it succeeds (RBAC and
# bootstrap objects reach the apiserver's caches asynchronously).
eventually() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { "$@"; return 1; }
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------
# What the apiserver serves
# ---------------------------------------------------------------------------
version=$(k version -o json 2>/dev/null | sed -n 's/.*"gitVersion": *"\(v[^"]*\)".*/\1/p' | tail -n 1)
if [[ "$version" == v1.20.* ]]; then pass "server is $version"; else fail "server is v1.20.x (got '$version')"; fi
api_versions=$(k api-versions 2>&1)
for gv in v1 apps/v1 rbac.authorization.k8s.io/v1 events.k8s.io/v1 networking.k8s.io/v1; do
    if grep -qx "$gv" <<<"$api_versions"; then pass "apiserver serves $gv"; else fail "apiserver serves $gv"; fi
done
check "PriorityClass system-node-critical exists (apiserver bootstrap)" \
    eventually 30 k get priorityclass system-node-critical

# ---------------------------------------------------------------------------
# Plain manifest: server-side dry run
# ---------------------------------------------------------------------------
check "kubectl apply --dry-run=server -f manifests/palisade.yaml" \
    k apply --dry-run=server -f "$ROOT/manifests/palisade.yaml"

# ---------------------------------------------------------------------------
# helm install
# ---------------------------------------------------------------------------
install_with_notes() {
    helm_ install palisade ./charts/palisade -n kube-system >"$WORK/install.out" 2>&1 \
        || { cat "$WORK/install.out"; return 1; }
    if ! grep -q 'rollout status daemonset/palisade' "$WORK/install.out" \
        || ! grep -q 'cleanupOnUninstall=false' "$WORK/install.out"; then
        echo "NOTES missing or incomplete:"
        cat "$WORK/install.out"
        return 1
    fi
}
check "helm install palisade ./charts/palisade -n kube-system (NOTES rendered)" install_with_notes
deployed() { [[ "$(helm_ status palisade -n kube-system 2>&1)" == *"STATUS: deployed"* ]]; }
check "helm status palisade is deployed" deployed
helm_ get manifest palisade -n kube-system >"$WORK/installed.yaml" 2>/dev/null
"$PALISADE_TOOLS_PY" "$HERE/live_subset.py" "$PALISADE_KUBECTL" "$WORK/installed.yaml" default \
    >"$WORK/subset.out" 2>&1
cat "$WORK/subset.out"
passed=$((passed + $(grep -c '^PASS:' "$WORK/subset.out")))
failed=$((failed + $(grep -c '^FAIL:' "$WORK/subset.out")))
n_objects=$(grep -c '^kind:' "$WORK/installed.yaml")
if [[ "$n_objects" == 5 ]]; then
    pass "helm installed 5 objects (DaemonSet, ServiceAccount, ClusterRole, ClusterRoleBinding, Service)"
else
    fail "helm installed 5 objects (got $n_objects)"
fi

# ---------------------------------------------------------------------------
# RBAC of the agent's ServiceAccount
# ---------------------------------------------------------------------------
# Compare the answer, not the exit status: a failing request must not count
# as "no".
can() { [[ "$(k auth can-i "$@" --as="$SA_USER" 2>/dev/null)" == yes ]]; }
cannot() { [[ "$(k auth can-i "$@" --as="$SA_USER" 2>/dev/null)" == no ]]; }
for verb in get list watch; do
    for res in pods namespaces networkpolicies.networking.k8s.io; do
        check "palisade CAN $verb $res (all namespaces)" eventually 10 can "$verb" "$res" --all-namespaces
    done
done
for verb in create patch; do
    for res in events events.events.k8s.io; do
        check "palisade CAN $verb $res" eventually 10 can "$verb" "$res" -n default
    done
done
for args in "get secrets" "list secrets --all-namespaces" "watch secrets -n kube-system" \
    "create pods" "patch pods" "delete pods" "update pods" "create pods/exec" \
    "create networkpolicies.networking.k8s.io" "patch networkpolicies.networking.k8s.io" \
    "delete networkpolicies.networking.k8s.io" "patch namespaces" "delete namespaces" \
    "get nodes" "list configmaps" "delete events" "get events" "create serviceaccounts/token" \
    "escalate clusterroles.rbac.authorization.k8s.io" "'*' '*'"; do
    eval "set -- $args"
    check "palisade CANNOT $args" cannot "$@" -n default
done

# A real write as the account, with the API kube-rs' recorder uses.
now=$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)
cat >"$WORK/event.yaml" <<EOF
apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: palisade-test.$(date +%s)
  namespace: default
eventTime: "$now"
reportingController: palisade
reportingInstance: palisade-test
action: Apply
reason: PolicyApplied
type: Normal
note: test event written by integration/chart/test-install.sh
regarding:
  apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  namespace: default
  name: example
EOF
check "palisade creates an events.k8s.io/v1 Event" k create -f "$WORK/event.yaml" --as="$SA_USER"
check "palisade patches that Event" k patch -f "$WORK/event.yaml" --as="$SA_USER" --type=merge \
    -p '{"series":{"count":2,"lastObservedTime":"'"$now"'"}}'

# ---------------------------------------------------------------------------
# Optional features that need no CRD: dashboard ConfigMap, cleanupOnUninstall.
# (ServiceMonitor / PrometheusRule need the prometheus-operator CRDs; adding
# any CRD crashes this v1.20.2 build: its vendored modern-go/reflect2 v1.0.1
# panics under Go 1.19 in the OpenAPI aggregator. test-chart.sh validates
# those two objects offline against the real CRD schemas instead.)
# ---------------------------------------------------------------------------
upgrade_with_notes() {
    helm_ upgrade palisade ./charts/palisade -n kube-system \
        --set dashboards.enabled=true --set cleanupOnUninstall=true >"$WORK/upgrade.out" 2>&1 \
        || { cat "$WORK/upgrade.out"; return 1; }
    if ! grep -q 'Grafana dashboard ConfigMap: kube-system/palisade-dashboard' "$WORK/upgrade.out" \
        || ! grep -q 'cleanupOnUninstall=true: each agent removes' "$WORK/upgrade.out"; then
        echo "NOTES missing or incomplete:"
        cat "$WORK/upgrade.out"
        return 1
    fi
}
check "helm upgrade --set dashboards.enabled=true,cleanupOnUninstall=true (NOTES rendered)" upgrade_with_notes
helm_ get manifest palisade -n kube-system >"$WORK/upgraded.yaml" 2>/dev/null
"$PALISADE_TOOLS_PY" "$HERE/live_subset.py" "$PALISADE_KUBECTL" "$WORK/upgraded.yaml" upgraded \
    >"$WORK/subset-upgraded.out" 2>&1
cat "$WORK/subset-upgraded.out"
passed=$((passed + $(grep -c '^PASS:' "$WORK/subset-upgraded.out")))
failed=$((failed + $(grep -c '^FAIL:' "$WORK/subset-upgraded.out")))
args=$(k -n kube-system get daemonset palisade -o jsonpath='{.spec.template.spec.containers[0].args}')
if [[ "$args" == *--cleanup-on-exit* ]]; then
    pass "upgraded DaemonSet runs the agent with --cleanup-on-exit"
else
    fail "upgraded DaemonSet runs the agent with --cleanup-on-exit (args: $args)"
fi

# ---------------------------------------------------------------------------
# helm uninstall: nothing left
# ---------------------------------------------------------------------------
leftovers() { # prints every object labelled as this release, plus helm's own records
    local sel=app.kubernetes.io/instance=palisade
    k get daemonsets,serviceaccounts,services,configmaps -A -l "$sel" -o name 2>/dev/null
    k get clusterroles,clusterrolebindings -l "$sel" -o name 2>/dev/null
    k get secrets -A -l owner=helm,name=palisade -o name 2>/dev/null
}
check "helm uninstall palisade" helm_ uninstall palisade -n kube-system --wait
left=$(leftovers)
if [[ -z "$left" ]]; then
    pass "no Palisade object left after helm uninstall"
else
    fail "objects left after helm uninstall: $(tr '\n' ' ' <<<"$left")"
fi

# ---------------------------------------------------------------------------
# Plain manifest: apply and delete for real
# ---------------------------------------------------------------------------
check "kubectl apply -f manifests/palisade.yaml" k apply -f "$ROOT/manifests/palisade.yaml"
"$PALISADE_TOOLS_PY" "$HERE/live_subset.py" "$PALISADE_KUBECTL" "$ROOT/manifests/palisade.yaml" manifest \
    >"$WORK/subset-manifest.out" 2>&1
cat "$WORK/subset-manifest.out"
passed=$((passed + $(grep -c '^PASS:' "$WORK/subset-manifest.out")))
failed=$((failed + $(grep -c '^FAIL:' "$WORK/subset-manifest.out")))
check "kubectl delete -f manifests/palisade.yaml" k delete -f "$ROOT/manifests/palisade.yaml" --wait=true
left=$(leftovers)
if [[ -z "$left" ]]; then
    pass "no Palisade object left after kubectl delete"
else
    fail "objects left after kubectl delete: $(tr '\n' ' ' <<<"$left")"
fi

summary
((failed == 0))
