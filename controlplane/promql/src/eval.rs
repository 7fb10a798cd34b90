//! The evaluator: every node is evaluated once for the whole step grid.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use promql_parser::parser::{Expr, MatrixSelector, SubqueryExpr, VectorSelector};

use crate::labels::Labels;
use crate::storage::{at_ms, offset_ms, selector_matchers};
use crate::{
    Annotations, EngineOptions, Error, FloatHistogram, InstantSample, QueryValue, Selected, Series, Storage,
    is_stale_nan,
};

pub(crate) type Hist = Arc<FloatHistogram>;

/// One series of an instant vector, with a value (or none) per step.
#[derive(Debug, Clone)]
pub(crate) struct StepSeries {
    pub labels: Labels,
    pub vals: Vec<Option<f64>>,
    /// `__name__` is to be removed when the result is returned (Prometheus 3's
    /// delayed name removal).
    pub drop_name: bool,
    /// Histogram values per step (empty: none at all). A step has a float
    /// or a histogram, never both.
    pub hists: Vec<Option<Hist>>,
}

impl StepSeries {
    pub fn floats(labels: Labels, vals: Vec<Option<f64>>, drop_name: bool) -> StepSeries {
        StepSeries { labels, vals, drop_name, hists: Vec::new() }
    }

    pub fn hist(&self, i: usize) -> Option<&Hist> {
        self.hists.get(i).and_then(Option::as_ref)
    }

    pub fn set_hist(&mut self, i: usize, h: Option<Hist>) {
        if self.hists.is_empty() {
            if h.is_none() {
                return;
            }
            self.hists = vec![None; self.vals.len()];
        }
        self.hists[i] = h;
    }

    /// Whether step `i` has a float or a histogram.
    pub fn present(&self, i: usize) -> bool {
        self.vals[i].is_some() || self.hist(i).is_some()
    }
}

/// One series of a range vector.
#[derive(Debug, Clone)]
pub(crate) struct RangeSeries {
    pub labels: Labels,
    pub samples: Samples,
    pub drop_name: bool,
    pub hists: Vec<(i64, Hist)>,
}

/// The float samples of a range vector's series: those a selector read,
/// shared with the storage, or computed (a subquery's, or without stale
/// markers).
#[derive(Debug, Clone)]
pub(crate) enum Samples {
    Selected(Selected),
    Owned(Vec<(i64, f64)>),
}

impl std::ops::Deref for Samples {
    type Target = [(i64, f64)];

    fn deref(&self) -> &[(i64, f64)] {
        match self {
            Samples::Selected(s) => s.samples(),
            Samples::Owned(v) => v,
        }
    }
}

/// A range vector: per step `i`, the window `(ends[i] - range, ends[i]]`.
#[derive(Debug, Clone)]
pub(crate) struct Matrix {
    pub series: Vec<RangeSeries>,
    pub range: i64,
    pub ends: Vec<i64>,
}

impl Matrix {
    /// `[lo, hi)` sample index range of every step's window in `samples`.
    pub fn windows<T>(&self, samples: &[(i64, T)]) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.ends.len());
        let (mut lo, mut hi) = (0usize, 0usize);
        let mut prev_end = i64::MIN;
        for &end in &self.ends {
            if end < prev_end {
                lo = 0;
                hi = 0;
            }
            prev_end = end;
            let start = end - self.range;
            while lo < samples.len() && samples[lo].0 <= start {
                lo += 1;
            }
            if hi < lo {
                hi = lo;
            }
            while hi < samples.len() && samples[hi].0 <= end {
                hi += 1;
            }
            out.push((lo, hi));
        }
        out
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar(Vec<f64>),
    String(String),
    Vector(Vec<StepSeries>),
    Matrix(Matrix),
}

pub(crate) struct Ctx<'a> {
    pub storage: &'a dyn Storage,
    pub opts: &'a EngineOptions,
    pub qstart: i64,
    pub qend: i64,
    pub deadline: Instant,
    pub samples: Cell<usize>,
    pub annotations: RefCell<Annotations>,
}

