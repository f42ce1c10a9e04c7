//! A deterministic synthetic cluster for benchmarks.
//!
//! Include it from a bench with `#[path = "support/cluster.rs"] mod cluster;`.
//!
//! The cluster is built straight from Palisade's model types (no YAML), seeded, so every run
//! produces exactly the same objects. Its shape follows what real multi-tenant clusters look
//! like: namespaces owned by teams and split by environment, a few hundred distinct app names
//! shared across namespaces, Deployments with `pod-template-hash`, StatefulSet databases with a
//! `role` label that flips on failover, two DaemonSets on every node, and policies that are
//! mostly narrow (same-namespace app-to-app, one named namespace, one team) with a minority of
//! wide ones (`env=prod`, every namespace, whole address ranges, egress named ports).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use palisade::compiler::DesiredState;
use palisade::index::ClusterIndex;
use palisade::model::kubernetes::{
    IpBlock, KubernetesPolicy as Policy, NamespaceScope, Peer, PolicyRule, PortMatch, PortRule,
    Selection,
};
use palisade::model::{
    Direction, NamedPort, Namespace, ObjectKey, Pod, Protocol, NAMESPACE_NAME_LABEL,
};
use palisade::selector::{Labels, Selector};

/// A Kubernetes label selector, built requirement by requirement as the generator writes them,
/// then converted to Palisade's selector as the Kubernetes converter does.
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    match_labels: Vec<(String, String)>,
    expressions: Vec<(String, &'static str, Vec<String>)>,
}

pub enum Operator {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
}

impl LabelSelector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn from_match_labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            expressions: Vec::new(),
        }
    }

    pub fn require(&mut self, key: &str, operator: Operator) {
        let (op, values) = match operator {
            Operator::In(v) => ("In", v.into_iter().collect()),
            Operator::NotIn(v) => ("NotIn", v.into_iter().collect()),
            Operator::Exists => ("Exists", Vec::new()),
        };
        self.expressions.push((key.to_string(), op, values));
    }

    pub fn is_everything(&self) -> bool {
        self.match_labels.is_empty() && self.expressions.is_empty()
    }

    pub fn build(&self) -> Selector {
        let built = Selector::kubernetes(
            self.match_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            self.expressions
                .iter()
                .map(|(k, op, values)| (k.as_str(), *op, values.as_slice())),
        )
        .unwrap_or_else(|(i, e)| panic!("bench selector {i}: {e}"));
        if RECORD_WRITTEN_AS.get() {
            WRITTEN_AS.with(|written| {
                written
                    .borrow_mut()
                    .entry(built.clone())
                    .or_insert_with(|| self.to_json());
            });
        }
        built
    }

    /// The selector as a manifest writes it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        if !self.match_labels.is_empty() {
            let labels: serde_json::Map<String, serde_json::Value> = self
                .match_labels
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                .collect();
            out.insert("matchLabels".into(), labels.into());
        }
        if !self.expressions.is_empty() {
            let expressions: Vec<serde_json::Value> = self
                .expressions
                .iter()
                .map(|(key, op, values)| {
                    let mut e = serde_json::json!({"key": key, "operator": op});
                    if !values.is_empty() {
                        e["values"] = serde_json::json!(values);
                    }
                    e
                })
                .collect();
            out.insert("matchExpressions".into(), expressions.into());
        }
        out.into()
    }
}

thread_local! {
    /// Whether [`WRITTEN_AS`] records: only for clusters that are written as manifests, so the
    /// memory benches do not count it.
    pub static RECORD_WRITTEN_AS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// What each built selector was written as, so that a generated cluster can also be written
    /// as manifests (`support/manifests.rs`).
    pub static WRITTEN_AS: std::cell::RefCell<std::collections::HashMap<Selector, serde_json::Value>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The node the benches compile.
pub const LOCAL_NODE: &str = "node-0";

// ---- PRNG ----------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, good enough for test data, and stable across platforms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Approximately standard normal (Irwin–Hall with 12 terms).
    pub fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }

    /// A heavy-tailed positive weight with median 1.
    pub fn lognormal(&mut self, sigma: f64) -> f64 {
        (sigma * self.normal()).exp()
    }

    /// Index in `0..weights.len()` with probability proportional to the weight.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// Zipf-distributed indices: a few values are very common, most are rare.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let cdf = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(exponent);
                total
            })
            .collect();
        Self { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let x = rng.unit() * self.cdf.last().copied().unwrap_or(0.0);
        self.cdf
            .partition_point(|c| *c <= x)
            .min(self.cdf.len() - 1)
    }
}

/// Splits `total` into `weights.len()` parts proportional to `weights`, each at least `min`.
fn apportion(total: usize, weights: &[f64], min: usize) -> Vec<usize> {
    let n = weights.len();
    assert!(
        total >= n * min,
        "cannot give {n} parts at least {min} of {total}"
    );
    let spare = (total - n * min) as f64;
    let sum: f64 = weights.iter().sum();
    let mut counts: Vec<usize> = weights
        .iter()
        .map(|w| min + (spare * w / sum).floor() as usize)
        .collect();
    let mut left = total - counts.iter().sum::<usize>();
    // Largest remainders first, deterministically.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| {
        let ra = spare * weights[*a] / sum;
        let rb = spare * weights[*b] / sum;
        (rb - rb.floor())
            .total_cmp(&(ra - ra.floor()))
            .then(a.cmp(b))
    });
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    counts
}

// ---- parameters ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ClusterParams {
    pub seed: u64,
    pub nodes: usize,
    /// Every pod that takes part in policy, DaemonSet pods included.
    pub pods: usize,
    /// Pods on [`LOCAL_NODE`], its two DaemonSet pods included.
    pub local_pods: usize,
    /// System namespaces included.
    pub namespaces: usize,
    /// System policies included.
    pub policies: usize,
    pub teams: usize,
    /// Distinct values of the `app` label among tenant workloads.
    pub apps: usize,
}

impl ClusterParams {
    /// The "large" cluster of the performance issue.
    pub fn large() -> Self {
        Self {
            seed: 0x9A11_5ADE,
            nodes: 5_000,
            pods: 150_000,
            local_pods: 110,
            namespaces: 2_000,
            policies: 10_000,
            teams: 50,
            apps: 400,
        }
    }

    /// A small cluster of the same shape, for quick runs and tests.
    pub fn small() -> Self {
        Self {
            seed: 0x9A11_5ADE,
            nodes: 100,
            pods: 4_000,
            local_pods: 60,
            namespaces: 80,
            policies: 400,
            teams: 10,
            apps: 60,
        }
    }
}

// ---- generated objects ---------------------------------------------------------------------

