//! Strata's data model, shared by ingest and query.
//!
//! * [`Labels`]: a sorted label set including `__name__`;
//! * [`Matcher`]: `=`, `!=`, `=~`, `!~` with Prometheus' fully-anchored regex semantics;
//! * [`validate_series`]: the remote write rules for label sets;
//! * [`Limits`]: per-tenant limits.

pub mod downsample;
pub mod lru;
pub mod overrides;
pub mod tenant;

use serde::{Deserialize, Serialize};
use strata_proto::prometheus::{Label, LabelMatcher, label_matcher};

/// The default tenant when no `X-Scope-OrgID` header is sent.
pub const DEFAULT_TENANT: &str = "anonymous";
/// The metric name label.
pub const METRIC_NAME: &str = "__name__";

/// A label set sorted by name. Cheap to compare and hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Labels(pub Vec<(String, String)>);

impl Labels {
    /// Builds from any order; sorts by name.
    pub fn from_pairs(mut pairs: Vec<(String, String)>) -> Self {
        pairs.sort();
        Labels(pairs)
    }

    pub fn from_proto(labels: &[Label]) -> Self {
        Labels(labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect())
    }

    pub fn to_proto(&self) -> Vec<Label> {
        self.0.iter().map(|(n, v)| Label { name: n.clone(), value: v.clone() }).collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.get(METRIC_NAME).unwrap_or("");
        write!(f, "{name}{{")?;
        let mut first = true;
        for (n, v) in self.iter().filter(|(n, _)| *n != METRIC_NAME) {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{n}={v:?}")?;
        }
        write!(f, "}}")
    }
}

/// Matcher operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// A label matcher; regexes are anchored at both ends, like Prometheus.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<regex::Regex>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatcherError {
    #[error("invalid regular expression {0:?} in matcher: {1}")]
    Regex(String, String),
    #[error("unknown matcher type {0}")]
    Type(i32),
}

impl Matcher {
    pub fn new(name: impl Into<String>, op: MatchOp, value: impl Into<String>) -> Result<Self, MatcherError> {
        let value = value.into();
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                regex::Regex::new(&format!("^(?s:{value})$"))
                    .map_err(|e| MatcherError::Regex(value.clone(), e.to_string()))?,
            ),
            _ => None,
        };
        Ok(Matcher { name: name.into(), op, value, re })
    }

    pub fn from_proto(m: &LabelMatcher) -> Result<Self, MatcherError> {
        let op = match label_matcher::Type::try_from(m.r#type) {
            Ok(label_matcher::Type::Eq) => MatchOp::Equal,
            Ok(label_matcher::Type::Neq) => MatchOp::NotEqual,
            Ok(label_matcher::Type::Re) => MatchOp::Regex,
            Ok(label_matcher::Type::Nre) => MatchOp::NotRegex,
            Err(_) => return Err(MatcherError::Type(m.r#type)),
        };
        Matcher::new(m.name.clone(), op, m.value.clone())
    }

    pub fn to_proto(&self) -> LabelMatcher {
        let t = match self.op {
            MatchOp::Equal => label_matcher::Type::Eq,
            MatchOp::NotEqual => label_matcher::Type::Neq,
            MatchOp::Regex => label_matcher::Type::Re,
            MatchOp::NotRegex => label_matcher::Type::Nre,
        };
        LabelMatcher { r#type: t as i32, name: self.name.clone(), value: self.value.clone() }
    }

    /// Whether a label value (empty when the label is absent) matches.
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// True if the matcher also matches series that lack the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

/// Per-tenant limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    pub max_series: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub max_samples_per_request: usize,
    /// Samples more than this far (ms) ahead of the receiving node's clock
    /// are refused (0: no limit). One sample from the far future would
    /// otherwise move the tenant's newest time and make every later sample
    /// look too old.
    #[serde(default = "default_creation_grace_period_ms")]
    pub creation_grace_period_ms: i64,
}

fn default_creation_grace_period_ms() -> i64 {
    10 * 60_000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series: 1_000_000,
            max_labels_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 4096,
            max_samples_per_request: 1_000_000,
            creation_grace_period_ms: default_creation_grace_period_ms(),
        }
    }
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c == '_' || c == ':' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c == ':' || c.is_ascii_alphanumeric())
}

