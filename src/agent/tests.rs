//! The core's scheduling and bookkeeping, driven directly with a recording runner: what it
//! sends to the kernel, and when.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::dataplane::{Backend, RecordingRunner};
use crate::model::kubernetes::{KubernetesPolicy, PolicyRule};
use crate::model::{Namespace, ObjectKey, Pod, Policy, PolicyId, PolicyKind};
use crate::selector::{Labels, Selector};

fn pod(name: &str, app: &str) -> Pod {
    Pod {
        key: ObjectKey::new("default", name),
        node: Some("n1".into()),
        ips: vec![format!("10.0.0.{}", name.len() + 1).parse().unwrap()],
        labels: Labels::from([("app".into(), app.into())]),
        named_ports: vec![],
        service_account: Some("default".into()),
    }
}

fn deny_all() -> Policy {
    KubernetesPolicy {
        key: ObjectKey::new("default", "deny"),
        pod_selector: Selector::all(),
        ingress: Some(vec![PolicyRule::default()]),
        egress: None,
    }
    .to_policy()
}

struct Fixture {
    agent: Agent,
    runner: Arc<RecordingRunner>,
    metrics: Arc<Metrics>,
}

fn fixture() -> Fixture {
    let runner = Arc::new(RecordingRunner::new());
    let metrics = Metrics::new().unwrap();
    let dataplane = Arc::new(Dataplane::new(runner.clone(), Backend::Nft));
    let mut config = AgentConfig::new("n1");
    config.debounce = Duration::ZERO;
    config.retry_min = Duration::ZERO;
    let agent = Agent::new(config, dataplane, Arc::clone(&metrics));
    Fixture {
        agent,
        runner,
        metrics,
    }
}

fn list_everything(agent: &mut Agent) {
    agent.ingest(SourceEvent::NamespacesListed(vec![Namespace {
        name: "default".into(),
        labels: Labels::new(),
        legacy_default_deny: false,
        denials: Default::default(),
    }]));
    agent.ingest(SourceEvent::PodsListed(vec![
        pod("a", "web"),
        pod("bb", "db"),
    ]));
    agent.ingest(SourceEvent::PoliciesListed {
        kind: PolicyKind::Kubernetes,
        valid: vec![deny_all()],
        invalid: vec![],
    });
}

#[test]
fn nothing_touches_the_kernel_until_every_kind_is_listed() {
    let mut f = fixture();
    f.agent
        .ingest(SourceEvent::PodsListed(vec![pod("a", "web")]));
    f.agent.ingest(SourceEvent::PodApplied(pod("bb", "db")));
    f.agent.ingest(SourceEvent::NamespacesListed(vec![]));
    f.agent.run_due_work();
    assert!(
        f.runner.calls().is_empty(),
        "no read or write before the policies are listed"
    );
    assert!(!f.metrics.is_ready());
    f.agent.ingest(SourceEvent::PoliciesListed {
        kind: PolicyKind::Kubernetes,
        valid: vec![],
        invalid: vec![],
    });
    f.agent.run_due_work();
    assert_eq!(
        f.metrics.syncs.get(),
        1,
        "the first sync happens even with nothing to enforce"
    );
    assert!(f.metrics.is_ready());
}

#[test]
fn a_burst_of_events_is_one_sync() {
    let mut f = fixture();
    list_everything(&mut f.agent);
    f.agent.run_due_work();
    assert_eq!(f.metrics.syncs.get(), 1);
    f.runner.clear_calls();
    for i in 0..50 {
        let app = if i % 2 == 0 { "web" } else { "api" };
        f.agent.ingest(SourceEvent::PodApplied(pod("a", app)));
    }
    f.agent.run_due_work();
    assert_eq!(f.metrics.syncs.get(), 2, "fifty events, one sync");
    let restores = f.runner.restore_calls();
    assert!(
        restores.len() <= 3,
        "one transaction per tool, got {restores:?}"
    );
    assert_eq!(f.metrics.watch_events.with_label_values(&["pod"]).get(), 51);
}