/// The objects of a generated cluster, before they go into an index.
#[derive(Debug, Clone)]
pub struct ClusterObjects {
    pub params: ClusterParams,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub policies: Vec<Policy>,
}

impl ClusterObjects {
    /// Feeds every object into a new index, as the watchers would on start-up.
    pub fn build_index(self) -> ClusterIndex {
        let mut index = ClusterIndex::new();
        for namespace in self.namespaces {
            index.upsert_namespace(namespace);
        }
        for mut pod in self.pods {
            // Each pod its own copy, as a watcher decodes it: only the index shares label sets.
            pod.labels = pod
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            index.upsert_pod(pod);
        }
        for policy in self.policies {
            index.upsert_policy(policy.to_policy());
        }
        index
    }
}

/// [`generate`], remembering how each selector was written so that the cluster can be written
/// as manifests.
pub fn generate_for_manifests(params: &ClusterParams) -> ClusterObjects {
    RECORD_WRITTEN_AS.set(true);
    let objects = generate(params);
    RECORD_WRITTEN_AS.set(false);
    objects
}

pub fn cluster(params: &ClusterParams) -> ClusterIndex {
    generate(params).build_index()
}

pub fn large_cluster() -> ClusterIndex {
    cluster(&ClusterParams::large())
}

pub fn small_cluster() -> ClusterIndex {
    cluster(&ClusterParams::small())
}

// ---- vocabulary ----------------------------------------------------------------------------

const ENVS: [&str; 3] = ["prod", "staging", "dev"];
const ZONES: [&str; 3] = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];

const TEAM_WORDS: &[&str] = &[
    "payments",
    "search",
    "identity",
    "checkout",
    "catalog",
    "growth",
    "ads",
    "risk",
    "data",
    "ml",
    "mobile",
    "web",
    "core",
    "infra",
    "billing",
    "ledger",
    "fraud",
    "support",
    "content",
    "media",
    "maps",
    "logistics",
    "pricing",
    "inventory",
    "orders",
    "notify",
    "messaging",
    "social",
    "platform",
    "security",
    "analytics",
    "reporting",
];

const APP_WORDS: &[&str] = &[
    "api",
    "web",
    "worker",
    "gateway",
    "auth",
    "frontend",
    "backend",
    "scheduler",
    "indexer",
    "crawler",
    "ingest",
    "export",
    "importer",
    "router",
    "proxy",
    "cart",
    "checkout",
    "catalog",
    "search",
    "recommender",
    "notifier",
    "mailer",
    "renderer",
    "uploader",
    "thumbnailer",
    "billing",
    "ledger",
    "invoicer",
    "payments",
    "fraud",
    "session",
    "profile",
    "accounts",
    "orders",
    "inventory",
    "pricing",
    "shipping",
    "tracker",
    "events",
    "audit",
    "reports",
    "dashboard",
    "admin",
    "graphql",
    "bff",
    "feed",
    "chat",
    "presence",
    "geo",
    "translator",
];
const APP_QUALIFIERS: &[&str] = &[
    "svc", "v2", "internal", "public", "batch", "stream", "edge", "core",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Frontend,
    Backend,
    Cache,
    Db,
}

impl Tier {
    fn as_str(self) -> &'static str {
        match self {
            Tier::Frontend => "frontend",
            Tier::Backend => "backend",
            Tier::Cache => "cache",
            Tier::Db => "db",
        }
    }
}

#[derive(Debug, Clone)]
struct App {
    name: String,
    tier: Tier,
    ports: Vec<NamedPort>,
    replicas: usize,
    /// Common labels of every replica (without per-pod ones such as `role` or `shard`).
    labels: Labels,
    spread_zones: bool,
}

impl App {
    fn port(&self, name: &str) -> Option<&NamedPort> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The name of the port clients use.
    fn service_port(&self) -> Option<&NamedPort> {
        ["http", "grpc", "postgres", "mysql", "redis"]
            .iter()
            .find_map(|n| self.port(n))
    }
}

#[derive(Debug, Clone)]
struct Ns {
    name: String,
    team: usize,
    env: &'static str,
    project: String,
    system: bool,
    apps: Vec<App>,
}

fn named_port(name: &str, protocol: Protocol, port: u16) -> NamedPort {
    NamedPort {
        name: name.into(),
        protocol,
        port,
    }
}

fn team_name(team: usize) -> String {
    let word = TEAM_WORDS[team % TEAM_WORDS.len()];
    match team / TEAM_WORDS.len() {
        0 => word.to_string(),
        n => format!("{word}-{n}"),
    }
}

fn app_name(i: usize) -> String {
    let word = APP_WORDS[i % APP_WORDS.len()];
    match i / APP_WORDS.len() {
        0 => word.to_string(),
        n => format!("{word}-{}", APP_QUALIFIERS[(n - 1) % APP_QUALIFIERS.len()]),
    }
}

fn hex_hash(rng: &mut Rng) -> String {
    format!("{:010x}", rng.next_u64() >> 24)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector::from_match_labels(pairs.iter().copied())
}

