//! Calico resources into the model: scoping as Calico's update processors do it (the expected
//! selectors are those of Calico's own `updateprocessors` tests and `policy-selector-conversion`
//! cases), validation as its API does it, and the `crd.projectcalico.org/v1` storage form.

use serde_json::{json, Value};

use super::*;
use crate::model::{Direction, Entity, IpProtocol, Port};

fn convert_value(value: Value) -> Result<CalicoResource, ConvertError> {
    let group = ApiGroup::of(value["apiVersion"].as_str().unwrap_or_default()).unwrap();
    let kind = CalicoKind::of(value["kind"].as_str().unwrap_or_default()).unwrap();
    convert(group, kind, &value, &mut Vec::new())
}

fn policy_of(value: Value) -> Policy {
    match convert_value(value) {
        Ok(CalicoResource::Policy(p)) => p,
        other => panic!("expected a policy, got {other:?}"),
    }
}

fn np(spec: Value) -> Value {
    json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
           "metadata": {"name": "p", "namespace": "ns1"}, "spec": spec})
}

fn gnp(spec: Value) -> Value {
    json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
           "metadata": {"name": "g"}, "spec": spec})
}

fn error_of(value: Value) -> ConvertError {
    match convert_value(value) {
        Err(e) => e,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

fn canonical(text: &str) -> String {
    Selector::parse(text).unwrap().to_string()
}

#[test]
fn namespaced_policy_selectors_are_limited_to_their_namespace() {
    let p = policy_of(np(json!({"selector": "app == 'web'"})));
    assert_eq!(
        p.selector.to_string(),
        canonical("(app == 'web') && projectcalico.org/namespace == 'ns1'")
    );
    let p = policy_of(np(json!({})));
    assert_eq!(
        p.selector.to_string(),
        canonical("projectcalico.org/namespace == 'ns1'")
    );
    // No all() rewrite for a NetworkPolicy's serviceAccountSelector.
    let p = policy_of(np(json!({"serviceAccountSelector": "all()"})));
    assert_eq!(
        p.selector.to_string(),
        canonical("(projectcalico.org/namespace == 'ns1') && all()")
    );
    let p = policy_of(np(
        json!({"selector": "a == 'b'", "serviceAccountSelector": "role == 'x'"}),
    ));
    assert_eq!(
        p.selector.to_string(),
        canonical("((a == 'b') && projectcalico.org/namespace == 'ns1') && pcsa.role == 'x'")
    );
}

#[test]
fn global_policy_selectors_fold_in_namespace_and_service_account_selectors() {
    let p = policy_of(gnp(
        json!({"selector": "app == 'web'", "namespaceSelector": "team == 'a'"}),
    ));
    assert_eq!(
        p.selector.to_string(),
        canonical("(app == 'web') && pcns.team == 'a'")
    );
    // all() anywhere in the combined selector becomes "has a namespace".
    let p = policy_of(gnp(
        json!({"selector": "all()", "namespaceSelector": "all()"}),
    ));
    assert_eq!(
        p.selector.to_string(),
        canonical("(has(projectcalico.org/namespace)) && has(projectcalico.org/namespace)")
    );
    let p = policy_of(gnp(
        json!({"selector": "all()", "serviceAccountSelector": "!has(a)"}),
    ));
    assert_eq!(
        p.selector.to_string(),
        canonical("(has(projectcalico.org/serviceaccount)) && !has(pcsa.a)")
    );
    let p = policy_of(gnp(json!({})));
    assert!(
        p.selector.is_all(),
        "an empty GNP selector is every endpoint"
    );
}

fn rule_selector(policy: &Policy, direction: Direction, source: bool) -> Option<String> {
    let rule = &policy.rules(direction).unwrap()[0];
    let side = if source {
        &rule.source
    } else {
        &rule.destination
    };
    side.selector.as_ref().map(ToString::to_string)
}

#[test]
fn rule_selectors_are_scoped_as_calico_scopes_them() {
    let ingress = |source: Value| json!({"ingress": [{"action": "Allow", "source": source}]});
    // Namespaced: a selector is limited to the policy's namespace.
    let p = policy_of(np(ingress(json!({"selector": "app == 'x'"}))));
    assert_eq!(
        rule_selector(&p, Direction::Ingress, true).unwrap(),
        canonical("(projectcalico.org/namespace == 'ns1') && (app == 'x')")
    );
    // Only a notSelector: the positive side becomes "my namespace".
    let p = policy_of(np(ingress(json!({"notSelector": "app == 'x'"}))));
    assert_eq!(
        rule_selector(&p, Direction::Ingress, true).unwrap(),
        canonical("projectcalico.org/namespace == 'ns1'")
    );
    assert_eq!(
        p.ingress.as_ref().unwrap()[0]
            .source
            .not_selector
            .as_ref()
            .unwrap()
            .to_string(),
        canonical("app == 'x'"),
        "the notSelector itself stays unscoped"
    );
    // In a global policy the same rule matches anything not in X, external addresses too.
    let p = policy_of(gnp(ingress(json!({"notSelector": "app == 'x'"}))));
    assert_eq!(rule_selector(&p, Direction::Ingress, true), None);
    // namespaceSelector all() and global().
    let p = policy_of(np(ingress(
        json!({"namespaceSelector": "all()", "selector": "a == 'b'"}),
    )));
    assert_eq!(
        rule_selector(&p, Direction::Ingress, true).unwrap(),
        canonical("(has(projectcalico.org/namespace)) && (a == 'b')")
    );
    let p = policy_of(np(ingress(json!({"namespaceSelector": "global()"}))));
    assert_eq!(
        rule_selector(&p, Direction::Ingress, true).unwrap(),
        canonical("!has(projectcalico.org/namespace)")
    );
    let p = policy_of(np(ingress(json!({"namespaceSelector": "team == 'a'"}))));
    assert_eq!(
        rule_selector(&p, Direction::Ingress, true).unwrap(),
        canonical("pcns.team == 'a'")
    );
    // Nets only: no selector at all.
    let p = policy_of(np(ingress(json!({"nets": ["10.0.0.0/8"]}))));
    assert_eq!(rule_selector(&p, Direction::Ingress, true), None);
    // A global policy's selector spans every namespace and global network sets.
    let p = policy_of(gnp(ingress(json!({"selector": "a == 'b'"}))));
    assert_eq!(
        rule_selector(&p, Direction::Ingress, true).unwrap(),
        canonical("a == 'b'")
    );
    // Service accounts: a pcsa. selector and the names, ANDed, before the selector.
    let p = policy_of(np(ingress(json!({
        "serviceAccounts": {"names": ["sa2", "sa1"], "selector": "role == 'x'"},
        "selector": "app == 'y'",
    }))));
    assert_eq!(
        rule_selector(&p, Direction::Ingress, true).unwrap(),
        canonical("(projectcalico.org/namespace == 'ns1') && ((pcsa.role == 'x' && projectcalico.org/serviceaccount in {'sa1', 'sa2'}) && app == 'y')")
    );
}

#[test]
fn types_default_as_calicos_api_defaults_them() {
    let p = policy_of(np(json!({})));
    assert!(
        p.ingress.is_some() && p.egress.is_none(),
        "no rules: Ingress"
    );
    let p = policy_of(np(json!({"egress": [{"action": "Allow"}]})));
    assert!(
        p.ingress.is_none() && p.egress.is_some(),
        "egress rules only: Egress"
    );
    let p = policy_of(np(
        json!({"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}),
    ));
    assert!(p.ingress.is_some() && p.egress.is_some());
    let p = policy_of(np(
        json!({"types": ["Egress"], "ingress": [{"action": "Allow"}]}),
    ));
    assert!(
        p.ingress.is_none(),
        "rules of an undeclared direction are ignored"
    );
    assert_eq!(p.egress, Some(vec![]), "declared without rules: denies all");
}

#[test]
fn tier_order_and_identity() {
    let p = policy_of(gnp(json!({"tier": "security", "order": 100})));
    assert_eq!(p.tier, "security");
    assert_eq!(p.order.map(|o| o.value()), Some(100.0));
    assert_eq!(p.id, PolicyId::global("g"));
    let p = policy_of(np(json!({})));
    assert_eq!(p.tier, "default");
    assert_eq!(p.order, None);
    assert_eq!(p.id, PolicyId::calico("ns1", "p"));
}

#[test]
fn rules_keep_every_criterion() {
    let p = policy_of(np(json!({"egress": [{
        "action": "Deny",
        "protocol": "UDP",
        "notProtocol": 6,
        "source": {"ports": ["1000:2000"], "notPorts": [1500]},
        "destination": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"], "ports": [53, "dns", "8000:8080"]},
    }]})));
    let rule = &p.egress.as_ref().unwrap()[0];
    assert_eq!(rule.action, Action::Deny);
    assert_eq!(rule.protocol, Some(IpProtocol::Udp));
    assert_eq!(rule.not_protocol, Some(IpProtocol::Tcp));
    assert_eq!(
        rule.source.ports,
        vec![Port::Range {
            start: 1000,
            end: 2000
        }]
    );
    assert_eq!(
        rule.source.not_ports,
        vec![Port::Range {
            start: 1500,
            end: 1500
        }]
    );
    assert_eq!(
        rule.destination.ports,
        vec![
            Port::Range { start: 53, end: 53 },
            Port::Named("dns".into()),
            Port::Range {
                start: 8000,
                end: 8080
            }
        ]
    );
    assert_eq!(rule.destination.nets.len(), 1);
    assert_eq!(rule.destination.not_nets.len(), 1);
    let p = policy_of(np(
        json!({"ingress": [{"action": "Allow", "protocol": "132"}]}),
    ));
    assert_eq!(
        p.ingress.unwrap()[0].protocol,
        Some(IpProtocol::Sctp),
        "a numeric string is a number"
    );
}

#[test]
fn invalid_rules_are_rejected_with_the_field() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"action": "allow"}),
            "spec.ingress[0].action",
            "not an action",
        ),
        (json!({}), "spec.ingress[0].action", "missing"),
        (
            json!({"action": "Allow", "protocol": "tcp"}),
            "spec.ingress[0].protocol",
            "Calico spells it \"TCP\"",
        ),
        (
            json!({"action": "Allow", "protocol": 0}),
            "spec.ingress[0].protocol",
            "1-255",
        ),
        (
            json!({"action": "Allow", "destination": {"ports": [80]}}),
            "spec.ingress[0].destination.ports",
            "need protocol",
        ),
        (
            json!({"action": "Allow", "protocol": "ICMP", "destination": {"ports": ["http"]}}),
            "spec.ingress[0].destination.ports",
            "has no ports",
        ),
        (
            json!({"action": "Allow", "protocol": "UDPLite", "destination": {"ports": [80]}}),
            "spec.ingress[0].destination.ports",
            "has no ports",
        ),
        (
            json!({"action": "Allow", "icmp": {"type": 8}}),
            "spec.ingress[0].icmp",
            "ICMP",
        ),
        (
            json!({"action": "Allow", "protocol": "ICMP", "icmp": {"code": 0}}),
            "spec.ingress[0].icmp.code",
            "needs type",
        ),
        (
            json!({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 255}}),
            "spec.ingress[0].icmp.type",
            "0-254",
        ),
        (
            json!({"action": "Allow", "protocol": "ICMP", "ipVersion": 6}),
            "spec.ingress[0].protocol",
            "ipVersion 6",
        ),
        (
            json!({"action": "Allow", "ipVersion": 5}),
            "spec.ingress[0].ipVersion",
            "4 or 6",
        ),
        (
            json!({"action": "Allow", "source": {"nets": ["10.0.0.0/33"]}}),
            "spec.ingress[0].source.nets[0]",
            "not a CIDR",
        ),
        (
            json!({"action": "Allow", "source": {"nets": ["10.0.0.1"]}}),
            "spec.ingress[0].source.nets[0]",
            "10.0.0.1/32",
        ),
        (
            json!({"action": "Allow", "source": {"nets": ["10.1.2.3/16"]}}),
            "spec.ingress[0].source.nets[0]",
            "host bits",
        ),
        (
            json!({"action": "Allow", "source": {"nets": ["10.0.0.0/8"]}, "destination": {"nets": ["fd00::/64"]}}),
            "spec.ingress[0].destination.nets[0]",
            "one family",
        ),
        (
            json!({"action": "Allow", "ipVersion": 6, "source": {"nets": ["10.0.0.0/8"]}}),
            "spec.ingress[0].source.nets[0]",
            "ipVersion 6",
        ),
        (
            json!({"action": "Allow", "source": {"notNets": ["0.0.0.0/0"]}}),
            "spec.ingress[0].source.notNets[0]",
            "catch-all",
        ),
        (
            json!({"action": "Allow", "source": {"selector": "app = 'x'"}}),
            "spec.ingress[0].source.selector",
            "at position 4",
        ),
        (
            json!({"action": "Allow", "source": {"selector": "global()"}}),
            "spec.ingress[0].source.selector",
            "global()",
        ),
        (
            json!({"action": "Allow", "source": {"namespaceSelector": "global() && a == 'b'"}}),
            "spec.ingress[0].source.namespaceSelector",
            "cannot be combined",
        ),
        (
            json!({"action": "Allow", "source": {"ports": ["a b"]}, "protocol": "TCP"}),
            "spec.ingress[0].source.ports[0]",
            "port name",
        ),
        (
            json!({"action": "Allow", "protocol": "TCP", "source": {"ports": ["90:80"]}}),
            "spec.ingress[0].source.ports[0]",
            "ends before",
        ),
        (
            json!({"action": "Allow", "protocol": "TCP", "source": {"ports": [70000]}}),
            "spec.ingress[0].source.ports[0]",
            "1-65535",
        ),
        (
            json!({"action": "Allow", "destination": {"services": {"name": "web"}}}),
            "spec.ingress[0].destination.services",
            "ingress rule's source",
        ),
        (
            json!({"action": "Allow", "source": {"services": {"name": "web"}, "selector": "a == 'b'"}}),
            "spec.ingress[0].source.services",
            "selector",
        ),
        (
            json!({"action": "Allow", "source": {"services": {}}}),
            "spec.ingress[0].source.services.name",
            "missing",
        ),
        (
            json!({"action": "Deny", "http": {"methods": ["GET"]}}),
            "spec.ingress[0].http",
            "Allow rules",
        ),
        (
            json!({"action": "Allow", "source": {"selector": 3}}),
            "spec.ingress[0].source.selector",
            "string",
        ),
    ];
    for (rule, field, message) in cases {
        let err = error_of(np(json!({"ingress": [rule.clone()]})));
        assert_eq!(err.field, field, "{rule}: {err}");
        assert!(err.message.contains(message), "{rule}: {err}");
        assert_eq!(err.object, "NetworkPolicy ns1/p");
    }
}