#[test]
fn a_failed_apply_clears_readiness_and_retries_with_a_full_resync() {
    let mut f = fixture();
    list_everything(&mut f.agent);
    f.runner
        .set_failure("iptables-nft-restore", "iptables-restore: line 3 failed");
    f.agent.run_due_work();
    assert_eq!(f.metrics.syncs.get(), 0);
    assert!(!f.metrics.is_ready());
    assert_eq!(
        f.metrics.sync_errors.with_label_values(&["restore"]).get(),
        1
    );
    assert_eq!(
        f.metrics
            .restore_errors
            .with_label_values(&["iptables-restore"])
            .get(),
        1
    );
    assert!(f.agent.retry_at.is_some() && f.agent.full_resync);
    f.runner.set_output("iptables-nft-restore", "");
    f.agent.run_due_work();
    assert_eq!(f.metrics.syncs.get(), 1, "the retry succeeds");
    assert!(f.metrics.is_ready());
    assert!(f.agent.retry_at.is_none() && !f.agent.full_resync);
}

#[test]
fn invalid_policies_are_counted_and_fail_closed() {
    let mut f = fixture();
    list_everything(&mut f.agent);
    let mut stand_in = deny_all();
    stand_in.id = PolicyId::kubernetes(&ObjectKey::new("default", "broken"));
    f.agent.ingest(SourceEvent::PolicyInvalid(InvalidPolicy {
        id: stand_in.id.clone(),
        error: "bad CIDR".into(),
        fail_closed: Some(stand_in.clone()),
    }));
    assert_eq!(f.metrics.policies_invalid.get(), 1);
    assert_eq!(f.metrics.policies.get(), 2);
    assert!(
        f.agent.index().policy(&stand_in.id).is_some(),
        "the stand-in isolates its pods"
    );
    let mut fixed = stand_in.clone();
    fixed.ingress = Some(vec![]);
    f.agent.ingest(SourceEvent::PolicyApplied(fixed));
    assert_eq!(f.metrics.policies_invalid.get(), 0);
    f.agent.ingest(SourceEvent::PolicyRemoved(stand_in.id));
    assert_eq!(f.metrics.policies.get(), 1);
}

#[test]
fn a_set_over_capacity_is_counted_until_it_fits() {
    let runner = Arc::new(RecordingRunner::new());
    let metrics = Metrics::new().unwrap();
    let dataplane = Arc::new(Dataplane::new(runner, Backend::Nft));
    let mut config = AgentConfig::new("n1");
    config.debounce = Duration::ZERO;
    config.compiler.set_capacity = 1;
    let told: Arc<std::sync::Mutex<Vec<Vec<String>>>> = Arc::default();
    let listener = Arc::clone(&told);
    config.overflow_listener = Some(OverflowListener::new(move |now| {
        let policies = now
            .iter()
            .flat_map(|o| o.policies.iter().map(|p| format!("{p} reads {}", o.set)))
            .collect();
        listener.lock().unwrap().push(policies);
    }));
    let mut agent = Agent::new(config, dataplane, Arc::clone(&metrics));
    list_everything(&mut agent);
    // Ingress from every pod: a set of both pods' addresses, one more than fits.
    let policy = KubernetesPolicy {
        key: ObjectKey::new("default", "from-pods"),
        pod_selector: Selector::all(),
        ingress: Some(vec![PolicyRule {
            peers: Some(vec![crate::model::kubernetes::Peer::Pods(
                crate::model::kubernetes::Selection::all_pods(),
            )]),
            ports: vec![],
        }]),
        egress: None,
    }
    .to_policy();
    agent.ingest(SourceEvent::PolicyApplied(policy));
    agent.run_due_work();
    assert_eq!(metrics.ipsets_over_capacity.get(), 1);
    let first = told.lock().unwrap().clone();
    assert_eq!(first.len(), 1, "told once: {first:?}");
    assert_eq!(first[0].len(), 1);
    assert!(
        first[0][0].starts_with("default/from-pods reads "),
        "{first:?}"
    );
    agent.ingest(SourceEvent::PodRemoved(ObjectKey::new("default", "bb")));
    agent.run_due_work();
    assert_eq!(metrics.ipsets_over_capacity.get(), 0, "one pod fits");
    let told = told.lock().unwrap().clone();
    assert_eq!(told.len(), 2, "told again when it fits: {told:?}");
    assert!(told[1].is_empty());
}