fn values(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn ns_named(name: &str) -> LabelSelector {
    sel(&[(NAMESPACE_NAME_LABEL, name)])
}

fn same_ns(ns: &str, pods: LabelSelector) -> Peer {
    Peer::Pods(Selection {
        namespaces: NamespaceScope::Named(ns.to_string()),
        pods: pods.build(),
    })
}

fn in_namespaces(namespaces: LabelSelector, pods: LabelSelector) -> Peer {
    Peer::Pods(Selection {
        namespaces: NamespaceScope::Selector(namespaces.build()),
        pods: pods.build(),
    })
}

fn block(cidr: &str, except: &[&str]) -> Peer {
    let mut except: Vec<IpNetwork> = except
        .iter()
        .map(|e| e.parse().expect("except CIDR"))
        .collect();
    except.sort();
    Peer::Block(IpBlock {
        cidr: cidr.parse().expect("CIDR"),
        except,
    })
}

fn tcp(port: u16) -> PortRule {
    PortRule {
        protocol: Protocol::Tcp,
        port: PortMatch::Range {
            start: port,
            end: port,
        },
    }
}

fn udp(port: u16) -> PortRule {
    PortRule {
        protocol: Protocol::Udp,
        port: PortMatch::Range {
            start: port,
            end: port,
        },
    }
}

fn tcp_range(start: u16, end: u16) -> PortRule {
    PortRule {
        protocol: Protocol::Tcp,
        port: PortMatch::Range { start, end },
    }
}

fn named(name: &str, protocol: Protocol) -> PortRule {
    PortRule {
        protocol,
        port: PortMatch::Named(name.to_string()),
    }
}

fn rule(peers: Option<Vec<Peer>>, ports: Vec<PortRule>) -> PolicyRule {
    PolicyRule { peers, ports }
}

/// The port rule clients of `app` use: its named service port or that port's number.
fn service_port_rule(rng: &mut Rng, app: &App) -> PortRule {
    match app.service_port() {
        Some(p) if rng.chance(0.6) => named(&p.name, p.protocol),
        Some(p) => PortRule {
            protocol: p.protocol,
            port: PortMatch::Range {
                start: p.port,
                end: p.port,
            },
        },
        None => tcp(8080),
    }
}

// ---- apps ----------------------------------------------------------------------------------

fn tenant_app(rng: &mut Rng, name: String, team: &str, env: &str, replicas: usize) -> App {
    let tier = match rng.weighted(&[30.0, 45.0, 12.0, 13.0]) {
        0 => Tier::Frontend,
        1 => Tier::Backend,
        2 => Tier::Cache,
        _ => Tier::Db,
    };
    // Port numbers vary per app, as real images differ.
    let h = rng.below(8);
    let mut ports = Vec::new();
    let has_ports = rng.chance(0.9);
    if has_ports {
        match tier {
            Tier::Frontend => {
                ports.push(named_port(
                    "http",
                    Protocol::Tcp,
                    [8080, 3000, 80, 8000, 8080, 8080, 5000, 9000][h],
                ));
                ports.push(named_port(
                    "metrics",
                    Protocol::Tcp,
                    [9090, 9102, 9090, 8081][h % 4],
                ));
            }
            Tier::Backend => {
                ports.push(named_port(
                    "http",
                    Protocol::Tcp,
                    [8080, 8000, 9000, 8080, 8443, 8080, 7000, 8080][h],
                ));
                if rng.chance(0.5) {
                    ports.push(named_port(
                        "grpc",
                        Protocol::Tcp,
                        [50051, 9091, 50051, 8081][h % 4],
                    ));
                }
                ports.push(named_port(
                    "metrics",
                    Protocol::Tcp,
                    [9090, 9102, 9090, 8081][h % 4],
                ));
            }
            Tier::Cache => {
                ports.push(named_port("redis", Protocol::Tcp, 6379));
                ports.push(named_port("metrics", Protocol::Tcp, 9121));
            }
            Tier::Db => {
                if rng.chance(0.7) {
                    ports.push(named_port("postgres", Protocol::Tcp, 5432));
                    ports.push(named_port("metrics", Protocol::Tcp, 9187));
                } else {
                    ports.push(named_port("mysql", Protocol::Tcp, 3306));
                    ports.push(named_port("metrics", Protocol::Tcp, 9104));
                }
            }
        }
    }
    let mut labels = labels(&[
        ("app", &name),
        ("tier", tier.as_str()),
        ("team", team),
        ("env", env),
    ]);
    if rng.chance(0.7) {
        labels.insert("version".into(), format!("v{}", rng.range(1, 9)).into());
    }
    if matches!(tier, Tier::Frontend | Tier::Backend) && rng.chance(0.8) {
        labels.insert("pod-template-hash".into(), hex_hash(rng).into());
    }
    if rng.chance(0.5) {
        labels.insert("track".into(), "stable".into());
    }
    App {
        name,
        tier,
        ports,
        replicas,
        labels,
        spread_zones: rng.chance(0.3),
    }
}

/// The labels of replica `i` of `app`: at most 8, at least 4.
fn replica_labels(rng: &mut Rng, app: &App, i: usize) -> Labels {
    let mut labels = app.labels.clone();
    match app.tier {
        Tier::Db => {
            labels.insert(
                "role".into(),
                if i == 0 { "leader" } else { "replica" }.into(),
            );
        }
        Tier::Cache => {
            labels.insert("shard".into(), (i % 8).to_string().into());
        }
        _ => {}
    }
    // One canary replica in larger tracked deployments.
    if labels.contains_key("track") && app.replicas >= 4 && i == app.replicas - 1 {
        labels.insert("track".into(), "canary".into());
    }
    if app.spread_zones && labels.len() < 8 {
        labels.insert("zone".into(), ZONES[rng.below(ZONES.len())].into());
    }
    debug_assert!((4..=8).contains(&labels.len()), "{labels:?}");
    labels
}

// ---- the generator -------------------------------------------------------------------------

struct PodDraft {
    namespace: usize,
    app: usize,
    name: String,
    labels: Labels,
    daemon_node: Option<usize>,
}

/// Generates the cluster described by `params`.
pub fn generate(params: &ClusterParams) -> ClusterObjects {
    let mut rng = Rng::new(params.seed);
    let teams: Vec<String> = (0..params.teams).map(team_name).collect();
    let team_zipf = Zipf::new(params.teams, 0.8);
    let app_zipf = Zipf::new(params.apps, 0.9);

    // -- namespaces --
    let mut namespaces: Vec<Ns> = system_namespaces(params);
    let system_count = namespaces.len();
    let tenant_count = params.namespaces - system_count;
    let projects = (tenant_count / 3).max(1);
    let project_team: Vec<usize> = (0..projects).map(|_| team_zipf.sample(&mut rng)).collect();
    let mut used_names = BTreeSet::new();
    for i in 0..tenant_count {
        let p = i % projects;
        let team = project_team[p];
        let env = ENVS[(i / projects) % ENVS.len()];
        let project = format!("{}-{}", teams[team], app_name(p % params.apps.max(1)));
        let mut name = format!("{project}-{env}");
        if !used_names.insert(name.clone()) {
            name = format!("{project}-{env}-{i}");
            used_names.insert(name.clone());
        }
        namespaces.push(Ns {
            name,
            team,
            env,
            project,
            system: false,
            apps: Vec::new(),
        });
    }

    // -- pods per namespace, apps per namespace --
    let daemon_pods = 2 * params.nodes;
    let system_pods: usize = namespaces
        .iter()
        .flat_map(|n| &n.apps)
        .map(|a| a.replicas)
        .sum();
    let tenant_pods = params.pods - daemon_pods - system_pods;
    let weights: Vec<f64> = (0..tenant_count).map(|_| rng.lognormal(1.0)).collect();
    let counts = apportion(tenant_pods, &weights, 1);
    for (ns, count) in namespaces[system_count..].iter_mut().zip(counts) {
        let app_count = count.div_ceil(6).clamp(1, 25);
        let replica_weights: Vec<f64> = (0..app_count).map(|_| rng.lognormal(0.8)).collect();
        let replicas = apportion(count, &replica_weights, 1);
        let mut names = BTreeSet::new();
        for r in replicas {
            // Distinct app names inside a namespace, Zipf-popular across the cluster.
            let mut name = app_name(app_zipf.sample(&mut rng));
            while !names.insert(name.clone()) {
                name = app_name(rng.below(params.apps));
            }
            let app = tenant_app(&mut rng, name, &teams[ns.team], ns.env, r);
            ns.apps.push(app);
        }
    }

    // -- pods --
    let mut drafts: Vec<PodDraft> = Vec::with_capacity(params.pods);
    let mut taken: BTreeSet<(usize, String)> = BTreeSet::new();
    let mut unique = |rng: &mut Rng, n: usize, make: &dyn Fn(&mut Rng) -> String| loop {
        let name = make(rng);
        if taken.insert((n, name.clone())) {
            break name;
        }
    };
    for (n, ns) in namespaces.iter().enumerate() {
        for (a, app) in ns.apps.iter().enumerate() {
            if app.replicas == 0 {
                continue; // DaemonSets are placed below
            }
            let stateful = app.tier == Tier::Db;
            let suffix = app.labels.get("pod-template-hash").cloned();
            for i in 0..app.replicas {
                let name = match (&suffix, stateful) {
                    (_, true) => unique(&mut rng, n, &|_| format!("{}-{i}", app.name)),
                    (Some(hash), false) => unique(&mut rng, n, &|r| {
                        format!("{}-{hash}-{}", app.name, short_suffix(r))
                    }),
                    (None, false) => unique(&mut rng, n, &|r| {
                        format!("{}-{}", app.name, short_suffix(r))
                    }),
                };
                drafts.push(PodDraft {
                    namespace: n,
                    app: a,
                    name,
                    labels: replica_labels(&mut rng, app, i),
                    daemon_node: None,
                });
            }
        }
    }
    for (n, ns) in namespaces.iter().enumerate() {
        for (a, app) in ns.apps.iter().enumerate() {
            if app.replicas != 0 {
                continue;
            }
            for node in 0..params.nodes {
                drafts.push(PodDraft {
                    namespace: n,
                    app: a,
                    name: unique(&mut rng, n, &|r| {
                        format!("{}-{}", app.name, short_suffix(r))
                    }),
                    labels: app.labels.clone(),
                    daemon_node: Some(node),
                });
            }
        }
    }
    assert_eq!(drafts.len(), params.pods, "pod count");

    // -- placement and addresses --
    let placement = place_pods(&mut rng, params, &drafts);
    let mut next_host = vec![0u32; params.nodes];
    let mut pods = Vec::with_capacity(drafts.len());
    for (draft, node) in drafts.into_iter().zip(placement) {
        let host = next_host[node];
        next_host[node] += 1;
        let ns = &namespaces[draft.namespace];
        let app = &ns.apps[draft.app];
        pods.push(Pod {
            key: ObjectKey::new(ns.name.clone(), draft.name),
            node: Some(compact_str::format_compact!("node-{node}")),
            ips: vec![pod_ip(node, host)],
            labels: draft.labels,
            named_ports: app.ports.clone(),
            service_account: Some("default".into()),
        });
    }

    // -- policies --
    let policies = generate_policies(&mut rng, params, &namespaces, system_count, &teams);

    let namespace_objects = namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let mut labels = labels(&[(NAMESPACE_NAME_LABEL, &ns.name), ("env", ns.env)]);
            if !ns.system {
                labels.insert("team".into(), teams[ns.team].as_str().into());
                labels.insert("project".into(), ns.project.as_str().into());
                if i % 3 == 0 {
                    labels.insert("istio-injection".into(), "enabled".into());
                }
            } else {
                labels.insert("purpose".into(), "system".into());
                labels.insert("team".into(), "platform".into());
            }
            Namespace {
                name: ns.name.clone(),
                labels,
                // A handful of old namespaces still carry the legacy isolation annotation.
                legacy_default_deny: !ns.system && i % 499 == 7,
                denials: Default::default(),
            }
        })
        .collect();

    ClusterObjects {
        params: params.clone(),
        namespaces: namespace_objects,
        pods,
        policies,
    }
}

