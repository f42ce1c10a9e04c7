#!/usr/bin/env bash
# Mark a Pod object Running with the given IP(s), as a kubelet would.
#
# Usage:
#   set-pod-status.sh KUBECONFIG NAMESPACE NAME IP [IP6]
#
# There is no kubelet in the test cluster, so pod IPs must be written by the
# test. This PATCHes /api/v1/namespaces/NS/pods/NAME/status (merge patch)
# directly with curl, using the server, CA and credentials of the current
# context of KUBECONFIG (token or client certificate), so it works whatever
# the kubectl version (`kubectl patch --subresource` only exists in newer
# clients). Prints the resulting pod status JSON on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

(($# == 4 || $# == 5)) || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
KCFG=$1 NS=$2 NAME=$3 IP=$4 IP6=${5:-}
ensure_cmd kubectl kubernetes-client
ensure_cmd curl curl

cfg() { kubectl --kubeconfig "$KCFG" config view --raw --minify -o "jsonpath=$1"; }
server=$(cfg '{.clusters[0].cluster.server}')
[[ -n "$server" ]] || die "no server in the current context of $KCFG"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl_args=(-fsS --max-time 20 -X PATCH -H 'Content-Type: application/merge-patch+json')

ca_data=$(cfg '{.clusters[0].cluster.certificate-authority-data}')
ca_file=$(cfg '{.clusters[0].cluster.certificate-authority}')
if [[ -n "$ca_data" ]]; then
    base64 -d <<<"$ca_data" >"$tmp/ca.crt"
    curl_args+=(--cacert "$tmp/ca.crt")
elif [[ -n "$ca_file" ]]; then
    curl_args+=(--cacert "$ca_file")
fi

token=$(cfg '{.users[0].user.token}')
cert_data=$(cfg '{.users[0].user.client-certificate-data}')
if [[ -n "$token" ]]; then
    # Via a header file so the token does not show up in `ps`.
    printf 'Authorization: Bearer %s\n' "$token" >"$tmp/auth.hdr"
    curl_args+=(-H "@$tmp/auth.hdr")
elif [[ -n "$cert_data" ]]; then
    base64 -d <<<"$cert_data" >"$tmp/client.crt"
    base64 -d <<<"$(cfg '{.users[0].user.client-key-data}')" >"$tmp/client.key"
    curl_args+=(--cert "$tmp/client.crt" --key "$tmp/client.key")
else
    die "current context of $KCFG has neither a token nor client-certificate-data"
fi

pod_ips="{\"ip\":\"$IP\"}"
[[ -z "$IP6" ]] || pod_ips+=",{\"ip\":\"$IP6\"}"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# A running, ready status per container, so `kubectl get pods` shows 1/1 and
# anything that checks container readiness sees what a kubelet would report.
containers=$(kubectl --kubeconfig "$KCFG" -n "$NS" get pod "$NAME" \
    -o jsonpath='{range .spec.containers[*]}{.name}{" "}{.image}{"\n"}{end}') \
    || die "cannot read pod $NS/$NAME"
container_statuses=""
while read -r cname cimage; do
    [[ -n "$cname" ]] || continue
    [[ -z "$container_statuses" ]] || container_statuses+=","
    container_statuses+="{\"name\":\"$cname\",\"image\":\"$cimage\",\"imageID\":\"\",\"ready\":true,\"started\":true,\"restartCount\":0,\"state\":{\"running\":{\"startedAt\":\"$now\"}}}"
done <<<"$containers"

patch=$(cat <<JSON
{"status":{"phase":"Running","podIP":"$IP","podIPs":[$pod_ips],"startTime":"$now",
 "conditions":[{"type":"Initialized","status":"True","lastTransitionTime":"$now"},
               {"type":"Ready","status":"True","lastTransitionTime":"$now"},
               {"type":"ContainersReady","status":"True","lastTransitionTime":"$now"},
               {"type":"PodScheduled","status":"True","lastTransitionTime":"$now"}],
 "containerStatuses":[$container_statuses]}}
JSON
)
curl "${curl_args[@]}" --data-binary "$patch" \
    "$server/api/v1/namespaces/$NS/pods/$NAME/status" >"$tmp/out.json" \
    || die "PATCH of pods/$NAME status in namespace $NS failed"
kubectl --kubeconfig "$KCFG" -n "$NS" get pod "$NAME" -o jsonpath='{.status}'
echo
