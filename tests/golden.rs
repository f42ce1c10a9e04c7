//! Golden tests: the exact text `palisade render` produces for each scenario under
//! `tests/golden/`, per node. Regenerate with `UPDATE_GOLDEN=1 cargo test --test golden` and
//! review the diff.

use std::path::{Path, PathBuf};

use palisade::compiler::{compile, Marks};
use palisade::manifest;
use palisade::model::Family;
use palisade::render;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Renders a node's state the way `palisade render --family both` does.
fn render_node(paths: &[PathBuf], node: &str) -> String {
    let manifests = manifest::load(paths).unwrap_or_else(|e| panic!("loading {paths:?}: {e}"));
    let mut out = String::new();
    for warning in &manifests.warnings {
        // Paths relative to the repository keep the text machine-independent.
        let warning = warning.replace(&format!("{}/", root().display()), "");
        out.push_str(&format!("# warning: {warning}\n"));
    }
    let state = compile(&manifests.into_index(), node, Marks::default());
    for family in Family::ALL {
        let family_state = state.family(family);
        if !family_state.chains.is_empty() {
            out.push_str(&render::full_text(family_state, family));
        }
    }
    out
}

fn check(scenario: &str, extra: &[&str]) {
    let dir = root().join("tests/golden").join(scenario);
    let mut paths = vec![dir.join("cluster.yaml")];
    paths.extend(extra.iter().map(|p| root().join(p)));
    for node in ["node-1", "node-2"] {
        let actual = render_node(&paths, node);
        let golden = dir.join(format!("{node}.txt"));
        compare(&golden, &actual);
    }
}

fn compare(golden: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, actual)
            .unwrap_or_else(|e| panic!("writing {}: {e}", golden.display()));
        return;
    }
    let expected = std::fs::read_to_string(golden).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            golden.display()
        )
    });
    if expected != actual {
        let diff: Vec<String> = diff_lines(&expected, actual);
        panic!(
            "{} differs from the rendered text (UPDATE_GOLDEN=1 regenerates it):\n{}",
            golden.display(),
            diff.join("\n")
        );
    }
}

/// Lines only in one side, marked `-` (golden) and `+` (rendered).
fn diff_lines(expected: &str, actual: &str) -> Vec<String> {
    let expected_lines: Vec<&str> = expected.lines().collect();
    let actual_lines: Vec<&str> = actual.lines().collect();
    let mut out: Vec<String> = expected_lines
        .iter()
        .filter(|l| !actual_lines.contains(l))
        .map(|l| format!("- {l}"))
        .collect();
    out.extend(
        actual_lines
            .iter()
            .filter(|l| !expected_lines.contains(l))
            .map(|l| format!("+ {l}")),
    );
    if out.is_empty() {
        out.push("(same lines, different order)".to_string());
    }
    out
}

#[test]
fn seed_policies_and_default_deny_annotation() {
    check("seed", &["integration/seed"]);
}

#[test]
fn peers_and_ports() {
    check("peers-and-ports", &[]);
}

#[test]
fn dual_stack() {
    check("dual-stack", &[]);
}

#[test]
fn egress() {
    check("egress", &[]);
}

#[test]
fn rendering_is_deterministic() {
    let paths = vec![root().join("tests/golden/peers-and-ports/cluster.yaml")];
    let first = render_node(&paths, "node-1");
    for _ in 0..5 {
        assert_eq!(render_node(&paths, "node-1"), first);
    }
}

#[test]
fn calico_tiers() {
    check("calico-tiers", &[]);
}

#[test]
fn denials_are_audited_logged_or_enforced_per_namespace() {
    check("denials", &[]);
}