fn short_suffix(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rng.below(ALPHABET.len())] as char)
        .collect()
}

/// Node `n`'s pod CIDR is a /24 in 10.64.0.0/10.
fn pod_ip(node: usize, host: u32) -> IpAddr {
    assert!(node < 64 * 256 && host < 250, "address space exhausted");
    IpAddr::V4(Ipv4Addr::new(
        10,
        64 + (node >> 8) as u8,
        (node & 0xff) as u8,
        2 + host as u8,
    ))
}

/// Chooses a node for every pod: DaemonSet pods on their node, `local_pods` on node 0, the rest
/// uniformly at random on the other nodes, at most 250 per node.
fn place_pods(rng: &mut Rng, params: &ClusterParams, drafts: &[PodDraft]) -> Vec<usize> {
    let mut load = vec![0usize; params.nodes];
    let mut placement = vec![usize::MAX; drafts.len()];
    for (i, d) in drafts.iter().enumerate() {
        if let Some(node) = d.daemon_node {
            placement[i] = node;
            load[node] += 1;
        }
    }
    let movable: Vec<usize> = (0..drafts.len())
        .filter(|i| drafts[*i].daemon_node.is_none())
        .collect();
    let mut chosen = BTreeSet::new();
    while load[0] < params.local_pods {
        let i = movable[rng.below(movable.len())];
        if chosen.insert(i) {
            placement[i] = 0;
            load[0] += 1;
        }
    }
    for i in movable {
        if placement[i] != usize::MAX {
            continue;
        }
        loop {
            let node = 1 + rng.below(params.nodes - 1);
            if load[node] < 250 {
                placement[i] = node;
                load[node] += 1;
                break;
            }
        }
    }
    placement
}

fn system_app(name: &str, extra: &[(&str, &str)], ports: Vec<NamedPort>, replicas: usize) -> App {
    let mut l = labels(&[
        ("app", name),
        ("tier", "system"),
        ("team", "platform"),
        ("env", "prod"),
    ]);
    for (k, v) in extra {
        l.insert((*k).into(), (*v).into());
    }
    App {
        name: name.to_string(),
        tier: Tier::Backend,
        ports,
        replicas,
        labels: l,
        spread_zones: false,
    }
}

