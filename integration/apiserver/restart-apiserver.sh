#!/usr/bin/env bash
# (Re)start only the kube-apiserver of a start.sh DIR, with identical flags.
#
# Usage:
#   restart-apiserver.sh --dir DIR
#
#   Stops the apiserver if it runs (etcd keeps running), starts it again from
#   DIR/apiserver.args (same address, port, certs, tokens) and waits for
#   /readyz like start.sh (PALISADE_APISERVER_TIMEOUT, default 60 s). Works
#   after `stop.sh --dir DIR --only-apiserver` too. Prints nothing on stdout;
#   DIR/env and DIR/admin.kubeconfig stay valid.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

DIR=""
while (($#)); do
    case "$1" in
        --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
        --dir=*) DIR=${1#*=}; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ -n "$DIR" ]] || die "--dir is required"
DIR=$(cd "$DIR" && pwd -P)
[[ -f "$DIR/apiserver.args" && -f "$DIR/env" ]] || die "$DIR was not set up by start.sh"
if [[ ! -f "$DIR/etcd.pid" ]] || ! pid_is_ours "$(cat "$DIR/etcd.pid")" "$DIR"; then
    die "etcd of $DIR is not running; use stop.sh + start.sh with a fresh dir"
fi

stop_pidfile "$DIR/apiserver.pid" "$DIR" kube-apiserver 10
rc=0
launch_apiserver "$DIR" || rc=$?
# The port is fixed now (clients hold it), so "in use" is a plain failure.
((rc == 0)) || { tail_log "$DIR/apiserver.log" kube-apiserver; die "kube-apiserver could not bind its port again"; }
