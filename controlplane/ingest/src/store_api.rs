//! StoreAPI served from the head.

use std::pin::Pin;

use futures::Stream;
use strata_model::Matcher;
use strata_model::downsample::View;
use strata_proto::prometheus::{Chunk, Exemplar, Label, MetricMetadata, Sample, chunk};
use strata_proto::store::store_server::Store;
use strata_proto::store::{
    AggregateRequest, AggregateResponse, ExemplarsRequest, ExemplarsResponse, InfoRequest, InfoResponse,
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, MetadataRequest, MetadataResponse,
    Series, SeriesExemplars, SeriesRequest, SeriesResponse,
};

use crate::raft_types::Raft;
use crate::state_machine::{FrozenData, StateMachine};

pub struct HeadStore {
    pub sm: StateMachine,
    pub raft: Raft,
    pub node_id: u64,
    pub shard: String,
    /// A leader without a quorum acknowledgement for this long stops
    /// claiming leadership (the election timeout).
    pub lease: std::time::Duration,
}

fn matchers(ms: &[strata_proto::prometheus::LabelMatcher]) -> Result<Vec<Matcher>, tonic::Status> {
    ms.iter().map(|m| Matcher::from_proto(m).map_err(|e| tonic::Status::invalid_argument(e.to_string()))).collect()
}

fn tenant(t: &str) -> &str {
    if t.is_empty() { strata_model::DEFAULT_TENANT } else { t }
}

impl HeadStore {
    /// The spill directory as an object store (the block reader's interface).
    fn spill_store(&self) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, tonic::Status> {
        let root = self.sm.spill_root();
        std::fs::create_dir_all(&root)
            .and_then(|_| object_store::local::LocalFileSystem::new_with_prefix(&root).map_err(std::io::Error::other))
            .map(|fs| std::sync::Arc::new(fs) as std::sync::Arc<dyn object_store::ObjectStore>)
            .map_err(|e| tonic::Status::internal(format!("spill directory {}: {e}", root.display())))
    }

    /// On the leader, confirm leadership with a quorum before reading so
    /// a write acknowledged before this read is visible (linearizable
    /// read). A leader that cannot (it lost its quorum, or its Raft core
    /// stopped) answers UNAVAILABLE instead of possibly stale data: the
    /// querier then reads another replica or warns of a partial response.
    async fn read_barrier(&self) -> Result<(), tonic::Status> {
        let m = self.raft.metrics().borrow().clone();
        if let Err(fatal) = &m.running_state {
            return Err(tonic::Status::unavailable(format!(
                "node {}: the Raft core has stopped: {fatal}",
                self.node_id
            )));
        }
        if m.current_leader != Some(self.node_id) {
            return Ok(());
        }
        match tokio::time::timeout(READ_BARRIER_TIMEOUT, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(tonic::Status::unavailable(format!(
                "node {} cannot confirm its leadership for a consistent read: {e}",
                self.node_id
            ))),
            Err(_) => Err(tonic::Status::unavailable(format!(
                "node {} cannot confirm its leadership for a consistent read: no quorum within {READ_BARRIER_TIMEOUT:?}",
                self.node_id
            ))),
        }
    }
}

/// Longest a leader waits for a quorum to confirm its leadership before a read.
const READ_BARRIER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, tonic::Status>> + Send>>;

/// Sorts by labels and merges entries with equal labels (head + frozen
/// blocks hold disjoint time ranges of one series).
fn merge_by_labels(mut sel: strata_head::SeriesSamples) -> strata_head::SeriesSamples {
    sel.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.first().map(|x| x.0).cmp(&b.1.first().map(|x| x.0))));
    let mut out: strata_head::SeriesSamples = Vec::with_capacity(sel.len());
    for (l, s) in sel {
        match out.last_mut() {
            Some(last) if last.0 == l => {
                last.1.extend(s);
                last.1.sort_by_key(|x| x.0);
                last.1.dedup_by_key(|x| x.0);
            }
            _ => out.push((l, s)),
        }
    }
    out
}

#[tonic::async_trait]
impl Store for HeadStore {
    async fn info(&self, req: tonic::Request<InfoRequest>) -> Result<tonic::Response<InfoResponse>, tonic::Status> {
        // Which tenants exist is for cluster members and queriers only:
        // callers that proved it with a client certificate.
        let list_tenants = strata_server::grpc::verified_client(&req);
        let st = self.sm.state.read().await;
        let (mut min_time, mut max_time) = st.head.time_range().unwrap_or((i64::MAX, i64::MIN));
        for b in st.blocks.pending.values().chain(st.blocks.retained.iter().map(|(b, _)| b)) {
            min_time = min_time.min(b.min_t);
            max_time = max_time.max(b.before - 1);
        }
        Ok(tonic::Response::new(InfoResponse {
            min_time,
            max_time,
            shard: self.shard.clone(),
            component: "ingester".into(),
            node_id: self.node_id,
            // A node whose Raft core stopped knows no leader, and a leader
            // cut off from its quorum does not advertise itself as one.
            leader_id: crate::raft_types::acting_leader(&self.raft.metrics().borrow(), self.lease).unwrap_or(0),
            tenants: if list_tenants { st.head.tenants() } else { Vec::new() },
        }))
    }

