//! A strict parser of the Prometheus text exposition format (version 0.0.4), enough to prove
//! that `/metrics` parses and to read values out of it.
//!
//! Accepted lines: empty lines, `# HELP name text`, `# TYPE name counter|gauge|histogram|summary|untyped`,
//! other `#` comments, and samples `name{label="value",...} value [timestamp]`. Rejected: bad
//! names, unterminated or badly escaped label values, duplicate labels, unparsable values, a
//! second HELP or TYPE for one family, a TYPE after the family's first sample, a sample whose
//! family has no TYPE (every Palisade metric declares one), and duplicate series.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Family name → type.
    pub types: BTreeMap<String, String>,
    pub help: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the series `name` whose labels include `labels`; `None` if there is none,
    /// an error if several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        match matching.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.value)),
            many => bail!("{} series of {name} match {labels:?}", many.len()),
        }
    }

    /// Like [`Exposition::value`] but the series must exist.
    pub fn require(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        self.value(name, labels)?
            .ok_or_else(|| anyhow!("/metrics has no series {name} with labels {labels:?}"))
    }

    /// The sum over every series of `name` (0 when there is none).
    pub fn sum(&self, name: &str) -> f64 {
        // An empty float sum is -0.0; adding 0.0 makes it print as 0.
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum::<f64>()
            + 0.0
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => {
            // Rust accepts "inf"/"infinity"/"nan" spelled in other ways; the format does not.
            if text
                .chars()
                .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
            {
                return None;
            }
            text.parse().ok()
        }
    }
}

/// The family a sample belongs to: histogram and summary series carry suffixes.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(kind) = types.get(base) {
                let fits = match suffix {
                    "_bucket" => kind == "histogram",
                    _ => kind == "histogram" || kind == "summary",
                };
                if fits {
                    return Some(base);
                }
            }
        }
    }
    None
}

/// Parses `{a="b",c="d"}` starting right after the name; returns the labels and the rest.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = text.strip_prefix('{') else {
        return Ok((labels, text));
    };
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let equals = rest
            .find('=')
            .ok_or_else(|| anyhow!("label without `=` in {text:?}"))?;
        let name = rest[..equals].trim();
        if !is_label_name(name) {
            bail!("bad label name {name:?}");
        }
        rest = rest[equals + 1..].trim_start();
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| anyhow!("label {name} has an unquoted value"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => bail!("label {name} has an unterminated value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => bail!("label {name}: bad escape {other:?}"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            bail!("label {name} appears twice");
        }
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            bail!("expected `,` or `}}` after label {name}");
        }
    }
}

/// Parses a whole exposition; the error names the line.
pub fn parse(text: &str) -> Result<Exposition> {
    let mut exposition = Exposition::default();
    let mut sampled: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<(String, Vec<(String, String)>)> = BTreeSet::new();
    for (number, line) in text.lines().enumerate() {
        let at = |e: anyhow::Error| anyhow!("line {}: {e:#}: {line:?}", number + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let name = words.next().unwrap_or("");
            let rest = words.next().unwrap_or("");
            if !is_metric_name(name) {
                return Err(at(anyhow!("bad metric name {name:?}")));
            }
            if keyword == "HELP" {
                if exposition
                    .help
                    .insert(name.to_string(), rest.to_string())
                    .is_some()
                {
                    return Err(at(anyhow!("second HELP for {name}")));
                }
            } else {
                if !matches!(
                    rest.trim(),
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ) {
                    return Err(at(anyhow!("unknown type {rest:?}")));
                }
                if sampled.contains(name) {
                    return Err(at(anyhow!("TYPE of {name} after its samples")));
                }
                if exposition
                    .types
                    .insert(name.to_string(), rest.trim().to_string())
                    .is_some()
                {
                    return Err(at(anyhow!("second TYPE for {name}")));
                }
            }
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| at(anyhow!("a sample needs a value")))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(anyhow!("bad metric name {name:?}")));
        }
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(at)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (value, timestamp) = match fields.as_slice() {
            [value] => (*value, None),
            [value, timestamp] => (*value, Some(*timestamp)),
            _ => return Err(at(anyhow!("expected `value [timestamp]` after the name"))),
        };
        let value = parse_value(value).ok_or_else(|| at(anyhow!("bad value {value:?}")))?;
        if let Some(timestamp) = timestamp {
            timestamp
                .parse::<i64>()
                .map_err(|e| at(anyhow!("bad timestamp {timestamp:?}: {e}")))?;
        }
        let family = family_of(name, &exposition.types)
            .ok_or_else(|| at(anyhow!("sample of {name} without a TYPE line")))?;
        if family_of(name, &exposition.types) == Some(name)
            && exposition.types.get(name).map(String::as_str) == Some("histogram")
        {
            return Err(at(anyhow!(
                "histogram {name} has a sample without _bucket/_sum/_count"
            )));
        }
        if name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(at(anyhow!("bucket without an `le` label")));
        }
        let key = (
            name.to_string(),
            labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        );
        if !series.insert(key) {
            return Err(at(anyhow!("duplicate series")));
        }
        sampled.insert(family.to_string());
        exposition.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(exposition)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"# HELP palisade_syncs_total Successful syncs.