/// A series' labels as PromQL text for error messages (`name{a="b"}`), cut
/// after 200 characters.
pub fn series_text(labels: &[Label]) -> String {
    let s = Labels::from_proto(labels).to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Checks one series' labels against the remote write rules and limits.
/// The message names the series and the problem.
pub fn validate_series(labels: &[Label], limits: &Limits) -> Result<(), String> {
    let show = || series_text(labels);
    if labels.is_empty() {
        return Err("series has no labels".into());
    }
    let Some(name) = labels.iter().find(|l| l.name == METRIC_NAME) else {
        return Err(format!("series {} has no __name__ label", show()));
    };
    if !valid_metric_name(&name.value) {
        return Err(format!("invalid metric name {:?}", name.value));
    }
    if labels.len() > limits.max_labels_per_series {
        return Err(format!(
            "series {} has {} labels, over the limit of {} (max_labels_per_series)",
            show(),
            labels.len(),
            limits.max_labels_per_series
        ));
    }
    for (i, l) in labels.iter().enumerate() {
        if l.name.is_empty() {
            return Err(format!("series {} has an empty label name", show()));
        }
        if !valid_label_name(&l.name) {
            return Err(format!("series {} has invalid label name {:?}", show(), l.name));
        }
        if l.name.len() > limits.max_label_name_length {
            return Err(format!(
                "series {} has label name {:?}… longer than {} (max_label_name_length)",
                show(),
                &l.name[..32.min(l.name.len())],
                limits.max_label_name_length
            ));
        }
        if l.value.len() > limits.max_label_value_length {
            return Err(format!(
                "series {} has a value of label {:?} longer than {} (max_label_value_length)",
                show(),
                l.name,
                limits.max_label_value_length
            ));
        }
        if l.value.is_empty() {
            return Err(format!("series {} has label {:?} with an empty value", show(), l.name));
        }
        if i > 0 {
            let prev = &labels[i - 1].name;
            if prev == &l.name {
                return Err(format!("series {} has duplicate label name {:?}", show(), l.name));
            }
            if prev > &l.name {
                return Err(format!(
                    "series {} has labels out of order ({:?} after {:?}); labels must be sorted by name",
                    show(),
                    l.name,
                    prev
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect()
    }

    #[test]
    fn regex_matchers_are_anchored() {
        let m = Matcher::new("job", MatchOp::Regex, "api|web").unwrap();
        assert!(m.matches("api") && m.matches("web") && !m.matches("apix") && !m.matches("xapi"));
        let n = Matcher::new("job", MatchOp::NotRegex, "a.*").unwrap();
        assert!(!n.matches("abc") && n.matches("b"));
        assert!(Matcher::new("x", MatchOp::Regex, "(").is_err());
        assert!(Matcher::new("x", MatchOp::Regex, ".*").unwrap().matches_empty());
        assert!(!Matcher::new("x", MatchOp::Regex, ".+").unwrap().matches_empty());
    }

    #[test]
    fn series_validation_names_the_problem() {
        let lim = Limits::default();
        assert!(validate_series(&l(&[("__name__", "up"), ("job", "a")]), &lim).is_ok());
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "no labels"),
            (&[("job", "a")], "no __name__"),
            (&[("__name__", "1up")], "invalid metric name"),
            (&[("__name__", "up"), ("job", "a"), ("job", "b")], "duplicate label name"),
            (&[("__name__", "up"), ("z", "a"), ("b", "b")], "out of order"),
            (&[("__name__", "up"), ("", "a")], "empty label name"),
            (&[("__name__", "up"), ("a-b", "a")], "invalid label name"),
            (&[("__name__", "up"), ("a", "")], "empty value"),
        ];
        for (labels, want) in cases {
            let err = validate_series(&l(labels), &lim).unwrap_err();
            assert!(err.contains(want), "{err} should contain {want}");
        }
        let small = Limits { max_labels_per_series: 2, ..Limits::default() };
        assert!(
            validate_series(&l(&[("__name__", "up"), ("a", "1"), ("b", "2")]), &small)
                .unwrap_err()
                .contains("max_labels_per_series")
        );
    }

    #[test]
    fn labels_display_like_prometheus() {
        let ls = Labels::from_pairs(vec![("job".into(), "a".into()), ("__name__".into(), "up".into())]);
        assert_eq!(ls.to_string(), "up{job=\"a\"}");
    }
}
