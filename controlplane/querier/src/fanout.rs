//! StoreAPI fan-out: which sources to ask, once per shard, and merging what
//! they return.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use strata_promql::{Labels, MatchOp, Matcher, Series};
use strata_proto::prometheus::{LabelMatcher, label_matcher};
use strata_proto::store::store_client::StoreClient;
use strata_proto::store::{
    AggregateRequest, ExemplarsRequest, InfoRequest, InfoResponse, LabelNamesRequest, LabelValuesRequest,
    MetadataRequest, SeriesRequest,
};
use strata_server::trace::{TraceInjector, TracedChannel};
use tonic::transport::Endpoint;
use tracing::Instrument as _;

/// A StoreAPI source (ingester or store gateway).
struct Source {
    addr: String,
    client: StoreClient<TracedChannel>,
    info: Mutex<Option<InfoResponse>>,
}

/// What a fan-out read returns: merged series and warnings about sources
/// that did not answer.
#[derive(Debug, Default)]
pub struct FanoutResult<T> {
    pub data: T,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("invalid store endpoint {0}: {1}")]
    Endpoint(String, String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("a source hit the query's sample limit")]
    TooManySamples,
    #[error("a source ran out of the query's time")]
    Timeout,
    /// A source refused at one of its own limits (series, bytes); the
    /// message names it.
    #[error("{0}")]
    SourceLimit(String),
}

/// Samples one query may still load, shared by all its selectors and
/// shards: the fan-out counts samples as frames arrive and stops reading
/// (dropping the streams, which cancels them at the sources) once the
/// query's `--query.max-samples` is spent, instead of fetching everything
/// and checking afterwards.
#[derive(Debug)]
pub struct SampleBudget {
    limit: u64,
    used: std::sync::atomic::AtomicU64,
}

impl SampleBudget {
    pub fn new(limit: usize) -> Arc<SampleBudget> {
        Arc::new(SampleBudget { limit: limit as u64, used: std::sync::atomic::AtomicU64::new(0) })
    }

    /// No limit (label and series APIs, which skip samples).
    pub fn unlimited() -> Arc<SampleBudget> {
        SampleBudget::new(usize::MAX)
    }

    /// Takes `n` samples; Err once the limit is passed.
    pub fn take(&self, n: usize) -> Result<(), FanoutError> {
        let used = self.used.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed) + n as u64;
        if used > self.limit { Err(FanoutError::TooManySamples) } else { Ok(()) }
    }

    /// Samples still allowed, for the sources (0: no limit).
    pub fn remaining(&self) -> u64 {
        if self.limit == u64::MAX {
            return 0;
        }
        // At least 1: 0 would mean "no limit" on the wire.
        self.limit.saturating_sub(self.used.load(std::sync::atomic::Ordering::Relaxed)).max(1)
    }
}

/// The time range store gateways hold completely, for aggregation push-down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coverage {
    /// Oldest and newest sample time in the stores' blocks.
    pub store_min: i64,
    pub store_max: i64,
    /// Oldest sample any ingester still holds (head or blocks not yet
    /// released): from there on, data may be missing from the stores.
    pub head_min: i64,
}

impl Coverage {
    /// Whether a data window `[lo, hi]` is entirely in the stores' blocks.
    pub fn covers(&self, lo: i64, hi: i64) -> bool {
        lo >= self.store_min && hi <= self.store_max && hi < self.head_min
    }
}

/// The set of StoreAPI endpoints the querier reads from.
#[derive(Clone)]
pub struct StoreSet {
    sources: Arc<Vec<Source>>,
    timeout: Duration,
    partial_response: bool,
}