impl Ctx<'_> {
    /// Adds a `PromQL warning: …` annotation.
    pub fn warn(&self, msg: impl std::fmt::Display) {
        self.annotations.borrow_mut().warnings.insert(format!("PromQL warning: {msg}"));
    }

    /// Adds a `PromQL info: …` annotation.
    pub fn info(&self, msg: impl std::fmt::Display) {
        self.annotations.borrow_mut().infos.insert(format!("PromQL info: {msg}"));
    }

    /// Warns about a quantile outside [0, 1] (the result is ±Inf or NaN).
    pub fn check_quantile(&self, q: &[f64]) {
        if let Some(bad) = q.iter().find(|q| !(0.0..=1.0).contains(*q)) {
            self.warn(format!("quantile value should be between 0 and 1, got {}", crate::format_float(*bad)));
        }
    }

    pub fn check(&self, what: &'static str) -> Result<(), Error> {
        if Instant::now() > self.deadline {
            return Err(Error::Timeout(what));
        }
        Ok(())
    }

    pub fn add_samples(&self, n: usize, what: &'static str) -> Result<(), Error> {
        let total = self.samples.get() + n;
        self.samples.set(total);
        if total > self.opts.max_samples {
            return Err(Error::TooManySamples(what));
        }
        Ok(())
    }

    pub fn lookback(&self) -> i64 {
        self.opts.lookback_delta.as_millis() as i64
    }

    pub fn eval(&self, expr: &Expr, ts: &[i64]) -> Result<Value, Error> {
        self.check("expression evaluation")?;
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; ts.len()])),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, ts),
            Expr::Unary(u) => match self.eval(&u.expr, ts)? {
                Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                Value::Vector(mut vs) => {
                    for s in &mut vs {
                        for v in s.vals.iter_mut().flatten() {
                            *v = -*v;
                        }
                        for h in s.hists.iter_mut().flatten() {
                            Arc::make_mut(h).mul(-1.0);
                        }
                        s.drop_name = true;
                    }
                    Ok(Value::Vector(vs))
                }
                _ => Err(Error::BadData(
                    "unary expression only allowed on expressions of type scalar or instant vector".into(),
                )),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant_selector(vs, ts, None)?)),
            Expr::MatrixSelector(ms) => Ok(Value::Matrix(self.range_selector(ms, ts)?)),
            Expr::Subquery(sq) => Ok(Value::Matrix(self.subquery(sq, ts)?)),
            Expr::Aggregate(a) => crate::aggregate::eval(self, a, ts),
            Expr::Binary(b) => crate::binary::eval(self, b, ts),
            Expr::Call(c) => crate::functions::eval(self, c, ts),
            Expr::Extension(_) => Err(Error::BadData("extension expressions are not supported".into())),
        }
    }

    /// Evaluation times after `@` and `offset`.
    fn effective_times(&self, ts: &[i64], at: Option<i64>, offset: i64) -> Vec<i64> {
        ts.iter().map(|&t| at.unwrap_or(t) - offset).collect()
    }

    fn select(&self, vs: &VectorSelector, min_t: i64, max_t: i64) -> Result<Vec<Selected>, Error> {
        let sets = selector_matchers(vs);
        if sets.len() == 1 {
            let out = self.storage.select(&sets[0], min_t, max_t)?;
            return Ok(out);
        }
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        for m in sets {
            for s in self.storage.select(&m, min_t, max_t)? {
                if seen.insert(s.labels().clone(), ()).is_none() {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// An instant vector selector. With `sample_times`, also records the
    /// timestamp of the sample chosen at each step (for `timestamp()`).
    pub fn instant_selector(
        &self,
        vs: &VectorSelector,
        ts: &[i64],
        mut sample_times: Option<&mut Vec<Vec<i64>>>,
    ) -> Result<Vec<StepSeries>, Error> {
        let eff = self.effective_times(ts, at_ms(&vs.at, self.qstart, self.qend), offset_ms(&vs.offset));
        let Some((&min, &max)) = eff.iter().min().zip(eff.iter().max()) else {
            return Ok(Vec::new());
        };
        let lookback = self.lookback();
        let series = self.select(vs, min - lookback + 1, max)?;
        let loaded: usize = series.iter().map(|s| s.samples().len() + s.histograms().len()).sum();
        self.add_samples(loaded, "query execution")?;
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            if !s.histograms().is_empty() {
                let (vals, hists, times) = select_mixed(&s, &eff, lookback);
                if vals.iter().any(Option::is_some) || hists.iter().any(Option::is_some) {
                    if let Some(st) = sample_times.as_deref_mut() {
                        st.push(times);
                    }
                    out.push(StepSeries { labels: s.labels().clone(), vals, drop_name: false, hists });
                }
                continue;
            }
            let samples = s.samples();
            let mut vals = Vec::with_capacity(eff.len());
            let mut times = Vec::new();
            let mut any = false;
            let mut j = 0usize;
            let mut prev = i64::MIN;
            for &t in &eff {
                if t < prev {
                    j = 0;
                }
                prev = t;
                while j < samples.len() && samples[j].0 <= t {
                    j += 1;
                }
                let v = if j > 0 {
                    let (st, sv) = samples[j - 1];
                    if st > t - lookback && !is_stale_nan(sv) {
                        if sample_times.is_some() {
                            times.push(st);
                        }
                        Some(sv)
                    } else {
                        None
                    }
                } else {
                    None
                };
                if v.is_none() && sample_times.is_some() {
                    times.push(0);
                }
                any |= v.is_some();
                vals.push(v);
            }
            if any {
                if let Some(st) = sample_times.as_deref_mut() {
                    st.push(times);
                }
                out.push(StepSeries::floats(s.labels().clone(), vals, false));
            }
        }
        Ok(out)
    }

    pub fn range_selector(&self, ms: &MatrixSelector, ts: &[i64]) -> Result<Matrix, Error> {
        let vs = &ms.vs;
        let range = ms.range.as_millis() as i64;
        let at = at_ms(&vs.at, self.qstart, self.qend);
        let ends = self.effective_times(ts, at, offset_ms(&vs.offset));
        let mut out = Vec::new();
        if let Some((&min, &max)) = ends.iter().min().zip(ends.iter().max()) {
            let series = self.select(vs, min - range + 1, max)?;
            let loaded: usize = series.iter().map(|s| s.samples().len() + s.histograms().len()).sum();
            self.add_samples(loaded, "query execution")?;
            for s in series {
                if s.samples().is_empty() && s.histograms().is_empty() {
                    continue;
                }
                let (labels, hists) = (s.labels().clone(), s.histograms().to_vec());
                // Read in place unless stale markers are to be left out.
                let samples = if s.samples().iter().any(|(_, v)| is_stale_nan(*v)) {
                    Samples::Owned(s.samples().iter().copied().filter(|(_, v)| !is_stale_nan(*v)).collect())
                } else {
                    Samples::Selected(s)
                };
                if !samples.is_empty() || !hists.is_empty() {
                    out.push(RangeSeries { labels, samples, drop_name: false, hists });
                }
            }
        }
        Ok(Matrix { series: out, range, ends })
    }

    pub fn subquery(&self, sq: &SubqueryExpr, ts: &[i64]) -> Result<Matrix, Error> {
        let range = sq.range.as_millis() as i64;
        let step =
            sq.step.map(|d| d.as_millis() as i64).unwrap_or(self.opts.default_subquery_step.as_millis() as i64).max(1);
        let at = at_ms(&sq.at, self.qstart, self.qend);
        let ends = self.effective_times(ts, at, offset_ms(&sq.offset));
        let mut series = Vec::new();
        if let Some((&min, &max)) = ends.iter().min().zip(ends.iter().max()) {
            let start = min - range;
            let mut inner_start = step * (start / step);
            if inner_start <= start {
                inner_start += step;
            }
            let points = (max - inner_start) / step + 1;
            if points > 0 {
                self.add_samples(points as usize, "subquery evaluation")?;
            }
            let grid = grid(inner_start, max, step);
            if !grid.is_empty() {
                match self.eval(&sq.expr, &grid)? {
                    Value::Vector(vs) => {
                        for s in vs {
                            let samples: Vec<(i64, f64)> =
                                grid.iter().zip(&s.vals).filter_map(|(&t, v)| v.map(|v| (t, v))).collect();
                            let hists: Vec<(i64, Hist)> = grid
                                .iter()
                                .zip(&s.hists)
                                .filter_map(|(&t, h)| h.as_ref().map(|h| (t, h.clone())))
                                .collect();
                            if !samples.is_empty() || !hists.is_empty() {
                                series.push(RangeSeries {
                                    labels: s.labels,
                                    samples: Samples::Owned(samples),
                                    drop_name: s.drop_name,
                                    hists,
                                });
                            }
                        }
                    }
                    Value::Scalar(v) => {
                        let samples = Samples::Owned(grid.iter().copied().zip(v).collect());
                        series.push(RangeSeries {
                            labels: Labels::default(),
                            samples,
                            drop_name: false,
                            hists: Vec::new(),
                        });
                    }
                    _ => return Err(Error::BadData("subquery is only allowed on instant vector".into())),
                }
            }
        }
        Ok(Matrix { series, range, ends })
    }
}

pub(crate) fn grid(start: i64, end: i64, step: i64) -> Vec<i64> {
    if step <= 0 {
        return vec![start];
    }
    let mut out = Vec::new();
    let mut t = start;
    while t <= end {
        out.push(t);
        t += step;
    }
    out
}

/// Collects output series keyed by labels; two values for the same labels at
/// the same step are an error, as in Prometheus.
pub(crate) struct SeriesBuilder {
    steps: usize,
    index: HashMap<Labels, usize>,
    pub series: Vec<StepSeries>,
}

impl SeriesBuilder {
    pub fn new(steps: usize) -> Self {
        SeriesBuilder { steps, index: HashMap::new(), series: Vec::new() }
    }

    pub fn slot(&mut self, labels: &Labels, drop_name: bool) -> usize {
        if let Some(&i) = self.index.get(labels) {
            self.series[i].drop_name |= drop_name;
            return i;
        }
        let i = self.series.len();
        self.index.insert(labels.clone(), i);
        self.series.push(StepSeries::floats(labels.clone(), vec![None; self.steps], drop_name));
        i
    }

    pub fn set(&mut self, slot: usize, step: usize, v: f64) -> Result<(), Error> {
        let cell = &mut self.series[slot].vals[step];
        if cell.is_some() {
            return Err(Error::Execution("vector cannot contain metrics with the same labelset".into()));
        }
        *cell = Some(v);
        Ok(())
    }

    pub fn set_hist(&mut self, slot: usize, step: usize, h: Hist) -> Result<(), Error> {
        if self.series[slot].present(step) {
            return Err(Error::Execution("vector cannot contain metrics with the same labelset".into()));
        }
        self.series[slot].set_hist(step, Some(h));
        Ok(())
    }
}

/// The latest float or histogram sample at or before each of `eff`
/// within the lookback (a stale float marker ends either).
fn select_mixed(s: &Selected, eff: &[i64], lookback: i64) -> (Vec<Option<f64>>, Vec<Option<Hist>>, Vec<i64>) {
    let mut vals = Vec::with_capacity(eff.len());
    let mut hists = Vec::with_capacity(eff.len());
    let mut times = Vec::with_capacity(eff.len());
    let (samples, histograms) = (s.samples(), s.histograms());
    for &t in eff {
        let j = samples.partition_point(|(st, _)| *st <= t);
        let k = histograms.partition_point(|(st, _)| *st <= t);
        let f = (j > 0).then(|| samples[j - 1]);
        let h = (k > 0).then(|| &histograms[k - 1]);
        let pick_hist = match (f, h) {
            (Some((ft, _)), Some((ht, _))) => *ht > ft,
            (None, Some(_)) => true,
            _ => false,
        };
        if pick_hist {
            let (ht, hv) = h.expect("picked");
            if *ht > t - lookback {
                vals.push(None);
                hists.push(Some(hv.clone()));
                times.push(*ht);
                continue;
            }
        } else if let Some((ft, fv)) = f
            && ft > t - lookback
            && !is_stale_nan(fv)
        {
            vals.push(Some(fv));
            hists.push(None);
            times.push(ft);
            continue;
        }
        vals.push(None);
        hists.push(None);
        times.push(0);
    }
    (vals, hists, times)
}

/// Removes `__name__` where it is due and checks that no two series share a
/// label set at the same step.
fn finish_names(series: Vec<StepSeries>, steps: usize) -> Result<Vec<StepSeries>, Error> {
    if !series.iter().any(|s| s.drop_name) {
        return Ok(series);
    }
    let mut b = SeriesBuilder::new(steps);
    for s in series {
        let labels = if s.drop_name { s.labels.without_name() } else { s.labels };
        let slot = b.slot(&labels, false);
        for (i, v) in s.vals.into_iter().enumerate() {
            if let Some(v) = v {
                b.set(slot, i, v)?;
            }
        }
        for (i, h) in s.hists.into_iter().enumerate() {
            if let Some(h) = h {
                b.set_hist(slot, i, h)?;
            }
        }
    }
    Ok(b.series)
}

pub(crate) fn run(
    opts: &EngineOptions,
    storage: &dyn Storage,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    instant: bool,
) -> Result<(QueryValue, Annotations), Error> {
    if !instant && (end - start) / step >= opts.max_samples as i64 {
        return Err(Error::TooManySamples("query evaluation"));
    }
    let ts = if instant { vec![start] } else { grid(start, end, step) };
    let ctx = Ctx {
        storage,
        opts,
        qstart: start,
        qend: end,
        deadline: Instant::now() + opts.timeout,
        samples: Cell::new(0),
        annotations: RefCell::default(),
    };
    let value = ctx.eval(expr, &ts)?;
    let result = finish(value, &ts, start, instant)?;
    Ok((result, ctx.annotations.into_inner()))
}

/// The engine's value as the API's result.
fn finish(value: Value, ts: &[i64], start: i64, instant: bool) -> Result<QueryValue, Error> {
    match value {
        Value::Scalar(v) => {
            if instant {
                Ok(QueryValue::Scalar { t: start, v: v[0] })
            } else {
                let samples = ts.iter().copied().zip(v).collect();
                Ok(QueryValue::Matrix(vec![Series::floats(Labels::default(), samples)]))
            }
        }
        Value::String(s) => {
            if instant {
                Ok(QueryValue::String { t: start, v: s })
            } else {
                Err(Error::BadData(
                    "invalid expression type \"string\" for range query, must be Scalar or instant Vector".into(),
                ))
            }
        }
        Value::Vector(vs) => {
            let vs = finish_names(vs, ts.len())?;
            if instant {
                Ok(QueryValue::Vector(
                    vs.into_iter()
                        .filter_map(|s| {
                            let h = s.hist(0).cloned();
                            match (s.vals[0], h) {
                                (Some(v), _) => Some(InstantSample { labels: s.labels, t: start, v, h: None }),
                                (None, Some(h)) => {
                                    Some(InstantSample { labels: s.labels, t: start, v: 0.0, h: Some(h) })
                                }
                                _ => None,
                            }
                        })
                        .collect(),
                ))
            } else {
                let mut out: Vec<Series> = vs
                    .into_iter()
                    .filter_map(|s| {
                        let samples: Vec<(i64, f64)> =
                            ts.iter().zip(s.vals).filter_map(|(&t, v)| v.map(|v| (t, v))).collect();
                        let histograms: Vec<(i64, Hist)> =
                            ts.iter().zip(s.hists).filter_map(|(&t, h)| h.map(|h| (t, h))).collect();
                        (!samples.is_empty() || !histograms.is_empty()).then_some(Series {
                            labels: s.labels,
                            samples,
                            histograms,
                        })
                    })
                    .collect();
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
                Ok(QueryValue::Matrix(out))
            }
        }
        Value::Matrix(m) => {
            if !instant {
                return Err(Error::BadData(
                    "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
                ));
            }
            let mut out = Vec::new();
            let mut seen = HashMap::new();
            for s in &m.series {
                let (lo, hi) = m.windows(&s.samples)[0];
                let (hlo, hhi) = m.windows(&s.hists)[0];
                if lo == hi && hlo == hhi {
                    continue;
                }
                let labels = if s.drop_name { s.labels.without_name() } else { s.labels.clone() };
                if seen.insert(labels.clone(), ()).is_some() {
                    return Err(Error::Execution("vector cannot contain metrics with the same labelset".into()));
                }
                out.push(Series {
                    labels,
                    samples: s.samples[lo..hi].to_vec(),
                    histograms: s.hists[hlo..hhi].to_vec(),
                });
            }
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            Ok(QueryValue::Matrix(out))
        }
    }
}
