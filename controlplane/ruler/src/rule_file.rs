//! Prometheus rule files (`groups:` of recording and alerting rules), read
//! and checked the way `promtool check rules` checks them.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// One rule file as written.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
}

/// One `groups:` entry.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_offset: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One rule as written.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    #[serde(default)]
    pub expr: String,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub enum Rule {
    Recording { name: String, expr: String, labels: BTreeMap<String, String> },
    Alerting(AlertingSpec),
}

#[derive(Debug, Clone)]
pub struct AlertingSpec {
    pub name: String,
    pub expr: String,
    pub hold: Duration,
    pub keep_firing_for: Duration,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    pub fn name(&self) -> &str {
        match self {
            Rule::Recording { name, .. } => name,
            Rule::Alerting(a) => &a.name,
        }
    }

    pub fn expr(&self) -> &str {
        match self {
            Rule::Recording { expr, .. } => expr,
            Rule::Alerting(a) => &a.expr,
        }
    }
}

/// A checked group.
#[derive(Debug, Clone)]
pub struct Group {
    pub file: String,
    pub name: String,
    pub interval: Duration,
    pub query_offset: Duration,
    pub limit: u64,
    pub rules: Vec<Rule>,
}

/// Parses a Prometheus duration (`1m`, `1h30m`, `500ms`, `1d`, `1w`, `1y`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration string".into());
    }
    let units: [(&str, u128); 8] = [
        ("ms", 1),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
        ("w", 604_800_000),
        ("y", 31_536_000_000),
        ("", 0),
    ];
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("not a valid duration string: {s:?}"));
        }
        let n: u128 = rest[..digits].parse().map_err(|_| format!("not a valid duration string: {s:?}"))?;
        rest = &rest[digits..];
        let Some((unit, ms)) = units.iter().find(|(u, _)| !u.is_empty() && rest.starts_with(u)) else {
            return Err(format!("not a valid duration string: {s:?}"));
        };
        // "m" must not swallow the "m" of "ms".
        let (unit, ms) = if *unit == "m" && rest.starts_with("ms") { ("ms", 1) } else { (*unit, *ms) };
        rest = &rest[unit.len()..];
        total += n * ms;
    }
    u64::try_from(total).map(Duration::from_millis).map_err(|_| format!("duration out of range: {s:?}"))
}

/// Prometheus' label name rule.
pub fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Reads and checks one rule file; errors are promtool's, one per problem.
pub fn load(path: &Path, default_interval: Duration) -> Result<Vec<Group>, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    parse(&path.display().to_string(), &text, default_interval)
}

/// Checks the text of one rule file named `file`.
pub fn parse(file: &str, text: &str, default_interval: Duration) -> Result<Vec<Group>, Vec<String>> {
    let spec: RuleFile = if text.trim().is_empty() {
        RuleFile { groups: Vec::new() }
    } else {
        serde_yaml::from_str(text).map_err(|e| vec![format!("{file}: {e}")])?
    };
    check(file, &spec, default_interval).map_err(|errs| errs.into_iter().map(|e| format!("{file}: {e}")).collect())
}

