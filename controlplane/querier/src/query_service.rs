//! The query service: what answering a PromQL query takes, apart from
//! HTTP. Admission (per-tenant and global concurrency), the tenant's
//! limits, planning (which aggregations the store gateways compute),
//! fetching (StoreAPI fan-out and push-down, concurrently), merging, and
//! evaluation off the async runtime. The Prometheus HTTP API
//! ([`crate::api`]) and the ruler both call it.

use std::collections::HashMap;
use std::time::Instant;
use tracing::Instrument as _;

use strata_promql::{Engine, Error as QueryError, Labels, MemoryStorage, QueryValue, Series};

use crate::QuerierState;
use crate::fanout::FanoutError;

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// PromQL: bad input, execution errors, limits, timeouts.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The sources (ingesters, store gateways).
    #[error(transparent)]
    Fanout(#[from] FanoutError),
    /// Over one of the tenant's limits (bad input for the caller).
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Internal(String),
    /// A querier behind `strata query-frontend` refused or failed the
    /// query: its HTTP status, Prometheus error type and message.
    #[error("{message}")]
    Downstream { status: u16, kind: &'static str, message: String },
}

/// A PromQL answer: the value, warnings (partial results from the sources
/// and PromQL warning annotations) and PromQL info annotations.
pub struct Evaluated {
    pub value: QueryValue,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
    /// Samples loaded from the sources (raw, and read for pushed-down aggregations).
    pub loaded: usize,
}

/// Fetches everything `expr` reads, then evaluates it off the async runtime.
pub async fn evaluate(
    state: &QuerierState,
    tenant: &str,
    expr: strata_promql::Expr,
    start: i64,
    end: i64,
    step: Option<i64>,
    deadline: Instant,
) -> Result<Evaluated, ServiceError> {
    let limits = state.overrides.current().query(tenant);
    let max_samples = state.max_samples_for(tenant);
    if let Some(max) = limits.max_length {
        // What the query reads: its range plus lookback, range selectors
        // and subqueries, offsets and @.
        let lookback = state.engine.options().lookback_delta.as_millis() as i64;
        let sels = strata_promql::selections(&expr, start, end, lookback);
        let (lo, hi) = sels.iter().fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s.min_t), hi.max(s.max_t)));
        if lo <= hi && (hi - lo) as u128 > max.as_millis() {
            return Err(ServiceError::Limit(format!(
                "the query reads {} of data, over the limit of tenant {tenant:?} (max_query_length {}, --limits.overrides-file)",
                humantime::format_duration(std::time::Duration::from_millis((hi - lo) as u64)),
                humantime::format_duration(max)
            )));
        }
    }
    let planned = {
        let _plan = tracing::info_span!("plan", pushed_down = tracing::field::Empty).entered();
        let planned = if state.pushdown { plan_push_down(state, &expr, start, end, step) } else { Vec::new() };
        tracing::Span::current().record("pushed_down", planned.len());
        planned
    };
    match evaluate_with(state, tenant, &expr, start, end, step, deadline, planned, max_samples).await {
        Err(EvalFailure::PushDown) => {
            // A store could not compute its part: read raw samples instead.
            let planned = Vec::new();
            match evaluate_with(state, tenant, &expr, start, end, step, deadline, planned, max_samples).await {
                Ok(v) => Ok(v),
                Err(EvalFailure::Service(e)) => Err(e),
                Err(EvalFailure::PushDown) => Err(ServiceError::Internal("push-down failed without push-down".into())),
            }
        }
        Err(EvalFailure::Service(e)) => Err(e),
        Ok(v) => Ok(v),
    }
}

enum EvalFailure {
    Service(ServiceError),
    /// An aggregation push-down failed for a reason other than the query's
    /// limits.
    PushDown,
}

impl<E: Into<ServiceError>> From<E> for EvalFailure {
    fn from(e: E) -> Self {
        EvalFailure::Service(e.into())
    }
}

