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
#   - the agent itself, run with ONLY the ServiceAccount's token (TokenRequest
#     via `kubectl create token`) inside a throwaway network namespace
#     (pal-chart-PID, reaching the apiserver over a veth pair in
#     198.18.199.0/24, so the host's iptables is untouched), against a
#     namespace, a Running pod on its node, a valid policy and one the 1.20
#     apiserver accepts but Palisade rejects: /readyz turns 200, the pod's
#     chains and sets are in the netns, no 403 in its log nor in the
#     apiserver's audit log, every request it made is granted by the
#     ClusterRole, it records the PolicyInvalid Event, it follows a pod added
#     while it runs, and on SIGTERM it exits 0 leaving its rules in place;
#     the same token is refused secrets and pod creation;
#   - `helm upgrade` with the dashboard ConfigMap and cleanupOnUninstall
#     (ServiceMonitor / PrometheusRule: see the note at that step);
#   - `helm uninstall` leaves no Palisade object behind; the plain manifest
#     applies and deletes cleanly too.
# Prints PASS/FAIL lines and finally `N passed, N failed`; exit 1 on failure.
# Runs as root (network namespace, veth, iptables). Uses the agent binary
# $PALISADE_BIN (default target/release/palisade, built with
# `cargo build --release --bins` if missing).
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

