#!/usr/bin/env python3
"""Checks on `helm template` output of charts/palisade.

Run by test-chart.sh with the tools venv's python (PyYAML, jsonschema,
kubernetes-validate, cloudcoil prometheus-operator models):

    chart_checks.py --chart DIR --promtool PATH --workdir DIR \
        RENDERING.yaml:PROFILE [RENDERING.yaml:PROFILE ...]

PROFILE says which values produced the rendering (see PROFILES). Prints one
`PASS: ...` or `FAIL: ...` line per check; exit status 1 if any failed.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

# Kubernetes versions whose schemas the built-in objects must satisfy (strict:
# unknown fields rejected). 1.25 is the oldest kubernetes-validate 1.37 ships
# (older servers are covered by test-install.sh against a real 1.20
# apiserver); 1.33 is the agent's k8s-openapi feature; 1.37 the newest.
K8S_VERSIONS = ["1.25.0", "1.33.0", "1.37.0"]

# Custom resources: no built-in schema. Validated against JSON schemas
# derived from the prometheus-operator CRDs (cloudcoil's generated models),
# made strict (unknown fields rejected) here.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

NAMESPACE = "kube-system"
FULLNAME = "palisade"

# Metrics the agent exports (the interface the dashboard is designed to).
AGENT_METRICS = {
    "palisade_sync_duration_seconds": "histogram",
    "palisade_apply_duration_seconds": "histogram",
    "palisade_syncs_total": "counter",
    "palisade_sync_errors_total": "counter",
    "palisade_restore_calls_total": "counter",
    "palisade_restore_errors_total": "counter",
    "palisade_rules": "gauge",
    "palisade_chains": "gauge",
    "palisade_ipsets": "gauge",
    "palisade_ipset_members": "gauge",
    "palisade_local_pods": "gauge",
    "palisade_isolated_pods": "gauge",
    "palisade_policies": "gauge",
    "palisade_policies_invalid": "gauge",
    "palisade_watch_events_total": "counter",
    "palisade_watch_relists_total": "counter",
    "palisade_apiserver_up": "gauge",
    "palisade_apiserver_check_failures_total": "counter",
    "palisade_watch_restarts_total": "counter",
    "palisade_ipsets_over_capacity": "gauge",
    "palisade_drift_repairs_total": "counter",
    "palisade_last_successful_sync_timestamp_seconds": "gauge",
    "palisade_policy_rule_packets_total": "counter",
    "palisade_policy_rule_bytes_total": "counter",
    "palisade_denied_packets_total": "counter",
    "palisade_counter_read_duration_seconds": "histogram",
    "palisade_counter_read_errors_total": "counter",
    "palisade_denied_flow_lines_total": "counter",
    "palisade_denied_flow_lines_suppressed_total": "counter",
    "palisade_denied_flow_overruns_total": "counter",
}

# What each rendering profile was rendered with (test-chart.sh passes the
# same values to helm).
PROFILES = {
    # helm template palisade charts/palisade -n kube-system
    "default": dict(
        optional=False, cleanup=False, refresh="60s", refresh_seconds=180,
        args=["agent", "--metrics-addr=0.0.0.0:9617", "--refresh-interval=60s",
              "--counters-interval=10s", "--max-ipset-size=1048576", "--enforcement=enforce", "--nflog-group=417",
              "--denied-log-window=10s", "--denied-log-rate=50", "--debounce=50ms", "--backend=auto", "--calico-api=auto", "--log-format=text"],
        rust_log="info", grace=30, port=9617, calico=True, arenas="2"),
    # serviceMonitor, prometheusRule, dashboards and cleanupOnUninstall on
    "all": dict(
        optional=True, cleanup=True, refresh="60s", refresh_seconds=180,
        args=["agent", "--metrics-addr=0.0.0.0:9617", "--refresh-interval=60s",
              "--counters-interval=10s", "--max-ipset-size=1048576", "--enforcement=enforce", "--nflog-group=417",
              "--denied-log-window=10s", "--denied-log-rate=50", "--debounce=50ms", "--backend=auto", "--calico-api=auto", "--log-format=text",
              "--cleanup-on-exit"],
        rust_log="info", grace=60, port=9617, calico=True, arenas="2"),
    # every optional feature plus non-default agent settings
    "custom": dict(
        optional=True, cleanup=False, refresh="90s", refresh_seconds=270,
        args=["agent", "--metrics-addr=[::]:9700", "--refresh-interval=90s",
              "--counters-interval=30s", "--max-ipset-size=65536", "--enforcement=audit", "--nflog-group=5",
              "--denied-log-window=30s", "--denied-log-rate=10", "--log-denied", "--debounce=250ms", "--backend=nft", "--calico-api=off", "--log-format=json",
              "--accept-mark=0x400000"],
        rust_log="palisade=debug", grace=45, port=9700, calico=False, arenas=None),
}

results = {"pass": 0, "fail": 0}


def check(name, ok, detail=""):
    if ok:
        results["pass"] += 1
        print(f"PASS: {name}")
    else:
        results["fail"] += 1
        print(f"FAIL: {name}" + (f": {detail}" if detail else ""))
    return ok


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_docs(path):
    text = Path(path).read_text()
    return [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d]


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def one(objs, kind):
    items = objs.get(kind, [])
    if len(items) != 1:
        raise AssertionError(f"expected exactly one {kind}, found {len(items)}")
    return items[0]


# ---------------------------------------------------------------------------
# Schema validation
# ---------------------------------------------------------------------------

def strict_schema(node):
    """Reject unknown properties in every object schema that lists properties."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            strict_schema(v)
    elif isinstance(node, list):
        for v in node:
            strict_schema(v)
    return node


