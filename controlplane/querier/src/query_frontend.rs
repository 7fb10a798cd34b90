//! The query frontend, built into the querier (Cortex's model): a range
//! query is split at multiples of `--query.split-interval` (24 h: one split
//! per UTC day), the splits run in parallel, and each split's answer is
//! kept in the results cache except its part within
//! `--query.cache-freshness` of now (data that may still arrive). A
//! dashboard refreshed every minute over 30 days then evaluates the last
//! few minutes, not 30 days.
//!
//! Splitting is exact: a range query evaluates every step on its own, so
//! the steps of a split give the values they give in the whole query.
//! Queries whose value at a step depends on the query's range (`@ start()`,
//! `@ end()`) are neither split nor cached.
//!
//! A cache entry holds one contiguous run of steps of one split (an
//! *extent*) for (tenant, query, step, step offset, lookback, split). A
//! request for the same split reuses the extent where it overlaps and
//! evaluates only the steps after it; the entry then grows. Answers with
//! warnings (a source missing: partial data) are never stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use strata_promql::{Expr, FloatHistogram, Labels, QueryValue, Series};

use crate::QuerierState;
use crate::query_service::{Evaluated, ServiceError, evaluate};
use crate::results_cache::ResultsCache;

/// Splits of one query evaluated at once.
const SPLIT_PARALLELISM: usize = 4;
/// Version of the cache key and value format; bump on a change.
const FORMAT: &[u8; 4] = b"SRC1";

/// Settings of the frontend.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// Range queries are split at multiples of this (0: not split).
    pub split_interval: std::time::Duration,
    /// Results whose data is more recent than this are not cached.
    pub freshness: std::time::Duration,
    pub cache: crate::results_cache::ResultsCacheConfig,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            split_interval: std::time::Duration::from_secs(24 * 3600),
            freshness: std::time::Duration::from_secs(600),
            cache: Default::default(),
        }
    }
}

/// The frontend's state, in [`QuerierState`].
pub struct QueryFrontend {
    split_ms: i64,
    freshness_ms: i64,
    cache: Option<ResultsCache>,
    splits: prometheus_client::metrics::counter::Counter,
    evaluations: prometheus_client::metrics::counter::Counter,
}

impl QueryFrontend {
    pub fn new(cfg: &FrontendConfig, registry: &mut prometheus_client::registry::Registry) -> QueryFrontend {
        let splits = prometheus_client::metrics::counter::Counter::default();
        registry.register(
            "query_splits",
            "Parts range queries were split into (--query.split-interval), answered from the results cache or evaluated",
            splits.clone(),
        );
        let evaluations = prometheus_client::metrics::counter::Counter::default();
        registry.register(
            "query_split_evaluations",
            "Queries evaluated for the steps of splits the results cache did not have (consecutive such splits are evaluated as one)",
            evaluations.clone(),
        );
        QueryFrontend {
            split_ms: cfg.split_interval.as_millis() as i64,
            freshness_ms: cfg.freshness.as_millis() as i64,
            cache: ResultsCache::new(&cfg.cache, registry),
            splits,
            evaluations,
        }
    }
}

/// The steps of `[start, end]` (every `step`) cut at multiples of `interval`:
/// `(first, last)` step of each part. One part when `interval` is 0.
pub fn split_steps(start: i64, end: i64, step: i64, interval: i64) -> Vec<(i64, i64)> {
    if interval <= 0 || step <= 0 {
        return vec![(start, end)];
    }
    let last_step = start + (end - start) / step * step;
    let mut out = Vec::new();
    let mut s = start;
    while s <= last_step {
        let boundary = (s.div_euclid(interval) + 1).saturating_mul(interval);
        let limit = (boundary - 1).min(last_step);
        let last = s + (limit - s) / step * step;
        out.push((s, last));
        s = last + step;
    }
    out
}

/// True when the expression uses `@ start()` or `@ end()`.
pub fn depends_on_range(expr: &Expr) -> bool {
    // The canonical text spells them out; cheaper than a second walker and
    // cannot miss a node kind.
    let text = expr.to_string();
    text.contains("@ start()") || text.contains("@ end()")
}

/// What evaluates the splits: the querier's own query service, or (in
/// `strata query-frontend`) queriers over HTTP.
pub trait SplitEvaluator: Send + Sync {
    /// The range query `expr` over the steps `start, start + step, …, end`.
    fn evaluate<'a>(
        &'a self,
        tenant: &'a str,
        expr: &'a Expr,
        start: i64,
        end: i64,
        step: i64,
        deadline: Instant,
    ) -> futures::future::BoxFuture<'a, Result<Evaluated, ServiceError>>;
}

