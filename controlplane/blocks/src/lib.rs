//! Strata's block format (DESIGN.md §6), written once per block range and
//! readable by anything that reads Parquet:
//!
//! * `<tenant>/<block_id>/series.parquet`: one row per series, `series_ref`
//!   (u32, dense, in label order), `__name__` and one dictionary-encoded
//!   column `l_<name>` per label name, sorted by `__name__` then labels;
//!   page statistics on; bloom filter on `__name__`.
//! * `<tenant>/<block_id>/samples.parquet`: one row per sample
//!   `(series_ref u32, timestamp i64, value f64)` sorted by (series_ref,
//!   timestamp); timestamps `DELTA_BINARY_PACKED`, values
//!   `BYTE_STREAM_SPLIT`, zstd; page statistics so a series range reads only
//!   its pages.
//! * `<tenant>/<block_id>/rollup-1h.parquet` (raw and 5-minute blocks
//!   written since session 26): the block's series folded into 1-hour
//!   windows, the `aggregates.parquet` schema of a downsampled block ([`ROLLUP_FILE`]);
//!   `series.parquet` then counts each series' windows in `rollup_windows`.
//!   A read that folds the block to a multiple of an hour reads these
//!   instead of every sample. Blocks without them are read as before.
//! * `<tenant>/<block_id>/meta.json`: Thanos-like, written last — its
//!   presence makes the block visible.
//!
//! The block id is derived from (shard, tenant, range), so whichever replica
//! uploads a block (again, after a failover) writes the same object names and
//! the same content.

mod bucket;
mod downsample;
mod instrumented;
mod lifecycle;
mod local_block;
mod range_cache;
mod streaming;

pub use bucket::{BucketConfig, S3Config};
pub use downsample::{Fold, Window, downsample, window_of, windows_of_samples};
pub use instrumented::InstrumentedStore;
pub use lifecycle::{DELETION_MARK, DeletionMark, delete_block, list_deletion_marks, mark_for_deletion};
pub use local_block::{
    LocalBlock, UploadOptions, UploadStats, upload_local_block, write_local_block, write_local_files,
};
pub use range_cache::{RangeCache, RangeCacheMetrics};
pub use streaming::{BlockWriter, SampleCursor, publish_block, sample_rows};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use strata_model::downsample::{View, ViewRequest};
use strata_model::{Labels, METRIC_NAME};

/// A block chosen to answer a read, with the `[from, to)` time ranges a
/// coarser block answers for instead.
#[derive(Debug, Clone)]
pub struct ReadSource {
    pub block: Arc<BlockIndex>,
    pub hidden: Vec<(i64, i64)>,
}

/// The blocks that answer a read of `view` (or of raw samples): for raw
/// reads the raw blocks; for a view, per shard, the coarsest blocks of a
/// resolution up to the view's, then finer ones (raw last) for the time
/// they leave uncovered. Sorted by time.
pub fn choose_sources(blocks: Vec<Arc<BlockIndex>>, view: Option<ViewRequest>) -> Vec<ReadSource> {
    let max_res = view.map_or(0, |v| v.max_resolution_ms);
    let usable: Vec<Arc<BlockIndex>> = blocks.into_iter().filter(|b| b.meta.downsample.resolution <= max_res).collect();
    // Per shard: (resolution, from, to) of every usable block.
    let mut ranges: BTreeMap<&str, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for b in &usable {
        let m = &b.meta;
        ranges.entry(m.strata.shard.as_str()).or_default().push((m.downsample.resolution, m.min_time, m.max_time));
    }
    let mut out = Vec::with_capacity(usable.len());
    for b in &usable {
        let m = &b.meta;
        let (res, lo, hi) = (m.downsample.resolution, m.min_time, m.max_time);
        let mut hidden: Vec<(i64, i64)> = ranges
            .get(m.strata.shard.as_str())
            .into_iter()
            .flatten()
            .filter(|(r, a, z)| *r > res && *a < hi && *z > lo)
            .map(|(_, a, z)| (*a, *z))
            .collect();
        hidden.sort();
        let mut uncovered = lo;
        for (a, z) in &hidden {
            if *a <= uncovered {
                uncovered = uncovered.max(*z);
            }
        }
        // A block wholly hidden is not read at all.
        if uncovered < hi {
            out.push(ReadSource { block: b.clone(), hidden });
        }
    }
    out.sort_by_key(|s| (s.block.meta.min_time, s.block.meta.max_time, s.block.meta.downsample.resolution));
    out
}

/// 2: `series.parquet` carries `num_samples` per series (row ranges in
/// `samples.parquet` without reading it).
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// With its causes (an HTTP error says why: a refused certificate, a
    /// reset connection).
    #[error("object store: {}", with_causes(.0))]
    Store(#[from] object_store::Error),
    #[error("meta.json: {0}")]
    Meta(#[from] serde_json::Error),
    #[error("invalid block: {0}")]
    Invalid(String),
    #[error("object store configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("timed out: {0}")]
    Timeout(String),
}

/// `e` and the distinct messages of its sources, `: `-separated.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        cause = c.source();
    }
    text
}

/// A series and its samples (time order).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockStats {
    #[serde(rename = "numSamples")]
    pub num_samples: u64,
    #[serde(rename = "numSeries")]
    pub num_series: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compaction {
    pub level: u32,
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrataMeta {
    pub schema_version: u32,
    pub tenant: String,
    pub shard: String,
    /// First and last Raft log index whose data the block holds, when known.
    pub raft_log_range: Option<(u64, u64)>,
    pub files: Vec<FileInfo>,
}

/// `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub ulid: String,
    #[serde(rename = "minTime")]
    pub min_time: i64,
    #[serde(rename = "maxTime")]
    pub max_time: i64,
    pub stats: BlockStats,
    pub compaction: Compaction,
    pub version: u32,
    pub strata: StrataMeta,
    /// The block's resolution: 0 for raw samples, else the window (ms) of
    /// its aggregates (Thanos' `thanos.downsample.resolution`).
    #[serde(default)]
    pub downsample: Downsample,
}

/// `meta.json`'s `downsample` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Downsample {
    pub resolution: i64,
}

impl BlockMeta {
    /// The file holding the block's rows: `samples.parquet`, or
    /// `aggregates.parquet` for a downsampled block.
    pub fn data_file(&self) -> &'static str {
        if self.downsample.resolution > 0 { AGGREGATES_FILE } else { "samples.parquet" }
    }
}

/// The rows of a downsampled block (see [`Window`]).
pub const AGGREGATES_FILE: &str = "aggregates.parquet";

/// A block's rows (raw samples, 5-minute windows) folded into windows of
/// [`ROLLUP_RESOLUTION_MS`] (the rows a downsampled block of that
/// resolution would hold for the block's time alone), next to its data
/// file in every block finer than that.
pub const ROLLUP_FILE: &str = "rollup-1h.parquet";

/// The resolution of [`ROLLUP_FILE`]'s windows: one hour.
pub const ROLLUP_RESOLUTION_MS: i64 = 3_600_000;

/// `series.parquet`'s column counting each series' rows in [`ROLLUP_FILE`].
pub(crate) const ROLLUP_WINDOWS: &str = "rollup_windows";