#[test]
fn invalid_policies_are_rejected_with_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (np(json!({"selector": "has(a"})), "spec.selector"),
        (np(json!({"selector": "global()"})), "spec.selector"),
        (np(json!({"types": ["ingress"]})), "spec.types[0]"),
        (
            np(json!({"types": ["Ingress", "Ingress"]})),
            "spec.types[1]",
        ),
        (np(json!({"tier": "Bad.Tier"})), "spec.tier"),
        (
            np(json!({"namespaceSelector": "a == 'b'"})),
            "spec.namespaceSelector",
        ),
        (np(json!({"order": "first"})), "spec.order"),
        (
            gnp(json!({"namespaceSelector": "global()"})),
            "spec.namespaceSelector",
        ),
        (
            json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "a.b.c"}}),
            "metadata.name",
        ),
        (
            json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "a.b"}}),
            "metadata.name",
        ),
        (
            json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"}, "spec": {"defaultAction": "Allow"}}),
            "spec.defaultAction",
        ),
        (
            json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "default"}, "spec": {"order": 5}}),
            "spec",
        ),
        (
            json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet", "metadata": {"name": "s"}, "spec": {"nets": ["300.0.0.0/8"]}}),
            "spec.nets[0]",
        ),
        (
            json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkSet", "metadata": {"name": "s", "namespace": "a", "labels": {"projectcalico.org/namespace": "b"}}}),
            "metadata.labels[projectcalico.org/namespace]",
        ),
    ];
    for (object, field) in cases {
        let err = error_of(object.clone());
        assert_eq!(err.field, field, "{object}: {err}");
    }
}

