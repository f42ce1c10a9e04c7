//! The dataplane against a real kernel: every test programs its own network namespace, once
//! with the legacy backend and once with nft, and checks the result with the real tools.
//!
//! Needs root (network namespaces, iptables, ipset); without it every test says so and passes.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use palisade::compiler::desired::{
    Action, Chain, CtState, DesiredState, FamilyState, IpSet, IpSetKind, Match, Rule, SetDims,
    SetEntry,
};
use palisade::dataplane::{
    detect_backend, ApplyOptions, Backend, BackendReason, CommandOutput, CommandRunner, Dataplane,
    DataplaneError, NetnsRunner,
};
use palisade::model::{Family, Protocol};

const BACKENDS: [Backend; 2] = [Backend::Legacy, Backend::Nft];

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: needs root (network namespaces, iptables, ipset)");
            return;
        }
    };
}

/// A network namespace that exists for the life of the value, deleted even when a test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "pal-dp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        host(&["ip", "netns", "add", &name]);
        let netns = Self { name };
        netns.sh("ip link set lo up");
        netns
    }

    /// Runs a shell script inside the namespace; it must succeed.
    fn sh(&self, script: &str) -> String {
        host(&["ip", "netns", "exec", &self.name, "sh", "-ec", script])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn host(argv: &[&str]) -> String {
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(
        output.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs everything in the namespace and remembers every restore input.
struct Watched {
    inner: NetnsRunner,
    restores: Mutex<Vec<(String, String)>>,
}

impl Watched {
    fn new(netns: &Netns) -> Arc<Self> {
        Arc::new(Self {
            inner: NetnsRunner::new(netns.name.clone()),
            restores: Mutex::new(Vec::new()),
        })
    }

    fn take_restores(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.restores.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl CommandRunner for Watched {
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, DataplaneError> {
        if let Some(input) = stdin {
            self.restores
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((program.to_string(), input.to_string()));
        }
        self.inner.run(program, args, stdin)
    }
}

fn iptables(backend: Backend, family: Family) -> String {
    let base = match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    };
    format!("{base}-{backend}")
}

fn save(netns: &Netns, backend: Backend, family: Family) -> String {
    netns.sh(&format!("{}-save", iptables(backend, family)))
}

/// The lines of a save that are not Palisade's, without comments and chain counters: what
/// must stay byte-identical whatever Palisade does.
fn foreign_lines(save: &str) -> Vec<String> {
    save.lines()
        .filter(|line| !line.starts_with('#') && !line.contains("PAL-") && !line.contains("pal4-"))
        .map(|line| match line.rfind(" [") {
            Some(at) if line.starts_with(':') => line[..at].to_string(),
            _ => line.to_string(),
        })
        .collect()
}

fn owned_lines(save: &str) -> Vec<String> {
    save.lines()
        .filter(|line| line.contains("PAL-") || line.contains("pal4-") || line.contains("pal6-"))
        .map(str::to_string)
        .collect()
}

fn ip(text: &str) -> SetEntry {
    SetEntry::Ip(text.parse().expect("test address"))
}

fn net(text: &str, nomatch: bool) -> SetEntry {
    SetEntry::Net {
        net: text.parse().expect("test network"),
        nomatch,
    }
}

fn set(kind: IpSetKind, family: Family, members: Vec<SetEntry>) -> IpSet {
    IpSet {
        kind,
        family,
        description: format!("test {}", kind.as_str()),
        members: members.into_iter().collect::<BTreeSet<_>>(),
    }
}

fn rule(matches: Vec<Match>, action: Action, comment: &str) -> Rule {
    Rule::new(matches, action, comment)
}

const MARK: Action = Action::SetMark {
    value: 0x10000,
    mask: 0x10000,
};

/// PAL-FORWARD dispatches 10.0.0.5 to PAL-TO-a and 10.0.0.6 to PAL-TO-b. PAL-TO-a accepts
/// established traffic, marks traffic from the pod set, the ipBlock (with an except and a /32)
/// and a named port, and drops the rest; PAL-TO-b returns.
fn small_v4() -> FamilyState {
    let mut v4 = FamilyState::default();
    v4.ipsets.insert(
        "pal4-p-pods".into(),
        set(
            IpSetKind::HashIp,
            Family::V4,
            vec![ip("10.0.0.5"), ip("10.0.0.6")],
        ),
    );
    v4.ipsets.insert(
        "pal4-b-block".into(),
        set(
            IpSetKind::HashNet,
            Family::V4,
            vec![
                net("192.168.0.0/16", false),
                net("192.168.1.0/24", true),
                net("172.16.0.9/32", false),
            ],
        ),
    );
    v4.ipsets.insert(
        "pal4-n-web".into(),
        set(
            IpSetKind::HashIpPort,
            Family::V4,
            vec![SetEntry::IpPort {
                ip: "10.0.0.5".parse().expect("ip"),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
        ),
    );
    v4.chains.insert(
        "PAL-FORWARD".into(),
        Chain {
            rules: vec![
                rule(
                    vec![Match::Destination("10.0.0.5/32".parse().expect("net"))],
                    Action::Jump("PAL-TO-a".into()),
                    "default/a",
                ),
                rule(
                    vec![Match::Destination("10.0.0.6/32".parse().expect("net"))],
                    Action::Jump("PAL-TO-b".into()),
                    "default/b",
                ),
            ],
        },
    );
    v4.chains.insert(
        "PAL-TO-a".into(),
        Chain {
            rules: vec![
                rule(
                    vec![Match::CtState(CtState::EstablishedOrRelated)],
                    Action::Accept,
                    "default/a established",
                ),
                rule(
                    vec![Match::in_set("pal4-p-pods", SetDims::Src)],
                    MARK,
                    "default/allow ingress[0]",
                ),
                rule(
                    vec![Match::in_set("pal4-b-block", SetDims::Src)],
                    MARK,
                    "default/allow ingress[1]",
                ),
                rule(
                    vec![
                        Match::protocol(Protocol::Tcp),
                        Match::in_set("pal4-n-web", SetDims::DstPort),
                    ],
                    MARK,
                    "default/web ingress[0]",
                ),
                rule(
                    vec![Match::Mark {
                        value: 0x10000,
                        mask: 0x10000,
                    }],
                    Action::Return,
                    "default/a allowed",
                ),
                rule(vec![], Action::Drop, "default/a default deny"),
            ],
        },
    );
    v4.chains.insert(
        "PAL-TO-b".into(),
        Chain {
            rules: vec![rule(vec![], Action::Return, "default/b not isolated")],
        },
    );
    v4
}

fn small_v6() -> FamilyState {
    let mut v6 = FamilyState::default();
    v6.ipsets.insert(
        "pal6-p-pods".into(),
        set(
            IpSetKind::HashIp,
            Family::V6,
            vec![ip("fd00::5"), ip("fd00::6")],
        ),
    );
    v6.ipsets.insert(
        "pal6-b-block".into(),
        set(
            IpSetKind::HashNet,
            Family::V6,
            vec![
                net("::/0", false),
                net("fd00:1::/64", true),
                net("2001:db8::1/128", false),
            ],
        ),
    );
    v6.chains.insert(
        "PAL-FORWARD".into(),
        Chain {
            rules: vec![rule(
                vec![Match::Destination("fd00::5/128".parse().expect("net"))],
                Action::Jump("PAL-TO-a6".into()),
                "default/a",
            )],
        },
    );
    v6.chains.insert(
        "PAL-TO-a6".into(),
        Chain {
            rules: vec![
                rule(
                    vec![Match::in_set("pal6-p-pods", SetDims::Src)],
                    Action::Accept,
                    "default/allow ingress[0]",
                ),
                rule(
                    vec![Match::in_set("pal6-b-block", SetDims::Src)],
                    Action::Accept,
                    "default/allow ingress[1]",
                ),
                rule(vec![], Action::Drop, "default/a default deny"),
            ],
        },
    );
    v6
}

fn v4_only() -> DesiredState {
    DesiredState {
        v4: small_v4(),
        v6: FamilyState::default(),
    }
}

fn dual_stack() -> DesiredState {
    DesiredState {
        v4: small_v4(),
        v6: small_v6(),
    }
}

fn apply(dataplane: &Dataplane, state: &DesiredState) -> palisade::dataplane::ApplyReport {
    dataplane
        .apply(state, ApplyOptions::default())
        .unwrap_or_else(|e| panic!("apply failed: {e}"))
}

/// Foreign objects a node already has: a kube-proxy-like chain with rules, one using a
/// foreign set, jumped to from FORWARD.
fn add_foreign_objects(netns: &Netns, backend: Backend) {
    let ipt = iptables(backend, Family::V4);
    netns.sh(&format!(
        "ipset create KUBE-CLUSTER-IP hash:ip,port family inet
         ipset add KUBE-CLUSTER-IP 10.96.0.1,tcp:443
         ipset add KUBE-CLUSTER-IP 10.96.0.10,udp:53
         {ipt} -w -N KUBE-SERVICES
         {ipt} -w -A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -m comment --comment 'cluster ips' -j ACCEPT
         {ipt} -w -A KUBE-SERVICES -d 10.96.0.0/12 -j DROP
         {ipt} -w -A KUBE-SERVICES -p tcp --dport 22 -j RETURN
         {ipt} -w -A FORWARD -m comment --comment 'kubernetes forwarding rules' -j KUBE-SERVICES
         {ipt} -w -A FORWARD -j ACCEPT"
    ));
}

fn hook_count(save: &str) -> usize {
    save.lines()
        .filter(|line| line.starts_with("-A FORWARD") && line.ends_with("-j PAL-FORWARD"))
        .count()
}

#[test]
fn fresh_apply_creates_everything_and_the_hook_once_and_reapply_writes_nothing() {
    require_root!();
    for backend in BACKENDS {
        let netns = Netns::new();
        let runner = Watched::new(&netns);
        let dataplane = Dataplane::new(runner.clone(), backend);
        let state = dual_stack();

        let first = apply(&dataplane, &state);
        assert!(first.changes > 0, "{backend}");
        let v4 = save(&netns, backend, Family::V4);
        let v6 = save(&netns, backend, Family::V6);
        for chain in ["PAL-FORWARD", "PAL-TO-a", "PAL-TO-b"] {
            assert!(
                v4.contains(&format!(":{chain} - ")),
                "{backend}: {chain} missing:\n{v4}"
            );
        }
        assert!(v6.contains(":PAL-TO-a6 - "), "{backend}:\n{v6}");
        assert_eq!(hook_count(&v4), 1, "{backend}:\n{v4}");
        assert_eq!(hook_count(&v6), 1, "{backend}:\n{v6}");
        assert!(
            v4.lines()
                .any(|l| l.starts_with("-A FORWARD") && l.contains("palisade: policy enforcement")),
            "{backend}"
        );
        let sets = netns.sh("ipset save");
        assert!(
            sets.contains("add pal4-b-block 192.168.1.0/24 nomatch"),
            "{sets}"
        );
        assert!(sets.contains("add pal4-b-block 172.16.0.9\n"), "{sets}");
        assert!(sets.contains("add pal4-n-web 10.0.0.5,tcp:8080"), "{sets}");
        assert!(
            sets.contains("add pal6-b-block ::/1\n"),
            "/0 stored as halves: {sets}"
        );
        assert!(sets.contains("add pal6-b-block 8000::/1\n"), "{sets}");
        assert!(sets.contains("add pal6-b-block 2001:db8::1\n"), "{sets}");
        runner.take_restores();

        let second = apply(&dataplane, &state);
        assert_eq!(second.changes, 0, "{backend}: {second:?}");
        assert!(runner.take_restores().is_empty(), "{backend}");
        assert_eq!(hook_count(&save(&netns, backend, Family::V4)), 1);
        assert!(dataplane.verify(&state).expect("verify").is_empty());
    }
}

#[test]
fn foreign_chains_and_sets_are_untouched_by_apply_and_cleanup() {
    require_root!();
    for backend in BACKENDS {
        let netns = Netns::new();
        add_foreign_objects(&netns, backend);
        let foreign_sets = |netns: &Netns| netns.sh("ipset save KUBE-CLUSTER-IP");
        let before_rules = foreign_lines(&save(&netns, backend, Family::V4));
        let before_sets = foreign_sets(&netns);
        assert!(before_rules.iter().any(|l| l.contains("KUBE-CLUSTER-IP")));

        let dataplane = Dataplane::new(Watched::new(&netns), backend);
        apply(&dataplane, &v4_only());
        let applied = save(&netns, backend, Family::V4);
        assert!(applied.contains(":PAL-TO-a"), "{applied}");
        assert_eq!(
            foreign_lines(&applied),
            before_rules,
            "{backend} after apply"
        );
        assert_eq!(foreign_sets(&netns), before_sets, "{backend} after apply");
        let first_forward_rule = applied.lines().find(|l| l.starts_with("-A FORWARD"));
        assert!(
            first_forward_rule.is_some_and(|l| l.ends_with("-j PAL-FORWARD")),
            "{backend}: the hook goes first:\n{applied}"
        );

        let cleaned = dataplane.cleanup(ApplyOptions::default()).expect("cleanup");
        assert!(cleaned.changes > 0);
        let after = save(&netns, backend, Family::V4);
        assert_eq!(
            owned_lines(&after),
            Vec::<String>::new(),
            "{backend}:\n{after}"
        );
        assert_eq!(
            foreign_lines(&after),
            before_rules,
            "{backend} after cleanup"
        );
        assert_eq!(foreign_sets(&netns), before_sets, "{backend} after cleanup");
        assert_eq!(owned_lines(&netns.sh("ipset save")), Vec::<String>::new());
    }
}

/// `(packets, bytes)` of each rule of `chain`, from `iptables-save -c`.
fn rule_counters(netns: &Netns, backend: Backend, chain: &str) -> Vec<(u64, u64)> {
    let saved = netns.sh(&format!(
        "{}-save -c -t filter",
        iptables(backend, Family::V4)
    ));
    let prefix = format!(" -A {chain} ");
    saved
        .lines()
        .filter(|line| line.contains(&prefix))
        .filter_map(|line| {
            let counters = line.strip_prefix('[')?.split(']').next()?;
            let (packets, bytes) = counters.split_once(':')?;
            Some((packets.parse().ok()?, bytes.parse().ok()?))
        })
        .collect()
}

#[test]
fn counters_of_untouched_chains_survive_a_change_elsewhere() {
    require_root!();
    for backend in BACKENDS {
        let netns = Netns::new();
        let runner = Watched::new(&netns);
        let dataplane = Dataplane::new(runner.clone(), backend);
        let state = v4_only();
        apply(&dataplane, &state);

        // Send local traffic through both pod chains (FORWARD would need a second namespace):
        // a test rule in OUTPUT jumps to each, and both end in RETURN or a drop of our probe.
        let ipt = iptables(backend, Family::V4);
        netns.sh(&format!(
            "{ipt} -w -A OUTPUT -p udp -d 127.0.0.1/32 --dport 9 -j PAL-TO-b
             {ipt} -w -A OUTPUT -p udp -d 127.0.0.1/32 --dport 9 -j PAL-TO-a
             bash -c 'for i in 1 2 3 4 5; do echo probe > /dev/udp/127.0.0.1/9 || true; done' 2>/dev/null"
        ));
        let untouched_before = rule_counters(&netns, backend, "PAL-TO-a");
        let rewritten_before = rule_counters(&netns, backend, "PAL-TO-b");
        let dropped = untouched_before.last().copied().unwrap_or_default();
        assert!(
            dropped.0 >= 5,
            "{backend}: probes reached PAL-TO-a: {untouched_before:?}"
        );
        assert!(
            rewritten_before[0].0 >= 5,
            "{backend}: {rewritten_before:?}"
        );
        runner.take_restores();

        let mut changed = state.clone();
        changed
            .v4
            .chains
            .get_mut("PAL-TO-b")
            .expect("chain b")
            .rules
            .insert(
                0,
                rule(
                    vec![Match::in_set("pal4-p-pods", SetDims::Src)],
                    Action::Accept,
                    "default/b new policy",
                ),
            );
        let report = apply(&dataplane, &changed);
        assert_eq!(report.v4.chains_written, 1, "{backend}");

        let sent = runner.take_restores();
        assert!(
            sent.iter().all(|(_, input)| !input.contains("PAL-TO-a")),
            "{backend}: the untouched chain is not mentioned: {sent:?}"
        );
        assert_eq!(
            rule_counters(&netns, backend, "PAL-TO-a"),
            untouched_before,
            "{backend}: counters of the untouched chain survive"
        );
        let rewritten_after = rule_counters(&netns, backend, "PAL-TO-b");
        assert_eq!(
            rewritten_after,
            [(0, 0), (0, 0)],
            "{backend}: the rewritten chain starts from zero, so the check above can fail"
        );
    }
}

#[test]
fn stale_chains_and_sets_are_removed() {
    require_root!();
    for backend in BACKENDS {
        let netns = Netns::new();
        let runner = Watched::new(&netns);
        let dataplane = Dataplane::new(runner.clone(), backend);
        apply(&dataplane, &dual_stack());

        // Pod b is gone, and so is the ipBlock policy and IPv6 altogether.
        let mut smaller = v4_only();
        smaller.v4.chains.remove("PAL-TO-b");
        smaller
            .v4
            .chains
            .get_mut("PAL-FORWARD")
            .expect("forward")
            .rules
            .pop();
        smaller.v4.ipsets.remove("pal4-b-block");
        smaller
            .v4
            .chains
            .get_mut("PAL-TO-a")
            .expect("chain a")
            .rules
            .remove(2);
        let report = apply(&dataplane, &smaller);
        assert_eq!(report.v4.chains_deleted, 1, "{backend}");
        assert_eq!(report.v4.sets_destroyed, 1, "{backend}");
        assert_eq!(report.v6.chains_deleted, 2, "{backend}");
        assert_eq!(report.v6.hooks_removed, 1, "{backend}");
        assert_eq!(report.v6.sets_destroyed, 2, "{backend}");

        let v4 = save(&netns, backend, Family::V4);
        assert!(!v4.contains("PAL-TO-b"), "{backend}:\n{v4}");
        assert!(!v4.contains("pal4-b-block"), "{backend}:\n{v4}");
        assert_eq!(hook_count(&v4), 1);
        assert_eq!(
            owned_lines(&save(&netns, backend, Family::V6)),
            Vec::<String>::new()
        );
        let sets = netns.sh("ipset list -n");
        assert!(
            !sets.contains("pal4-b-block") && !sets.contains("pal6-"),
            "{sets}"
        );
        assert!(sets.contains("pal4-p-pods"), "{sets}");

        runner.take_restores();
        assert_eq!(apply(&dataplane, &smaller).changes, 0);
        assert!(runner.take_restores().is_empty(), "{backend}");
    }
}

#[test]
fn member_edits_and_nomatch_flips_reach_the_kernel() {
    require_root!();
    for backend in BACKENDS {
        let netns = Netns::new();
        let runner = Watched::new(&netns);
        let dataplane = Dataplane::new(runner.clone(), backend);
        apply(&dataplane, &v4_only());

        let mut edited = v4_only();
        let block = edited.v4.ipsets.get_mut("pal4-b-block").expect("block");
        block.members.remove(&net("172.16.0.9/32", false));
        block.members.remove(&net("192.168.1.0/24", true));
        block.members.insert(net("192.168.1.0/24", false));
        block.members.insert(net("192.168.2.0/24", true));
        runner.take_restores();
        // PAL-TO-a uses the set: the new content goes under its other name, the chain moves
        // to it, and the old set stays, unused, as its spare.
        let report = apply(&dataplane, &edited);
        assert_eq!(
            (
                report.v4.sets_created,
                report.v4.sets_destroyed,
                report.v4.members_added,
                report.v4.chains_written
            ),
            (1, 0, 3, 1),
            "{backend}"
        );
        let sent = runner.take_restores();
        assert_eq!(sent.len(), 2, "{backend}: {sent:?}");
        assert_rules_use(
            &netns,
            backend,
            ["pal4-B-block", "pal4-b-block"],
            &["192.168.0.0/16", "192.168.1.0/24", "192.168.2.0/24 nomatch"],
        );
        assert_eq!(apply(&dataplane, &edited).changes, 0, "{backend}");
        assert!(runner.take_restores().is_empty(), "{backend}");

        // Back again: the spare still holds that content, so only the chain moves back to it;
        // the other name becomes the spare.
        let report = apply(&dataplane, &v4_only());
        assert_eq!(
            (report.v4.sets_created, report.v4.chains_written),
            (0, 1),
            "{backend}"
        );
        let sent = runner.take_restores();
        assert_eq!(sent.len(), 1, "{backend}: only the transaction: {sent:?}");
        assert_rules_use(
            &netns,
            backend,
            ["pal4-b-block", "pal4-B-block"],
            &["172.16.0.9", "192.168.0.0/16", "192.168.1.0/24 nomatch"],
        );

        // One element more is a single `ipset add`, atomic by itself: written in place.
        let mut one_more = v4_only();
        let block = one_more.v4.ipsets.get_mut("pal4-b-block").expect("block");
        block.members.insert(net("10.9.0.0/16", false));
        let report = apply(&dataplane, &one_more);
        assert_eq!(report.changes, 1, "{backend}");
        let sent = runner.take_restores();
        assert_eq!(sent.len(), 1, "{backend}: {sent:?}");
        assert_eq!(
            sent[0].1, "add pal4-b-block 10.9.0.0/16 -exist\n",
            "{backend}"
        );
        assert!(
            set_members(&netns, "pal4-b-block").contains(&"10.9.0.0/16".to_string()),
            "{backend}"
        );

        // A change of several elements switches to the spare, written with only what differs
        // from the content it kept (`edited`).
        let mut edited_more = edited.clone();
        let block = edited_more
            .v4
            .ipsets
            .get_mut("pal4-b-block")
            .expect("block");
        block.members.insert(net("10.8.0.0/16", false));
        apply(&dataplane, &edited_more);
        let sent = runner.take_restores();
        assert_eq!(sent.len(), 2, "{backend}: {sent:?}");
        assert_eq!(
            sent[0].1, "add pal4-B-block 10.8.0.0/16 -exist\n",
            "{backend}"
        );
        assert!(
            save(&netns, backend, Family::V4).contains("--match-set pal4-B-block src"),
            "{backend}"
        );
        assert_eq!(
            set_members(&netns, "pal4-B-block"),
            [
                "10.8.0.0/16",
                "192.168.0.0/16",
                "192.168.1.0/24",
                "192.168.2.0/24 nomatch"
            ],
            "{backend}"
        );

        // A restarted agent reads the set and its spare back and keeps both.
        let restarted = Dataplane::new(runner.clone(), backend);
        assert_eq!(apply(&restarted, &edited_more).changes, 0, "{backend}");
        assert!(runner.take_restores().is_empty(), "{backend}");
        assert!(
            netns.sh("ipset list -n").contains("pal4-b-block"),
            "{backend}"
        );
    }
}

/// The rules match on `[in_use, spare]`'s first name only, and that set holds `members`.
fn assert_rules_use(netns: &Netns, backend: Backend, [in_use, spare]: [&str; 2], members: &[&str]) {
    let v4 = save(netns, backend, Family::V4);
    assert!(
        v4.contains(&format!("--match-set {in_use} src")) && !v4.contains(spare),
        "{backend}:\n{v4}"
    );
    assert_eq!(set_members(netns, in_use), members, "{backend}");
}

/// The elements of a set as `ipset save` prints them, sorted.
fn set_members(netns: &Netns, set: &str) -> Vec<String> {
    let prefix = format!("add {set} ");
    let mut members: Vec<String> = netns
        .sh(&format!("ipset save {set}"))
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(str::to_string)
        .collect();
    members.sort();
    members
}

#[test]
fn ipv6_is_never_written_when_unused() {
    require_root!();
    for backend in BACKENDS {
        let netns = Netns::new();
        let runner = Watched::new(&netns);
        let dataplane = Dataplane::new(runner.clone(), backend);
        let report = apply(&dataplane, &v4_only());
        assert!(report.v6.skipped, "{backend}");
        let programs: Vec<String> = runner.take_restores().into_iter().map(|(p, _)| p).collect();
        assert!(
            programs.iter().all(|p| !p.starts_with("ip6tables")),
            "{backend}: {programs:?}"
        );
    }
}

#[test]
fn a_set_whose_type_changed_is_replaced_while_rules_use_it() {
    require_root!();
    for backend in BACKENDS {
        let netns = Netns::new();
        let runner = Watched::new(&netns);
        let dataplane = Dataplane::new(runner.clone(), backend);
        // An older state held the ipBlock set as hash:ip; PAL-TO-a uses it.
        let mut old = v4_only();
        old.v4.ipsets.insert(
            "pal4-b-block".into(),
            set(IpSetKind::HashIp, Family::V4, vec![ip("192.168.0.1")]),
        );
        apply(&dataplane, &old);

        let new = v4_only();
        let report = apply(&dataplane, &new);
        assert_eq!(report.v4.sets_created, 1, "{backend}");
        let sets = netns.sh("ipset save");
        // The set in use moved to its other name with the right type.
        assert!(
            sets.contains("create pal4-B-block hash:net family inet"),
            "{backend}: {sets}"
        );
        assert!(
            !sets.contains("pal4-t-"),
            "{backend}: the temporary set is gone: {sets}"
        );
        let v4 = save(&netns, backend, Family::V4);
        assert!(
            v4.contains("--match-set pal4-B-block src"),
            "{backend}:\n{v4}"
        );
        assert!(!v4.contains("pal4-t-"), "{backend}:\n{v4}");

        runner.take_restores();
        assert_eq!(apply(&dataplane, &new).changes, 0, "{backend}");
        assert!(runner.take_restores().is_empty());
    }
}

#[test]
fn cleanup_is_idempotent() {
    require_root!();
    for backend in BACKENDS {
        let netns = Netns::new();
        let runner = Watched::new(&netns);
        let dataplane = Dataplane::new(runner.clone(), backend);
        apply(&dataplane, &dual_stack());

        let first = dataplane.cleanup(ApplyOptions::default()).expect("cleanup");
        assert!(first.changes > 0);
        for family in Family::ALL {
            let saved = save(&netns, backend, family);
            assert_eq!(
                owned_lines(&saved),
                Vec::<String>::new(),
                "{backend} {family}:\n{saved}"
            );
        }
        assert_eq!(owned_lines(&netns.sh("ipset save")), Vec::<String>::new());

        runner.take_restores();
        let second = dataplane
            .cleanup(ApplyOptions::default())
            .expect("second cleanup");
        assert_eq!(second.changes, 0, "{backend}");
        assert!(runner.take_restores().is_empty(), "{backend}");
    }
}

#[test]
fn backend_detection_follows_kubelet_hint_then_rule_counts() {
    require_root!();
    // kubelet's hint in legacy wins even when nft holds more rules.
    let netns = Netns::new();
    netns.sh("iptables-legacy -w -t mangle -N KUBE-IPTABLES-HINT
         iptables-nft -w -A INPUT -j ACCEPT
         iptables-nft -w -A INPUT -j ACCEPT");
    let runner = NetnsRunner::new(netns.name.clone());
    assert_eq!(
        detect_backend(&runner).expect("detect"),
        (Backend::Legacy, BackendReason::KubeletHintInLegacy)
    );
    drop(netns);

    // No hint: nft holds more rules.
    let netns = Netns::new();
    netns.sh("iptables-legacy -w -A INPUT -j ACCEPT
         iptables-nft -w -A INPUT -j ACCEPT
         ip6tables-nft -w -A INPUT -j ACCEPT");
    let runner = NetnsRunner::new(netns.name.clone());
    assert_eq!(
        detect_backend(&runner).expect("detect"),
        (Backend::Nft, BackendReason::NftRulesOrTie)
    );
    drop(netns);

    // No hint: legacy holds more rules.
    let netns = Netns::new();
    netns.sh("iptables-legacy -w -A INPUT -j ACCEPT
         ip6tables-legacy -w -A INPUT -j ACCEPT
         iptables-nft -w -A INPUT -j ACCEPT");
    let runner = NetnsRunner::new(netns.name.clone());
    assert_eq!(
        detect_backend(&runner).expect("detect"),
        (Backend::Legacy, BackendReason::MoreLegacyRules)
    );
}

#[test]
fn a_failed_transaction_changes_nothing_and_names_the_line() {
    require_root!();
    for backend in BACKENDS {
        let netns = Netns::new();
        let dataplane = Dataplane::new(Watched::new(&netns), backend);
        apply(&dataplane, &v4_only());
        // A foreign rule jumps to PAL-TO-b, so deleting it must fail, and with it the whole
        // filter-table transaction.
        let ipt = iptables(backend, Family::V4);
        netns.sh(&format!("{ipt} -w -A OUTPUT -j PAL-TO-b"));
        let before = owned_lines(&save(&netns, backend, Family::V4));

        let mut without_b = v4_only();
        without_b.v4.chains.remove("PAL-TO-b");
        without_b
            .v4
            .chains
            .get_mut("PAL-FORWARD")
            .expect("forward")
            .rules
            .pop();
        let error = dataplane
            .apply(&without_b, ApplyOptions::default())
            .expect_err("PAL-TO-b is still referenced");
        match &error {
            DataplaneError::CommandFailed {
                args,
                failing_input_line,
                ..
            } => {
                assert!(args.iter().any(|a| a.contains("restore")), "{error}");
                assert_eq!(
                    failing_input_line.as_deref(),
                    Some("-X PAL-TO-b"),
                    "{error}"
                );
            }
            other => panic!("{backend}: unexpected error {other:?}"),
        }
        assert_eq!(
            owned_lines(&save(&netns, backend, Family::V4)),
            before,
            "{backend}: the failed transaction left the table as it was"
        );
    }
}

#[test]
fn timings_of_a_fresh_and_a_noop_apply() {
    require_root!();
    for backend in BACKENDS {
        let netns = Netns::new();
        let dataplane = Dataplane::new(Arc::new(NetnsRunner::new(netns.name.clone())), backend);
        let state = dual_stack();
        let started = Instant::now();
        let fresh = apply(&dataplane, &state);
        let fresh_time = started.elapsed();
        let started = Instant::now();
        let noop = apply(&dataplane, &state);
        let noop_time = started.elapsed();
        assert_eq!(noop.changes, 0);
        eprintln!(
            "{backend}: fresh apply ({} changes, {} restores) {:?}; no-op apply {:?}",
            fresh.changes,
            fresh.restores.len(),
            fresh_time,
            noop_time
        );
    }
}

/// The compiler's output for the tiered golden cluster plus `tests/dataplane/` (every Calico
/// match kind: SCTP, UDPLite and protocol numbers, ICMP and ICMPv6 types, negations, ranges,
/// multiport splits, named ports on either side, LOG with its limit, REJECT), for `node`.
fn calico_state(node: &str, deny: palisade::compiler::DenyAction) -> DesiredState {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let paths = [
        root.join("tests/golden/calico-tiers/cluster.yaml"),
        root.join("tests/dataplane/calico-matches.yaml"),
    ];
    let manifests = palisade::manifest::load(&paths).unwrap_or_else(|e| panic!("{e}"));
    let config = palisade::compiler::CompilerConfig {
        deny,
        ..palisade::compiler::CompilerConfig::default()
    };
    palisade::compiler::compile(&manifests.into_index(), node, config)
}

#[test]
fn every_calico_match_kind_is_accepted_and_reads_back_as_written() {
    require_root!();
    use palisade::compiler::DenyAction;
    for backend in BACKENDS {
        for deny in [DenyAction::Drop, DenyAction::Reject] {
            let netns = Netns::new();
            let dataplane = Dataplane::new(Watched::new(&netns), backend);
            let state = calico_state("node-1", deny);
            let first = apply(&dataplane, &state);
            assert!(first.changes > 0, "{backend}");
            let v4 = save(&netns, backend, Family::V4);
            let v6 = save(&netns, backend, Family::V6);
            for needle in [
                "-p sctp",
                "--dports 3868,5000:5010",
                "-j LOG",
                "--limit-burst",
            ] {
                assert!(v4.contains(needle), "{backend}: {needle} missing:\n{v4}");
            }
            assert!(v6.contains("--icmpv6-type 128"), "{backend}:\n{v6}");
            if deny == DenyAction::Reject {
                assert!(v4.contains("-j REJECT"), "{backend}:\n{v4}");
            }
            // What the kernel reads back is what was written: nothing to do a second time.
            let second = apply(&dataplane, &state);
            assert_eq!(second.changes, 0, "{backend} {deny:?}: {second:?}");
            let drift = dataplane.verify(&state).expect("verify");
            assert!(drift.is_empty(), "{backend} {deny:?}: {drift:?}");
        }
    }
}
