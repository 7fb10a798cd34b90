//! Block I/O one series at a time, for the compactor: a sequential reader
//! of a block's `samples.parquet` ([`SampleCursor`]) and a writer that
//! uploads a block's Parquet files while they are being written
//! ([`BlockWriter`], multipart through object_store's buffered writer). The
//! memory either takes is bounded by a record batch and a row group's
//! encoded pages, not by the block's size. The files are the same format
//! [`crate::encode_block`] writes.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::arrow::async_writer::AsyncArrowWriter;
use strata_model::{Labels, METRIC_NAME};

use crate::{
    BlockError, BlockMeta, BlockStats, Compaction, Downsample, FileInfo, ObjectReader, SCHEMA_VERSION, StrataMeta,
    dict_type, props_with_row_groups,
};

/// Rows per record batch read or written.
const BATCH_ROWS: usize = 8192;
/// Rows a cursor fetches at once (only those pages are read, through the
/// offset index), so an input costs about this many rows of memory however
/// large its row groups.
const WINDOW_ROWS: u64 = 65_536;
/// Row groups of the blocks the writer writes: their encoded pages are
/// held until the group is complete.
const WRITER_ROW_GROUP: usize = 1 << 18;
/// Buffer of each uploaded file: one multipart part (S3's minimum part
/// size is 5 MiB).
const UPLOAD_BUFFER: usize = 5 << 20;
/// Series rows buffered before they are written.
const SERIES_BATCH: usize = 4096;

/// Reads a block's samples in file order (series by series), a window of
/// rows at a time.
pub struct SampleCursor {
    block: String,
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    footer: Arc<parquet::file::metadata::ParquetMetaData>,
    total_rows: u64,
    next_row: u64,
    stream: Option<ParquetRecordBatchStream<ObjectReader>>,
    refs: Vec<u32>,
    ts: Vec<i64>,
    vs: Vec<f64>,
    /// The rows of a downsampled block.
    windows: Vec<crate::Window>,
    downsampled: bool,
    pos: usize,
}

impl SampleCursor {
    /// Opens `samples.parquet` of the block `meta` describes.
    pub async fn open(store: Arc<dyn ObjectStore>, meta: &BlockMeta) -> Result<SampleCursor, BlockError> {
        use parquet::arrow::async_reader::AsyncFileReader;
        let file = meta.data_file();
        let size = meta
            .strata
            .files
            .iter()
            .find(|f| f.path == file)
            .map(|f| f.size)
            .ok_or_else(|| BlockError::Invalid(format!("block {}: meta.json lists no {file}", meta.ulid)))?;
        let path = Path::from(format!("{}/{}/{file}", meta.strata.tenant, meta.ulid));
        let mut reader = ObjectReader { store: store.clone(), path: path.clone(), size, footer: None, cache: None };
        let footer = reader.get_metadata(None).await?;
        let total_rows = u64::try_from(footer.file_metadata().num_rows())
            .map_err(|_| BlockError::Invalid(format!("block {}: negative row count", meta.ulid)))?;
        Ok(SampleCursor {
            block: meta.ulid.clone(),
            store,
            path,
            size,
            footer,
            total_rows,
            next_row: 0,
            stream: None,
            refs: Vec::new(),
            ts: Vec::new(),
            vs: Vec::new(),
            windows: Vec::new(),
            downsampled: meta.downsample.resolution > 0,
            pos: 0,
        })
    }

