//! SQL over Strata's blocks with DataFusion.
//!
//! For one tenant, every block in the bucket becomes part of two tables:
//!
//! * `series(block, series_ref, "__name__", l_<label>..., num_samples)`:
//!   one row per series per block; label columns are the union over the
//!   tenant's blocks (NULL where a block's series lack the label);
//! * `samples(block, series_ref, timestamp, value)`: one row per sample,
//!   `timestamp` in milliseconds since the epoch.
//!
//! `(block, series_ref)` joins the two. Only queries run: DDL, DML and
//! statements such as `SET` are rejected. Data still in the ingesters' heads
//! (the last block range) is not visible here; PromQL sees both.
//!
//! Safe by default (the querier's `--sql.*` flags): a session sees only
//! the caller's tenant's blocks, with no table functions
//! (`generate_series`, `range`, …) and no URL tables, so nothing reads
//! outside those blocks; all SQL queries share one memory pool
//! (`max_memory`: an operator past it fails with "Resources exhausted"
//! instead of growing the querier); at most `max_concurrency` run at once;
//! they run on a runtime of their own (`threads` worker threads), so a
//! heavy query cannot starve PromQL's; a query lists only its tenant's
//! prefix (one LIST) and reads the `meta.json` of blocks it has not seen
//! before (blocks are immutable), instead of every block's per query.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::ParquetReadOptions;
use datafusion::prelude::SessionConfig;
use object_store::ObjectStore;
use serde_json::Value;
use strata_blocks::{BlockMeta, BucketConfig};

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The SQL does not parse, names an unknown column, or is not a query.
    #[error("{0}")]
    BadQuery(String),
    /// The query failed while running.
    #[error("{0}")]
    Execution(String),
    /// The bucket could not be read.
    #[error("object storage: {0}")]
    Storage(String),
    #[error("query timed out after {0:?}")]
    Timeout(Duration),
    /// Every SQL slot stayed busy until the query's deadline.
    #[error("too many SQL queries running (--sql.max-concurrency {0}); retry later")]
    Busy(usize),
}

impl SqlError {
    /// Prometheus-style `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            SqlError::BadQuery(_) => "bad_data",
            SqlError::Execution(_) => "execution",
            SqlError::Storage(_) => "unavailable",
            SqlError::Timeout(_) => "timeout",
            SqlError::Busy(_) => "unavailable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// Rows returned at most; the result says when it was cut.
    pub max_rows: usize,
    pub timeout: Duration,
    /// Bytes the operators of all SQL queries together may hold.
    pub max_memory: usize,
    /// SQL queries running at once; more wait (within their timeout).
    pub max_concurrency: usize,
    /// Worker threads of SQL's own runtime.
    pub threads: usize,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            max_rows: 10_000,
            timeout: Duration::from_secs(60),
            max_memory: 512 << 20,
            max_concurrency: 2,
            threads: 1,
        }
    }
}

/// A query result: column names and types, rows of JSON values (numbers
/// as numbers, non-finite floats as strings such as `"NaN"`).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlResult {
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<Value>>,
    pub truncated: bool,
}

/// `meta.json`s kept; past it the cache starts over.
const MAX_CACHED_METAS: usize = 100_000;

/// Runs SQL over one bucket's blocks.
pub struct SqlEngine {
    inner: Arc<Inner>,
    slots: tokio::sync::Semaphore,
    runtime: SqlRuntime,
}

struct Inner {
    /// The bucket with its prefix applied (block listing).
    store: Arc<dyn ObjectStore>,
    /// The bucket itself and the prefix, for DataFusion's file URLs.
    root: Arc<dyn ObjectStore>,
    prefix: String,
    opts: SqlOptions,
    /// The memory pool every session shares.
    runtime_env: Arc<RuntimeEnv>,
    /// `meta.json` of the blocks seen so far, by path (blocks are immutable).
    metas: Mutex<std::collections::HashMap<object_store::path::Path, BlockMeta>>,
}

/// SQL's own runtime; shut down without waiting when the engine goes
/// (dropping a runtime inside another one would panic).
struct SqlRuntime(Option<tokio::runtime::Runtime>);

