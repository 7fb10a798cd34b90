//! Aggregation push-down on the store gateway: `sum by (…) (rate(x[5m]))`
//! evaluated next to the blocks, answering one value per group and step
//! instead of every raw sample (see `strata_promql::pushdown`).
//!
//! Consecutive blocks form groups (by the rows their reads give, about
//! two groups per core and at most [`SLICE_SAMPLES`] rows each), and
//! the steps are split into slices at the boundaries of groups: a slice
//! holds the steps whose data windows end in one group. It reads the blocks
//! its windows overlap (its own group's and, for the first steps, the tail
//! of the previous one); each block is decoded once and shared by the
//! slices that need it (a series in one block of a slice is evaluated in
//! place, without a copy), and dropped when they are done. Slices are
//! evaluated on blocking threads while the next blocks decode, so a query
//! over many blocks uses every core.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use object_store::ObjectStore;
use strata_blocks::BlockIndex;
use strata_promql::pushdown;
use strata_promql::{Engine, EngineOptions, Expr, Labels, MemoryStorage, QueryValue, Series};
use strata_proto::prometheus::Label;
use strata_proto::store::{AggregateRequest, AggregateResponse, AggregatedSeries};

use crate::series_labels::BlockLabels;

/// One block's samples of the selected series, each shared by the slices
/// that read it (a slice's engine reads them in place), with the series'
/// labels (shared by every block of the series: the samples' own are empty).
type Decoded = Vec<(Arc<Labels>, Arc<Series>)>;
type DecodeFuture = Shared<BoxFuture<'static, Result<Arc<Decoded>, String>>>;

/// Most steps one request may ask for.
const MAX_STEPS: usize = 1_000_000;

/// Why a push-down request failed, mapped to gRPC codes the querier reads.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooManySamples(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

impl From<AggregateError> for tonic::Status {
    fn from(e: AggregateError) -> tonic::Status {
        match e {
            AggregateError::BadRequest(m) => tonic::Status::invalid_argument(m),
            AggregateError::TooManySamples(m) => tonic::Status::resource_exhausted(m),
            AggregateError::Timeout(m) => tonic::Status::deadline_exceeded(m),
            AggregateError::Internal(m) => tonic::Status::internal(m),
        }
    }
}

impl From<strata_promql::Error> for AggregateError {
    fn from(e: strata_promql::Error) -> Self {
        match e {
            strata_promql::Error::BadData(m) => AggregateError::BadRequest(m),
            e @ strata_promql::Error::TooManySamples(_) => AggregateError::TooManySamples(e.to_string()),
            e @ strata_promql::Error::Timeout(_) => AggregateError::Timeout(e.to_string()),
            e => AggregateError::Internal(e.to_string()),
        }
    }
}