/// Validates a parsed file; the messages follow Prometheus' `rulefmt`.
pub fn check(file: &str, spec: &RuleFile, default_interval: Duration) -> Result<Vec<Group>, Vec<String>> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    let mut groups = Vec::new();
    for g in &spec.groups {
        if g.name.is_empty() {
            errs.push("Groupname must not be empty".to_string());
        }
        if !seen.insert(g.name.clone()) {
            errs.push(format!("groupname: \"{}\" is repeated in the same file", g.name));
        }
        let interval = match g.interval.as_deref() {
            None => default_interval,
            Some(s) => match parse_duration(s) {
                Ok(d) if d.is_zero() => {
                    errs.push(format!("group {:?}: interval must be positive", g.name));
                    default_interval
                }
                Ok(d) => d,
                Err(e) => {
                    errs.push(format!("group {:?}: {e}", g.name));
                    default_interval
                }
            },
        };
        let query_offset = match g.query_offset.as_deref().map(parse_duration).transpose() {
            Ok(d) => d.unwrap_or(Duration::ZERO),
            Err(e) => {
                errs.push(format!("group {:?}: {e}", g.name));
                Duration::ZERO
            }
        };
        for k in g.labels.keys() {
            if !valid_label_name(k) {
                errs.push(format!("group {:?}: invalid label name: {k}", g.name));
            }
        }
        let mut rules = Vec::new();
        for (i, r) in g.rules.iter().enumerate() {
            let name = r.record.clone().or_else(|| r.alert.clone()).unwrap_or_default();
            let mut rule_err = |m: String| errs.push(format!("group {:?}, rule {}, {:?}: {m}", g.name, i + 1, name));
            match (&r.record, &r.alert) {
                (Some(_), Some(_)) => rule_err("only one of 'record' and 'alert' must be set".into()),
                (None, None) => rule_err("one of 'record' or 'alert' must be set".into()),
                _ => {}
            }
            if r.expr.trim().is_empty() {
                rule_err("field 'expr' must be set in rule".into());
            } else if let Err(e) = promql_parser::parser::parse(&r.expr) {
                rule_err(format!("could not parse expression: {e}"));
            }
            if let Some(rec) = &r.record {
                if r.annotations.is_empty() {
                } else {
                    rule_err("invalid field 'annotations' in recording rule".into());
                }
                if r.for_.is_some() {
                    rule_err("invalid field 'for' in recording rule".into());
                }
                if r.keep_firing_for.is_some() {
                    rule_err("invalid field 'keep_firing_for' in recording rule".into());
                }
                if !valid_metric_name(rec) {
                    rule_err(format!("invalid recording rule name: {rec}"));
                }
            }
            for k in r.labels.keys() {
                if k == "__name__" {
                    rule_err("invalid label name: __name__".into());
                } else if !valid_label_name(k) {
                    rule_err(format!("invalid label name: {k}"));
                }
            }
            for k in r.annotations.keys() {
                if !valid_label_name(k) {
                    rule_err(format!("invalid annotation name: {k}"));
                }
            }
            let mut dur = |s: &Option<String>| match s.as_deref().map(parse_duration).transpose() {
                Ok(d) => d.unwrap_or(Duration::ZERO),
                Err(e) => {
                    rule_err(e);
                    Duration::ZERO
                }
            };
            let hold = dur(&r.for_);
            let keep = dur(&r.keep_firing_for);
            let mut labels = g.labels.clone();
            labels.extend(r.labels.clone());
            rules.push(match (&r.record, &r.alert) {
                (Some(n), _) => Rule::Recording { name: n.clone(), expr: r.expr.clone(), labels },
                (None, a) => Rule::Alerting(AlertingSpec {
                    name: a.clone().unwrap_or_default(),
                    expr: r.expr.clone(),
                    hold,
                    keep_firing_for: keep,
                    labels,
                    annotations: r.annotations.clone(),
                }),
            });
        }
        groups.push(Group {
            file: file.to_string(),
            name: g.name.clone(),
            interval,
            query_offset,
            limit: g.limit,
            rules,
        });
    }
    if errs.is_empty() { Ok(groups) } else { Err(errs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn durations_as_prometheus_reads_them() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("1.5m").is_err());
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn a_good_file_loads_with_group_labels_and_defaults() {
        let text = "groups:\n- name: g\n  interval: 30s\n  labels: {team: a}\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n  - alert: Down\n    expr: up == 0\n    for: 5m\n    keep_firing_for: 1m\n    labels: {severity: page}\n    annotations: {summary: '{{ $labels.job }} down'}\n";
        let g = parse("f.yml", text, MIN).unwrap();
        assert_eq!(g[0].interval, Duration::from_secs(30));
        let Rule::Alerting(a) = &g[0].rules[1] else { panic!() };
        assert_eq!(a.hold, Duration::from_secs(300));
        assert_eq!(a.keep_firing_for, MIN);
        assert_eq!(a.labels.get("team").map(String::as_str), Some("a"));
    }

    #[test]
    fn bad_files_are_refused_with_promtools_reasons() {
        let cases = [
            (
                "groups:\n- name: g\n  rules:\n  - record: a\n    alert: b\n    expr: up\n",
                "only one of 'record' and 'alert' must be set",
            ),
            ("groups:\n- name: g\n  rules:\n  - expr: up\n", "one of 'record' or 'alert' must be set"),
            ("groups:\n- name: g\n  rules:\n  - record: a\n", "field 'expr' must be set in rule"),
            ("groups:\n- name: g\n  rules:\n  - record: a\n    expr: sum(\n", "could not parse expression"),
            ("groups:\n- name: g\n  rules:\n  - record: a b\n    expr: up\n", "invalid recording rule name: a b"),
            (
                "groups:\n- name: g\n  rules:\n  - record: a\n    expr: up\n    for: 1m\n",
                "invalid field 'for' in recording rule",
            ),
            (
                "groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    labels: {0x: y}\n",
                "invalid label name: 0x",
            ),
            (
                "groups:\n- name: g\n  rules: []\n- name: g\n  rules: []\n",
                "groupname: \"g\" is repeated in the same file",
            ),
            ("groups:\n- name: g\n  rulez: []\n", "unknown field `rulez`"),
        ];
        for (text, want) in cases {
            let errs = parse("f.yml", text, MIN).unwrap_err();
            assert!(errs.iter().any(|e| e.contains(want) && e.starts_with("f.yml: ")), "{text}: {errs:?}");
        }
    }
}