impl Drop for SqlRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

const STORE_URL: &str = "strata://blocks/";

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl SqlEngine {
    /// Opens `bucket` (see `strata_blocks::BucketConfig`).
    pub fn open(bucket: &BucketConfig, opts: SqlOptions) -> Result<SqlEngine, SqlError> {
        let store = bucket.open().map_err(|e| SqlError::Storage(e.to_string()))?;
        let (root, prefix) = bucket.open_root().map_err(|e| SqlError::Storage(e.to_string()))?;
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_limit(opts.max_memory.max(1), 1.0)
            .build_arc()
            .map_err(|e| SqlError::Execution(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads.max(1))
            .thread_name("strata-sql")
            .enable_all()
            .build()
            .map_err(|e| SqlError::Execution(format!("cannot start the SQL runtime: {e}")))?;
        Ok(SqlEngine {
            slots: tokio::sync::Semaphore::new(opts.max_concurrency.max(1)),
            inner: Arc::new(Inner { store, root, prefix, opts, runtime_env, metas: Mutex::default() }),
            runtime: SqlRuntime(Some(runtime)),
        })
    }

    /// Runs `sql` over `tenant`'s blocks, on SQL's own runtime, within the
    /// timeout (waiting for a slot included).
    pub async fn query(&self, tenant: &str, sql: &str) -> Result<SqlResult, SqlError> {
        let timeout = self.inner.opts.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let _slot = tokio::time::timeout_at(deadline, self.slots.acquire())
            .await
            .map_err(|_| SqlError::Busy(self.inner.opts.max_concurrency))?
            .map_err(|e| SqlError::Execution(e.to_string()))?;
        let Some(rt) = &self.runtime.0 else { return Err(SqlError::Execution("the SQL runtime is gone".into())) };
        let (inner, tenant, sql) = (self.inner.clone(), tenant.to_string(), sql.to_string());
        let mut task = rt.spawn(async move { inner.run(&tenant, &sql).await });
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(SqlError::Execution(format!("SQL task failed: {e}"))),
            Err(_) => {
                task.abort();
                Err(SqlError::Timeout(timeout))
            }
        }
    }
}