_crd_schemas = {}


def crd_schema(kind):
    if kind not in _crd_schemas:
        from cloudcoil.models.prometheus_operator import v1
        model = getattr(v1, kind)
        _crd_schemas[kind] = strict_schema(model.model_json_schema(by_alias=True))
    return _crd_schemas[kind]


def validate_objects(tag, docs):
    for d in docs:
        name = f"{tag}: {d['kind']}/{d['metadata']['name']}"
        if d["kind"] in CRD_KINDS:
            print(f"INFO: {name}: custom resource, not in kubernetes-validate; "
                  "checked against the prometheus-operator CRD schema (cloudcoil models, strict)")
            if d["apiVersion"] != "monitoring.coreos.com/v1":
                check(f"{name} apiVersion", False, d["apiVersion"])
                continue
            errs = sorted(jsonschema.Draft202012Validator(crd_schema(d["kind"])).iter_errors(d),
                          key=lambda e: list(e.path))
            check(f"{name} matches the {d['kind']} CRD schema", not errs,
                  "; ".join(f"{'.'.join(map(str, e.path))}: {e.message[:200]}" for e in errs[:5]))
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(d, version, strict=True)
                check(f"{name} valid for Kubernetes {version} (strict)", True)
            except kubernetes_validate.ValidationError as e:
                check(f"{name} valid for Kubernetes {version} (strict)", False,
                      f"{'.'.join(map(str, e.path))}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                check(f"{name} has a schema for Kubernetes {version}", False, e.message)


# ---------------------------------------------------------------------------
# Object checks
# ---------------------------------------------------------------------------

def check_inventory(tag, objs, prof):
    want = {"ServiceAccount": 1, "ClusterRole": 1, "ClusterRoleBinding": 1,
            "Service": 1, "DaemonSet": 1}
    if prof["optional"]:
        want.update({"ServiceMonitor": 1, "PrometheusRule": 1, "ConfigMap": 1})
    got = {k: len(v) for k, v in objs.items()}
    check(f"{tag}: object inventory is {sorted(want)}", got == want, f"got {got}")


def check_labels_and_namespaces(tag, docs):
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for d in docs:
        md = d["metadata"]
        name = f"{tag}: {d['kind']}/{md['name']}"
        labels = md.get("labels", {})
        missing = [k for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                               "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
                               "app.kubernetes.io/component", "helm.sh/chart")
                   if k not in labels]
        check(f"{name} has the standard labels", not missing, f"missing {missing}")
        check(f"{name} label values are strings",
              all(isinstance(v, str) for v in labels.values()), str(labels))
        if d["kind"] in cluster_scoped:
            check(f"{name} is cluster-scoped (no namespace)", "namespace" not in md)
        else:
            check(f"{name} is in {NAMESPACE}", md.get("namespace") == NAMESPACE,
                  str(md.get("namespace")))