/// kube-system, monitoring, ingress-nginx, logging and cert-manager, with their workloads.
/// Apps with 0 replicas are DaemonSets: one pod on every node.
fn system_namespaces(params: &ClusterParams) -> Vec<Ns> {
    let coredns = (params.nodes / 250).max(2);
    let ns = |name: &str, apps: Vec<App>| Ns {
        name: name.to_string(),
        team: 0,
        env: "prod",
        project: "platform".to_string(),
        system: true,
        apps,
    };
    vec![
        ns(
            "kube-system",
            vec![
                system_app(
                    "coredns",
                    &[("k8s-app", "kube-dns")],
                    vec![
                        named_port("dns", Protocol::Udp, 53),
                        named_port("dns-tcp", Protocol::Tcp, 53),
                        named_port("metrics", Protocol::Tcp, 9153),
                    ],
                    coredns,
                ),
                system_app(
                    "metrics-server",
                    &[("k8s-app", "metrics-server")],
                    vec![named_port("https", Protocol::Tcp, 10250)],
                    2,
                ),
            ],
        ),
        ns(
            "monitoring",
            vec![
                system_app(
                    "prometheus",
                    &[("app.kubernetes.io/name", "prometheus")],
                    vec![named_port("web", Protocol::Tcp, 9090)],
                    4,
                ),
                system_app(
                    "otel-agent",
                    &[("app.kubernetes.io/name", "opentelemetry-collector")],
                    vec![
                        named_port("otlp-grpc", Protocol::Tcp, 4317),
                        named_port("metrics", Protocol::Tcp, 8888),
                    ],
                    0,
                ),
            ],
        ),
        ns(
            "ingress-nginx",
            vec![system_app(
                "ingress-nginx",
                &[("app.kubernetes.io/name", "ingress-nginx")],
                vec![
                    named_port("http", Protocol::Tcp, 80),
                    named_port("https", Protocol::Tcp, 443),
                    named_port("metrics", Protocol::Tcp, 10254),
                ],
                (params.nodes / 150).max(2),
            )],
        ),
        ns(
            "logging",
            vec![system_app(
                "fluent-bit",
                &[("app.kubernetes.io/name", "fluent-bit")],
                vec![named_port("http", Protocol::Tcp, 2020)],
                0,
            )],
        ),
        ns(
            "cert-manager",
            vec![system_app(
                "cert-manager",
                &[("app.kubernetes.io/name", "cert-manager")],
                vec![named_port("https", Protocol::Tcp, 10250)],
                3,
            )],
        ),
    ]
}

// ---- policies ------------------------------------------------------------------------------

/// The kinds of tenant policies and their relative frequency.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `podSelector: app=X`, from pods of the same namespace (named or numeric port).
    AppToApp,
    /// From Prometheus in `monitoring` (namespaceSelector AND podSelector), named port metrics.
    FromMonitoring,
    /// From the ingress controller's namespace, to the frontends.
    FromIngress,
    /// From another team's namespaces (`team=T`), sometimes AND a podSelector.
    FromTeam,
    /// From the frontends of every prod namespace (`env=prod`, a third of the namespaces).
    FromProdFrontends,
    /// From ipBlocks with `except`, to a NodePort-style range or 443.
    FromBlocks,
    /// A rule without `from`: anyone, on a port.
    OpenPort,
    /// matchExpressions with In, NotIn and Exists, on pods and namespaces.
    Expressions,
    /// Clients to a database leader: ingress on the db, egress with a named port on the clients.
    DbLeader,
    /// Egress to the cluster DNS (named port) and the same namespace.
    EgressDns,
    /// Egress to the internet except private ranges and the metadata service.
    EgressExternal,
    /// Egress on a named port to the backends of another team's namespaces.
    EgressTeamNamedPort,
    /// Egress on a named port to anywhere (resolved against every pod of the cluster).
    EgressAnyNamedPort,
}

const KINDS: &[(Kind, f64)] = &[
    (Kind::AppToApp, 34.0),
    (Kind::FromMonitoring, 9.0),
    (Kind::FromIngress, 8.0),
    (Kind::FromTeam, 10.0),
    (Kind::FromProdFrontends, 2.0),
    (Kind::FromBlocks, 5.0),
    (Kind::OpenPort, 3.0),
    (Kind::Expressions, 7.0),
    (Kind::DbLeader, 7.0),
    (Kind::EgressDns, 7.0),
    (Kind::EgressExternal, 4.0),
    (Kind::EgressTeamNamedPort, 1.0),
    (Kind::EgressAnyNamedPort, 0.3),
];

fn generate_policies(
    rng: &mut Rng,
    params: &ClusterParams,
    namespaces: &[Ns],
    system_count: usize,
    teams: &[String],
) -> Vec<Policy> {
    let mut policies = system_policies(namespaces);
    let tenant = &namespaces[system_count..];
    // Roughly one namespace in eight has no policy; the others vary, bigger ones have more.
    let weights: Vec<f64> = tenant
        .iter()
        .map(|ns| {
            if rng.chance(0.12) {
                0.0
            } else {
                let pods: usize = ns.apps.iter().map(|a| a.replicas).sum();
                (1.0 + (pods as f64).ln()) * rng.lognormal(0.4)
            }
        })
        .collect();
    let counts = apportion(params.policies - policies.len(), &weights, 0);
    // Apps of every team, for cross-team peers.
    let mut team_apps: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    for ns in tenant {
        for app in &ns.apps {
            team_apps.entry(ns.team).or_default().insert(&app.name);
        }
    }
    let team_apps: BTreeMap<usize, Vec<&str>> = team_apps
        .into_iter()
        .map(|(t, a)| (t, a.into_iter().collect()))
        .collect();
    let kind_weights: Vec<f64> = KINDS.iter().map(|(_, w)| *w).collect();
    for (ns, count) in tenant.iter().zip(counts) {
        let mut out: Vec<Policy> = Vec::new();
        let policy = |name: String, pod_selector: LabelSelector, ingress, egress| Policy {
            key: ObjectKey::new(ns.name.clone(), name),
            pod_selector: pod_selector.build(),
            ingress,
            egress,
        };
        // Common baselines first.
        if count > 0 && rng.chance(0.2) {
            if rng.chance(0.2) {
                out.push(policy(
                    "default-deny-all".into(),
                    LabelSelector::everything(),
                    Some(vec![]),
                    Some(vec![]),
                ));
            } else {
                out.push(policy(
                    "default-deny-ingress".into(),
                    LabelSelector::everything(),
                    Some(vec![]),
                    None,
                ));
            }
        }
        if out.len() < count && rng.chance(0.2) {
            let peers = vec![same_ns(&ns.name, LabelSelector::everything())];
            out.push(policy(
                "allow-same-namespace".into(),
                LabelSelector::everything(),
                Some(vec![rule(Some(peers), vec![])]),
                None,
            ));
        }
        while out.len() < count {
            let k = rng.weighted(&kind_weights);
            let name = format!("{}-{}", kind_slug(KINDS[k].0), out.len());
            let (pod_selector, ingress, egress) =
                tenant_policy(rng, KINDS[k].0, ns, namespaces, teams, &team_apps);
            out.push(policy(name, pod_selector, ingress, egress));
        }
        policies.extend(out);
    }
    assert_eq!(policies.len(), params.policies, "policy count");
    policies
}

