#!/usr/bin/env bash
# Stop what start.sh started.
#
# Usage:
#   stop.sh --dir DIR [--only-apiserver]
#
#   Sends SIGTERM, waits up to 10 s, then SIGKILL, and waits for the
#   processes to be gone. Idempotent: fine to call twice, or on a DIR whose
#   start.sh failed. --only-apiserver leaves etcd (and so all cluster state)
#   running; bring the apiserver back with restart-apiserver.sh --dir DIR.
#   Only processes whose command line contains DIR are signalled, so a stale
#   pid file can never hit an unrelated process. DIR itself is left in place
#   (logs); the caller removes it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

DIR="" ONLY_APISERVER=0
while (($#)); do
    case "$1" in
        --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
        --dir=*) DIR=${1#*=}; shift ;;
        --only-apiserver) ONLY_APISERVER=1; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ -n "$DIR" ]] || die "--dir is required"
[[ -d "$DIR" ]] || { log "$DIR does not exist, nothing to stop"; exit 0; }
DIR=$(cd "$DIR" && pwd -P)

# Apiserver first: stopping etcd under a running apiserver only produces
# noise in its log.
stop_pidfile "$DIR/apiserver.pid" "$DIR" kube-apiserver 10
((ONLY_APISERVER)) || stop_pidfile "$DIR/etcd.pid" "$DIR" etcd 10