def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_daemonset(tag, objs, prof):
    ds = one(objs, "DaemonSet")
    spec = ds["spec"]
    pod = spec["template"]["spec"]
    t = f"{tag}: DaemonSet"
    check(f"{t} name", ds["metadata"]["name"] == FULLNAME, ds["metadata"]["name"])
    sel = spec["selector"]["matchLabels"]
    plabels = spec["template"]["metadata"]["labels"]
    check(f"{t} selector labels are on the pod template",
          all(plabels.get(k) == v for k, v in sel.items()), f"{sel} vs {plabels}")
    check(f"{t} selector has no version-dependent label",
          not any(k in sel for k in ("app.kubernetes.io/version", "helm.sh/chart")), str(sel))
    check(f"{t} updateStrategy RollingUpdate maxUnavailable 1",
          spec.get("updateStrategy") == {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": 1}},
          str(spec.get("updateStrategy")))
    check(f"{t} hostNetwork", pod.get("hostNetwork") is True)
    check(f"{t} dnsPolicy ClusterFirstWithHostNet", pod.get("dnsPolicy") == "ClusterFirstWithHostNet")
    check(f"{t} no hostPID/hostIPC", not pod.get("hostPID") and not pod.get("hostIPC"))
    check(f"{t} priorityClassName system-node-critical",
          pod.get("priorityClassName") == "system-node-critical")
    check(f"{t} nodeSelector kubernetes.io/os=linux",
          pod.get("nodeSelector") == {"kubernetes.io/os": "linux"}, str(pod.get("nodeSelector")))
    check(f"{t} tolerates every taint", {"operator": "Exists"} in pod.get("tolerations", []),
          str(pod.get("tolerations")))
    check(f"{t} terminationGracePeriodSeconds {prof['grace']}",
          pod.get("terminationGracePeriodSeconds") == prof["grace"],
          str(pod.get("terminationGracePeriodSeconds")))
    sa = one(objs, "ServiceAccount")["metadata"]["name"]
    check(f"{t} runs as the chart's ServiceAccount", pod.get("serviceAccountName") == sa)
    check(f"{t} keeps the API token mounted", pod.get("automountServiceAccountToken", True) is True)

    containers = pod["containers"]
    check(f"{t} has exactly one container and no init containers",
          len(containers) == 1 and not pod.get("initContainers"))
    c = containers[0]
    sc = c.get("securityContext", {})
    caps = sc.get("capabilities", {})
    check(f"{t} capabilities add exactly NET_ADMIN, NET_RAW",
          sorted(caps.get("add", [])) == ["NET_ADMIN", "NET_RAW"], str(caps.get("add")))
    check(f"{t} capabilities drop ALL", caps.get("drop") == ["ALL"], str(caps.get("drop")))
    check(f"{t} not privileged", sc.get("privileged") is False, str(sc.get("privileged")))
    check(f"{t} allowPrivilegeEscalation false", sc.get("allowPrivilegeEscalation") is False)
    check(f"{t} readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem") is True)
    check(f"{t} runAsUser 0 (iptables needs uid 0)", sc.get("runAsUser") == 0)
    check(f"{t} seccomp RuntimeDefault",
          sc.get("seccompProfile") == {"type": "RuntimeDefault"}, str(sc.get("seccompProfile")))
    check(f"{t} no pod-level privilege widening",
          not (pod.get("securityContext") or {}).get("sysctls")
          and not (pod.get("securityContext") or {}).get("supplementalGroups"))

    check(f"{t} args {prof['args']}", c.get("args") == prof["args"], str(c.get("args")))
    check(f"{t} no command override (image ENTRYPOINT is the binary)", "command" not in c)
    env = env_map(c)
    check(f"{t} NODE_NAME from spec.nodeName",
          env.get("NODE_NAME", {}).get("valueFrom") == {"fieldRef": {"fieldPath": "spec.nodeName"}},
          str(env.get("NODE_NAME")))
    check(f"{t} RUST_LOG={prof['rust_log']}", env.get("RUST_LOG", {}).get("value") == prof["rust_log"],
          str(env.get("RUST_LOG")))
    arenas = env.get("MALLOC_ARENA_MAX", {}).get("value")
    check(f"{t} MALLOC_ARENA_MAX {prof['arenas'] or 'unset'}", arenas == prof["arenas"], str(arenas))
    ports = c.get("ports", [])
    check(f"{t} one port named metrics = {prof['port']}/TCP",
          ports == [{"name": "metrics", "containerPort": prof["port"], "protocol": "TCP"}], str(ports))
    lp, rp = c.get("livenessProbe", {}), c.get("readinessProbe", {})
    check(f"{t} livenessProbe GET /healthz on metrics",
          lp.get("httpGet") == {"path": "/healthz", "port": "metrics"}, str(lp))
    check(f"{t} readinessProbe GET /readyz on metrics",
          rp.get("httpGet") == {"path": "/readyz", "port": "metrics"}, str(rp))
    res = c.get("resources", {})
    check(f"{t} cpu+memory requests and limits",
          all(k in res.get(s, {}) for s in ("requests", "limits") for k in ("cpu", "memory")), str(res))

    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    host_paths = {v["hostPath"]["path"]: v["hostPath"].get("type") for v in vols.values() if "hostPath" in v}
    check(f"{t} hostPaths are exactly /run/xtables.lock (FileOrCreate) and /lib/modules",
          host_paths == {"/run/xtables.lock": "FileOrCreate", "/lib/modules": None}, str(host_paths))
    xt = mounts.get("xtables-lock", {})
    check(f"{t} /run/xtables.lock mounted", xt.get("mountPath") == "/run/xtables.lock", str(xt))
    lm = mounts.get("lib-modules", {})
    check(f"{t} /lib/modules mounted read-only",
          lm.get("mountPath") == "/lib/modules" and lm.get("readOnly") is True, str(lm))
    check(f"{t} every mount has a volume", set(mounts) <= set(vols), f"{set(mounts)} vs {set(vols)}")


