#!/usr/bin/env bash
# Print a seed manifest (integration/seed/*.yaml) converted to today's API.
#
# Usage: integration/chart/seed-to-v1.sh FILE
#
# The seed NetworkPolicies use the pre-1.16 API (extensions/v1beta1, lowercase
# protocols), which current clusters no longer serve. networking.k8s.io/v1 has
# the same fields; only the apiVersion and the protocol's case differ. Other
# objects (the Namespace with the legacy DefaultDeny annotation) pass through.
set -euo pipefail
(($# == 1)) || { echo "usage: $0 FILE" >&2; exit 2; }
sed -e 's#^apiVersion: extensions/v1beta1$#apiVersion: networking.k8s.io/v1#' \
    -e 's#^\([[:space:]-]*protocol:[[:space:]]*\)tcp$#\1TCP#' \
    -e 's#^\([[:space:]-]*protocol:[[:space:]]*\)udp$#\1UDP#' \
    -e 's#^\([[:space:]-]*protocol:[[:space:]]*\)sctp$#\1SCTP#' "$1"