#[test]
fn unknown_fields_warn_and_http_is_enforced_without() {
    let mut warnings = Vec::new();
    let object = np(json!({"ingress": [{"action": "Allow", "protocol": "TCP",
        "http": {"methods": ["GET"]}, "destination": {"notSelecter": "a == 'b'"}}]}));
    let converted = convert(
        ApiGroup::V3,
        CalicoKind::NetworkPolicy,
        &object,
        &mut warnings,
    );
    assert!(converted.is_ok());
    let fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
    assert!(fields.contains(&"spec.ingress[0].http"), "{warnings:?}");
    assert!(
        fields.iter().any(|f| f.ends_with("notSelecter")),
        "a misspelt field is named: {warnings:?}"
    );
}

#[test]
fn host_endpoint_only_and_staged_policies_are_not_enforced() {
    for spec in [
        json!({"doNotTrack": true, "applyOnForward": true}),
        json!({"preDNAT": true, "applyOnForward": true}),
    ] {
        assert!(matches!(
            convert_value(gnp(spec)),
            Ok(CalicoResource::Ignored(_))
        ));
    }
    let staged = json!({"apiVersion": "projectcalico.org/v3", "kind": "StagedNetworkPolicy",
        "metadata": {"name": "s", "namespace": "a"}, "spec": {"selector": "all()"}});
    assert!(matches!(
        convert_value(staged),
        Ok(CalicoResource::Ignored(_))
    ));
}