def rbac_triples(rules):
    out = set()
    for r in rules:
        for key in ("resourceNames", "nonResourceURLs"):
            if key in r:
                out.add(("!", key, str(r[key])))
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    out.add((g, res, v))
    return out


CALICO_RESOURCES = ("networkpolicies", "globalnetworkpolicies", "networksets",
                    "globalnetworksets", "tiers")


def check_rbac(tag, objs, prof):
    cr = one(objs, "ClusterRole")
    expected = set()
    if prof["calico"]:
        for v in ("get", "list", "watch"):
            for g in ("projectcalico.org", "crd.projectcalico.org"):
                for res in CALICO_RESOURCES:
                    expected.add((g, res, v))
            expected.add(("", "serviceaccounts", v))
            expected.add(("discovery.k8s.io", "endpointslices", v))
    for res in ("pods", "namespaces"):
        for v in ("get", "list", "watch"):
            expected.add(("", res, v))
    for v in ("get", "list", "watch"):
        expected.add(("networking.k8s.io", "networkpolicies", v))
    for g in ("", "events.k8s.io"):
        for v in ("create", "patch"):
            expected.add((g, "events", v))
    got = rbac_triples(cr["rules"])
    calico = (" + get/list/watch the Calico kinds (both groups), serviceaccounts, endpointslices"
              if prof["calico"] else " and nothing of Calico (calicoApi off)")
    check(f"{tag}: ClusterRole grants exactly get/list/watch pods,namespaces,networkpolicies "
          f"+ create/patch events (core and events.k8s.io){calico}", got == expected,
          f"extra {sorted(got - expected)}, missing {sorted(expected - got)}")
    check(f"{tag}: ClusterRole has no wildcard",
          not any("*" in t for t in got), str(sorted(t for t in got if "*" in t)))
    check(f"{tag}: ClusterRole has no aggregationRule", "aggregationRule" not in cr)
    crb = one(objs, "ClusterRoleBinding")
    check(f"{tag}: ClusterRoleBinding roleRef is the ClusterRole",
          crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": cr["metadata"]["name"]}, str(crb["roleRef"]))
    sa = one(objs, "ServiceAccount")["metadata"]
    check(f"{tag}: ClusterRoleBinding binds only the chart's ServiceAccount",
          crb["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"],
                               "namespace": sa["namespace"]}], str(crb["subjects"]))


