//! An in-memory [`Storage`] and the planner that lists what a query reads.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use crate::labels::METRIC_NAME;
use crate::{Error, Series, Storage};

/// Series held in memory, indexed by metric name.
#[derive(Debug, Default, Clone)]
pub struct MemoryStorage {
    series: Vec<Arc<Series>>,
    by_name: HashMap<String, Vec<usize>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a series; samples must be in time order.
    pub fn add(&mut self, series: Series) {
        let idx = self.series.len();
        let name = series.labels.get(METRIC_NAME).unwrap_or_default().to_string();
        self.by_name.entry(name).or_default().push(idx);
        self.series.push(Arc::new(series));
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
    }
}

impl Storage for MemoryStorage {
    fn select(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<Arc<Series>>, Error> {
        let name_eq =
            matchers.iter().find(|m| m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal)).map(|m| m.value.as_str());
        let candidates: Box<dyn Iterator<Item = &Arc<Series>>> = match name_eq {
            Some(n) => Box::new(self.by_name.get(n).into_iter().flatten().map(|&i| &self.series[i])),
            None => Box::new(self.series.iter()),
        };
        let mut out = Vec::new();
        for s in candidates {
            let ok = matchers.iter().all(|m| m.is_match(s.labels.get(&m.name).unwrap_or_default()));
            if !ok {
                continue;
            }
            let lo = s.samples.partition_point(|(t, _)| *t < min_t);
            let hi = s.samples.partition_point(|(t, _)| *t <= max_t);
            let hlo = s.histograms.partition_point(|(t, _)| *t < min_t);
            let hhi = s.histograms.partition_point(|(t, _)| *t <= max_t);
            if lo == 0 && hi == s.samples.len() && hlo == 0 && hhi == s.histograms.len() {
                out.push(s.clone());
            } else {
                out.push(Arc::new(Series {
                    labels: s.labels.clone(),
                    samples: s.samples[lo..hi].to_vec(),
                    histograms: s.histograms[hlo..hhi].to_vec(),
                }));
            }
        }
        Ok(out)
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
    let mut out = Vec::new();
    walk(expr, start, end, start, end, lookback_ms, &mut out);
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

fn walk(expr: &Expr, s: i64, e: i64, qs: i64, qe: i64, lookback: i64, out: &mut Vec<Selection>) {
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
            walk(&sq.expr, s - sq.range.as_millis() as i64, e, qs, qe, lookback, out);
        }
        Expr::Aggregate(a) => {
            walk(&a.expr, s, e, qs, qe, lookback, out);
            if let Some(p) = &a.param {
                walk(p, s, e, qs, qe, lookback, out);
            }
        }
        Expr::Unary(u) => walk(&u.expr, s, e, qs, qe, lookback, out),
        Expr::Binary(b) => {
            walk(&b.lhs, s, e, qs, qe, lookback, out);
            walk(&b.rhs, s, e, qs, qe, lookback, out);
        }
        Expr::Paren(p) => walk(&p.expr, s, e, qs, qe, lookback, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, s, e, qs, qe, lookback, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn shift(s: i64, e: i64, at: Option<i64>, offset: i64) -> (i64, i64) {
    match at {
        Some(t) => (t - offset, t - offset),
        None => (s - offset, e - offset),
    }
}
