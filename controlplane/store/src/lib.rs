//! `strata store`: the store gateway. It lists the blocks in object storage
//! (`meta.json`) every sync interval, keeps each block's series index in
//! memory (labels and row ranges from `series.parquet`), and answers the
//! StoreAPI by matching series against that index and reading only the row
//! ranges — hence only the pages — of the matching series from
//! `samples.parquet`, with the file's footer and page index cached.

mod aggregate;
mod series_labels;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::{Stream, StreamExt};
use object_store::ObjectStore;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strata_blocks::BlockIndex;
use strata_model::{Labels, Matcher};
use strata_proto::prometheus::{Chunk, Sample, chunk};
use strata_proto::store::store_server::{Store, StoreServer};
use strata_proto::store::{
    AggregateRequest, AggregateResponse, ExemplarsRequest, ExemplarsResponse, InfoRequest, InfoResponse,
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, MetadataRequest, MetadataResponse,
    Series, SeriesRequest, SeriesResponse,
};
use tokio::sync::RwLock;

/// Settings of `strata store`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub grpc_listen: SocketAddr,
    pub web_listen: SocketAddr,
    /// Object storage (local directory or S3 bucket) holding the blocks.
    pub objstore: strata_blocks::BucketConfig,
    pub sync_interval: Duration,
    /// Shard name in `Info`: replicas serving the same bucket share it.
    pub shard: String,
    /// HTTP timeouts and limits (`--web.*`).
    pub http: strata_server::HttpServerConfig,
    /// Per-call limits of StoreAPI `Series`.
    pub limits: SeriesLimits,
    /// TLS of the gRPC listener (`--grpc.tls-*`).
    pub grpc_tls: Option<strata_server::tls::TlsServerConfig>,
    /// Bytes of block data kept in memory for repeated reads (`--store.cache.max-bytes`; 0: none).
    pub cache_max_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            grpc_listen: ([127, 0, 0, 1], 9096).into(),
            web_listen: ([127, 0, 0, 1], 9097).into(),
            objstore: strata_blocks::BucketConfig::default(),
            sync_interval: Duration::from_secs(30),
            shard: "blocks".into(),
            http: strata_server::HttpServerConfig::default(),
            limits: SeriesLimits::default(),
            grpc_tls: None,
            cache_max_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object store at {0}: {1}")]
    ObjectStore(String, String),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("{0} server failed: {1}")]
    Serve(&'static str, String),
}

struct Metrics {
    registry: Registry,
    blocks: Gauge,
    label_sets: Gauge,
    syncs: Counter,
    sync_errors: Counter,
    series_requests: Counter,
    aggregate_requests: Counter,
    limit_hits: Counter,
    http: strata_server::HttpMetrics,
    /// Per tenant, from the loaded blocks' meta.json (set at each scrape).
    tenant_blocks: Family<TenantLabel, Gauge>,
    tenant_bytes: Family<TenantLabel, Gauge>,
    tenant_samples: Family<TenantLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

/// A block whose index is loaded, with its series' labels as the query
/// engine takes them (shared with every other block holding the same).
struct LoadedBlock {
    index: Arc<BlockIndex>,
    labels: series_labels::BlockLabels,
}

/// The gateway: synced blocks, served over the StoreAPI.
pub struct Gateway {
    store: Arc<dyn ObjectStore>,
    blocks: RwLock<BTreeMap<String, LoadedBlock>>,
    /// The label sets of `blocks`, each held once.
    label_table: std::sync::Mutex<series_labels::LabelTable>,
    shard: String,
    limits: SeriesLimits,
    metrics: Metrics,
    synced: std::sync::atomic::AtomicBool,
    /// Block data read for queries (`--store.cache.max-bytes`).
    cache: Option<Arc<strata_blocks::RangeCache>>,
}

fn to_status(e: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::internal(e.to_string())
}

impl Gateway {
    pub fn new(store: Arc<dyn ObjectStore>, shard: &str, limits: SeriesLimits) -> Arc<Gateway> {
        Gateway::with_cache(store, shard, limits, 0)
    }

