//! Label sets as the engine uses them: name-sorted `(name, value)` pairs.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

pub const METRIC_NAME: &str = "__name__";

/// A label set, sorted by name, without empty values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(pub Vec<(String, String)>);

impl Labels {
    pub fn new(mut pairs: Vec<(String, String)>) -> Self {
        pairs.retain(|(_, v)| !v.is_empty());
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        Labels(pairs)
    }

    /// Like [`Labels::new`], skipping the sort when the pairs already are
    /// sorted, unique and non-empty (as sources send them).
    pub fn from_sorted_or_sort(pairs: Vec<(String, String)>) -> Self {
        let sorted = pairs.windows(2).all(|w| w[0].0 < w[1].0) && pairs.iter().all(|(_, v)| !v.is_empty());
        if sorted { Labels(pairs) } else { Labels::new(pairs) }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok().map(|i| self.0[i].1.as_str())
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].1 = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, (name.to_string(), value.to_string())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    pub fn without_name(&self) -> Labels {
        Labels(self.0.iter().filter(|(n, _)| n != METRIC_NAME).cloned().collect())
    }

    /// Only the labels listed in `names`.
    pub fn keep(&self, names: &[String]) -> Labels {
        Labels(self.0.iter().filter(|(n, _)| names.iter().any(|k| k == n)).cloned().collect())
    }

    /// All labels except those in `names`.
    pub fn drop(&self, names: &[String]) -> Labels {
        Labels(self.0.iter().filter(|(n, _)| !names.iter().any(|k| k == n)).cloned().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Hash of the labels selected by matching: with `on`, only `names`;
    /// otherwise all but `names` and `__name__`.
    pub fn signature(&self, on: bool, names: &[String]) -> u64 {
        let mut h = DefaultHasher::new();
        for (n, v) in &self.0 {
            let listed = names.iter().any(|k| k == n);
            let take = if on { listed } else { !listed && n != METRIC_NAME };
            if take {
                n.hash(&mut h);
                v.hash(&mut h);
            }
        }
        h.finish()
    }

    /// Text of the labels chosen by the same rule as [`Labels::signature`], for messages.
    pub fn signature_text(&self, on: bool, names: &[String]) -> String {
        let l = if on {
            self.keep(names)
        } else {
            let mut d = self.drop(names);
            d.remove(METRIC_NAME);
            d
        };
        l.to_string()
    }
}

impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.get(METRIC_NAME);
        if let Some(n) = name {
            write!(f, "{n}")?;
        }
        write!(f, "{{")?;
        let mut first = true;
        for (n, v) in &self.0 {
            if n == METRIC_NAME {
                continue;
            }
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{n}={v:?}")?;
        }
        write!(f, "}}")
    }
}

/// True for names Prometheus accepts as label names (UTF-8 names are allowed
/// in Prometheus 3, but not invalid UTF-8 or the empty string).
pub fn is_valid_label_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('\u{FFFD}')
}
