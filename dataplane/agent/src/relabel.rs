//! Prometheus' relabelling (`relabel_configs`, `metric_relabel_configs`):
//! every action, with Prometheus' defaults and semantics (anchored RE2-style
//! regular expressions, `$1`/`${name}` expansion, MD5-based `hashmod`).

use md5::{Digest, Md5};
use regex::Regex;
use serde::Deserialize;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

/// One rule as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub separator: String,
    pub regex: String,
    pub modulus: u64,
    pub target_label: String,
    pub replacement: String,
    pub action: Action,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        RelabelConfig {
            source_labels: Vec::new(),
            separator: ";".into(),
            regex: "(.*)".into(),
            modulus: 0,
            target_label: String::new(),
            replacement: "$1".into(),
            action: Action::Replace,
        }
    }
}

/// A checked rule, its regular expression compiled (anchored both ends).
#[derive(Debug, Clone)]
pub struct Rule {
    cfg: RelabelConfig,
    regex: Regex,
}

impl Rule {
    /// Compiles and checks a rule as Prometheus does when it loads one.
    pub fn new(cfg: RelabelConfig) -> Result<Rule, String> {
        let regex =
            Regex::new(&format!("^(?s:{})$", cfg.regex)).map_err(|e| format!("invalid regex {:?}: {e}", cfg.regex))?;
        let needs_target = matches!(
            cfg.action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        let action = format!("{:?}", cfg.action).to_lowercase();
        if needs_target && cfg.target_label.is_empty() {
            return Err(format!("relabel configuration for {action} action requires 'target_label' value"));
        }
        if cfg.action == Action::HashMod && cfg.modulus == 0 {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        if matches!(cfg.action, Action::LabelDrop | Action::LabelKeep)
            && (!cfg.source_labels.is_empty()
                || !cfg.target_label.is_empty()
                || cfg.modulus != 0
                || cfg.separator != ";"
                || cfg.replacement != "$1")
        {
            return Err(format!("{action} action requires only 'regex', and no other fields"));
        }
        if matches!(cfg.action, Action::KeepEqual | Action::DropEqual)
            && (cfg.regex != "(.*)" || cfg.modulus != 0 || cfg.separator != ";" || cfg.replacement != "$1")
        {
            return Err(format!(
                "{action} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(cfg.action, Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual)
            && !crate::relabel::valid_label_name(&cfg.target_label)
        {
            return Err(format!("{:?} is invalid 'target_label' for {action} action", cfg.target_label));
        }
        Ok(Rule { cfg, regex })
    }
}

/// A valid Prometheus label name.
pub fn valid_label_name(n: &str) -> bool {
    strata_textparse::valid_label_name(n)
}

fn get<'a>(labels: &'a [(String, String)], name: &str) -> &'a str {
    labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

fn set(labels: &mut Vec<(String, String)>, name: &str, value: String) {
    match labels.iter_mut().find(|(n, _)| n == name) {
        Some(l) if value.is_empty() => {
            let name = l.0.clone();
            labels.retain(|(n, _)| *n != name);
        }
        Some(l) => l.1 = value,
        None if value.is_empty() => {}
        None => labels.push((name.to_string(), value)),
    }
}

/// Applies `rules` in order; `false` when a rule drops the series (or
/// target). Labels with empty values are removed, as in Prometheus.
pub fn process(labels: &mut Vec<(String, String)>, rules: &[Rule]) -> bool {
    for r in rules {
        let c = &r.cfg;
        let val = c.source_labels.iter().map(|s| get(labels, s)).collect::<Vec<_>>().join(&c.separator);
        match c.action {
            Action::Drop => {
                if r.regex.is_match(&val) {
                    return false;
                }
            }
            Action::Keep => {
                if !r.regex.is_match(&val) {
                    return false;
                }
            }
            Action::DropEqual => {
                if get(labels, &c.target_label) == val {
                    return false;
                }
            }
            Action::KeepEqual => {
                if get(labels, &c.target_label) != val {
                    return false;
                }
            }
            Action::Replace => {
                let Some(caps) = r.regex.captures(&val) else { continue };
                let mut target = String::new();
                caps.expand(&c.target_label, &mut target);
                if !valid_label_name(&target) {
                    continue;
                }
                let mut res = String::new();
                caps.expand(&c.replacement, &mut res);
                set(labels, &target, res);
            }
            Action::Lowercase => set(labels, &c.target_label, val.to_lowercase()),
            Action::Uppercase => set(labels, &c.target_label, val.to_uppercase()),
            Action::HashMod => {
                let hash = Md5::digest(val.as_bytes());
                let mut tail = [0u8; 8];
                tail.copy_from_slice(&hash[8..16]);
                let m = u64::from_be_bytes(tail) % c.modulus;
                set(labels, &c.target_label, m.to_string());
            }
            Action::LabelMap => {
                let mut add = Vec::new();
                for (n, v) in labels.iter() {
                    if r.regex.is_match(n) {
                        let res = r.regex.replace_all(n, c.replacement.as_str()).into_owned();
                        add.push((res, v.clone()));
                    }
                }
                for (n, v) in add {
                    set(labels, &n, v);
                }
            }
            Action::LabelDrop => labels.retain(|(n, _)| !r.regex.is_match(n)),
            Action::LabelKeep => labels.retain(|(n, _)| r.regex.is_match(n)),
        }
    }
    labels.retain(|(_, v)| !v.is_empty());
    labels.sort();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Rule {
        Rule::new(serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    fn ls(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_action_as_prometheus() {
        let base = ls(&[("__name__", "http_requests_total"), ("a", "foo"), ("b", "bar"), ("Path", "/API")]);
        let run = |yaml: &str| {
            let mut l = base.clone();
            process(&mut l, &[rule(yaml)]).then_some(l)
        };
        // replace: captures, named target, no match = unchanged, empty = delete.
        let r =
            run("{source_labels: [a, b], regex: '(f.*);(.*)', target_label: 'x_${1}', replacement: '$2-$1'}").unwrap();
        assert!(r.contains(&("x_foo".into(), "bar-foo".into())), "{r:?}");
        assert_eq!(run("{source_labels: [a], regex: 'nomatch', target_label: x}").unwrap().len(), 4);
        let r = run("{source_labels: [zz], target_label: a, replacement: ''}").unwrap();
        assert!(!r.iter().any(|(n, _)| n == "a"), "{r:?}");
        // The regex is anchored.
        assert!(run("{source_labels: [a], regex: 'o', action: drop}").is_some());
        assert!(run("{source_labels: [a], regex: 'fo+', action: drop}").is_none());
        assert!(run("{source_labels: [a], regex: 'bar', action: keep}").is_none());
        assert!(run("{source_labels: [a], regex: 'foo', action: keep}").is_some());
        assert!(run("{source_labels: [a], target_label: b, action: keepequal}").is_none());
        assert!(run("{source_labels: [a], target_label: b, action: dropequal}").is_some());
        assert!(run("{source_labels: [b], target_label: b, action: dropequal}").is_none());
        let r = run("{source_labels: [Path], target_label: p, action: lowercase}").unwrap();
        assert!(r.contains(&("p".into(), "/api".into())));
        let r = run("{source_labels: [a], target_label: u, action: uppercase}").unwrap();
        assert!(r.contains(&("u".into(), "FOO".into())));
        // hashmod: md5, the last 8 bytes big-endian, mod the modulus.
        let r = run("{source_labels: [a], target_label: shard, modulus: 1000, action: hashmod}").unwrap();
        let digest = Md5::digest(b"foo");
        let want = u64::from_be_bytes(digest[8..16].try_into().unwrap()) % 1000;
        assert!(r.contains(&("shard".into(), want.to_string())), "{r:?}");
        let r = run("{regex: '(a|b)', replacement: 'copy_$1', action: labelmap}").unwrap();
        assert!(r.contains(&("copy_a".into(), "foo".into())) && r.contains(&("a".into(), "foo".into())), "{r:?}");
        let r = run("{regex: '[ab]', action: labeldrop}").unwrap();
        assert_eq!(r, ls(&[("Path", "/API"), ("__name__", "http_requests_total")]));
        let r = run("{regex: '__name__|a', action: labelkeep}").unwrap();
        assert_eq!(r, ls(&[("__name__", "http_requests_total"), ("a", "foo")]));
    }

    #[test]
    fn bad_rules_are_refused_like_prometheus() {
        for (yaml, want) in [
            ("{regex: '('}", "invalid regex"),
            ("{action: replace}", "requires 'target_label'"),
            ("{target_label: x, action: hashmod}", "non-zero modulus"),
            ("{regex: a, target_label: x, action: labeldrop}", "requires only 'regex'"),
            ("{source_labels: [a], target_label: b, regex: x, action: keepequal}", "requires only 'source_labels'"),
            ("{source_labels: [a], target_label: '1x', action: lowercase}", "invalid 'target_label'"),
        ] {
            let cfg: RelabelConfig = serde_yaml::from_str(yaml).unwrap();
            let e = Rule::new(cfg).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        assert!(serde_yaml::from_str::<RelabelConfig>("{action: rename}").is_err());
    }
}