    type SeriesStream = SeriesStream;

    async fn series(&self, req: tonic::Request<SeriesRequest>) -> Result<tonic::Response<SeriesStream>, tonic::Status> {
        let r = req.into_inner();
        // A downsampled read: the head holds raw samples, answered in the
        // view's terms. Every view of a raw sample but `count` is the
        // sample itself, so those views are answered with the head's
        // chunks as they are (a 30-day panel's last hours, ~9 M samples,
        // were decoded here and sent as protobuf samples, ~17 bytes each,
        // instead of 1–2); `count` as samples of 1.
        let (ms, view) = strata_model::downsample::split_view(matchers(&r.matchers)?)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        if ms.is_empty() {
            return Err(tonic::Status::invalid_argument("at least one matcher is required"));
        }
        self.read_barrier().await?;
        let use_chunks = r.accept_chunks && !r.skip_samples && view.is_none_or(|v| v.view != View::Count);
        let (head_chunks, mut sel, spilled) = {
            let st = self.sm.state.read().await;
            let t = tenant(&r.tenant);
            let (head_chunks, mut sel) = if use_chunks {
                (st.head.select_chunks(t, &ms, r.min_time, r.max_time), Vec::new())
            } else {
                (Vec::new(), st.head.select(t, &ms, r.min_time, r.max_time, r.skip_samples))
            };
            // Cut blocks not yet uploaded (or recently uploaded) are served
            // from memory, or from their files once spilled to disk.
            let mut spilled = Vec::new();
            let frozen = st.blocks.pending.values().chain(st.blocks.retained.iter().map(|(b, _)| b));
            for b in frozen.filter(|b| b.tenant == t && b.min_t <= r.max_time && b.before > r.min_time) {
                let series = match &b.data {
                    FrozenData::Memory(series) => series,
                    FrozenData::Spilled(sb) => {
                        spilled.push(sb.clone());
                        continue;
                    }
                };
                for (labels, samples) in series.iter() {
                    if !ms.iter().all(|m| m.matches(labels.get(&m.name).unwrap_or(""))) {
                        continue;
                    }
                    let part: Vec<(i64, f64)> =
                        samples.iter().copied().filter(|(ts, _)| *ts >= r.min_time && *ts <= r.max_time).collect();
                    if part.is_empty() {
                        continue;
                    }
                    sel.push((labels.clone(), if r.skip_samples { Vec::new() } else { part }));
                }
            }
            (head_chunks, sel, spilled)
        };
        let store = self.spill_store()?;
        // The caller's sample limit: what is already selected from memory
        // (chunks count their samples in their first two bytes), plus the
        // rows of the spilled blocks' matching series, before reading them.
        let mut loaded: u64 = head_chunks
            .iter()
            .flat_map(|(_, cs)| {
                cs.iter().map(|(_, _, data)| data.get(..2).map_or(0, |n| u16::from_be_bytes([n[0], n[1]])))
            })
            .map(u64::from)
            .sum::<u64>()
            + sel.iter().map(|(_, s)| s.len() as u64).sum::<u64>();
        let over = |loaded: u64| r.max_samples > 0 && !r.skip_samples && loaded > r.max_samples;
        let too_many = || {
            tonic::Status::resource_exhausted(format!(
                "query processing would load too many samples into memory in query execution (ingester: over {}, the querier's --query.max-samples)",
                r.max_samples
            ))
        };
        if over(loaded) {
            return Err(too_many());
        }
        for sb in spilled {
            let refs: Vec<u32> = (0..sb.index.labels.len() as u32)
                .filter(|&i| {
                    let l = &sb.index.labels[i as usize];
                    ms.iter().all(|m| m.matches(l.get(&m.name).unwrap_or("")))
                })
                .collect();
            let inside = sb.local.meta.min_time >= r.min_time && sb.local.meta.max_time <= r.max_time;
            if !r.skip_samples && inside {
                // Every row of a block inside the range is loaded.
                let rows = &sb.index.row_start;
                if over(loaded + refs.iter().map(|&i| rows[i as usize + 1] - rows[i as usize]).sum::<u64>()) {
                    return Err(too_many());
                }
            }
            if r.skip_samples {
                sel.extend(refs.iter().map(|&i| (sb.index.labels[i as usize].clone(), Vec::new())));
                continue;
            }
            let samples =
                sb.index.read_samples(store.clone(), &refs, r.min_time, r.max_time).await.map_err(|e| {
                    tonic::Status::internal(format!("reading spilled block {}: {e}", sb.local.meta.ulid))
                })?;
            loaded += samples.iter().map(|s| s.len() as u64).sum::<u64>();
            if over(loaded) {
                return Err(too_many());
            }
            for (i, s) in refs.iter().zip(samples) {
                if !s.is_empty() {
                    let labels = sb.index.labels[*i as usize].clone();
                    sel.push((labels, s));
                }
            }
        }
        let mut selected = merge_by_labels(sel);
        if let Some(v) = view {
            selected.iter_mut().for_each(|(_, s)| v.view.apply_to_raw(s));
        }
        // Head data as XOR chunks (no decoding here, ~1–2 bytes/sample on the
        // wire); frozen blocks as samples. The querier merges by labels.
        let mut series: Vec<Series> = head_chunks
            .into_iter()
            .map(|(l, cs)| Series {
                labels: l.to_proto(),
                samples: vec![],
                chunks: cs
                    .into_iter()
                    .map(|(min_t, max_t, data)| Chunk {
                        min_time_ms: min_t,
                        max_time_ms: max_t,
                        r#type: chunk::Encoding::Xor as i32,
                        data: data.into(),
                    })
                    .collect(),
            })
            .collect();
        series.extend(selected.iter().map(|(l, s)| Series {
            labels: l.to_proto(),
            samples: s.iter().map(|(t, v)| Sample { timestamp: *t, value: *v }).collect(),
            chunks: vec![],
        }));
        let mut batches: Vec<Result<SeriesResponse, tonic::Status>> = Vec::new();
        let mut it = series.into_iter().peekable();
        while it.peek().is_some() {
            let batch: Vec<Series> = it.by_ref().take(500).collect();
            batches.push(Ok(SeriesResponse { series: batch, warnings: vec![] }));
        }
        Ok(tonic::Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn label_names(
        &self,
        req: tonic::Request<LabelNamesRequest>,
    ) -> Result<tonic::Response<LabelNamesResponse>, tonic::Status> {
        let r = req.into_inner();
        let ms = matchers(&r.matchers)?;
        let st = self.sm.state.read().await;
        Ok(tonic::Response::new(LabelNamesResponse { names: st.head.label_names(tenant(&r.tenant), &ms) }))
    }

    async fn label_values(
        &self,
        req: tonic::Request<LabelValuesRequest>,
    ) -> Result<tonic::Response<LabelValuesResponse>, tonic::Status> {
        let r = req.into_inner();
        let ms = matchers(&r.matchers)?;
        let st = self.sm.state.read().await;
        Ok(tonic::Response::new(LabelValuesResponse { values: st.head.label_values(tenant(&r.tenant), &r.name, &ms) }))
    }

    async fn aggregate(
        &self,
        _: tonic::Request<AggregateRequest>,
    ) -> Result<tonic::Response<AggregateResponse>, tonic::Status> {
        // The querier pushes aggregations down only to store gateways (whole
        // blocks); the head answers raw series.
        Err(tonic::Status::unimplemented("aggregation push-down is served by store gateways"))
    }

    async fn metadata(
        &self,
        req: tonic::Request<MetadataRequest>,
    ) -> Result<tonic::Response<MetadataResponse>, tonic::Status> {
        let r = req.into_inner();
        let st = self.sm.state.read().await;
        let metric = (!r.metric.is_empty()).then_some(r.metric.as_str());
        let metadata = st
            .head
            .metadata(tenant(&r.tenant), metric, r.limit as usize)
            .into_iter()
            .map(|(name, m)| MetricMetadata {
                r#type: m.metric_type,
                metric_family_name: name,
                help: m.help,
                unit: m.unit,
            })
            .collect();
        Ok(tonic::Response::new(MetadataResponse { metadata }))
    }

    async fn exemplars(
        &self,
        req: tonic::Request<ExemplarsRequest>,
    ) -> Result<tonic::Response<ExemplarsResponse>, tonic::Status> {
        let r = req.into_inner();
        let ms = matchers(&r.matchers)?;
        if ms.is_empty() {
            return Err(tonic::Status::invalid_argument("at least one matcher is required"));
        }
        self.read_barrier().await?;
        let st = self.sm.state.read().await;
        let series = st
            .head
            .exemplars(tenant(&r.tenant), &[ms], r.min_time, r.max_time)
            .into_iter()
            .map(|(labels, es)| SeriesExemplars {
                labels: labels.to_proto(),
                exemplars: es
                    .into_iter()
                    .map(|e| Exemplar {
                        labels: e.labels.into_iter().map(|(name, value)| Label { name, value }).collect(),
                        value: e.value,
                        timestamp: e.timestamp,
                    })
                    .collect(),
            })
            .collect();
        Ok(tonic::Response::new(ExemplarsResponse { series }))
    }
}
