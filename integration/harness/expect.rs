//! Expected reachability, written compactly, checked against the full measured matrix.
//!
//! An expectation is a list of lines; for each probe the LAST line that matches decides:
//!
//! ```text
//! allow * -> *                          # everything connects...
//! deny  * -> prod/*                     # ...except into prod...
//! allow prod/{web,api} -> prod/db tcp/5432   # ...where web and api reach the database
//! allow node/* -> *                     # and nodes reach their pods (kubelet probes)
//! deny  dev/a -> prod/b udp/53 v6       # only this port, only over IPv6
//! ```
//!
//! Sources are pods `namespace/name` or nodes `node/node-1`; destinations are pods. Patterns
//! are globs: `*` matches any text (also `/`), `{a,b}` either alternative. After the
//! destination, optional filters: services `tcp`, `udp/53`, `tcp/{80,81}` (any of them), and a
//! family `v4` or `v6`. A probe that no line matches is an error, and so is a line that matches
//! no probe (a typo would otherwise pass silently).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::cluster::Family;
use super::probe::{Matrix, Observation, Source, Verdict};

#[derive(Debug, Clone)]
pub struct Line {
    pub text: String,
    pub allow: bool,
    sources: Vec<String>,
    destinations: Vec<String>,
    /// Empty: any service.
    services: Vec<String>,
    family: Option<Family>,
}

/// Parses expectation lines.
pub fn parse(lines: &[String]) -> Result<Vec<Line>> {
    lines.iter().map(|text| parse_line(text)).collect()
}

fn parse_line(text: &str) -> Result<Line> {
    let syntax = || {
        format!(
            "bad expectation {text:?}: expected `allow|deny SOURCE -> DESTINATION [tcp|udp[/PORT]]... [v4|v6]`"
        )
    };
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.len() < 4 || tokens[2] != "->" {
        bail!(syntax());
    }
    let allow = match tokens[0] {
        "allow" => true,
        "deny" => false,
        _ => bail!(syntax()),
    };
    let mut services = Vec::new();
    let mut family = None;
    for token in &tokens[4..] {
        match *token {
            "v4" => family = Some(Family::V4),
            "v6" => family = Some(Family::V6),
            service => {
                let expanded = expand_braces(service);
                for pattern in expanded {
                    let (proto, port) = pattern.split_once('/').unwrap_or((&pattern, "*"));
                    if !matches!(proto, "tcp" | "udp" | "*") {
                        bail!(syntax());
                    }
                    services.push(format!("{proto}/{port}"));
                }
            }
        }
    }
    Ok(Line {
        text: text.to_string(),
        allow,
        sources: expand_braces(tokens[1]),
        destinations: expand_braces(tokens[3]),
        services,
        family,
    })
}

impl Line {
    pub fn matches(&self, observation: &Observation) -> bool {
        let probe = &observation.probe;
        let source = probe.source.to_string();
        self.sources.iter().any(|p| glob(p, &source))
            && self
                .destinations
                .iter()
                .any(|p| glob(p, &probe.destination))
            && (self.services.is_empty() || self.services.iter().any(|p| glob(p, &probe.service())))
            && self.family.is_none_or(|f| f == probe.family)
    }
}

/// `a{b,c}d{e,f}` → `abde abdf acde acdf`.
pub fn expand_braces(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_string()];
    };
    let Some(close) = pattern[open..].find('}').map(|i| open + i) else {
        return vec![pattern.to_string()];
    };
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut out = Vec::new();
    for alternative in pattern[open + 1..close].split(',') {
        for rest in expand_braces(tail) {
            out.push(format!("{head}{alternative}{rest}"));
        }
    }
    out
}

/// Whether `text` matches `pattern`, in which `*` stands for any text.
pub fn glob(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Classic two-pointer matching with backtracking to the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// One probe whose measured result differs from the expectation.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub observation: Observation,
    /// `None`: no line covered the probe.
    pub expected_allow: Option<bool>,
    pub deciding_line: Option<String>,
}

/// What the expectation says of `observation`: allowed or not, and which line said it.
pub fn expected(lines: &[Line], observation: &Observation) -> Option<(bool, String)> {
    lines
        .iter()
        .rev()
        .find(|line| line.matches(observation))
        .map(|line| (line.allow, line.text.clone()))
}

/// Whether a measured verdict satisfies an expectation: allowed means connected; denied means
/// anything else that a policy could cause (a timeout, or a reject's refusal/unreachable).
pub fn satisfies(verdict: &Verdict, allow: bool) -> bool {
    match verdict {
        Verdict::Connected => allow,
        Verdict::Blocked | Verdict::Refused | Verdict::Unreachable => !allow,
        // A stalled connection or a banner from the wrong pod is never what a test expects.
        Verdict::Stalled | Verdict::Misrouted | Verdict::Error => false,
    }
}

/// Compares the whole matrix with the expectation.
pub fn compare(lines: &[Line], observations: &[Observation]) -> Result<Vec<Mismatch>> {
    for line in lines {
        if !observations.iter().any(|o| line.matches(o)) {
            bail!(
                "expectation {:?} matches no probe of the matrix (typo?)",
                line.text
            );
        }
    }
    Ok(observations
        .iter()
        .filter_map(|observation| match expected(lines, observation) {
            None => Some(Mismatch {
                observation: observation.clone(),
                expected_allow: None,
                deciding_line: None,
            }),
            Some((allow, line)) => (!satisfies(&observation.verdict, allow)).then(|| Mismatch {
                observation: observation.clone(),
                expected_allow: Some(allow),
                deciding_line: Some(line),
            }),
        })
        .collect())
}