def check_service(tag, objs, prof):
    svc = one(objs, "Service")
    ds = one(objs, "DaemonSet")
    spec = svc["spec"]
    check(f"{tag}: Service is headless", spec.get("clusterIP") == "None")
    check(f"{tag}: Service selects the DaemonSet's pods",
          spec.get("selector") == ds["spec"]["selector"]["matchLabels"], str(spec.get("selector")))
    check(f"{tag}: Service port named metrics -> targetPort metrics",
          spec.get("ports") == [{"name": "metrics", "port": prof["port"],
                                 "targetPort": "metrics", "protocol": "TCP"}], str(spec.get("ports")))
    if not prof["optional"]:
        return
    sm = one(objs, "ServiceMonitor")
    sel = sm["spec"]["selector"]["matchLabels"]
    svc_labels = svc["metadata"]["labels"]
    check(f"{tag}: ServiceMonitor selects the metrics Service",
          all(svc_labels.get(k) == v for k, v in sel.items()), f"{sel} vs {svc_labels}")
    check(f"{tag}: ServiceMonitor selector does not match the DaemonSet's pods' labels alone",
          sel.get("app.kubernetes.io/component") == "metrics", str(sel))
    check(f"{tag}: ServiceMonitor looks in the release namespace",
          sm["spec"].get("namespaceSelector") == {"matchNames": [NAMESPACE]})
    eps = sm["spec"]["endpoints"]
    check(f"{tag}: ServiceMonitor scrapes port metrics at /metrics",
          len(eps) == 1 and eps[0].get("port") == "metrics" and eps[0].get("path") == "/metrics", str(eps))


# ---------------------------------------------------------------------------
# PrometheusRule: structure, promtool check + unit tests
# ---------------------------------------------------------------------------

