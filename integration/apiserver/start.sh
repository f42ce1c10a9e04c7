#!/usr/bin/env bash
# Start etcd + a real kube-apiserver v1.20.2 for one test.
#
# Usage:
#   start.sh --dir DIR [--bind-address ADDR] [--port PORT]
#
#   --dir DIR            fresh per-test working directory (created if missing;
#                        must not have been used by a previous start.sh).
#                        Holds certs, etcd data, logs, pid files, kubeconfig.
#   --bind-address ADDR  address the apiserver listens on and advertises
#                        (default 127.0.0.1). Give an address of a veth/dummy
#                        interface so node network namespaces can reach it.
#   --port PORT          apiserver secure port (default: a free port).
#   --apiserver-arg ARG  extra kube-apiserver flag, repeatable, e.g.
#                        --apiserver-arg=--feature-gates=SomeGate=true
#
# etcd always listens on free 127.0.0.1 ports (only the apiserver talks to it).
#
# Output: on success, stdout carries `export VAR='value'` lines, also written
# to DIR/env, so callers can `eval "$(start.sh --dir D)"` or `. D/env`:
#   KUBECONFIG                       DIR/admin.kubeconfig (admin token, CA embedded)
#   PALISADE_APISERVER_DIR           DIR
#   PALISADE_APISERVER_URL           https://ADDR:PORT
#   PALISADE_APISERVER_ADDRESS       ADDR
#   PALISADE_APISERVER_PORT          PORT
#   PALISADE_APISERVER_TOKEN         admin bearer token (user "admin", group system:masters)
#   PALISADE_APISERVER_CA_FILE       DIR/pki/ca.crt (signs serving + client certs)
#   PALISADE_APISERVER_CA_KEY_FILE   DIR/pki/ca.key (mint client certs, e.g. CN=system:node:X)
#   PALISADE_ETCD_URL                http://127.0.0.1:N
# Progress and errors go to stderr. Exit status non-zero on failure, in which
# case nothing is left running (logs stay in DIR).
#
# Environment:
#   PALISADE_APISERVER_TIMEOUT  seconds to wait for /readyz (default 60)
#   PALISADE_APISERVER_BIN      use this binary instead of build.sh's cache
#   PALISADE_CACHE_DIR          see build.sh
#
# Stop with stop.sh --dir DIR; restart only the apiserver with
# restart-apiserver.sh --dir DIR.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

DIR="" ADDR=127.0.0.1 PORT=""
EXTRA_ARGS=()
while (($#)); do
    case "$1" in
        --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
        --dir=*) DIR=${1#*=}; shift ;;
        --bind-address) ADDR=${2:?--bind-address needs a value}; shift 2 ;;
        --bind-address=*) ADDR=${1#*=}; shift ;;
        --port) PORT=${2:?--port needs a value}; shift 2 ;;
        --port=*) PORT=${1#*=}; shift ;;
        --apiserver-arg) EXTRA_ARGS+=("${2:?--apiserver-arg needs a value}"); shift 2 ;;
        --apiserver-arg=*) EXTRA_ARGS+=("${1#*=}"); shift ;;
        -h|--help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
