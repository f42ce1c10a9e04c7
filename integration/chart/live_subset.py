#!/usr/bin/env python3
"""Check that every object of a rendered manifest exists in a live cluster and
that everything the manifest sets survived the API server's round trip.

    live_subset.py KUBECTL RENDERED.yaml [TAG]

(KUBECONFIG from the environment.) The live object may have more (server
defaults, status, managedFields); every field of the rendered object must be
present with the same value. This catches fields an older API server silently
drops (unknown fields are pruned without an error before Kubernetes 1.25's
field validation). Prints PASS:/FAIL: lines; exit 1 if any failed.
"""

import json
import subprocess
import sys

import yaml

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass"}


def diff(want, got, path="$"):
    """Paths where `want` is not contained in `got`."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: expected a map, got {type(got).__name__}"]
        out = []
        for k, v in want.items():
            if k not in got:
                out.append(f"{path}.{k}: missing on the server")
            else:
                out.extend(diff(v, got[k], f"{path}.{k}"))
        return out
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: expected {len(want)} items, got {got!r:.200}"]
        out = []
        for i, (w, g) in enumerate(zip(want, got)):
            out.extend(diff(w, g, f"{path}[{i}]"))
        return out
    if want != got and str(want) != str(got):
        return [f"{path}: rendered {want!r}, server has {got!r}"]
    return []


def main():
    kubectl, rendered = sys.argv[1], sys.argv[2]
    tag = sys.argv[3] if len(sys.argv) > 3 else rendered
    failed = 0
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    for d in docs:
        kind, md = d["kind"], d["metadata"]
        name = f"{tag}: {kind}/{md['name']}"
        cmd = [kubectl, "get", f"{kind.lower()}.{d['apiVersion'].split('/')[0]}"
               if "/" in d["apiVersion"] else kind.lower(), md["name"], "-o", "json"]
        if kind not in CLUSTER_SCOPED:
            cmd += ["-n", md.get("namespace", "default")]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"FAIL: {name} exists on the server: {p.stderr.strip()}")
            failed += 1
            continue
        print(f"PASS: {name} exists on the server")
        problems = diff(d, json.loads(p.stdout))
        if problems:
            failed += 1
            print(f"FAIL: {name} kept every rendered field: " + "; ".join(problems[:5]))
        else:
            print(f"PASS: {name} kept every rendered field")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
