#!/usr/bin/env bash
# End-to-end test of Palisade on a kind cluster (`make kind-e2e`).
#
# Usage: integration/chart/kind-e2e.sh
#
# Needs: docker (with a running engine), kind, curl, tar; helm and kubectl
# from PATH, or else from install-tools.sh. Runs in CI (.github/workflows/ci.yml);
# it cannot run on a machine without a Docker engine.
#
# What it does:
#   1. Creates a kind cluster (1 control-plane + 2 workers) with kind's default
#      CNI, kindnet. Since kind v0.24 kindnetd also enforces NetworkPolicy
#      (embedded kube-network-policies), which would hide Palisade's bugs: the
#      kindnetd image is swapped for one from before that feature (as the
#      kube-network-policies project does in its own kind CI), and a control
#      experiment proves that the cluster does NOT enforce policy before
#      Palisade is installed.
#   2. Builds the image (docker build), `kind load docker-image`, and
#      `helm install palisade ./charts/palisade -n kube-system --wait`.
#   3. Runs the upstream NetworkPolicy e2e tests: e2e.test + ginkgo from
#      kubernetes-test-linux-amd64.tar.gz of the cluster's exact version,
#      focus '\[Feature:NetworkPolicy\]', skip 'SCTP|\[Feature:SCTPConnectivity\]'.
#   4. The seed walkthrough with real pods: nginx (run=nginx) + busybox
#      clients, namespace default annotated DefaultDeny, access-nginx policy;
#      the sock-shop front-end on port 80.
#   5. Agent health (no restarts, metrics served), then uninstall with
#      cleanupOnUninstall and check no PAL- chain is left on any node.
#
# Environment (all optional):
#   KIND_CLUSTER_NAME     default palisade-e2e (deleted first if it exists)
#   KIND_NODE_IMAGE       default kindest/node:v1.33.1 (kind v0.29.0's default)
#   KINDNETD_NO_POLICY_IMAGE  kindnetd without NetworkPolicy enforcement
#                         (default docker.io/kindest/kindnetd:v20230809-80a64d96)
#   PALISADE_IMAGE_REPOSITORY / PALISADE_IMAGE_TAG  image to build (palisade / e2e)
#   SKIP_BUILD=1          use an already built image
#   SKIP_UPSTREAM_E2E=1   skip step 3
#   E2E_PARALLEL          ginkgo processes (default 6); 1 runs e2e.test directly
#   E2E_FOCUS / E2E_SKIP  override the ginkgo focus / skip regexes
#   KEEP_CLUSTER=1        leave the cluster running at the end
#   ARTIFACTS             logs and junit reports (default ${TMPDIR:-/tmp}/palisade-kind-e2e)
#   PALISADE_CACHE_DIR    where e2e.test/ginkgo are kept (default /var/cache/palisade)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

CLUSTER=${KIND_CLUSTER_NAME:-palisade-e2e}
NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.33.1}
KINDNETD_NO_POLICY_IMAGE=${KINDNETD_NO_POLICY_IMAGE:-docker.io/kindest/kindnetd:v20230809-80a64d96}
IMAGE_REPO=${PALISADE_IMAGE_REPOSITORY:-palisade}
IMAGE_TAG=${PALISADE_IMAGE_TAG:-e2e}
E2E_PARALLEL=${E2E_PARALLEL:-6}
E2E_FOCUS=${E2E_FOCUS:-'\[Feature:NetworkPolicy\]'}
E2E_SKIP=${E2E_SKIP:-'SCTP|\[Feature:SCTPConnectivity\]'}
ARTIFACTS=${ARTIFACTS:-${TMPDIR:-/tmp}/palisade-kind-e2e}
NS=kube-system
BUSYBOX=docker.io/library/busybox:1.36
NGINX=docker.io/library/nginx:1.27-alpine

log() { printf '\n[kind-e2e] %s\n' "$*" >&2; }
passed=0 failed=0
die() { failed=$((failed + 1)); printf '[kind-e2e] ERROR: %s\n' "$*" >&2; exit 1; }
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------
for tool in docker kind curl tar; do
    command -v "$tool" >/dev/null || die "$tool is required (see the header of $0)"
done
docker info >/dev/null 2>&1 || die "docker has no reachable engine"
HELM=${PALISADE_HELM:-$(command -v helm || true)}
KUBECTL=${PALISADE_KUBECTL:-$(command -v kubectl || true)}
if [[ -z "$HELM" || -z "$KUBECTL" ]]; then
    eval "$("$HERE/install-tools.sh")"
    HELM=$PALISADE_HELM
    KUBECTL=$PALISADE_KUBECTL