    /// [`Gateway::new`] keeping up to `cache_max_bytes` of block data read
    /// for queries in memory.
    pub fn with_cache(
        store: Arc<dyn ObjectStore>,
        shard: &str,
        limits: SeriesLimits,
        cache_max_bytes: u64,
    ) -> Arc<Gateway> {
        let mut registry = Registry::with_prefix("strata_store");
        let m = Metrics {
            blocks: Gauge::default(),
            label_sets: Gauge::default(),
            syncs: Counter::default(),
            sync_errors: Counter::default(),
            series_requests: Counter::default(),
            aggregate_requests: Counter::default(),
            limit_hits: Counter::default(),
            http: strata_server::HttpMetrics::global(),
            tenant_blocks: Family::default(),
            tenant_bytes: Family::default(),
            tenant_samples: Family::default(),
            registry: Registry::default(),
        };
        registry.register("tenant_blocks", "Blocks in the bucket by tenant (as loaded)", m.tenant_blocks.clone());
        registry.register(
            "tenant_block_bytes",
            "Bytes of the blocks in the bucket by tenant (their files, as in meta.json): storage per tenant",
            m.tenant_bytes.clone(),
        );
        registry.register("tenant_block_samples", "Samples in the blocks by tenant", m.tenant_samples.clone());
        registry.register("blocks_loaded", "Blocks whose index is loaded", m.blocks.clone());
        registry.register(
            "label_sets",
            "Distinct label sets of the loaded blocks, held once and shared by the blocks for queries",
            m.label_sets.clone(),
        );
        registry.register("syncs", "Block list syncs", m.syncs.clone());
        registry.register("sync_errors", "Failed block list syncs or block loads", m.sync_errors.clone());
        registry.register("series_requests", "StoreAPI Series calls", m.series_requests.clone());
        registry.register(
            "aggregate_requests",
            "StoreAPI Aggregate calls (aggregation push-down)",
            m.aggregate_requests.clone(),
        );
        registry.register(
            "series_limit_hits",
            "Series calls refused or stopped at a --store.max-*-per-query limit or the caller's sample limit",
            m.limit_hits.clone(),
        );
        let cache = (cache_max_bytes > 0).then(|| {
            let cm = strata_blocks::RangeCacheMetrics::default();
            registry.register(
                "block_cache_hits",
                "Reads of block data answered from memory (--store.cache.max-bytes)",
                cm.hits.clone(),
            );
            registry.register(
                "block_cache_misses",
                "Reads of block data that went to object storage",
                cm.misses.clone(),
            );
            registry.register("block_cache_bytes", "Bytes of block data held in memory", cm.bytes.clone());
            Arc::new(strata_blocks::RangeCache::new(usize::try_from(cache_max_bytes).unwrap_or(usize::MAX), cm))
        });
        Arc::new(Gateway {
            store,
            blocks: RwLock::new(BTreeMap::new()),
            label_table: Default::default(),
            shard: shard.to_string(),
            limits,
            metrics: Metrics { registry, ..m },
            synced: false.into(),
            cache,
        })
    }

    /// Lists the bucket and loads the index of new blocks; forgets deleted ones.
    pub async fn sync(&self) -> Result<usize, strata_blocks::BlockError> {
        let run = strata_telemetry::BackgroundRun::start("store_sync");
        let errors_before = self.metrics.sync_errors.get();
        let r = self.sync_blocks().await;
        run.finish(r.is_ok() && self.metrics.sync_errors.get() == errors_before);
        r
    }

    async fn sync_blocks(&self) -> Result<usize, strata_blocks::BlockError> {
        self.metrics.syncs.inc();
        let metas = strata_blocks::list_blocks(self.store.as_ref()).await.inspect_err(|_| {
            self.metrics.sync_errors.inc();
        })?;
        let known: Vec<String> = self.blocks.read().await.keys().cloned().collect();
        let mut fresh = Vec::new();
        for m in &metas {
            let key = format!("{}/{}", m.strata.tenant, m.ulid);
            if known.contains(&key) {
                continue;
            }
            match BlockIndex::load(self.store.as_ref(), m.clone()).await {
                Ok(mut idx) => {
                    idx.cache = self.cache.clone();
                    let labels = self.label_table.lock().unwrap_or_else(|e| e.into_inner()).intern(&idx);
                    fresh.push((key, LoadedBlock { index: Arc::new(idx), labels }))
                }
                Err(e) => {
                    self.metrics.sync_errors.inc();
                    tracing::warn!(block = %m.ulid, error = %e, "cannot load block index");
                }
            }
        }
        let listed: Vec<String> = metas.iter().map(|m| format!("{}/{}", m.strata.tenant, m.ulid)).collect();
        let mut blocks = self.blocks.write().await;
        let before = blocks.len();
        blocks.retain(|k, _| listed.contains(k));
        {
            let mut table = self.label_table.lock().unwrap_or_else(|e| e.into_inner());
            if blocks.len() < before {
                table.forget_unused();
            }
            self.metrics.label_sets.set(table.len() as i64);
        }
        let added = fresh.len();
        for (k, v) in fresh {
            tracing::info!(block = %k, series = v.labels.len(), "block loaded");
            blocks.insert(k, v);
        }
        self.metrics.blocks.set(blocks.len() as i64);
        self.synced.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(added)
    }

    /// Refuses StoreAPI reads until the first sync has listed the bucket:
    /// before it the gateway knows no blocks, and an empty answer would
    /// pass for "no data" (a querier reports this one, or fails the query).
    fn check_synced(&self) -> Result<(), tonic::Status> {
        if self.synced.load(std::sync::atomic::Ordering::Relaxed) {
            Ok(())
        } else {
            Err(tonic::Status::unavailable("store gateway not ready: first block sync pending"))
        }
    }

    async fn overlapping(&self, tenant: &str, min_t: i64, max_t: i64) -> Vec<Arc<BlockIndex>> {
        self.overlapping_labelled(tenant, min_t, max_t).await.into_iter().map(|(b, _)| b).collect()
    }