[[ -n "$DIR" ]] || { log "--dir is required"; usage; }
[[ -z "$PORT" || "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number"

ensure_cmd etcd etcd-server
ensure_cmd openssl openssl
ensure_cmd curl curl
ensure_cmd ss iproute2
ensure_cmd setsid util-linux

mkdir -p "$DIR"
# Absolute, canonical path: it is embedded in every daemon's command line,
# which is how stop.sh recognises our processes.
DIR=$(cd "$DIR" && pwd -P)
[[ ! -e "$DIR/etcd" && ! -e "$DIR/apiserver.args" ]] \
    || die "$DIR was already used by start.sh; give a fresh --dir (or use restart-apiserver.sh)"

APISERVER_BIN=${PALISADE_APISERVER_BIN:-}
if [[ -z "$APISERVER_BIN" ]]; then
    APISERVER_BIN=$("$HERE/build.sh" | tail -n 1)
fi
[[ -x "$APISERVER_BIN" ]] || die "kube-apiserver binary not executable: $APISERVER_BIN"

t_start=$(date +%s.%N)
started_ok=0
on_exit() {
    # Never leave half a cluster running after a failed start.
    if [[ $started_ok != 1 ]]; then
        stop_pidfile "$DIR/apiserver.pid" "$DIR" kube-apiserver 5 || true
        stop_pidfile "$DIR/etcd.pid" "$DIR" etcd 5 || true
    fi
}
trap on_exit EXIT

# ---------------------------------------------------------------------------
# PKI, generated per test. ECDSA P-256 rather than RSA: five RSA-2048 keys
# cost ~2 s of a loaded 2-core machine, EC keys are instant, and Go, kubectl,
# curl and rustls all accept them (service-account tokens become ES256).
# ---------------------------------------------------------------------------
PKI="$DIR/pki"
mkdir -p "$PKI"
chmod 700 "$PKI"
ossl() { openssl "$@" 2>>"$DIR/openssl.log"; }

ossl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -days 3650 \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=palisade-test-ca"

# The serving cert must be valid for ADDR (tests reach it over a veth), for
# loopback and for the in-cluster names/ClusterIP of the kubernetes Service.
SERVICE_CIDR=10.96.0.0/12
SERVICE_IP=10.96.0.1
cat >"$PKI/serving.ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:$ADDR,IP:127.0.0.1,DNS:localhost,IP:$SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
ossl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$PKI/serving.key" -out "$PKI/serving.csr" -subj "/CN=kube-apiserver"
ossl x509 -req -in "$PKI/serving.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/serving.ext" -out "$PKI/serving.crt"

# Admin client certificate (--client-ca-file is set), for tools that prefer
# cert auth; the kubeconfig uses the token.
cat >"$PKI/client.ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EOF
ossl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$PKI/admin.key" -out "$PKI/admin.csr" -subj "/O=system:masters/CN=admin"
ossl x509 -req -in "$PKI/admin.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/client.ext" -out "$PKI/admin.crt"

# Service-account token signing key pair (TokenRequest API works with it).
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$PKI/sa.key"
ossl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"

TOKEN=$(openssl rand -hex 24)
printf '%s,admin,admin-uid,"system:masters"\n' "$TOKEN" >"$DIR/tokens.csv"
chmod 600 "$DIR/tokens.csv"

write_env() { # write_env PORT ETCD_URL
    local url
    url="https://$(url_host "$ADDR"):$1"
    {
        printf "export KUBECONFIG='%s'\n" "$DIR/admin.kubeconfig"
        printf "export PALISADE_APISERVER_DIR='%s'\n" "$DIR"
        printf "export PALISADE_APISERVER_URL='%s'\n" "$url"
        printf "export PALISADE_APISERVER_ADDRESS='%s'\n" "$ADDR"
        printf "export PALISADE_APISERVER_PORT='%s'\n" "$1"
        printf "export PALISADE_APISERVER_TOKEN='%s'\n" "$TOKEN"
        printf "export PALISADE_APISERVER_CA_FILE='%s'\n" "$PKI/ca.crt"
        printf "export PALISADE_APISERVER_CA_KEY_FILE='%s'\n" "$PKI/ca.key"
        printf "export PALISADE_ETCD_URL='%s'\n" "$2"
    } >"$DIR/env"
    cat >"$DIR/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: palisade-test
  cluster:
    server: $url
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: palisade-test
  context:
    cluster: palisade-test
    user: admin
current-context: palisade-test
EOF
    chmod 600 "$DIR/admin.kubeconfig"
}

# ---------------------------------------------------------------------------
# etcd. Retry with new ports if a parallel test grabbed ours in between.
# ---------------------------------------------------------------------------
ETCD_URL=""
for attempt in 1 2 3 4 5; do
    client_port=$(pick_free_port)
    peer_port=$(pick_free_port)
    [[ $client_port != "$peer_port" ]] || continue
    ETCD_URL="http://127.0.0.1:$client_port"
    peer_url="http://127.0.0.1:$peer_port"
    rm -rf "$DIR/etcd" "$DIR/etcd.log"
    pid=$(spawn_daemon "$DIR/etcd.log" etcd \
        --name palisade \
        --data-dir "$DIR/etcd" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
        --initial-cluster "palisade=$peer_url" --initial-cluster-state new \
        --logger zap --log-level warn)
    echo "$pid" >"$DIR/etcd.pid"
    log "etcd pid $pid on $ETCD_URL (attempt $attempt)"
    etcd_ok=0
    for ((i = 0; i < 150; i++)); do
        if curl -fsS --max-time 1 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'; then
            etcd_ok=1
            break
        fi
        pid_is_ours "$pid" "$DIR" || break
        sleep 0.1
    done
    ((etcd_ok)) && break
    stop_pidfile "$DIR/etcd.pid" "$DIR" etcd 5
    grep -q 'address already in use' "$DIR/etcd.log" && { ETCD_URL=""; continue; }
    tail_log "$DIR/etcd.log" etcd
    die "etcd did not become healthy"
done
[[ -n "$ETCD_URL" && -f "$DIR/etcd.pid" ]] || die "could not start etcd on a free port"

# ---------------------------------------------------------------------------
# kube-apiserver
# ---------------------------------------------------------------------------
auto_port=0
[[ -n "$PORT" ]] || auto_port=1
for attempt in 1 2 3 4 5; do
    ((auto_port)) && PORT=$(pick_free_port)
    write_env "$PORT" "$ETCD_URL"
    # One argument per line: restart-apiserver.sh replays exactly these.
    cat >"$DIR/apiserver.args" <<EOF
$APISERVER_BIN
--etcd-servers=$ETCD_URL
--bind-address=$ADDR
--advertise-address=$ADDR
--secure-port=$PORT
--insecure-port=0
--cert-dir=$PKI
--tls-cert-file=$PKI/serving.crt
--tls-private-key-file=$PKI/serving.key
--client-ca-file=$PKI/ca.crt
--token-auth-file=$DIR/tokens.csv
--authorization-mode=Node,RBAC
--service-account-key-file=$PKI/sa.pub
--service-account-signing-key-file=$PKI/sa.key
--service-account-issuer=https://kubernetes.default.svc.cluster.local
--api-audiences=https://kubernetes.default.svc.cluster.local
--service-cluster-ip-range=$SERVICE_CIDR
--disable-admission-plugins=ServiceAccount
--allow-privileged=true
--profiling=false
--v=1
EOF
    # Endpoints may not contain loopback IPs, so on 127.x the endpoint
    # reconciler would log a validation error every 10 s; the Service itself
    # is still created. A veth/dummy address gets real endpoints.
    if [[ "$ADDR" == 127.* || "$ADDR" == ::1 ]]; then
        echo "--endpoint-reconciler-type=none" >>"$DIR/apiserver.args"
    fi
    if ((${#EXTRA_ARGS[@]})); then
        printf '%s\n' "${EXTRA_ARGS[@]}" >>"$DIR/apiserver.args"
    fi
    rc=0
    launch_apiserver "$DIR" || rc=$?
    ((rc == 0)) && break
    ((rc == 2 && auto_port)) || die "port $PORT on $ADDR is already in use"
    log "port $PORT was taken, retrying with another one"
done
((rc == 0)) || die "could not start kube-apiserver on a free port"

# 1.20 does not label namespaces with kubernetes.io/metadata.name (that
# arrived in 1.21); NetworkPolicy namespaceSelectors in tests rely on it.
"$HERE/label-namespaces.sh" "$DIR/admin.kubeconfig" default kube-system kube-public kube-node-lease >&2

started_ok=1
log "up in $(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s: $(grep APISERVER_URL= "$DIR/env" | cut -d"'" -f2) (dir $DIR)"
cat "$DIR/env"
