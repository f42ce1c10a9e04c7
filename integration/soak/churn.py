#!/usr/bin/env python3
"""Cluster churn for the soak: a steady stream of random changes through the kube-apiserver.

Usage:
  churn.py --url URL --ca F --cert F --key F --seconds N [--rate R] [--seed S]

Runs for N seconds at about R changes per second (default 20), over one kept-alive HTTPS
connection with the admin client certificate, then prints one JSON line with what it did:
changes by kind and verb, requests, errors, and the rate reached. Progress goes to stderr.

What changes, in the namespaces soak-a and soak-b (labelled soak=churn) and around the
steady pods of the test:
  - pods created (then marked Running with an address, as a kubelet would), relabelled and
    deleted, on both nodes, at 198.18.{node}.100-149;
  - namespace labels of soak-b;
  - Kubernetes NetworkPolicies created, changed and deleted: in the soak namespaces, and
    beside the steady ones in web and client (adding ingress to web/server, egress from
    client/a, only from and to soak pods);
  - Calico GlobalNetworkPolicies in the tier `soak` (order 50, before the default tier),
    NetworkPolicies in soak-a, GlobalNetworkSets and NetworkSets (projectcalico.org/v3).

By construction no change alters a verdict between the steady pods: every rule that could
match their traffic names soak pods, soak namespaces, soak network sets or 203.0.113.0/24,
and every Calico policy in the tier `soak` ends in Pass. The test's own canary changes are
what moves those verdicts.
"""

import argparse
import http.client
import json
import random
import ssl
import sys
import time

NAMESPACES = ("soak-a", "soak-b")
POD_SLOTS = 50
ROLES = ("x", "y", "z", "w")
K8S_POLICY_SLOTS = 12
GNP_SLOTS = 6
CALICO_NP_SLOTS = 4
NETSET_SLOTS = 3
CALICO = "/apis/projectcalico.org/v3"


class Api:
    def __init__(self, url, ca, cert, key):
        host_port = url.removeprefix("https://")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.context = ssl.create_default_context(cafile=ca)
        self.context.load_cert_chain(cert, key)
        self.connection = None
        self.requests = 0
        self.errors = {}
        self.error_samples = []
        self.slowest = 0.0

    def call(self, method, path, body=None, content_type="application/json", expect=()):
        """One request; True on 2xx (or a status in `expect`), False (counted) otherwise."""
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPSConnection(
                    self.host.strip("[]"), self.port, context=self.context, timeout=20)
            started = time.monotonic()
            try:
                headers = {"Content-Type": content_type} if data is not None else {}
                self.connection.request(method, path, body=data, headers=headers)
                response = self.connection.getresponse()
                text = response.read()
            except (OSError, http.client.HTTPException) as error:
                self.connection.close()
                self.connection = None
                if attempt == 0:
                    continue
                self.count_error("transport", f"{method} {path}: {error}")
                return False
            self.requests += 1
            self.slowest = max(self.slowest, time.monotonic() - started)
            if 200 <= response.status < 300 or response.status in expect:
                return True
            self.count_error(str(response.status), f"{method} {path}: {text[:300]!r}")
            return False
        return False

    def count_error(self, kind, sample):
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.error_samples) < 5:
            self.error_samples.append(sample)
            print(f"churn: {sample}", file=sys.stderr)


def ports(rng):
    return [{"port": rng.randrange(1000, 2000), "protocol": rng.choice(["TCP", "UDP"])}]


def soak_peer(rng):
    """A Kubernetes peer that only soak pods or TEST-NET-3 addresses match."""
    choice = rng.randrange(3)
    if choice == 0:
        return {"namespaceSelector": {"matchLabels": {"soak": "churn"}},
                "podSelector": {"matchLabels": {"soak-role": rng.choice(ROLES)}}}
    if choice == 1:
        return {"namespaceSelector": {"matchLabels": {"soak": "churn"}}}
    return {"ipBlock": {"cidr": "203.0.113.0/24",
                        "except": [f"203.0.113.{rng.randrange(256)}/32"]}}


def k8s_policy(rng, slot):
    """(namespace, NetworkPolicy) for a slot: soak namespaces, or beside the steady ones."""
    name = f"soak-{slot}"
    if slot % 4 == 0:
        # web/server is isolated for ingress by the steady policies: more allowed sources.
        namespace = "web"
        spec = {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [soak_peer(rng)], "ports": ports(rng)}]}
    elif slot % 4 == 1:
        # client/a is isolated for egress by the steady policies: more allowed destinations.
        namespace = "client"
        spec = {"podSelector": {"matchLabels": {"role": "frontend"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [soak_peer(rng)], "ports": ports(rng)}]}
    else:
        namespace = NAMESPACES[slot % 2]
        selector = {} if rng.random() < 0.3 else {"matchLabels": {"soak-role": rng.choice(ROLES)}}
        types = rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
        spec = {"podSelector": selector, "policyTypes": types}
        if "Ingress" in types:
            spec["ingress"] = [{"from": [{"podSelector": {"matchLabels": {"soak-role": rng.choice(ROLES)}}}],
                                "ports": ports(rng)}]
        if "Egress" in types:
            spec["egress"] = [{"to": [soak_peer(rng)]}]
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return namespace, policy