# TYPE palisade_syncs_total counter
palisade_syncs_total 3
# HELP palisade_rules Rules.
# TYPE palisade_rules gauge
palisade_rules{family="ipv4"} 12
palisade_rules{family="ipv6"} 0
# TYPE palisade_sync_duration_seconds histogram
palisade_sync_duration_seconds_bucket{le="0.1"} 2
palisade_sync_duration_seconds_bucket{le="+Inf"} 3
palisade_sync_duration_seconds_sum 0.25
palisade_sync_duration_seconds_count 3
# a free comment
weird_escapes{a="x\"y\\z\n",b=""} -1.5e3 1700000000000
"#;

    #[test]
    fn parses_the_text_format() {
        let text = GOOD.replace(
            "# a free comment",
            "# a free comment\n# TYPE weird_escapes gauge",
        );
        let exposition = parse(&text).unwrap();
        assert_eq!(
            exposition.require("palisade_syncs_total", &[]).unwrap(),
            3.0
        );
        assert_eq!(
            exposition
                .require("palisade_rules", &[("family", "ipv4")])
                .unwrap(),
            12.0
        );
        assert!(
            exposition.value("palisade_rules", &[]).is_err(),
            "ambiguous"
        );
        assert_eq!(exposition.sum("palisade_rules"), 12.0);
        assert_eq!(
            exposition
                .require("palisade_sync_duration_seconds_bucket", &[("le", "+Inf")])
                .unwrap(),
            3.0
        );
        let weird = exposition.require("weird_escapes", &[]).unwrap();
        assert_eq!(weird, -1500.0);
        assert_eq!(
            exposition.samples.last().unwrap().labels["a"],
            "x\"y\\z\n".to_string()
        );
        assert_eq!(
            exposition.types["palisade_sync_duration_seconds"],
            "histogram"
        );
    }

    #[test]
    fn rejects_what_is_not_the_text_format() {
        let typed = "# TYPE m gauge\n";
        for (bad, why) in [
            ("m 1\n", "no TYPE"),
            ("# TYPE m gauge\n# TYPE m gauge\nm 1\n", "second TYPE"),
            (
                "# TYPE m gauge\nm 1\n# TYPE m gauge\n",
                "TYPE after samples",
            ),
            ("# TYPE m gauges\n", "unknown type"),
            ("# TYPE 1m gauge\n", "bad name"),
            (&format!("{typed}m{{a=\"b\"\n"), "unterminated labels"),
            (&format!("{typed}m{{a=\"b}} 1\n"), "unterminated value"),
            (&format!("{typed}m{{a=b}} 1\n"), "unquoted"),
            (&format!("{typed}m{{a=\"\\t\"}} 1\n"), "bad escape"),
            (
                &format!("{typed}m{{a=\"1\",a=\"2\"}} 1\n"),
                "duplicate label",
            ),
            (&format!("{typed}m{{1a=\"1\"}} 1\n"), "bad label name"),
            (&format!("{typed}m one\n"), "bad value"),
            (&format!("{typed}m infinity\n"), "Rust-only spelling"),
            (&format!("{typed}m 1 2 3\n"), "extra fields"),
            (&format!("{typed}m\n"), "no value"),
            (&format!("{typed}m 1\nm 2\n"), "duplicate series"),
            (&format!("{typed}m 1 soon\n"), "bad timestamp"),
            ("# TYPE h histogram\nh 1\n", "bare histogram sample"),
            ("# TYPE h histogram\nh_bucket 1\n", "bucket without le"),
        ] {
            assert!(parse(bad).is_err(), "accepted ({why}): {bad:?}");
        }
    }
}