fi
mkdir -p "$ARTIFACTS"
KUBECONFIG_FILE="$ARTIFACTS/kubeconfig"
export KUBECONFIG="$KUBECONFIG_FILE"
k() { "$KUBECTL" "$@"; }

# ---------------------------------------------------------------------------
# Cluster
# ---------------------------------------------------------------------------
on_exit() {
    local rc=$?
    set +e
    ((rc == 0 || failed > 0)) || failed=$((failed + 1))
    if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
        log "collecting logs into $ARTIFACTS"
        k -n "$NS" logs -l app.kubernetes.io/name=palisade --all-containers --prefix --tail=-1 \
            >"$ARTIFACTS/palisade.log" 2>&1
        k get pods -A -o wide >"$ARTIFACTS/pods.txt" 2>&1
        kind export logs --name "$CLUSTER" "$ARTIFACTS/kind-logs" >/dev/null 2>&1
        if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
            log "KEEP_CLUSTER=1: cluster $CLUSTER left running (KUBECONFIG=$KUBECONFIG_FILE)"
        else
            kind delete cluster --name "$CLUSTER" >/dev/null 2>&1
        fi
    fi
    echo
    echo "kind-e2e: $passed passed, $failed failed"
    exit "$rc"
}
trap on_exit EXIT

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "deleting the existing cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER"
fi
log "creating kind cluster $CLUSTER ($NODE_IMAGE), default CNI kindnet"
kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --wait 3m \
    --kubeconfig "$KUBECONFIG_FILE" --config - <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
EOF
mapfile -t NODES < <(kind get nodes --name "$CLUSTER")
log "nodes: ${NODES[*]}"

# --- kindnet, but without kindnetd's own NetworkPolicy enforcement ---------
# kind v0.24-v0.25 ran kube-network-policies as a separate DaemonSet; later
# versions embed it in kindnetd. Remove the former, downgrade the latter.
if k -n kube-system get daemonset kube-network-policies >/dev/null 2>&1; then
    log "deleting kind's kube-network-policies DaemonSet"
    k -n kube-system delete daemonset kube-network-policies --wait=true
fi
log "switching kindnetd to $KINDNETD_NO_POLICY_IMAGE (no NetworkPolicy support)"
k -n kube-system set image daemonset/kindnet "kindnet-cni=$KINDNETD_NO_POLICY_IMAGE"
k -n kube-system rollout status daemonset/kindnet --timeout=3m
# Leftover nftables tables of the policy enforcer, if any (best effort).
for node in "${NODES[@]}"; do
    for table in kindnet-network-policies kube-network-policies; do
        docker exec "$node" nft delete table inet "$table" >/dev/null 2>&1 || true
    done
done
k -n kube-system wait --for=condition=Ready pods -l k8s-app=kube-dns --timeout=3m

# ---------------------------------------------------------------------------
# Helpers for connectivity checks with real pods
# ---------------------------------------------------------------------------
# probe NS LABELS TARGET PORT: a throw-away busybox pod (labels "k=v,k=v" or
# "") fetches http://TARGET:PORT/ with a 2 s timeout. Prints allowed,
# blocked, or error when the probe pod itself could not run (so a scheduling
# hiccup is never mistaken for a blocked connection).
probe() {
    local ns=$1 labels=$2 target=$3 port=$4 out
    local args=(run "probe-$RANDOM$RANDOM" -n "$ns" --image="$BUSYBOX" --restart=Never --rm -i
        --quiet --pod-running-timeout=2m)
    [[ -z "$labels" ]] || args+=(--labels="$labels")
    out=$(k "${args[@]}" -- sh -c \
        "if wget -q -T 2 -O /dev/null http://$target:$port/; then echo CONNECT-OK; else echo CONNECT-FAIL; fi" \
        2>/dev/null || true)
    case "$out" in
        *CONNECT-OK*) echo allowed ;;
        *CONNECT-FAIL*) echo blocked ;;
        *) echo error ;;
    esac
}

# expect_eventually allowed|blocked WHAT NS LABELS TARGET PORT [TIMEOUT]:
# policy changes take effect asynchronously: poll until the expectation holds.
expect_eventually() {
    local want=$1 what=$2 ns=$3 labels=$4 target=$5 port=$6 timeout=${7:-60}
    local deadline=$((SECONDS + timeout)) got
    while :; do
        got=$(probe "$ns" "$labels" "$target" "$port")
        if [[ "$got" == "$want" ]]; then
            pass "$what: $want"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            fail "$what: expected $want, still $got after ${timeout}s"
            return 1
        fi
        sleep 3
    done
}