/// The deterministic block id of a (shard, tenant, range).
pub fn block_id(shard: &str, tenant: &str, min_t: i64, max_t: i64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in shard.bytes().chain([0xff]).chain(tenant.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("b-{min_t:013}-{max_t:013}-{h:016x}")
}

fn props(series_file: bool) -> Result<WriterProperties, BlockError> {
    props_with_row_groups(series_file, 1 << 20)
}

/// [`props`] with row groups of at most `rows` rows.
fn props_with_row_groups(series_file: bool, rows: usize) -> Result<WriterProperties, BlockError> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(8192)
        .set_max_row_group_row_count(Some(rows));
    if series_file {
        b = b.set_column_bloom_filter_enabled(ColumnPath::from(METRIC_NAME), true);
    } else {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from("timestamp"), false)
            .set_column_encoding(ColumnPath::from("timestamp"), Encoding::DELTA_BINARY_PACKED)
            .set_column_dictionary_enabled(ColumnPath::from("value"), false)
            .set_column_encoding(ColumnPath::from("value"), Encoding::BYTE_STREAM_SPLIT);
    }
    Ok(b.build())
}

fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn write_parquet(batch: &RecordBatch, props: WriterProperties) -> Result<Vec<u8>, BlockError> {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(buf)
}

/// A series as blocks are encoded from: [`SeriesData`] or a head's
/// `(labels, samples)` pair.
pub trait BlockSeries {
    fn labels(&self) -> &Labels;
    fn samples(&self) -> &[(i64, f64)];
}

impl BlockSeries for SeriesData {
    fn labels(&self) -> &Labels {
        &self.labels
    }
    fn samples(&self) -> &[(i64, f64)] {
        &self.samples
    }
}

impl BlockSeries for (Labels, Vec<(i64, f64)>) {
    fn labels(&self) -> &Labels {
        &self.0
    }
    fn samples(&self) -> &[(i64, f64)] {
        &self.1
    }
}

/// A raw block's Parquet files, encoded.
pub struct EncodedBlock {
    pub series: Vec<u8>,
    pub samples: Vec<u8>,
    /// [`ROLLUP_FILE`].
    pub rollup: Vec<u8>,
    pub stats: BlockStats,
}

/// Encodes series (any order, samples in time order) into a raw block's
/// files.
pub fn encode_block<S: BlockSeries>(series: &[S]) -> Result<EncodedBlock, BlockError> {
    let mut order: Vec<&S> = series.iter().collect();
    fn name<S: BlockSeries>(s: &S) -> &str {
        s.labels().get(METRIC_NAME).unwrap_or("")
    }
    order.sort_by(|a, b| name(*a).cmp(name(*b)).then_with(|| a.labels().cmp(b.labels())));
    let names: BTreeSet<&str> =
        order.iter().flat_map(|s| s.labels().iter().map(|(n, _)| n)).filter(|n| *n != METRIC_NAME).collect();

    let refs: Vec<u32> = (0..order.len() as u32).collect();
    // The rollup: each series' samples in 1-hour windows.
    let (mut rollup_refs, mut rollup_rows, mut rollup_counts) = (Vec::new(), Vec::new(), Vec::new());
    for (i, s) in order.iter().enumerate() {
        let before = rollup_rows.len();
        windows_of_samples(s.samples(), ROLLUP_RESOLUTION_MS, &mut rollup_rows);
        rollup_counts.push((rollup_rows.len() - before) as u32);
        rollup_refs.resize(rollup_rows.len(), i as u32);
    }
    let mut fields = vec![
        Field::new("series_ref", DataType::UInt32, false),
        Field::new("num_samples", DataType::UInt32, false),
        Field::new(ROLLUP_WINDOWS, DataType::UInt32, false),
        Field::new(METRIC_NAME, dict_type(), false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(refs.clone())),
        Arc::new(UInt32Array::from(order.iter().map(|s| s.samples().len() as u32).collect::<Vec<_>>())),
        Arc::new(UInt32Array::from(rollup_counts)),
        Arc::new(
            order
                .iter()
                .map(|s| Some(s.labels().get(METRIC_NAME).unwrap_or("")))
                .collect::<DictionaryArray<Int32Type>>(),
        ),
    ];
    for n in &names {
        fields.push(Field::new(format!("l_{n}"), dict_type(), true));
        columns.push(Arc::new(order.iter().map(|s| s.labels().get(n)).collect::<DictionaryArray<Int32Type>>()));
    }
    let series_batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;

    let total: usize = order.iter().map(|s| s.samples().len()).sum();
    let (mut r, mut t, mut v) = (Vec::with_capacity(total), Vec::with_capacity(total), Vec::with_capacity(total));
    for (i, s) in order.iter().enumerate() {
        for (ts, val) in s.samples() {
            r.push(i as u32);
            t.push(*ts);
            v.push(*val);
        }
    }
    let samples_schema = Schema::new(vec![
        Field::new("series_ref", DataType::UInt32, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]);
    let samples_batch = RecordBatch::try_new(
        Arc::new(samples_schema),
        vec![Arc::new(UInt32Array::from(r)), Arc::new(Int64Array::from(t)), Arc::new(Float64Array::from(v))],
    )?;
    let stats = BlockStats { num_samples: total as u64, num_series: order.len() as u64 };
    let rollup_batch = downsample::windows_batch(&downsample::aggregates_schema(), rollup_refs, &rollup_rows)?;
    Ok(EncodedBlock {
        series: write_parquet(&series_batch, props(true)?)?,
        samples: write_parquet(&samples_batch, props(false)?)?,
        rollup: write_parquet(&rollup_batch, downsample::aggregates_props(1 << 20)?)?,
        stats,
    })
}

/// Writes a block cut from the head (compaction level 1): the two Parquet
/// files, then `meta.json`.
pub async fn upload_block(
    store: &dyn ObjectStore,
    tenant: &str,
    shard: &str,
    min_t: i64,
    max_t: i64,
    series: &[SeriesData],
) -> Result<BlockMeta, BlockError> {
    let id = block_id(shard, tenant, min_t, max_t);
    let compaction = Compaction { level: 1, sources: vec![id.clone()] };
    upload_block_as(store, tenant, shard, &id, (min_t, max_t), compaction, series).await
}

/// Writes a block under `id` with the given compaction lineage.
pub async fn upload_block_as(
    store: &dyn ObjectStore,
    tenant: &str,
    shard: &str,
    id: &str,
    range: (i64, i64),
    compaction: Compaction,
    series: &[SeriesData],
) -> Result<BlockMeta, BlockError> {
    let (meta, files) = encode_block_files(tenant, shard, id, range, compaction, series)?;
    let dir = format!("{tenant}/{id}");
    for (name, data) in files {
        store.put(&Path::from(format!("{dir}/{name}")), Bytes::from(data).into()).await?;
    }
    store.put(&Path::from(format!("{dir}/meta.json")), Bytes::from(serde_json::to_vec_pretty(&meta)?).into()).await?;
    Ok(meta)
}

/// A raw block's Parquet files, `(name, bytes)`, in upload order.
pub type BlockFiles = [(&'static str, Vec<u8>); 3];

/// Encodes a block: its `meta.json` and the Parquet files (name, bytes)
/// in upload order (`meta.json` goes last, after them).
pub fn encode_block_files<S: BlockSeries>(
    tenant: &str,
    shard: &str,
    id: &str,
    (min_t, max_t): (i64, i64),
    compaction: Compaction,
    series: &[S],
) -> Result<(BlockMeta, BlockFiles), BlockError> {
    let EncodedBlock { series: series_pq, samples: samples_pq, rollup, stats } = encode_block(series)?;
    let files = vec![
        FileInfo { path: "series.parquet".into(), size: series_pq.len() as u64 },
        FileInfo { path: "samples.parquet".into(), size: samples_pq.len() as u64 },
        FileInfo { path: ROLLUP_FILE.into(), size: rollup.len() as u64 },
    ];
    let meta = BlockMeta {
        ulid: id.to_string(),
        min_time: min_t,
        max_time: max_t,
        stats,
        compaction,
        version: 1,
        strata: StrataMeta {
            schema_version: SCHEMA_VERSION,
            tenant: tenant.to_string(),
            shard: shard.to_string(),
            raft_log_range: None,
            files,
        },
        downsample: Downsample::default(),
    };
    Ok((meta, [("series.parquet", series_pq), ("samples.parquet", samples_pq), (ROLLUP_FILE, rollup)]))
}

fn batches(data: Bytes) -> Result<Vec<RecordBatch>, BlockError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

fn dict_value(col: &dyn Array, row: usize) -> Result<Option<String>, BlockError> {
    let d = col
        .as_any()
        .downcast_ref::<DictionaryArray<Int32Type>>()
        .ok_or_else(|| BlockError::Invalid("label column is not a dictionary".into()))?;
    if d.is_null(row) {
        return Ok(None);
    }
    let values = d
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| BlockError::Invalid("dictionary values are not strings".into()))?;
    let k = d.keys().value(row) as usize;
    Ok(Some(values.value(k).to_string()))
}

/// The label sets of a `series.parquet` batch, one per row.
fn batch_labels(b: &RecordBatch) -> Result<Vec<Labels>, BlockError> {
    let schema = b.schema();
    let mut out = Vec::with_capacity(b.num_rows());
    for row in 0..b.num_rows() {
        let mut pairs = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            let name = if f.name() == METRIC_NAME {
                METRIC_NAME
            } else if let Some(n) = f.name().strip_prefix("l_") {
                n
            } else {
                continue;
            };
            if let Some(v) = dict_value(b.column(i).as_ref(), row)? {
                pairs.push((name.to_string(), v));
            }
        }
        out.push(Labels::from_pairs(pairs));
    }
    Ok(out)
}

/// Reads a whole block back (for tests, tools and the store's fallback path).
pub async fn read_block(
    store: &dyn ObjectStore,
    tenant: &str,
    id: &str,
) -> Result<(BlockMeta, Vec<SeriesData>), BlockError> {
    let get = |name: &str| Path::from(format!("{tenant}/{id}/{name}"));
    let meta: BlockMeta = serde_json::from_slice(&store.get(&get("meta.json")).await?.bytes().await?)?;
    let mut series: Vec<SeriesData> = Vec::new();
    for b in batches(store.get(&get("series.parquet")).await?.bytes().await?)? {
        series.extend(batch_labels(&b)?.into_iter().map(|labels| SeriesData { labels, samples: Vec::new() }));
    }
    for b in batches(store.get(&get("samples.parquet")).await?.bytes().await?)? {
        let col = |i: usize| b.column(i).clone();
        let r = col(0);
        let r = r.as_any().downcast_ref::<UInt32Array>().ok_or_else(|| BlockError::Invalid("series_ref".into()))?;
        let t = col(1);
        let t = t.as_any().downcast_ref::<Int64Array>().ok_or_else(|| BlockError::Invalid("timestamp".into()))?;
        let v = col(2);
        let v = v.as_any().downcast_ref::<Float64Array>().ok_or_else(|| BlockError::Invalid("value".into()))?;
        for i in 0..b.num_rows() {
            let s = series
                .get_mut(r.value(i) as usize)
                .ok_or_else(|| BlockError::Invalid(format!("series_ref {} out of range", r.value(i))))?;
            s.samples.push((t.value(i), v.value(i)));
        }
    }
    Ok((meta, series))
}

/// A block's series index, kept in memory by the store gateway: labels per
/// `series_ref`, where each series' rows start in `samples.parquet`, and
/// (once read) that file's footer with its page index.
#[derive(Debug)]
pub struct BlockIndex {
    pub meta: BlockMeta,
    pub labels: Vec<Labels>,
    /// `row_start[r]..row_start[r + 1]` are series `r`'s rows.
    pub row_start: Vec<u64>,
    pub samples_size: u64,
    /// Label name → its distinct values in this block (label APIs without matchers).
    pub values: std::collections::BTreeMap<String, BTreeSet<String>>,
    footer: std::sync::Mutex<Option<Arc<parquet::file::metadata::ParquetMetaData>>>,
    /// The block's [`ROLLUP_FILE`], when it has one.
    rollup: Option<Rollup>,
    /// Where [`BlockIndex::read_samples`] keeps the pages it read (none by default).
    pub cache: Option<Arc<RangeCache>>,
}

/// Where a block's [`ROLLUP_FILE`] holds each series' windows.
#[derive(Debug)]
struct Rollup {
    /// `row_start[r]..row_start[r + 1]` are series `r`'s windows.
    row_start: Vec<u64>,
    size: u64,
    footer: std::sync::Mutex<Option<Arc<parquet::file::metadata::ParquetMetaData>>>,
}

/// One of a block's row files as a read needs it: where each series'
/// rows start, its path and size, and its footer once read.
struct RowsFile<'a> {
    row_start: &'a [u64],
    path: Path,
    size: u64,
    footer: &'a std::sync::Mutex<Option<Arc<parquet::file::metadata::ParquetMetaData>>>,
}