    /// [`Gateway::overlapping`], each block with its series' shared labels.
    async fn overlapping_labelled(
        &self,
        tenant: &str,
        min_t: i64,
        max_t: i64,
    ) -> Vec<(Arc<BlockIndex>, series_labels::BlockLabels)> {
        self.blocks
            .read()
            .await
            .values()
            .filter(|b| {
                let m = &b.index.meta;
                m.strata.tenant == tenant && m.min_time <= max_t && m.max_time > min_t
            })
            .map(|b| (b.index.clone(), b.labels.clone()))
            .collect()
    }
}

fn matchers(ms: &[strata_proto::prometheus::LabelMatcher]) -> Result<Vec<Matcher>, tonic::Status> {
    ms.iter().map(|m| Matcher::from_proto(m).map_err(|e| tonic::Status::invalid_argument(e.to_string()))).collect()
}

fn tenant(t: &str) -> &str {
    if t.is_empty() { "anonymous" } else { t }
}

fn matching_refs(b: &BlockIndex, ms: &[Matcher]) -> Vec<u32> {
    b.labels
        .iter()
        .enumerate()
        .filter(|(_, l)| ms.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
        .map(|(i, _)| i as u32)
        .collect()
}

/// Series per `SeriesResponse` frame.
const SERIES_PER_BATCH: usize = 500;
/// Blocks read at once by one Series call.
const READ_CONCURRENCY: usize = 4;

type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, tonic::Status>> + Send>>;

/// Encodes time-ordered samples as XOR chunks of up to 120 samples.
/// `samples` if already strictly time-ordered (what blocks hold), else a
/// sorted copy without duplicate timestamps.
fn sorted_unique(samples: &[(i64, f64)]) -> std::borrow::Cow<'_, [(i64, f64)]> {
    if samples.windows(2).all(|w| w[0].0 < w[1].0) {
        return samples.into();
    }
    let mut v = samples.to_vec();
    v.sort_by_key(|x| x.0);
    v.dedup_by_key(|x| x.0);
    v.into()
}

fn xor_chunks(samples: &[(i64, f64)]) -> Vec<Chunk> {
    samples
        .chunks(120)
        .map(|part| {
            let mut c = strata_head::chunk::XorChunk::new();
            for &(t, v) in part {
                c.append(t, v);
            }
            Chunk {
                min_time_ms: part[0].0,
                max_time_ms: part[part.len() - 1].0,
                r#type: chunk::Encoding::Xor as i32,
                data: c.bytes().to_vec().into(),
            }
        })
        .collect()
}

/// Per-call limits of `Series` (`--store.max-*-per-query`; 0: none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesLimits {
    /// Series one call may match.
    pub max_series: usize,
    /// Samples one call may load; the caller's own `max_samples`, when
    /// lower, wins.
    pub max_samples: u64,
    /// Bytes one call may send: encoded chunk bytes, or 16 per raw sample.
    pub max_bytes: u64,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        SeriesLimits { max_series: 1_000_000, max_samples: 0, max_bytes: 1 << 30 }
    }
}

/// Prometheus' wording, which the querier turns into its 422.
const TOO_MANY_SAMPLES: &str = "query processing would load too many samples into memory in query execution";

fn too_many_samples(limit: u64, flag: &str) -> tonic::Status {
    tonic::Status::resource_exhausted(format!("{TOO_MANY_SAMPLES} (store gateway: over {limit}, {flag})"))
}

/// Rows (= samples) decoded per batch: the unit of memory of one call.
const ROWS_PER_BATCH: u64 = 256 * 1024;

/// The series one `Series` call returns, in label order, each with the
/// (block, series ref) pairs holding it. Built from the in-memory indexes
/// alone, so the series limit and an early sample-limit refusal cost no
/// object-store reads.
struct SeriesPlan {
    series: Vec<(Labels, Vec<(usize, u32)>)>,
    sample_limit: u64,
}

impl SeriesPlan {
    fn new(
        blocks: &[Arc<BlockIndex>],
        ms: &[Matcher],
        r: &SeriesRequest,
        limits: &SeriesLimits,
    ) -> Result<SeriesPlan, tonic::Status> {
        let mut by_labels: BTreeMap<&Labels, Vec<(usize, u32)>> = BTreeMap::new();
        for (bi, b) in blocks.iter().enumerate() {
            for i in matching_refs(b, ms) {
                by_labels.entry(&b.labels[i as usize]).or_default().push((bi, i));
            }
        }
        if limits.max_series > 0 && by_labels.len() > limits.max_series {
            return Err(tonic::Status::resource_exhausted(format!(
                "store gateway: the query matches {} series, over the limit of {} (--store.max-series-per-query)",
                by_labels.len(),
                limits.max_series
            )));
        }
        let sample_limit = match (r.max_samples, limits.max_samples) {
            (0, l) | (l, 0) => l,
            (a, b) => a.min(b),
        };
        if sample_limit > 0 && !r.skip_samples {
            // Samples of blocks lying wholly inside the range are all
            // loaded: a lower bound known before reading anything.
            let inside: u64 = by_labels
                .values()
                .flatten()
                .filter(|(bi, _)| blocks[*bi].meta.min_time >= r.min_time && blocks[*bi].meta.max_time <= r.max_time)
                .map(|&(bi, i)| series_rows(&blocks[bi], i))
                .sum();
            if inside > sample_limit {
                return Err(too_many_samples(sample_limit, limit_flag(r, limits)));
            }
        }
        let series = by_labels.into_iter().map(|(l, refs)| (l.clone(), refs)).collect();
        Ok(SeriesPlan { series, sample_limit })
    }