serve_nginx() { # serve_nginx NS NAME LABEL_KEY LABEL_VALUE
    k -n "$1" apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $2
spec:
  replicas: 2
  selector:
    matchLabels: {$3: $4}
  template:
    metadata:
      labels: {$3: $4}
    spec:
      containers:
        - name: nginx
          image: $NGINX
          ports: [{containerPort: 80}]
          readinessProbe:
            tcpSocket: {port: 80}
---
apiVersion: v1
kind: Service
metadata:
  name: $2
spec:
  selector: {$3: $4}
  ports: [{port: 80, targetPort: 80}]
EOF
    k -n "$1" rollout status "deployment/$2" --timeout=3m
}

# ---------------------------------------------------------------------------
# Control experiment: without Palisade, nothing enforces NetworkPolicy.
# ---------------------------------------------------------------------------
log "control experiment: a deny-all policy must have NO effect before Palisade is installed"
k create namespace palisade-control
serve_nginx palisade-control web app web
k -n palisade-control apply -f - <<'EOF'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
spec:
  podSelector: {}
  policyTypes: [Ingress]
EOF
sleep 10
if [[ "$(probe palisade-control "" web 80)" == allowed ]]; then
    pass "control: cluster does not enforce NetworkPolicy without Palisade"
else
    fail "control: traffic is blocked WITHOUT Palisade: something else enforces NetworkPolicy"
    die "the cluster enforces NetworkPolicy on its own (kindnetd image not replaced?); results would not test Palisade"
fi
k delete namespace palisade-control --wait=true

# ---------------------------------------------------------------------------
# Install Palisade
# ---------------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building $IMAGE_REPO:$IMAGE_TAG"
    DOCKER_BUILDKIT=1 docker build -t "$IMAGE_REPO:$IMAGE_TAG" "$ROOT"
fi
kind load docker-image "$IMAGE_REPO:$IMAGE_TAG" --name "$CLUSTER"

log "helm install palisade"
cat >"$ARTIFACTS/values.yaml" <<EOF
image:
  repository: $IMAGE_REPO
  tag: "$IMAGE_TAG"
  pullPolicy: Never   # side-loaded with kind load docker-image
logLevel: info,palisade=debug
EOF
(cd "$ROOT" && "$HELM" install palisade ./charts/palisade -n "$NS" \
    -f "$ARTIFACTS/values.yaml" --wait --timeout 5m)
k -n "$NS" rollout status daemonset/palisade --timeout=5m
ready=$(k -n "$NS" get daemonset palisade -o jsonpath='{.status.numberReady}')
if [[ "$ready" == "${#NODES[@]}" ]]; then
    pass "DaemonSet palisade Ready on all ${#NODES[@]} nodes"
else
    fail "DaemonSet palisade Ready on $ready of ${#NODES[@]} nodes"
fi

