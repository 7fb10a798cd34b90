//! Strata's PromQL engine.
//!
//! Queries are parsed with the `promql-parser` crate and evaluated by this
//! crate, vectorised over the step grid: every node of the expression is
//! evaluated once for all steps of a range query (an instant query is a range
//! query with one step), producing one value column per series.
//!
//! Data comes from a [`Storage`]: the engine asks it for the series matching
//! each selector over the time range that selector needs. [`selections`] lists
//! those ranges up front so an asynchronous caller (the querier, which fans out
//! over the StoreAPI) can fetch everything first and hand the engine a
//! [`MemoryStorage`].
//!
//! Semantics follow Prometheus 3.x: left-open range windows, 5m lookback,
//! staleness markers end series, delayed `__name__` removal, Prometheus'
//! extrapolation for `rate`/`increase`/`delta`.

mod aggregate;
mod binary;
pub mod downsample;
mod eval;
mod functions;
pub mod histogram;
pub mod labels;
pub mod pushdown;
mod storage;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub use functions::civil_from_days;
pub use histogram::FloatHistogram;
pub use labels::Labels;
pub use promql_parser::label::{MatchOp, Matcher};
pub use promql_parser::parser::{AggregateExpr, Expr};
pub use pushdown::PushedAggregate;
pub use storage::{MemoryStorage, Selection, selections, selections_pushed};
pub use strata_model::downsample::{View, ViewRequest};

/// Separates the reserved matchers of a downsampled read (see
/// [`downsample`]) from the series' own.
pub fn split_view(matchers: Vec<Matcher>) -> Result<(Vec<Matcher>, Option<ViewRequest>), String> {
    strata_model::downsample::split_reserved(
        matchers,
        |m| m.name.as_str(),
        |m| matches!(m.op, MatchOp::Equal).then_some(m.value.as_str()),
    )
    .map_err(|e| e.to_string())
}

/// Prometheus' staleness marker (a NaN with this exact bit pattern).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `v` is Prometheus' staleness marker.
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One series with its samples in time order (ms timestamps): float
/// samples and native-histogram samples (a series may change between the
/// two; at one timestamp there is one or the other).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
    pub histograms: Vec<(i64, Arc<FloatHistogram>)>,
}

impl Series {
    /// A series of float samples.
    pub fn floats(labels: Labels, samples: Vec<(i64, f64)>) -> Series {
        Series { labels, samples, histograms: Vec::new() }
    }
}

/// A series as a [`Storage`] selects it: the part of a stored series'
/// samples in the selected time range, shared with the storage (a query
/// does not copy the samples it reads).
#[derive(Debug, Clone)]
pub struct Selected {
    series: Arc<Series>,
    samples: std::ops::Range<usize>,
    histograms: std::ops::Range<usize>,
    /// The series' labels when the storage holds them apart from its
    /// samples (see [`MemoryStorage::add_shared_as`]).
    labels: Option<Arc<Labels>>,
}

impl Selected {
    /// All of `series`.
    pub fn whole(series: Arc<Series>) -> Selected {
        let (samples, histograms) = (0..series.samples.len(), 0..series.histograms.len());
        Selected { series, samples, histograms, labels: None }
    }

    /// The samples of `series` in `[min_t, max_t]`.
    pub fn within(series: Arc<Series>, min_t: i64, max_t: i64) -> Selected {
        let s = &series.samples;
        let samples = s.partition_point(|(t, _)| *t < min_t)..s.partition_point(|(t, _)| *t <= max_t);
        let h = &series.histograms;
        let histograms = h.partition_point(|(t, _)| *t < min_t)..h.partition_point(|(t, _)| *t <= max_t);
        // An empty range stays a valid (empty) slice when min_t > max_t.
        let samples = samples.start..samples.end.max(samples.start);
        let histograms = histograms.start..histograms.end.max(histograms.start);
        Selected { series, samples, histograms, labels: None }
    }

    /// The same samples under `labels` instead of the series' own.
    pub(crate) fn labelled(self, labels: Option<Arc<Labels>>) -> Selected {
        Selected { labels, ..self }
    }

    pub fn labels(&self) -> &Labels {
        self.labels.as_deref().unwrap_or(&self.series.labels)
    }

    pub fn samples(&self) -> &[(i64, f64)] {
        &self.series.samples[self.samples.clone()]
    }

    pub fn histograms(&self) -> &[(i64, Arc<FloatHistogram>)] {
        &self.series.histograms[self.histograms.clone()]
    }
}

/// Where the engine reads series from.
pub trait Storage {
    /// Series matching all `matchers` with their samples in `[min_t, max_t]`.
    fn select(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<Selected>, Error>;

    /// Values of a pushable aggregation already computed at some steps
    /// (see [`pushdown`]); the engine evaluates only the other steps.
    fn pushed(&self, _aggregation: &promql_parser::parser::AggregateExpr) -> Option<&PushedAggregate> {
        None
    }
}

impl<S: Storage + ?Sized> Storage for &S {
    fn select(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<Selected>, Error> {
        (**self).select(matchers, min_t, max_t)
    }

    fn pushed(&self, aggregation: &promql_parser::parser::AggregateExpr) -> Option<&PushedAggregate> {
        (**self).pushed(aggregation)
    }
}

/// Query errors, each mapping to one of Prometheus' `errorType`s.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// Syntax and type errors (`bad_data`, HTTP 400).
    #[error("{0}")]
    BadData(String),
    /// Errors during evaluation (`execution`, HTTP 422).
    #[error("{0}")]
    Execution(String),
    /// The query loaded more samples than allowed (`execution`, HTTP 422).
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(&'static str),
    /// The query ran past its deadline (`timeout`, HTTP 503).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The storage failed (`internal`/`unavailable`).
    #[error("{0}")]
    Storage(String),
}

impl Error {
    /// Prometheus' `errorType` for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::BadData(_) => "bad_data",
            Error::Execution(_) | Error::TooManySamples(_) => "execution",
            Error::Timeout(_) => "timeout",
            Error::Storage(_) => "internal",
        }
    }
}