#[test]
fn a_relisting_replaces_what_is_known_without_losing_the_rest() {
    let mut f = fixture();
    list_everything(&mut f.agent);
    f.agent.run_due_work();
    f.agent
        .ingest(SourceEvent::PodsListed(vec![pod("a", "web")]));
    assert_eq!(f.agent.index().pod_count(), 1);
    assert_eq!(
        f.agent.index().policy_count(),
        1,
        "other kinds are untouched by a pod re-list"
    );
}

fn is_read(call: &crate::dataplane::RecordedCall) -> bool {
    !call.is_restore()
}

#[test]
fn the_first_change_after_a_quiet_period_syncs_at_once_and_the_rest_wait_for_the_window() {
    let mut f = fixture();
    f.agent.config.debounce = Duration::from_secs(3600);
    list_everything(&mut f.agent);
    f.agent.run_due_work();
    assert_eq!(f.metrics.syncs.get(), 1, "the initial sync does not wait");

    // Within the window after that sync: gathered, not synced.
    f.agent.ingest(SourceEvent::PodApplied(pod("a", "api")));
    f.agent.ingest(SourceEvent::PodApplied(pod("bb", "api")));
    f.agent.run_due_work();
    assert_eq!(f.metrics.syncs.get(), 1, "changes within the window wait");

    // The window ends: one sync takes both changes.
    f.agent.last_sync = Some(Instant::now() - Duration::from_secs(3601));
    f.agent.run_due_work();
    assert_eq!(f.metrics.syncs.get(), 2);
    assert!(f.agent.dirty_since.is_none());

    // Quiet for longer than the window: the next change is synced as soon as it is seen.
    f.agent.last_sync = Some(Instant::now() - Duration::from_secs(3601));
    f.agent.ingest(SourceEvent::PodApplied(pod("a", "web")));
    f.agent.run_due_work();
    assert_eq!(f.metrics.syncs.get(), 3, "leading edge");
}

#[test]
fn syncs_after_the_first_do_not_read_the_kernel() {
    let mut f = fixture();
    list_everything(&mut f.agent);
    f.agent.run_due_work();
    assert!(f.runner.calls().iter().any(is_read), "the first sync reads");
    assert_eq!(f.metrics.kernel_reads.get(), 1);
    f.runner.clear_calls();
    // A new local pod: its chains are written.
    f.agent.ingest(SourceEvent::PodApplied(pod("ccc", "web")));
    f.agent.run_due_work();
    let calls = f.runner.calls();
    assert!(!calls.is_empty(), "the change is written");
    assert!(!calls.iter().any(is_read), "no read: {calls:?}");
    assert_eq!(f.metrics.kernel_reads.get(), 1);
}

#[test]
fn a_change_that_changes_nothing_here_runs_no_command() {
    let mut f = fixture();
    list_everything(&mut f.agent);
    f.agent.run_due_work();
    f.runner.clear_calls();
    let mut elsewhere = pod("remote", "web");
    elsewhere.node = Some("n2".into());
    elsewhere.ips = vec!["10.0.9.9".parse().unwrap()];
    // No policy here reads pods' labels into a set: a pod on another node changes nothing.
    f.agent.ingest(SourceEvent::PodApplied(elsewhere));
    f.agent.run_due_work();
    assert!(f.runner.calls().is_empty(), "{:?}", f.runner.calls());
    assert_eq!(f.metrics.syncs_without_changes.get(), 1);
    assert_eq!(f.metrics.syncs.get(), 2, "it still counts as a sync");
    assert!(f.agent.dirty_since.is_none());
}

#[test]
fn a_refresh_that_finds_drift_makes_the_repair_read_the_kernel() {
    let mut f = fixture();
    list_everything(&mut f.agent);
    f.agent.run_due_work();
    assert!(f.agent.dataplane.remembers());
    // The recording kernel prints nothing back: to a refresh, everything has gone missing.
    f.runner.clear_calls();
    f.agent.refresh();
    assert!(f.metrics.drift_repairs.get() > 0);
    assert_eq!(
        f.metrics.kernel_reads.get(),
        2,
        "the repair read the kernel again"
    );
    assert!(
        f.runner.calls().iter().any(|c| c.is_restore()),
        "and rewrote it"
    );
}
