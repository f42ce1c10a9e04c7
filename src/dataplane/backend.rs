//! Which iptables backend to program: the one the rest of the node (kubelet, kube-proxy) uses.
//! Rules written to the other backend would be evaluated in an unpredictable order relative to
//! theirs, or not be seen by anyone debugging the node with the usual tools.

use std::fmt;
use std::str::FromStr;

use crate::model::Family;

use super::error::DataplaneError;
use super::exec::CommandRunner;

/// An iptables backend: the binaries Palisade reads and writes the kernel with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }

    pub fn save_binary(self, family: Family) -> &'static str {
        match (self, family) {
            (Backend::Legacy, Family::V4) => "iptables-legacy-save",
            (Backend::Legacy, Family::V6) => "ip6tables-legacy-save",
            (Backend::Nft, Family::V4) => "iptables-nft-save",
            (Backend::Nft, Family::V6) => "ip6tables-nft-save",
        }
    }

    pub fn restore_binary(self, family: Family) -> &'static str {
        match (self, family) {
            (Backend::Legacy, Family::V4) => "iptables-legacy-restore",
            (Backend::Legacy, Family::V6) => "ip6tables-legacy-restore",
            (Backend::Nft, Family::V4) => "iptables-nft-restore",
            (Backend::Nft, Family::V6) => "ip6tables-nft-restore",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator asked for (`--iptables-backend auto|legacy|nft`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    #[default]
    Auto,
    Legacy,
    Nft,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(BackendChoice::Auto),
            "legacy" => Ok(BackendChoice::Legacy),
            "nft" => Ok(BackendChoice::Nft),
            other => Err(format!(
                "unknown iptables backend {other:?} (expected auto, legacy or nft)"
            )),
        }
    }
}

/// Why a backend was chosen; logged, and shown by the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendReason {
    /// The operator named the backend.
    Configured,
    /// kubelet's `KUBE-IPTABLES-HINT` / `KUBE-KUBELET-CANARY` chain is in nft's mangle table.
    KubeletHintInNft,
    /// The same chain is in legacy's mangle table (and not in nft's).
    KubeletHintInLegacy,
    /// No hint; legacy holds more rules.
    MoreLegacyRules,
    /// No hint; nft holds at least as many rules (a tie, including an empty node, means nft:
    /// it is the default of every current distribution).
    NftRulesOrTie,
}

impl fmt::Display for BackendReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendReason::Configured => "configured",
            BackendReason::KubeletHintInNft => "kubelet hint chain in nft mangle table",
            BackendReason::KubeletHintInLegacy => "kubelet hint chain in legacy mangle table",
            BackendReason::MoreLegacyRules => "legacy holds more rules",
            BackendReason::NftRulesOrTie => "nft holds at least as many rules as legacy",
        })
    }
}

/// What the `*-save` outputs of both backends say, both families together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendEvidence {
    pub nft_hint: bool,
    pub legacy_hint: bool,
    pub nft_rules: usize,
    pub legacy_rules: usize,
}

impl BackendEvidence {
    /// Adds one `*-save` output (all tables) of one backend.
    pub fn record(&mut self, backend: Backend, save_output: &str) {
        let hint = has_kubelet_hint(save_output);
        let rules = count_rules(save_output);
        match backend {
            Backend::Legacy => {
                self.legacy_hint |= hint;
                self.legacy_rules += rules;
            }
            Backend::Nft => {
                self.nft_hint |= hint;
                self.nft_rules += rules;
            }
        }
    }
}

/// The decision of kube-proxy's iptables-wrapper: kubelet's hint chains first (nft checked
/// first, as the wrapper does), then whichever backend holds more rules; a tie means nft.
pub fn decide_backend(evidence: &BackendEvidence) -> (Backend, BackendReason) {
    if evidence.nft_hint {
        (Backend::Nft, BackendReason::KubeletHintInNft)
    } else if evidence.legacy_hint {
        (Backend::Legacy, BackendReason::KubeletHintInLegacy)
    } else if evidence.legacy_rules > evidence.nft_rules {
        (Backend::Legacy, BackendReason::MoreLegacyRules)
    } else {
        (Backend::Nft, BackendReason::NftRulesOrTie)
    }
}

/// Whether kubelet's hint chains are declared in the mangle table of this `*-save` output.
fn has_kubelet_hint(save_output: &str) -> bool {
    let mut in_mangle = false;
    for line in save_output.lines() {
        if let Some(table) = line.strip_prefix('*') {
            in_mangle = table.trim() == "mangle";
        } else if in_mangle
            && (line.starts_with(":KUBE-IPTABLES-HINT ")
                || line.starts_with(":KUBE-KUBELET-CANARY "))
        {
            return true;
        }
    }
    false
}

fn count_rules(save_output: &str) -> usize {
    save_output
        .lines()
        .filter(|line| line.starts_with("-A "))
        .count()
}