impl Inner {
    /// `tenant`'s visible blocks: one LIST of its prefix, and the
    /// `meta.json` of blocks not seen before.
    async fn blocks(&self, tenant: &str) -> Result<Vec<BlockMeta>, SqlError> {
        let storage = |e: strata_blocks::BlockError| SqlError::Storage(e.to_string());
        let paths = strata_blocks::list_meta_paths(self.store.as_ref(), Some(tenant)).await.map_err(storage)?;
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            let known = self.metas.lock().ok().and_then(|m| m.get(&p).cloned());
            let meta = match known {
                Some(m) => m,
                None => {
                    let m = strata_blocks::read_meta(self.store.as_ref(), &p).await.map_err(storage)?;
                    if let Ok(mut g) = self.metas.lock() {
                        if g.len() >= MAX_CACHED_METAS {
                            g.clear();
                        }
                        g.insert(p, m.clone());
                    }
                    m
                }
            };
            // A block under the tenant's prefix is the tenant's; the check
            // keeps a mislabelled one out all the same.
            // Raw blocks only: the `samples` table is raw samples
            // (downsampled blocks hold aggregates of the same data).
            if meta.strata.tenant == tenant && meta.downsample.resolution == 0 {
                out.push(meta);
            }
        }
        out.sort_by(|a, b| (a.min_time, &a.ulid).cmp(&(b.min_time, &b.ulid)));
        Ok(out)
    }

    async fn run(&self, tenant: &str, sql: &str) -> Result<SqlResult, SqlError> {
        let blocks = self.blocks(tenant).await?;
        let ctx = self.context(tenant, &blocks).await?;
        let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let df = ctx.sql_with_options(sql, read_only).await.map_err(|e| SqlError::BadQuery(e.to_string()))?;
        let columns: Vec<(String, String)> =
            df.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect();
        let limited =
            df.limit(0, Some(self.opts.max_rows.saturating_add(1))).map_err(|e| SqlError::BadQuery(e.to_string()))?;
        let batches = limited.collect().await.map_err(|e| {
            let m = e.to_string();
            if m.contains("Resources exhausted") {
                SqlError::Execution(format!("{m} (the SQL memory pool, --sql.max-memory, is full)"))
            } else {
                SqlError::Execution(m)
            }
        })?;
        let mut rows = Vec::new();
        let fmt = FormatOptions::default().with_null("");
        for b in &batches {
            let formatters: Vec<ArrayFormatter> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &fmt))
                .collect::<Result<_, _>>()
                .map_err(|e| SqlError::Execution(e.to_string()))?;
            for row in 0..b.num_rows() {
                rows.push(b.columns().iter().zip(&formatters).map(|(c, f)| cell(c, row, f)).collect());
            }
        }
        let truncated = rows.len() > self.opts.max_rows;
        rows.truncate(self.opts.max_rows);
        Ok(SqlResult { columns, rows, truncated })
    }

    /// A session with the tenant's `series` and `samples` views, the
    /// shared memory pool, and no table functions.
    async fn context(&self, tenant: &str, blocks: &[BlockMeta]) -> Result<SessionContext, SqlError> {
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new())
            .with_runtime_env(self.runtime_env.clone())
            .with_default_features()
            .with_table_function_list(Vec::new())
            .build();
        let ctx = SessionContext::new_with_state(state);
        let base = url::Url::parse(STORE_URL).map_err(|e| SqlError::Execution(e.to_string()))?;
        ctx.register_object_store(&base, self.root.clone());
        let file_url = |id: &str, file: &str| {
            let mut u = base.clone();
            if let Ok(mut seg) = u.path_segments_mut() {
                seg.pop_if_empty();
                for part in self.prefix.split('/').filter(|p| !p.is_empty()) {
                    seg.push(part);
                }
                seg.push(tenant).push(id).push(file);
            }
            u.to_string()
        };
        if blocks.is_empty() {
            let series = Schema::new(vec![
                Field::new("block", DataType::Utf8, false),
                Field::new("series_ref", DataType::UInt32, false),
                Field::new("__name__", DataType::Utf8, false),
                Field::new("num_samples", DataType::UInt32, false),
            ]);
            let samples = Schema::new(vec![
                Field::new("block", DataType::Utf8, false),
                Field::new("series_ref", DataType::UInt32, false),
                Field::new("timestamp", DataType::Int64, false),
                Field::new("value", DataType::Float64, false),
            ]);
            for (name, schema) in [("series", series), ("samples", samples)] {
                let t = MemTable::try_new(Arc::new(schema), vec![vec![]])
                    .map_err(|e| SqlError::Execution(e.to_string()))?;
                ctx.register_table(name, Arc::new(t)).map_err(|e| SqlError::Execution(e.to_string()))?;
            }
            return Ok(ctx);
        }
        let mut label_columns: std::collections::BTreeSet<String> = Default::default();
        let mut per_block_labels = Vec::with_capacity(blocks.len());
        for (i, m) in blocks.iter().enumerate() {
            let (s, p) = (format!("s_{i}"), format!("p_{i}"));
            ctx.register_parquet(&s, file_url(&m.ulid, "series.parquet"), ParquetReadOptions::default())
                .await
                .map_err(|e| SqlError::Storage(format!("block {}: {e}", m.ulid)))?;
            ctx.register_parquet(&p, file_url(&m.ulid, "samples.parquet"), ParquetReadOptions::default())
                .await
                .map_err(|e| SqlError::Storage(format!("block {}: {e}", m.ulid)))?;
            let table = ctx.table_provider(&s).await.map_err(|e| SqlError::Execution(e.to_string()))?;
            let names: Vec<String> =
                table.schema().fields().iter().map(|f| f.name().clone()).filter(|n| n.starts_with("l_")).collect();
            label_columns.extend(names.iter().cloned());
            per_block_labels.push(names);
        }
        let mut series_parts = Vec::with_capacity(blocks.len());
        let mut samples_parts = Vec::with_capacity(blocks.len());
        for (i, m) in blocks.iter().enumerate() {
            let mut cols = vec![
                format!("{} AS block", literal(&m.ulid)),
                "series_ref".to_string(),
                format!("CAST({} AS VARCHAR) AS {}", ident("__name__"), ident("__name__")),
            ];
            for l in &label_columns {
                if per_block_labels[i].contains(l) {
                    cols.push(format!("CAST({} AS VARCHAR) AS {}", ident(l), ident(l)));
                } else {
                    cols.push(format!("CAST(NULL AS VARCHAR) AS {}", ident(l)));
                }
            }
            cols.push("num_samples".to_string());
            series_parts.push(format!("SELECT {} FROM s_{i}", cols.join(", ")));
            samples_parts
                .push(format!("SELECT {} AS block, series_ref, timestamp, value FROM p_{i}", literal(&m.ulid)));
        }
        for (name, parts) in [("series", series_parts), ("samples", samples_parts)] {
            let view = format!("CREATE VIEW {name} AS {}", parts.join(" UNION ALL "));
            ctx.sql(&view).await.map_err(|e| SqlError::Execution(format!("building {name}: {e}")))?;
        }
        Ok(ctx)
    }
}