/// Evaluates the pushed aggregation of `r` over `blocks` (all blocks of the
/// request's tenant).
pub async fn evaluate(
    store: Arc<dyn ObjectStore>,
    blocks: Vec<(Arc<BlockIndex>, BlockLabels)>,
    r: AggregateRequest,
) -> Result<AggregateResponse, AggregateError> {
    let expr = strata_promql::parse(&r.expr).map_err(|e| AggregateError::BadRequest(e.to_string()))?;
    let Expr::Aggregate(agg) = &expr else {
        return Err(AggregateError::BadRequest(format!("not an aggregation: {}", r.expr)));
    };
    if !pushdown::is_pushable(agg) {
        return Err(AggregateError::BadRequest(format!("aggregation cannot be pushed down: {}", r.expr)));
    }
    if r.end < r.start || r.step < 0 {
        return Err(AggregateError::BadRequest("invalid step range".into()));
    }
    let steps: Vec<i64> = if r.step == 0 {
        vec![r.start]
    } else {
        let n = ((r.end - r.start) / r.step) as usize + 1;
        if n > MAX_STEPS {
            return Err(AggregateError::BadRequest(format!("too many steps: {n} (at most {MAX_STEPS})")));
        }
        (0..n as i64).map(|i| r.start + i * r.step).collect()
    };
    let mut opts = EngineOptions::default();
    if r.lookback_delta_ms > 0 {
        opts.lookback_delta = Duration::from_millis(r.lookback_delta_ms as u64);
    }
    if r.max_samples > 0 {
        opts.max_samples = r.max_samples as usize;
    }
    if r.timeout_ms > 0 {
        opts.timeout = Duration::from_millis(r.timeout_ms as u64);
    }
    let deadline = std::time::Instant::now() + opts.timeout;
    let lookback = opts.lookback_delta.as_millis() as i64;
    let (before, after) = pushdown::data_window(agg, lookback);
    // The selector's matchers, without the reserved ones of a downsampled
    // read (its view applies to every block read).
    let mut view = None;
    let mut matcher_sets: Vec<Vec<strata_promql::Matcher>> = Vec::new();
    for sel in strata_promql::selections(&expr, 0, 0, lookback) {
        let (own, v) = strata_promql::split_view(sel.matchers).map_err(AggregateError::BadRequest)?;
        if matcher_sets.is_empty() {
            view = v;
        } else if v != view {
            return Err(AggregateError::BadRequest("selectors of one aggregation read different views".into()));
        }
        matcher_sets.push(own);
    }
    // Every series read is in `view`: evaluate without the reserved
    // matchers, over series without tags (no copy in the engine's storage).
    let expr = if view.is_some() { strata_promql::downsample::without_views(&expr) } else { expr };
    let (data_min, data_max) = (steps[0] - before, steps[steps.len() - 1] - after);
    let (blocks, labels_of): (Vec<Arc<BlockIndex>>, HashMap<usize, BlockLabels>) = blocks
        .into_iter()
        .filter(|(b, _)| b.meta.min_time <= data_max && b.meta.max_time > data_min)
        .map(|(b, labels)| (b.clone(), (Arc::as_ptr(&b) as usize, labels)))
        .unzip();
    let sources = strata_blocks::choose_sources(blocks, view);
    let hidden: Vec<Vec<(i64, i64)>> = sources.iter().map(|s| s.hidden.clone()).collect();
    let blocks: Vec<Arc<BlockIndex>> = sources.into_iter().map(|s| s.block).collect();
    let labels: Vec<BlockLabels> = blocks
        .iter()
        .map(|b| labels_of.get(&(Arc::as_ptr(b) as usize)).cloned())
        .collect::<Option<_>>()
        .ok_or_else(|| AggregateError::Internal("a block chosen to read has no labels".into()))?;
    // How each block is read: a view at the resolution the query allows
    // is folded from finer data (raw samples, 5-minute windows) while
    // decoding, as a downsampled block would hold it — a few points per
    // window instead of every sample — where the block's points stand for
    // its series' time alone (no other block of its shard read overlaps
    // it, no coarser one hides part of it).
    let overlaps = overlapping(&blocks);
    let reads: Vec<Read> = blocks
        .iter()
        .zip(&overlaps)
        .zip(&hidden)
        .map(|((b, &overlaps), hidden)| match view {
            None => Read::View(None),
            Some(v) => {
                let own = b.meta.downsample.resolution;
                let foldable = v.max_resolution_ms > own && (own == 0 || v.max_resolution_ms % own == 0);
                if foldable && !overlaps && hidden.is_empty() {
                    Read::Folded(v.view, v.max_resolution_ms)
                } else {
                    Read::View(Some(v.view))
                }
            }
        })
        .collect();

    // The series each block reads.
    let refs: Vec<Vec<u32>> = blocks.iter().map(|b| selected_refs(b, &matcher_sets)).collect();
    // `max_samples` bounds what one slice holds at once (as Prometheus'
    // limit bounds the samples in memory at once). Refused before reading
    // anything when a slice's blocks certainly hold more.
    let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    let weights: Vec<u64> = blocks.iter().zip(&refs).zip(&reads).map(|((b, refs), read)| read.rows(b, refs)).collect();
    let groups = slice_groups(&weights, parallel);
    if certain_samples(&blocks, &hidden, &reads, &refs, &groups, (data_min, data_max)) > opts.max_samples as u64 {
        return Err(AggregateError::TooManySamples(
            strata_promql::Error::TooManySamples("query execution").to_string(),
        ));
    }

    // Each block decodes once, when the first slice that needs it asks.
    let decodes: Vec<DecodeFuture> = blocks
        .iter()
        .zip(labels)
        .zip(hidden)
        .zip(refs)
        .zip(reads)
        .map(|((((b, labels), hidden), refs), read)| {
            let job = BlockRead {
                store: store.clone(),
                block: b.clone(),
                labels,
                refs,
                // What the engine selects (windows are left-open): an
                // hourly panel's blocks are read from one millisecond after
                // an hour, so a raw block cut there folds its hourly rollup.
                range: (data_min + 1, data_max),
                read,
                hidden,
            };
            async move {
                tokio::spawn(job.decode(DECODE_PART_ROWS))
                    .await
                    .map_err(|e| e.to_string())?
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            }
            .boxed()
            .shared()
        })
        .collect();

    // Slices of consecutive steps whose window ends in the same group of
    // blocks.
    let mut slices: Vec<(usize, usize, Vec<DecodeFuture>)> = Vec::new();
    let block_of = |t: i64| blocks.iter().rposition(|b| b.meta.min_time <= t - after).map(|i| groups[i]);
    let mut first = 0;
    while first < steps.len() {
        let key = block_of(steps[first]);
        let mut last = first;
        while last + 1 < steps.len() && block_of(steps[last + 1]) == key {
            last += 1;
        }
        let (lo, hi) = (steps[first] - before, steps[last] - after);
        let needed = blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.meta.min_time <= hi && b.meta.max_time > lo)
            .map(|(i, _)| decodes[i].clone())
            .collect();
        slices.push((first, last, needed));
        first = last + 1;
    }
    drop(decodes);

    let step = r.step;
    type SliceFuture = BoxFuture<'static, Result<(usize, SliceResult), AggregateError>>;
    let mut evals: Vec<SliceFuture> = Vec::with_capacity(slices.len());
    for (first, last, needed) in slices {
        let (expr, opts, steps_slice) = (expr.clone(), opts.clone(), steps[first..=last].to_vec());
        let fut = async move {
            // All of the slice's blocks decode at once (in time order).
            let parts = futures::future::try_join_all(needed).await.map_err(AggregateError::Internal)?;
            // Exactly what the engine selects (windows are left-open), so
            // its storage hands the series over without copying them again.
            let (lo, hi) = (steps_slice[0] - before + 1, steps_slice[steps_slice.len() - 1] - after);
            tokio::task::spawn_blocking(move || eval_slice(&expr, opts, deadline, &parts, lo, hi, &steps_slice, step))
                .await
                .map_err(|e| AggregateError::Internal(e.to_string()))?
                .map(|res| (first, res))
        }
        .boxed();
        evals.push(fut);
    }
    let mut results = futures::stream::iter(evals).buffered(parallel);
    let mut out: Vec<AggregatedSeries> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let (mut warnings, mut infos) = (Vec::new(), Vec::new());
    let mut loaded = 0u64;
    while let Some(res) = results.next().await {
        let (first, slice) = res?;
        loaded += slice.loaded;
        if slice.loaded > opts.max_samples as u64 {
            return Err(AggregateError::TooManySamples(
                strata_promql::Error::TooManySamples("query execution").to_string(),
            ));
        }
        warnings.extend(slice.warnings);
        infos.extend(slice.infos);
        for (labels, points) in slice.series {
            let i = *index.entry(labels.clone()).or_insert_with(|| {
                out.push(AggregatedSeries {
                    labels: labels.0.iter().map(|(n, v)| Label { name: n.clone(), value: v.clone() }).collect(),
                    steps: Vec::new(),
                    values: Vec::new(),
                });
                out.len() - 1
            });
            for (k, v) in points {
                out[i].steps.push((first + k) as u32);
                out[i].values.push(v);
            }
        }
    }
    warnings.sort();
    warnings.dedup();
    infos.sort();
    infos.dedup();
    Ok(AggregateResponse { series: out, warnings, infos, samples_loaded: loaded })
}