/// Engine limits and defaults.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for the latest sample.
    pub lookback_delta: Duration,
    /// Maximum number of samples a query may hold (loaded plus produced).
    pub max_samples: usize,
    /// Wall-clock limit for one evaluation.
    pub timeout: Duration,
    /// Step of subqueries written without one (`x[5m:]`).
    pub default_subquery_step: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step: Duration::from_secs(60),
        }
    }
}

/// One sample of an instant vector: a float `v`, or a histogram `h`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
    pub h: Option<Arc<FloatHistogram>>,
}

/// The result of a query, shaped like Prometheus' `resultType`s.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Scalar { t: i64, v: f64 },
    String { t: i64, v: String },
    Vector(Vec<InstantSample>),
    Matrix(Vec<Series>),
}

impl QueryValue {
    pub fn result_type(&self) -> &'static str {
        match self {
            QueryValue::Scalar { .. } => "scalar",
            QueryValue::String { .. } => "string",
            QueryValue::Vector(_) => "vector",
            QueryValue::Matrix(_) => "matrix",
        }
    }
}

/// The matcher sets of a series selector such as `up{job="x"}` (one set per
/// `or` alternative), for `match[]` parameters.
pub fn parse_series_selector(text: &str) -> Result<Vec<Vec<Matcher>>, Error> {
    match parse(text)? {
        Expr::VectorSelector(vs) => Ok(storage::selector_matchers(&vs)),
        _ => Err(Error::BadData(format!("{text:?} is not a series selector"))),
    }
}

/// Parses a PromQL expression, with Prometheus-style error text.
pub fn parse(query: &str) -> Result<Expr, Error> {
    check_durations(query)?;
    promql_parser::parser::parse(query).map_err(Error::BadData)
}

/// Rejects unit-less durations (`x[100]`, `offset 100`) too large to be a
/// duration; the parser library panics on them.
fn check_durations(q: &str) -> Result<(), Error> {
    let b = q.as_bytes();
    let mut i = 0;
    let mut prev_sig: Option<u8> = None; // last non-space byte before the current token
    let mut prev_word_offset = false;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            // Skip string literals.
            let q0 = c;
            i += 1;
            while i < b.len() && b[i] != q0 {
                if b[i] == b'\\' && q0 != b'`' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            prev_sig = Some(q0);
            prev_word_offset = false;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || b[i] == b'.'
                    || ((b[i] == b'+' || b[i] == b'-') && matches!(b[i - 1], b'e' | b'E')))
            {
                i += 1;
            }
            let tok = &q[start..i];
            let in_duration = matches!(prev_sig, Some(b'[') | Some(b':')) || prev_word_offset;
            if in_duration
                && let Ok(v) = tok.parse::<f64>()
                && (!v.is_finite() || v.abs() >= 1e15)
            {
                return Err(Error::BadData(format!("duration out of range: {tok}")));
            }
            prev_sig = Some(b'0');
            prev_word_offset = false;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            prev_word_offset = q[start..i].eq_ignore_ascii_case("offset");
            prev_sig = Some(b'a');
            continue;
        }
        if c == b'-' && prev_word_offset {
            // `offset -5m`: keep the offset context for the number.
            i += 1;
            continue;
        }
        prev_sig = Some(c);
        prev_word_offset = false;
        i += 1;
    }
    Ok(())
}

/// Prometheus' annotations of one evaluation: `warnings` (the result may be
/// wrong or incomplete, e.g. a quantile outside [0, 1]) and `infos` (it may
/// not be what was meant, e.g. `rate` over a metric not named like a
/// counter). The messages are Prometheus' (without the position suffix).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Annotations {
    pub warnings: BTreeSet<String>,
    pub infos: BTreeSet<String>,
}

/// The PromQL engine. Cheap to clone; holds only options.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `expr` at one instant `t` (ms).
    pub fn instant<S: Storage>(&self, storage: &S, expr: &Expr, t: i64) -> Result<QueryValue, Error> {
        self.instant_annotated(storage, expr, t).map(|(v, _)| v)
    }

    /// [`Engine::instant`] with the evaluation's annotations.
    pub fn instant_annotated<S: Storage>(
        &self,
        storage: &S,
        expr: &Expr,
        t: i64,
    ) -> Result<(QueryValue, Annotations), Error> {
        eval::run(&self.opts, storage, expr, t, t, 0, true)
    }

    /// Evaluates `expr` at every step from `start` to `end` (ms, inclusive).
    pub fn range<S: Storage>(
        &self,
        storage: &S,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<QueryValue, Error> {
        self.range_annotated(storage, expr, start, end, step).map(|(v, _)| v)
    }

    /// [`Engine::range`] with the evaluation's annotations.
    pub fn range_annotated<S: Storage>(
        &self,
        storage: &S,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<(QueryValue, Annotations), Error> {
        if step <= 0 {
            return Err(Error::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end < start {
            return Err(Error::BadData("end timestamp must not be before start time".into()));
        }
        eval::run(&self.opts, storage, expr, start, end, step, false)
    }
}

/// Formats a float the way Prometheus' JSON API and `count_values` do
/// (Go's `strconv.FormatFloat(f, 'f', -1, 64)`).
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}