    async fn stream(
        self,
        store: Arc<dyn ObjectStore>,
        blocks: Vec<Arc<BlockIndex>>,
        reading: &Reading,
        r: &SeriesRequest,
        limits: SeriesLimits,
        tx: &tokio::sync::mpsc::Sender<Result<SeriesResponse, tonic::Status>>,
    ) -> Result<(), tonic::Status> {
        let (mut samples_sent, mut bytes_sent) = (0u64, 0u64);
        let mut rest = self.series.into_iter().peekable();
        while rest.peek().is_some() {
            // The next batch: up to SERIES_PER_BATCH series and about
            // ROWS_PER_BATCH rows (at least one series).
            let mut batch = Vec::new();
            let mut rows = 0u64;
            while let Some((_, refs)) = rest.peek() {
                let n: u64 = refs.iter().map(|&(bi, i)| series_rows(&blocks[bi], i)).sum();
                if !batch.is_empty() && (batch.len() == SERIES_PER_BATCH || rows + n > ROWS_PER_BATCH) {
                    break;
                }
                rows += n;
                batch.extend(rest.next());
            }
            let parts = if r.skip_samples {
                vec![Vec::new(); batch.len()]
            } else {
                read_batch(&store, &blocks, reading, &batch, r.min_time, r.max_time).await?
            };
            let mut out = Vec::with_capacity(batch.len());
            for ((labels, _), parts) in batch.into_iter().zip(parts) {
                if !r.skip_samples && parts.iter().all(|p| p.is_empty()) {
                    continue; // matched, but no sample in the range
                }
                // XOR chunks when the caller decodes them: ~1–2 bytes per
                // sample on the wire instead of ~18. Chunks are cut per
                // block (the caller merges overlapping chunks, e.g. of
                // redundant blocks).
                let (samples, chunks) = if r.accept_chunks {
                    (vec![], parts.iter().flat_map(|p| xor_chunks(&sorted_unique(p))).collect::<Vec<_>>())
                } else {
                    let mut samples = parts.concat();
                    samples.sort_by_key(|x| x.0);
                    samples.dedup_by_key(|x| x.0);
                    (samples, vec![])
                };
                samples_sent += parts.iter().map(|p| p.len() as u64).sum::<u64>();
                if self.sample_limit > 0 && samples_sent > self.sample_limit {
                    return Err(too_many_samples(self.sample_limit, limit_flag(r, &limits)));
                }
                bytes_sent += chunks.iter().map(|c| c.data.len() as u64).sum::<u64>() + 16 * samples.len() as u64;
                if limits.max_bytes > 0 && bytes_sent > limits.max_bytes {
                    return Err(tonic::Status::resource_exhausted(format!(
                        "store gateway: the query would fetch more than {} bytes of chunks (--store.max-bytes-per-query)",
                        limits.max_bytes
                    )));
                }
                out.push(Series {
                    labels: labels.to_proto(),
                    samples: samples.into_iter().map(|(t, v)| Sample { timestamp: t, value: v }).collect(),
                    chunks,
                });
            }
            if !out.is_empty() && tx.send(Ok(SeriesResponse { series: out, warnings: vec![] })).await.is_err() {
                return Ok(()); // the caller went away: stop reading
            }
        }
        Ok(())
    }
}

/// Rows (= samples) of series `i` in block `b`.
fn series_rows(b: &BlockIndex, i: u32) -> u64 {
    b.row_start[i as usize + 1] - b.row_start[i as usize]
}

/// Which limit a sample refusal names.
fn limit_flag(r: &SeriesRequest, limits: &SeriesLimits) -> &'static str {
    if limits.max_samples > 0 && (r.max_samples == 0 || limits.max_samples < r.max_samples) {
        "--store.max-samples-per-query"
    } else {
        "the querier's --query.max-samples"
    }
}

/// How a `Series` call reads its blocks: in which view, and per block the
/// time ranges coarser blocks answer for.
struct Reading {
    view: Option<strata_model::downsample::View>,
    hidden: Vec<Vec<(i64, i64)>>,
}