/// Rows (samples, windows) a group of blocks' reads may give together:
/// consecutive blocks are grouped up to this many, a larger block alone.
const SLICE_SAMPLES: u64 = 8_000_000;

/// Rows below which a group is not split further for parallelism.
const MIN_SLICE_ROWS: u64 = 500_000;

/// The group of each block (in time order) from the rows its read gives
/// (`rows`): consecutive blocks giving together about a `2 × parallel`th
/// of all rows — at least [`MIN_SLICE_ROWS`], at most [`SLICE_SAMPLES`].
/// A slice evaluates the steps whose window ends in one group, so the
/// costs per series and slice (merging the blocks' series, building the
/// engine's storage, label sets) are paid once per group, not once per
/// block (a day downsampled to 1 h holds 24 windows per series: 30 such
/// days make a few slices, not 30), while every core has slices to
/// evaluate (the 20 one-hour days of a 30-day panel in one slice took one
/// core for two thirds of the evaluation while the other idled).
fn slice_groups(rows: &[u64], parallel: usize) -> Vec<usize> {
    let total: u64 = rows.iter().sum();
    let target = (total / (2 * parallel.max(1) as u64)).clamp(MIN_SLICE_ROWS, SLICE_SAMPLES);
    let mut out = Vec::with_capacity(rows.len());
    let (mut group, mut held) = (0usize, 0u64);
    for (i, &n) in rows.iter().enumerate() {
        if i > 0 && held.saturating_add(n) > target {
            group += 1;
            held = 0;
        }
        held = held.saturating_add(n);
        out.push(group);
    }
    out
}

/// The block's series any of `matcher_sets` selects (ascending refs).
fn selected_refs(b: &BlockIndex, matcher_sets: &[Vec<strata_promql::Matcher>]) -> Vec<u32> {
    b.labels
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            matcher_sets.iter().any(|ms| ms.iter().all(|m| m.is_match(l.get(&m.name).unwrap_or_default())))
        })
        .map(|(i, _)| i as u32)
        .collect()
}

/// A lower bound of the most samples one slice of an evaluation over
/// `data` (`(min, max]`) holds, from `blocks` sorted by `min_time` (as
/// `choose_sources` gives them): per group of blocks (`groups`), every row
/// of the selected series of its blocks read as stored (`reads`) and
/// wholly inside `data`, none of their time hidden by a coarser block and
/// overlapping no other block read (whose duplicates would be counted
/// once). A slice counts each sample of its window, and a window turns
/// each row read as stored into at least one point, so some slice counts
/// at least this many. A folded read counts nothing: it holds a few points
/// per window, not its rows (a raw day folded to hours, 24 points per
/// series instead of 5 760), and how many is known only once read (a
/// window of stale markers alone holds none).
fn certain_samples(
    blocks: &[Arc<BlockIndex>],
    hidden: &[Vec<(i64, i64)>],
    reads: &[Read],
    refs: &[Vec<u32>],
    groups: &[usize],
    data: (i64, i64),
) -> u64 {
    let overlaps = overlapping(blocks);
    let mut per_group: HashMap<usize, u64> = HashMap::new();
    for i in 0..blocks.len() {
        let m = &blocks[i].meta;
        let as_stored = matches!(reads[i], Read::View(_));
        if as_stored && hidden[i].is_empty() && m.min_time > data.0 && m.max_time - 1 <= data.1 && !overlaps[i] {
            *per_group.entry(groups[i]).or_default() += reads[i].rows(&blocks[i], &refs[i]);
        }
    }
    per_group.into_values().max().unwrap_or(0)
}

/// Whether each block (sorted by `min_time`, as `choose_sources` gives
/// them) overlaps another of its shard: an earlier one ends after it
/// starts or the next one starts before it ends (one pass per shard).
/// Blocks of different shards hold different series (the shards' series
/// are disjoint, as push-down's combining of shards assumes), so their
/// time ranges may overlap without any sample being held twice.
fn overlapping(blocks: &[Arc<BlockIndex>]) -> Vec<bool> {
    let mut by_shard: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, b) in blocks.iter().enumerate() {
        by_shard.entry(b.meta.strata.shard.as_str()).or_default().push(i);
    }
    let mut out = vec![false; blocks.len()];
    for shard in by_shard.into_values() {
        let mut earlier_end = i64::MIN;
        for (k, &i) in shard.iter().enumerate() {
            let m = &blocks[i].meta;
            let next_starts_inside = shard.get(k + 1).is_some_and(|&n| blocks[n].meta.min_time < m.max_time);
            out[i] = earlier_end > m.min_time || next_starts_inside;
            earlier_end = earlier_end.max(m.max_time);
        }
    }
    out
}