#[test]
fn crd_v1_objects_take_name_and_labels_from_the_metadata_annotation() {
    let set = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkSet",
        "metadata": {"name": "stored", "labels": {"projectcalico.org/tier": "x", "kept": "v1"},
            "annotations": {"projectcalico.org/metadata":
                "{\"name\":\"real\",\"labels\":{\"role\":\"db\",\"kept\":\"annotation\"}}"}},
        "spec": {"nets": ["10.0.0.1", "192.168.1.7/24"]}});
    let CalicoResource::NetworkSet(set) = convert_value(set).unwrap() else {
        panic!("a network set")
    };
    assert_eq!(set.key.name, "real");
    assert_eq!(set.labels.get("role").map(|v| v.as_str()), Some("db"));
    assert_eq!(
        set.labels.get("kept").map(|v| v.as_str()),
        Some("annotation"),
        "the annotation wins"
    );
    assert_eq!(
        set.nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["10.0.0.1/32", "192.168.1.0/24"],
        "addresses are host networks and host bits are masked"
    );
    // A default-tier policy stored as default.<name> by Calico 3.30 and earlier.
    let old = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "default.deny", "annotations": {"projectcalico.org/metadata": "{}"}},
        "spec": {"tier": "default", "selector": "all()"}});
    assert_eq!(policy_of(old).id.name, "deny");
    let tiered = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "security.deny", "annotations": {"projectcalico.org/metadata": "{}"}},
        "spec": {"tier": "security"}});
    assert_eq!(
        policy_of(tiered).id.name,
        "security.deny",
        "a tier's prefix is part of the name"
    );
    let bare = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "default.x"}, "spec": {}});
    assert_eq!(
        policy_of(bare).id.name,
        "default.x",
        "without the annotation the name is kept"
    );
}