/// Samples of each series of `batch`, one part per block in block order.
/// Blocks are read concurrently (Parquet decoding is the costly part).
async fn read_batch(
    store: &Arc<dyn ObjectStore>,
    blocks: &[Arc<BlockIndex>],
    reading: &Reading,
    batch: &[(Labels, Vec<(usize, u32)>)],
    min_t: i64,
    max_t: i64,
) -> Result<Vec<Vec<Vec<(i64, f64)>>>, tonic::Status> {
    // Per block: the refs to read (ascending, as the row selection needs)
    // and, for each, the series' slot in the batch.
    let mut per_block: BTreeMap<usize, Vec<(u32, usize)>> = BTreeMap::new();
    for (slot, (_, refs)) in batch.iter().enumerate() {
        for &(bi, i) in refs {
            per_block.entry(bi).or_default().push((i, slot));
        }
    }
    let reads = per_block.into_iter().map(|(bi, mut wanted)| {
        wanted.sort_unstable();
        let (b, store) = (blocks[bi].clone(), store.clone());
        let (view, hidden) = (reading.view, reading.hidden[bi].clone());
        tokio::spawn(async move {
            let refs: Vec<u32> = wanted.iter().map(|w| w.0).collect();
            let samples = b.read_view(store, &refs, (min_t, max_t), view, &hidden).await?;
            Ok::<_, strata_blocks::BlockError>((bi, wanted, samples))
        })
    });
    let mut done = Vec::new();
    let mut reads = futures::stream::iter(reads).buffer_unordered(READ_CONCURRENCY);
    while let Some(res) = reads.next().await {
        done.push(res.map_err(to_status)?.map_err(to_status)?);
    }
    // Block order (blocks are sorted by time), so each series' parts come
    // in time order.
    done.sort_by_key(|d| d.0);
    let mut out: Vec<Vec<Vec<(i64, f64)>>> = vec![Vec::new(); batch.len()];
    for (_, wanted, samples) in done {
        for ((_, slot), s) in wanted.into_iter().zip(samples) {
            if !s.is_empty() {
                out[slot].push(s);
            }
        }
    }
    Ok(out)
}

/// The StoreAPI service of a gateway.
#[derive(Clone)]
pub struct GatewayService(pub Arc<Gateway>);

#[tonic::async_trait]
impl Store for GatewayService {
    async fn info(&self, req: tonic::Request<InfoRequest>) -> Result<tonic::Response<InfoResponse>, tonic::Status> {
        self.0.check_synced()?;
        let blocks = self.0.blocks.read().await;
        let min_time = blocks.values().map(|b| b.index.meta.min_time).min().unwrap_or(i64::MAX);
        let max_time = blocks.values().map(|b| b.index.meta.max_time - 1).max().unwrap_or(i64::MIN);
        // Tenants only for callers with a verified client certificate.
        let mut tenants: Vec<String> = if strata_server::grpc::verified_client(&req) {
            blocks.values().map(|b| b.index.meta.strata.tenant.clone()).collect()
        } else {
            Vec::new()
        };
        tenants.sort();
        tenants.dedup();
        Ok(tonic::Response::new(InfoResponse {
            min_time,
            max_time,
            shard: self.0.shard.clone(),
            component: "store".into(),
            node_id: 0,
            leader_id: 0,
            tenants,
        }))
    }

    type SeriesStream = SeriesStream;

