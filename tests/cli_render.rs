//! `palisade render` as users run it: bad input names the file, document, object and field and
//! exits 1; kinds Palisade does not handle are skipped with a warning.

use std::process::Command;

fn render(manifest: &str) -> (i32, String, String) {
    render_with(manifest, &[])
}

fn render_with(manifest: &str, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("input.yaml");
    std::fs::write(&path, manifest).expect("write manifest");
    let output = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["render", "--node", "node-1", "--manifests"])
        .arg(&path)
        .args(args)
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

fn calico(kind: &str, metadata: &str, spec: &str) -> String {
    format!("{GOOD_POD}apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {metadata}\nspec:\n{spec}")
}

fn assert_calico_rejected(manifest: &str, object: &str, field: &str, message: &str) {
    let (code, stdout, stderr) = render(manifest);
    assert_eq!(code, 1, "exit code; stderr: {stderr}");
    assert!(
        stdout.is_empty(),
        "nothing rendered on bad input, got {stdout}"
    );
    for needle in ["input.yaml", "document 2", object, field, message] {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
}

#[test]
fn calico_selector_error_names_the_field_and_position() {
    assert_calico_rejected(
        &calico(
            "GlobalNetworkPolicy",
            "{name: bad}",
            "  selector: \"role == 'a\"\n",
        ),
        "GlobalNetworkPolicy bad",
        "spec.selector",
        "at position 8: unterminated string",
    );
    assert_calico_rejected(
        &calico(
            "NetworkPolicy",
            "{name: bad, namespace: default}",
            "  ingress: [{action: Allow, source: {selector: 'a ==\n b'}}]\n",
        ),
        "NetworkPolicy default/bad",
        "spec.ingress[0].source.selector",
        "position",
    );
}

#[test]
fn calico_rule_validation_follows_calico() {
    let cases = [
        (
            "  ingress: [{action: Allow, destination: {ports: [80]}}]\n",
            "spec.ingress[0].destination.ports",
            "numeric ports need protocol TCP, UDP or SCTP",
        ),
        (
            "  ingress: [{action: Allow, protocol: UDPLite, destination: {ports: [5]}}]\n",
            "spec.ingress[0].destination.ports",
            "protocol UDPLite has no ports",
        ),
        (
            "  egress: [{action: Allow, protocol: TCP, icmp: {type: 8}}]\n",
            "spec.egress[0].icmp",
            "need protocol ICMP or ICMPv6",
        ),
        (
            "  ingress: [{action: Allow, source: {nets: [10.0.0.0/8, 'fd00::/8']}}]\n",
            "spec.ingress[0].source.nets[1]",
            "one rule holds networks of one family",
        ),
        (
            "  ingress: [{action: Allow, source: {notNets: [0.0.0.0/0]}}]\n",
            "spec.ingress[0].source.notNets[0]",
            "catch-all",
        ),
        (
            "  selector: global()\n",
            "spec.selector",
            "global() may only appear in a rule's namespaceSelector",
        ),
        ("  tier: Bad_Tier\n", "spec.tier", "is not a tier name"),
        (
            "  ingress: [{action: Accept}]\n",
            "spec.ingress[0].action",
            "\"Accept\" is not an action",
        ),
    ];
    for (spec, field, message) in cases {
        assert_calico_rejected(
            &calico("GlobalNetworkPolicy", "{name: bad}", spec),
            "GlobalNetworkPolicy bad",
            field,
            message,
        );
    }
}

/// Errors name a `crd.projectcalico.org/v1` object as the file does (what `kubectl get` finds).
#[test]
fn calico_v1_errors_name_the_object_as_stored() {
    assert_calico_rejected(
        &format!(
            "{GOOD_POD}apiVersion: crd.projectcalico.org/v1\nkind: NetworkPolicy\nmetadata: {{name: default.bad, namespace: default}}\nspec:\n  tier: default\n  selector: \"a ==\"\n"
        ),
        "NetworkPolicy default/default.bad",
        "spec.selector",
        "is not a valid selector",
    );
}

#[test]
fn calico_policies_that_never_apply_to_pods_are_skipped_with_a_warning() {
    let (code, stdout, stderr) = render(&calico(
        "GlobalNetworkPolicy",
        "{name: raw}",
        "  doNotTrack: true\n  applyOnForward: true\n  selector: all()\n",
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("GlobalNetworkPolicy raw") && stderr.contains("never to pods"),
        "{stderr}"
    );
    assert!(!stdout.contains("PAL-TO-"), "{stdout}");
    let (code, stdout, stderr) = render(&calico(
        "StagedGlobalNetworkPolicy",
        "{name: preview}",
        "  selector: all()\n  types: [Ingress]\n",
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("INFO") && stderr.contains("nothing is enforced"),
        "{stderr}"
    );
    assert!(!stdout.contains("PAL-TO-"), "{stdout}");
}

#[test]
fn a_calico_default_deny_isolates_the_node_s_pods() {
    let (code, stdout, stderr) = render(&calico(
        "GlobalNetworkPolicy",
        "{name: default-deny}",
        "  selector: all()\n  types: [Ingress, Egress]\n",
    ));
    assert_eq!(code, 0, "{stderr}");
    for needle in ["PAL-TO-", "PAL-FROM-", "end of tier default"] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
}

#[test]
fn a_set_over_the_capacity_is_named_with_its_selector_and_policy_and_not_rendered() {
    let client = |name: &str, ip: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{role: client}}}}\nspec: {{nodeName: node-2, containers: [{{name: c, image: c}}]}}\nstatus: {{podIP: {ip}}}\n---\n")
    };
    let manifest = format!(
        "{}{}{}",
        client("c1", "10.0.1.1"),
        client("c2", "10.0.1.2"),
        policy("  podSelector: {}\n  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]\n")
    );
    let (code, stdout, _) = render(&manifest);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("add pal4-p-") && stdout.contains("10.0.1.2"),
        "{stdout}"
    );

    let (code, stdout, stderr) = render_with(&manifest, &["--max-ipset-size", "1"]);
    assert_eq!(code, 0, "the other policies are still rendered: {stderr}");
    for needle in [
        "would hold 2 elements, over the capacity of 1",
        "role",
        "client",
        "these policies fail closed:",
        "default/bad",
    ] {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
    assert!(
        !stdout.contains("10.0.1.2"),
        "the set is not rendered: {stdout}"
    );
    let (code, _, stderr) = render_with(&manifest, &["--max-ipset-size", "2000000"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("1..=1048576"), "{stderr}");
}