    /// A stream over the next window of rows, or `None` at the end.
    fn next_window(&mut self) -> Result<Option<ParquetRecordBatchStream<ObjectReader>>, BlockError> {
        use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector};
        if self.next_row >= self.total_rows {
            return Ok(None);
        }
        let n = WINDOW_ROWS.min(self.total_rows - self.next_row);
        let selection =
            RowSelection::from(vec![RowSelector::skip(self.next_row as usize), RowSelector::select(n as usize)]);
        self.next_row += n;
        let options =
            ArrowReaderOptions::new().with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional);
        let metadata = ArrowReaderMetadata::try_new(self.footer.clone(), options)?;
        let reader = ObjectReader {
            store: self.store.clone(),
            path: self.path.clone(),
            size: self.size,
            footer: Some(self.footer.clone()),
            cache: None,
        };
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
            .with_batch_size(BATCH_ROWS)
            .with_row_selection(selection)
            .build()?;
        Ok(Some(stream))
    }

    async fn fill(&mut self) -> Result<bool, BlockError> {
        while self.pos >= self.refs.len() {
            let batch = match self.stream.as_mut() {
                Some(stream) => stream.next().await,
                None => None,
            };
            let Some(batch) = batch else {
                match self.next_window()? {
                    Some(stream) => {
                        self.stream = Some(stream);
                        continue;
                    }
                    None => return Ok(false),
                }
            };
            let batch = batch?;
            if self.downsampled {
                let c = crate::downsample::WindowColumns::of(&batch)?;
                self.windows = (0..batch.num_rows()).map(|i| c.window(i)).collect();
                self.refs = c.series_ref.values().to_vec();
                self.pos = 0;
                continue;
            }
            let col = |name: &str| {
                batch.column_by_name(name).cloned().ok_or_else(|| {
                    BlockError::Invalid(format!("block {}: samples.parquet has no column {name}", self.block))
                })
            };
            let bad = |name: &str| BlockError::Invalid(format!("block {}: samples.parquet column {name}", self.block));
            let (r, t, v) = (col("series_ref")?, col("timestamp")?, col("value")?);
            self.refs = r.as_any().downcast_ref::<UInt32Array>().ok_or_else(|| bad("series_ref"))?.values().to_vec();
            self.ts = t.as_any().downcast_ref::<Int64Array>().ok_or_else(|| bad("timestamp"))?.values().to_vec();
            self.vs = v.as_any().downcast_ref::<Float64Array>().ok_or_else(|| bad("value"))?.values().to_vec();
            self.pos = 0;
        }
        Ok(true)
    }

    /// Appends the `n` samples of series `sref` — the next series in the
    /// file — to `out`, checking that the rows are that series' and in time
    /// order.
    pub async fn take(&mut self, sref: u32, n: u64, out: &mut Vec<(i64, f64)>) -> Result<(), BlockError> {
        if self.downsampled {
            return Err(BlockError::Invalid(format!("block {} is downsampled: read its windows", self.block)));
        }
        let mut left = n;
        let mut last = i64::MIN;
        while left > 0 {
            if !self.fill().await? {
                return Err(BlockError::Invalid(format!(
                    "block {}: samples.parquet ends {left} samples short of series {sref}",
                    self.block
                )));
            }
            while left > 0 && self.pos < self.refs.len() {
                let (r, t) = (self.refs[self.pos], self.ts[self.pos]);
                if r != sref {
                    return Err(BlockError::Invalid(format!(
                        "block {}: samples.parquet has series_ref {r} where series {sref} was expected",
                        self.block
                    )));
                }
                if t <= last {
                    return Err(BlockError::Invalid(format!(
                        "block {}: series {sref} has timestamps out of order ({t} after {last})",
                        self.block
                    )));
                }
                last = t;
                out.push((t, self.vs[self.pos]));
                self.pos += 1;
                left -= 1;
            }
        }
        Ok(())
    }

    /// [`SampleCursor::take`] for a downsampled block: the next `n`
    /// windows, of series `sref`.
    pub async fn take_windows(&mut self, sref: u32, n: u64, out: &mut Vec<crate::Window>) -> Result<(), BlockError> {
        if !self.downsampled {
            return Err(BlockError::Invalid(format!("block {} holds raw samples", self.block)));
        }
        let mut left = n;
        let mut last = i64::MIN;
        while left > 0 {
            if !self.fill().await? {
                return Err(BlockError::Invalid(format!(
                    "block {}: aggregates end {left} rows short of series {sref}",
                    self.block
                )));
            }
            while left > 0 && self.pos < self.refs.len() {
                let (r, w) = (self.refs[self.pos], self.windows[self.pos]);
                if r != sref || w.t <= last {
                    return Err(BlockError::Invalid(format!(
                        "block {}: aggregates out of order at series_ref {r} (expected {sref}), time {}",
                        self.block, w.t
                    )));
                }
                last = w.t;
                out.push(w);
                self.pos += 1;
                left -= 1;
            }
        }
        Ok(())
    }

    /// Fails if rows are left (the series file lists fewer samples than
    /// the samples file holds).
    pub async fn finish(mut self) -> Result<(), BlockError> {
        if self.fill().await? {
            return Err(BlockError::Invalid(format!(
                "block {}: samples.parquet holds rows past the series its series.parquet lists",
                self.block
            )));
        }
        Ok(())
    }
}

