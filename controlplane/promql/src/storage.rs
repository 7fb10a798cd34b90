//! An in-memory [`Storage`] and the planner that lists what a query reads.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{AggregateExpr, AtModifier, Expr, Offset, VectorSelector};

use crate::labels::{Labels, METRIC_NAME};
use crate::{Error, PushedAggregate, Selected, Series, Storage};

/// Series held in memory, indexed by metric name.
#[derive(Debug, Default, Clone)]
pub struct MemoryStorage {
    /// Each series, with the labels it is held under when they are kept
    /// apart from it ([`MemoryStorage::add_shared_as`]).
    series: Vec<Held>,
    by_name: HashMap<String, Vec<usize>>,
    pushed: HashMap<String, PushedAggregate>,
}

/// A series as [`MemoryStorage`] holds it: its samples and, when they are
/// kept apart from it, the labels it is held under.
type Held = (Arc<Series>, Option<Arc<Labels>>);

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a series; samples must be in time order.
    pub fn add(&mut self, series: Series) {
        self.add_shared(Arc::new(series));
    }

    /// Adds a series shared with its owner (queries select parts of it
    /// without copying); samples must be in time order.
    pub fn add_shared(&mut self, series: Arc<Series>) {
        self.push(series, None);
    }

    /// Adds the samples of `series` under `labels` (the series' own labels
    /// are not read): a caller holding one label set for many series —
    /// the store gateway, the same series in each of its blocks — shares
    /// it instead of copying it into each; samples must be in time order.
    pub fn add_shared_as(&mut self, labels: Arc<Labels>, series: Arc<Series>) {
        self.push(series, Some(labels));
    }

    fn push(&mut self, series: Arc<Series>, labels: Option<Arc<Labels>>) {
        let idx = self.series.len();
        let name = labels.as_deref().unwrap_or(&series.labels).get(METRIC_NAME).unwrap_or_default().to_string();
        self.by_name.entry(name).or_default().push(idx);
        self.series.push((series, labels));
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub fn clear(&mut self) {
        self.series.clear();
        self.by_name.clear();
        self.pushed.clear();
    }

    /// Records the values of a pushable aggregation at some steps.
    pub fn add_pushed(&mut self, aggregation: &AggregateExpr, values: PushedAggregate) {
        self.pushed.insert(crate::pushdown::key(aggregation), values);
    }
}

impl Storage for MemoryStorage {
    fn select(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<Selected>, Error> {
        let name_eq =
            matchers.iter().find(|m| m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal)).map(|m| m.value.as_str());
        let candidates: Box<dyn Iterator<Item = &Held>> = match name_eq {
            Some(n) => Box::new(self.by_name.get(n).into_iter().flatten().map(|&i| &self.series[i])),
            None => Box::new(self.series.iter()),
        };
        let mut out = Vec::new();
        // Series of a downsampled read carry the reserved labels of their
        // view (see [`crate::downsample::tag_view`]): a selector matches
        // only the series of its own view, raw ones if it has none, and
        // gets them without those labels.
        let reserved = crate::downsample::reserved_pairs(matchers);
        for (s, held_as) in candidates {
            let labels = held_as.as_deref().unwrap_or(&s.labels);
            let ok = matchers.iter().all(|m| {
                strata_model::downsample::is_reserved(&m.name) || m.is_match(labels.get(&m.name).unwrap_or_default())
            }) && crate::downsample::same_view(labels, &reserved);
            if !ok {
                continue;
            }
            let part = Selected::within(s.clone(), min_t, max_t).labelled(held_as.clone());
            if !reserved.is_empty() {
                let mut labels = labels.clone();
                for (n, _) in &reserved {
                    labels.remove(n);
                }
                let series = Series { labels, samples: part.samples().to_vec(), histograms: Vec::new() };
                out.push(Selected::whole(Arc::new(series)));
                continue;
            }
            out.push(part);
        }
        Ok(out)
    }

    fn pushed(&self, aggregation: &AggregateExpr) -> Option<&PushedAggregate> {
        if self.pushed.is_empty() {
            return None;
        }
        self.pushed.get(&crate::pushdown::key(aggregation))
    }
}

/// One selector of a query and the time range it reads.
#[derive(Debug, Clone)]
pub struct Selection {
    pub matchers: Vec<Matcher>,
    pub min_t: i64,
    pub max_t: i64,
}

/// The selections `expr` makes when evaluated from `start` to `end` (ms).
pub fn selections(expr: &Expr, start: i64, end: i64, lookback_ms: i64) -> Vec<Selection> {
    selections_pushed(expr, start, end, lookback_ms, &|_| None)
}

/// For a pushed-down aggregation, the `(first, last)` step spans still
/// evaluated from raw samples; `None` for the others.
pub type RemainingSpans<'a> = &'a dyn Fn(&AggregateExpr) -> Option<Vec<(i64, i64)>>;

/// [`selections`] when some aggregations are pushed down: for those,
/// `remaining` gives the `(first, last)` step spans still evaluated from raw
/// samples (empty when every step is pushed).
pub fn selections_pushed(
    expr: &Expr,
    start: i64,
    end: i64,
    lookback_ms: i64,
    remaining: RemainingSpans<'_>,
) -> Vec<Selection> {
    let mut out = Vec::new();
    let w = Walk { qs: start, qe: end, lookback: lookback_ms, remaining };
    w.walk(expr, start, end, &mut out);
    out
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

pub(crate) fn at_ms(at: &Option<AtModifier>, qstart: i64, qend: i64) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(qstart),
        Some(AtModifier::End) => Some(qend),
        Some(AtModifier::At(t)) => Some(match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        }),
    }
}

