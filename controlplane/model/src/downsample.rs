//! Downsampled reads: which aggregate of a series a selector reads, and at
//! which resolution.
//!
//! The querier rewrites a query over a long range so that the selectors
//! of functions that can be computed from aggregates (`sum_over_time`,
//! `rate`, …) read one *view* of the series: its per-window `count`, `sum`,
//! `min`, `max`, or `counter` (a counter's samples, compressed so that
//! PromQL's reset handling gives the same increase as over the raw
//! samples). The view and the coarsest resolution the selector may read
//! travel as two reserved matchers, [`VIEW_LABEL`] and [`RESOLUTION_LABEL`],
//! so they pass through selections, fan-out, push-down and the results
//! cache's key unchanged. Every source strips them ([`split_view`]) and
//! answers in the view's terms: store gateways from downsampled blocks
//! where they have them, every source from raw samples otherwise
//! ([`View::apply_to_raw`]) — so raw and downsampled data mix within one
//! series and the answer is the same.

use crate::{MatchOp, Matcher};

/// The reserved matcher naming the view (`count`, `sum`, `min`, `max`, `counter`).
pub const VIEW_LABEL: &str = "__strata_view__";
/// The reserved matcher giving the coarsest resolution (ms) the selector may read.
pub const RESOLUTION_LABEL: &str = "__strata_resolution__";

/// The resolutions downsampled blocks are written at (ms), finest first.
pub const RESOLUTIONS: [i64; 2] = [5 * 60_000, 60 * 60_000];

/// What a downsampled selector reads of each series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// Samples per window (a raw sample counts 1).
    Count,
    /// Sum of the window's samples.
    Sum,
    /// Smallest sample of the window (NaN only when all are NaN).
    Min,
    /// Largest sample of the window (NaN only when all are NaN).
    Max,
    /// The window's first and last samples, plus, when the counter reset
    /// inside the window, the points that make the same increase visible.
    Counter,
}

impl View {
    pub fn name(self) -> &'static str {
        match self {
            View::Count => "count",
            View::Sum => "sum",
            View::Min => "min",
            View::Max => "max",
            View::Counter => "counter",
        }
    }

    pub fn parse(s: &str) -> Option<View> {
        Some(match s {
            "count" => View::Count,
            "sum" => View::Sum,
            "min" => View::Min,
            "max" => View::Max,
            "counter" => View::Counter,
            _ => return None,
        })
    }

    /// Raw samples in this view's terms, in place: every view of a raw
    /// sample is the sample itself, except `count`, where it is 1.
    /// Staleness markers stay (the engine drops them from ranges).
    pub fn apply_to_raw(self, samples: &mut [(i64, f64)]) {
        if self == View::Count {
            for s in samples.iter_mut().filter(|s| s.1.to_bits() != STALE_NAN_BITS) {
                s.1 = 1.0;
            }
        }
    }
}

/// Prometheus' staleness marker.
const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A selector's view and the coarsest resolution (ms) it may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewRequest {
    pub view: View,
    pub max_resolution_ms: i64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ViewError {
    #[error("matcher {0} must be an equality matcher")]
    Operator(&'static str),
    #[error("unknown {VIEW_LABEL} {0:?} (count, sum, min, max, counter)")]
    View(String),
    #[error("{RESOLUTION_LABEL} {0:?} is not a number of milliseconds")]
    Resolution(String),
    #[error("{RESOLUTION_LABEL} without {VIEW_LABEL}")]
    ResolutionWithoutView,
}

/// Separates the reserved matchers from the series' own.
pub fn split_view(matchers: Vec<Matcher>) -> Result<(Vec<Matcher>, Option<ViewRequest>), ViewError> {
    split_reserved(matchers, |m| &m.name, |m| (m.op == MatchOp::Equal).then_some(m.value.as_str()))
}

/// Whether `name` is one of the reserved matcher names.
pub fn is_reserved(name: &str) -> bool {
    name == VIEW_LABEL || name == RESOLUTION_LABEL
}

/// [`split_view`] for any matcher type: `name` gives a matcher's label
/// name, `equal_value` its value if it is an equality matcher.
pub fn split_reserved<M>(
    matchers: Vec<M>,
    name: impl Fn(&M) -> &str,
    equal_value: impl Fn(&M) -> Option<&str>,
) -> Result<(Vec<M>, Option<ViewRequest>), ViewError> {
    let (mut view, mut resolution) = (None, None);
    let mut rest = Vec::with_capacity(matchers.len());
    for m in matchers {
        if name(&m) == VIEW_LABEL {
            let v = equal_value(&m).ok_or(ViewError::Operator(VIEW_LABEL))?;
            view = Some(View::parse(v).ok_or_else(|| ViewError::View(v.to_string()))?);
        } else if name(&m) == RESOLUTION_LABEL {
            let v = equal_value(&m).ok_or(ViewError::Operator(RESOLUTION_LABEL))?;
            let ms: i64 = v.parse().map_err(|_| ViewError::Resolution(v.to_string()))?;
            resolution = Some(ms.max(0));
        } else {
            rest.push(m);
        }
    }
    match (view, resolution) {
        (Some(view), r) => Ok((rest, Some(ViewRequest { view, max_resolution_ms: r.unwrap_or(0) }))),
        (None, Some(_)) => Err(ViewError::ResolutionWithoutView),
        (None, None) => Ok((rest, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(n: &str, v: &str) -> Matcher {
        Matcher::new(n, MatchOp::Equal, v).unwrap()
    }

    #[test]
    fn reserved_matchers_are_split_off() {
        let (rest, v) =
            split_view(vec![eq("__name__", "x"), eq(VIEW_LABEL, "counter"), eq(RESOLUTION_LABEL, "300000")]).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(v, Some(ViewRequest { view: View::Counter, max_resolution_ms: 300_000 }));
        let (rest, v) = split_view(vec![eq("__name__", "x")]).unwrap();
        assert_eq!((rest.len(), v), (1, None));
        assert!(split_view(vec![eq(VIEW_LABEL, "avg")]).is_err());
        assert!(split_view(vec![eq(VIEW_LABEL, "sum"), eq(RESOLUTION_LABEL, "5m")]).is_err());
        assert!(split_view(vec![eq(RESOLUTION_LABEL, "1")]).is_err());
        let re = Matcher::new(VIEW_LABEL, MatchOp::Regex, "sum").unwrap();
        assert!(split_view(vec![re]).is_err());
    }

    #[test]
    fn raw_samples_in_the_count_view_count_one_each() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let mut s = vec![(1, 5.0), (2, f64::NAN), (3, stale)];
        View::Count.apply_to_raw(&mut s);
        assert_eq!((s[0].1, s[1].1), (1.0, 1.0));
        assert_eq!(s[2].1.to_bits(), STALE_NAN_BITS);
        let mut s = vec![(1, 5.0)];
        View::Counter.apply_to_raw(&mut s);
        assert_eq!(s[0].1, 5.0);
    }
}
