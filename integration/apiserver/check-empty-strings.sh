#!/usr/bin/env bash
# Check that the API server treats the empty string "" as a string, not null.
#
# Usage: integration/apiserver/check-empty-strings.sh [KUBECONFIG]
#
#   KUBECONFIG defaults to $KUBECONFIG (start.sh exports it). Prints one
#   PASS/FAIL line per check on stdout and exits non-zero if any failed.
#
# Guards build.sh's null-check fix: kube-apiserver 1.20 built with Go >= 1.16
# otherwise rejects CRDs with `default: ""` (prometheus-operator's
# ServiceMonitor CRD >= v0.75) and custom resources with "" fields
# (ServiceMonitor `jobLabel: ""`, Calico `selector: ""`) with
# `Invalid value: "null": ... must be of type string: "null"`.
#
# Checks: (a) a CRD whose schema has `default: ""` is accepted; (b) a custom
# resource with a string field set to "" is accepted and reads back as "",
# and a defaulted `default: ""` field reads back as ""; (c) a type error
# (integer for a string field) is still rejected; (d) /readyz is ok.
# Creates the cluster-scoped CRD emptystrings.palisade.test and deletes it
# again on exit, so it can run against a cluster other tests use.
set -uo pipefail

export KUBECONFIG="${1:-${KUBECONFIG:?give a KUBECONFIG argument or export KUBECONFIG}}"
[[ -r "$KUBECONFIG" ]] || { echo "FAIL kubeconfig $KUBECONFIG not readable"; exit 2; }
command -v kubectl >/dev/null || { echo "FAIL kubectl not found"; exit 2; }

readonly CRD=emptystrings.palisade.test
failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
cleanup() { kubectl delete crd "$CRD" --ignore-not-found --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
# A CRD still terminating from an earlier run would make the create fail.
kubectl wait --for=delete "crd/$CRD" --timeout=60s >/dev/null 2>&1 || true

# (d) first: nothing else means much if the server is not ready.
readyz=$(kubectl get --raw /readyz 2>&1)
if [[ "$readyz" == ok ]]; then pass "(d) /readyz: ok"; else fail "(d) /readyz: $readyz"; fi

# (a) `default: ""`, at the top of spec and nested the way
# prometheus-operator's SecretKeySelector has it (properties[name].default).
crd_out=$(kubectl create -f - 2>&1 <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: $CRD
spec:
  group: palisade.test
  scope: Cluster
  names: {plural: emptystrings, singular: emptystring, kind: EmptyString, listKind: EmptyStringList}
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
            properties:
              label: {type: string}
              jobLabel: {type: string, default: ""}
              count: {type: integer}
              secretRef:
                type: object
                properties:
                  name: {type: string, default: ""}
                  key: {type: string}
EOF
)
if [[ $? == 0 ]]; then
    pass "(a) CRD with default: \"\" accepted"
else
    fail "(a) CRD with default: \"\" rejected: $crd_out"
    echo "FAIL $failures check(s) failed (remaining checks need the CRD)"
    exit 1
fi
if ! kubectl wait --for=condition=Established "crd/$CRD" --timeout=60s >/dev/null 2>&1; then
    fail "(a) CRD $CRD not Established within 60s"
    exit 1
fi
# Established can precede the discovery/handler update by a moment.
for _ in $(seq 50); do
    kubectl get emptystrings.palisade.test >/dev/null 2>&1 && break
    sleep 0.2
done

# (b) "" in a custom resource, explicit and defaulted.
cr_out=$(kubectl create -f - 2>&1 <<'EOF'
apiVersion: palisade.test/v1
kind: EmptyString
metadata: {name: explicit}
spec:
  label: ""
  secretRef: {key: ""}
EOF
)
if [[ $? == 0 ]]; then
    pass "(b) custom resource with label: \"\" accepted"
    got=$(kubectl get emptystrings.palisade.test explicit -o json 2>&1)
    check_field() {
        local path=$1 v
        v=$(printf '%s' "$got" | python3 -c '
import json, sys
o = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    if not isinstance(o, dict) or k not in o:
        print("<missing>"); sys.exit()
    o = o[k]
print(json.dumps(o))' "$path" 2>&1)
        if [[ "$v" == '""' ]]; then pass "(b) $path reads back as \"\""; else fail "(b) $path reads back as $v"; fi
    }
    check_field spec.label
    check_field spec.secretRef.key
    check_field spec.jobLabel        # defaulted from default: ""
    check_field spec.secretRef.name  # defaulted, nested
else
    fail "(b) custom resource with label: \"\" rejected: $cr_out"
fi

# (c) schema type errors must still be caught.
bad_out=$(kubectl create -f - 2>&1 <<'EOF'
apiVersion: palisade.test/v1
kind: EmptyString
metadata: {name: wrong-type}
spec:
  label: 5
EOF
)
if [[ $? != 0 && "$bad_out" == *"must be of type string"* ]]; then
    pass "(c) integer for a string field rejected (must be of type string)"
else
    fail "(c) integer for a string field not rejected as expected: $bad_out"
fi

if ((failures)); then
    echo "FAIL $failures check(s) failed"
    exit 1
fi
echo "PASS all empty-string checks"