/// How [`decode`] reads a block.
#[derive(Clone, Copy)]
enum Read {
    /// As stored (raw samples, or a downsampled block's windows), in the
    /// view when there is one.
    View(Option<strata_model::downsample::View>),
    /// In the view, folded to windows of this resolution (ms).
    Folded(strata_model::downsample::View, i64),
}

impl Read {
    /// About the rows (samples, windows) reading `refs` of `b` this way
    /// gives: the stored rows, or a window per series and `resolution`
    /// of the block's time when folded.
    fn rows(&self, b: &BlockIndex, refs: &[u32]) -> u64 {
        match *self {
            Read::Folded(_, resolution) => {
                let span = (b.meta.max_time - b.meta.min_time).max(0) as u64;
                refs.len() as u64 * (span / resolution.max(1) as u64 + 1)
            }
            Read::View(_) => stored_rows(b, refs),
        }
    }
}

/// The rows `b` stores for its series `refs`.
fn stored_rows(b: &BlockIndex, refs: &[u32]) -> u64 {
    refs.iter().map(|&r| b.row_start[r as usize + 1] - b.row_start[r as usize]).sum()
}

/// Rows of a block's selected series above which its read is split into
/// parts of series decoded concurrently.
const DECODE_PART_ROWS: u64 = 2_000_000;

/// One block's read for an evaluation: its series `refs` (ascending)
/// within `range`, read as `read` says, without the points in `hidden`.
struct BlockRead {
    store: Arc<dyn ObjectStore>,
    block: Arc<BlockIndex>,
    /// The engine's labels of each of the block's series.
    labels: BlockLabels,
    refs: Vec<u32>,
    range: (i64, i64),
    read: Read,
    hidden: Vec<(i64, i64)>,
}

impl BlockRead {
    /// Decodes the read: one of more than `part_rows` rows in up to one
    /// part per core, concurrently (a day's raw block is a slice of its
    /// own, and one task decoding it kept one core busy while the other
    /// waited).
    async fn decode(self, part_rows: u64) -> Result<Decoded, strata_blocks::BlockError> {
        let rows = stored_rows(&self.block, &self.refs);
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) as u64;
        let parts = (rows / part_rows.max(1)).clamp(1, cores) as usize;
        if parts == 1 {
            return self.decode_part().await;
        }
        let tasks: Vec<_> = self
            .refs
            .chunks(self.refs.len().div_ceil(parts))
            .map(|part| {
                let part = BlockRead {
                    store: self.store.clone(),
                    block: self.block.clone(),
                    labels: self.labels.clone(),
                    refs: part.to_vec(),
                    range: self.range,
                    read: self.read,
                    hidden: self.hidden.clone(),
                };
                tokio::spawn(part.decode_part())
            })
            .collect();
        let mut out = Vec::new();
        for t in futures::future::join_all(tasks).await {
            out.extend(t.map_err(|e| strata_blocks::BlockError::Invalid(format!("decoding task: {e}")))??);
        }
        Ok(out)
    }

    async fn decode_part(self) -> Result<Decoded, strata_blocks::BlockError> {
        let BlockRead { store, block: b, labels, refs, range, read, hidden } = self;
        let samples = match read {
            Read::View(view) => b.read_view(store, &refs, range, view, &hidden).await?,
            Read::Folded(view, resolution) => b.read_folded(store, &refs, range, view, resolution).await?,
        };
        refs.iter()
            .zip(samples)
            .filter(|(_, s)| !s.is_empty())
            .map(|(&r, s)| {
                let labels = labels.get(r as usize).ok_or_else(|| {
                    strata_blocks::BlockError::Invalid(format!("series_ref {r} has no labels in block {}", b.meta.ulid))
                })?;
                Ok((labels.clone(), Arc::new(Series::floats(Labels::default(), s))))
            })
            .collect()
    }
}

struct SliceResult {
    /// Per output series, `(step index within the slice, value)`.
    series: Vec<(Labels, Vec<(usize, f64)>)>,
    warnings: Vec<String>,
    infos: Vec<String>,
    loaded: u64,
}