/// Which of a block's files a read reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataFile {
    /// `samples.parquet`, or a downsampled block's `aggregates.parquet`.
    Rows,
    /// [`ROLLUP_FILE`].
    Rollup,
}

/// `row_start` of per-series row counts: where each series' rows start.
fn row_starts(counts: impl IntoIterator<Item = u32>) -> Vec<u64> {
    let mut out = vec![0u64];
    let mut acc = 0u64;
    for c in counts {
        acc += c as u64;
        out.push(acc);
    }
    out
}

/// Ranged reads of one Parquet object, with a cached footer.
pub(crate) struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    footer: Option<Arc<parquet::file::metadata::ParquetMetaData>>,
    /// Page data already read (the store gateway's `--store.cache.max-bytes`).
    cache: Option<Arc<RangeCache>>,
}

fn to_parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl parquet::arrow::async_reader::AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        Box::pin(async move { self.store.get_range(&self.path, range).await.map_err(to_parquet_err) })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        Box::pin(async move {
            let Some(cache) = self.cache.clone() else {
                return self.store.get_ranges(&self.path, &ranges).await.map_err(to_parquet_err);
            };
            let mut out: Vec<Option<Bytes>> = ranges.iter().map(|r| cache.get(&self.path, r)).collect();
            let missing: Vec<usize> = (0..ranges.len()).filter(|&i| out[i].is_none()).collect();
            if !missing.is_empty() {
                let wanted: Vec<std::ops::Range<u64>> = missing.iter().map(|&i| ranges[i].clone()).collect();
                let fetched = self.store.get_ranges(&self.path, &wanted).await.map_err(to_parquet_err)?;
                for (&i, data) in missing.iter().zip(fetched) {
                    cache.put(&self.path, &ranges[i], &data);
                    out[i] = Some(data);
                }
            }
            Ok(out.into_iter().flatten().collect())
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>> {
        Box::pin(async move {
            if let Some(f) = &self.footer {
                return Ok(f.clone());
            }
            let size = self.size;
            let meta = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional)
                .load_and_finish(&mut *self, size)
                .await?;
            let meta = Arc::new(meta);
            self.footer = Some(meta.clone());
            Ok(meta)
        })
    }
}

fn u32_column(b: &RecordBatch, name: &str) -> Result<UInt32Array, BlockError> {
    let col = b.column_by_name(name).ok_or_else(|| BlockError::Invalid(format!("missing column {name}")))?;
    col.as_any()
        .downcast_ref::<UInt32Array>()
        .cloned()
        .ok_or_else(|| BlockError::Invalid(format!("column {name} is not u32")))
}

/// Rows per decoded batch of a read ([`BlockIndex::read_rows`]): a page's
/// worth (`samples.parquet` pages hold up to 8 192 rows), so the costs per
/// batch (arrays, the stream's steps) are paid per page, not eight times
/// per page as with the reader's default of 1 024.
const READ_BATCH_ROWS: usize = 8192;