# The agent runs in its own network namespace, so it programs that
# namespace's netfilter tables and never the host's. The apiserver listens on
# the root end of a veth pair into it (a new namespace cannot reach the
# host's 127.0.0.1). Names carry our pid; the /30 is the first free one in
# 198.18.199.0/24 (RFC 2544 benchmarking range), picked under a lock.
NETNS=pal-chart-$$
VETH_HOST=pch$$ VETH_NS=pcn$$ # interface names: at most 15 characters
HOST_ADDR="" NS_ADDR=""
netns_created=0 veth_created=0
AGENT_PID=""
net_setup() {
    local i base lock=/run/lock/palisade-chart-net.lock
    ip netns add "$NETNS" || return 1
    netns_created=1
    ip -n "$NETNS" link set lo up || return 1
    mkdir -p "$(dirname "$lock")"
    exec 8>"$lock"
    flock 8
    for ((i = 0; i < 64; i++)); do
        base=$((4 * i))
        if [[ "$(ip -4 -o addr show)" != *" 198.18.199.$((base + 1))/"* ]]; then
            HOST_ADDR=198.18.199.$((base + 1)) NS_ADDR=198.18.199.$((base + 2))
            break
        fi
    done
    if [[ -n "$HOST_ADDR" ]] && ip link add "$VETH_HOST" type veth peer name "$VETH_NS" netns "$NETNS"; then
        veth_created=1
        ip addr add "$HOST_ADDR/30" dev "$VETH_HOST" && ip link set "$VETH_HOST" up
    fi
    exec 8>&-
    ((veth_created)) || return 1
    ip -n "$NETNS" addr add "$NS_ADDR/30" dev "$VETH_NS" && ip -n "$NETNS" link set "$VETH_NS" up
}
# True while the agent we started is alive (not yet exited, or a zombie).
# One read of its state: a zombie that bash reaps between two reads must not look alive
# (an empty state is "gone", not "not a zombie").
agent_alive() {
    local state
    [[ -n "$AGENT_PID" ]] || return 1
    state=$(awk '{print $3}' "/proc/$AGENT_PID/stat" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z ]]
}
# stop_agent SIGNAL SECONDS: signal our agent, wait for it, reap it. Sets
# agent_rc to its exit status (or 255 if it had to be killed).
stop_agent() {
    local i
    agent_rc=""
    [[ -n "$AGENT_PID" ]] || return 0
    # bash reaps a background child as soon as it exits and keeps its status for `wait`;
    # until then the pid cannot be reused.
    kill -"$1" "$AGENT_PID" 2>/dev/null
    for ((i = 0; i < $2 * 10; i++)); do
        agent_alive || break
        sleep 0.1
    done
    if agent_alive; then
        # Where it is stuck, for the report: each thread's name, state and kernel wait.
        local task
        for task in /proc/"$AGENT_PID"/task/*; do
            echo "still running: thread $(<"$task/comm") state $(awk '{print $3}' "$task/stat") wchan $(<"$task/wchan")"
            [[ -r "$task/stack" ]] && sed 's/^/    /' "$task/stack"
        done >>"$WORK/agent.log" 2>/dev/null
        kill -KILL "$AGENT_PID" 2>/dev/null
        wait "$AGENT_PID" 2>/dev/null
        agent_rc=255
    else
        wait "$AGENT_PID" 2>/dev/null
        agent_rc=$?
    fi
    AGENT_PID=""
}
cleanup() {
    stop_agent TERM 5
    "$APISERVER/stop.sh" --dir "$DIR" >/dev/null 2>&1 || true
    if ((veth_created)); then
        ip link del "$VETH_HOST" 2>/dev/null # also removes its peer in the netns
    fi
    if ((netns_created)); then
        ip netns del "$NETNS" || echo "could not delete network namespace $NETNS" >&2
    fi
    if ((failed)); then
        echo "apiserver and agent logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'fail "interrupted (SIGINT)"; summary; exit 130' INT
trap 'fail "interrupted (SIGTERM)"; summary; exit 143' TERM

start_args=(--dir "$DIR")
if net_setup; then
    pass "network namespace $NETNS with veth $VETH_HOST ($HOST_ADDR) <-> $VETH_NS ($NS_ADDR)"
    start_args+=(--bind-address "$HOST_ADDR")
    agent_net=1
else
    fail "network namespace $NETNS with a veth pair in 198.18.199.0/24 (the agent run is skipped)"
    agent_net=0
fi
# Audit only the agent's ServiceAccount: the log shows every request it makes
# and the answer it got, whatever its own log says.
cat >"$WORK/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: ["$SA_USER"]
- level: None
EOF
start_args+=(--apiserver-arg="--audit-policy-file=$WORK/audit-policy.yaml"
    --apiserver-arg="--audit-log-path=$WORK/audit.log")
if ! env_lines=$("$APISERVER/start.sh" "${start_args[@]}"); then
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
# Calico's own storage group as well, so that both groups the ClusterRole
# names are served (as on a cluster running Calico's API server) and the
# agent below picks crd.projectcalico.org/v1 as Calico would.
PALISADE_BIN=${PALISADE_BIN:-$ROOT/target/release/palisade}
install_v1_crds() {
    # `kubectl wait` fails on a CRD so new it has no status yet: retried.
    "$PALISADE_BIN" crds --group v1 | k apply -f - &&
        eventually 10 k wait --for=condition=Established --timeout=30s crd/tiers.crd.projectcalico.org \
            crd/networkpolicies.crd.projectcalico.org crd/globalnetworkpolicies.crd.projectcalico.org \
            crd/networksets.crd.projectcalico.org crd/globalnetworksets.crd.projectcalico.org
}
check "install the crd.projectcalico.org/v1 CRDs (palisade crds --group v1)" install_v1_crds
# Compare the answer, not the exit status: a failing request must not count
# as "no".
can() { [[ "$(k auth can-i "$@" --as="$SA_USER" 2>/dev/null)" == yes ]]; }
cannot() { [[ "$(k auth can-i "$@" --as="$SA_USER" 2>/dev/null)" == no ]]; }
CALICO_RESOURCES=""
for group in projectcalico.org crd.projectcalico.org; do
    for kind in networkpolicies globalnetworkpolicies networksets globalnetworksets tiers; do
        CALICO_RESOURCES+=" $kind.$group"
    done
done
for verb in get list watch; do
    for res in pods namespaces networkpolicies.networking.k8s.io serviceaccounts \
        endpointslices.discovery.k8s.io $CALICO_RESOURCES; do
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
    "create networkpolicies.projectcalico.org" "patch globalnetworkpolicies.projectcalico.org" \
    "delete tiers.projectcalico.org" "update networksets.crd.projectcalico.org" \
    "create globalnetworksets.crd.projectcalico.org" "list stagednetworkpolicies.projectcalico.org" \
    "list hostendpoints.projectcalico.org" "patch serviceaccounts" "delete endpointslices.discovery.k8s.io" \
    "list customresourcedefinitions.apiextensions.k8s.io" \
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
# The agent itself, with nothing but the ServiceAccount's token
# ---------------------------------------------------------------------------
# It runs in the network namespace $NETNS (see net_setup), so the rules it
# writes land there; the chart's DaemonSet cannot run here (no kubelet).
PALISADE_BIN=${PALISADE_BIN:-$ROOT/target/release/palisade}
AGENT_NS=chart-agent             # Kubernetes namespace of the test objects
NODE=test-node
POD_IP=198.18.200.2 POD2_IP=198.18.200.3 # only written into pod status
METRICS_ADDR=127.0.0.1:9617      # inside $NETNS, where every port is free
SA_KCFG="$WORK/palisade-sa.kubeconfig"
sa() { "$PALISADE_KUBECTL" --kubeconfig "$SA_KCFG" "$@"; }
in_ns() { ip netns exec "$NETNS" "$@"; }

# The chain name Palisade derives for NAMESPACE/NAME (src/compiler/naming.rs:
# prefix + 64-bit FNV-1a of the key, as 16 hex digits).
pal_chain() { # pal_chain PREFIX NAMESPACE/NAME
    local text=$2 hash=$((0xcbf29ce484222325)) i c
    for ((i = 0; i < ${#text}; i++)); do
        printf -v c '%d' "'${text:i:1}"
        hash=$(((hash ^ c) * 0x100000001b3))
    done
    printf '%s%016x' "$1" "$hash"
}
POD_CHAIN=$(pal_chain PAL-TO- "$AGENT_NS/server")
POD2_CHAIN=$(pal_chain PAL-TO- "$AGENT_NS/server-2")
GOOD_CHAIN=$(pal_chain PAL-PI- "$AGENT_NS/allow-http")
BAD_CHAIN=$(pal_chain PAL-PI- "$AGENT_NS/mapped-except")

# set_pod_status NAME IP: set-pod-status.sh calls `kubectl` from PATH; give it
# the one install-tools.sh provides.
set_pod_status() {
    PATH="$(dirname "$PALISADE_KUBECTL"):$PATH" \
        "$APISERVER/set-pod-status.sh" "$KUBECONFIG" "$AGENT_NS" "$1" "$2" >/dev/null
}
pod_yaml() { # pod_yaml NAME
    cat <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $AGENT_NS
  labels: {app: server}
spec:
  nodeName: $NODE
  containers:
  - name: web
    image: registry.invalid/web:1
    ports:
    - {name: http, containerPort: 8080}
YAML
}
# netns_has GLOB...: every GLOB matches a whole line of the netns's
# iptables-save output (v4). (Captured first: `cmd | grep -q` would SIGPIPE.)
netns_has() {
    local rules p line found
    rules=$(in_ns iptables-save 2>&1) || { echo "$rules"; return 1; }
    for p in "$@"; do
        found=0
        while read -r line; do
            # shellcheck disable=SC2053 # $p is a glob on purpose
            [[ "$line" == $p ]] && { found=1; break; }
        done <<<"$rules"
        ((found)) || { echo "no line matches '$p' in:"; echo "$rules"; return 1; }
    done
}
# netns_lacks GLOB: no line of the netns's iptables-save matches GLOB.
netns_lacks() {
    local rules line
    rules=$(in_ns iptables-save 2>&1) || { echo "$rules"; return 1; }
    while read -r line; do
        # shellcheck disable=SC2053
        [[ "$line" == $1 ]] && { echo "unexpected: $line"; return 1; }
    done <<<"$rules"
    return 0
}
# The pod's address is a member of a Palisade v4 set in the netns.
netns_set_has_pod_ip() {
    local sets line
    sets=$(in_ns ipset save 2>&1) || { echo "$sets"; return 1; }
    while read -r line; do # `add pal4-p-HASH 198.18.200.2` (or `...,tcp:8080`)
        [[ "$line" == "add pal4-"*" $POD_IP" || "$line" == "add pal4-"*" $POD_IP,"* ]] && return 0
    done <<<"$sets"
    echo "$sets"
    return 1
}
agent_ready() { in_ns curl -fsS -o /dev/null --max-time 1 "http://$METRICS_ADDR/readyz"; }
metric() { # metric NAME: its value in /metrics (first sample)
    in_ns curl -fsS --max-time 2 "http://$METRICS_ADDR/metrics" 2>/dev/null \
        | awk -v n="$1" '$1 == n { print $2; exit }'
}
policy_invalid_event() {
    local out
    out=$(k -n "$AGENT_NS" get events.v1.events.k8s.io -o jsonpath='{range .items[?(@.reason=="PolicyInvalid")]}{.regarding.kind}/{.regarding.name} {.reportingController} {.reportingInstance} {.type}{"\n"}{end}' 2>&1)
    # One Event per policy version for the whole cluster: reported as instance "palisade".
    [[ "$out" == *"NetworkPolicy/mapped-except palisade palisade Warning"* ]] || { echo "PolicyInvalid events: $out"; return 1; }
}
# sa_refused ARGS...: kubectl with the token fails, refused as the account.
sa_refused() {
    local out
    if out=$(sa "$@" 2>&1); then
        echo "allowed: $out"
        return 1
    fi
    [[ "$out" == *Forbidden* && "$out" == *"User \"$SA_USER\""* ]] || { echo "$out"; return 1; }
}

# The kubeconfig has one user with only a token, not the admin's, and the
# apiserver sees it as the account.
sa_kubeconfig_only_token() {
    [[ "$(<"$SA_KCFG")" != *"$PALISADE_APISERVER_TOKEN"* ]] || { echo "admin token in it"; return 1; }
    [[ "$(sa config view -o jsonpath='{range .users[*]}{.name}:{.user}{"\n"}{end}')" == 'palisade:{"token":"REDACTED"}' ]] \
        || { sa config view; return 1; }
    sa_refused -n kube-system get secrets
}
bad_policy_fails_closed() { netns_has ":$BAD_CHAIN *" && netns_lacks "-A $BAD_CHAIN *"; }
host_untouched() {
    local rules
    rules=$(iptables-save 2>/dev/null)
    [[ "$rules" != *"$POD_CHAIN"* && "$rules" != *"$POD2_CHAIN"* ]]
}

run_agent_checks() {
    local token t0 ready_after rules syncs out
    if [[ ! -x "$PALISADE_BIN" ]]; then
        (cd "$ROOT" && cargo build --release --bins) >"$WORK/cargo-build.log" 2>&1
    fi
    check "agent binary $PALISADE_BIN" test -x "$PALISADE_BIN"
    [[ -x "$PALISADE_BIN" ]] || return 0

    # -- credentials: a TokenRequest token, and a kubeconfig with only it --
    if ! token=$(k -n kube-system create token palisade 2>"$WORK/token.err") || [[ -z "$token" ]]; then
        fail "kubectl create token palisade -n kube-system (TokenRequest)"
        sed 's/^/    /' "$WORK/token.err"
        return 0
    fi
    pass "kubectl create token palisade -n kube-system (TokenRequest)"
    (
        umask 077
        cat >"$SA_KCFG" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: palisade-test
  cluster:
    server: $PALISADE_APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$PALISADE_APISERVER_CA_FILE")
users:
- name: palisade
  user:
    token: $token
contexts:
- name: palisade
  context:
    cluster: palisade-test
    user: palisade
current-context: palisade
KCFG
    )
    check "the agent's kubeconfig holds only the ServiceAccount token (get secrets refused as $SA_USER)" \
        sa_kubeconfig_only_token

    # -- cluster objects, written as admin --
    cat >"$WORK/agent-ns.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $AGENT_NS
  labels: {kubernetes.io/metadata.name: $AGENT_NS}
YAML
    cat >"$WORK/agent-policy.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-http, namespace: $AGENT_NS}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: $AGENT_NS}}
    ports: [{port: http}]
YAML
    # Accepted by the 1.20 apiserver (Go's IPNet.Contains treats the mapped
    # address as 10.1.0.0), rejected by Palisade (src/model/convert.rs
    # ip_block: an except of another address family is "not inside" the cidr).
    cat >"$WORK/agent-invalid-policy.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: mapped-except, namespace: $AGENT_NS}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/8, except: ["::ffff:10.1.0.0/112"]}
YAML
    check "create namespace $AGENT_NS (label kubernetes.io/metadata.name)" k apply -f "$WORK/agent-ns.yaml"
    pod_yaml server >"$WORK/agent-pod.yaml"
    check "create pod $AGENT_NS/server on $NODE" k apply -f "$WORK/agent-pod.yaml"
    check "set pod $AGENT_NS/server Running with IP $POD_IP (set-pod-status.sh)" set_pod_status server "$POD_IP"
    check "create NetworkPolicy $AGENT_NS/allow-http (namespaceSelector + named port)" \
        k apply -f "$WORK/agent-policy.yaml"
    check "the 1.20 apiserver accepts NetworkPolicy $AGENT_NS/mapped-except (ipBlock.except ::ffff:10.1.0.0/112 in 10.0.0.0/8), which Palisade rejects" \
        k apply -f "$WORK/agent-invalid-policy.yaml"

    # -- run it --
    t0=$(date +%s.%N)
    # A clean environment: no admin token or kubeconfig can leak in.
    ip netns exec "$NETNS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/nonexistent \
        KUBECONFIG="$SA_KCFG" RUST_LOG=info \
        "$PALISADE_BIN" agent --node "$NODE" --metrics-addr "$METRICS_ADDR" --refresh-interval 5s \
        </dev/null >"$WORK/agent.log" 2>&1 &
    AGENT_PID=$!
    ready_after=""
    while agent_alive && (($(date +%s) - ${t0%.*} < 16)); do
        if agent_ready 2>/dev/null; then
            ready_after=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
            break
        fi
        sleep 0.2
    done
    if [[ -n "$ready_after" ]] && awk -v t="$ready_after" 'BEGIN{exit !(t <= 15)}'; then
        pass "agent (pid $AGENT_PID, in $NETNS, as $SA_USER): /readyz 200 after ${ready_after}s"
    else
        fail "agent /readyz 200 within 15 s (alive: $(agent_alive && echo yes || echo no))"
        tail -n 8 "$WORK/agent.log" | cut -c1-400 | sed 's/^/    /'
    fi
    check "netns iptables: PAL-FORWARD hooked into FORWARD, jumps to $POD_CHAIN for -d $POD_IP ($AGENT_NS/server)" \
        netns_has ":PAL-FORWARD *" "-A FORWARD *-j PAL-FORWARD" ":$POD_CHAIN *" \
        "-A PAL-FORWARD -d $POD_IP/32 *-j $POD_CHAIN"
    check "netns iptables: $POD_CHAIN goes through allow-http ($GOOD_CHAIN) and mapped-except ($BAD_CHAIN), then drops" \
        netns_has "-A $POD_CHAIN *-j $GOOD_CHAIN" "-A $POD_CHAIN *-j $BAD_CHAIN" "-A $POD_CHAIN *-j DROP" \
        "-A $GOOD_CHAIN *--match-set pal4-* src *"
    check "netns iptables: the rejected policy fails closed ($BAD_CHAIN exists and allows nothing)" \
        bad_policy_fails_closed
    check "netns ipset: $POD_IP is in a pal4- set (namespaceSelector on kubernetes.io/metadata.name)" \
        netns_set_has_pod_ip
    syncs=$(metric palisade_syncs_total)
    if [[ "$syncs" =~ ^[0-9]+$ ]] && ((syncs >= 1)); then
        pass "/metrics: palisade_syncs_total $syncs (>= 1)"
    else
        fail "/metrics: palisade_syncs_total >= 1 (got '$syncs')"
    fi
    out="local_pods=$(metric palisade_local_pods) policies=$(metric palisade_policies) policies_invalid=$(metric palisade_policies_invalid)"
    if [[ "$out" == "local_pods=1 policies=2 policies_invalid=1" ]]; then
        pass "/metrics: $out (the invalid policy fails closed)"
    else
        fail "/metrics: local_pods=1 policies=2 policies_invalid=1 (got $out)"
    fi
    check "Event reason PolicyInvalid for NetworkPolicy/mapped-except (reportingController palisade, instance palisade)" \
        eventually 15 policy_invalid_event
    # A change while it runs: the watch (not just the list) works.
    pod_yaml server-2 >"$WORK/agent-pod2.yaml"
    if k apply -f "$WORK/agent-pod2.yaml" >/dev/null 2>&1 && set_pod_status server-2 "$POD2_IP"; then
        check "pod $AGENT_NS/server-2 ($POD2_IP) added while running: $POD2_CHAIN appears (watch)" \
            eventually 15 netns_has ":$POD2_CHAIN *" "-A PAL-FORWARD -d $POD2_IP/32 *-j $POD2_CHAIN"
    else
        fail "create pod $AGENT_NS/server-2 and set its status"
    fi
    if grep -qiE 'forbidden|code: 403|status: 403' "$WORK/agent.log"; then
        fail "agent log has no 403/Forbidden"
        grep -iE 'forbidden|code: 403|status: 403' "$WORK/agent.log" | head -n 3 | cut -c1-400 | sed 's/^/    /'
    else
        pass "agent log has no 403/Forbidden ($(wc -l <"$WORK/agent.log") lines)"
    fi
    if grep -q "watching Calico's policies.*crd.projectcalico.org/v1" "$WORK/agent.log"; then
        pass "agent watches Calico's policies in crd.projectcalico.org/v1 (both groups served: Calico's choice)"
    else
        fail "agent watches Calico's policies in crd.projectcalico.org/v1"
        grep -i calico "$WORK/agent.log" | head -n 3 | cut -c1-400 | sed 's/^/    /'
    fi
    if grep -qE ' (WARN|ERROR) .*(watch failed|sync failed|refresh could not|could not record)' "$WORK/agent.log"; then
        fail "agent log has no failed watch, sync, refresh or event"
        grep -E ' (WARN|ERROR) ' "$WORK/agent.log" | head -n 3 | cut -c1-400 | sed 's/^/    /'
    else
        pass "agent log has no failed watch, sync, refresh or event"
    fi

    # -- SIGTERM: it exits, the rules stay (no --cleanup-on-exit) --
    stop_agent TERM 10
    if [[ "$agent_rc" == 0 ]] && grep -q "rules stay in place" "$WORK/agent.log"; then
        pass "SIGTERM: agent exits 0 ('Palisade's rules stay in place')"
    else
        fail "SIGTERM: agent exits 0 and logs that the rules stay (exit status $agent_rc)"
        grep -A 1000 'shutting down' "$WORK/agent.log" | head -n 40 | cut -c1-400 | sed 's/^/    /'
    fi
    check "after exit the netns still has PAL-FORWARD, its FORWARD hook, $POD_CHAIN and $POD2_CHAIN" \
        netns_has ":PAL-FORWARD *" "-A FORWARD *-j PAL-FORWARD" "-A PAL-FORWARD -d $POD_IP/32 *-j $POD_CHAIN" \
        "-A PAL-FORWARD -d $POD2_IP/32 *-j $POD2_CHAIN" "-A $POD_CHAIN *-j DROP"
    check "after exit the netns still has the pal4- set with $POD_IP" netns_set_has_pod_ip
    check "host (root netns) iptables has none of the agent's pod chains" host_untouched

    # -- what the apiserver saw: the agent's requests, all granted --
    "$PALISADE_TOOLS_PY" "$HERE/agent_audit.py" "$WORK/audit.log" "$NS_ADDR" "$SA_USER" \
        "$WORK/installed.yaml" "$AGENT_NS" >"$WORK/audit.out" 2>&1
    cat "$WORK/audit.out"
    passed=$((passed + $(grep -c '^PASS:' "$WORK/audit.out")))
    failed=$((failed + $(grep -c '^FAIL:' "$WORK/audit.out")))
    grep -q '^[A-Z]*:' "$WORK/audit.out" || fail "agent_audit.py ran"

    # -- negative control, with the very same token --
    check "the agent's token cannot get secrets (kube-system)" sa_refused -n kube-system get secrets palisade-x
    check "the agent's token cannot list secrets (all namespaces)" sa_refused get secrets -A
    check "the agent's token cannot create pods" sa_refused create -f "$WORK/agent-pod2.yaml" --dry-run=server
    check "the agent's token cannot patch NetworkPolicies" sa_refused -n "$AGENT_NS" \
        patch networkpolicy allow-http --type=merge -p '{"metadata":{"labels":{"x":"y"}}}'
    check "the agent's token can list pods (all namespaces)" sa get pods -A
}
if ((agent_net)); then
    run_agent_checks
else
    fail "agent run as the ServiceAccount (skipped: no network namespace)"
fi

# ---------------------------------------------------------------------------
# Optional features: dashboard ConfigMap, cleanupOnUninstall, and the
# prometheus-operator ServiceMonitor and PrometheusRule for real.
#
# Those two kinds used to be validated offline only: their CRDs would not
# install here. It was not a crash but the 1.20 validator taking "" for null
# under Go >= 1.16 (prometheus-operator's CRDs carry `default: ""`); build.sh
# now fixes it, and check-empty-strings.sh guards the fix. The CRDs cannot be
# downloaded here, so stand-ins register the two kinds (same group, version,
# names and scope; schema left open, with one `default: ""` field as the real
# ones have); test-chart.sh still checks both objects against the real
# schemas offline.
# ---------------------------------------------------------------------------
empty_strings() {
    local out
    out=$("$ROOT/integration/apiserver/check-empty-strings.sh" "$KUBECONFIG" 2>&1) \
        || { printf '%s\n' "$out"; return 1; }
}
check "the apiserver keeps \"\" as a string (integration/apiserver/check-empty-strings.sh)" empty_strings
monitoring_crd() { # KIND PLURAL
    cat <<YAML
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: $2.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: $1, listKind: $1List, plural: $2, singular: ${2%s}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
            properties:
              jobLabel: {type: string, default: ""}
YAML
}
install_monitoring_crds() {
    { monitoring_crd ServiceMonitor servicemonitors; echo ---; monitoring_crd PrometheusRule prometheusrules; } \
        | k apply -f - &&
        eventually 10 k wait --for=condition=Established --timeout=30s \
            crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com
}
check "register ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1 stand-in CRDs with default: \"\")" \
    install_monitoring_crds
monitoring_objects() {
    helm_ upgrade palisade ./charts/palisade -n kube-system \
        --set serviceMonitor.enabled=true --set prometheusRule.enabled=true >"$WORK/monitoring.out" 2>&1 \
        || { cat "$WORK/monitoring.out"; return 1; }
    k -n kube-system get servicemonitor palisade -o jsonpath='{.spec.endpoints[0].port}' | grep -qx metrics &&
        k -n kube-system get prometheusrule palisade -o jsonpath='{.spec.groups[0].rules[*].alert}' \
            | grep -q PalisadeSyncStale
}
check "helm upgrade --set serviceMonitor.enabled=true,prometheusRule.enabled=true creates both, read back (port metrics, alert PalisadeSyncStale)" \
    monitoring_objects
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
    k get daemonsets,serviceaccounts,services,configmaps,servicemonitors,prometheusrules -A -l "$sel" -o name 2>/dev/null
    k get clusterroles,clusterrolebindings -l "$sel" -o name 2>/dev/null
    k get secrets -A -l owner=helm,name=palisade -o name 2>/dev/null
}
# The chart's crds/: created by helm install, kept with the user's policies by
# helm uninstall.
crds_present() {
    k get crd networkpolicies.projectcalico.org globalnetworkpolicies.projectcalico.org \
        networksets.projectcalico.org globalnetworksets.projectcalico.org tiers.projectcalico.org >/dev/null
}
check "helm install created the chart's projectcalico.org/v3 CRDs (crds/)" crds_present
cat >"$WORK/calico-policy.yaml" <<'YAML'
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: palisade-test-kept}
spec:
  selector: app == 'nothing-here'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [80, "http", "8000:8080"]}
YAML
check "kubectl apply of a projectcalico.org/v3 GlobalNetworkPolicy (int-or-string ports)" \
    k apply -f "$WORK/calico-policy.yaml"
tier_defaulted() { [[ "$(k get globalnetworkpolicies.projectcalico.org palisade-test-kept -o jsonpath='{.spec.tier}')" == default ]]; }
check "the CRD defaults spec.tier to default" tier_defaulted
check "helm uninstall palisade" helm_ uninstall palisade -n kube-system --wait
left=$(leftovers)
if [[ -z "$left" ]]; then
    pass "no Palisade object left after helm uninstall"
else
    fail "objects left after helm uninstall: $(tr '\n' ' ' <<<"$left")"
fi
check "helm uninstall keeps the CRDs and the user's Calico policy" \
    eval 'crds_present && k get globalnetworkpolicies.projectcalico.org palisade-test-kept >/dev/null'
k delete -f "$WORK/calico-policy.yaml" >/dev/null 2>&1
"$PALISADE_BIN" crds --group v1 | k delete -f - >/dev/null 2>&1

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