/// Evaluates `expr` at `steps` from the samples of `parts` (blocks in time
/// order) within `[lo, hi]`.
#[allow(clippy::too_many_arguments)]
fn eval_slice(
    expr: &Expr,
    mut opts: EngineOptions,
    deadline: std::time::Instant,
    parts: &[Arc<Decoded>],
    lo: i64,
    hi: i64,
    steps: &[i64],
    step: i64,
) -> Result<SliceResult, AggregateError> {
    // Per series (its blocks share one label set: merged by pointer), its
    // samples within `[lo, hi]` in each block (in time order).
    type Runs<'a> = Vec<(&'a Arc<Series>, std::ops::Range<usize>)>;
    let mut merged: HashMap<*const Labels, (&Arc<Labels>, Runs), foldhash::fast::RandomState> = HashMap::default();
    for part in parts {
        for (labels, s) in part.iter() {
            let a = s.samples.partition_point(|s| s.0 < lo);
            let b = s.samples.partition_point(|s| s.0 <= hi);
            if a < b {
                merged.entry(Arc::as_ptr(labels)).or_insert_with(|| (labels, Vec::new())).1.push((s, a..b));
            }
        }
    }
    // In label order, like the querier's own storage: sums then add up in
    // the same order whether pushed down or not.
    let mut merged: Vec<(&Arc<Labels>, Runs)> = merged.into_values().collect();
    merged.sort_unstable_by(|a, b| a.0.cmp(b.0));
    // Equal sets held twice (one forgotten by the gateway's table while a
    // query still held it, then loaded again) are one series.
    merged.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1.append(&mut later.1);
        }
        same
    });
    let mut storage = MemoryStorage::new();
    let mut loaded = 0u64;
    for (labels, runs) in merged {
        if let [(series, range)] = &runs[..] {
            // In one block: the engine selects exactly `[lo, hi]` of it,
            // in place.
            loaded += range.len() as u64;
            storage.add_shared_as(Arc::clone(labels), Arc::clone(series));
            continue;
        }
        // In several blocks: joined, in time order and without duplicates
        // where blocks overlap.
        let mut samples = Vec::with_capacity(runs.iter().map(|(_, r)| r.len()).sum());
        let mut sorted = true;
        for (series, range) in runs {
            let run = &series.samples[range];
            sorted &= samples.last().is_none_or(|l: &(i64, f64)| l.0 < run[0].0);
            samples.extend_from_slice(run);
        }
        if !sorted {
            samples.sort_by_key(|s| s.0);
            samples.dedup_by_key(|s| s.0);
        }
        loaded += samples.len() as u64;
        storage.add_shared_as(Arc::clone(labels), Arc::new(Series::floats(Labels::default(), samples)));
    }
    opts.timeout = deadline.saturating_duration_since(std::time::Instant::now());
    let engine = Engine::new(opts);
    let (first, last) = (steps[0], steps[steps.len() - 1]);
    let (value, annotations) = if step == 0 {
        engine.instant_annotated(&storage, expr, first)?
    } else {
        engine.range_annotated(&storage, expr, first, last, step)?
    };
    let series = match value {
        QueryValue::Matrix(m) => m
            .into_iter()
            .map(|s| {
                let pts = s.samples.into_iter().map(|(t, v)| (((t - first) / step.max(1)) as usize, v)).collect();
                (s.labels, pts)
            })
            .collect(),
        QueryValue::Vector(v) => v.into_iter().map(|s| (s.labels, vec![(0, s.v)])).collect(),
        other => return Err(AggregateError::Internal(format!("aggregation returned a {}", other.result_type()))),
    };
    Ok(SliceResult {
        series,
        warnings: annotations.warnings.into_iter().collect(),
        infos: annotations.infos.into_iter().collect(),
        loaded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use strata_blocks::SeriesData;
    use strata_model::downsample::View;

    const BLOCK: i64 = 20 * 60_000;

    /// The blocks with their series' labels, as the gateway holds them
    /// (one set per series, shared by its blocks).
    fn labelled(blocks: Vec<Arc<BlockIndex>>) -> Vec<(Arc<BlockIndex>, BlockLabels)> {
        let mut table = crate::series_labels::LabelTable::default();
        blocks.into_iter().map(|b| (b.clone(), table.intern(&b))).collect()
    }

    #[test]
    fn blocks_are_grouped_by_the_rows_their_reads_give_with_slices_for_every_core() {
        let groups_of = |rows: &[u64], parallel: usize| {
            let g = slice_groups(rows, parallel);
            let mut sums = vec![0u64; g.last().map_or(0, |&l| l + 1)];
            rows.iter().zip(&g).for_each(|(&n, &i)| sums[i] += n);
            assert!(g.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1), "consecutive: {g:?}");
            sums
        };
        // A 30-day panel read at 1 h: 30 days of 540 000 rows each (one-hour
        // blocks, and days folded to hours): four groups or more on two
        // cores, none above a quarter of the rows (plus a block).
        let month = vec![540_000u64; 30];
        let sums = groups_of(&month, 2);
        assert!(sums.len() >= 4, "{sums:?}");
        assert!(sums.iter().all(|&s| s <= 30 * 540_000 / 4 + 540_000), "{sums:?}");
        // More cores, more groups.
        assert!(groups_of(&month, 8).len() > sums.len());
        // A small read stays one group; a block above the cap is alone.
        assert_eq!(groups_of(&[1_000, 20_000, 300], 2), vec![21_300]);
        let sums = groups_of(&[3_000_000, 3_000_000, 20_000_000, 3_000_000, 3_000_000], 2);
        assert_eq!(sums, vec![6_000_000, 20_000_000, 6_000_000]);
    }

    /// Counters in three consecutive blocks (two of them overlapping a
    /// series' resets and a stale marker), pushed-down results against the
    /// engine over the same samples in memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushed_aggregations_equal_the_engine_over_all_samples() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let mut all: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
        for (k, env) in ["prod", "dev", "qa"].iter().enumerate() {
            for code in ["200", "500"] {
                let labels = Labels::new(vec![
                    ("__name__".into(), "requests_total".into()),
                    ("env".into(), env.to_string()),
                    ("code".into(), code.into()),
                ]);
                let mut v = 0.0;
                let samples: Vec<(i64, f64)> = (0..(3 * BLOCK / 15_000))
                    .map(|i| {
                        v = if i % 97 == 0 { 1.0 } else { v + (k + 1) as f64 * 0.5 };
                        let v =
                            if i == 150 && code == "500" { f64::from_bits(strata_promql::STALE_NAN_BITS) } else { v };
                        (i * 15_000 + 1, v)
                    })
                    .collect();
                all.push((labels, samples));
            }
        }
        let mut indexes = Vec::new();
        for b in 0..3 {
            let (lo, hi) = (b * BLOCK, (b + 1) * BLOCK);
            let series: Vec<SeriesData> = all
                .iter()
                .map(|(l, s)| SeriesData {
                    labels: strata_model::Labels::from_pairs(l.0.clone()),
                    samples: s.iter().copied().filter(|(t, _)| *t >= lo && *t < hi).collect(),
                })
                .collect();
            let meta = strata_blocks::upload_block(store.as_ref(), "anonymous", "s", lo, hi, &series).await.unwrap();
            indexes.push(Arc::new(BlockIndex::load(store.as_ref(), meta).await.unwrap()));
        }
        let mut mem = MemoryStorage::new();
        for (l, s) in &all {
            mem.add(Series::floats(l.clone(), s.clone()));
        }
        let engine = Engine::default();
        for q in [
            "sum by (env) (rate(requests_total[5m]))",
            "count by (code) (requests_total offset 1m)",
            "max(increase(requests_total{code=~\"5..\"}[2m]))",
            "min without (code) (requests_total)",
            "group by (env) (changes(requests_total[10m]))",
        ] {
            for (start, end, step) in
                [(300_000, 3 * BLOCK - 1, 60_000), (BLOCK - 30_000, BLOCK + 30_000, 15_000), (BLOCK + 7, BLOCK + 7, 0)]
            {
                let req = AggregateRequest {
                    tenant: "anonymous".into(),
                    expr: q.into(),
                    start,
                    end,
                    step,
                    ..Default::default()
                };
                let got = evaluate(store.clone(), labelled(indexes.clone()), req.clone()).await.unwrap();
                // Equal label sets not shared between blocks (each block's
                // own, as when the gateway's table forgot a set a query
                // still held and loaded it again) are still one series.
                let unshared: Vec<(Arc<BlockIndex>, BlockLabels)> =
                    indexes.iter().flat_map(|b| labelled(vec![b.clone()])).collect();
                assert_eq!(got, evaluate(store.clone(), unshared, req).await.unwrap(), "{q}: labels not shared");
                let expr = strata_promql::parse(q).unwrap();
                let want: Vec<(Labels, Vec<(i64, f64)>)> = if step == 0 {
                    match engine.instant(&mem, &expr, start).unwrap() {
                        QueryValue::Vector(v) => v.into_iter().map(|s| (s.labels, vec![(s.t, s.v)])).collect(),
                        other => panic!("{other:?}"),
                    }
                } else {
                    match engine.range(&mem, &expr, start, end, step).unwrap() {
                        QueryValue::Matrix(m) => m.into_iter().map(|s| (s.labels, s.samples)).collect(),
                        other => panic!("{other:?}"),
                    }
                };
                let mut got: Vec<(Labels, Vec<(i64, f64)>)> = got
                    .series
                    .into_iter()
                    .map(|s| {
                        let labels = Labels::new(s.labels.into_iter().map(|l| (l.name, l.value)).collect());
                        let pts = s.steps.iter().zip(s.values).map(|(&i, v)| (start + i as i64 * step, v)).collect();
                        (labels, pts)
                    })
                    .collect();
                got.sort_by(|a, b| a.0.cmp(&b.0));
                let mut want = want;
                want.sort_by(|a, b| a.0.cmp(&b.0));
                assert!(!want.is_empty(), "{q}: no data");
                assert_eq!(got, want, "{q} over [{start}, {end}] step {step}");
            }
        }
        // Not an aggregation that can be pushed: a clear error.
        let req = AggregateRequest {
            tenant: "anonymous".into(),
            expr: "avg(requests_total)".into(),
            start: 0,
            end: 0,
            ..Default::default()
        };
        let err = evaluate(store.clone(), labelled(indexes.clone()), req).await.unwrap_err();
        assert!(matches!(err, AggregateError::BadRequest(ref m) if m.contains("cannot be pushed down")), "{err}");
        // The sample limit holds.
        let req = AggregateRequest {
            tenant: "anonymous".into(),
            expr: "sum(rate(requests_total[5m]))".into(),
            start: 300_000,
            end: 3 * BLOCK - 1,
            step: 60_000,
            max_samples: 100,
            ..Default::default()
        };
        let err = evaluate(store.clone(), labelled(indexes.clone()), req).await.unwrap_err();
        assert!(matches!(err, AggregateError::TooManySamples(_)), "{err}");

        // Refused before reading: the middle block lies wholly inside the
        // data window (the others partly), so its rows are
        // certainly counted; a limit under them refuses without a read, a
        // limit at what the evaluation counts answers.
        let req = |max_samples: u64| AggregateRequest {
            tenant: "anonymous".into(),
            expr: "sum(rate(requests_total[5m]))".into(),
            start: BLOCK + 240_000,
            end: 3 * BLOCK - 60_001,
            step: 60_000,
            max_samples,
            ..Default::default()
        };
        let loaded = evaluate(store.clone(), labelled(indexes.clone()), req(0)).await.unwrap().samples_loaded;
        let expr = strata_promql::parse("sum(rate(requests_total[5m]))").unwrap();
        let Expr::Aggregate(agg) = &expr else { unreachable!() };
        let (before, after) = pushdown::data_window(agg, 300_000);
        let data = (BLOCK + 240_000 - before, 3 * BLOCK - 60_001 - after);
        let ms = vec![strata_promql::selections(&expr, 0, 0, 300_000)[0].matchers.clone()];
        let refs: Vec<Vec<u32>> = indexes.iter().map(|b| selected_refs(b, &ms)).collect();
        let as_stored = [Read::View(None); 4];
        let certain = certain_samples(&indexes, &[vec![], vec![], vec![]], &as_stored[..3], &refs, &[0, 1, 2], data);
        let middle = indexes[1].row_start.last().copied().unwrap();
        assert_eq!(certain, middle, "the middle block, whole; the others only partly inside");
        assert!(loaded >= certain, "{loaded} counted, {certain} certain");
        // A block overlapping another (here: the middle one twice) is not
        // certain: its duplicates count once.
        let twice = [indexes[0].clone(), indexes[1].clone(), indexes[1].clone(), indexes[2].clone()];
        let refs4 = [refs[0].clone(), refs[1].clone(), refs[1].clone(), refs[2].clone()];
        assert_eq!(
            certain_samples(&twice, &[vec![], vec![], vec![], vec![]], &as_stored, &refs4, &[0, 1, 1, 2], data),
            0
        );
        // Nor is a folded read: its points are a few per window, not its rows.
        let folded = [Read::View(None), Read::Folded(View::Counter, 3_600_000), Read::View(None)];
        assert_eq!(certain_samples(&indexes, &[vec![], vec![], vec![]], &folded, &refs, &[0, 1, 2], data), 0);
        // Fresh indexes reading through a cache that counts every read.
        let metrics = strata_blocks::RangeCacheMetrics::default();
        let cache = Arc::new(strata_blocks::RangeCache::new(64 << 20, metrics.clone()));
        let mut counted = Vec::new();
        for b in &indexes {
            let mut b = BlockIndex::load(store.as_ref(), b.meta.clone()).await.unwrap();
            b.cache = Some(cache.clone());
            counted.push(Arc::new(b));
        }
        let err = evaluate(store.clone(), labelled(counted.clone()), req(certain - 1)).await.unwrap_err();
        assert!(matches!(err, AggregateError::TooManySamples(_)), "{err}");
        assert_eq!(metrics.misses.get() + metrics.hits.get(), 0, "refused after reading blocks");
        evaluate(store.clone(), labelled(counted), req(loaded)).await.unwrap();
        assert!(metrics.misses.get() > 0);
    }

    /// A view read at a resolution from raw blocks folds them to that
    /// resolution while decoding: the same answers, bit for bit, as from
    /// the same data downsampled to it by the compactor, and the raw
    /// answers (the series live through every range); blocks overlapping
    /// another are read as they are, with the same answers.
    /// An output series' labels and its (step, value bits).
    type OutputSeries = (Vec<Label>, Vec<(u32, u64)>);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn views_folded_from_raw_blocks_answer_as_downsampled_blocks() {
        const HOUR: i64 = 3_600_000;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let mut all: Vec<SeriesData> = Vec::new();
        for (k, env) in ["prod", "dev", "qa"].iter().enumerate() {
            for code in ["200", "500"] {
                let labels = strata_model::Labels::from_pairs(vec![
                    ("__name__".into(), "requests_total".into()),
                    ("code".into(), code.into()),
                    ("env".into(), env.to_string()),
                ]);
                let mut v = 0.0;
                // Six hours every 15 s, on the hour: samples on the windows' ends.
                let samples = (0..(6 * HOUR / 15_000 + 1))
                    .map(|i| {
                        v = if i % 97 == 0 { 1.0 } else { v + (k + 1) as f64 * 0.5 };
                        let v =
                            if i == 150 && code == "500" { f64::from_bits(strata_promql::STALE_NAN_BITS) } else { v };
                        (i * 15_000, v)
                    })
                    .collect();
                all.push(SeriesData { labels, samples });
            }
        }
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        let load = |meta| {
            let store = store.clone();
            async move { Arc::new(BlockIndex::load(store.as_ref(), meta).await.unwrap()) }
        };
        // Raw 2 h blocks, and the same samples downsampled to 1 h in one block.
        let mut raw = Vec::new();
        for b in 0..4 {
            let (lo, hi) = (b * 2 * HOUR, (b + 1) * 2 * HOUR);
            let series: Vec<SeriesData> = all
                .iter()
                .map(|s| SeriesData {
                    labels: s.labels.clone(),
                    samples: s.samples.iter().copied().filter(|(t, _)| *t >= lo && *t < hi).collect(),
                })
                .collect();
            raw.push(
                load(strata_blocks::upload_block(store.as_ref(), "anonymous", "s", lo, hi, &series).await.unwrap())
                    .await,
            );
        }
        let names: std::collections::BTreeSet<String> = all[0].labels.iter().map(|(n, _)| n.to_string()).collect();
        let mut w =
            strata_blocks::BlockWriter::with_resolution(store.clone(), "anonymous", "s", "hour", &names, HOUR).unwrap();
        for s in &all {
            let mut windows = Vec::new();
            strata_blocks::windows_of_samples(&s.samples, HOUR, &mut windows);
            w.add_windows(&s.labels, &windows).await.unwrap();
        }
        let compaction = strata_blocks::Compaction { level: 2, sources: vec![] };
        let meta = w.finish((0, 8 * HOUR), compaction).await.unwrap();
        strata_blocks::publish_block(store.as_ref(), &meta).await.unwrap();
        let hour = vec![load(meta).await];
        // A read decoded in parts (one per core) is the read decoded whole.
        let refs: Vec<u32> = (0..all.len() as u32).collect();
        let raw_labels = crate::series_labels::LabelTable::default().intern(&raw[1]);
        for read in [Read::View(None), Read::View(Some(View::Counter)), Read::Folded(View::Counter, HOUR)] {
            let job = || BlockRead {
                store: store.clone(),
                block: raw[1].clone(),
                labels: raw_labels.clone(),
                refs: refs.clone(),
                range: (0, i64::MAX),
                read,
                hidden: vec![],
            };
            let (whole, parts) = (job().decode(u64::MAX), job().decode(1));
            let (whole, parts) = (whole.await.unwrap(), parts.await.unwrap());
            assert_eq!(whole.len(), all.len());
            assert!(whole.iter().zip(&parts).all(|(a, b)| Arc::ptr_eq(&a.0, &b.0) && a.1.samples == b.1.samples));
        }
        // The raw blocks once more, overlapping: read as they are.
        let overlapping: Vec<Arc<BlockIndex>> = raw.iter().chain(&raw).cloned().collect();
        let mut sorted = overlapping.clone();
        sorted.sort_by_key(|b| b.meta.min_time);
        assert!(super::overlapping(&sorted).iter().all(|o| *o));
        // A block of another shard over the same time holds other series:
        // it overlaps none of this shard's blocks.
        let staging = SeriesData {
            labels: strata_model::Labels::from_pairs(vec![
                ("__name__".into(), "requests_total".into()),
                ("env".into(), "staging".into()),
            ]),
            samples: vec![(HOUR, 1.0), (2 * HOUR, 2.0)],
        };
        let other =
            strata_blocks::upload_block(store.as_ref(), "anonymous", "s2", 0, 8 * HOUR, &[staging]).await.unwrap();
        let mixed: Vec<Arc<BlockIndex>> = std::iter::once(load(other).await).chain(raw.iter().cloned()).collect();
        assert_eq!(super::overlapping(&mixed), vec![false; 5]);

        let mut mem = MemoryStorage::new();
        for s in &all {
            mem.add(Series::floats(
                Labels(s.labels.iter().map(|(n, v)| (n.into(), v.into())).collect()),
                s.samples.clone(),
            ));
        }
        let run = |blocks: Vec<Arc<BlockIndex>>, q: &str| {
            let req = AggregateRequest {
                tenant: "anonymous".into(),
                expr: q.into(),
                start: HOUR,
                end: 6 * HOUR,
                step: HOUR,
                ..Default::default()
            };
            let store = store.clone();
            async move {
                let mut got: Vec<OutputSeries> = evaluate(store, labelled(blocks), req)
                    .await
                    .unwrap()
                    .series
                    .into_iter()
                    .map(|s| (s.labels, s.steps.into_iter().zip(s.values.iter().map(|v| v.to_bits())).collect()))
                    .collect();
                got.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
                got
            }
        };
        let engine = Engine::default();
        for (view, q, range) in [
            ("counter", "sum by (env) (rate(requests_total{V}[1h]))", HOUR),
            ("counter", "max by (code) (increase(requests_total{V}[2h]))", 2 * HOUR),
            ("sum", "sum by (env) (sum_over_time(requests_total{V}[1h]))", HOUR),
            ("count", "sum by (code) (sum_over_time(requests_total{V}[1h]))", HOUR),
            ("min", "min by (env) (min_over_time(requests_total{V}[1h]))", HOUR),
            ("max", "max (max_over_time(requests_total{V}[1h]))", HOUR),
        ] {
            let q = q.replace("{V}", &format!("{{__strata_resolution__=\"{HOUR}\",__strata_view__=\"{view}\"}}"));
            let folded = run(raw.clone(), &q).await;
            assert!(!folded.is_empty() && folded.iter().all(|s| s.1.len() >= 5), "{q}: {folded:?}");
            assert_eq!(folded, run(hour.clone(), &q).await, "{q}: folded raw blocks against the 1 h block");
            // Read as stored, and the raw answer, agree where the series
            // live through the whole range: where one starts inside it,
            // a rate's extrapolation over windows differs (docs/querier.md).
            let lived = |pts: &[(u32, u64)]| -> Vec<(u32, u64)> {
                pts.iter().copied().filter(|(i, _)| HOUR * (1 + *i as i64) - range >= 0).collect()
            };
            let stored = run(overlapping.clone(), &q).await;
            assert_eq!(folded.len(), stored.len(), "{q}");
            for (f, s) in folded.iter().zip(&stored) {
                assert_eq!((&f.0, lived(&f.1)), (&s.0, lived(&s.1)), "{q}: folded against read as stored");
            }
            // The raw answer (counts of the raw samples for the count view).
            if view == "counter" || view == "min" || view == "max" || view == "sum" {
                let expr = strata_promql::downsample::without_views(&strata_promql::parse(&q).unwrap());
                let QueryValue::Matrix(want) = engine.range(&mem, &expr, HOUR, 6 * HOUR, HOUR).unwrap() else {
                    panic!("{q}: not a matrix")
                };
                let want: Vec<Vec<f64>> = want
                    .into_iter()
                    .map(|s| s.samples.into_iter().filter(|(t, _)| t - range >= 0).map(|(_, v)| v).collect())
                    .collect();
                let got: Vec<Vec<f64>> =
                    folded.iter().map(|s| lived(&s.1).iter().map(|(_, b)| f64::from_bits(*b)).collect()).collect();
                assert_eq!(got.len(), want.len(), "{q}");
                for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                    assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{q}: {g} against raw {w}");
                }
            }
        }
        // The sample limit counts what a folded read holds (a few points
        // per window), not the rows it folds: a limit under the raw
        // blocks' rows but over their hours answers folded and refuses
        // the same blocks read as stored.
        let q = format!(
            "sum by (env) (rate(requests_total{{__strata_resolution__=\"{HOUR}\",__strata_view__=\"counter\"}}[1h]))"
        );
        let limited = |blocks: Vec<Arc<BlockIndex>>| {
            let req = AggregateRequest {
                tenant: "anonymous".into(),
                expr: q.clone(),
                start: HOUR,
                end: 6 * HOUR,
                step: HOUR,
                max_samples: 1_000,
                ..Default::default()
            };
            evaluate(store.clone(), labelled(blocks), req)
        };
        let rows = raw[1].row_start.last().copied().unwrap();
        assert!(rows > 1_000, "{rows} rows in a raw block");
        let folded = limited(raw.clone()).await.unwrap();
        assert!(folded.samples_loaded < 1_000 && !folded.series.is_empty(), "{}", folded.samples_loaded);
        let err = limited(overlapping.clone()).await.unwrap_err();
        assert!(matches!(err, AggregateError::TooManySamples(_)), "{err}");
    }
}