/// The `series_ref`, `timestamp` and `value` columns of a batch of
/// `samples.parquet`.
fn raw_columns(b: &RecordBatch) -> Result<(UInt32Array, Int64Array, Float64Array), BlockError> {
    let t = b
        .column_by_name("timestamp")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
        .ok_or_else(|| BlockError::Invalid("timestamp".into()))?;
    let v = b
        .column_by_name("value")
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
        .ok_or_else(|| BlockError::Invalid("value".into()))?;
    Ok((u32_column(b, "series_ref")?, t, v))
}

/// The objects under tenants' directories (not under reserved ones such as
/// the ruler's rule groups).
fn tenant_objects(objects: Vec<object_store::ObjectMeta>) -> Vec<object_store::ObjectMeta> {
    objects
        .into_iter()
        .filter(|o| o.location.parts().next().is_some_and(|t| strata_model::tenant::is_tenant_dir(t.as_ref())))
        .collect()
}

/// Lists the `meta.json` of every block in the store, except blocks marked
/// for deletion (`deletion-mark.json`: replaced by a compacted block, or
/// past retention).
pub async fn list_blocks(store: &dyn ObjectStore) -> Result<Vec<BlockMeta>, BlockError> {
    let mut out = Vec::new();
    for path in list_meta_paths(store, None).await? {
        out.push(read_meta(store, &path).await?);
    }
    out.sort_by(|a, b| (a.min_time, &a.ulid).cmp(&(b.min_time, &b.ulid)));
    Ok(out)
}

/// The `meta.json` paths of the visible blocks (not marked for deletion),
/// of one tenant with `tenant` (one LIST of its prefix) or all.
pub async fn list_meta_paths(store: &dyn ObjectStore, tenant: Option<&str>) -> Result<Vec<Path>, BlockError> {
    let prefix = tenant.map(Path::from);
    let objects: Vec<object_store::ObjectMeta> = store.list(prefix.as_ref()).try_collect().await?;
    let objects = tenant_objects(objects);
    let dir = |p: &Path| p.as_ref().rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
    let marked: BTreeSet<String> =
        objects.iter().filter(|o| o.location.filename() == Some(DELETION_MARK)).map(|o| dir(&o.location)).collect();
    Ok(objects
        .into_iter()
        .filter(|o| o.location.filename() == Some("meta.json") && !marked.contains(&dir(&o.location)))
        .map(|o| o.location)
        .collect())
}

/// Bytes in object storage of each visible block (not marked for
/// deletion), by `(tenant, block id)`: every object under the block's
/// directory, from one LIST of the bucket.
pub async fn visible_block_bytes(store: &dyn ObjectStore) -> Result<BTreeMap<(String, String), u64>, BlockError> {
    let objects: Vec<object_store::ObjectMeta> = store.list(None).try_collect().await?;
    let objects = tenant_objects(objects);
    let block_of = |p: &Path| -> Option<(String, String)> {
        let mut parts = p.as_ref().splitn(3, '/');
        let (tenant, id, _file) = (parts.next()?, parts.next()?, parts.next()?);
        Some((tenant.to_string(), id.to_string()))
    };
    let marked: BTreeSet<(String, String)> = objects
        .iter()
        .filter(|o| o.location.filename() == Some(DELETION_MARK))
        .filter_map(|o| block_of(&o.location))
        .collect();
    let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
    for o in &objects {
        if let Some(b) = block_of(&o.location).filter(|b| !marked.contains(b)) {
            *out.entry(b).or_default() += o.size;
        }
    }
    Ok(out)
}

/// Reads one block's `meta.json`.
pub async fn read_meta(store: &dyn ObjectStore, path: &Path) -> Result<BlockMeta, BlockError> {
    let bytes = store.get(path).await?.bytes().await?;
    Ok(serde_json::from_slice::<BlockMeta>(&bytes)?)
}

impl BlockIndex {
    /// Loads the series file of a block.
    pub async fn load(store: &dyn ObjectStore, meta: BlockMeta) -> Result<BlockIndex, BlockError> {
        let path = Path::from(format!("{}/{}/series.parquet", meta.strata.tenant, meta.ulid));
        let bytes = store.get(&path).await?.bytes().await?;
        BlockIndex::from_series_file(meta, bytes)
    }

    /// Builds the index from the bytes of the block's `series.parquet`.
    pub fn from_series_file(meta: BlockMeta, series_parquet: Bytes) -> Result<BlockIndex, BlockError> {
        let mut labels = Vec::new();
        let mut counts: Vec<u32> = Vec::new();
        let mut rollup_counts: Option<Vec<u32>> = Some(Vec::new());
        for b in batches(series_parquet)? {
            let n = u32_column(&b, "num_samples")?;
            counts.extend(n.values().iter().copied());
            rollup_counts = match (rollup_counts, b.column_by_name(ROLLUP_WINDOWS)) {
                (Some(mut acc), Some(_)) => {
                    acc.extend(u32_column(&b, ROLLUP_WINDOWS)?.values().iter().copied());
                    Some(acc)
                }
                _ => None,
            };
            labels.extend(batch_labels(&b)?);
        }
        let row_start = row_starts(counts);
        // A rollup is used only when `meta.json` lists it and the series
        // file counts its rows (a block written before rollups has neither).
        let rollup_size = meta.strata.files.iter().find(|f| f.path == ROLLUP_FILE).map(|f| f.size);
        let rollup = match (rollup_size, rollup_counts) {
            (Some(size), Some(counts)) if meta.downsample.resolution < ROLLUP_RESOLUTION_MS => {
                Some(Rollup { row_start: row_starts(counts), size, footer: std::sync::Mutex::new(None) })
            }
            _ => None,
        };
        let samples_size = meta
            .strata
            .files
            .iter()
            .find(|f| f.path == meta.data_file())
            .map(|f| f.size)
            .ok_or_else(|| BlockError::Invalid(format!("meta.json lists no {}", meta.data_file())))?;
        let mut values: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
        for l in &labels {
            for (n, v) in l.iter() {
                values.entry(n.to_string()).or_default().insert(v.to_string());
            }
        }
        Ok(BlockIndex {
            meta,
            labels,
            row_start,
            samples_size,
            values,
            footer: std::sync::Mutex::new(None),
            rollup,
            cache: None,
        })
    }

    /// Whether the block has a [`ROLLUP_FILE`] it reads folds from.
    pub fn has_rollup(&self) -> bool {
        self.rollup.is_some()
    }