fn cell(col: &ArrayRef, row: usize, f: &ArrayFormatter) -> Value {
    if col.is_null(row) {
        return Value::Null;
    }
    let text = f.value(row).to_string();
    match col.data_type() {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            text.parse::<i64>().map(Value::from).unwrap_or(Value::String(text))
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            text.parse::<u64>().map(Value::from).unwrap_or(Value::String(text))
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Value::from(v),
            _ => Value::String(text),
        },
        DataType::Boolean => Value::Bool(text == "true"),
        _ => Value::String(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_blocks::{SeriesData, upload_block};
    use strata_model::Labels;

    fn series(pairs: &[(&str, &str)], samples: Vec<(i64, f64)>) -> SeriesData {
        SeriesData {
            labels: Labels::from_pairs(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()),
            samples,
        }
    }

    async fn bucket() -> (tempfile::TempDir, BucketConfig) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BucketConfig::Filesystem { path: dir.path().to_path_buf() };
        let store = cfg.open().unwrap();
        // Two blocks with different label sets, and another tenant.
        upload_block(
            store.as_ref(),
            "t1",
            "s",
            0,
            60_000,
            &[
                series(&[("__name__", "up"), ("job", "api")], vec![(0, 1.0), (30_000, 1.0)]),
                series(&[("__name__", "req_total"), ("job", "api"), ("code", "200")], vec![(0, 5.0), (30_000, 7.0)]),
            ],
        )
        .await
        .unwrap();
        upload_block(
            store.as_ref(),
            "t1",
            "s",
            60_000,
            120_000,
            &[series(&[("__name__", "up"), ("job", "api"), ("zone", "eu")], vec![(60_000, 0.0), (90_000, f64::NAN)])],
        )
        .await
        .unwrap();
        upload_block(store.as_ref(), "t2", "s", 0, 60_000, &[series(&[("__name__", "other")], vec![(0, 9.0)])])
            .await
            .unwrap();
        (dir, cfg)
    }

    #[tokio::test]
    async fn series_and_samples_join_across_blocks() {
        let (_dir, cfg) = bucket().await;
        let engine = SqlEngine::open(&cfg, SqlOptions::default()).unwrap();
        let r = engine
            .query(
                "t1",
                "SELECT s.\"__name__\", s.l_job, s.l_zone, count(*) AS n, sum(p.value) AS total \
                 FROM samples p JOIN series s ON p.block = s.block AND p.series_ref = s.series_ref \
                 GROUP BY 1, 2, 3 ORDER BY 1, 3 NULLS FIRST",
            )
            .await
            .unwrap();
        let names: Vec<&str> = r.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["__name__", "l_job", "l_zone", "n", "total"]);
        assert_eq!(
            r.rows,
            vec![
                vec![Value::from("req_total"), Value::from("api"), Value::Null, Value::from(2), Value::from(12.0)],
                vec![Value::from("up"), Value::from("api"), Value::Null, Value::from(2), Value::from(2.0)],
                vec![Value::from("up"), Value::from("api"), Value::from("eu"), Value::from(2), Value::from("NaN")],
            ]
        );
        assert!(!r.truncated);
        // Tenants are separate.
        let r = engine.query("t2", "SELECT count(*) FROM series").await.unwrap();
        assert_eq!(r.rows, vec![vec![Value::from(1)]]);
    }

    #[tokio::test]
    async fn limits_read_only_and_errors() {
        let (_dir, cfg) = bucket().await;
        let engine = SqlEngine::open(&cfg, SqlOptions { max_rows: 2, ..Default::default() }).unwrap();
        let r = engine.query("t1", "SELECT * FROM samples ORDER BY timestamp").await.unwrap();
        assert_eq!(r.rows.len(), 2);
        assert!(r.truncated);
        for bad in ["CREATE TABLE x (a INT)", "DROP VIEW series", "SET datafusion.execution.batch_size = 1"] {
            let e = engine.query("t1", bad).await.unwrap_err();
            assert_eq!(e.error_type(), "bad_data", "{bad}: {e}");
        }
        let e = engine.query("t1", "SELECT nope FROM series").await.unwrap_err();
        assert!(matches!(e, SqlError::BadQuery(_)) && e.to_string().contains("nope"), "{e}");
        // A tenant without blocks has empty tables, not an error.
        let r = engine.query("nobody", "SELECT count(*) FROM samples").await.unwrap();
        assert_eq!(r.rows, vec![vec![Value::from(0)]]);
    }

    #[tokio::test]
    async fn nothing_outside_the_tenants_blocks_and_bounded_memory_and_concurrency() {
        let (_dir, cfg) = bucket().await;
        let engine = SqlEngine::open(&cfg, SqlOptions::default()).unwrap();
        // No table functions, no URL tables, no other tenant's views.
        for q in [
            "SELECT * FROM generate_series(1, 10)",
            "SELECT * FROM range(1000000000)",
            "SELECT * FROM 'strata://blocks/t2'",
            "SELECT * FROM s_0",
        ] {
            let r = engine.query("nobody", q).await;
            assert!(matches!(r, Err(SqlError::BadQuery(_))), "{q}: {r:?}");
        }
        assert_eq!(engine.query("t2", "SELECT count(*) FROM samples").await.unwrap().rows, vec![vec![Value::from(1)]]);
        // A memory pool of 1 KiB: a sort of the tenant's samples fails
        // cleanly instead of growing.
        let tiny = SqlEngine::open(&cfg, SqlOptions { max_memory: 1024, ..Default::default() }).unwrap();
        let big = "SELECT a.value, b.value FROM samples a CROSS JOIN samples b CROSS JOIN samples c \
                   CROSS JOIN samples d ORDER BY 1, 2";
        let e = tiny.query("t1", big).await.unwrap_err();
        assert!(e.to_string().contains("--sql.max-memory"), "{e}");
        assert!(engine.query("t1", big).await.is_ok(), "fits the default pool");
        // One slot: a second query waits, and gives up at its deadline.
        let one = Arc::new(
            SqlEngine::open(
                &cfg,
                SqlOptions { max_concurrency: 1, timeout: Duration::from_millis(300), ..Default::default() },
            )
            .unwrap(),
        );
        let held = one.slots.acquire().await.unwrap();
        let e = one.query("t1", "SELECT 1").await.unwrap_err();
        assert!(matches!(e, SqlError::Busy(1)), "{e}");
        drop(held);
        assert!(one.query("t1", "SELECT 1").await.is_ok());
        // Metas are read once per block: a new block shows up at the next
        // query, the known ones come from the cache.
        assert_eq!(engine.inner.metas.lock().unwrap().len(), 3, "one meta per block seen (t1's two, t2's one)");
        let store = cfg.open().unwrap();
        upload_block(
            store.as_ref(),
            "t2",
            "s",
            60_000,
            120_000,
            &[series(&[("__name__", "late")], vec![(60_000, 1.0)])],
        )
        .await
        .unwrap();
        assert_eq!(engine.query("t2", "SELECT count(*) FROM samples").await.unwrap().rows, vec![vec![Value::from(2)]]);
        assert_eq!(engine.inner.metas.lock().unwrap().len(), 4);
    }
}