fn kind_slug(kind: Kind) -> &'static str {
    match kind {
        Kind::AppToApp => "allow-app",
        Kind::FromMonitoring => "allow-prometheus",
        Kind::FromIngress => "allow-ingress",
        Kind::FromTeam => "allow-team",
        Kind::FromProdFrontends => "allow-prod-frontends",
        Kind::FromBlocks => "allow-cidrs",
        Kind::OpenPort => "allow-public",
        Kind::Expressions => "allow-expr",
        Kind::DbLeader => "db-leader",
        Kind::EgressDns => "egress-dns",
        Kind::EgressExternal => "egress-external",
        Kind::EgressTeamNamedPort => "egress-team",
        Kind::EgressAnyNamedPort => "egress-any",
    }
}

type PolicyBody = (
    LabelSelector,
    Option<Vec<PolicyRule>>,
    Option<Vec<PolicyRule>>,
);

fn dns_rule() -> PolicyRule {
    rule(
        Some(vec![in_namespaces(
            ns_named("kube-system"),
            sel(&[("k8s-app", "kube-dns")]),
        )]),
        vec![named("dns", Protocol::Udp), tcp(53)],
    )
}

fn tenant_policy(
    rng: &mut Rng,
    kind: Kind,
    ns: &Ns,
    namespaces: &[Ns],
    teams: &[String],
    team_apps: &BTreeMap<usize, Vec<&str>>,
) -> PolicyBody {
    let app = rng.pick(&ns.apps).clone();
    let target = sel(&[("app", &app.name)]);
    let other = rng.pick(&ns.apps).clone();
    match kind {
        Kind::AppToApp => {
            let mut clients = BTreeSet::from([other.name.clone()]);
            if rng.chance(0.3) {
                clients.insert(rng.pick(&ns.apps).name.clone());
            }
            let mut from = LabelSelector::everything();
            from.require("app", Operator::In(clients));
            let mut ports = vec![service_port_rule(rng, &app)];
            if rng.chance(0.2) {
                ports.push(named("metrics", Protocol::Tcp));
            }
            (
                target,
                Some(vec![rule(Some(vec![same_ns(&ns.name, from)]), ports)]),
                None,
            )
        }
        Kind::FromMonitoring => {
            let pods = if rng.chance(0.5) {
                LabelSelector::everything()
            } else {
                target
            };
            let from = in_namespaces(
                ns_named("monitoring"),
                sel(&[("app.kubernetes.io/name", "prometheus")]),
            );
            (
                pods,
                Some(vec![rule(
                    Some(vec![from]),
                    vec![named("metrics", Protocol::Tcp)],
                )]),
                None,
            )
        }
        Kind::FromIngress => {
            let pods = if rng.chance(0.5) {
                sel(&[("tier", "frontend")])
            } else {
                target
            };
            let from = in_namespaces(
                ns_named("ingress-nginx"),
                sel(&[("app.kubernetes.io/name", "ingress-nginx")]),
            );
            let ports = if rng.chance(0.5) {
                vec![named("http", Protocol::Tcp)]
            } else {
                vec![tcp(8080), tcp(8443)]
            };
            (pods, Some(vec![rule(Some(vec![from]), ports)]), None)
        }
        Kind::FromTeam => {
            let team = if rng.chance(0.3) {
                ns.team
            } else {
                rng.below(teams.len())
            };
            let namespaces_sel = sel(&[("team", &teams[team])]);
            let pods = match team_apps.get(&team) {
                Some(apps) if rng.chance(0.7) => {
                    let mut s = LabelSelector::everything();
                    let picked: BTreeSet<String> = (0..rng.range(1, 2))
                        .map(|_| rng.pick(apps).to_string())
                        .collect();
                    s.require("app", Operator::In(picked));
                    s
                }
                _ => LabelSelector::everything(),
            };
            let ports = match rng.below(3) {
                0 => vec![tcp(8080)],
                1 => vec![tcp_range(8000, 8099)],
                _ => vec![service_port_rule(rng, &app)],
            };
            (
                target,
                Some(vec![rule(
                    Some(vec![in_namespaces(namespaces_sel, pods)]),
                    ports,
                )]),
                None,
            )
        }
        Kind::FromProdFrontends => {
            let from = in_namespaces(sel(&[("env", "prod")]), sel(&[("tier", "frontend")]));
            (
                target,
                Some(vec![rule(Some(vec![from]), vec![tcp(8080)])]),
                None,
            )
        }
        Kind::FromBlocks => {
            let peers = match rng.below(4) {
                0 => vec![block("10.0.0.0/8", &["10.64.0.0/10"])],
                1 => vec![block(
                    "192.168.0.0/16",
                    &["192.168.1.0/24", "192.168.2.0/24"],
                )],
                2 => vec![
                    block("172.16.0.0/12", &["172.17.0.0/16"]),
                    block("fd00::/8", &["fd00:1::/32"]),
                ],
                _ => vec![block(&format!("100.{}.0.0/16", rng.range(64, 127)), &[])],
            };
            let ports = if rng.chance(0.5) {
                vec![tcp_range(30000, 32767)]
            } else {
                vec![tcp(443)]
            };
            (target, Some(vec![rule(Some(peers), ports)]), None)
        }
        Kind::OpenPort => {
            let ports = if rng.chance(0.5) {
                vec![tcp(443), tcp(80)]
            } else {
                vec![named("http", Protocol::Tcp)]
            };
            (target, Some(vec![rule(None, ports)]), None)
        }
        Kind::Expressions => {
            let mut pods = LabelSelector::everything();
            pods.require("tier", Operator::In(values(&["frontend", "backend"])));
            pods.require("track", Operator::NotIn(values(&["canary"])));
            let mut from_pods = LabelSelector::everything();
            from_pods.require("version", Operator::Exists);
            from_pods.require("app", Operator::In(BTreeSet::from([other.name.clone()])));
            let mut rules = vec![rule(
                Some(vec![same_ns(&ns.name, from_pods)]),
                vec![tcp(8080)],
            )];
            if rng.chance(0.5) {
                let mut from_ns = LabelSelector::everything();
                let mut projects = BTreeSet::from([ns.project.clone()]);
                projects.insert(rng.pick(namespaces).project.clone());
                from_ns.require("project", Operator::In(projects));
                from_ns.require("env", Operator::NotIn(values(&["dev"])));
                rules.push(rule(
                    Some(vec![in_namespaces(from_ns, LabelSelector::everything())]),
                    vec![tcp(9090)],
                ));
            }
            (pods, Some(rules), None)
        }
        Kind::DbLeader => {
            let Some(db) = ns.apps.iter().find(|a| a.tier == Tier::Db) else {
                return tenant_policy(rng, Kind::AppToApp, ns, namespaces, teams, team_apps);
            };
            let clients = sel(&[("app", &other.name)]);
            let leader = sel(&[("app", &db.name), ("role", "leader")]);
            let port = db
                .service_port()
                .map(|p| named(&p.name, p.protocol))
                .unwrap_or_else(|| tcp(5432));
            if rng.chance(0.5) {
                // The database side: clients may reach the leader.
                (
                    leader,
                    Some(vec![rule(
                        Some(vec![same_ns(&ns.name, clients)]),
                        vec![port],
                    )]),
                    None,
                )
            } else {
                // The client side: egress to the leader on its named port, plus DNS.
                let to = same_ns(&ns.name, leader);
                (
                    clients,
                    None,
                    Some(vec![rule(Some(vec![to]), vec![port]), dns_rule()]),
                )
            }
        }
        Kind::EgressDns => {
            let pods = if rng.chance(0.6) {
                LabelSelector::everything()
            } else {
                target
            };
            let same = rule(
                Some(vec![same_ns(&ns.name, LabelSelector::everything())]),
                vec![],
            );
            (pods, None, Some(vec![dns_rule(), same]))
        }
        Kind::EgressExternal => {
            let to = block(
                "0.0.0.0/0",
                &[
                    "10.0.0.0/8",
                    "172.16.0.0/12",
                    "192.168.0.0/16",
                    "169.254.169.254/32",
                ],
            );
            (
                target,
                None,
                Some(vec![rule(Some(vec![to]), vec![tcp(443)]), dns_rule()]),
            )
        }
        Kind::EgressTeamNamedPort => {
            let team = rng.below(teams.len());
            let to = in_namespaces(sel(&[("team", &teams[team])]), sel(&[("tier", "backend")]));
            (
                target,
                None,
                Some(vec![
                    rule(Some(vec![to]), vec![named("http", Protocol::Tcp)]),
                    dns_rule(),
                ]),
            )
        }
        Kind::EgressAnyNamedPort => {
            let port = if rng.chance(0.5) { "http" } else { "grpc" };
            (
                target,
                None,
                Some(vec![
                    rule(None, vec![named(port, Protocol::Tcp)]),
                    dns_rule(),
                ]),
            )
        }
    }
}