    /// `file` of this block.
    fn rows_file(&self, file: DataFile) -> Result<RowsFile<'_>, BlockError> {
        let dir = format!("{}/{}", self.meta.strata.tenant, self.meta.ulid);
        match (file, &self.rollup) {
            (DataFile::Rows, _) => Ok(RowsFile {
                row_start: &self.row_start,
                path: Path::from(format!("{dir}/{}", self.meta.data_file())),
                size: self.samples_size,
                footer: &self.footer,
            }),
            (DataFile::Rollup, Some(r)) => Ok(RowsFile {
                row_start: &r.row_start,
                path: Path::from(format!("{dir}/{ROLLUP_FILE}")),
                size: r.size,
                footer: &r.footer,
            }),
            (DataFile::Rollup, None) => Err(BlockError::Invalid(format!("block {} has no rollup", self.meta.ulid))),
        }
    }

    /// The rows of the given series (ascending refs) of the block's data
    /// file, reading only the pages that hold them and, when `columns` is
    /// given, only those columns; batch by batch, so that a caller holds
    /// one decoded batch at a time besides what it keeps.
    async fn read_rows(
        &self,
        store: Arc<dyn ObjectStore>,
        file: DataFile,
        refs: &[u32],
        columns: Option<&[&str]>,
    ) -> Result<parquet::arrow::async_reader::ParquetRecordBatchStream<ObjectReader>, BlockError> {
        use parquet::arrow::ParquetRecordBatchStreamBuilder;
        use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
        use parquet::arrow::async_reader::AsyncFileReader;
        let RowsFile { row_start, path, size, footer: footer_slot } = self.rows_file(file)?;
        let mut selectors = Vec::new();
        let mut pos = 0u64;
        for &r in refs {
            let (a, b) = (row_start[r as usize], row_start[r as usize + 1]);
            if a > pos {
                selectors.push(RowSelector::skip((a - pos) as usize));
            }
            if b > a {
                selectors.push(RowSelector::select((b - a) as usize));
            }
            pos = b;
        }
        let cached = footer_slot.lock().ok().and_then(|g| g.clone());
        let mut reader = ObjectReader { store, path, size, footer: cached, cache: self.cache.clone() };
        let footer = reader.get_metadata(None).await?;
        if let Ok(mut g) = footer_slot.lock() {
            *g = Some(footer.clone());
        }
        let options =
            ArrowReaderOptions::new().with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional);
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options)
            .await?
            .with_batch_size(READ_BATCH_ROWS)
            .with_row_selection(RowSelection::from(selectors));
        if let Some(names) = columns {
            let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), names.iter().copied());
            builder = builder.with_projection(mask);
        }
        Ok(builder.build()?)
    }

    /// Windows of the given series (ascending refs) of a downsampled block
    /// whose last sample lies in `[min_t, max_t]`.
    pub async fn read_windows(
        &self,
        store: Arc<dyn ObjectStore>,
        refs: &[u32],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Vec<Window>>, BlockError> {
        let mut out: Vec<Vec<Window>> = vec![Vec::new(); refs.len()];
        if refs.is_empty() {
            return Ok(out);
        }
        if self.meta.downsample.resolution <= 0 {
            return Err(BlockError::Invalid(format!("block {} holds raw samples, not windows", self.meta.ulid)));
        }
        let mut slot = 0usize;
        let mut batches = self.read_rows(store, DataFile::Rows, refs, None).await?;
        while let Some(b) = batches.try_next().await? {
            let c = downsample::WindowColumns::of(&b)?;
            for i in 0..b.num_rows() {
                let sref = c.series_ref.value(i);
                while slot < refs.len() && refs[slot] != sref {
                    slot += 1;
                }
                if slot == refs.len() {
                    return Err(BlockError::Invalid(format!("unexpected series_ref {sref} in aggregates")));
                }
                let w = c.window(i);
                if w.t >= min_t && w.t <= max_t {
                    out[slot].push(w);
                }
            }
        }
        Ok(out)
    }

    /// The points in `view` of the given series (ascending refs) of a
    /// downsampled block, from the windows whose last sample lies in
    /// `[min_t, max_t]`, points outside it left out. Reads only the
    /// columns the view needs (a third to a half of the file).
    async fn read_window_points(
        &self,
        store: Arc<dyn ObjectStore>,
        refs: &[u32],
        (min_t, max_t): (i64, i64),
        view: View,
    ) -> Result<Vec<Vec<(i64, f64)>>, BlockError> {
        let mut out: Vec<Vec<(i64, f64)>> = vec![Vec::new(); refs.len()];
        if refs.is_empty() {
            return Ok(out);
        }
        let columns = downsample::view_columns(view);
        let mut slot = 0usize;
        let mut batches = self.read_rows(store, DataFile::Rows, refs, Some(columns)).await?;
        while let Some(b) = batches.try_next().await? {
            let c = downsample::ViewColumns::of(&b, view)?;
            self.series_runs(DataFile::Rows, refs, c.series_ref.values(), &mut slot, &mut out, |rows, n, dst| {
                if dst.capacity() == 0 {
                    dst.reserve(n);
                }
                c.points(rows, (min_t, max_t), dst)
            })?;
        }
        Ok(out)
    }

    /// The given series (ascending refs) in `[min_t, max_t]`, in `view`'s
    /// terms when one is given (from the windows of a downsampled block,
    /// or converted from raw samples), without the points in `hidden`
    /// (`[from, to)` ranges a coarser block answers for).
    pub async fn read_view(
        &self,
        store: Arc<dyn ObjectStore>,
        refs: &[u32],
        (min_t, max_t): (i64, i64),
        view: Option<View>,
        hidden: &[(i64, i64)],
    ) -> Result<Vec<Vec<(i64, f64)>>, BlockError> {
        let mut out = match (self.meta.downsample.resolution > 0, view) {
            (true, None) => {
                return Err(BlockError::Invalid(format!(
                    "block {} is downsampled: it answers only reads of a view",
                    self.meta.ulid
                )));
            }
            (true, Some(v)) => self.read_window_points(store, refs, (min_t, max_t), v).await?,
            (false, v) => {
                let mut samples = self.read_samples(store, refs, min_t, max_t).await?;
                if let Some(v) = v {
                    samples.iter_mut().for_each(|s| v.apply_to_raw(s));
                }
                samples
            }
        };
        if !hidden.is_empty() {
            for s in out.iter_mut() {
                s.retain(|(t, _)| !hidden.iter().any(|(a, b)| t >= a && t < b));
            }
        }
        Ok(out)
    }

    /// The given series' points in `view` at `resolution_ms`, folded from
    /// this block's finer data (raw samples, or windows of a resolution
    /// that divides `resolution_ms`) in `[min_t, max_t]`: the points a
    /// block of the same samples downsampled to `resolution_ms` gives
    /// ([`Fold`], the compactor's fold), without holding the finer data.
    /// A read whose evaluation times and ranges are multiples of
    /// `resolution_ms` (what a view's resolution promises) answers from
    /// them as from the finer data, up to the limit of downsampled data
    /// (a rate's extrapolation where a series starts or ends in its range).
    pub async fn read_folded(
        &self,
        store: Arc<dyn ObjectStore>,
        refs: &[u32],
        (min_t, max_t): (i64, i64),
        view: View,
        resolution_ms: i64,
    ) -> Result<Vec<Vec<(i64, f64)>>, BlockError> {
        let own = self.meta.downsample.resolution;
        if resolution_ms <= own || (own > 0 && resolution_ms % own != 0) {
            return Err(BlockError::Invalid(format!(
                "block {} at resolution {own} ms cannot be folded to {resolution_ms} ms",
                self.meta.ulid
            )));
        }
        // A read whose ends cut none of the rollup's hourly windows
        // `((k-1)·h, k·h]` (each end outside the block, or `min_t` the
        // first millisecond of a window and `max_t` the last), to a
        // multiple of an hour, folds the rollup's windows inside the
        // range: the same windows as its rows in the range folded (the
        // rollup is that fold), 240 times fewer rows than raw samples at
        // 15 s, 12 times fewer than 5-minute windows. A push-down reads
        // its blocks from one millisecond after an hour to an hour, so
        // the newest raw day of a month-long panel (cut where the
        // ingesters' samples begin) folds hours, not its samples.
        let r = ROLLUP_RESOLUTION_MS;
        let aligned = (min_t <= self.meta.min_time || (min_t - 1).rem_euclid(r) == 0)
            && (self.meta.max_time - 1 <= max_t || max_t.rem_euclid(r) == 0);
        let file = if self.rollup.is_some()
            && own < ROLLUP_RESOLUTION_MS
            && aligned
            && resolution_ms % ROLLUP_RESOLUTION_MS == 0
        {
            DataFile::Rollup
        } else {
            DataFile::Rows
        };
        let windows = own > 0 || file == DataFile::Rollup;
        let mut folds: Vec<Fold> = (0..refs.len()).map(|_| Fold::default()).collect();
        let mut in_order = true;
        if !refs.is_empty() {
            let mut slot = 0usize;
            let columns = if windows { Some(downsample::view_columns(view)) } else { None };
            let mut batches = self.read_rows(store, file, refs, columns).await?;
            while let Some(b) = batches.try_next().await? {
                if windows {
                    let c = downsample::ViewColumns::of(&b, view)?;
                    self.series_runs(file, refs, c.series_ref.values(), &mut slot, &mut folds, |rows, _, fold| {
                        for i in rows {
                            let w = c.window(i);
                            if w.t >= min_t && w.t <= max_t {
                                in_order &= fold.push(&w, resolution_ms);
                            }
                        }
                    })?;
                } else {
                    let (r, t, v) = raw_columns(&b)?;
                    let (t, v) = (t.values(), v.values());
                    self.series_runs(file, refs, r.values(), &mut slot, &mut folds, |rows, _, fold| {
                        let (ts, vs) = (&t[rows.clone()], &v[rows]);
                        if !ts.windows(2).all(|w| w[0] <= w[1]) {
                            in_order = false;
                            return;
                        }
                        let a = ts.partition_point(|&x| x < min_t);
                        let z = ts.partition_point(|&x| x <= max_t).max(a);
                        in_order &= fold.push_samples(&ts[a..z], &vs[a..z], view, resolution_ms);
                    })?;
                }
            }
        }
        if !in_order {
            let path = self.rows_file(file)?.path;
            return Err(BlockError::Invalid(format!("{path} holds a series out of time order: cannot fold it")));
        }
        Ok(folds.iter().map(|f| f.points(view, min_t)).collect())
    }

    /// Samples of the given series (ascending refs) in `[min_t, max_t]`,
    /// reading only the pages that hold those series' rows.
    pub async fn read_samples(
        &self,
        store: Arc<dyn ObjectStore>,
        refs: &[u32],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Vec<(i64, f64)>>, BlockError> {
        let mut out: Vec<Vec<(i64, f64)>> = vec![Vec::new(); refs.len()];
        if refs.is_empty() {
            return Ok(out);
        }
        if self.meta.downsample.resolution > 0 {
            return Err(BlockError::Invalid(format!("block {} holds windows, not raw samples", self.meta.ulid)));
        }
        let mut batches = self.read_rows(store, DataFile::Rows, refs, None).await?;
        let mut slot = 0usize;
        while let Some(b) = batches.try_next().await? {
            let (r, t, v) = raw_columns(&b)?;
            let (r, t, v) = (r.values(), t.values(), v.values());
            self.series_runs(DataFile::Rows, refs, r, &mut slot, &mut out, |rows, n, dst| {
                if dst.capacity() == 0 {
                    dst.reserve(n);
                }
                let (ts, vs) = (&t[rows.clone()], &v[rows]);
                if ts.windows(2).all(|w| w[0] <= w[1]) {
                    let a = ts.partition_point(|&x| x < min_t);
                    let z = ts.partition_point(|&x| x <= max_t).max(a);
                    dst.extend(ts[a..z].iter().copied().zip(vs[a..z].iter().copied()));
                } else {
                    let rows = ts.iter().copied().zip(vs.iter().copied());
                    dst.extend(rows.filter(|&(x, _)| x >= min_t && x <= max_t));
                }
            })?;
        }
        Ok(out)
    }

    /// Splits a batch's `series_ref` column into runs of one series (rows
    /// come in runs, time-ordered within a run) and calls `take` with each
    /// run's rows, its series' rows in the whole block and its output in
    /// `out` (slot of `refs`, the ascending refs read; `slot` carries over
    /// between batches).
    fn series_runs<T>(
        &self,
        file: DataFile,
        refs: &[u32],
        r: &[u32],
        slot: &mut usize,
        out: &mut [T],
        mut take: impl FnMut(std::ops::Range<usize>, usize, &mut T),
    ) -> Result<(), BlockError> {
        let RowsFile { row_start, path, .. } = self.rows_file(file)?;
        let mut i = 0;
        while i < r.len() {
            let sref = r[i];
            let run = r[i..].iter().position(|&x| x != sref).unwrap_or(r.len() - i);
            while *slot < refs.len() && refs[*slot] != sref {
                *slot += 1;
            }
            if *slot == refs.len() {
                return Err(BlockError::Invalid(format!("unexpected series_ref {sref} in {path}")));
            }
            let rows = row_start[sref as usize + 1] - row_start[sref as usize];
            take(i..i + run, rows as usize, &mut out[*slot]);
            i += run;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;

    /// `input` in the order a block holds its series: by metric name, then labels.
    fn in_block_order(input: &[SeriesData]) -> Vec<SeriesData> {
        let mut sorted = input.to_vec();
        sorted.sort_by(|a, b| {
            (a.labels.get(METRIC_NAME).unwrap_or("").to_string(), a.labels.clone())
                .cmp(&(b.labels.get(METRIC_NAME).unwrap_or("").to_string(), b.labels.clone()))
        });
        sorted
    }

    /// `n` counters of `samples` samples at 15 s from `start`, series `i`
    /// resetting where `(k + i) % reset_every == 0`, with a staleness
    /// marker at sample `stale_at + i` when given.
    fn counters(n: usize, samples: usize, start: i64, reset_every: usize, stale_at: Option<usize>) -> Vec<SeriesData> {
        series(n, samples)
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                let mut v = 0.0;
                for (k, p) in s.samples.iter_mut().enumerate() {
                    v = if (k + i) % reset_every == 0 { (k % 3) as f64 } else { v + ((k * 7 + i) % 11) as f64 };
                    p.0 = start + k as i64 * 15_000;
                    p.1 =
                        if stale_at.is_some_and(|at| k == at + i) { f64::from_bits(0x7ff0_0000_0000_0002) } else { v };
                }
                s
            })
            .collect()
    }

    fn series(n: usize, samples: usize) -> Vec<SeriesData> {
        (0..n)
            .map(|i| SeriesData {
                labels: Labels::from_pairs(
                    vec![
                        (METRIC_NAME.into(), if i % 2 == 0 { "http_requests_total".into() } else { "up".into() }),
                        ("instance".into(), format!("host-{}", i / 4)),
                        ("job".into(), "api".into()),
                        ("series".into(), format!("s{i:04}")),
                    ]
                    .into_iter()
                    .chain((i % 3 == 0).then(|| ("rare".to_string(), "x".to_string())))
                    .collect(),
                ),
                samples: (0..samples)
                    .map(|k| {
                        let t = 1_700_000_000_000 + k as i64 * 15_000;
                        let v = if k == 7 { f64::from_bits(0x7ff0_0000_0000_0002) } else { (k * (i + 1)) as f64 };
                        (t, v)
                    })
                    .collect(),
            })
            .collect()
    }

    #[tokio::test]
    async fn block_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let input = series(200, 480);
        let meta =
            upload_block(&store, "anonymous", "shard-0", 1_700_000_000_000, 1_700_007_200_000, &input).await.unwrap();
        assert_eq!(meta.stats, BlockStats { num_samples: 200 * 480, num_series: 200 });
        assert_eq!(meta.ulid, block_id("shard-0", "anonymous", 1_700_000_000_000, 1_700_007_200_000));
        let (read_meta, mut got) = read_block(&store, "anonymous", &meta.ulid).await.unwrap();
        assert_eq!(read_meta, meta);
        let mut want = input.clone();
        want.sort_by(|a, b| a.labels.cmp(&b.labels));
        got.sort_by(|a, b| a.labels.cmp(&b.labels));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.labels, w.labels);
            assert_eq!(g.samples.len(), w.samples.len());
            for (a, b) in g.samples.iter().zip(&w.samples) {
                assert_eq!(a.0, b.0);
                assert_eq!(a.1.to_bits(), b.1.to_bits(), "values bit-exact, stale markers included");
            }
        }
        let samples_bytes = meta.strata.files.iter().find(|f| f.path == "samples.parquet").unwrap().size;
        let per_sample = samples_bytes as f64 / meta.stats.num_samples as f64;
        eprintln!("samples.parquet: {samples_bytes} bytes = {per_sample:.2} bytes/sample");
        assert!(per_sample < 4.0, "{per_sample} bytes/sample");
    }

    #[tokio::test]
    async fn index_reads_only_the_selected_series() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        // Enough rows for several pages, so the row selection skips some.
        let input = series(300, 100);
        upload_block(store.as_ref(), "t1", "shard-0", 0, i64::MAX, &input).await.unwrap();
        let metas = list_blocks(store.as_ref()).await.unwrap();
        assert_eq!(metas.len(), 1);
        let idx = BlockIndex::load(store.as_ref(), metas[0].clone()).await.unwrap();
        assert_eq!(idx.labels.len(), 300);
        assert_eq!(*idx.row_start.last().unwrap(), 300 * 100);
        let want = in_block_order(&input);
        let refs = [3u32, 150, 299];
        let t_min = 1_700_000_000_000 + 10 * 15_000;
        let t_max = 1_700_000_000_000 + 20 * 15_000;
        let got = idx.read_samples(store.clone(), &refs, t_min, t_max).await.unwrap();
        for (k, &r) in refs.iter().enumerate() {
            assert_eq!(idx.labels[r as usize], want[r as usize].labels);
            let exp: Vec<(i64, u64)> = want[r as usize]
                .samples
                .iter()
                .filter(|(t, _)| *t >= t_min && *t <= t_max)
                .map(|(t, v)| (*t, v.to_bits()))
                .collect();
            let g: Vec<(i64, u64)> = got[k].iter().map(|(t, v)| (*t, v.to_bits())).collect();
            assert_eq!(g, exp, "series {r}");
        }
    }

    #[tokio::test]
    async fn repeated_reads_come_from_the_cache_and_equal_uncached_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        upload_block(store.as_ref(), "t1", "shard-0", 0, i64::MAX, &series(300, 100)).await.unwrap();
        let meta = list_blocks(store.as_ref()).await.unwrap().remove(0);
        let plain = BlockIndex::load(store.as_ref(), meta.clone()).await.unwrap();
        let mut cached = BlockIndex::load(store.as_ref(), meta).await.unwrap();
        let metrics = RangeCacheMetrics::default();
        cached.cache = Some(Arc::new(RangeCache::new(64 << 20, metrics.clone())));
        let refs = [3u32, 150, 299];
        let (lo, hi) = (1_700_000_000_000 + 10 * 15_000, 1_700_000_000_000 + 60 * 15_000);
        let bits = |v: Vec<Vec<(i64, f64)>>| -> Vec<Vec<(i64, u64)>> {
            v.into_iter().map(|s| s.into_iter().map(|(t, x)| (t, x.to_bits())).collect()).collect()
        };
        let want = bits(plain.read_samples(store.clone(), &refs, lo, hi).await.unwrap());
        let first = bits(cached.read_samples(store.clone(), &refs, lo, hi).await.unwrap());
        let misses = metrics.misses.get();
        assert!(misses > 0 && metrics.hits.get() == 0 && metrics.bytes.get() > 0);
        // The same read again: every range from memory, nothing from the store.
        let second = bits(cached.read_samples(store.clone(), &refs, lo, hi).await.unwrap());
        assert_eq!((metrics.hits.get(), metrics.misses.get()), (misses, misses));
        assert_eq!(first, want);
        assert_eq!(second, want);
    }

    #[tokio::test]
    async fn window_points_read_only_the_view_columns_and_equal_the_windows_points() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        // Counters with resets (every 23rd sample) over 2 days in 5m windows.
        let input = counters(40, 11_520, 1_700_000_000_000, 23, None);
        let names: BTreeSet<String> = input.iter().flat_map(|s| s.labels.iter().map(|(n, _)| n.to_string())).collect();
        let mut w = BlockWriter::with_resolution(store.clone(), "t", "shard-0", "down", &names, 300_000).unwrap();
        let sorted = in_block_order(&input);
        for s in &sorted {
            let mut windows = Vec::new();
            windows_of_samples(&s.samples, 300_000, &mut windows);
            w.add_windows(&s.labels, &windows).await.unwrap();
        }
        let range = (1_700_000_000_000, 1_700_000_000_000 + 11_520 * 15_000);
        let meta = w.finish(range, Compaction { level: 2, sources: vec![] }).await.unwrap();
        publish_block(store.as_ref(), &meta).await.unwrap();
        let idx = BlockIndex::load(store.as_ref(), meta).await.unwrap();
        let refs = [0u32, 7, 8, 21, 39];
        for (min_t, max_t) in [(i64::MIN, i64::MAX), (range.0 + 3_600_000 + 1, range.0 + 86_400_000 - 7)] {
            let windows = idx.read_windows(store.clone(), &refs, min_t, max_t).await.unwrap();
            for view in [View::Count, View::Sum, View::Min, View::Max, View::Counter] {
                let got = idx.read_view(store.clone(), &refs, (min_t, max_t), Some(view), &[]).await.unwrap();
                for (k, ws) in windows.iter().enumerate() {
                    let mut want = Vec::new();
                    ws.iter().for_each(|w| w.points(view, &mut want));
                    want.retain(|(t, _)| *t >= min_t && *t <= max_t);
                    assert!(!want.is_empty());
                    let bits = |v: &[(i64, f64)]| v.iter().map(|(t, x)| (*t, x.to_bits())).collect::<Vec<_>>();
                    assert_eq!(bits(&got[k]), bits(&want), "{view:?}, series {}", refs[k]);
                }
            }
        }
        // Bytes fetched, counted by a fresh cache per read: a view reads
        // a fraction of what all the windows' columns take.
        let fetched = |view: Option<View>| {
            let (store, meta) = (store.clone(), idx.meta.clone());
            async move {
                let mut idx = BlockIndex::load(store.as_ref(), meta).await.unwrap();
                let metrics = RangeCacheMetrics::default();
                idx.cache = Some(Arc::new(RangeCache::new(64 << 20, metrics.clone())));
                match view {
                    Some(v) => drop(idx.read_view(store, &refs, (i64::MIN, i64::MAX), Some(v), &[]).await.unwrap()),
                    None => drop(idx.read_windows(store, &refs, i64::MIN, i64::MAX).await.unwrap()),
                }
                metrics.bytes.get()
            }
        };
        let all = fetched(None).await;
        let (sum, counter) = (fetched(Some(View::Sum)).await, fetched(Some(View::Counter)).await);
        assert!(sum * 3 < all && counter < all, "sum {sum}, counter {counter}, every column {all}");
    }

    /// Reads folded to a coarser resolution give, bit for bit, what the
    /// block downsampled to it holds: from raw samples (with resets and a
    /// staleness marker) to 5 m and 1 h, and from 5 m windows to 1 h, over
    /// the whole block and over a window-aligned part of it.
    #[tokio::test]
    async fn folded_reads_equal_the_block_downsampled_to_their_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        // On the hour: samples fall on the windows' closed ends.
        let start = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;
        let input = counters(12, 11_520, start, 29, Some(300));
        let range = (start, start + 11_520 * 15_000);
        let raw_meta = upload_block(store.as_ref(), "t", "shard-0", range.0, range.1, &input).await.unwrap();
        let raw = BlockIndex::load(store.as_ref(), raw_meta).await.unwrap();
        let names: BTreeSet<String> = input.iter().flat_map(|s| s.labels.iter().map(|(n, _)| n.to_string())).collect();
        let sorted = in_block_order(&input);
        // The compactor's blocks: 5 m from raw samples, 1 h from the 5 m windows.
        let mut downsampled = Vec::new();
        for (id, res) in [("five", 300_000), ("hour", 3_600_000)] {
            let mut w = BlockWriter::with_resolution(store.clone(), "t", "shard-0", id, &names, res).unwrap();
            for s in &sorted {
                let mut five = Vec::new();
                windows_of_samples(&s.samples, 300_000, &mut five);
                let mut windows = Vec::new();
                downsample(&five, res, &mut windows);
                w.add_windows(&s.labels, &windows).await.unwrap();
            }
            let meta = w.finish(range, Compaction { level: 2, sources: vec![] }).await.unwrap();
            publish_block(store.as_ref(), &meta).await.unwrap();
            downsampled.push(BlockIndex::load(store.as_ref(), meta).await.unwrap());
        }
        let (five, hour) = (&downsampled[0], &downsampled[1]);
        // Reads of the whole range fold the raw and 5 m blocks' hourly
        // rollups to 1 h, the others their rows.
        assert!(raw.has_rollup() && five.has_rollup() && !hour.has_rollup());
        let refs = [0u32, 3, 4, 11];
        let bits = |v: &[Vec<(i64, f64)>]| -> Vec<Vec<(i64, u64)>> {
            v.iter().map(|s| s.iter().map(|(t, x)| (*t, x.to_bits())).collect()).collect()
        };
        for (min_t, max_t) in [(i64::MIN, i64::MAX), (start + 3_600_000 + 1, start + 20 * 3_600_000)] {
            for view in [View::Count, View::Sum, View::Min, View::Max, View::Counter] {
                let want_five =
                    bits(&five.read_view(store.clone(), &refs, (min_t, max_t), Some(view), &[]).await.unwrap());
                let want_hour =
                    bits(&hour.read_view(store.clone(), &refs, (min_t, max_t), Some(view), &[]).await.unwrap());
                assert!(want_hour.iter().all(|s| !s.is_empty()));
                for (b, res, want, what) in [
                    (&raw, 300_000, &want_five, "raw → 5m"),
                    (&raw, 3_600_000, &want_hour, "raw → 1h"),
                    (five, 3_600_000, &want_hour, "5m → 1h"),
                ] {
                    let got = b.read_folded(store.clone(), &refs, (min_t, max_t), view, res).await.unwrap();
                    assert_eq!(&bits(&got), want, "{view:?} {what}, from {min_t}");
                }
            }
        }
        // Only to a coarser resolution that the block's divides.
        for (b, res) in [(five, 300_000), (hour, 3_600_000), (five, 420_000), (&raw, 0)] {
            let err = b.read_folded(store.clone(), &refs, (i64::MIN, i64::MAX), View::Sum, res).await.unwrap_err();
            assert!(err.to_string().contains("cannot be folded"), "{err}");
        }
    }

    #[tokio::test]
    async fn whole_raw_blocks_fold_from_their_rollup_as_from_their_samples() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        // Two days of counters with resets and a staleness marker, samples
        // on the hours' closed ends.
        let start = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;
        let input = counters(9, 11_520, start, 31, Some(500));
        let range = (start, start + 11_520 * 15_000);
        // Written whole (the ingester's flush) and series by series (the
        // compactor's writer); and the first again as a block written
        // before rollups (`meta.json` without one).
        let whole = upload_block(store.as_ref(), "t", "shard-0", range.0, range.1, &input).await.unwrap();
        assert!(whole.strata.files.iter().any(|f| f.path == ROLLUP_FILE));
        let names: BTreeSet<String> = input.iter().flat_map(|s| s.labels.iter().map(|(n, _)| n.to_string())).collect();
        let mut w = BlockWriter::new(store.clone(), "t", "shard-0", "streamed", &names).unwrap();
        for s in &in_block_order(&input) {
            w.add(&s.labels, &s.samples).await.unwrap();
        }
        let streamed = w.finish(range, Compaction { level: 2, sources: vec![] }).await.unwrap();
        assert!(streamed.strata.files.iter().any(|f| f.path == ROLLUP_FILE));
        publish_block(store.as_ref(), &streamed).await.unwrap();
        let mut old = whole.clone();
        old.strata.files.retain(|f| f.path != ROLLUP_FILE);
        let whole = BlockIndex::load(store.as_ref(), whole).await.unwrap();
        let streamed = BlockIndex::load(store.as_ref(), streamed).await.unwrap();
        let old = BlockIndex::load(store.as_ref(), old).await.unwrap();
        assert!(whole.has_rollup() && streamed.has_rollup() && !old.has_rollup());

        let refs = [0u32, 2, 5, 8];
        let bits = |v: &[Vec<(i64, f64)>]| -> Vec<Vec<(i64, u64)>> {
            v.iter().map(|s| s.iter().map(|(t, x)| (*t, x.to_bits())).collect()).collect()
        };
        let all = (i64::MIN, i64::MAX);
        const H: i64 = 3_600_000;
        // Whole, and cut on the hours' edges (from the first millisecond
        // of a window to the last one of another): the rollup is read.
        // Cut inside a window: the samples are.
        let ranges = [
            all,
            (start + 3 * H + 1, start + 20 * H),
            (i64::MIN, start + 25 * H),
            (start + 7 * H + 1, i64::MAX),
            (start + 3 * H, start + 20 * H + 300_000),
        ];
        for view in [View::Count, View::Sum, View::Min, View::Max, View::Counter] {
            // 1 h is the rollup's own resolution: the same windows bit for
            // bit. Coarser ones fold hours instead of samples: the same
            // here, where every value and sum is an integer.
            for res in [3_600_000, 7_200_000, 86_400_000] {
                for range in ranges {
                    let want = bits(&old.read_folded(store.clone(), &refs, range, view, res).await.unwrap());
                    assert!(want.iter().all(|s| !s.is_empty()));
                    for b in [&whole, &streamed] {
                        let got = b.read_folded(store.clone(), &refs, range, view, res).await.unwrap();
                        assert_eq!(bits(&got), want, "{view:?} at {res} over {range:?}, {}", b.meta.ulid);
                    }
                }
            }
        }
        // The rollup is what those reads read: without `samples.parquet`
        // a whole block still folds to hours; a read of part of it, or
        // to 5 minutes, needs the samples.
        let samples = Path::from(format!("t/{}/samples.parquet", whole.meta.ulid));
        store.delete(&samples).await.unwrap();
        whole.read_folded(store.clone(), &refs, all, View::Counter, 3_600_000).await.unwrap();
        let on_edges = (start + 3_600_001, start + 7_200_000);
        whole.read_folded(store.clone(), &refs, on_edges, View::Counter, 3_600_000).await.unwrap();
        let part = (start + 3_600_000, start + 7_200_000);
        assert!(whole.read_folded(store.clone(), &refs, part, View::Counter, 3_600_000).await.is_err());
        assert!(whole.read_folded(store.clone(), &refs, all, View::Counter, 300_000).await.is_err());
    }

    #[tokio::test]
    async fn same_input_gives_identical_objects() {
        let input = series(20, 50);
        let one = encode_block(&input).unwrap();
        let mut shuffled = input.clone();
        shuffled.reverse();
        let two = encode_block(&shuffled).unwrap();
        assert_eq!(one.series, two.series);
        assert_eq!(one.samples, two.samples);
        assert_eq!(one.rollup, two.rollup);
    }
}
