#!/usr/bin/env python3
"""Check, from the API server's audit log, what the agent did with its token.

    agent_audit.py AUDIT_LOG SOURCE_IP SA_USER RENDERED.yaml EVENT_NAMESPACE

AUDIT_LOG is a JSON-lines audit log (audit.k8s.io/v1, level Metadata or
more). The agent is the only client connecting from SOURCE_IP (the network
namespace's address), so its requests are told apart from the test's own
kubectl calls (made from the root namespace) by source address. RENDERED is
the manifest helm installed; its ClusterRole is what the agent is allowed.

Checks (PASS:/FAIL: lines; exit 1 if any failed):
  - the agent made requests, all authenticated as SA_USER and nobody else;
  - none was refused (401/403);
  - every (verb, group, resource) it used is granted by a ClusterRole rule
    (so it needs nothing beyond the chart's role; prints what it used);
  - it created an Event in EVENT_NAMESPACE (201), as SA_USER.
"""

import json
import sys

import yaml


def main():
    log_path, source_ip, sa_user, rendered, event_ns = sys.argv[1:6]
    failed = 0

    def result(ok, text):
        nonlocal failed
        if not ok:
            failed += 1
        print(f"{'PASS' if ok else 'FAIL'}: {text}")

    role = [d for d in yaml.safe_load_all(open(rendered)) if d and d.get("kind") == "ClusterRole"]
    rules = role[0]["rules"] if len(role) == 1 else []
    if len(role) != 1:
        result(False, f"the installed manifest has one ClusterRole (found {len(role)})")

    def allowed(verb, group, resource):
        for r in rules:
            if (group in r.get("apiGroups", []) or "*" in r.get("apiGroups", [])) \
                    and (resource in r.get("resources", []) or "*" in r.get("resources", [])) \
                    and (verb in r.get("verbs", []) or "*" in r.get("verbs", [])):
                return True
        return False

    events = []
    with open(log_path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if source_ip in e.get("sourceIPs", []):
                events.append(e)

    users = sorted({e.get("user", {}).get("username", "?") for e in events})
    result(bool(events) and users == [sa_user],
           f"audit: every request from the agent ({len(events)} audit events from {source_ip}) "
           f"authenticated as {sa_user} (users seen: {', '.join(users) or 'none'})")

    refused = [e for e in events if e.get("responseStatus", {}).get("code") in (401, 403)]
    result(not refused,
           "audit: no request of the agent was refused (401/403)"
           + "".join(f"\n    {e.get('verb')} {e.get('requestURI')} -> "
                     f"{e.get('responseStatus', {}).get('code')}" for e in refused[:10]))
    other = sorted({(e.get("verb"), e.get("requestURI", "").split("?")[0],
                     e.get("responseStatus", {}).get("code"))
                    for e in events if e.get("responseStatus", {}).get("code", 0) >= 400
                    and e.get("responseStatus", {}).get("code") not in (401, 403)})
    for verb, uri, code in other:
        print(f"    note: agent request {verb} {uri} -> {code}")

    used = set()
    for e in events:
        ref = e.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # non-resource URLs (discovery); none expected
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((e.get("verb"), ref.get("apiGroup", ""), resource))
    beyond = sorted(u for u in used if not allowed(*u))
    shown = ", ".join(f"{v} {r}{'.' + g if g else ''}" for v, g, r in sorted(used, key=lambda u: (u[2], u[1], u[0])))
    result(bool(used) and not beyond,
           f"audit: the ClusterRole grants everything the agent used ({shown})"
           + (f"; NOT granted: {beyond}" if beyond else ""))

    created = [e for e in events
               if e.get("verb") == "create"
               and (e.get("objectRef") or {}).get("resource") == "events"
               and (e.get("objectRef") or {}).get("namespace") == event_ns
               and e.get("responseStatus", {}).get("code") == 201
               and e.get("user", {}).get("username") == sa_user]
    result(bool(created),
           f"audit: {sa_user} created the Event in namespace {event_ns} "
           f"({len(created)} create(s) answered 201)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