def check_prometheus_rule(tag, objs, prof, promtool, workdir, here):
    if not prof["optional"]:
        check(f"{tag}: no PrometheusRule by default", "PrometheusRule" not in objs)
        return
    pr = one(objs, "PrometheusRule")
    rules = [r for g in pr["spec"]["groups"] for r in g["rules"]]
    alerts = {r.get("alert"): r for r in rules}
    check(f"{tag}: PrometheusRule alerts", sorted(alerts) ==
          ["PalisadeApiServerUnreachable", "PalisadeInvalidPolicies", "PalisadeSyncFailing",
           "PalisadeSyncStale"], str(sorted(alerts)))
    stale = alerts.get("PalisadeSyncStale", {}).get("expr", "")
    m = re.search(r">\s*([0-9.]+)\s*$", stale)
    check(f"{tag}: PalisadeSyncStale threshold is 3 x refreshInterval ({prof['refresh']}) = "
          f"{prof['refresh_seconds']}s", m is not None and float(m.group(1)) == prof["refresh_seconds"],
          stale)
    for name, r in alerts.items():
        check(f"{tag}: alert {name} has severity, summary and description",
              "severity" in r.get("labels", {}) and
              {"summary", "description"} <= set(r.get("annotations", {})), str(r))
        used = set(re.findall(r"\bpalisade_[a-z_]+", r["expr"]))
        check(f"{tag}: alert {name} only uses exported metrics",
              used and used <= set(AGENT_METRICS), str(used - set(AGENT_METRICS)))

    d = workdir / f"rules-{tag}"
    d.mkdir(parents=True, exist_ok=True)
    rules_file = d / "palisade-rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": pr["spec"]["groups"]}, sort_keys=False))
    p = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
    check(f"{tag}: promtool check rules", p.returncode == 0, (p.stdout + p.stderr).strip())
    # Behavioural unit tests of the alerts, written for refreshInterval=60s.
    if prof["refresh"] == "60s":
        test_src = here / "prometheus-rules.test.yaml"
        shutil.copy(test_src, d / test_src.name)
        p = subprocess.run([promtool, "test", "rules", test_src.name], cwd=d,
                           capture_output=True, text=True)
        check(f"{tag}: promtool test rules ({test_src.name})", p.returncode == 0,
              (p.stdout + p.stderr).strip())


# ---------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------

def dashboard_exprs(dash):
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title"), t["refId"], t["expr"]))
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and q:
            out.append((f"variable {v['name']}", "var", q))
    return out


def check_dashboard_file(chart, promtool, workdir):
    tag = "dashboard"
    path = chart / "dashboards" / "palisade.json"
    try:
        dash = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        check(f"{tag}: {path.name} is valid JSON", False, str(e))
        return
    check(f"{tag}: {path.name} is valid JSON", True)
    check(f"{tag}: has title and uid", bool(dash.get("title")) and bool(dash.get("uid")))
    panels = []

    def walk(ps):
        for p in ps:
            panels.append(p)
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    ids = [p.get("id") for p in panels]
    check(f"{tag}: panel ids are unique", len(ids) == len(set(ids)) and None not in ids, str(ids))
    bad_ds = [p["title"] for p in panels if p.get("type") != "row"
              and (p.get("datasource") or {}).get("uid") != "${datasource}"]
    check(f"{tag}: every panel uses the $datasource variable", not bad_ds, str(bad_ds))
    exprs = dashboard_exprs(dash)
    text = " ".join(e for _, _, e in exprs)
    used = set(re.findall(r"\bpalisade_[a-z_]+", text))
    base = {re.sub(r"_(bucket|sum|count)$", "", m) if re.sub(r"_(bucket|sum|count)$", "", m)
            in AGENT_METRICS else m for m in used}
    unknown = base - set(AGENT_METRICS)
    check(f"{tag}: uses only metrics the agent exports", not unknown, str(sorted(unknown)))
    missing = set(AGENT_METRICS) - base
    check(f"{tag}: shows every agent metric", not missing, str(sorted(missing)))
    for q in ("0.5", "0.9", "0.99"):
        check(f"{tag}: sync latency p{q[2:] or q} via histogram_quantile",
              f"histogram_quantile({q}, sum by (le) (rate(palisade_sync_duration_seconds_bucket" in text)
    check(f"{tag}: shows last successful sync age",
          "time() - palisade_last_successful_sync_timestamp_seconds" in text)
    # PromQL syntax: promtool parses every panel query (Grafana variables
    # replaced by plausible values) as a recording rule.
    rules = []
    for i, (title, ref, expr) in enumerate(exprs):
        if expr.startswith("label_values("):
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr)
            check(f"{tag}: variable query {expr!r} is label_values(SELECTOR, LABEL)", m is not None)
            if not m:
                continue
            expr = m.group(1)
        e = (expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
             .replace("$job", ".*").replace("$instance", ".*"))
        rules.append({"record": f"dashboard:query_{i}", "expr": e})
    f = workdir / "dashboard-queries.rules.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    p = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
    check(f"{tag}: promtool parses all {len(rules)} queries", p.returncode == 0,
          (p.stdout + p.stderr).strip())


