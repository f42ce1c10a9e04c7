//! `palisade explain`: the verdict and its reasons, from the rules the nodes would hold. Every
//! kernel rule an explanation names must be a line of `palisade render` for that node, so the
//! explanation is about the rules the kernel holds, not a second model of the policies.

use std::path::Path;
use std::process::{Command, Output};

const TIERS: &str = "tests/golden/calico-tiers";
/// The seed cluster; its policies and the DefaultDeny annotation are in `integration/seed`.
const SEED: &str = "tests/golden/seed";
const SEED_POLICIES: &str = "integration/seed";

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "error")
        .output()
        .expect("running palisade")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn explain(manifests: &str, from: &str, to: &str, port: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "explain",
        "--manifests",
        manifests,
        "--from",
        from,
        "--to",
        to,
        "--port",
        port,
    ];
    args.extend_from_slice(extra);
    palisade(&args)
}

/// The kernel rule lines of `palisade render` for `node`.
fn rendered(manifests: &str, node: &str) -> String {
    let output = palisade(&["render", "--manifests", manifests, "--node", node]);
    assert!(output.status.success());
    stdout(&output)
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("explain --output json prints JSON")
}

/// Every `kernel_rule` of the explanation is a line `palisade render` prints for its node.
fn kernel_rules_are_rendered(manifests: &str, explanation: &serde_json::Value) {
    for walk in explanation["walks"].as_array().expect("walks") {
        if let Some(rule) = walk["kernel_rule"].as_str() {
            let node = walk["node"].as_str().expect("a node");
            assert!(
                rendered(manifests, node).lines().any(|line| line == rule),
                "{rule:?} is not a rule of {node}"
            );
        }
    }
}

#[test]
fn an_allowed_connection_names_the_rules_that_allowed_it_on_both_nodes() {
    let output = explain(TIERS, "shop/checkout", "shop/db", "5432", &[]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(
        text.starts_with("shop/checkout -> shop/db: ALLOWED"),
        "{text}"
    );
    assert!(
        text.contains("on node-1 (egress of shop/checkout): allowed"),
        "{text}"
    );
    assert!(
        text.contains("allowed by default/shop/checkout egress[0]"),
        "{text}"
    );
    assert!(
        text.contains("on node-2 (ingress of shop/db): allowed"),
        "{text}"
    );
    assert!(
        text.contains("allowed by default/shop/db ingress[0]"),
        "{text}"
    );
    // The tiers before default were walked, in order, and passed.
    let security = text
        .find("security/security.guard egress[1] passed")
        .expect("tier security");
    let default = text.find("start of tier default").expect("tier default");
    assert!(security < default, "{text}");

    let output = explain(
        TIERS,
        "shop/checkout",
        "shop/db",
        "5432",
        &["--output", "json"],
    );
    assert_eq!(output.status.code(), Some(0));
    let explanation = json(&output);
    assert_eq!(explanation["allowed"], true);
    assert_eq!(explanation["walks"].as_array().map(Vec::len), Some(2));
    kernel_rules_are_rendered(TIERS, &explanation);
}

#[test]
fn a_denied_connection_exits_3_and_names_the_deny_rule() {
    let output = explain(
        TIERS,
        "untrusted/u",
        "shop/db",
        "5432",
        &["--output", "json"],
    );
    assert_eq!(output.status.code(), Some(3));
    let explanation = json(&output);
    assert_eq!(explanation["allowed"], false);
    let walk = &explanation["walks"][0];
    assert_eq!(walk["node"], "node-2");
    assert_eq!(
        walk["checks"],
        serde_json::json!(["egress of untrusted/u", "ingress of shop/db"])
    );
    assert_eq!(
        walk["decided_by"],
        "denied by security/security.guard ingress[2] denied"
    );
    let rule = walk["kernel_rule"].as_str().expect("the deciding rule");
    assert!(rule.ends_with("-j DROP"), "{rule}");
    kernel_rules_are_rendered(TIERS, &explanation);
}

#[test]
fn the_legacy_default_deny_and_a_policy_that_opens_it() {
    // default is annotated DefaultDeny; access-nginx lets only access=true pods in.
    let seed = |from: &str| {
        palisade(&[
            "explain",
            "--manifests",
            SEED,
            SEED_POLICIES,
            "--from",
            from,
            "--to",
            "default/nginx",
            "--port",
            "80",
        ])
    };
    let denied = seed("default/client");
    assert_eq!(denied.status.code(), Some(3), "{}", stdout(&denied));
    let allowed = seed("default/trusted-client");
    assert_eq!(allowed.status.code(), Some(0), "{}", stdout(&allowed));
    let text = stdout(&allowed);
    assert!(text.contains("access-nginx"), "{text}");
}

#[test]
fn pods_no_policy_selects_are_allowed_and_said_so() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let cluster = "\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: open}
spec: {nodeName: n1, containers: [{name: c, image: c}]}
status: {phase: Running, podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: open}
spec: {nodeName: n2, containers: [{name: c, image: c}]}
status: {phase: Running, podIP: 10.2.0.1}
";
    std::fs::write(dir.path().join("cluster.yaml"), cluster).expect("writing a manifest");
    let manifests = dir.path().to_str().expect("a UTF-8 path");
    let output = explain(
        manifests,
        "open/a",
        "10.2.0.1",
        "8080",
        &["--protocol", "udp"],
    );
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(text.starts_with("open/a -> open/b: ALLOWED"), "{text}");
    assert!(
        text.contains("no policy selects these pods on this node: allowed"),
        "{text}"
    );
    assert!(text.contains("udp"), "{text}");
}