    async fn series(&self, req: tonic::Request<SeriesRequest>) -> Result<tonic::Response<SeriesStream>, tonic::Status> {
        self.0.check_synced()?;
        self.0.metrics.series_requests.inc();
        let r = req.into_inner();
        let (ms, view) = strata_model::downsample::split_view(matchers(&r.matchers)?)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        if ms.is_empty() {
            return Err(tonic::Status::invalid_argument("at least one matcher is required"));
        }
        let mut blocks = self.0.overlapping(tenant(&r.tenant), r.min_time, r.max_time).await;
        let reading = if r.skip_samples {
            // Labels only: any block, raw or downsampled, lists its series.
            blocks.sort_by_key(|b| (b.meta.min_time, b.meta.max_time));
            Reading { view: None, hidden: vec![Vec::new(); blocks.len()] }
        } else {
            let sources = strata_blocks::choose_sources(blocks, view);
            let hidden = sources.iter().map(|s| s.hidden.clone()).collect();
            blocks = sources.into_iter().map(|s| s.block).collect();
            Reading { view: view.map(|v| v.view), hidden }
        };
        let plan = SeriesPlan::new(&blocks, &ms, &r, &self.0.limits).inspect_err(|_| {
            self.0.metrics.limit_hits.inc();
        })?;
        // Read, encode and send batch by batch from a task: at most one
        // batch of samples is decoded at a time, and the bounded channel
        // makes a slow caller slow the reading down instead of piling up.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (store, limits, metrics) = (self.0.store.clone(), self.0.limits, self.0.metrics.limit_hits.clone());
        tokio::spawn(async move {
            if let Err(e) = plan.stream(store, blocks, &reading, &r, limits, &tx).await {
                if e.code() == tonic::Code::ResourceExhausted {
                    metrics.inc();
                }
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(tonic::Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn label_names(
        &self,
        req: tonic::Request<LabelNamesRequest>,
    ) -> Result<tonic::Response<LabelNamesResponse>, tonic::Status> {
        self.0.check_synced()?;
        let r = req.into_inner();
        let ms = matchers(&r.matchers)?;
        let mut names = std::collections::BTreeSet::new();
        for b in self.0.overlapping(tenant(&r.tenant), r.min_time, r.max_time).await {
            if ms.is_empty() {
                names.extend(b.values.keys().cloned());
                continue;
            }
            for i in matching_refs(&b, &ms) {
                names.extend(b.labels[i as usize].iter().map(|(n, _)| n.to_string()));
            }
        }
        Ok(tonic::Response::new(LabelNamesResponse { names: names.into_iter().collect() }))
    }

    async fn label_values(
        &self,
        req: tonic::Request<LabelValuesRequest>,
    ) -> Result<tonic::Response<LabelValuesResponse>, tonic::Status> {
        self.0.check_synced()?;
        let r = req.into_inner();
        let ms = matchers(&r.matchers)?;
        let mut values = std::collections::BTreeSet::new();
        for b in self.0.overlapping(tenant(&r.tenant), r.min_time, r.max_time).await {
            if ms.is_empty() {
                values.extend(b.values.get(&r.name).into_iter().flatten().cloned());
                continue;
            }
            for i in matching_refs(&b, &ms) {
                if let Some(v) = b.labels[i as usize].get(&r.name) {
                    values.insert(v.to_string());
                }
            }
        }
        Ok(tonic::Response::new(LabelValuesResponse { values: values.into_iter().collect() }))
    }

    async fn aggregate(
        &self,
        req: tonic::Request<AggregateRequest>,
    ) -> Result<tonic::Response<AggregateResponse>, tonic::Status> {
        self.0.check_synced()?;
        self.0.metrics.aggregate_requests.inc();
        let r = req.into_inner();
        let blocks = self.0.overlapping_labelled(tenant(&r.tenant), i64::MIN, i64::MAX).await;
        let resp = aggregate::evaluate(self.0.store.clone(), blocks, r).await?;
        Ok(tonic::Response::new(resp))
    }

    /// Blocks carry no metric metadata (the ingesters keep it).
    async fn metadata(
        &self,
        _: tonic::Request<MetadataRequest>,
    ) -> Result<tonic::Response<MetadataResponse>, tonic::Status> {
        Ok(tonic::Response::new(MetadataResponse { metadata: vec![] }))
    }

    /// Blocks carry no exemplars (the ingesters keep them).
    async fn exemplars(
        &self,
        _: tonic::Request<ExemplarsRequest>,
    ) -> Result<tonic::Response<ExemplarsResponse>, tonic::Status> {
        Ok(tonic::Response::new(ExemplarsResponse { series: vec![] }))
    }
}

async fn metrics(State(g): State<Arc<Gateway>>) -> impl IntoResponse {
    {
        let blocks = g.blocks.read().await;
        let m = &g.metrics;
        m.tenant_blocks.clear();
        m.tenant_bytes.clear();
        m.tenant_samples.clear();
        for b in blocks.values().map(|b| &b.index) {
            let l = TenantLabel { tenant: b.meta.strata.tenant.clone() };
            m.tenant_blocks.get_or_create(&l).inc();
            m.tenant_bytes.get_or_create(&l).inc_by(b.meta.strata.files.iter().map(|f| f.size as i64).sum::<i64>());
            m.tenant_samples.get_or_create(&l).inc_by(b.meta.stats.num_samples as i64);
        }
    }
    strata_server::process::metrics_response(&g.metrics.registry)
}

async fn ready(State(g): State<Arc<Gateway>>) -> impl IntoResponse {
    if g.synced.load(std::sync::atomic::Ordering::Relaxed) {
        (StatusCode::OK, "Ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: first block sync pending\n")
    }
}

/// Runs the store gateway until `shutdown` resolves.
pub async fn run(
    cfg: StoreConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StoreError> {
    let path = cfg.objstore.describe();
    let store: Arc<dyn ObjectStore> =
        cfg.objstore.open().map_err(|e| StoreError::ObjectStore(path.clone(), e.to_string()))?;
    let gw = Gateway::with_cache(store, &cfg.shard, cfg.limits, cfg.cache_max_bytes);
    let sync_gw = gw.clone();
    let every = cfg.sync_interval;
    tokio::spawn(async move {
        loop {
            if let Err(e) = sync_gw.sync().await {
                tracing::warn!(error = %e, "block sync failed");
            }
            tokio::time::sleep(every).await;
        }
    });
    let grpc_tls = match &cfg.grpc_tls {
        Some(t) => Some(
            strata_server::tls::ServerTls::new(t.clone(), strata_server::tls::ALPN_H2, "--grpc.tls-*")
                .map_err(|e| StoreError::Serve("gRPC", e.to_string()))?,
        ),
        None => None,
    };
    let grpc_listener =
        tokio::net::TcpListener::bind(cfg.grpc_listen).await.map_err(|e| StoreError::Bind(cfg.grpc_listen, e))?;
    let web_listener =
        tokio::net::TcpListener::bind(cfg.web_listen).await.map_err(|e| StoreError::Bind(cfg.web_listen, e))?;
    let http_metrics = gw.metrics.http.clone();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/-/ready", get(ready))
        .route("/-/healthy", get(|| async { "OK\n" }))
        .with_state(gw.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut s1 = stop_rx.clone();
    let grpc = tonic::transport::Server::builder()
        .layer(strata_server::GrpcMetricsLayer)
        .add_service(StoreServer::new(GatewayService(gw)).max_encoding_message_size(256 << 20))
        .serve_with_incoming_shutdown(strata_server::grpc::incoming(grpc_listener, grpc_tls), async move {
            let _ = s1.wait_for(|s| *s).await;
        });
    let mut s2 = stop_rx;
    let web = strata_server::serve(
        web_listener,
        app,
        &cfg.http,
        Some(&http_metrics),
        strata_server::auth::status_access,
        async move {
            let _ = s2.wait_for(|s| *s).await;
        },
    );
    tracing::info!(grpc = %cfg.grpc_listen, web = %cfg.web_listen, objstore = %path, "strata store started");
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (g, w) = tokio::join!(grpc, web);
    g.map_err(|e| StoreError::Serve("gRPC", e.to_string()))?;
    w.map_err(|e| StoreError::Serve("HTTP", e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_blocks::SeriesData;
    use strata_model::MatchOp;
    use strata_proto::prometheus::label_matcher;

    #[tokio::test]
    async fn serves_blocks_over_the_store_api() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let mk = |job: &str, t0: i64| SeriesData {
            labels: Labels::from_pairs(vec![("__name__".into(), "up".into()), ("job".into(), job.into())]),
            samples: (0..10).map(|k| (t0 + k * 1000, k as f64)).collect(),
        };
        // Two adjacent blocks holding one series each part.
        strata_blocks::upload_block(store.as_ref(), "anonymous", "s0", 0, 10_000, &[mk("a", 0), mk("b", 0)])
            .await
            .unwrap();
        strata_blocks::upload_block(store.as_ref(), "anonymous", "s0", 10_000, 20_000, &[mk("a", 10_000)])
            .await
            .unwrap();
        let gw = Gateway::new(store, "blocks", SeriesLimits::default());
        // Before the first sync every read is refused, not answered empty.
        let svc = GatewayService(gw.clone());
        let refused = svc.info(tonic::Request::new(InfoRequest {})).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(refused.message().contains("first block sync pending"), "{refused:?}");
        let any = || SeriesRequest {
            tenant: String::new(),
            min_time: 0,
            max_time: 20_000,
            matchers: vec![Matcher::new("job", MatchOp::Equal, "a").unwrap().to_proto()],
            skip_samples: false,
            accept_chunks: false,
            max_samples: 0,
        };
        let refused = svc.series(tonic::Request::new(any())).await.err().expect("series before the first sync");
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        let names = LabelNamesRequest { tenant: String::new(), min_time: 0, max_time: 20_000, matchers: vec![] };
        let refused = svc.label_names(tonic::Request::new(names)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        let values = LabelValuesRequest {
            tenant: String::new(),
            name: "job".into(),
            min_time: 0,
            max_time: 20_000,
            matchers: vec![],
        };
        let refused = svc.label_values(tonic::Request::new(values)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        let agg = AggregateRequest {
            tenant: String::new(),
            expr: "sum(up)".into(),
            start: 0,
            end: 20_000,
            step: 10_000,
            ..Default::default()
        };
        let refused = svc.aggregate(tonic::Request::new(agg)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert_eq!(gw.sync().await.unwrap(), 2);
        assert_eq!(gw.sync().await.unwrap(), 0, "a second sync loads nothing new");
        let svc = GatewayService(gw);
        let info = svc.info(tonic::Request::new(InfoRequest {})).await.unwrap().into_inner();
        assert_eq!((info.min_time, info.max_time, info.component.as_str()), (0, 19_999, "store"));
        // job="a" over [5 s, 14 s], as samples or as XOR chunks.
        let req = |accept_chunks: bool| SeriesRequest {
            tenant: String::new(),
            min_time: 5_000,
            max_time: 14_000,
            matchers: vec![Matcher::new("job", MatchOp::Equal, "a").unwrap().to_proto()],
            skip_samples: false,
            accept_chunks,
            max_samples: 0,
        };
        use futures::StreamExt;
        let mut stream = svc.series(tonic::Request::new(req(false))).await.unwrap().into_inner();
        let batch = stream.next().await.unwrap().unwrap();
        assert_eq!(batch.series.len(), 1);
        let ts: Vec<i64> = batch.series[0].samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(ts, (5..=14).map(|k| k * 1000).collect::<Vec<_>>(), "merged across the two blocks");
        // The same answer as XOR chunks.
        let mut stream = svc.series(tonic::Request::new(req(true))).await.unwrap().into_inner();
        let s = &stream.next().await.unwrap().unwrap().series[0];
        assert!(s.samples.is_empty());
        let decoded: Vec<(i64, f64)> =
            s.chunks.iter().flat_map(|c| strata_head::chunk::decode(&c.data).unwrap()).collect();
        let want: Vec<(i64, f64)> = batch.series[0].samples.iter().map(|x| (x.timestamp, x.value)).collect();
        assert_eq!(decoded, want);
        let lv = svc
            .label_values(tonic::Request::new(LabelValuesRequest {
                tenant: String::new(),
                name: "job".into(),
                min_time: 0,
                max_time: 20_000,
                matchers: vec![strata_proto::prometheus::LabelMatcher {
                    r#type: label_matcher::Type::Eq as i32,
                    name: "__name__".into(),
                    value: "up".into(),
                }],
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(lv.values, vec!["a", "b"]);
        // Without matchers, from the per-block value index.
        let lv = svc
            .label_values(tonic::Request::new(LabelValuesRequest {
                tenant: String::new(),
                name: "job".into(),
                min_time: 0,
                max_time: 20_000,
                matchers: vec![],
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(lv.values, vec!["a", "b"]);
        let ln = svc
            .label_names(tonic::Request::new(LabelNamesRequest {
                tenant: String::new(),
                min_time: 0,
                max_time: 20_000,
                matchers: vec![],
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ln.names, vec!["__name__", "job"]);
    }

    /// `n` series `big{i=...}` with `per_block` samples in each of `blocks`
    /// adjacent 1,000,000 ms blocks.
    async fn big_bucket(n: usize, per_block: i64, blocks: i64) -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let step = 1_000_000 / per_block;
        for b in 0..blocks {
            let series: Vec<SeriesData> = (0..n)
                .map(|i| SeriesData {
                    labels: Labels::from_pairs(vec![
                        ("__name__".into(), "big".into()),
                        ("i".into(), format!("{i:05}")),
                    ]),
                    samples: (0..per_block).map(|k| (b * 1_000_000 + k * step, (i as i64 * k) as f64)).collect(),
                })
                .collect();
            strata_blocks::upload_block(store.as_ref(), "anonymous", "s0", b * 1_000_000, (b + 1) * 1_000_000, &series)
                .await
                .unwrap();
        }
        (dir, store)
    }

    fn everything(min_time: i64, max_time: i64, max_samples: u64) -> SeriesRequest {
        SeriesRequest {
            tenant: String::new(),
            min_time,
            max_time,
            matchers: vec![Matcher::new("__name__", MatchOp::Equal, "big").unwrap().to_proto()],
            skip_samples: false,
            accept_chunks: true,
            max_samples,
        }
    }

    #[tokio::test]
    async fn series_stream_in_bounded_batches_and_stop_at_their_limits() {
        use futures::StreamExt;
        // 600 series x 3 blocks x 200 samples = 360,000 samples: more than
        // one batch of rows, and more series than one frame.
        let (_dir, store) = big_bucket(600, 200, 3).await;
        let gw = Gateway::new(store.clone(), "blocks", SeriesLimits::default());
        gw.sync().await.unwrap();
        let svc = GatewayService(gw);
        let mut stream = svc.series(tonic::Request::new(everything(0, 3_000_000, 0))).await.unwrap().into_inner();
        let (mut frames, mut total, mut names) = (0, 0usize, Vec::new());
        while let Some(batch) = stream.next().await {
            let batch = batch.unwrap();
            frames += 1;
            let mut rows = 0;
            for s in &batch.series {
                let decoded: Vec<(i64, f64)> =
                    s.chunks.iter().flat_map(|c| strata_head::chunk::decode(&c.data).unwrap()).collect();
                assert_eq!(decoded.len(), 600, "{:?}", s.labels);
                assert!(decoded.windows(2).all(|w| w[0].0 < w[1].0), "time order across blocks");
                let i: i64 = s.labels[1].value.parse().unwrap();
                assert!(decoded.iter().all(|&(t, v)| v == (i * ((t % 1_000_000) / 5_000)) as f64));
                rows += decoded.len() as u64;
                names.push(s.labels[1].value.clone());
            }
            assert!(batch.series.len() <= SERIES_PER_BATCH && rows <= ROWS_PER_BATCH, "frame of {rows} rows");
            total += batch.series.len();
        }
        assert_eq!(total, 600);
        assert!(frames >= 2, "{frames} frames");
        assert!(names.windows(2).all(|w| w[0] < w[1]), "label order");

        // The caller's sample limit, decided from the index alone when the
        // blocks lie inside the range: refused before any frame.
        let e = svc.series(tonic::Request::new(everything(0, 3_000_000, 100_000))).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("too many samples") && e.message().contains("--query.max-samples"), "{e}");
        // A range cutting the outer blocks (inside: 120,000 of 240,000
        // samples): counted while reading, the stream
        // ends with the error after the frames within the limit.
        let mut stream =
            svc.series(tonic::Request::new(everything(500_000, 2_499_999, 200_000))).await.unwrap().into_inner();
        let (mut sent, mut err) = (0usize, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => sent += b.series.iter().flat_map(|s| &s.chunks).map(|c| c.data.len()).sum::<usize>(),
                Err(e) => err = Some(e),
            }
        }
        let err = err.expect("the stream ends with the limit's error");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(sent > 0, "frames within the limit come first");

        // The gateway's own limits, each named.
        for (limits, flag) in [
            (SeriesLimits { max_series: 100, ..SeriesLimits::default() }, "--store.max-series-per-query"),
            (SeriesLimits { max_samples: 1_000, ..SeriesLimits::default() }, "--store.max-samples-per-query"),
            (SeriesLimits { max_bytes: 10_000, ..SeriesLimits::default() }, "--store.max-bytes-per-query"),
        ] {
            let gw = Gateway::new(store.clone(), "blocks", limits);
            gw.sync().await.unwrap();
            let svc = GatewayService(gw.clone());
            let err = match svc.series(tonic::Request::new(everything(0, 3_000_000, 0))).await {
                Err(e) => e,
                Ok(s) => Box::pin(s.into_inner().filter_map(|r| async { r.err() })).next().await.expect("an error"),
            };
            assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{flag}");
            assert!(err.message().contains(flag), "{flag}: {err}");
            assert_eq!(gw.metrics.limit_hits.get(), 1, "{flag}");
        }
    }
}
