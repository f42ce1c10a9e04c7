//! Reading Palisade's chains back from `iptables-save -t filter`.
//!
//! Rules are recognised by the `pal:<hash>` at the start of their comment, not by their text:
//! legacy and nft print options in their own order (the comment lands after `-s`/`-p`, not
//! where we wrote it) and quote differently, but the comment survives unchanged.

use std::collections::BTreeMap;

use crate::compiler::naming::{is_owned_chain, FORWARD_CHAIN};

/// What the kernel holds of Palisade's in the filter table of one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSnapshot {
    /// Every `PAL-` chain, in the order `iptables-save` printed them.
    pub chains: BTreeMap<String, KernelChain>,
    /// The rule specifications (after `-A FORWARD `) of FORWARD rules that jump to
    /// `PAL-FORWARD`, as printed, so they can be deleted with `-D FORWARD <spec>`.
    pub hooks: Vec<String>,
}

impl FilterSnapshot {
    pub fn owns_anything(&self) -> bool {
        !self.chains.is_empty() || !self.hooks.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelChain {
    pub rules: Vec<KernelRule>,
}

impl KernelChain {
    /// Whether the chain holds exactly these rule hashes, in this order. A rule without a
    /// readable hash never matches, so a chain someone edited by hand gets rewritten.
    pub fn has_hashes(&self, hashes: &[String]) -> bool {
        self.rules.len() == hashes.len()
            && self
                .rules
                .iter()
                .zip(hashes)
                .all(|(rule, hash)| rule.hash.as_deref() == Some(hash.as_str()))
    }

    pub fn references_set(&self, set: &str) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.sets.iter().any(|name| name == set))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelRule {
    /// The 16 hex digits after `pal:` in the rule's comment.
    pub hash: Option<String>,
    /// Sets named in `--match-set`: a set cannot be destroyed or replaced while a rule uses it.
    pub sets: Vec<String>,
    /// Packets and bytes, when saved with `-c`.
    pub counters: Option<Counters>,
}

/// Parses `iptables-save` output; only the filter table is read, and only owned chains and
/// the hook are kept. Lines it does not understand are skipped: the tool's output format is
/// not ours, and a rule we cannot read is treated as unknown, which forces a rewrite.
pub fn parse_filter_save(text: &str) -> FilterSnapshot {
    let mut snapshot = FilterSnapshot::default();
    let mut in_filter = false;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table.trim() == "filter";
            continue;
        }
        if !in_filter {
            continue;
        }
        if let Some(declaration) = line.strip_prefix(':') {
            let name = declaration.split_whitespace().next().unwrap_or_default();
            if is_owned_chain(name) {
                snapshot.chains.entry(name.to_string()).or_default();
            }
            continue;
        }
        let Some((counters, chain, spec)) = parse_append(line) else {
            continue;
        };
        if chain == "FORWARD" {
            if jump_target(&tokenize(spec)).as_deref() == Some(FORWARD_CHAIN) {
                snapshot.hooks.push(spec.to_string());
            }
        } else if is_owned_chain(chain) {
            let mut rule = parse_rule(spec);
            rule.counters = counters;
            snapshot
                .chains
                .entry(chain.to_string())
                .or_default()
                .rules
                .push(rule);
        }
    }
    snapshot
}

/// Packets and bytes.
type Counters = (u64, u64);

/// Splits `[pkts:bytes] -A CHAIN spec` into the counters (printed when saving with `-c`), the
/// chain and the rest.
fn parse_append(line: &str) -> Option<(Option<Counters>, &str, &str)> {
    let mut rest = line.trim_start();
    let mut counters = None;
    if let Some(bracketed) = rest.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']')?;
        counters = inside
            .split_once(':')
            .and_then(|(p, b)| Some((p.parse().ok()?, b.parse().ok()?)));
        rest = after.trim_start();
    }
    let rest = rest.strip_prefix("-A ")?.trim_start();
    match rest.split_once(char::is_whitespace) {
        Some((chain, spec)) => Some((counters, chain, spec.trim())),
        None => Some((counters, rest, "")),
    }
}