/// Writes a block series by series, in the order blocks are sorted
/// (`__name__`, then the label set), uploading as it goes. [`BlockWriter::finish`]
/// completes both files and returns the block's `meta.json`, which the
/// caller writes (after checking the block) to make it visible.
pub struct BlockWriter {
    tenant: String,
    shard: String,
    id: String,
    store: Arc<dyn ObjectStore>,
    label_names: Vec<String>,
    series_schema: SchemaRef,
    samples_schema: SchemaRef,
    series_file: AsyncArrowWriter<BufWriter>,
    samples_file: AsyncArrowWriter<BufWriter>,
    /// The [`crate::ROLLUP_FILE`] of a block finer than an hour, with its pending rows.
    rollup_file: Option<AsyncArrowWriter<BufWriter>>,
    rollup_refs: Vec<u32>,
    rollup_rows: Vec<crate::Window>,
    /// Per pending series: labels, rows, rollup windows.
    pending_series: Vec<(Labels, u32, u32)>,
    refs: Vec<u32>,
    ts: Vec<i64>,
    vs: Vec<f64>,
    /// Rows of a downsampled block (with `refs`).
    windows: Vec<crate::Window>,
    /// 0, or the resolution of a downsampled block.
    resolution: i64,
    next_ref: u32,
    samples: u64,
    last_key: Option<(String, Labels)>,
}