def calico_match(rng):
    """A Calico rule's source or destination that only soak endpoints and sets match."""
    choice = rng.randrange(4)
    if choice == 0:
        return {"selector": f"soak-role == '{rng.choice(ROLES)}'"}
    if choice == 1:
        return {"namespaceSelector": "soak == 'churn'"}
    if choice == 2:
        return {"selector": f"soak-set == 's{rng.randrange(NETSET_SLOTS)}'"}
    return {"nets": [f"203.0.113.{rng.randrange(256)}/32"]}


def calico_rules(rng, direction):
    rules = []
    for _ in range(rng.randrange(1, 4)):
        rule = {"action": rng.choice(["Allow", "Deny", "Log"])}
        side = "source" if direction == "ingress" else "destination"
        rule[side] = calico_match(rng)
        if rng.random() < 0.5:
            rule["protocol"] = rng.choice(["TCP", "UDP"])
            rule.setdefault("destination", {})["ports"] = [rng.randrange(1000, 2000)]
        rules.append(rule)
    # Whatever the rules above did not match leaves the tier for the default one.
    rules.append({"action": "Pass"})
    return rules


def global_policy(rng, slot):
    selector = rng.choice(["all()", "app == 'server'", "has(role)", "has(soak-role)",
                           "projectcalico.org/namespace == 'web'", "!has(app)",
                           f"soak-role in {{'{rng.choice(ROLES)}', '{rng.choice(ROLES)}'}}"])
    types = rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
    # Orders from 20 up: the canary Deny (order 10) comes first, so that no churn Pass in this
    # tier can skip it (a Pass leaves the tier, the policies after it included).
    spec = {"tier": "soak", "order": rng.randrange(20, 100), "selector": selector, "types": types}
    for direction in ("ingress", "egress"):
        if direction.capitalize() in types:
            spec[direction] = calico_rules(rng, direction)
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": f"soak-{slot}"}, "spec": spec}