/// Policies of the system namespaces.
fn system_policies(namespaces: &[Ns]) -> Vec<Policy> {
    let has = |name: &str| namespaces.iter().any(|n| n.name == name);
    let mut out = Vec::new();
    if has("kube-system") {
        // DNS from every pod of every namespace: a set of every pod in the cluster.
        out.push(Policy {
            key: ObjectKey::new("kube-system", "allow-dns"),
            pod_selector: sel(&[("k8s-app", "kube-dns")]).build(),
            ingress: Some(vec![rule(
                Some(vec![in_namespaces(
                    LabelSelector::everything(),
                    LabelSelector::everything(),
                )]),
                vec![named("dns", Protocol::Udp), named("dns-tcp", Protocol::Tcp)],
            )]),
            egress: None,
        });
    }
    if has("monitoring") {
        let mut scraped = LabelSelector::everything();
        scraped.require("tier", Operator::Exists);
        out.push(Policy {
            key: ObjectKey::new("monitoring", "prometheus-scrape"),
            pod_selector: sel(&[("app.kubernetes.io/name", "prometheus")]).build(),
            ingress: Some(vec![rule(
                Some(vec![same_ns("monitoring", LabelSelector::everything())]),
                vec![named("web", Protocol::Tcp)],
            )]),
            egress: Some(vec![
                rule(
                    Some(vec![in_namespaces(LabelSelector::everything(), scraped)]),
                    vec![named("metrics", Protocol::Tcp)],
                ),
                dns_rule(),
            ]),
        });
    }
    if has("ingress-nginx") {
        out.push(Policy {
            key: ObjectKey::new("ingress-nginx", "allow-web"),
            pod_selector: sel(&[("app.kubernetes.io/name", "ingress-nginx")]).build(),
            ingress: Some(vec![rule(None, vec![tcp(80), tcp(443)])]),
            egress: None,
        });
    }
    out
}

// ---- label changes -------------------------------------------------------------------------

/// A pod and two label sets to toggle between.
#[derive(Debug, Clone)]
pub struct LabelToggle {
    pub a: Pod,
    pub b: Pod,
    /// The label that changes, e.g. `role: leader -> replica`.
    pub description: String,
}

impl LabelToggle {
    pub fn key(&self) -> &ObjectKey {
        &self.a.key
    }
}

/// Labels that change on live pods, in order of preference: a database failover flips `role`,
/// a canary promotion flips `track`, a rollout bumps `version`. `tier` and `app` are last resorts.
const MUTABLE_KEYS: &[&str] = &["role", "track", "version", "tier", "app"];

fn flipped(key: &str, value: &str) -> String {
    match (key, value) {
        ("role", "leader") => "replica".to_string(),
        ("role", _) => "leader".to_string(),
        ("track", "stable") => "canary".to_string(),
        ("track", _) => "stable".to_string(),
        ("tier", "frontend") => "backend".to_string(),
        ("tier", "backend") => "frontend".to_string(),
        ("tier", "cache") => "db".to_string(),
        ("tier", "db") => "cache".to_string(),
        ("version", v) => match v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => format!("v{}", n + 1),
            None => format!("{v}-next"),
        },
        (_, v) => format!("{v}-next"),
    }
}

/// The selectors of the sets the policies of `pod` read (rule selectors, and the policy's own
/// selector where it scopes a named port), as the compiler would build them.
fn selectors_read(index: &ClusterIndex, pod: &Pod, out: &mut BTreeSet<Selector>) {
    for policy in index.policies_selecting(pod) {
        for direction in Direction::ALL {
            for r in policy.rules(direction).unwrap_or_default() {
                for side in [&r.source, &r.destination] {
                    out.extend(side.selector.iter().cloned());
                    out.extend(side.not_selector.iter().cloned());
                }
                let named = r
                    .destination
                    .ports
                    .iter()
                    .any(|p| matches!(p, palisade::model::Port::Named(_)));
                if direction == Direction::Ingress && named {
                    out.insert(policy.selector.clone());
                }
            }
        }
    }
}

/// The namespaces a selector names by `projectcalico.org/namespace`.
fn named_namespaces(selector: &Selector) -> Vec<String> {
    selector
        .restrictions()
        .into_iter()
        .filter(|(l, _)| l.kind() == palisade::selector::LabelKind::Namespace)
        .filter_map(|(_, r)| r.values)
        .flatten()
        .collect()
}