pub fn to_proto_matcher(m: &Matcher) -> LabelMatcher {
    let t = match m.op {
        MatchOp::Equal => label_matcher::Type::Eq,
        MatchOp::NotEqual => label_matcher::Type::Neq,
        MatchOp::Re(_) => label_matcher::Type::Re,
        MatchOp::NotRe(_) => label_matcher::Type::Nre,
    };
    LabelMatcher { r#type: t as i32, name: m.name.clone(), value: m.value.clone() }
}

impl StoreSet {
    /// `endpoints` are `host:port` gRPC addresses. Connections are lazy.
    /// With `tls`, endpoints are reached over TLS.
    pub fn new(
        endpoints: &[String],
        timeout: Duration,
        partial_response: bool,
        tls: Option<Arc<strata_server::tls::ClientTls>>,
    ) -> Result<Self, FanoutError> {
        let mut sources = Vec::new();
        for addr in endpoints {
            let uri = strata_server::grpc::uri(addr, tls.is_some());
            let ep = Endpoint::from_shared(uri)
                .map_err(|e| FanoutError::Endpoint(addr.clone(), e.to_string()))?
                .connect_timeout(Duration::from_secs(2))
                .timeout(timeout);
            let channel = strata_server::grpc::channel(ep, tls.clone(), None);
            let client = StoreClient::with_interceptor(channel, TraceInjector).max_decoding_message_size(256 << 20);
            sources.push(Source { addr: addr.clone(), client, info: Mutex::new(None) });
        }
        Ok(StoreSet { sources: Arc::new(sources), timeout, partial_response })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.addr.clone()).collect()
    }

    /// Refreshes every source's `Info` (called periodically and at startup).
    pub async fn refresh(&self) {
        let futs = self.sources.iter().map(|s| async move {
            let mut c = s.client.clone();
            let r = tokio::time::timeout(Duration::from_secs(2), c.info(InfoRequest {})).await;
            let info = match r {
                Ok(Ok(resp)) => Some(resp.into_inner()),
                _ => None,
            };
            if let Ok(mut g) = s.info.lock() {
                *g = info;
            }
        });
        futures::future::join_all(futs).await;
    }

    /// Status of every source, for the status page and the dashboard.
    pub fn status(&self) -> Vec<(String, Option<InfoResponse>)> {
        self.sources.iter().map(|s| (s.addr.clone(), s.info.lock().ok().and_then(|g| g.clone()))).collect()
    }

    /// Groups of source indexes to try for one read, one group per shard,
    /// best candidate first (the Raft leader for ingesters).
    fn plan(&self, min_t: i64, max_t: i64, only: Option<&str>) -> Vec<Vec<usize>> {
        let mut shards: BTreeMap<String, Vec<(usize, bool)>> = BTreeMap::new();
        for (i, s) in self.sources.iter().enumerate() {
            let info = s.info.lock().ok().and_then(|g| g.clone());
            match info {
                Some(info) if only.is_some_and(|c| c != info.component) => {}
                None if only.is_some() => {}
                Some(info) => {
                    // Blocks only cover what they cover; an ingester's head moves, so ask it anyway.
                    let empty = info.min_time > info.max_time;
                    if info.component == "store" && !empty && (info.min_time > max_t || info.max_time < min_t) {
                        continue;
                    }
                    let shard = if info.shard.is_empty() { s.addr.clone() } else { info.shard.clone() };
                    let leader = info.leader_id != 0 && info.leader_id == info.node_id;
                    shards.entry(shard).or_default().push((i, leader));
                }
                // Unknown (not reached yet): its own shard, so it is not skipped.
                None => shards.entry(format!("unknown:{}", s.addr)).or_default().push((i, false)),
            }
        }
        shards
            .into_values()
            .map(|mut v| {
                v.sort_by_key(|(_, leader)| !*leader);
                v.into_iter().map(|(i, _)| i).collect()
            })
            .collect()
    }

    /// Runs `f` against one source per shard (falling back to the shard's
    /// other replicas), collecting results and warnings.
    async fn each_shard<T, F, Fut>(&self, min_t: i64, max_t: i64, f: F) -> Result<FanoutResult<Vec<T>>, FanoutError>
    where
        F: Fn(StoreClient<TracedChannel>) -> Fut + Clone,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.each_shard_of(min_t, max_t, None, f).await
    }

    /// [`StoreSet::each_shard`] over the shards of one component only.
    async fn each_shard_of<T, F, Fut>(
        &self,
        min_t: i64,
        max_t: i64,
        only: Option<&str>,
        f: F,
    ) -> Result<FanoutResult<Vec<T>>, FanoutError>
    where
        F: Fn(StoreClient<TracedChannel>) -> Fut + Clone,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let plan = self.plan(min_t, max_t, only);
        let futs = plan.into_iter().map(|group| {
            let f = f.clone();
            async move {
                let mut errs = Vec::new();
                for i in group {
                    let s = &self.sources[i];
                    let span = tracing::info_span!(
                        "store call",
                        otel.kind = "client",
                        store = s.addr.as_str(),
                        otel.status_code = tracing::field::Empty,
                    );
                    let call = tokio::time::timeout(self.timeout, f(s.client.clone())).instrument(span.clone()).await;
                    if !matches!(call, Ok(Ok(_))) {
                        span.record("otel.status_code", "ERROR");
                    }
                    match call {
                        Ok(Ok(v)) => return Ok(v),
                        Ok(Err(st)) if st.code() == tonic::Code::InvalidArgument => {
                            return Err(FanoutError::BadRequest(st.message().to_string()));
                        }
                        Ok(Err(st)) if st.code() == tonic::Code::ResourceExhausted => {
                            if st.message().contains("too many samples") {
                                return Err(FanoutError::TooManySamples);
                            }
                            return Err(FanoutError::SourceLimit(format!("store {}: {}", s.addr, st.message())));
                        }
                        Ok(Err(st)) if st.code() == tonic::Code::DeadlineExceeded => {
                            return Err(FanoutError::Timeout);
                        }
                        Ok(Err(st)) => errs.push(format!("store {}: {}", s.addr, st.message())),
                        Err(_) => errs.push(format!("store {}: timed out", s.addr)),
                    }
                }
                Err(FanoutError::Unavailable(errs.join("; ")))
            }
        });
        let mut out = FanoutResult { data: Vec::new(), warnings: Vec::new() };
        for r in futures::future::join_all(futs).await {
            match r {
                Ok(v) => out.data.push(v),
                Err(FanoutError::Unavailable(msg)) => {
                    if !self.partial_response {
                        return Err(FanoutError::Unavailable(msg));
                    }
                    out.warnings.push(msg);
                }
                Err(e) => return Err(e),
            }
        }
        if out.data.is_empty() && !out.warnings.is_empty() {
            return Err(FanoutError::Unavailable(out.warnings.join("; ")));
        }
        Ok(out)
    }

    /// What the store gateways hold completely; `None` when some source's
    /// `Info` is unknown (then nothing is pushed down) or no store has blocks.
    pub fn coverage(&self) -> Option<Coverage> {
        let mut c = Coverage { store_min: i64::MAX, store_max: i64::MIN, head_min: i64::MAX };
        for s in self.sources.iter() {
            let info = s.info.lock().ok().and_then(|g| g.clone())?;
            if info.min_time > info.max_time {
                continue; // empty
            }
            if info.component == "store" {
                c.store_min = c.store_min.min(info.min_time);
                c.store_max = c.store_max.max(info.max_time);
            } else {
                c.head_min = c.head_min.min(info.min_time);
            }
        }
        (c.store_min <= c.store_max).then_some(c)
    }

    /// Aggregation push-down: partial results of one aggregation from every
    /// store-gateway shard at steps `start..=end` (`step` 0: `start` only),
    /// one value per series and step.
    #[allow(clippy::too_many_arguments)]
    pub async fn aggregate(
        &self,
        tenant: &str,
        expr: &str,
        start: i64,
        end: i64,
        step: i64,
        lookback_ms: i64,
        max_samples: usize,
        timeout: Duration,
    ) -> Result<(Vec<Vec<(Labels, Vec<Option<f64>>)>>, u64, Vec<String>, Vec<String>), FanoutError> {
        let n = if step == 0 { 1 } else { ((end - start) / step) as usize + 1 };
        let req = AggregateRequest {
            tenant: tenant.to_string(),
            expr: expr.to_string(),
            start,
            end,
            step,
            lookback_delta_ms: lookback_ms,
            max_samples: max_samples as u64,
            timeout_ms: timeout.as_millis() as i64,
        };
        let r = self
            .each_shard_of(i64::MIN, i64::MAX, Some("store"), |mut c| {
                let req = req.clone();
                async move { Ok(c.aggregate(req).await?.into_inner()) }
            })
            .await?;
        if !r.warnings.is_empty() {
            // A store shard did not answer: no partial push-down results.
            return Err(FanoutError::Unavailable(r.warnings.join("; ")));
        }
        let (mut parts, mut loaded, mut warnings, mut infos) = (Vec::new(), 0, Vec::new(), Vec::new());
        for resp in r.data {
            loaded += resp.samples_loaded;
            warnings.extend(resp.warnings);
            infos.extend(resp.infos);
            let mut part = Vec::with_capacity(resp.series.len());
            for s in resp.series {
                let labels = Labels::from_sorted_or_sort(s.labels.into_iter().map(|l| (l.name, l.value)).collect());
                let mut vals = vec![None; n];
                for (&i, v) in s.steps.iter().zip(s.values) {
                    let slot = vals
                        .get_mut(i as usize)
                        .ok_or_else(|| FanoutError::Unavailable(format!("a store answered step {i} of {n}")))?;
                    *slot = Some(v);
                }
                part.push((labels, vals));
            }
            parts.push(part);
        }
        Ok((parts, loaded, warnings, infos))
    }

    /// Series matching `matchers` in `[min_t, max_t]`, merged across shards.
    pub async fn select(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
        skip_samples: bool,
        budget: &Arc<SampleBudget>,
    ) -> Result<FanoutResult<Vec<Series>>, FanoutError> {
        let ms = matchers.iter().map(to_proto_matcher).collect();
        self.select_proto(tenant, ms, min_t, max_t, skip_samples, budget).await
    }

    /// [`StoreSet::select`] with matchers already in wire form (remote read).
    pub async fn select_proto(
        &self,
        tenant: &str,
        matchers: Vec<LabelMatcher>,
        min_t: i64,
        max_t: i64,
        skip_samples: bool,
        budget: &Arc<SampleBudget>,
    ) -> Result<FanoutResult<Vec<Series>>, FanoutError> {
        let req = SeriesRequest {
            tenant: tenant.to_string(),
            min_time: min_t,
            max_time: max_t,
            matchers,
            skip_samples,
            accept_chunks: true,
            max_samples: if skip_samples { 0 } else { budget.remaining() },
        };
        let r = self
            .each_shard(min_t, max_t, |mut c| {
                let req = req.clone();
                let budget = budget.clone();
                async move {
                    let mut stream = c.series(req).await?.into_inner();
                    let mut out = Vec::new();
                    let mut warnings = Vec::new();
                    // Decode each frame as it arrives, while the source
                    // prepares the next one.
                    while let Some(batch) = stream.next().await {
                        let batch = batch?;
                        warnings.extend(batch.warnings);
                        for s in batch.series {
                            let labels =
                                Labels::from_sorted_or_sort(s.labels.into_iter().map(|l| (l.name, l.value)).collect());
                            let samples = series_samples(s.samples, &s.chunks, min_t, max_t)
                                .map_err(|e| tonic::Status::data_loss(e.to_string()))?;
                            budget.take(samples.len()).map_err(|_| {
                                tonic::Status::resource_exhausted(
                                    "too many samples: the query's sample limit is reached",
                                )
                            })?;
                            out.push((labels, samples, s.chunks.is_empty()));
                        }
                    }
                    Ok((out, warnings))
                }
            })
            .await?;
        let mut warnings = r.warnings;
        let mut data: Vec<Series> = Vec::new();
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let single_source = r.data.len() == 1;
        for (series, w) in r.data {
            warnings.extend(w);
            for (labels, samples, no_chunks) in series {
                if single_source && no_chunks && index.is_empty() && data.last().is_none_or(|l| l.labels < labels) {
                    // Fast path: one source, sorted, unique series.
                    data.push(Series::floats(labels, samples));
                    continue;
                }
                if index.is_empty() {
                    index = data.iter().enumerate().map(|(i, s)| (s.labels.clone(), i)).collect();
                }
                match index.get(&labels) {
                    Some(&i) => merge_samples(&mut data[i].samples, samples),
                    None => {
                        index.insert(labels.clone(), data.len());
                        data.push(Series::floats(labels, samples));
                    }
                }
            }
        }
        data.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(FanoutResult { data, warnings })
    }

    /// Runs a string-list call (label names or values) once per shard and
    /// returns the sorted union.
    async fn string_union<F, Fut>(
        &self,
        min_t: i64,
        max_t: i64,
        call: F,
    ) -> Result<FanoutResult<Vec<String>>, FanoutError>
    where
        F: Fn(StoreClient<TracedChannel>) -> Fut + Clone,
        Fut: std::future::Future<Output = Result<Vec<String>, tonic::Status>>,
    {
        let r = self.each_shard(min_t, max_t, call).await?;
        let mut all: Vec<String> = r.data.into_iter().flatten().collect();
        all.sort();
        all.dedup();
        Ok(FanoutResult { data: all, warnings: r.warnings })
    }

    /// Metric metadata from every shard (ingesters keep it; stores answer
    /// empty), unmerged.
    pub async fn metadata(
        &self,
        tenant: &str,
        metric: &str,
        limit: u32,
    ) -> Result<FanoutResult<Vec<strata_proto::prometheus::MetricMetadata>>, FanoutError> {
        let req = MetadataRequest { tenant: tenant.to_string(), metric: metric.to_string(), limit };
        let r = self
            .each_shard(i64::MIN, i64::MAX, |mut c| {
                let req = req.clone();
                async move { Ok(c.metadata(req).await?.into_inner().metadata) }
            })
            .await?;
        Ok(FanoutResult { data: r.data.into_iter().flatten().collect(), warnings: r.warnings })
    }

    /// Exemplars of the series matching `matchers` in `[min_t, max_t]`,
    /// from every shard (stores answer empty), unmerged.
    pub async fn exemplars(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<FanoutResult<Vec<(Labels, Vec<strata_proto::prometheus::Exemplar>)>>, FanoutError> {
        let req = ExemplarsRequest {
            tenant: tenant.to_string(),
            min_time: min_t,
            max_time: max_t,
            matchers: matchers.iter().map(to_proto_matcher).collect(),
        };
        let r = self
            .each_shard(min_t, max_t, |mut c| {
                let req = req.clone();
                async move { Ok(c.exemplars(req).await?.into_inner().series) }
            })
            .await?;
        let data = r
            .data
            .into_iter()
            .flatten()
            .map(|s| {
                let labels = Labels::from_sorted_or_sort(s.labels.into_iter().map(|l| (l.name, l.value)).collect());
                (labels, s.exemplars)
            })
            .collect();
        Ok(FanoutResult { data, warnings: r.warnings })
    }

    pub async fn label_names(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<FanoutResult<Vec<String>>, FanoutError> {
        let req = LabelNamesRequest {
            tenant: tenant.to_string(),
            min_time: min_t,
            max_time: max_t,
            matchers: matchers.iter().map(to_proto_matcher).collect(),
        };
        self.string_union(min_t, max_t, |mut c| {
            let req = req.clone();
            async move { Ok(c.label_names(req).await?.into_inner().names) }
        })
        .await
    }

    pub async fn label_values(
        &self,
        tenant: &str,
        name: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<FanoutResult<Vec<String>>, FanoutError> {
        let req = LabelValuesRequest {
            tenant: tenant.to_string(),
            name: name.to_string(),
            min_time: min_t,
            max_time: max_t,
            matchers: matchers.iter().map(to_proto_matcher).collect(),
        };
        self.string_union(min_t, max_t, |mut c| {
            let req = req.clone();
            async move { Ok(c.label_values(req).await?.into_inner().values) }
        })
        .await
    }
}

/// A series' samples in `[min_t, max_t]` from its `samples` and decoded XOR
/// `chunks` (which may overlap), in time order without duplicates.
fn series_samples(
    samples: Vec<strata_proto::prometheus::Sample>,
    chunks: &[strata_proto::prometheus::Chunk],
    min_t: i64,
    max_t: i64,
) -> Result<Vec<(i64, f64)>, FanoutError> {
    let mut out: Vec<(i64, f64)> = samples.into_iter().map(|x| (x.timestamp, x.value)).collect();
    for c in chunks {
        let mut decoded = strata_head::chunk::decode(&c.data)
            .ok_or_else(|| FanoutError::Unavailable("a store sent an undecodable XOR chunk".into()))?;
        decoded.truncate(decoded.partition_point(|s| s.0 <= max_t));
        decoded.drain(..decoded.partition_point(|s| s.0 < min_t));
        merge_samples(&mut out, decoded);
    }
    Ok(out)
}

/// Merges `more` into `into` (both time-sorted); on equal timestamps the
/// existing sample wins (replicas and head/block overlaps hold the same data).
pub fn merge_samples(into: &mut Vec<(i64, f64)>, more: Vec<(i64, f64)>) {
    if more.is_empty() {
        return;
    }
    if into.last().is_none_or(|l| l.0 < more[0].0) {
        into.extend(more);
        return;
    }
    let old = std::mem::take(into);
    let (mut i, mut j) = (0, 0);
    into.reserve(old.len() + more.len());
    while i < old.len() || j < more.len() {
        match (old.get(i), more.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                into.push(*a);
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                into.push(*a);
                i += 1;
            }
            (Some(_), Some(b)) => {
                into.push(*b);
                j += 1;
            }
            (Some(a), None) => {
                into.push(*a);
                i += 1;
            }
            (None, Some(b)) => {
                into.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_dedupes_and_orders() {
        let mut a = vec![(1, 1.0), (3, 3.0), (5, 5.0)];
        merge_samples(&mut a, vec![(2, 2.0), (3, 30.0), (6, 6.0)]);
        assert_eq!(a, vec![(1, 1.0), (2, 2.0), (3, 3.0), (5, 5.0), (6, 6.0)]);
        let mut b = vec![(1, 1.0)];
        merge_samples(&mut b, vec![(2, 2.0)]);
        assert_eq!(b, vec![(1, 1.0), (2, 2.0)]);
    }
}