#[test]
fn tiers_and_network_sets() {
    let tier = json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier",
        "metadata": {"name": "security"}, "spec": {"order": 100, "defaultAction": "Pass"}});
    let CalicoResource::Tier(tier) = convert_value(tier).unwrap() else {
        panic!("a tier")
    };
    assert_eq!(tier.default_action, TierAction::Pass);
    assert!(tier.declared);
    let builtin = json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier",
        "metadata": {"name": "default"}, "spec": {"order": 1000000}});
    assert!(
        matches!(convert_value(builtin), Ok(CalicoResource::Tier(t)) if t.default_action == TierAction::Deny)
    );
    let set = json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkSet",
        "metadata": {"name": "s", "namespace": "a", "labels": {"role": "db"}}, "spec": {"nets": ["::/0"]}});
    let CalicoResource::NetworkSet(set) = convert_value(set).unwrap() else {
        panic!("a network set")
    };
    assert_eq!(set.key.namespace.as_deref(), Some("a"));
}

#[test]
fn unreadable_policies_fail_closed_in_their_place() {
    let broken = gnp(
        json!({"tier": "security", "order": 10, "selector": "app == 'x'",
        "types": ["Egress"], "egress": [{"action": "Allow", "protocol": "tcp"}]}),
    );
    assert!(convert_value(broken.clone()).is_err());
    let stand_in = fail_closed(ApiGroup::V3, CalicoKind::GlobalNetworkPolicy, &broken).unwrap();
    assert_eq!(stand_in.tier, "security");
    assert_eq!(stand_in.order.map(|o| o.value()), Some(10.0));
    assert_eq!(stand_in.selector.to_string(), canonical("app == 'x'"));
    assert!(stand_in.ingress.is_none());
    let egress = stand_in.egress.unwrap();
    assert_eq!(egress.len(), 1);
    assert_eq!(egress[0].action, Action::Deny);
    assert_eq!(
        egress[0].destination,
        Entity::default(),
        "denies everything"
    );
    // An unreadable selector: everything the policy could reach.
    let broken = np(json!({"selector": "app == "}));
    let stand_in = fail_closed(ApiGroup::V3, CalicoKind::NetworkPolicy, &broken).unwrap();
    assert_eq!(
        stand_in.selector.to_string(),
        canonical("projectcalico.org/namespace == 'ns1'")
    );
    assert!(stand_in.ingress.is_some());
}