def check_dashboard_configmap(tag, objs, prof, chart):
    if not prof["optional"]:
        check(f"{tag}: no dashboard ConfigMap by default", "ConfigMap" not in objs)
        return
    cm = one(objs, "ConfigMap")
    check(f"{tag}: dashboard ConfigMap has grafana_dashboard: \"1\"",
          cm["metadata"]["labels"].get("grafana_dashboard") == "1", str(cm["metadata"]["labels"]))
    want = (chart / "dashboards" / "palisade.json").read_text().rstrip("\n")
    got = cm.get("data", {}).get("palisade.json", "")
    check(f"{tag}: dashboard ConfigMap carries dashboards/palisade.json verbatim", got == want,
          f"{len(got)} vs {len(want)} characters")


# ---------------------------------------------------------------------------
# README coverage, Dockerfile, CI workflow
# ---------------------------------------------------------------------------

def value_paths(node, prefix=""):
    """(path, is_leaf) of every key of values.yaml; non-empty maps are descended into."""
    out = []
    for k, v in node.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.append((path, False))
            out.extend(value_paths(v, path + "."))
        else:
            out.append((path, True))
    return out


def check_readme(chart):
    tag = "README"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    readme = (chart / "README.md").read_text()
    # Rows of the table in the "## Values" section: | `key` | ... |
    m = re.search(r"^## Values\n(.*?)(?=^## )", readme, flags=re.M | re.S)
    check(f"{tag}: has a '## Values' section", m is not None)
    section = m.group(1) if m else ""
    table = set(re.findall(r"^\|\s*`([A-Za-z0-9_.]+)`\s*\|", section, flags=re.M))
    all_paths = value_paths(values)
    paths = {p for p, _ in all_paths}
    # A leaf value is documented if it or an ancestor map has a row.
    undocumented = [p for p, leaf in all_paths if leaf
                    and not any(p == k or p.startswith(k + ".") for k in table)]
    check(f"{tag}: every value in values.yaml has a row in the values table",
          not undocumented, str(undocumented))
    unknown = sorted(k for k in table if k not in paths)
    check(f"{tag}: every row of the values table is a value in values.yaml",
          not unknown, str(unknown))
    schema = json.loads((chart / "values.schema.json").read_text())
    top = set(schema["properties"]) - {"global"}
    check(f"{tag}: values.schema.json describes exactly the top-level values",
          top == set(values), f"schema-only {sorted(top - set(values))}, "
          f"values-only {sorted(set(values) - top)}")
    for word in ("Uninstall", "iptables", "ipset", "cleanupOnUninstall", "palisade cleanup"):
        check(f"{tag}: mentions {word!r}", word in readme)


