//! `palisade render` as users run it: bad input names the file, document, object and field and
//! exits 1; kinds Palisade does not handle are skipped with a warning.

use std::process::Command;

fn render(manifest: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("input.yaml");
    std::fs::write(&path, manifest).expect("write manifest");
    let output = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["render", "--node", "node-1", "--manifests"])
        .arg(&path)
        .output()
        .expect("run palisade");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const GOOD_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {nodeName: node-1, containers: [{name: c, image: c}]}\nstatus: {podIP: 10.0.0.1}\n---\n";

fn policy(spec: &str) -> String {
    format!("{GOOD_POD}apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bad, namespace: default}}\nspec:\n{spec}")
}

fn assert_rejected(manifest: &str, expected_field: &str, expected_message: &str) {
    let (code, stdout, stderr) = render(manifest);
    assert_eq!(code, 1, "exit code; stderr: {stderr}");
    assert!(
        stdout.is_empty(),
        "nothing rendered on bad input, got {stdout}"
    );
    for needle in [
        "input.yaml",
        "document 2",
        "NetworkPolicy default/bad",
        expected_field,
        expected_message,
    ] {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
}

#[test]
fn bad_cidr() {
    assert_rejected(
        &policy("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/33}\n"),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "is not a CIDR",
    );
}

#[test]
fn except_outside_cidr() {
    assert_rejected(
        &policy("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}\n"),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "is not inside 10.0.0.0/16",
    );
}

#[test]
fn unknown_protocol() {
    assert_rejected(
        &policy("  podSelector: {}\n  egress:\n  - ports:\n    - {protocol: ICMP, port: 1}\n"),
        "spec.egress[0].ports[0].protocol",
        "unknown protocol \"ICMP\"",
    );
}

#[test]
fn port_out_of_range() {
    assert_rejected(
        &policy("  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 70000}\n"),
        "spec.ingress[0].ports[0].port",
        "out of range",
    );
}

#[test]
fn end_port_below_port() {
    assert_rejected(
        &policy("  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 90, endPort: 80}\n"),
        "spec.ingress[0].ports[0].endPort",
        "below port 90",
    );
}

#[test]
fn bad_selector_operator() {
    assert_rejected(
        &policy("  podSelector:\n    matchExpressions:\n    - {key: a, operator: Equals, values: [b]}\n"),
        "spec.podSelector.matchExpressions[0]",
        "unknown operator \"Equals\"",
    );
}

#[test]
fn bad_policy_type() {
    assert_rejected(
        &policy("  podSelector: {}\n  policyTypes: [Inbound]\n"),
        "spec.policyTypes[0]",
        "unknown policy type",
    );
}

#[test]
fn wrong_field_type_names_the_path() {
    let (code, _, stderr) = render(&policy("  podSelector: {}\n  ingress: {from: []}\n"));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("document 2") && stderr.contains("spec.ingress"),
        "{stderr}"
    );
}

#[test]
fn invalid_yaml_names_the_document() {
    let (code, _, stderr) = render(&format!("{GOOD_POD}kind: [unclosed\n"));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("input.yaml: document 2: invalid YAML"),
        "{stderr}"
    );
}

#[test]
fn unhandled_kinds_are_skipped_with_a_warning() {
    let (code, stdout, stderr) = render(&format!(
        "{GOOD_POD}apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n"
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("skipped Service default/web"), "{stderr}");
    assert!(stdout.contains("PAL-FORWARD"), "{stdout}");
}

#[test]
fn lower_case_protocol_is_accepted_with_a_warning() {
    let (code, stdout, stderr) = render(&policy(
        "  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: udp, port: 53}\n",
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("\"udp\" is not standard"), "{stderr}");
    assert!(stdout.contains("-p udp -m udp --dport 53"), "{stdout}");
}

#[test]
fn invalid_legacy_annotation_warns_and_does_not_isolate() {
    let (code, stdout, stderr) = render(&format!(
        "{GOOD_POD}apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  annotations:\n    net.beta.kubernetes.io/network-policy: '{{\"ingress\": {{\"isolation\": DefaultDeny'\n"
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("Namespace default") && stderr.contains("not isolated"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("PAL-TO-"),
        "pod must not be isolated: {stdout}"
    );
}

#[test]
fn ipv6_text_only_where_ipv6_pods_exist() {
    let (code, stdout, _) = render(GOOD_POD);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("(ipv4)") && !stdout.contains("(ipv6)"),
        "{stdout}"
    );
}