# ---------------------------------------------------------------------------
# Upstream NetworkPolicy e2e tests
# ---------------------------------------------------------------------------
if [[ "${SKIP_UPSTREAM_E2E:-0}" != 1 ]]; then
    server_version=$(k get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')
    [[ "$server_version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot parse server version: $server_version"
    bin_dir="${PALISADE_CACHE_DIR:-/var/cache/palisade}/kubernetes-test-$server_version"
    if [[ ! -x "$bin_dir/e2e.test" ]]; then
        log "downloading kubernetes-test-linux-amd64.tar.gz $server_version"
        mkdir -p "$bin_dir"
        curl -fsSL --retry 3 "https://dl.k8s.io/$server_version/kubernetes-test-linux-amd64.tar.gz" \
            | tar -xz -C "$bin_dir" --strip-components=3 \
                kubernetes/test/bin/e2e.test kubernetes/test/bin/ginkgo
    fi
    log "running upstream e2e: focus=$E2E_FOCUS skip=$E2E_SKIP parallel=$E2E_PARALLEL"
    export KUBERNETES_CONFORMANCE_TEST=y
    e2e_args=(--kubeconfig="$KUBECONFIG_FILE" --provider=local --dump-logs-on-failure=false
        --disable-log-dump=true --report-dir="$ARTIFACTS")
    e2e_rc=0
    if ((E2E_PARALLEL > 1)); then
        # The ginkgo CLI spreads specs over processes; its --focus/--skip are
        # e2e.test's --ginkgo.focus/--ginkgo.skip.
        "$bin_dir/ginkgo" --nodes="$E2E_PARALLEL" --timeout=75m \
            --focus="$E2E_FOCUS" --skip="$E2E_SKIP" \
            "$bin_dir/e2e.test" -- "${e2e_args[@]}" || e2e_rc=$?
    else
        "$bin_dir/e2e.test" --ginkgo.focus="$E2E_FOCUS" --ginkgo.skip="$E2E_SKIP" \
            --ginkgo.timeout=75m "${e2e_args[@]}" || e2e_rc=$?
    fi
    if ((e2e_rc == 0)); then
        pass "upstream NetworkPolicy e2e ($server_version)"
    else
        fail "upstream NetworkPolicy e2e ($server_version), exit $e2e_rc (junit in $ARTIFACTS)"
    fi
fi

# ---------------------------------------------------------------------------
# Seed walkthrough (integration/seed/)
# ---------------------------------------------------------------------------
log "seed walkthrough: nginx in default, DefaultDeny annotation, access-nginx"
serve_nginx default nginx run nginx
expect_eventually allowed "before isolation, busybox -> nginx:80" default "" nginx 80
k apply -f "$ROOT/integration/seed/default-deny-annotation.yaml"
expect_eventually blocked "namespace default DefaultDeny, busybox -> nginx:80" default "" nginx 80
"$HERE/seed-to-v1.sh" "$ROOT/integration/seed/access-nginx.yaml" | k apply -f -
expect_eventually allowed "access-nginx, busybox access=true -> nginx:80" default access=true nginx 80
expect_eventually blocked "access-nginx, busybox without access=true -> nginx:80" default "" nginx 80

log "seed walkthrough: sock-shop front-end"
k create namespace sock-shop
serve_nginx sock-shop front-end name front-end
serve_nginx sock-shop catalogue name catalogue
k annotate namespace sock-shop --overwrite \
    'net.beta.kubernetes.io/network-policy={"ingress": {"isolation": "DefaultDeny"}}'
expect_eventually blocked "sock-shop DefaultDeny, default -> front-end:80" default access=true \
    front-end.sock-shop.svc.cluster.local 80
"$HERE/seed-to-v1.sh" "$ROOT/integration/seed/front-end-access.yaml" | k apply -f -
expect_eventually allowed "front-end-access, default -> front-end:80" default "" \
    front-end.sock-shop.svc.cluster.local 80
expect_eventually allowed "front-end-access, sock-shop -> front-end:80" sock-shop "" front-end 80
expect_eventually blocked "front-end-access does not open catalogue:80" sock-shop "" catalogue 80

# Back to a plain namespace for anything that runs after us.
k annotate namespace default net.beta.kubernetes.io/network-policy- >/dev/null

# ---------------------------------------------------------------------------
# Agent health
# ---------------------------------------------------------------------------
restarts=$(k -n "$NS" get pods -l app.kubernetes.io/name=palisade \
    -o jsonpath='{range .items[*]}{.status.containerStatuses[0].restartCount}{"\n"}{end}' \
    | awk '{s += $1} END {print s + 0}')
if [[ "$restarts" == 0 ]]; then pass "no agent restarts"; else fail "agent restarts: $restarts"; fi
node_ip=$(k get node "${NODES[0]}" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
if metrics=$(k run "metrics-$RANDOM" -n default --image="$BUSYBOX" --restart=Never --rm -i --quiet \
    -- wget -qO- "http://$node_ip:9617/metrics" 2>/dev/null) \
    && grep -q '^palisade_syncs_total' <<<"$metrics"; then
    pass "metrics served on $node_ip:9617"
    grep -E '^palisade_(sync_errors_total|policies|policies_invalid|drift_repairs_total)' <<<"$metrics" || true
else
    fail "metrics not served on $node_ip:9617"
fi

# ---------------------------------------------------------------------------
# Uninstall with cleanupOnUninstall: no PAL- chain left on any node
# ---------------------------------------------------------------------------
log "uninstall with cleanupOnUninstall=true"
(cd "$ROOT" && "$HELM" upgrade palisade ./charts/palisade -n "$NS" --reuse-values \
    --set cleanupOnUninstall=true --wait --timeout 5m)
"$HELM" uninstall palisade -n "$NS" --wait --timeout 5m
k -n "$NS" wait --for=delete pod -l app.kubernetes.io/name=palisade --timeout=3m || true
for node in "${NODES[@]}"; do
    left=$(docker exec "$node" sh -c 'iptables-save -t filter; ip6tables-save -t filter' 2>/dev/null \
        | grep -cE '^:PAL-|-j PAL-' || true)
    if [[ "$left" == 0 ]]; then
        pass "$node: no PAL- chains or jumps after uninstall"
    else
        fail "$node: $left PAL- chain/jump lines left after uninstall"
    fi
done

# on_exit prints the summary and cleans up.
((failed == 0))