def check_repo_files(root):
    tag = "repo"
    df = (root / "Dockerfile").read_text()
    lines = [l.strip() for l in df.splitlines() if l.strip() and not l.strip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    check(f"{tag}: Dockerfile is multi-stage rust:1-bookworm -> debian:bookworm-slim",
          len(froms) == 2 and froms[0].split()[1] == "rust:1-bookworm"
          and froms[1].split()[1] == "debian:bookworm-slim", str(froms))
    check(f"{tag}: Dockerfile builds --release --locked --bin palisade",
          re.search(r"cargo build[^\n]*--release[^\n]*--locked[^\n]*--bin palisade", df) is not None)
    check(f"{tag}: Dockerfile installs iptables, ipset, ca-certificates",
          all(re.search(rf"\b{p}\b", df) for p in ("iptables", "ipset", "ca-certificates")))
    check(f"{tag}: Dockerfile ENTRYPOINT/CMD",
          'ENTRYPOINT ["/usr/local/bin/palisade"]' in lines and 'CMD ["agent"]' in lines)
    di = (root / ".dockerignore").read_text().split()
    check(f"{tag}: .dockerignore excludes target/", any(x.strip("/") in ("target", "**/target") for x in di), str(di))
    wf = yaml.safe_load((root / ".github" / "workflows" / "ci.yml").read_text())
    jobs = wf.get("jobs", {}) if isinstance(wf, dict) else {}
    check(f"{tag}: ci.yml parses and has jobs test and kind-e2e",
          {"test", "kind-e2e"} <= set(jobs), str(list(jobs)))
    runs = " ".join(step.get("run", "") for j in jobs.values() for step in j.get("steps", []))
    check(f"{tag}: ci.yml runs make test and make kind-e2e",
          "make test" in runs and "make kind-e2e" in runs, runs[:300])


def check_seeds(seed_dir):
    """integration/seed/* converted by seed-to-v1.sh (kind-e2e.sh applies them)."""
    for path in sorted(Path(seed_dir).glob("*.yaml")):
        for d in load_docs(path):
            name = f"seed {path.name}: {d['kind']}/{d['metadata']['name']}"
            check(f"{name} uses a served API version",
                  d["apiVersion"] in ("v1", "networking.k8s.io/v1"), d["apiVersion"])
            protocols = re.findall(r"'protocol': '([^']*)'", str(d))
            check(f"{name} protocols are TCP/UDP/SCTP (the schema has no enum for them)",
                  all(p in ("TCP", "UDP", "SCTP") for p in protocols), str(protocols))
            try:
                kubernetes_validate.validate(d, "1.33.0", strict=True)
                check(f"{name} valid for Kubernetes 1.33.0 (strict)", True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
                check(f"{name} valid for Kubernetes 1.33.0 (strict)", False, getattr(e, "message", str(e)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chart", required=True, type=Path)
    ap.add_argument("--promtool", required=True)
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--seeds", type=Path, help="directory of seed manifests converted by seed-to-v1.sh")
    ap.add_argument("renderings", nargs="+", help="FILE:PROFILE")
    args = ap.parse_args()
    here = Path(__file__).resolve().parent

    for fn, fargs in ((check_dashboard_file, (args.chart, args.promtool, args.workdir)),
                      (check_readme, (args.chart,)),
                      (check_repo_files, (args.root,))) + (((check_seeds, (args.seeds,)),) if args.seeds else ()):
        try:
            fn(*fargs)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as e:
            check(f"{fn.__name__} ran", False, f"{type(e).__name__}: {e}")
    for item in args.renderings:
        path, _, tag = item.rpartition(":")
        prof = PROFILES[tag]
        try:
            docs = load_docs(path)
        except yaml.YAMLError as e:
            check(f"{tag}: rendering parses as YAML without duplicate keys", False, str(e))
            continue
        check(f"{tag}: rendering parses as YAML without duplicate keys", True)
        objs = by_kind(docs)
        validate_objects(tag, docs)
        for fn, fargs in ((check_inventory, (objs, prof)),
                          (check_labels_and_namespaces, (docs,)),
                          (check_daemonset, (objs, prof)),
                          (check_rbac, (objs, prof)),
                          (check_service, (objs, prof)),
                          (check_prometheus_rule, (objs, prof, args.promtool, args.workdir, here)),
                          (check_dashboard_configmap, (objs, prof, args.chart))):
            try:
                fn(tag, *fargs)
            except (AssertionError, KeyError, TypeError, IndexError) as e:
                check(f"{tag}: {fn.__name__} ran", False, f"{type(e).__name__}: {e}")
    print(f"chart_checks: {results['pass']} passed, {results['fail']} failed", file=sys.stderr)
    return 1 if results["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