/// A table of the mismatches, one line each.
pub fn mismatch_table(mismatches: &[Mismatch]) -> String {
    let mut rows = vec![[
        "SOURCE".to_string(),
        "DESTINATION".to_string(),
        "PROBE".to_string(),
        "EXPECTED".to_string(),
        "MEASURED".to_string(),
        "BECAUSE OF".to_string(),
    ]];
    for m in mismatches {
        let probe = &m.observation.probe;
        rows.push([
            probe.source.to_string(),
            format!("{} ({})", probe.destination, probe.address),
            format!("{} {}", probe.service(), probe.family.as_str()),
            match m.expected_allow {
                Some(true) => "connected".to_string(),
                Some(false) => "denied".to_string(),
                None => "(no line matches)".to_string(),
            },
            format!(
                "{} ({})",
                m.observation.verdict.as_str(),
                m.observation.detail
            ),
            m.deciding_line.clone().unwrap_or_default(),
        ]);
    }
    format_table(&rows)
}

pub fn format_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (width, cell)) in widths.iter().zip(row).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The measured matrix as a grid: one row per source, one column per destination pod, one
/// character per probe (`+` connected, `.` timed out, `R` refused, `U` unreachable, `S`
/// stalled, `M` misrouted, `!` error). A row with mismatches is followed by a row with `^`
/// under each mismatched probe.
pub fn grid(matrix: &Matrix, mismatches: &[Mismatch]) -> String {
    // Columns: each destination's probes in a fixed order.
    let mut columns: BTreeMap<&str, Vec<(Family, String)>> = BTreeMap::new();
    for o in &matrix.observations {
        let entry = columns.entry(o.probe.destination.as_str()).or_default();
        let key = (o.probe.family, o.probe.service());
        if !entry.contains(&key) {
            entry.push(key);
        }
    }
    for probes in columns.values_mut() {
        probes.sort();
    }
    let mut sources: Vec<&Source> = matrix
        .observations
        .iter()
        .map(|o| &o.probe.source)
        .collect();
    sources.sort();
    sources.dedup();
    let lookup = |source: &Source, destination: &str, key: &(Family, String)| {
        matrix.observations.iter().find(|o| {
            &o.probe.source == source
                && o.probe.destination == destination
                && o.probe.family == key.0
                && o.probe.service() == key.1
        })
    };
    let is_mismatch = |o: &Observation| mismatches.iter().any(|m| m.observation.probe == o.probe);

    let mut out = String::new();
    let _ = writeln!(out, "columns (one character per probe; + connected, . timed out, R refused, U unreachable, S stalled, M misrouted, ! error; ^ marks a mismatch):");
    for (i, (destination, probes)) in columns.iter().enumerate() {
        let list: Vec<String> = probes
            .iter()
            .map(|(family, service)| format!("{service}/{}", family.as_str()))
            .collect();
        let _ = writeln!(out, "  [{}] {destination}: {}", i + 1, list.join(" "));
    }
    let name_width = sources
        .iter()
        .map(|s| s.to_string().len())
        .max()
        .unwrap_or(0);
    let mut header = format!("{:name_width$}", "");
    for (i, probes) in columns.values().enumerate() {
        let label = format!("[{}]", i + 1);
        let _ = write!(
            header,
            " {label:<width$}",
            width = probes.len().max(label.len())
        );
    }
    out.push_str(header.trim_end());
    out.push('\n');
    for source in sources {
        let mut row = format!("{:name_width$}", source.to_string());
        let mut marks = format!("{:name_width$}", "");
        let mut any_mark = false;
        for (i, (destination, probes)) in columns.iter().enumerate() {
            let width = probes.len().max(format!("[{}]", i + 1).len());
            let mut cell = String::new();
            let mut mark = String::new();
            for key in probes {
                match lookup(source, destination, key) {
                    Some(o) => {
                        cell.push(o.verdict.symbol());
                        if is_mismatch(o) {
                            mark.push('^');
                            any_mark = true;
                        } else {
                            mark.push(' ');
                        }
                    }
                    None => {
                        cell.push(' ');
                        mark.push(' ');
                    }
                }
            }
            let _ = write!(row, " {cell:<width$}");
            let _ = write!(marks, " {mark:<width$}");
        }
        out.push_str(row.trim_end());
        out.push('\n');
        if any_mark {
            out.push_str(marks.trim_end());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_braces() {
        assert!(glob("*", "node/node-1"));
        assert!(glob("prod/*", "prod/a"));
        assert!(!glob("prod/*", "dev/a"));
        assert!(glob("*/a", "prod/a"));
        assert!(glob("tcp/8*", "tcp/80"));
        assert!(!glob("tcp/80", "tcp/8080"));
        assert_eq!(expand_braces("p/{a,b}"), vec!["p/a", "p/b"]);
        assert_eq!(expand_braces("{x,y}/{a,b}").len(), 4);
    }
}