#[test]
fn the_policies_of_a_pod_in_evaluation_order() {
    let output = palisade(&["explain", "--manifests", TIERS, "--pod", "shop/checkout"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output),
        "shop/checkout on node-1\n\
         ingress, in evaluation order:\n  1. security/security.guard\n  2. platform/platform.monitoring\n  3. default/shop/checkout\n\
         egress, in evaluation order:\n  1. security/security.guard\n  2. default/shop/checkout\n"
    );
    let output = palisade(&[
        "explain",
        "--manifests",
        TIERS,
        "--pod",
        "shop/checkout",
        "--output",
        "json",
    ]);
    let policies = json(&output);
    assert_eq!(policies["node"], "node-1");
    assert_eq!(policies["egress"][1], "default/shop/checkout");
}

#[test]
fn bad_input_exits_1_naming_what_is_wrong() {
    for (args, wanted) in [
        (
            vec![
                "explain",
                "--manifests",
                TIERS,
                "--from",
                "shop/nope",
                "--to",
                "shop/db",
                "--port",
                "1",
            ],
            "no pod shop/nope",
        ),
        (
            vec![
                "explain",
                "--manifests",
                TIERS,
                "--from",
                "not a pod",
                "--to",
                "shop/db",
                "--port",
                "1",
            ],
            "neither NAMESPACE/POD nor an IP address",
        ),
        (
            vec![
                "explain",
                "--manifests",
                TIERS,
                "--from",
                "shop/checkout",
                "--port",
                "1",
            ],
            "--to",
        ),
        (
            vec![
                "explain",
                "--manifests",
                TIERS,
                "--from",
                "10.9.9.9",
                "--to",
                "10.9.9.8",
                "--port",
                "1",
            ],
            "neither end is a pod",
        ),
    ] {
        let output = palisade(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(TIERS).is_dir());
}

const DENIALS: &str = "tests/golden/denials";

#[test]
fn audited_verdicts_say_what_enforcing_would_do() {
    // A Deny rule of a GlobalNetworkPolicy, seen by a pod of an audited namespace.
    let output = explain(DENIALS, "plain/p", "audited/a", "23", &["--output", "json"]);
    assert_eq!(output.status.code(), Some(0), "audited traffic passes");
    let explanation = json(&output);
    assert_eq!(explanation["allowed"], true);
    assert_eq!(explanation["audited"], true);
    let walk = &explanation["walks"][1];
    assert_eq!(walk["checks"][0], "ingress of audited/a");
    let decided = walk["decided_by"].as_str().unwrap();
    assert!(
        decided.contains("enforcing would deny it (default/no-telnet ingress[0] denied)"),
        "{decided}"
    );
    let rule = walk["kernel_rule"].as_str().unwrap();
    assert!(rule.contains("audited, let through"), "{rule}");
    kernel_rules_are_rendered(DENIALS, &explanation);

    // The end of the tier, audited.
    let output = explain(DENIALS, "plain/p", "audited/a", "8080", &[]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(
        text.starts_with("plain/p -> audited/a: ALLOWED (AUDITED: enforcing would deny it)"),
        "{text}"
    );
    assert!(
        text.contains("end of tier default: no policy allowed it"),
        "{text}"
    );

    // What the audited namespace's policies allow is simply allowed.
    let output = explain(DENIALS, "plain/p", "audited/a", "80", &["--output", "json"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(json(&output)["audited"], false);

    // Logging denials changes no verdict.
    let output = explain(DENIALS, "plain/p", "logged/l", "23", &["--output", "json"]);
    assert_eq!(output.status.code(), Some(3));
    let explanation = json(&output);
    assert_eq!(explanation["audited"], false);
    let decided = explanation["walks"][1]["decided_by"].as_str().unwrap();
    assert_eq!(decided, "denied by default/no-telnet ingress[0] denied");
    kernel_rules_are_rendered(DENIALS, &explanation);

    // The node's default, for namespaces without an annotation.
    let output = explain(
        DENIALS,
        "audited/a",
        "plain/p",
        "8080",
        &["--enforcement", "audit"],
    );
    assert_eq!(output.status.code(), Some(0));
    let output = explain(DENIALS, "audited/a", "plain/p", "8080", &[]);
    assert_eq!(output.status.code(), Some(3));
}
