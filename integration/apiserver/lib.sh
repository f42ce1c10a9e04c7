# shellcheck shell=bash
# Shared helpers for start.sh / stop.sh / restart-apiserver.sh.
# Sourced, not executed. Callers have `set -euo pipefail`.
#
# Layout of a test DIR (created by start.sh):
#   DIR/pki/            CA, serving cert, service-account keys, admin client cert
#   DIR/tokens.csv      static token file (admin token, group system:masters)
#   DIR/etcd/           etcd data dir
#   DIR/etcd.log        etcd output
#   DIR/etcd.pid        etcd pid (also its process group id)
#   DIR/apiserver.args  kube-apiserver argv, one argument per line (reused by restart)
#   DIR/apiserver.log   kube-apiserver output (appended across restarts)
#   DIR/apiserver.pid   kube-apiserver pid
#   DIR/admin.kubeconfig
#   DIR/env             `export VAR=value` lines (same as start.sh's stdout)

log() { printf '[apiserver/%s] %s\n' "${LOG_TAG:-$(basename "$0" .sh)}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Install Debian packages only when a command is missing; CI machines are
# fresh, developer machines usually already have them.
ensure_cmd() { # ensure_cmd COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >&2 \
        || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y --no-install-recommends "$2" >&2; }
}

# True if PID is alive AND is one of ours: its command line mentions DIR/
# (every daemon argument list has paths below DIR; the slash keeps /x/t1
# from matching /x/t10).
# Guards against killing an unrelated process that reused a stale pid.
pid_is_ours() { # pid_is_ours PID DIR
    local pid=$1 dir=$2
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    # Zombies (already exited, not yet reaped) count as gone.
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/"
}

# Stop the process recorded in PIDFILE: SIGTERM, wait, then SIGKILL.
# Idempotent: a missing pid file or dead process is fine.
stop_pidfile() { # stop_pidfile PIDFILE DIR NAME [GRACE_SECONDS]
    local pidfile=$1 dir=$2 name=$3 grace=${4:-10} pid i
    [[ -f "$pidfile" ]] || return 0
    pid=$(cat "$pidfile")
    if pid_is_ours "$pid" "$dir"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < grace * 10; i++)); do
            pid_is_ours "$pid" "$dir" || break
            sleep 0.1
        done
        if pid_is_ours "$pid" "$dir"; then
            log "$name (pid $pid) ignored SIGTERM for ${grace}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                pid_is_ours "$pid" "$dir" || break
                sleep 0.1
            done
            pid_is_ours "$pid" "$dir" && die "$name (pid $pid) survived SIGKILL"
        fi
    fi
    rm -f "$pidfile"
}

# Start a daemon fully detached from the caller: own session (so a Ctrl-C or
# a test harness killing its process group does not take it down half-way),
# stdin from /dev/null and stdout/stderr to a log, so a caller that captures
# our stdout does not block forever waiting for EOF on a pipe the daemon
# inherited. Prints the pid.
spawn_daemon() { # spawn_daemon LOGFILE CMD ARGS...
    local logfile=$1
    shift
    # setsid execs in place (no fork) because a background job of a
    # non-interactive shell is not a process group leader: $! is the daemon.
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    echo $!
}

url_host() { # IPv6 literals need brackets in URLs
    if [[ "$1" == *:* ]]; then printf '[%s]' "$1"; else printf '%s' "$1"; fi
}

# Pick a TCP port nobody listens on. Stays below the default ephemeral range
# (32768+) so outgoing connections are unlikely to hold it; the remaining
# race with parallel tests is handled by retrying on "address in use".
pick_free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        if [[ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]]; then
            echo "$p"
            return 0
        fi
    done
    die "no free TCP port found"
}

tail_log() { # tail_log FILE NAME
    log "---- last 40 lines of $2 log ($1) ----"
    tail -n 40 "$1" >&2 2>/dev/null || true
    log "---- end of $2 log ----"
}

# Start kube-apiserver from DIR/apiserver.args and wait for /readyz.
# Returns 2 (without dying) if it exited because its port was taken, so
# start.sh can retry with another port; dies on any other failure.
launch_apiserver() { # launch_apiserver DIR
    local dir=$1 timeout=${PALISADE_APISERVER_TIMEOUT:-60} pid url token t0 log_offset
    # shellcheck disable=SC1091
    source "$dir/env"
    url=$PALISADE_APISERVER_URL
    token=$PALISADE_APISERVER_TOKEN
    local -a args
    mapfile -t args <"$dir/apiserver.args"
    # Remember where this run's output starts, for error reporting on restart.
    log_offset=$(stat -c %s "$dir/apiserver.log" 2>/dev/null || echo 0)
    pid=$(spawn_daemon "$dir/apiserver.log" "${args[@]}")
    echo "$pid" >"$dir/apiserver.pid"
    log "kube-apiserver pid $pid, waiting for $url/readyz (timeout ${timeout}s)"
    t0=$(date +%s.%N)
    while :; do
        if curl -fsS -o /dev/null --max-time 2 --cacert "$dir/pki/ca.crt" \
            -H "Authorization: Bearer $token" "$url/readyz" 2>/dev/null; then
            log "kube-apiserver ready after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"
            return 0
        fi
        if ! pid_is_ours "$pid" "$dir"; then
            wait "$pid" 2>/dev/null || true
            rm -f "$dir/apiserver.pid"
            if tail -c +"$((log_offset + 1))" "$dir/apiserver.log" | grep -q 'address already in use'; then
                return 2
            fi
            tail_log "$dir/apiserver.log" kube-apiserver
            die "kube-apiserver exited during startup"
        fi
        if (($(date +%s) - ${t0%.*} >= timeout)); then
            tail_log "$dir/apiserver.log" kube-apiserver
            stop_pidfile "$dir/apiserver.pid" "$dir" kube-apiserver 5
            die "kube-apiserver not ready within ${timeout}s at $url/readyz"
        fi
        sleep 0.2
    done
}
