use super::*;
use crate::model::kubernetes::KubernetesPolicy;
use crate::selector::Selector;

fn pod(ns: &str, name: &str, node: &str, ip: &str) -> Pod {
    Pod {
        key: ObjectKey::new(ns, name),
        node: Some(node.into()),
        ips: vec![ip.parse().unwrap()],
        labels: Labels::new(),
        named_ports: vec![],
        service_account: Some("default".into()),
    }
}

fn labelled(mut pod: Pod, pairs: &[(&str, &str)]) -> Pod {
    pod.labels = pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    pod
}

#[test]
fn pod_updates_report_before_and_after_and_keep_lookups_current() {
    let mut index = ClusterIndex::new();
    assert!(index.upsert_pod(pod("a", "p", "n1", "10.0.0.1")).is_some());
    assert!(
        index.upsert_pod(pod("a", "p", "n1", "10.0.0.1")).is_none(),
        "no-op update"
    );
    let Some(Change::Pod { before, after, .. }) = index.upsert_pod(pod("a", "p", "n2", "10.0.0.2"))
    else {
        panic!("expected a pod change")
    };
    assert_eq!(before.unwrap().node.as_deref(), Some("n1"));
    assert_eq!(after.unwrap().node.as_deref(), Some("n2"));
    assert_eq!(index.pods_on_node("n1").count(), 0);
    assert_eq!(index.pods_on_node("n2").count(), 1);
    assert_eq!(index.pods_with_ip(&"10.0.0.1".parse().unwrap()).count(), 0);
    assert_eq!(index.pods_with_ip(&"10.0.0.2".parse().unwrap()).count(), 1);
    assert!(index.remove_pod(&ObjectKey::new("a", "p")).is_some());
    assert_eq!(index.pod_count(), 0);
    assert_eq!(index.pods_in_namespace("a").count(), 0);
    assert!(index.pods_by_label.is_empty());
}

#[test]
fn replace_removes_what_is_gone() {
    let mut index = ClusterIndex::new();
    index.upsert_pod(pod("a", "p", "n1", "10.0.0.1"));
    index.upsert_pod(pod("a", "q", "n1", "10.0.0.2"));
    let changes = index.replace_pods(vec![pod("a", "q", "n1", "10.0.0.2")]);
    assert_eq!(changes.len(), 1);
    assert!(index.pod(&ObjectKey::new("a", "p")).is_none());
}

#[test]
fn candidate_pods_come_from_the_label_index() {
    let mut index = ClusterIndex::new();
    index.upsert_pod(labelled(
        pod("a", "web", "n1", "10.0.0.1"),
        &[("app", "web")],
    ));
    index.upsert_pod(labelled(pod("a", "db", "n1", "10.0.0.2"), &[("app", "db")]));
    index.upsert_pod(labelled(
        pod("b", "web", "n1", "10.0.0.3"),
        &[("app", "web")],
    ));
    index.upsert_namespace(Namespace {
        name: "b".into(),
        labels: Labels::from([("team".into(), "x".into())]),
        legacy_default_deny: false,
        denials: Default::default(),
    });
    let names = |text: &str| {
        let selector = Selector::parse(text).unwrap();
        let mut out: Vec<String> = index
            .candidate_pods(selector.expr())
            .ids
            .into_iter()
            .filter_map(|id| index.pod_by_id(id))
            .map(|p| p.key.to_string())
            .collect();
        out.sort();
        out
    };
    assert_eq!(names("app == 'web'"), ["a/web", "b/web"]);
    assert_eq!(names("app == 'web' && pcns.team == 'x'"), ["b/web"]);
    assert_eq!(
        names("projectcalico.org/namespace == 'a'"),
        ["a/db", "a/web"]
    );
    assert_eq!(names("app == 'db' || pcns.team == 'x'"), ["a/db", "b/web"]);
    assert_eq!(
        names("app != 'web'").len(),
        3,
        "a negation falls back to every pod"
    );
    assert!(names("app == 'nope'").is_empty());
}

#[test]
fn the_legacy_annotation_is_a_policy_of_its_namespace() {
    let mut index = ClusterIndex::new();
    let ns = |deny| Namespace {
        name: "a".into(),
        labels: Labels::new(),
        legacy_default_deny: deny,
        denials: Default::default(),
    };
    let changes = index.upsert_namespace(ns(true));
    assert_eq!(changes.len(), 2);
    let id = KubernetesPolicy::legacy_default_deny("a").to_policy().id;
    assert!(index.policy(&id).is_some());
    assert!(
        index
            .replace_policies(&[crate::model::PolicyKind::Kubernetes], vec![])
            .is_empty(),
        "a re-list of NetworkPolicies keeps it"
    );
    assert_eq!(index.upsert_namespace(ns(false)).len(), 2);
    assert!(index.policy(&id).is_none());
}

#[test]
fn policies_selecting_a_pod_come_from_the_selector_index() {
    let mut index = ClusterIndex::new();
    let web = labelled(pod("a", "web", "n1", "10.0.0.1"), &[("app", "web")]);
    index.upsert_pod(web.clone());
    for (name, selector) in [
        ("web", "app == 'web'"),
        ("db", "app == 'db'"),
        ("all", "all()"),
    ] {
        index.upsert_policy(Policy {
            id: PolicyId::global(name),
            tier: "default".into(),
            order: None,
            selector: Selector::parse(selector).unwrap(),
            ingress: Some(vec![]),
            egress: None,
        });
    }
    let mut names: Vec<String> = index
        .policies_selecting(&web)
        .iter()
        .map(|p| p.id.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["all", "web"]);
}

/// Exact candidates are taken without evaluation, so each must match; an inexact list is
/// evaluated and may hold more.
#[test]
fn candidates_are_exact_only_when_every_one_matches() {
    let mut index = ClusterIndex::new();
    index.upsert_namespace(Namespace {
        name: "b".into(),
        labels: Labels::from([("team".into(), "x".into())]),
        legacy_default_deny: false,
        denials: Default::default(),
    });
    index.upsert_pod(labelled(
        pod("a", "web", "n1", "10.0.0.1"),
        &[("app", "web")],
    ));
    index.upsert_pod(labelled(pod("b", "db", "n1", "10.0.0.2"), &[("app", "db")]));
    let check = |index: &ClusterIndex, text: &str| -> bool {
        let selector = Selector::parse(text).unwrap();
        let found = index.candidate_pods(selector.expr());
        let matching = found
            .ids
            .iter()
            .filter_map(|id| index.pod_by_id(*id))
            .filter(|p| selector.matches(&index.pod_view(p)))
            .count();
        if found.exact() {
            assert_eq!(matching, found.ids.len(), "{text}: exact but not all match");
        }
        found.exact()
    };
    assert!(check(&index, "app == 'web'"));
    assert!(check(&index, "app in {'web', 'db'} || pcns.team == 'x'"));
    assert!(check(&index, "has(app)"));
    assert!(check(&index, "projectcalico.org/namespace == 'a'"));
    assert!(check(&index, "all()"));
    assert!(!check(&index, "app starts with 'w'"));
    assert!(!check(&index, "app == 'web' && has(tier)"));
    assert!(!check(&index, "app != 'web'"));
    assert!(check(&index, "pcns.team == 'x'"));
    // A pod's own `pcns.team` hides its namespace's: the namespace's pods no longer all match.
    index.upsert_pod(labelled(
        pod("b", "odd", "n1", "10.0.0.3"),
        &[("pcns.team", "y")],
    ));
    assert!(!check(&index, "pcns.team == 'x'"));
}