/// Fetches the pushed-down aggregations of `planned` and the raw samples
/// everything else reads, concurrently, then evaluates off the async runtime.
#[allow(clippy::too_many_arguments)]
async fn evaluate_with(
    state: &QuerierState,
    tenant: &str,
    expr: &strata_promql::Expr,
    start: i64,
    end: i64,
    step: Option<i64>,
    deadline: Instant,
    planned: Vec<PlannedPushDown>,
    max_samples: usize,
) -> Result<Evaluated, EvalFailure> {
    let expr = expr.clone();
    let engine: Engine = state.engine.clone();
    let lookback = engine.options().lookback_delta.as_millis() as i64;
    let fetch_start = Instant::now();
    let remaining: HashMap<String, Vec<(i64, i64)>> =
        planned.iter().map(|p| (strata_promql::pushdown::key(&p.aggregation), p.remaining.clone())).collect();
    let sels = strata_promql::selections_pushed(&expr, start, end, lookback, &|a| {
        remaining.get(&strata_promql::pushdown::key(a)).cloned()
    });
    // Raw samples count against --query.max-samples as they stream in.
    let budget = crate::fanout::SampleBudget::new(max_samples);
    // The first failure (a refused push-down, a source over the sample
    // limit) ends the fetch: the other reads are dropped, not waited for.
    let fetches = sels.iter().map(|s| async {
        state.stores.select(tenant, &s.matchers, s.min_t, s.max_t, false, &budget).await.map_err(EvalFailure::from)
    });
    let (pushed, results) = tokio::time::timeout_at(
        deadline.into(),
        futures::future::try_join(
            run_push_down(state, tenant, planned, deadline, max_samples),
            futures::future::try_join_all(fetches),
        ),
    )
    .instrument(tracing::info_span!("fetch", selectors = sels.len()))
    .await
    .map_err(|_| ServiceError::Query(QueryError::Timeout("fetching series")))??;
    let mut warnings = Vec::new();
    let (mut loaded, mut held) = (0usize, 0usize);
    let mut storage = MemoryStorage::new();
    let mut infos = Vec::new();
    let merge_span = tracing::info_span!("merge", samples = tracing::field::Empty);
    merge_span.in_scope(|| -> Result<(), EvalFailure> {
        // Series of downsampled reads carry their view's reserved labels,
        // so views of one series stay apart.
        let reserved: Vec<Vec<(String, String)>> =
            sels.iter().map(|s| strata_promql::downsample::reserved_pairs(&s.matchers)).collect();
        if results.len() == 1 {
            // One selector: its series are already merged and unique.
            for (r, reserved) in results.into_iter().zip(&reserved) {
                warnings.extend(r.warnings);
                for mut s in r.data {
                    loaded += s.samples.len();
                    strata_promql::downsample::tag_view(&mut s.labels, reserved);
                    storage.add(s);
                }
            }
        } else {
            let mut merged: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
            for (r, reserved) in results.into_iter().zip(&reserved) {
                warnings.extend(r.warnings);
                for mut s in r.data {
                    strata_promql::downsample::tag_view(&mut s.labels, reserved);
                    loaded += s.samples.len();
                    match merged.get_mut(&s.labels) {
                        Some(existing) => crate::fanout::merge_samples(existing, s.samples),
                        None => {
                            merged.insert(s.labels, s.samples);
                        }
                    }
                }
            }
            for (labels, samples) in merged {
                storage.add(Series::floats(labels, samples));
            }
        }
        // Samples held here: the raw ones so far, plus one per pushed-down
        // value. What store gateways read for pushed-down aggregations is
        // reported (`loaded`) but bounded there, per slice they hold at
        // once, as Prometheus' limit bounds the samples in memory at once.
        held = loaded;
        for p in pushed {
            held += p.values.series.iter().map(|(_, v)| v.len()).sum::<usize>();
            loaded += p.loaded as usize;
            warnings.extend(p.warnings);
            infos.extend(p.infos);
            storage.add_pushed(&p.aggregation, p.values);
        }
        Ok(())
    })?;
    merge_span.record("samples", loaded);
    if held > max_samples {
        return Err(QueryError::TooManySamples("query execution").into());
    }
    warnings.sort();
    warnings.dedup();
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut opts = engine.options().clone();
    opts.timeout = remaining;
    opts.max_samples = max_samples;
    let engine = Engine::new(opts);
    let eval_start = Instant::now();
    let fetch_took = eval_start - fetch_start;
    let eval_span = tracing::info_span!("evaluate");
    let (value, annotations) = tokio::task::spawn_blocking(move || {
        let _in = eval_span.entered();
        match step {
            None => engine.instant_annotated(&storage, &expr, start),
            Some(step) => engine.range_annotated(&storage, &expr, start, end, step),
        }
    })
    .await
    .map_err(|e| ServiceError::Internal(e.to_string()))??;
    let eval_took = eval_start.elapsed();
    state.metrics.observe_query(fetch_took, eval_took, loaded);
    tracing::debug!(
        fetch_ms = fetch_took.as_millis() as u64,
        eval_ms = eval_took.as_millis() as u64,
        samples = loaded,
        "query"
    );
    warnings.extend(annotations.warnings);
    warnings.sort();
    warnings.dedup();
    infos.extend(annotations.infos);
    infos.sort();
    infos.dedup();
    Ok(Evaluated { value, warnings, infos, loaded })
}

/// An aggregation to push down: which steps, and what stays local.
struct PlannedPushDown {
    aggregation: strata_promql::AggregateExpr,
    text: String,
    /// Covered steps (one contiguous run of the query's steps).
    steps: Vec<i64>,
    step: i64,
    /// Step spans still evaluated here from raw samples.
    remaining: Vec<(i64, i64)>,
}