impl BlockWriter {
    /// `label_names`: every label name of the series to come (besides `__name__`).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        tenant: &str,
        shard: &str,
        id: &str,
        label_names: &BTreeSet<String>,
    ) -> Result<BlockWriter, BlockError> {
        BlockWriter::with_resolution(store, tenant, shard, id, label_names, 0)
    }

    /// A writer of a downsampled block of `resolution` ms (rows added
    /// with [`BlockWriter::add_windows`]).
    pub fn with_resolution(
        store: Arc<dyn ObjectStore>,
        tenant: &str,
        shard: &str,
        id: &str,
        label_names: &BTreeSet<String>,
        resolution: i64,
    ) -> Result<BlockWriter, BlockError> {
        let label_names: Vec<String> = label_names.iter().filter(|n| *n != METRIC_NAME).cloned().collect();
        let mut fields =
            vec![Field::new("series_ref", DataType::UInt32, false), Field::new("num_samples", DataType::UInt32, false)];
        // Blocks finer than the rollup carry one.
        let rollup = resolution < crate::ROLLUP_RESOLUTION_MS;
        if rollup {
            fields.push(Field::new(crate::ROLLUP_WINDOWS, DataType::UInt32, false));
        }
        fields.push(Field::new(METRIC_NAME, dict_type(), false));
        fields.extend(label_names.iter().map(|n| Field::new(format!("l_{n}"), dict_type(), true)));
        let series_schema = Arc::new(Schema::new(fields));
        let samples_schema = if resolution > 0 {
            crate::downsample::aggregates_schema()
        } else {
            Arc::new(Schema::new(vec![
                Field::new("series_ref", DataType::UInt32, false),
                Field::new("timestamp", DataType::Int64, false),
                Field::new("value", DataType::Float64, false),
            ]))
        };
        let dir = format!("{tenant}/{id}");
        let writer =
            |name: &str| BufWriter::with_capacity(store.clone(), Path::from(format!("{dir}/{name}")), UPLOAD_BUFFER);
        let series_props = props_with_row_groups(true, WRITER_ROW_GROUP)?;
        let (data_file, samples_props) = if resolution > 0 {
            (crate::AGGREGATES_FILE, crate::downsample::aggregates_props(WRITER_ROW_GROUP)?)
        } else {
            ("samples.parquet", props_with_row_groups(false, WRITER_ROW_GROUP)?)
        };
        let series_file =
            AsyncArrowWriter::try_new(writer("series.parquet"), series_schema.clone(), Some(series_props))?;
        let samples_file = AsyncArrowWriter::try_new(writer(data_file), samples_schema.clone(), Some(samples_props))?;
        let rollup_file = if rollup {
            let props = crate::downsample::aggregates_props(WRITER_ROW_GROUP)?;
            let schema = crate::downsample::aggregates_schema();
            Some(AsyncArrowWriter::try_new(writer(crate::ROLLUP_FILE), schema, Some(props))?)
        } else {
            None
        };
        Ok(BlockWriter {
            tenant: tenant.into(),
            shard: shard.into(),
            id: id.into(),
            store,
            label_names,
            series_schema,
            samples_schema,
            series_file,
            samples_file,
            rollup_file,
            rollup_refs: Vec::new(),
            rollup_rows: Vec::new(),
            pending_series: Vec::new(),
            refs: Vec::new(),
            ts: Vec::new(),
            vs: Vec::new(),
            windows: Vec::new(),
            resolution,
            next_ref: 0,
            samples: 0,
            last_key: None,
        })
    }

    /// Adds the next series (in block order) with its samples (time order).
    pub async fn add(&mut self, labels: &Labels, samples: &[(i64, f64)]) -> Result<(), BlockError> {
        if self.resolution > 0 {
            return Err(BlockError::Invalid("raw samples added to a downsampled block".into()));
        }
        let r = self
            .next_series_with_rollup(labels, samples.len(), |rollup| {
                crate::windows_of_samples(samples, crate::ROLLUP_RESOLUTION_MS, rollup)
            })
            .await?;
        for &(t, v) in samples {
            self.refs.push(r);
            self.ts.push(t);
            self.vs.push(v);
            if self.refs.len() >= BATCH_ROWS {
                self.flush_samples().await?;
            }
        }
        self.samples += samples.len() as u64;
        if self.pending_series.len() >= SERIES_BATCH {
            self.flush_series().await?;
        }
        Ok(())
    }

    /// Adds the next series (in block order) of a downsampled block with
    /// its windows (time order).
    pub async fn add_windows(&mut self, labels: &Labels, windows: &[crate::Window]) -> Result<(), BlockError> {
        if self.resolution <= 0 {
            return Err(BlockError::Invalid("windows added to a raw block".into()));
        }
        let r = self
            .next_series_with_rollup(labels, windows.len(), |rollup| {
                crate::downsample(windows, crate::ROLLUP_RESOLUTION_MS, rollup)
            })
            .await?;
        for w in windows {
            self.refs.push(r);
            self.windows.push(*w);
            if self.refs.len() >= BATCH_ROWS {
                self.flush_samples().await?;
            }
        }
        self.samples += windows.len() as u64;
        if self.pending_series.len() >= SERIES_BATCH {
            self.flush_series().await?;
        }
        Ok(())
    }

    /// [`BlockWriter::next_series`] for a series of `rows` rows whose
    /// rollup windows `fold` appends (when the block has a rollup); a
    /// refused series leaves no windows behind.
    async fn next_series_with_rollup(
        &mut self,
        labels: &Labels,
        rows: usize,
        fold: impl FnOnce(&mut Vec<crate::Window>),
    ) -> Result<u32, BlockError> {
        let before = self.rollup_rows.len();
        if self.rollup_file.is_some() {
            fold(&mut self.rollup_rows);
        }
        let r = match self.next_series(labels, rows, self.rollup_rows.len() - before) {
            Ok(r) => r,
            Err(e) => {
                self.rollup_rows.truncate(before);
                return Err(e);
            }
        };
        self.rollup_refs.resize(self.rollup_rows.len(), r);
        if self.rollup_refs.len() >= BATCH_ROWS {
            self.flush_rollup().await?;
        }
        Ok(r)
    }

    /// Checks the order and label names of the next series and gives it its ref.
    fn next_series(&mut self, labels: &Labels, rows: usize, rollup_rows: usize) -> Result<u32, BlockError> {
        let key = (labels.get(METRIC_NAME).unwrap_or("").to_string(), labels.clone());
        if self.last_key.as_ref().is_some_and(|k| *k >= key) {
            return Err(BlockError::Invalid(format!("series {labels:?} added out of order")));
        }
        let unknown = labels
            .iter()
            .find(|(n, _)| *n != METRIC_NAME && self.label_names.binary_search_by(|x| x.as_str().cmp(n)).is_err());
        if let Some((n, _)) = unknown {
            return Err(BlockError::Invalid(format!("label {n} not among the block's label names")));
        }
        self.last_key = Some(key);
        let r = self.next_ref;
        self.next_ref = self.next_ref.checked_add(1).ok_or_else(|| BlockError::Invalid("too many series".into()))?;
        let n = u32::try_from(rows).map_err(|_| BlockError::Invalid("too many samples in one series".into()))?;
        let w = u32::try_from(rollup_rows).map_err(|_| BlockError::Invalid("too many windows in one series".into()))?;
        self.pending_series.push((labels.clone(), n, w));
        Ok(r)
    }

    async fn flush_samples(&mut self) -> Result<(), BlockError> {
        if self.refs.is_empty() {
            return Ok(());
        }
        if self.resolution > 0 {
            let rows = std::mem::take(&mut self.windows);
            let batch = crate::downsample::windows_batch(&self.samples_schema, std::mem::take(&mut self.refs), &rows)?;
            self.samples_file.write(&batch).await?;
            return Ok(());
        }
        let batch = RecordBatch::try_new(
            self.samples_schema.clone(),
            vec![
                Arc::new(UInt32Array::from(std::mem::take(&mut self.refs))),
                Arc::new(Int64Array::from(std::mem::take(&mut self.ts))),
                Arc::new(Float64Array::from(std::mem::take(&mut self.vs))),
            ],
        )?;
        self.samples_file.write(&batch).await?;
        Ok(())
    }

    async fn flush_rollup(&mut self) -> Result<(), BlockError> {
        let Some(file) = self.rollup_file.as_mut() else { return Ok(()) };
        if self.rollup_refs.is_empty() {
            return Ok(());
        }
        let schema = crate::downsample::aggregates_schema();
        let rows = std::mem::take(&mut self.rollup_rows);
        let batch = crate::downsample::windows_batch(&schema, std::mem::take(&mut self.rollup_refs), &rows)?;
        file.write(&batch).await?;
        Ok(())
    }

    async fn flush_series(&mut self) -> Result<(), BlockError> {
        if self.pending_series.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending_series);
        let first = self.next_ref - rows.len() as u32;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from((first..self.next_ref).collect::<Vec<u32>>())),
            Arc::new(UInt32Array::from(rows.iter().map(|(_, n, _)| *n).collect::<Vec<u32>>())),
        ];
        if self.rollup_file.is_some() {
            columns.push(Arc::new(UInt32Array::from(rows.iter().map(|(_, _, w)| *w).collect::<Vec<u32>>())));
        }
        columns.push(Arc::new(
            rows.iter().map(|(l, ..)| Some(l.get(METRIC_NAME).unwrap_or(""))).collect::<DictionaryArray<Int32Type>>(),
        ));
        for n in &self.label_names {
            columns.push(Arc::new(rows.iter().map(|(l, ..)| l.get(n)).collect::<DictionaryArray<Int32Type>>()));
        }
        let batch = RecordBatch::try_new(self.series_schema.clone(), columns)?;
        self.series_file.write(&batch).await?;
        Ok(())
    }

    /// Completes and uploads both files; the block's `meta.json` (not yet
    /// written).
    pub async fn finish(mut self, range: (i64, i64), compaction: Compaction) -> Result<BlockMeta, BlockError> {
        self.flush_samples().await?;
        self.flush_rollup().await?;
        self.flush_series().await?;
        self.samples_file.close().await?;
        self.series_file.close().await?;
        let mut names = vec!["series.parquet"];
        if self.resolution > 0 {
            names.push(crate::AGGREGATES_FILE);
        } else {
            names.push("samples.parquet");
        }
        if let Some(file) = self.rollup_file.take() {
            file.close().await?;
            names.push(crate::ROLLUP_FILE);
        }
        let dir = format!("{}/{}", self.tenant, self.id);
        let mut files = Vec::new();
        for name in names {
            let head = self.store.head(&Path::from(format!("{dir}/{name}"))).await?;
            files.push(FileInfo { path: name.into(), size: head.size });
        }
        Ok(BlockMeta {
            ulid: self.id.clone(),
            min_time: range.0,
            max_time: range.1,
            stats: BlockStats { num_samples: self.samples, num_series: self.next_ref as u64 },
            compaction,
            version: 1,
            strata: StrataMeta {
                schema_version: SCHEMA_VERSION,
                tenant: self.tenant.clone(),
                shard: self.shard.clone(),
                raft_log_range: None,
                files,
            },
            downsample: Downsample { resolution: self.resolution },
        })
    }
}