/// Reads both backends (all tables, both families) and picks one.
///
/// A backend whose tools are missing or fail counts as empty, as in the wrapper; only when
/// every read fails is there nothing to decide on, and that is an error. Full saves are read
/// rather than `-t mangle` because asking legacy for a table creates it.
pub fn detect_backend(
    runner: &dyn CommandRunner,
) -> Result<(Backend, BackendReason), DataplaneError> {
    let mut evidence = BackendEvidence::default();
    let mut last_error = None;
    let mut any_read = false;
    for backend in [Backend::Nft, Backend::Legacy] {
        for family in Family::ALL {
            let program = backend.save_binary(family);
            match runner.run(program, &[], None) {
                Ok(output) => {
                    any_read = true;
                    evidence.record(backend, &output.stdout);
                }
                Err(error) => {
                    tracing::debug!(program, %error, "backend probe failed; counting it as empty");
                    last_error = Some(error);
                }
            }
        }
    }
    if let (false, Some(error)) = (any_read, last_error) {
        return Err(error);
    }
    let (backend, reason) = decide_backend(&evidence);
    tracing::info!(
        backend = %backend,
        reason = %reason,
        nft_hint = evidence.nft_hint,
        legacy_hint = evidence.legacy_hint,
        nft_rules = evidence.nft_rules,
        legacy_rules = evidence.legacy_rules,
        "selected iptables backend"
    );
    Ok((backend, reason))
}

/// Turns the operator's choice into a backend, detecting only for `auto`.
pub fn resolve_backend(
    choice: BackendChoice,
    runner: &dyn CommandRunner,
) -> Result<(Backend, BackendReason), DataplaneError> {
    match choice {
        BackendChoice::Auto => detect_backend(runner),
        BackendChoice::Legacy => Ok((Backend::Legacy, BackendReason::Configured)),
        BackendChoice::Nft => Ok((Backend::Nft, BackendReason::Configured)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::recording::RecordingRunner;

    const KUBELET_MANGLE: &str = "\
# Generated by iptables-save v1.8.9 on Thu Nov 26 10:41:14 2026
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
";

    const FILTER_WITH_RULES: &str = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -j KUBE-SERVICES
-A FORWARD -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -j REJECT
COMMIT
";

    const NFT_WARNING_ONLY: &str = "\
# Warning: iptables-legacy tables present, use iptables-legacy-save to see them
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
";

    fn evidence(legacy: &[&str], nft: &[&str]) -> BackendEvidence {
        let mut evidence = BackendEvidence::default();
        for output in legacy {
            evidence.record(Backend::Legacy, output);
        }
        for output in nft {
            evidence.record(Backend::Nft, output);
        }
        evidence
    }

    #[test]
    fn kubelet_hint_in_legacy_wins_over_more_nft_rules() {
        let found = evidence(&[KUBELET_MANGLE], &[FILTER_WITH_RULES]);
        assert_eq!(found.legacy_rules, 0);
        assert_eq!(found.nft_rules, 3);
        assert_eq!(
            decide_backend(&found),
            (Backend::Legacy, BackendReason::KubeletHintInLegacy)
        );
    }

    #[test]
    fn kubelet_hint_in_nft_is_checked_first() {
        let found = evidence(&[KUBELET_MANGLE, FILTER_WITH_RULES], &[KUBELET_MANGLE]);
        assert_eq!(
            decide_backend(&found),
            (Backend::Nft, BackendReason::KubeletHintInNft)
        );
    }

    #[test]
    fn hint_chains_outside_mangle_do_not_count() {
        let filter_hint = "*filter\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
        assert!(!evidence(&[filter_hint], &[]).legacy_hint);
    }

    #[test]
    fn more_rules_decides_without_a_hint_and_a_tie_means_nft() {
        let legacy_heavy = evidence(&[FILTER_WITH_RULES, FILTER_WITH_RULES], &[NFT_WARNING_ONLY]);
        assert_eq!((legacy_heavy.legacy_rules, legacy_heavy.nft_rules), (6, 1));
        assert_eq!(
            decide_backend(&legacy_heavy),
            (Backend::Legacy, BackendReason::MoreLegacyRules)
        );

        let tie = evidence(&[FILTER_WITH_RULES], &[FILTER_WITH_RULES]);
        assert_eq!(
            decide_backend(&tie),
            (Backend::Nft, BackendReason::NftRulesOrTie)
        );
        assert_eq!(
            decide_backend(&BackendEvidence::default()),
            (Backend::Nft, BackendReason::NftRulesOrTie)
        );
    }

    #[test]
    fn detection_reads_all_four_saves_and_tolerates_missing_tools() {
        let runner = RecordingRunner::new();
        runner.set_output("iptables-legacy-save", FILTER_WITH_RULES);
        runner.set_output("ip6tables-legacy-save", FILTER_WITH_RULES);
        runner.set_output("iptables-nft-save", NFT_WARNING_ONLY);
        runner.set_failure(
            "ip6tables-nft-save",
            "ip6tables-nft-save: command not found",
        );
        let (backend, reason) = detect_backend(&runner).expect("three reads worked");
        assert_eq!(
            (backend, reason),
            (Backend::Legacy, BackendReason::MoreLegacyRules)
        );
        let programs: Vec<String> = runner.calls().into_iter().map(|c| c.program).collect();
        assert_eq!(
            programs,
            [
                "iptables-nft-save",
                "ip6tables-nft-save",
                "iptables-legacy-save",
                "ip6tables-legacy-save"
            ]
        );
    }

    #[test]
    fn detection_fails_only_when_no_backend_can_be_read() {
        let runner = RecordingRunner::new();
        for family in Family::ALL {
            for backend in [Backend::Legacy, Backend::Nft] {
                runner.set_failure(backend.save_binary(family), "not found");
            }
        }
        assert!(detect_backend(&runner).is_err());
    }

    #[test]
    fn choice_parses_cli_words() {
        assert_eq!("auto".parse(), Ok(BackendChoice::Auto));
        assert_eq!("legacy".parse(), Ok(BackendChoice::Legacy));
        assert_eq!("nft".parse(), Ok(BackendChoice::Nft));
        assert!("iptables".parse::<BackendChoice>().is_err());
    }
}