/// One aggregation computed by the store gateways at some of the query's
/// steps.
struct Pushed {
    aggregation: strata_promql::AggregateExpr,
    values: strata_promql::PushedAggregate,
    loaded: u64,
    warnings: Vec<String>,
    infos: Vec<String>,
}

/// Aggregation push-down: every pushable aggregation of `expr` is computed
/// by the store gateways for the steps whose data window lies entirely in
/// their blocks (and in no ingester's memory); the querier reads raw samples
/// only for the other steps.
fn plan_push_down(
    state: &QuerierState,
    expr: &strata_promql::Expr,
    start: i64,
    end: i64,
    step: Option<i64>,
) -> Vec<PlannedPushDown> {
    let mut out = Vec::new();
    let aggs = strata_promql::pushdown::pushable_aggregates(expr);
    if aggs.is_empty() {
        return out;
    }
    let Some(coverage) = state.stores.coverage() else {
        return out;
    };
    let step_ms = step.unwrap_or(0);
    let steps: Vec<i64> = match step {
        Some(s) if s > 0 => (0..=(end - start) / s).map(|i| start + i * s).collect(),
        _ => vec![start],
    };
    let lookback = state.engine.options().lookback_delta.as_millis() as i64;
    for a in aggs {
        let (before, after) = strata_promql::pushdown::data_window(a, lookback);
        let covered: Vec<i64> = steps.iter().copied().filter(|t| coverage.covers(t - before, t - after)).collect();
        let (Some(&first), Some(&last)) = (covered.first(), covered.last()) else {
            continue;
        };
        let Some(text) = strata_promql::pushdown::query_text(a) else {
            continue;
        };
        let mut remaining = Vec::new();
        if first > start {
            remaining.push((start, first - step_ms));
        }
        if last < end {
            remaining.push((last + step_ms, end));
        }
        out.push(PlannedPushDown { aggregation: a.clone(), text, steps: covered, step: step_ms, remaining });
    }
    out
}

/// Asks the store gateways for every planned aggregation. Failing for any
/// reason other than the query's own limits is [`EvalFailure::PushDown`].
async fn run_push_down(
    state: &QuerierState,
    tenant: &str,
    planned: Vec<PlannedPushDown>,
    deadline: Instant,
    max_samples: usize,
) -> Result<Vec<Pushed>, EvalFailure> {
    let opts = state.engine.options();
    let lookback = opts.lookback_delta.as_millis() as i64;
    let calls = planned.into_iter().map(|p| async move {
        let (first, last) = (p.steps[0], p.steps[p.steps.len() - 1]);
        let timeout = deadline.saturating_duration_since(Instant::now());
        let r = state.stores.aggregate(tenant, &p.text, first, last, p.step, lookback, max_samples, timeout).await;
        (p, r)
    });
    let mut out = Vec::new();
    let mut failed = false;
    for (p, r) in futures::future::join_all(calls).await {
        match r {
            Ok((parts, loaded, warnings, infos)) => {
                state.metrics.observe_pushdown(true);
                let series = strata_promql::pushdown::combine(&p.aggregation, parts);
                out.push(Pushed {
                    values: strata_promql::PushedAggregate { steps: p.steps, series },
                    aggregation: p.aggregation,
                    loaded,
                    warnings,
                    infos,
                });
            }
            Err(e @ (FanoutError::TooManySamples | FanoutError::Timeout | FanoutError::SourceLimit(_))) => {
                return Err(e.into());
            }
            Err(e) => {
                tracing::warn!(aggregation = %p.text, error = %e, "aggregation push-down failed; reading raw samples");
                state.metrics.observe_pushdown(false);
                failed = true;
            }
        }
    }
    if failed {
        return Err(EvalFailure::PushDown);
    }
    Ok(out)
}

/// A slot of the tenant (`max_concurrent_queries`), then one among
/// `--query.max-concurrency`, each waited for until `deadline` (then
/// Prometheus' 503 "query timed out in query queue").
pub async fn admit(
    state: &QuerierState,
    tenant: &str,
    deadline: Instant,
) -> Result<(Option<tokio::sync::OwnedSemaphorePermit>, crate::query_queue::Admitted), ServiceError> {
    let limit = state.overrides.current().query(tenant).max_concurrent;
    let own = state
        .tenant_queries
        .admit(tenant, limit, deadline)
        .await
        .map_err(|()| ServiceError::Query(QueryError::Timeout("query queue")))?;
    let global = state.queries.admit(deadline).await.ok_or(ServiceError::Query(QueryError::Timeout("query queue")))?;
    Ok((own, global))
}