impl SplitEvaluator for QuerierState {
    fn evaluate<'a>(
        &'a self,
        tenant: &'a str,
        expr: &'a Expr,
        start: i64,
        end: i64,
        step: i64,
        deadline: Instant,
    ) -> futures::future::BoxFuture<'a, Result<Evaluated, ServiceError>> {
        Box::pin(evaluate(self, tenant, expr.clone(), start, end, Some(step), deadline))
    }
}

/// Answers a range query through the splits and the results cache.
pub async fn range_query(
    state: &QuerierState,
    tenant: &str,
    expr: Expr,
    start: i64,
    end: i64,
    step: i64,
    deadline: Instant,
) -> Result<Evaluated, ServiceError> {
    let fe = &state.frontend;
    if !fe.splits_or_caches() || depends_on_range(&expr) {
        return evaluate(state, tenant, expr, start, end, Some(step), deadline).await;
    }
    let lookback = state.engine.options().lookback_delta.as_millis() as i64;
    let query = FrontendQuery { tenant, expr: &expr, key_extra: "", start, end, step };
    // `--query.max-samples` (and the tenant's limit) bound each part, as
    // each querier does behind `strata query-frontend` and as Cortex'
    // frontend does: a part is a query of its own, and at most
    // `SPLIT_PARALLELISM` are in memory at once. Summing the parts instead
    // refused 30-day dashboards that Prometheus answers (its limit bounds
    // the samples in memory at once, not those read in all).
    fe.answer(state, lookback, query, deadline).await
}

/// One range query as the frontend sees it.
pub struct FrontendQuery<'a> {
    pub tenant: &'a str,
    pub expr: &'a Expr,
    /// More of the cache key: request parameters that change the answer
    /// and are not in `expr` (`strata query-frontend` passes
    /// `max_source_resolution` on to the queriers).
    pub key_extra: &'a str,
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl QueryFrontend {
    /// Whether range queries are split or cached at all.
    pub fn splits_or_caches(&self) -> bool {
        self.split_ms > 0 || self.cache.is_some()
    }

    /// `q` split at `--query.split-interval`, each split from the results
    /// cache where it has it and from `eval` for the rest; `lookback_ms`
    /// is the evaluators' lookback delta (which steps read recent data).
    /// Queries using `@ start()`/`@ end()` must not come here
    /// ([`depends_on_range`]).
    pub async fn answer(
        &self,
        eval: &dyn SplitEvaluator,
        lookback_ms: i64,
        q: FrontendQuery<'_>,
        deadline: Instant,
    ) -> Result<Evaluated, ServiceError> {
        let splits = split_steps(q.start, q.end, q.step, self.split_ms);
        self.splits.inc_by(splits.len() as u64);
        let text = q.expr.to_string();
        let until = now_ms() - self.freshness_ms;
        let running = tokio::sync::Semaphore::new(SPLIT_PARALLELISM);
        let ctx = SplitContext { fe: self, eval, lookback_ms, running: &running };
        let splits: Vec<Split> = splits
            .into_iter()
            .map(|(start, end)| Split {
                tenant: q.tenant,
                text: &text,
                key_extra: q.key_extra,
                expr: q.expr,
                step: q.step,
                start,
                end,
            })
            .collect();
        let cached: Vec<Option<Extent>> = futures::stream::iter(0..splits.len())
            .map(|i| splits[i].cached(&ctx))
            .buffered(SPLIT_PARALLELISM)
            .collect()
            .await;
        // Each split evaluates its steps after its extent (all when it has
        // none): consecutive splits with nothing cached join the run of the
        // split before them, evaluated as one query and cut into splits.
        let fresh_from: Vec<i64> = splits
            .iter()
            .zip(&cached)
            .map(|(s, c)| c.as_ref().map_or(s.start, |x| x.end + s.step).max(s.start))
            .collect();
        let runs = evaluation_runs(&splits, &fresh_from, COALESCED_SPLITS);
        let fresh: Vec<Option<Evaluated>> = futures::stream::iter(runs)
            .map(|run| {
                let (splits, fresh_from) = (&splits[run.clone()], &fresh_from[run]);
                evaluate_run(&ctx, splits, fresh_from, deadline)
            })
            .buffered(SPLIT_PARALLELISM)
            .try_collect::<Vec<Vec<Option<Evaluated>>>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        let parts = futures::future::try_join_all(
            splits
                .iter()
                .zip(cached)
                .zip(fresh)
                .map(|((split, cached), fresh)| split.combine(&ctx, until, cached, fresh)),
        )
        .await?;
        Ok(merge(parts))
    }
}