/// Writes `meta.json`, which makes the block visible.
pub async fn publish_block(store: &dyn ObjectStore, meta: &BlockMeta) -> Result<(), BlockError> {
    let path = Path::from(format!("{}/{}/meta.json", meta.strata.tenant, meta.ulid));
    store.put(&path, bytes::Bytes::from(serde_json::to_vec_pretty(meta)?).into()).await?;
    Ok(())
}

/// Rows of a block's `samples.parquet` per its footer (read back from the store).
pub async fn sample_rows(store: Arc<dyn ObjectStore>, meta: &BlockMeta) -> Result<u64, BlockError> {
    let file = meta.data_file();
    let size = meta.strata.files.iter().find(|f| f.path == file).map(|f| f.size).unwrap_or(0);
    let path = Path::from(format!("{}/{}/{file}", meta.strata.tenant, meta.ulid));
    let reader = ObjectReader { store, path, size, footer: None, cache: None };
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SeriesData, read_block};
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn written_series_by_series_reads_back_as_written() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut input: Vec<SeriesData> = (0..5000)
            .map(|i| SeriesData {
                labels: Labels::from_pairs(vec![
                    (METRIC_NAME.into(), format!("m{}", i % 3)),
                    ("i".into(), format!("{i:05}")),
                    if i % 2 == 0 { ("even".into(), "y".into()) } else { ("odd".into(), "y".into()) },
                ]),
                samples: (0..(i % 7) as i64 * 3).map(|k| (k * 1000, (i * 10) as f64 + k as f64)).collect(),
            })
            .collect();
        input.sort_by(|a, b| (a.labels.get(METRIC_NAME), &a.labels).cmp(&(b.labels.get(METRIC_NAME), &b.labels)));
        let names: BTreeSet<String> = ["i", "even", "odd"].map(String::from).into();
        let mut w = BlockWriter::new(store.clone(), "t", "s", "b-1", &names).unwrap();
        for s in &input {
            w.add(&s.labels, &s.samples).await.unwrap();
        }
        assert!(w.add(&input[0].labels, &[]).await.is_err(), "out of order refused");
        // Also with samples: refused, and nothing of it (rollup windows
        // included) reaches the block.
        assert!(w.add(&input[0].labels, &[(0, 1.0), (4_000_000, 2.0)]).await.is_err());
        let compaction = Compaction { level: 2, sources: vec!["a".into()] };
        let meta = w.finish((0, 100_000), compaction).await.unwrap();
        publish_block(store.as_ref(), &meta).await.unwrap();
        let (back_meta, back) = read_block(store.as_ref(), "t", "b-1").await.unwrap();
        assert_eq!(back_meta, meta);
        assert_eq!(back, input);
        let total: usize = input.iter().map(|s| s.samples.len()).sum();
        assert_eq!(meta.stats.num_samples, total as u64);
        assert_eq!(sample_rows(store.clone(), &meta).await.unwrap(), total as u64);

        // The cursor hands the samples back series by series.
        let idx = crate::BlockIndex::load(store.as_ref(), meta.clone()).await.unwrap();
        let mut cursor = SampleCursor::open(store.clone(), &meta).await.unwrap();
        for (r, s) in input.iter().enumerate() {
            let mut out = Vec::new();
            let n = idx.row_start[r + 1] - idx.row_start[r];
            cursor.take(r as u32, n, &mut out).await.unwrap();
            assert_eq!(out, s.samples);
        }
        cursor.finish().await.unwrap();
        // A cursor asked for the wrong series refuses.
        let mut cursor = SampleCursor::open(store.clone(), &meta).await.unwrap();
        let first_with_samples = (0..input.len()).find(|&r| !input[r].samples.is_empty()).unwrap();
        let err = cursor.take(first_with_samples as u32 + 1, 1, &mut Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("where series"), "{err}");
    }
}