fn parse_rule(spec: &str) -> KernelRule {
    let tokens = tokenize(spec);
    let mut rule = KernelRule::default();
    for pair in tokens.windows(2) {
        match pair[0].as_str() {
            "--comment" if rule.hash.is_none() => rule.hash = palisade_hash(&pair[1]),
            "--match-set" => rule.sets.push(pair[1].clone()),
            _ => {}
        }
    }
    rule
}

fn jump_target(tokens: &[String]) -> Option<String> {
    tokens
        .windows(2)
        .find(|pair| pair[0] == "-j" || pair[0] == "--jump")
        .map(|pair| pair[1].clone())
}

/// `pal:` followed by 16 lowercase hex digits, then the end of the comment or a space.
fn palisade_hash(comment: &str) -> Option<String> {
    let rest = comment.strip_prefix("pal:")?;
    let hash = rest.get(..16)?;
    let well_formed = hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let terminated = matches!(rest.as_bytes().get(16), None | Some(b' '));
    (well_formed && terminated).then(|| hash.to_string())
}

/// Splits a rule specification the way iptables-save quotes it: whitespace separates words,
/// double quotes group them, and a backslash escapes the next character inside quotes.
fn tokenize(spec: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut in_quotes = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                in_token = true;
            }
            '\\' if in_quotes => {
                if let Some(escaped) = chars.next() {
                    current.push(escaped);
                }
            }
            c if c.is_whitespace() && !in_quotes => {
                if in_token {
                    tokens.push(std::mem::take(&mut current));
                    in_token = false;
                }
            }
            c => {
                current.push(c);
                in_token = true;
            }
        }
    }
    if in_token {
        tokens.push(current);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real `iptables-legacy-save -t filter` output (1.8.9) of rules written with the comment
    /// first: the comment comes back after `-s`/`-p`, quoted.
    const LEGACY: &str = r#"# Generated by iptables-save v1.8.9 on Thu Nov 26 10:41:31 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:PAL-A - [0:0]
:PAL-B - [0:0]
:PAL-EMPTY - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m comment --comment "palisade: policy enforcement" -j PAL-A
-A FORWARD -m comment --comment "palisade: policy enforcement" -j PAL-FORWARD
-A KUBE-SERVICES -m comment --comment "pal:0123456789abcdef not ours" -j ACCEPT
-A PAL-A -s 10.0.0.0/8 -m comment --comment "pal:0123456789abcdef x" -j PAL-B
-A PAL-B -p tcp -m comment --comment "pal:aaaaaaaaaaaaaaaa y" -m tcp --dport 80 -j ACCEPT
-A PAL-B -m comment --comment "pal:bbbbbbbbbbbbbbbb y z" -j MARK --set-xmark 0x10000/0x10000
-A PAL-B -m mark --mark 0x10000/0x10000 -m comment --comment nohash -j RETURN
-A PAL-B -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "pal:cccccccccccccccc" -j ACCEPT
-A PAL-B -m set --match-set pal4-p-1 src -m comment --comment "pal:dddddddddddddddd \"quoted\" origin" -j ACCEPT
COMMIT
# Completed on Thu Nov 26 10:41:31 2026
*nat
:PREROUTING ACCEPT [0:0]
:PAL-NAT - [0:0]
-A PAL-NAT -j RETURN
COMMIT
"#;

    /// Real `iptables-nft-save` output, with its warning line and counters (`-c`).
    const NFT: &str = r#"# Warning: iptables-legacy tables present, use iptables-legacy-save to see them
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Thu Nov 26 10:41:31 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [12:840]
:OUTPUT ACCEPT [0:0]
:PAL-FORWARD - [0:0]
:PAL-TO-1 - [0:0]
[3:180] -A FORWARD -m comment --comment "palisade: policy enforcement" -j PAL-FORWARD
[3:180] -A PAL-FORWARD -d 10.1.0.5/32 -m comment --comment "pal:1111111111111111 pod" -j PAL-TO-1
[18446744073709551615:7] -A PAL-TO-1 -m set --match-set pal4-p-2 src -m comment --comment "pal:2222222222222222 ns/p ingress[0]" -j ACCEPT
[0:0] -A PAL-TO-1 -m comment --comment "pal:33333333333333" -j DROP
COMMIT
"#;

    fn hashes(snapshot: &FilterSnapshot, chain: &str) -> Vec<Option<String>> {
        snapshot.chains[chain]
            .rules
            .iter()
            .map(|rule| rule.hash.clone())
            .collect()
    }

    #[test]
    fn legacy_save_yields_owned_chains_hashes_and_hook() {
        let snapshot = parse_filter_save(LEGACY);
        assert_eq!(
            snapshot.chains.keys().collect::<Vec<_>>(),
            ["PAL-A", "PAL-B", "PAL-EMPTY"],
            "only owned filter chains; nat's PAL-NAT and KUBE-SERVICES are ignored"
        );
        assert_eq!(
            hashes(&snapshot, "PAL-A"),
            [Some("0123456789abcdef".to_string())]
        );
        assert_eq!(
            hashes(&snapshot, "PAL-B"),
            [
                Some("aaaaaaaaaaaaaaaa".to_string()),
                Some("bbbbbbbbbbbbbbbb".to_string()),
                None,
                Some("cccccccccccccccc".to_string()),
                Some("dddddddddddddddd".to_string()),
            ]
        );
        assert!(snapshot.chains["PAL-EMPTY"].rules.is_empty());
        assert_eq!(snapshot.chains["PAL-B"].rules[4].sets, ["pal4-p-1"]);
        assert_eq!(
            snapshot.hooks,
            [r#"-m comment --comment "palisade: policy enforcement" -j PAL-FORWARD"#],
            "a FORWARD jump to another PAL- chain is not the hook"
        );
    }

    #[test]
    fn nft_save_with_counters_and_truncated_hash() {
        let snapshot = parse_filter_save(NFT);
        assert_eq!(snapshot.hooks.len(), 1);
        assert_eq!(
            hashes(&snapshot, "PAL-FORWARD"),
            [Some("1111111111111111".to_string())]
        );
        assert_eq!(
            hashes(&snapshot, "PAL-TO-1"),
            [Some("2222222222222222".to_string()), None],
            "14 hex digits are not a hash"
        );
        assert_eq!(snapshot.chains["PAL-TO-1"].rules[0].sets, ["pal4-p-2"]);
        assert!(snapshot.chains["PAL-TO-1"].references_set("pal4-p-2"));
        assert_eq!(
            snapshot.chains["PAL-FORWARD"].rules[0].counters,
            Some((3, 180))
        );
        assert_eq!(
            snapshot.chains["PAL-TO-1"].rules[0].counters,
            Some((u64::MAX, 7)),
            "counters are 64-bit"
        );
        assert_eq!(snapshot.chains["PAL-TO-1"].rules[1].counters, Some((0, 0)));
        assert_eq!(
            parse_filter_save(LEGACY).chains["PAL-A"].rules[0].counters,
            None,
            "saved without -c"
        );
    }

    #[test]
    fn hash_comparison_needs_every_rule_known_and_in_order() {
        let snapshot = parse_filter_save(LEGACY);
        let chain = &snapshot.chains["PAL-A"];
        assert!(chain.has_hashes(&["0123456789abcdef".to_string()]));
        assert!(!chain.has_hashes(&[]));
        assert!(!snapshot.chains["PAL-B"].has_hashes(&[
            "aaaaaaaaaaaaaaaa".to_string(),
            "bbbbbbbbbbbbbbbb".to_string(),
            "xxxxxxxxxxxxxxxx".to_string(),
            "cccccccccccccccc".to_string(),
            "dddddddddddddddd".to_string(),
        ]));
    }

    #[test]
    fn hash_needs_hex_and_a_boundary() {
        assert_eq!(
            palisade_hash("pal:0123456789abcdef").as_deref(),
            Some("0123456789abcdef")
        );
        assert_eq!(palisade_hash("pal:0123456789abcdefg"), None);
        assert_eq!(palisade_hash("pal:0123456789ABCDEF"), None);
        assert_eq!(palisade_hash("palisade: policy enforcement"), None);
    }

    #[test]
    fn tokenizer_handles_quotes_and_escapes() {
        assert_eq!(
            tokenize(r#"-m comment --comment "a \"b\" c" -j X"#),
            ["-m", "comment", "--comment", r#"a "b" c"#, "-j", "X"]
        );
        assert_eq!(tokenize(r#"--comment """#), ["--comment", ""]);
    }
}