/// All matchers of a selector, the metric name included.
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let mut base = vs.matchers.matchers.clone();
    if let Some(name) = &vs.name
        && !base.iter().any(|m| m.name == METRIC_NAME)
    {
        base.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
    }
    if vs.matchers.or_matchers.is_empty() {
        return vec![base];
    }
    vs.matchers
        .or_matchers
        .iter()
        .map(|alt| {
            let mut m = alt.clone();
            if let Some(name) = &vs.name
                && !m.iter().any(|x| x.name == METRIC_NAME)
            {
                m.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
            }
            m
        })
        .collect()
}

struct Walk<'a> {
    qs: i64,
    qe: i64,
    lookback: i64,
    remaining: RemainingSpans<'a>,
}

impl Walk<'_> {
    fn walk(&self, expr: &Expr, s: i64, e: i64, out: &mut Vec<Selection>) {
        let (qs, qe, lookback) = (self.qs, self.qe, self.lookback);
        match expr {
            Expr::VectorSelector(vs) => {
                let (s, e) = shift(s, e, at_ms(&vs.at, qs, qe), offset_ms(&vs.offset));
                for m in selector_matchers(vs) {
                    out.push(Selection { matchers: m, min_t: s - lookback, max_t: e });
                }
            }
            Expr::MatrixSelector(ms) => {
                let vs = &ms.vs;
                let (s, e) = shift(s, e, at_ms(&vs.at, qs, qe), offset_ms(&vs.offset));
                for m in selector_matchers(vs) {
                    out.push(Selection { matchers: m, min_t: s - ms.range.as_millis() as i64, max_t: e });
                }
            }
            Expr::Subquery(sq) => {
                let (s, e) = shift(s, e, at_ms(&sq.at, qs, qe), offset_ms(&sq.offset));
                self.walk(&sq.expr, s - sq.range.as_millis() as i64, e, out);
            }
            Expr::Aggregate(a) => {
                if let Some(spans) = (self.remaining)(a) {
                    for (s, e) in spans {
                        self.walk(&a.expr, s, e, out);
                    }
                    return;
                }
                self.walk(&a.expr, s, e, out);
                if let Some(p) = &a.param {
                    self.walk(p, s, e, out);
                }
            }
            Expr::Unary(u) => self.walk(&u.expr, s, e, out),
            Expr::Binary(b) => {
                self.walk(&b.lhs, s, e, out);
                self.walk(&b.rhs, s, e, out);
            }
            Expr::Paren(p) => self.walk(&p.expr, s, e, out),
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.walk(a, s, e, out);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
}

fn shift(s: i64, e: i64, at: Option<i64>, offset: i64) -> (i64, i64) {
    match at {
        Some(t) => (t - offset, t - offset),
        None => (s - offset, e - offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Labels;

    fn name(n: &str) -> Matcher {
        Matcher::new(MatchOp::Equal, METRIC_NAME, n)
    }

    /// A selection is the stored series' samples in `[min_t, max_t]`
    /// (both ends included), read in place: no copy of the samples.
    #[test]
    fn selects_parts_of_stored_series_in_place() {
        let samples: Vec<(i64, f64)> = (0..10).map(|i| (i * 1000, i as f64)).collect();
        let series = Arc::new(Series::floats(Labels::new(vec![("__name__".into(), "up".into())]), samples));
        let mut st = MemoryStorage::new();
        st.add_shared(series.clone());

        let got = st.select(&[name("up")], 2000, 5000).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples(), &series.samples[2..6]);
        // The same memory as the stored series: a view, not a copy.
        assert!(std::ptr::eq(got[0].samples().as_ptr(), series.samples[2..].as_ptr()));
        assert_eq!(got[0].labels(), &series.labels);

        // Between samples, before and after all of them, and an empty range.
        assert_eq!(st.select(&[name("up")], 1500, 2500).unwrap()[0].samples(), &[(2000, 2.0)]);
        assert!(st.select(&[name("up")], -5000, -1).unwrap()[0].samples().is_empty());
        assert!(st.select(&[name("up")], 9001, 20000).unwrap()[0].samples().is_empty());
        assert!(st.select(&[name("up")], 5000, 2000).unwrap()[0].samples().is_empty());
        assert_eq!(st.select(&[name("up")], i64::MIN, i64::MAX).unwrap()[0].samples(), &series.samples[..]);
        assert!(st.select(&[name("down")], i64::MIN, i64::MAX).unwrap().is_empty());
    }

    /// Series held under shared labels are selected by those labels (their
    /// own are not read), in place, and each selection carries them.
    #[test]
    fn selects_series_held_under_shared_labels() {
        let labels = Arc::new(Labels::new(vec![("__name__".into(), "up".into()), ("job".into(), "a".into())]));
        let first = Arc::new(Series::floats(Labels::default(), vec![(1000, 1.0), (2000, 2.0)]));
        let second = Arc::new(Series::floats(Labels::new(vec![("__name__".into(), "down".into())]), vec![(3000, 3.0)]));
        let mut st = MemoryStorage::new();
        st.add_shared_as(labels.clone(), first.clone());
        st.add_shared_as(labels.clone(), second.clone());

        let job = Matcher::new(MatchOp::Equal, "job", "a");
        let got = st.select(&[name("up"), job.clone()], 0, 2500).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|s| s.labels() == labels.as_ref()));
        assert_eq!(got[0].samples(), &first.samples[..]);
        assert!(std::ptr::eq(got[0].samples().as_ptr(), first.samples.as_ptr()));
        assert!(got[1].samples().is_empty());
        assert_eq!(st.select(&[job], 2500, 3000).unwrap()[1].samples(), &[(3000, 3.0)]);
        // The series' own labels are not what it is selected by.
        assert!(st.select(&[name("down")], i64::MIN, i64::MAX).unwrap().is_empty());
    }
}