/// Most consecutive splits evaluated as one query. Every evaluation pays
/// per series (each block's label sets, merging blocks, the engine's
/// storage) however few steps it has, and a store gateway already uses
/// every core within one: a cold 30-day query measured 1.4 s as four runs
/// of 8 days and 1.1 s as one (docs/benchmarks.md). A month of days per
/// run keeps a query over months in parallel parts. Memory per run is
/// bounded as per split: by `--query.max-samples` (over it, the run is
/// halved until its parts pass).
const COALESCED_SPLITS: usize = 31;

/// The splits to evaluate, as runs of consecutive splits (indexes): a
/// split with steps to evaluate starts a run, and the splits after it
/// with nothing cached join it (up to `max` splits a run).
fn evaluation_runs(splits: &[Split<'_>], fresh_from: &[i64], max: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, (s, &from)) in splits.iter().zip(fresh_from).enumerate() {
        if from > s.end {
            runs.push(i..i + 1); // all cached: nothing to evaluate
            continue;
        }
        match runs.last_mut() {
            Some(r) if r.end == i && r.len() < max && from == s.start && fresh_from[i - 1] <= splits[i - 1].end => {
                r.end = i + 1
            }
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

/// Evaluates the fresh steps of a run of splits (see [`evaluation_runs`])
/// as one query, cut into the splits' answers. A query over a size limit
/// is halved until its parts pass (a split alone answers as it would on
/// its own): store gateways refuse before reading when the blocks a part
/// certainly reads are over the limit, so the halving costs little.
async fn evaluate_run(
    ctx: &SplitContext<'_>,
    splits: &[Split<'_>],
    fresh_from: &[i64],
    deadline: Instant,
) -> Result<Vec<Option<Evaluated>>, ServiceError> {
    let mut out: Vec<Option<Evaluated>> = (0..splits.len()).map(|_| None).collect();
    if fresh_from[0] > splits[0].end {
        return Ok(out);
    }
    let mut pending: Vec<std::ops::Range<usize>> = Vec::new();
    pending.push(0..splits.len());
    while let Some(part) = pending.pop() {
        let (first, last) = (part.start, part.end - 1);
        match splits[first].evaluate_to(ctx, fresh_from[first], splits[last].end, deadline).await {
            Ok(ev) => {
                let series = matrix(&ev.value)?;
                for i in part {
                    out[i] = Some(Evaluated {
                        value: QueryValue::Matrix(extract(series, fresh_from[i], splits[i].end)),
                        warnings: ev.warnings.clone(),
                        infos: ev.infos.clone(),
                        loaded: if i == first { ev.loaded } else { 0 },
                    });
                }
            }
            Err(e) if part.len() > 1 && over_size_limit(&e) => {
                let mid = first + part.len() / 2;
                pending.push(mid..part.end);
                pending.push(first..mid);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Refusals for the size of a query (samples, a source's limits, the
/// tenant's limits), which its splits on their own may stay under.
fn over_size_limit(e: &ServiceError) -> bool {
    use crate::fanout::FanoutError;
    match e {
        ServiceError::Query(strata_promql::Error::TooManySamples(_)) => true,
        ServiceError::Fanout(FanoutError::TooManySamples | FanoutError::SourceLimit(_)) => true,
        ServiceError::Limit(_) => true,
        ServiceError::Downstream { status: 422, message, .. } => message.contains("too many samples"),
        _ => false,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

struct SplitContext<'a> {
    fe: &'a QueryFrontend,
    eval: &'a dyn SplitEvaluator,
    lookback_ms: i64,
    /// Evaluations of one query at once (runs, or the splits of a run
    /// over a size limit): at most [`SPLIT_PARALLELISM`].
    running: &'a tokio::sync::Semaphore,
}

struct Split<'a> {
    tenant: &'a str,
    text: &'a str,
    key_extra: &'a str,
    expr: &'a Expr,
    step: i64,
    start: i64,
    end: i64,
}

impl Split<'_> {
    fn key(&self, ctx: &SplitContext) -> String {
        let split_ms = ctx.fe.split_ms;
        let window = if split_ms > 0 { self.start.div_euclid(split_ms) } else { 0 };
        let mut ctx_hash = ring::digest::Context::new(&ring::digest::SHA256);
        ctx_hash.update(FORMAT);
        for part in [self.tenant.as_bytes(), self.text.as_bytes(), self.key_extra.as_bytes()] {
            ctx_hash.update(&(part.len() as u64).to_le_bytes());
            ctx_hash.update(part);
        }
        for n in [self.step, self.start.rem_euclid(self.step), ctx.lookback_ms, split_ms, window] {
            ctx_hash.update(&n.to_le_bytes());
        }
        format!("strata-rc-{}", hex::encode(ctx_hash.finish()))
    }

    /// The query over the steps `from..=to` (of this split and maybe the
    /// ones after it).
    async fn evaluate_to(
        &self,
        ctx: &SplitContext<'_>,
        from: i64,
        to: i64,
        deadline: Instant,
    ) -> Result<Evaluated, ServiceError> {
        let _slot = ctx.running.acquire().await.map_err(|e| ServiceError::Internal(e.to_string()))?;
        ctx.fe.evaluations.inc();
        ctx.eval.evaluate(self.tenant, self.expr, from, to, self.step, deadline).await
    }

    /// The last step `c` in `[self.start, self.end]` such that the steps up
    /// to `c` read no data after `until`; `None` if there is none.
    fn cacheable_end(&self, lookback: i64, until: i64) -> Option<i64> {
        let reads_until = |a: i64, b: i64| {
            strata_promql::selections(self.expr, a, b, lookback).iter().map(|s| s.max_t).max().unwrap_or(i64::MIN)
        };
        let whole = reads_until(self.start, self.end);
        if whole <= until {
            return Some(self.end);
        }
        let lead = whole - self.end;
        let c = until.checked_sub(lead)?;
        if c < self.start {
            return None;
        }
        let c = self.start + (c - self.start) / self.step * self.step;
        (reads_until(self.start, c) <= until).then_some(c)
    }

    /// The split's cache extent, if any covers its start.
    async fn cached(&self, ctx: &SplitContext<'_>) -> Option<Extent> {
        let cache = ctx.fe.cache.as_ref()?;
        let bytes = cache.get(&self.key(ctx)).await?;
        match Extent::decode(&bytes) {
            Ok(x) if x.step == self.step && x.start <= self.start && x.end + self.step >= self.start => Some(x),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "results cache entry unreadable; evaluating");
                None
            }
        }
    }

    /// The split's answer from its cache extent (`cached`) and its steps
    /// after it (`fresh`, evaluated); the extent then grows to what may be
    /// cached.
    async fn combine(
        &self,
        ctx: &SplitContext<'_>,
        until: i64,
        cached: Option<Extent>,
        fresh: Option<Evaluated>,
    ) -> Result<Evaluated, ServiceError> {
        let fresh_from = cached.as_ref().map_or(self.start, |x| x.end + self.step).max(self.start);
        let mut parts = Vec::new();
        if let Some(x) = &cached {
            parts.push(Evaluated {
                value: QueryValue::Matrix(extract(&x.series, self.start, self.end.min(x.end))),
                warnings: Vec::new(),
                infos: x.infos.clone(),
                loaded: 0,
            });
        }
        if let Some(f) = fresh {
            // Store what the fresh part adds, up to what may be cached.
            let series = matrix(&f.value)?;
            if let Some(cache) = &ctx.fe.cache
                && f.warnings.is_empty()
                && let Some(c) = self.cacheable_end(ctx.lookback_ms, until).filter(|&c| c >= fresh_from)
            {
                let mut grown = cached.unwrap_or(Extent {
                    start: self.start,
                    end: self.start,
                    step: self.step,
                    infos: Vec::new(),
                    series: Vec::new(),
                });
                grown.series = merge_series([grown.series, extract(series, fresh_from, c)]);
                grown.infos.extend(f.infos.iter().cloned());
                grown.infos.sort();
                grown.infos.dedup();
                grown.end = c;
                // A long split of many series can be far over the item
                // size: check before encoding a copy of it.
                if cache.accepts(grown.encoded_len()) {
                    cache.put(&self.key(ctx), grown.encode()).await;
                }
            }
            parts.push(f);
        }
        Ok(merge(parts))
    }
}

fn matrix(v: &QueryValue) -> Result<&[Series], ServiceError> {
    match v {
        QueryValue::Matrix(m) => Ok(m),
        other => Err(ServiceError::Internal(format!("a range query gave a {} result", other.result_type()))),
    }
}

/// The samples of `series` at `[from, to]`; series left empty are dropped.
fn extract(series: &[Series], from: i64, to: i64) -> Vec<Series> {
    series
        .iter()
        .filter_map(|s| {
            let in_range = |t: i64| t >= from && t <= to;
            let samples: Vec<(i64, f64)> = s.samples.iter().filter(|(t, _)| in_range(*t)).copied().collect();
            let histograms: Vec<(i64, Arc<FloatHistogram>)> =
                s.histograms.iter().filter(|(t, _)| in_range(*t)).cloned().collect();
            (!samples.is_empty() || !histograms.is_empty()).then(|| Series {
                labels: s.labels.clone(),
                samples,
                histograms,
            })
        })
        .collect()
}

/// Series of consecutive time ranges joined by label set, in label order
/// (as the engine orders a matrix).
fn merge_series<I: IntoIterator<Item = Vec<Series>>>(parts: I) -> Vec<Series> {
    let mut by_labels: BTreeMap<Labels, Series> = BTreeMap::new();
    for part in parts {
        for s in part {
            match by_labels.get_mut(&s.labels) {
                Some(have) => {
                    have.samples.extend(s.samples);
                    have.histograms.extend(s.histograms);
                }
                None => {
                    by_labels.insert(s.labels.clone(), s);
                }
            }
        }
    }
    by_labels.into_values().collect()
}

/// The answers of consecutive splits as one answer.
fn merge(parts: Vec<Evaluated>) -> Evaluated {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_else(|| unreachable!());
    }
    let (mut warnings, mut infos, mut series, mut loaded) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for p in parts {
        loaded += p.loaded;
        warnings.extend(p.warnings);
        infos.extend(p.infos);
        if let QueryValue::Matrix(m) = p.value {
            series.push(m);
        }
    }
    warnings.sort();
    warnings.dedup();
    infos.sort();
    infos.dedup();
    Evaluated { value: QueryValue::Matrix(merge_series(series)), warnings, infos, loaded }
}

/// A cached run of steps `[start, end]` of one split.
#[derive(Debug, Clone, PartialEq)]
struct Extent {
    start: i64,
    end: i64,
    step: i64,
    infos: Vec<String>,
    series: Vec<Series>,
}

#[derive(Debug, thiserror::Error)]
#[error("cached extent: {0}")]
struct DecodeError(&'static str);

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| DecodeError("truncated"))?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_le_bytes(b.try_into().map_err(|_| DecodeError("truncated"))?))
    }
    /// A count of items of at least `min_size` bytes each, checked against
    /// what is left before anything is allocated for them.
    fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.i32()? as u32 as usize;
        if n.saturating_mul(min_size) > self.0.len() {
            return Err(DecodeError("count larger than the data"));
        }
        Ok(n)
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.count(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| DecodeError("invalid UTF-8"))
    }
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_count(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_buckets(out: &mut Vec<u8>, b: &BTreeMap<i32, f64>) {
    put_count(out, b.len());
    for (i, v) in b {
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
}

fn read_buckets(r: &mut Reader) -> Result<BTreeMap<i32, f64>, DecodeError> {
    let n = r.count(12)?;
    (0..n).map(|_| Ok((r.i32()?, r.f64()?))).collect()
}

fn reset_hint_code(h: strata_promql::histogram::ResetHint) -> u8 {
    use strata_promql::histogram::ResetHint::*;
    match h {
        Unknown => 0,
        CounterReset => 1,
        NotCounterReset => 2,
        Gauge => 3,
    }
}

impl Extent {
    /// The length of [`Extent::encode`]'s output, without encoding.
    fn encoded_len(&self) -> usize {
        let strs = |v: &mut usize, s: &str| *v += 4 + s.len();
        let mut n = FORMAT.len() + 24 + 4;
        for i in &self.infos {
            strs(&mut n, i);
        }
        n += 4;
        for s in &self.series {
            n += 4;
            for (k, v) in s.labels.iter() {
                strs(&mut n, k);
                strs(&mut n, v);
            }
            n += 4 + s.samples.len() * 16 + 4;
            for (_, h) in &s.histograms {
                n += 8 + 4 + 32 + 4 + h.positive.len() * 12 + 4 + h.negative.len() * 12;
                n += 4 + h.custom_values.len() * 8 + 1;
            }
        }
        n
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.series.iter().map(|s| 64 + s.samples.len() * 16).sum::<usize>());
        out.extend_from_slice(FORMAT);
        for n in [self.start, self.end, self.step] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        put_count(&mut out, self.infos.len());
        for i in &self.infos {
            put_str(&mut out, i);
        }
        put_count(&mut out, self.series.len());
        for s in &self.series {
            let pairs: Vec<(&str, &str)> = s.labels.iter().collect();
            put_count(&mut out, pairs.len());
            for (n, v) in pairs {
                put_str(&mut out, n);
                put_str(&mut out, v);
            }
            put_count(&mut out, s.samples.len());
            for (t, v) in &s.samples {
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            put_count(&mut out, s.histograms.len());
            for (t, h) in &s.histograms {
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&h.schema.to_le_bytes());
                for f in [h.zero_threshold, h.zero_count, h.count, h.sum] {
                    out.extend_from_slice(&f.to_bits().to_le_bytes());
                }
                put_buckets(&mut out, &h.positive);
                put_buckets(&mut out, &h.negative);
                put_count(&mut out, h.custom_values.len());
                for f in &h.custom_values {
                    out.extend_from_slice(&f.to_bits().to_le_bytes());
                }
                out.push(reset_hint_code(h.reset_hint));
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Extent, DecodeError> {
        use strata_promql::histogram::ResetHint;
        let mut r = Reader(bytes);
        if r.take(4)? != FORMAT {
            return Err(DecodeError("unknown format"));
        }
        let (start, end, step) = (r.i64()?, r.i64()?, r.i64()?);
        let n = r.count(4)?;
        let infos = (0..n).map(|_| r.str()).collect::<Result<Vec<_>, _>>()?;
        let n = r.count(12)?;
        let mut series = Vec::with_capacity(n);
        for _ in 0..n {
            let pairs = r.count(8)?;
            let pairs = (0..pairs).map(|_| Ok((r.str()?, r.str()?))).collect::<Result<Vec<_>, DecodeError>>()?;
            let ns = r.count(16)?;
            let samples = (0..ns).map(|_| Ok((r.i64()?, r.f64()?))).collect::<Result<Vec<_>, DecodeError>>()?;
            let nh = r.count(57)?;
            let mut histograms = Vec::with_capacity(nh);
            for _ in 0..nh {
                let t = r.i64()?;
                let schema = r.i32()?;
                let (zero_threshold, zero_count, count, sum) = (r.f64()?, r.f64()?, r.f64()?, r.f64()?);
                let positive = read_buckets(&mut r)?;
                let negative = read_buckets(&mut r)?;
                let nc = r.count(8)?;
                let custom_values = (0..nc).map(|_| r.f64()).collect::<Result<Vec<_>, _>>()?;
                let reset_hint = match r.u8()? {
                    0 => ResetHint::Unknown,
                    1 => ResetHint::CounterReset,
                    2 => ResetHint::NotCounterReset,
                    3 => ResetHint::Gauge,
                    _ => return Err(DecodeError("unknown reset hint")),
                };
                let h = FloatHistogram {
                    schema,
                    zero_threshold,
                    zero_count,
                    count,
                    sum,
                    positive,
                    negative,
                    custom_values,
                    reset_hint,
                };
                histograms.push((t, Arc::new(h)));
            }
            series.push(Series { labels: Labels::new(pairs), samples, histograms });
        }
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Extent { start, end, step, infos, series })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_consecutive_splits_run_together_up_to_the_limit() {
        let expr = strata_promql::parse("up").unwrap();
        let split = |start: i64| Split {
            tenant: "t",
            text: "up",
            key_extra: "",
            expr: &expr,
            step: 10,
            start,
            end: start + 90,
        };
        let splits: Vec<Split> = (0..7).map(|i| split(i * 100)).collect();
        // Nothing cached: runs of at most 3.
        let cold: Vec<i64> = splits.iter().map(|s| s.start).collect();
        assert_eq!(evaluation_runs(&splits, &cold, 3), vec![0..3, 3..6, 6..7]);
        // Split 1 all cached, split 3 cached up to step 320, split 5 cached
        // up to step 510: 0 alone, 1 nothing, 2 alone (3 starts after its
        // start), 3 and 4 together, 5 and 6 together.
        let mut from = cold.clone();
        from[1] = splits[1].end + 10;
        from[3] = 330;
        from[5] = 520;
        assert_eq!(evaluation_runs(&splits, &from, 8), vec![0..1, 1..2, 2..3, 3..5, 5..7]);
        // Everything cached: nothing joins.
        let warm: Vec<i64> = splits.iter().map(|s| s.end + 10).collect();
        assert_eq!(evaluation_runs(&splits, &warm, 8), (0..7).map(|i| i..i + 1).collect::<Vec<_>>());
    }

    #[test]
    fn splits_cut_at_interval_multiples_and_keep_every_step() {
        let day = 86_400_000;
        // 3 days at a 1h step starting at 06:00 of day 0.
        let (start, end, step) = (6 * 3_600_000, 3 * day + 6 * 3_600_000, 3_600_000);
        let splits = split_steps(start, end, step, day);
        assert_eq!(splits.len(), 4);
        assert_eq!(splits[0], (start, day - step));
        assert_eq!(splits[1], (day, 2 * day - step));
        assert_eq!(splits[3], (3 * day, end));
        let steps: Vec<i64> =
            splits.iter().flat_map(|&(s, e)| (0..=(e - s) / step).map(move |k| s + k * step)).collect();
        let want: Vec<i64> = (0..=(end - start) / step).map(|k| start + k * step).collect();
        assert_eq!(steps, want);
        // Unaligned steps: a split starts at its first step past the boundary.
        let splits = split_steps(7, 2 * day + 7, 7 * 60_000, day);
        assert!(splits.windows(2).all(|w| w[1].0 == w[0].1 + 7 * 60_000));
        assert!(splits.iter().all(|&(s, e)| s.div_euclid(day) == e.div_euclid(day)));
        // A step longer than the interval: one step per split.
        assert_eq!(split_steps(0, 4 * day, 2 * day, day), vec![(0, 0), (2 * day, 2 * day), (4 * day, 4 * day)]);
        assert_eq!(split_steps(5, 10, 1, 0), vec![(5, 10)]);
    }

    #[test]
    fn extents_round_trip_bit_exact_and_refuse_garbage() {
        let mut positive = BTreeMap::new();
        positive.insert(-2, 1.5);
        positive.insert(3, 7.0);
        let h = FloatHistogram {
            schema: 1,
            zero_threshold: 0.001,
            zero_count: 2.0,
            count: 10.5,
            sum: -3.25,
            positive,
            negative: BTreeMap::new(),
            custom_values: vec![0.1, 1.0],
            reset_hint: strata_promql::histogram::ResetHint::Gauge,
        };
        let x = Extent {
            start: 1000,
            end: 61_000,
            step: 15_000,
            infos: vec!["PromQL info: metric might not be a counter".into()],
            series: vec![
                Series {
                    labels: Labels::new(vec![("__name__".into(), "up".into()), ("job".into(), "a\u{e9}".into())]),
                    samples: vec![(1000, f64::NAN), (16_000, -0.0), (31_000, f64::INFINITY)],
                    histograms: vec![(46_000, Arc::new(h))],
                },
                Series { labels: Labels::default(), samples: vec![(1000, 1.0)], histograms: Vec::new() },
            ],
        };
        let bytes = x.encode();
        assert_eq!(x.encoded_len(), bytes.len());
        let back = Extent::decode(&bytes).unwrap();
        assert_eq!(back.encode(), bytes, "bit-exact (NaN and -0 included)");
        assert_eq!(back.series[0].histograms, x.series[0].histograms);
        for cut in [0, 3, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(Extent::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[28..32].copy_from_slice(&u32::MAX.to_le_bytes()); // infos count
        assert!(Extent::decode(&huge).is_err());
    }

    #[test]
    fn merging_splits_equals_the_whole() {
        let s = |name: &str, pts: &[(i64, f64)]| Series {
            labels: Labels::new(vec![("__name__".into(), name.into())]),
            samples: pts.to_vec(),
            histograms: Vec::new(),
        };
        let whole = vec![s("a", &[(1, 1.0), (2, 2.0), (3, 3.0)]), s("b", &[(3, 9.0)]), s("c", &[(1, 5.0)])];
        let parts = vec![extract(&whole, 1, 1), extract(&whole, 2, 2), extract(&whole, 3, 3)];
        assert_eq!(merge_series(parts), whole);
    }
}