def calico_namespaced_policy(rng, slot):
    spec = {"order": rng.randrange(1, 2000), "selector": f"soak-role == '{rng.choice(ROLES)}'",
            "types": ["Ingress"],
            "ingress": [{"action": rng.choice(["Allow", "Deny"]), "source": calico_match(rng)}]}
    return {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": f"soak-{slot}", "namespace": "soak-a"}, "spec": spec}


def network_set(rng, slot, namespaced):
    nets = sorted({f"203.0.113.{rng.randrange(256)}/32" for _ in range(rng.randrange(1, 6))})
    metadata = {"name": f"soak-{slot}", "labels": {"soak-set": f"s{slot}"}}
    if namespaced:
        metadata["namespace"] = "soak-a"
    return {"apiVersion": "projectcalico.org/v3",
            "kind": "NetworkSet" if namespaced else "GlobalNetworkSet",
            "metadata": metadata, "spec": {"nets": nets}}


class Churn:
    def __init__(self, api, rng):
        self.api = api
        self.rng = rng
        # slot -> namespace, for the objects that exist now.
        self.pods = {}
        self.k8s_policies = {}
        self.gnps = {}
        self.calico_nps = {}
        self.netsets = {}
        self.global_netsets = {}
        self.counts = {}

    def count(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1

    def setup(self):
        for namespace in NAMESPACES:
            self.api.call("POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {"soak": "churn"}}}, expect=(409,))
        self.api.call("POST", f"{CALICO}/tiers", {
            "apiVersion": "projectcalico.org/v3", "kind": "Tier",
            "metadata": {"name": "soak"}, "spec": {"order": 50}}, expect=(409,))

    def step(self):
        kind = self.rng.choices(
            ["pod", "pod-labels", "namespace-labels", "k8s-policy", "gnp", "calico-np", "netset"],
            weights=[30, 25, 5, 20, 10, 5, 5])[0]
        getattr(self, "change_" + kind.replace("-", "_"))()

    def change_pod(self):
        slot = self.rng.randrange(POD_SLOTS)
        if slot in self.pods:
            namespace = self.pods.pop(slot)
            if self.api.call("DELETE", f"/api/v1/namespaces/{namespace}/pods/soak-{slot}",
                             {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}):
                self.count("pod deleted")
            return
        namespace = NAMESPACES[slot % 2]
        node = slot % 2 + 1
        address = f"198.18.{node}.{100 + slot}"
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"soak-{slot}", "namespace": namespace,
                            "labels": {"soak-role": self.rng.choice(ROLES)}},
               "spec": {"nodeName": f"node-{node}",
                        "containers": [{"name": "app", "image": "soak",
                                        "ports": [{"name": "web", "containerPort": 1000 + slot,
                                                   "protocol": "TCP"}]}]}}
        if not self.api.call("POST", f"/api/v1/namespaces/{namespace}/pods", pod):
            return
        self.pods[slot] = namespace
        ready = {"type": "Ready", "status": "True"}
        status = {"status": {"phase": "Running", "podIP": address, "podIPs": [{"ip": address}],
                             "conditions": [ready]}}
        if self.api.call("PATCH", f"/api/v1/namespaces/{namespace}/pods/soak-{slot}/status",
                         status, content_type="application/merge-patch+json"):
            self.count("pod created")

    def change_pod_labels(self):
        if not self.pods:
            return self.change_pod()
        slot = self.rng.choice(sorted(self.pods))
        patch = {"metadata": {"labels": {"soak-role": self.rng.choice(ROLES)}}}
        if self.api.call("PATCH", f"/api/v1/namespaces/{self.pods[slot]}/pods/soak-{slot}",
                         patch, content_type="application/merge-patch+json"):
            self.count("pod relabelled")

    def change_namespace_labels(self):
        patch = {"metadata": {"labels": {"soak-zone": self.rng.choice(ROLES)}}}
        if self.api.call("PATCH", "/api/v1/namespaces/soak-b", patch,
                         content_type="application/merge-patch+json"):
            self.count("namespace relabelled")

    def change_k8s_policy(self):
        slot = self.rng.randrange(K8S_POLICY_SLOTS)
        namespace, policy = k8s_policy(self.rng, slot)
        base = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
        self.create_update_delete("NetworkPolicy", slot, self.k8s_policies, base, policy)

    def change_gnp(self):
        slot = self.rng.randrange(GNP_SLOTS)
        self.create_update_delete("GlobalNetworkPolicy", slot, self.gnps,
                                  f"{CALICO}/globalnetworkpolicies", global_policy(self.rng, slot))

    def change_calico_np(self):
        slot = self.rng.randrange(CALICO_NP_SLOTS)
        self.create_update_delete("Calico NetworkPolicy", slot, self.calico_nps,
                                  f"{CALICO}/namespaces/soak-a/networkpolicies",
                                  calico_namespaced_policy(self.rng, slot))

    def change_netset(self):
        slot = self.rng.randrange(NETSET_SLOTS)
        if self.rng.random() < 0.5:
            self.create_update_delete("GlobalNetworkSet", slot, self.global_netsets,
                                      f"{CALICO}/globalnetworksets",
                                      network_set(self.rng, slot, False))
        else:
            self.create_update_delete("NetworkSet", slot, self.netsets,
                                      f"{CALICO}/namespaces/soak-a/networksets",
                                      network_set(self.rng, slot, True))

    def create_update_delete(self, kind, slot, existing, base, body):
        """Creates the slot's object, or else replaces its spec (2 in 3) or deletes it."""
        name = body["metadata"]["name"]
        if slot not in existing:
            if self.api.call("POST", base, body):
                existing[slot] = body["metadata"].get("namespace")
                self.count(f"{kind} created")
        elif self.rng.random() < 2 / 3:
            if self.api.call("PATCH", f"{base}/{name}", {"spec": body["spec"]},
                             content_type="application/merge-patch+json"):
                self.count(f"{kind} updated")
        else:
            del existing[slot]
            if self.api.call("DELETE", f"{base}/{name}"):
                self.count(f"{kind} deleted")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    api = Api(args.url, args.ca, args.cert, args.key)
    churn = Churn(api, random.Random(args.seed))
    churn.setup()
    interval = 1.0 / args.rate
    started = time.monotonic()
    next_change = started
    next_report = started + 60
    steps = 0
    while time.monotonic() - started < args.seconds:
        now = time.monotonic()
        if now < next_change:
            time.sleep(next_change - now)
        churn.step()
        steps += 1
        next_change += interval
        # Running late (a slow request): catch up by at most one second's worth.
        next_change = max(next_change, time.monotonic() - 1.0)
        if time.monotonic() >= next_report:
            elapsed = time.monotonic() - started
            print(f"churn: {elapsed:.0f}s, {sum(churn.counts.values())} changes, "
                  f"{api.requests} requests, errors {api.errors}", file=sys.stderr, flush=True)
            next_report += 60
    elapsed = time.monotonic() - started
    changes = sum(churn.counts.values())
    print(json.dumps({
        "seconds": round(elapsed, 1),
        "changes": changes,
        "changes_per_second": round(changes / elapsed, 2),
        "requests": api.requests,
        "slowest_request_ms": round(api.slowest * 1000),
        "errors": api.errors,
        "error_samples": api.error_samples,
        "by_kind": dict(sorted(churn.counts.items())),
        "pods_at_end": len(churn.pods),
    }), flush=True)


if __name__ == "__main__":
    main()