/// Picks a pod (on `node` if `local`, elsewhere otherwise) and a change of one of its labels
/// that moves it into or out of at least one set read by a policy that applies on `node`,
/// preferring the labels of [`MUTABLE_KEYS`] in that order. Deterministic for a given index.
pub fn label_toggle(index: &ClusterIndex, node: &str, local: bool) -> Option<LabelToggle> {
    let mut local_pods: Vec<&Pod> = index.pods_on_node(node).map(|p| &**p).collect();
    local_pods.sort_by(|a, b| a.key.cmp(&b.key));
    let mut selections: BTreeSet<Selector> = BTreeSet::new();
    for pod in &local_pods {
        selectors_read(index, pod, &mut selections);
    }
    let candidates: Vec<&Pod> = if local {
        local_pods
    } else {
        // Namespaces named by selections first (the narrow ones), then every other namespace.
        let mut namespaces: Vec<String> = Vec::new();
        for s in &selections {
            namespaces.extend(named_namespaces(s));
        }
        let mut rest: Vec<String> = index.namespaces().map(|ns| ns.name.clone()).collect();
        rest.sort();
        namespaces.extend(rest);
        let mut seen = BTreeSet::new();
        namespaces.retain(|ns| seen.insert(ns.clone()));
        namespaces
            .into_iter()
            .flat_map(|ns| {
                let mut pods: Vec<&Pod> = index.pods_in_namespace(&ns).map(|p| &**p).collect();
                pods.sort_by(|a, b| a.key.cmp(&b.key));
                pods
            })
            .filter(|p| p.node.as_deref() != Some(node))
            .collect()
    };
    for key in MUTABLE_KEYS {
        for pod in &candidates {
            let Some(old) = pod.labels.get(key) else {
                continue;
            };
            let new = flipped(key, old);
            let mut b = (*pod).clone();
            b.labels.insert((*key).into(), new.as_str().into());
            let (view_a, view_b) = (index.pod_view(pod), index.pod_view(&b));
            let moved = selections
                .iter()
                .filter(|s| s.matches(&view_a) != s.matches(&view_b))
                .count();
            if moved == 0 {
                continue;
            }
            let ids = |p: &Pod| -> BTreeSet<palisade::model::PolicyId> {
                index
                    .policies_selecting(p)
                    .iter()
                    .map(|p| p.id.clone())
                    .collect()
            };
            let policies = ids(pod).symmetric_difference(&ids(&b)).count();
            let mut description = format!("{key}: {old} -> {new}; in/out of {moved} selection(s)");
            if local {
                let _ = write!(
                    description,
                    ", changes {policies} policy selection(s) of the pod"
                );
            }
            return Some(LabelToggle {
                a: (*pod).clone(),
                b,
                description,
            });
        }
    }
    None
}

// ---- summaries -----------------------------------------------------------------------------

/// One line of counts of the cluster in `index`.
pub fn describe_index(index: &ClusterIndex) -> String {
    let mut nodes = BTreeSet::new();
    let mut labels = 0usize;
    let (mut min_labels, mut max_labels) = (usize::MAX, 0usize);
    let mut with_ports = 0usize;
    for pod in index.pods() {
        if let Some(n) = &pod.node {
            nodes.insert(n.as_str());
        }
        labels += pod.labels.len();
        min_labels = min_labels.min(pod.labels.len());
        max_labels = max_labels.max(pod.labels.len());
        with_ports += usize::from(!pod.named_ports.is_empty());
    }
    let pods = index.pod_count().max(1);
    let mut policies = 0usize;
    let (mut ingress, mut egress, mut deny) = (0usize, 0usize, 0usize);
    for p in index.policies() {
        policies += 1;
        ingress += usize::from(p.ingress.is_some());
        egress += usize::from(p.egress.is_some());
        deny += usize::from(p.ingress.as_ref().is_some_and(|r| r.is_empty()));
    }
    format!(
        "{} pods on {} nodes ({} on {LOCAL_NODE}), {} namespaces, {} policies ({} ingress, {} egress, {} default-deny); \
         {:.1} labels/pod ({}..{}), {:.0}% of pods with named ports",
        index.pod_count(),
        nodes.len(),
        index.pods_on_node(LOCAL_NODE).count(),
        index.namespace_count(),
        policies,
        ingress,
        egress,
        deny,
        labels as f64 / pods as f64,
        min_labels,
        max_labels,
        100.0 * with_ports as f64 / pods as f64,
    )
}

/// Counts of a compiled state: sets, members, chains, rules, and the largest sets.
pub fn describe_state(state: &DesiredState) -> String {
    let mut out = String::new();
    for family in palisade::model::Family::ALL {
        let f = state.family(family);
        if f.ipsets.is_empty() && f.chains.is_empty() {
            continue;
        }
        let mut sizes: Vec<usize> = f.ipsets.values().map(|s| s.members.len()).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let policy_chains = f
            .chains
            .keys()
            .filter(|k| k.starts_with("PAL-PI-") || k.starts_with("PAL-PE-"))
            .count();
        let pod_chains = f
            .chains
            .keys()
            .filter(|k| k.starts_with("PAL-TO-") || k.starts_with("PAL-FROM-"))
            .count();
        let kinds = |c: char| {
            f.ipsets
                .keys()
                .filter(|k| k.as_bytes().get(5) == Some(&(c as u8)))
                .count()
        };
        let _ = write!(
            out,
            "{family}: {} sets ({} pod, {} named-port, {} ipBlock), {} members (largest: {:?}), \
             {} chains ({policy_chains} policy, {pod_chains} pod), {} rules; ",
            f.ipsets.len(),
            kinds('p'),
            kinds('n'),
            kinds('b'),
            f.member_count(),
            &sizes[..sizes.len().min(5)],
            f.chains.len(),
            f.rule_count(),
        );
    }
    out.trim_end_matches("; ").to_string()
}

/// How two states differ: (sets added or removed, sets with different members, members added
/// or removed, chains added, removed or changed).
pub fn state_diff(a: &DesiredState, b: &DesiredState) -> (usize, usize, usize, usize) {
    let (mut sets, mut changed_sets, mut members, mut chains) = (0, 0, 0, 0);
    for family in palisade::model::Family::ALL {
        let (fa, fb) = (a.family(family), b.family(family));
        for (name, set) in &fa.ipsets {
            match fb.ipsets.get(name) {
                None => sets += 1,
                Some(other) if other.members != set.members => {
                    changed_sets += 1;
                    members += set.members.symmetric_difference(&other.members).count();
                }
                Some(_) => {}
            }
        }
        sets += fb
            .ipsets
            .keys()
            .filter(|k| !fa.ipsets.contains_key(*k))
            .count();
        for (name, chain) in &fa.chains {
            if fb.chains.get(name) != Some(chain) {
                chains += 1;
            }
        }
        chains += fb
            .chains
            .keys()
            .filter(|k| !fa.chains.contains_key(*k))
            .count();
    }
    (sets, changed_sets, members, chains)
}
