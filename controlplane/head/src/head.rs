//! The head: recent samples in memory, per tenant.
//!
//! Per series: closed XOR chunks (≤ `chunk_samples` samples each), an open
//! chunk being appended to, and a small sorted map for out-of-order samples
//! inside the window. An inverted index (label name → value → series refs)
//! serves `=`, `!=`, `=~`, `!~`. Appends follow Prometheus' rules:
//! samples older than the newest sample of the tenant minus the
//! out-of-order window are "out of bounds"; a second sample with the same
//! timestamp and a different value is a "duplicate sample for timestamp";
//! the same timestamp and value is accepted as a no-op. Everything here is
//! deterministic so every Raft replica holds the same head.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_model::{Labels, Limits, Matcher};
use strata_proto::prometheus::{Sample, WriteRequest};
use strata_proto::write_view::WriteView;

use crate::chunk::{self, XorChunk};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadConfig {
    /// How far behind the tenant's newest sample an out-of-order sample
    /// (older than its series' last sample) may be (ms).
    pub ooo_window_ms: i64,
    /// How far behind the tenant's newest sample an in-order sample may be
    /// (ms); older samples are "out of bounds". Prometheus: half a block range.
    pub appendable_window_ms: i64,
    pub chunk_samples: usize,
    pub limits: Limits,
    /// Exemplars one tenant keeps (the oldest go first); 0 keeps none.
    pub max_exemplars: usize,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            ooo_window_ms: 10 * 60 * 1000,
            appendable_window_ms: 60 * 60 * 1000,
            chunk_samples: 120,
            limits: Limits::default(),
            max_exemplars: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClosedChunk {
    min_t: i64,
    max_t: i64,
    /// Immutable once closed: shared, not copied, by snapshots
    /// ([`Head::freeze`]). Serialized as a byte vector.
    #[serde(with = "shared_bytes")]
    data: Arc<[u8]>,
}

/// An `Arc<T>` in the wire form of its `T`: what a snapshot shares with
/// the head (immutable labels, the list of closed chunks) is written as if
/// it were owned, so the snapshot format does not change.
mod shared {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<T: Serialize, S: Serializer>(v: &Arc<T>, s: S) -> Result<S::Ok, S::Error> {
        T::serialize(v, s)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Arc<T>, D::Error> {
        T::deserialize(d).map(Arc::new)
    }
}

/// `Arc<[u8]>` in the wire form of a `Vec<u8>` (bincode: length, bytes).
mod shared_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(v: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        Vec::<u8>::deserialize(d).map(Arc::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemSeries {
    /// Immutable: shared with snapshots ([`Head::freeze`]), not copied.
    #[serde(with = "shared")]
    pub labels: Arc<Labels>,
    /// Replaced (copy-on-write) when a chunk closes or a cut removes
    /// chunks, so a snapshot shares the list instead of copying it.
    #[serde(with = "shared")]
    closed: Arc<Vec<ClosedChunk>>,
    open: XorChunk,
    /// Out-of-order samples (timestamp → value bits), merged on read.
    ooo: BTreeMap<i64, u64>,
    last_t: i64,
    last_v: u64,
}

impl MemSeries {
    fn new(labels: Labels) -> Self {
        MemSeries {
            labels: Arc::new(labels),
            closed: Arc::default(),
            open: XorChunk::new(),
            ooo: BTreeMap::new(),
            last_t: i64::MIN,
            last_v: 0,
        }
    }

    fn num_samples(&self) -> usize {
        self.closed.iter().map(|c| u16::from_be_bytes([c.data[0], c.data[1]]) as usize).sum::<usize>()
            + self.open.num_samples()
            + self.ooo.len()
    }

    /// Value stored at `t`, if any (in-order chunks only; used for OOO duplicate checks).
    fn value_at(&self, t: i64) -> Option<u64> {
        if let Some(v) = self.ooo.get(&t) {
            return Some(*v);
        }
        for c in self.closed.iter() {
            if c.min_t <= t && t <= c.max_t {
                return chunk::decode(&c.data)?.into_iter().find(|s| s.0 == t).map(|s| s.1.to_bits());
            }
        }
        if self.open.num_samples() > 0 && self.open.min_time() <= t {
            return self.open.samples().into_iter().find(|s| s.0 == t).map(|s| s.1.to_bits());
        }
        None
    }

    /// Whether any sample lies in `[min_t, max_t]`, decoding a chunk only
    /// when its time range straddles a boundary.
    pub fn has_samples_in(&self, min_t: i64, max_t: i64) -> bool {
        if self.ooo.range(min_t..=max_t).next().is_some() {
            return true;
        }
        let chunk_hit = |c_min: i64, c_max: i64, decode: &dyn Fn() -> Vec<(i64, f64)>| {
            if c_max < min_t || c_min > max_t {
                false
            } else if c_min >= min_t || c_max <= max_t {
                // The chunk's first or last sample is inside the range.
                true
            } else {
                decode().iter().any(|(t, _)| *t >= min_t && *t <= max_t)
            }
        };
        for c in self.closed.iter() {
            if chunk_hit(c.min_t, c.max_t, &|| chunk::decode(&c.data).unwrap_or_default()) {
                return true;
            }
        }
        self.open.num_samples() > 0 && chunk_hit(self.open.min_time(), self.open.max_time(), &|| self.open.samples())
    }

    /// Samples with `min_t <= t <= max_t`, in time order.
    pub fn samples(&self, min_t: i64, max_t: i64) -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        for c in self.closed.iter() {
            if c.max_t < min_t || c.min_t > max_t {
                continue;
            }
            if let Some(s) = chunk::decode(&c.data) {
                out.extend(s.into_iter().filter(|(t, _)| *t >= min_t && *t <= max_t));
            }
        }
        if self.open.num_samples() > 0 && self.open.max_time() >= min_t && self.open.min_time() <= max_t {
            out.extend(self.open.samples().into_iter().filter(|(t, _)| *t >= min_t && *t <= max_t));
        }
        if !self.ooo.is_empty() {
            out.extend(self.ooo.range(min_t..=max_t).map(|(t, v)| (*t, f64::from_bits(*v))));
            out.sort_by_key(|s| s.0);
        }
        out
    }
}

/// A series' data in wire form: encoded XOR chunks `(min_t, max_t, bytes)`.
pub type ChunkList = Vec<(i64, i64, Vec<u8>)>;

impl MemSeries {
    /// Chunks overlapping `[min_t, max_t]` as they are held (closed and open
    /// chunks copied, out-of-order samples encoded into one more chunk).
    pub fn chunks(&self, min_t: i64, max_t: i64) -> ChunkList {
        let mut out = Vec::new();
        for c in self.closed.iter() {
            if c.max_t >= min_t && c.min_t <= max_t {
                out.push((c.min_t, c.max_t, c.data.to_vec()));
            }
        }
        if self.open.num_samples() > 0 && self.open.max_time() >= min_t && self.open.min_time() <= max_t {
            out.push((self.open.min_time(), self.open.max_time(), self.open.bytes().to_vec()));
        }
        let ooo: Vec<(i64, u64)> = self.ooo.range(min_t..=max_t).map(|(t, v)| (*t, *v)).collect();
        for part in ooo.chunks(120) {
            let mut c = XorChunk::new();
            for (t, v) in part {
                c.append(*t, f64::from_bits(*v));
            }
            out.push((c.min_time(), c.max_time(), c.bytes().to_vec()));
        }
        out
    }
}

/// One tenant's series and index.
#[derive(Debug)]
pub struct TenantHead {
    series: Vec<MemSeries>,
    /// Hash of the label set → series refs with that hash (collisions compared in full).
    by_hash: HashMap<u64, Vec<u32>>,
    postings: HashMap<String, HashMap<String, Vec<u32>>>,
    max_t: i64,
    min_t: i64,
    /// Samples before this time have been cut into blocks; older samples are
    /// rejected so blocks stay immutable.
    cut_before: i64,
    /// Metric family name → its latest metadata (type, help, unit).
    metadata: BTreeMap<String, FamilyMetadata>,
    /// Exemplars in arrival order (series ref, exemplar), at most
    /// `max_exemplars`, like Prometheus' circular exemplar buffer.
    exemplars: std::collections::VecDeque<(u32, StoredExemplar)>,
    /// Newest exemplar time per series ref: older or equal ones are
    /// duplicates or out of order and skipped (derived from `exemplars`).
    exemplar_last: HashMap<u32, i64>,
}

/// One exemplar: its own labels (e.g. `trace_id`), value and time (ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredExemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp: i64,
}

/// Prometheus' limit on an exemplar's label names and values together
/// (UTF-8 characters).
pub const EXEMPLAR_MAX_LABEL_CHARS: usize = 128;

/// A metric family's metadata as remote write carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyMetadata {
    /// `prometheus.MetricMetadata.MetricType` value.
    pub metric_type: i32,
    pub help: String,
    pub unit: String,
}

/// Metric families whose metadata one tenant keeps at most (later ones are
/// ignored: metadata is advisory, samples are never refused for it).
pub const MAX_METADATA_FAMILIES: usize = 50_000;
/// Longest help text kept (longer ones are cut at a character boundary).
pub const MAX_HELP_BYTES: usize = 4096;

impl TenantHead {
    fn new() -> Self {
        TenantHead {
            series: Vec::new(),
            by_hash: HashMap::new(),
            postings: HashMap::new(),
            max_t: i64::MIN,
            min_t: i64::MAX,
            cut_before: i64::MIN,
            metadata: BTreeMap::new(),
            exemplars: std::collections::VecDeque::new(),
            exemplar_last: HashMap::new(),
        }
    }

    /// Stores the exemplars of series `sref`; returns how many were kept.
    fn record_exemplars(&mut self, sref: u32, exemplars: &[strata_proto::prometheus::Exemplar], max: usize) -> u64 {
        let mut kept = 0;
        for e in exemplars {
            if max == 0 {
                break;
            }
            let chars: usize = e.labels.iter().map(|l| l.name.chars().count() + l.value.chars().count()).sum();
            if chars > EXEMPLAR_MAX_LABEL_CHARS {
                continue;
            }
            let last = self.exemplar_last.entry(sref).or_insert(i64::MIN);
            if e.timestamp <= *last {
                continue; // duplicate or out of order, as Prometheus skips them
            }
            *last = e.timestamp;
            let labels = e.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
            self.exemplars.push_back((sref, StoredExemplar { labels, value: e.value, timestamp: e.timestamp }));
            while self.exemplars.len() > max {
                self.exemplars.pop_front();
            }
            kept += 1;
        }
        kept
    }

    fn rebuild_exemplar_last(&mut self) {
        self.exemplar_last.clear();
        for (r, e) in &self.exemplars {
            let last = self.exemplar_last.entry(*r).or_insert(i64::MIN);
            *last = (*last).max(e.timestamp);
        }
    }

    /// Records the metadata entries of a write request (latest wins).
    fn record_metadata(&mut self, md: &[strata_proto::prometheus::MetricMetadata]) {
        for m in md {
            if m.metric_family_name.is_empty() {
                continue;
            }
            let mut help = m.help.clone();
            if help.len() > MAX_HELP_BYTES {
                let mut cut = MAX_HELP_BYTES;
                while !help.is_char_boundary(cut) {
                    cut -= 1;
                }
                help.truncate(cut);
            }
            let entry = FamilyMetadata { metric_type: m.r#type, help, unit: m.unit.clone() };
            let full = self.metadata.len() >= MAX_METADATA_FAMILIES;
            match self.metadata.get_mut(&m.metric_family_name) {
                Some(e) => *e = entry,
                None if !full => {
                    self.metadata.insert(m.metric_family_name.clone(), entry);
                }
                None => {}
            }
        }
    }

    fn add_series(&mut self, labels: Labels) -> u32 {
        self.insert_series(MemSeries::new(labels))
    }

    /// Indexes a series (new, restored or kept by a cut) and returns its ref.
    fn insert_series(&mut self, series: MemSeries) -> u32 {
        let r = self.series.len() as u32;
        for (n, v) in series.labels.iter() {
            self.postings.entry(n.to_string()).or_default().entry(v.to_string()).or_default().push(r);
        }
        let h = labels_hash(series.labels.iter());
        self.by_hash.entry(h).or_default().push(r);
        self.series.push(series);
        r
    }

    /// The series with exactly these labels, found without allocating.
    fn lookup<L: SeriesLabels + ?Sized>(&self, labels: &L) -> Option<u32> {
        let h = labels_hash(labels.pairs());
        self.by_hash.get(&h)?.iter().copied().find(|r| {
            let s = &self.series[*r as usize].labels;
            s.len() == labels.count() && s.iter().zip(labels.pairs()).all(|((n, v), (ln, lv))| n == ln && v == lv)
        })
    }

    /// Appends one series' samples (creating the series within the
    /// tenant's limit); its ref, or `None` when the series was not created.
    fn append_samples<L: SeriesLabels + ?Sized>(
        &mut self,
        cfg: &HeadConfig,
        labels: &L,
        samples: &[Sample],
        out: &mut AppendOutcome,
    ) -> Option<u32> {
        let th = self;
        let sref = match th.lookup(labels) {
            Some(r) => r,
            None => {
                let labels = Labels(labels.pairs().map(|(n, v)| (n.to_string(), v.to_string())).collect());
                if th.series.len() >= cfg.limits.max_series {
                    out.limited = true;
                    out.reject(samples.len() as u64, || {
                        format!(
                            "per-tenant series limit of {} exceeded (max_series); series {labels} not created",
                            cfg.limits.max_series
                        )
                    });
                    return None;
                }
                th.add_series(labels)
            }
        };
        for s in samples {
            let series = &mut th.series[sref as usize];
            let vbits = s.value.to_bits();
            let in_order = s.timestamp >= series.last_t || series.last_t == i64::MIN;
            let window = if in_order { cfg.appendable_window_ms.max(cfg.ooo_window_ms) } else { cfg.ooo_window_ms };
            if s.timestamp < th.cut_before {
                out.reject(1, || {
                    format!(
                        "out of bounds: sample for series {} at {} is before {}, which is already in a block",
                        series.labels, s.timestamp, th.cut_before
                    )
                });
                continue;
            }
            if th.max_t != i64::MIN && s.timestamp < th.max_t.saturating_sub(window) {
                out.reject(1, || {
                    if in_order {
                        format!(
                            "out of bounds: sample for series {} at {} is more than {}s older than the newest sample ({})",
                            series.labels, s.timestamp, window / 1000, th.max_t
                        )
                    } else {
                        format!(
                            "out of order sample: sample for series {} at {} is older than its last sample and than the out-of-order window ({}s) before the newest sample ({})",
                            series.labels, s.timestamp, window / 1000, th.max_t
                        )
                    }
                });
                continue;
            }
            if s.timestamp > series.last_t {
                if series.open.num_samples() >= cfg.chunk_samples {
                    let full = std::mem::take(&mut series.open);
                    Arc::make_mut(&mut series.closed).push(ClosedChunk {
                        min_t: full.min_time(),
                        max_t: full.max_time(),
                        data: full.bytes().into(),
                    });
                }
                series.open.append(s.timestamp, s.value);
                series.last_t = s.timestamp;
                series.last_v = vbits;
            } else if s.timestamp == series.last_t {
                if vbits != series.last_v {
                    out.reject(1, || {
                        format!(
                            "duplicate sample for timestamp {} with a different value for series {}",
                            s.timestamp, series.labels
                        )
                    });
                    continue;
                }
            } else {
                match series.value_at(s.timestamp) {
                    Some(v) if v == vbits => {}
                    Some(_) => {
                        out.reject(1, || {
                            format!(
                                "duplicate sample for timestamp {} with a different value for series {}",
                                s.timestamp, series.labels
                            )
                        });
                        continue;
                    }
                    None => {
                        series.ooo.insert(s.timestamp, vbits);
                    }
                }
            }
            th.max_t = th.max_t.max(s.timestamp);
            th.min_t = th.min_t.min(s.timestamp);
            out.samples_written += 1;
        }
        Some(sref)
    }

    /// Series refs matching all matchers.
    fn select_refs(&self, matchers: &[Matcher]) -> Vec<u32> {
        // Narrow with matchers that cannot match a missing label.
        let mut candidates: Option<Vec<u32>> = None;
        for m in matchers.iter().filter(|m| !m.matches_empty()) {
            let mut refs: Vec<u32> = match self.postings.get(&m.name) {
                None => Vec::new(),
                Some(values) => match m.op {
                    strata_model::MatchOp::Equal => values.get(&m.value).cloned().unwrap_or_default(),
                    _ => values.iter().filter(|(v, _)| m.matches(v)).flat_map(|(_, r)| r.iter().copied()).collect(),
                },
            };
            refs.sort_unstable();
            refs.dedup();
            candidates = Some(match candidates {
                None => refs,
                Some(c) => intersect(&c, &refs),
            });
            if candidates.as_ref().is_some_and(Vec::is_empty) {
                return Vec::new();
            }
        }
        let candidates = candidates.unwrap_or_else(|| (0..self.series.len() as u32).collect());
        candidates
            .into_iter()
            .filter(|r| {
                let s = &self.series[*r as usize];
                matchers.iter().all(|m| m.matches(s.labels.get(&m.name).unwrap_or("")))
            })
            .collect()
    }
}

impl Default for TenantHead {
    fn default() -> Self {
        Self::new()
    }
}

/// A series' label pairs in the order they were sent: prost's `Label`s or
/// borrowed `(name, value)` slices of the request ([`WriteView`]).
pub trait SeriesLabels {
    fn count(&self) -> usize;
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)>;
}

impl SeriesLabels for [strata_proto::prometheus::Label] {
    fn count(&self) -> usize {
        self.len()
    }
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter().map(|l| (l.name.as_str(), l.value.as_str()))
    }
}

impl SeriesLabels for [(&str, &str)] {
    fn count(&self) -> usize {
        self.len()
    }
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter().copied()
    }
}

/// Stable hash of a label set (FNV-1a over names and values with separators).
fn labels_hash<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= *x as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (n, v) in labels {
        eat(n.as_bytes());
        eat(&[0xff]);
        eat(v.as_bytes());
        eat(&[0xfe]);
    }
    h
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// What an append did, for the remote write response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppendOutcome {
    pub samples_written: u64,
    pub samples_rejected: u64,
    pub exemplars_written: u64,
    /// The first few rejection messages.
    pub errors: Vec<String>,
    /// True if a rejection was a tenant limit (series count).
    pub limited: bool,
}

impl AppendOutcome {
    fn reject(&mut self, n: u64, msg: impl FnOnce() -> String) {
        self.samples_rejected += n;
        if self.errors.len() < 5 {
            self.errors.push(msg());
        }
    }

    pub fn merge(&mut self, o: AppendOutcome) {
        self.samples_written += o.samples_written;
        self.samples_rejected += o.samples_rejected;
        self.exemplars_written += o.exemplars_written;
        self.limited |= o.limited;
        for e in o.errors {
            if self.errors.len() < 5 {
                self.errors.push(e);
            }
        }
    }
}

/// Series with their samples, as returned by [`Head::select`].
pub type SeriesSamples = Vec<(Labels, Vec<(i64, f64)>)>;

/// All tenants' heads.
#[derive(Debug, Default)]
pub struct Head {
    pub cfg: HeadConfig,
    tenants: BTreeMap<String, TenantHead>,
}

/// Serialized form of the head (Raft snapshots).
#[derive(Serialize, Deserialize)]
struct HeadSnapshot {
    tenants: Vec<TenantSnapshot>,
    /// Per tenant (same order as `tenants`), its metric metadata.
    metadata: Vec<Vec<(String, FamilyMetadata)>>,
    /// Per tenant, its exemplars (series refs as in `tenants[i].series`).
    exemplars: Vec<Vec<(u32, StoredExemplar)>>,
}

/// A frozen copy of the head ([`Head::freeze`]).
pub struct HeadView(HeadSnapshot);

impl HeadView {
    /// The snapshot bytes ([`Head::restore`] reads them).
    pub fn encode(&self) -> Result<Vec<u8>, bincode::Error> {
        bincode::serialize(&self.0)
    }

    /// [`HeadView::encode`] appended to `out` (no intermediate copy).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), bincode::Error> {
        bincode::serialize_into(out, &self.0)
    }
}

/// Snapshots written before metadata was kept.
#[derive(Deserialize)]
struct HeadSnapshotV1 {
    tenants: Vec<TenantSnapshot>,
}

#[derive(Serialize, Deserialize)]
struct TenantSnapshot {
    tenant: String,
    min_t: i64,
    max_t: i64,
    cut_before: i64,
    series: Vec<MemSeries>,
}

/// Per-tenant figures the block cutter decides on.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRange {
    pub tenant: String,
    /// Series in the tenant's index.
    pub series: usize,
    /// Oldest and newest sample held (`min_t > max_t` when empty).
    pub min_t: i64,
    pub max_t: i64,
    pub cut_before: i64,
}

impl Head {
    pub fn new(cfg: HeadConfig) -> Self {
        Head { cfg, tenants: BTreeMap::new() }
    }

    /// Appends a remote write request for `tenant`. Labels must already be
    /// validated (the write handler does it before proposing).
    pub fn append(&mut self, tenant: &str, req: &WriteRequest) -> AppendOutcome {
        let cfg = self.cfg.clone();
        let th = self.tenants.entry(tenant.to_string()).or_default();
        th.record_metadata(&req.metadata);
        let mut out = AppendOutcome::default();
        for ts in &req.timeseries {
            if ts.samples.is_empty() {
                // Exemplars on their own (how Prometheus sends them) attach
                // to an existing series, as in Prometheus' head.
                if !ts.exemplars.is_empty()
                    && let Some(sref) = th.lookup(ts.labels.as_slice())
                {
                    out.exemplars_written += th.record_exemplars(sref, &ts.exemplars, cfg.max_exemplars);
                }
                continue;
            }
            if let Some(sref) = th.append_samples(&cfg, ts.labels.as_slice(), &ts.samples, &mut out) {
                out.exemplars_written += th.record_exemplars(sref, &ts.exemplars, cfg.max_exemplars);
            }
        }
        out
    }

    /// [`Head::append`] for a samples-only request read without copying its
    /// labels ([`WriteView`]): the same rules, outcome and state.
    pub fn append_view(&mut self, tenant: &str, req: &WriteView) -> AppendOutcome {
        let cfg = self.cfg.clone();
        // No `String` for the tenant unless it is new (one per request otherwise).
        if !self.tenants.contains_key(tenant) {
            self.tenants.insert(tenant.to_string(), TenantHead::default());
        }
        let Some(th) = self.tenants.get_mut(tenant) else { return AppendOutcome::default() };
        let mut out = AppendOutcome::default();
        for (labels, samples) in req.series() {
            if !samples.is_empty() {
                th.append_samples(&cfg, labels, samples, &mut out);
            }
        }
        out
    }

    /// Exemplars of `tenant`'s series matching any of `matcher_sets`, with
    /// timestamps in `[min_t, max_t]`, per series in time order.
    pub fn exemplars(
        &self,
        tenant: &str,
        matcher_sets: &[Vec<Matcher>],
        min_t: i64,
        max_t: i64,
    ) -> Vec<(Labels, Vec<StoredExemplar>)> {
        let Some(th) = self.tenants.get(tenant) else { return Vec::new() };
        let mut refs: Vec<u32> = matcher_sets.iter().flat_map(|ms| th.select_refs(ms)).collect();
        refs.sort_unstable();
        refs.dedup();
        let mut by_ref: BTreeMap<u32, Vec<StoredExemplar>> = BTreeMap::new();
        for (r, e) in &th.exemplars {
            if e.timestamp >= min_t && e.timestamp <= max_t && refs.binary_search(r).is_ok() {
                by_ref.entry(*r).or_default().push(e.clone());
            }
        }
        let mut out: Vec<(Labels, Vec<StoredExemplar>)> = by_ref
            .into_iter()
            .map(|(r, mut es)| {
                es.sort_by_key(|e| e.timestamp);
                (Labels::clone(&th.series[r as usize].labels), es)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Series of `tenant` matching all matchers, with samples in `[min_t, max_t]`
    /// (series without samples there are left out unless `with_empty`).
    pub fn select(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
        skip_samples: bool,
    ) -> SeriesSamples {
        let Some(th) = self.tenants.get(tenant) else { return Vec::new() };
        let mut out: SeriesSamples = th
            .select_refs(matchers)
            .into_iter()
            .filter_map(|r| {
                let s = &th.series[r as usize];
                if skip_samples {
                    return s.has_samples_in(min_t, max_t).then(|| (Labels::clone(&s.labels), Vec::new()));
                }
                let samples = s.samples(min_t, max_t);
                (!samples.is_empty()).then(|| (Labels::clone(&s.labels), samples))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Like [`Head::select`], but each series' data as XOR chunks.
    pub fn select_chunks(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Vec<(Labels, ChunkList)> {
        let Some(th) = self.tenants.get(tenant) else { return Vec::new() };
        let mut out: Vec<(Labels, ChunkList)> = th
            .select_refs(matchers)
            .into_iter()
            .filter_map(|r| {
                let s = &th.series[r as usize];
                let c = s.chunks(min_t, max_t);
                (!c.is_empty()).then(|| (Labels::clone(&s.labels), c))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn label_names(&self, tenant: &str, matchers: &[Matcher]) -> Vec<String> {
        let Some(th) = self.tenants.get(tenant) else { return Vec::new() };
        if matchers.is_empty() {
            let mut v: Vec<String> = th.postings.keys().cloned().collect();
            v.sort();
            return v;
        }
        let names: BTreeSet<String> = th
            .select_refs(matchers)
            .into_iter()
            .flat_map(|r| th.series[r as usize].labels.0.iter().map(|(n, _)| n.clone()))
            .collect();
        names.into_iter().collect()
    }

    pub fn label_values(&self, tenant: &str, name: &str, matchers: &[Matcher]) -> Vec<String> {
        let Some(th) = self.tenants.get(tenant) else { return Vec::new() };
        if matchers.is_empty() {
            let mut v: Vec<String> = th.postings.get(name).map(|m| m.keys().cloned().collect()).unwrap_or_default();
            v.sort();
            return v;
        }
        let values: BTreeSet<String> = th
            .select_refs(matchers)
            .into_iter()
            .filter_map(|r| th.series[r as usize].labels.get(name).map(str::to_string))
            .collect();
        values.into_iter().collect()
    }

    /// (series, samples) over all tenants.
    pub fn stats(&self) -> (usize, usize) {
        let series = self.tenants.values().map(|t| t.series.len()).sum();
        let samples = self.tenants.values().flat_map(|t| t.series.iter()).map(MemSeries::num_samples).sum();
        (series, samples)
    }

    /// For each of `series` (label sets sorted by name, as remote write
    /// sends them), whether writing it keeps `tenant` within `max_series`
    /// series in the head and `max_per_metric` series per metric name:
    /// series already in the head always pass; new ones are admitted in
    /// order until a limit is reached (the message names the limit).
    pub fn admit_new_series<'a>(
        &self,
        tenant: &str,
        series: impl Iterator<Item = &'a [strata_proto::prometheus::Label]>,
        max_series: Option<u64>,
        max_per_metric: Option<u64>,
    ) -> Vec<Result<(), String>> {
        let th = self.tenants.get(tenant);
        let mut total = th.map_or(0, |t| t.series.len()) as u64;
        let mut per_metric: HashMap<String, u64> = HashMap::new();
        series
            .map(|labels| {
                if th.is_some_and(|t| t.lookup(labels).is_some()) {
                    return Ok(());
                }
                if let Some(max) = max_series
                    && total >= max
                {
                    return Err(format!(
                        "tenant {tenant:?} is at its limit of {max} series (max_series, --limits.overrides-file); \
                         series {} not created",
                        strata_model::series_text(labels)
                    ));
                }
                if let Some(max) = max_per_metric {
                    let name =
                        labels.iter().find(|l| l.name == strata_model::METRIC_NAME).map_or("", |l| l.value.as_str());
                    let n = per_metric.entry(name.to_string()).or_insert_with(|| {
                        th.and_then(|t| t.postings.get(strata_model::METRIC_NAME))
                            .and_then(|p| p.get(name))
                            .map_or(0, |r| r.len() as u64)
                    });
                    if *n >= max {
                        return Err(format!(
                            "tenant {tenant:?} is at its limit of {max} series of metric {name:?} \
                             (max_series_per_metric, --limits.overrides-file); series {} not created",
                            strata_model::series_text(labels)
                        ));
                    }
                    *n += 1;
                }
                total += 1;
                Ok(())
            })
            .collect()
    }

    /// (tenant, series, samples) of every tenant.
    pub fn tenant_stats(&self) -> Vec<(String, usize, usize)> {
        self.tenants
            .iter()
            .map(|(k, t)| (k.clone(), t.series.len(), t.series.iter().map(MemSeries::num_samples).sum()))
            .collect()
    }

    /// Overall (min, max) sample time, if any data.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let min = self.tenants.values().map(|t| t.min_t).min()?;
        let max = self.tenants.values().map(|t| t.max_t).max()?;
        (min <= max).then_some((min, max))
    }

    /// Metric metadata of `tenant`, by family name (one family with
    /// `metric`), at most `limit` families (0: all).
    pub fn metadata(&self, tenant: &str, metric: Option<&str>, limit: usize) -> Vec<(String, FamilyMetadata)> {
        let Some(th) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let limit = if limit == 0 { usize::MAX } else { limit };
        match metric {
            Some(m) => th.metadata.get(m).map(|v| vec![(m.to_string(), v.clone())]).unwrap_or_default(),
            None => th.metadata.iter().take(limit).map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    pub fn tenants(&self) -> Vec<String> {
        self.tenants.keys().cloned().collect()
    }

    /// Serializes the whole head (deterministic for identical heads).
    pub fn snapshot(&self) -> Result<Vec<u8>, bincode::Error> {
        self.freeze().encode()
    }

    /// The head as of now, for a snapshot taken without holding the head:
    /// closed chunks are shared (immutable), only open chunks, labels,
    /// metadata and exemplars are copied. [`HeadView::encode`] then
    /// serializes it while the head goes on taking writes.
    pub fn freeze(&self) -> HeadView {
        HeadView(HeadSnapshot {
            tenants: self
                .tenants
                .iter()
                .map(|(k, t)| TenantSnapshot {
                    tenant: k.clone(),
                    min_t: t.min_t,
                    max_t: t.max_t,
                    cut_before: t.cut_before,
                    series: t.series.clone(),
                })
                .collect(),
            metadata: self
                .tenants
                .values()
                .map(|t| t.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .collect(),
            exemplars: self.tenants.values().map(|t| t.exemplars.iter().cloned().collect()).collect(),
        })
    }

    /// Replaces the head with a snapshot's content.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), bincode::Error> {
        let snap: HeadSnapshot = bincode::deserialize(bytes).or_else(|e| {
            let v1: HeadSnapshotV1 = bincode::deserialize(bytes).map_err(|_| e)?;
            Ok::<_, bincode::Error>(HeadSnapshot { tenants: v1.tenants, metadata: Vec::new(), exemplars: Vec::new() })
        })?;
        self.tenants.clear();
        let mut metadata = snap.metadata.into_iter();
        let mut exemplars = snap.exemplars.into_iter();
        for t in snap.tenants {
            let mut th = TenantHead::new();
            for s in t.series {
                th.insert_series(s);
            }
            th.min_t = t.min_t;
            th.max_t = t.max_t;
            th.cut_before = t.cut_before;
            th.metadata = metadata.next().unwrap_or_default().into_iter().collect();
            let n = th.series.len() as u32;
            th.exemplars = exemplars.next().unwrap_or_default().into_iter().filter(|(r, _)| *r < n).collect();
            th.rebuild_exemplar_last();
            self.tenants.insert(t.tenant, th);
        }
        Ok(())
    }

    /// Time ranges of every tenant, for deciding what to cut.
    pub fn tenant_ranges(&self) -> Vec<TenantRange> {
        self.tenants
            .iter()
            .map(|(k, t)| TenantRange {
                tenant: k.clone(),
                series: t.series.len(),
                min_t: t.min_t,
                max_t: t.max_t,
                cut_before: t.cut_before,
            })
            .collect()
    }

    /// Removes `tenant`'s samples with `t < before` from the head and returns
    /// them (series in label order); later samples older than `before` are
    /// rejected. Series left without samples and not written since are
    /// dropped from the index. Deterministic: every replica cuts the same.
    ///
    /// Runs inside a Raft apply (writes wait for it), so it touches only
    /// what it removes: chunks wholly before `before` are decoded and
    /// moved out, chunks wholly after it stay as they are, only a chunk
    /// straddling `before` is re-encoded; the index is rebuilt only when
    /// series are dropped.
    pub fn cut(&mut self, tenant: &str, before: i64) -> SeriesSamples {
        self.cut_part(tenant, before, 0, 1)
    }

    /// [`Head::cut`] of the series in `part` of `parts` ([`cut_part_of`]):
    /// a large tenant is cut in several Raft entries, so no single apply
    /// (which writes wait for) has to move all its series. Samples older
    /// than `before` are refused from the first part on, for every series;
    /// the series of parts not cut yet keep theirs in the head until their
    /// part comes. Cutting a part again finds nothing (a new leader may
    /// repeat a cut its predecessor did not finish).
    pub fn cut_part(&mut self, tenant: &str, before: i64, part: u32, parts: u32) -> SeriesSamples {
        let Some(th) = self.tenants.get_mut(tenant) else { return Vec::new() };
        let mut out: SeriesSamples = Vec::new();
        let mut min_t = i64::MAX;
        let mut dropped = false;
        // Old series ref → its ref after the cut (None: dropped).
        let mut remap: Vec<Option<u32>> = Vec::with_capacity(th.series.len());
        let mut next_ref = 0u32;
        for s in th.series.iter_mut() {
            if parts <= 1 || cut_part_of(&s.labels, parts) == part {
                let removed = s.cut_before(before);
                if !removed.is_empty() {
                    out.push((Labels::clone(&s.labels), removed));
                }
            }
            match s.min_time() {
                Some(t) => min_t = min_t.min(t),
                None if s.last_t < before => {
                    dropped = true;
                    remap.push(None);
                    continue;
                }
                None => {}
            }
            remap.push(Some(next_ref));
            next_ref += 1;
        }
        th.min_t = min_t;
        th.cut_before = th.cut_before.max(before);
        if dropped {
            let mut fresh = TenantHead::new();
            for (s, r) in std::mem::take(&mut th.series).into_iter().zip(&remap) {
                if r.is_some() {
                    fresh.insert_series(s);
                }
            }
            fresh.max_t = th.max_t;
            fresh.min_t = th.min_t;
            fresh.cut_before = th.cut_before;
            fresh.metadata = std::mem::take(&mut th.metadata);
            fresh.exemplars = std::mem::take(&mut th.exemplars)
                .into_iter()
                .filter_map(|(r, e)| remap.get(r as usize).copied().flatten().map(|nr| (nr, e)))
                .collect();
            fresh.rebuild_exemplar_last();
            *th = fresh;
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The part of a cut in `parts` that the series with `labels` belongs to:
/// a stable hash (FNV-1a over names and values), the same on every replica
/// and in every version.
pub fn cut_part_of(labels: &Labels, parts: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (n, v) in labels.iter() {
        for b in n.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h % parts.max(1) as u64) as u32
}

impl MemSeries {
    /// Oldest sample held, if any.
    fn min_time(&self) -> Option<i64> {
        let chunked = match self.closed.first() {
            Some(c) => Some(c.min_t),
            None => (self.open.num_samples() > 0).then(|| self.open.min_time()),
        };
        match (chunked, self.ooo.keys().next()) {
            (Some(a), Some(&b)) => Some(a.min(b)),
            (a, b) => a.or(b.copied()),
        }
    }

    /// Removes and returns the samples with `t < before`, in time order.
    fn cut_before(&mut self, before: i64) -> Vec<(i64, f64)> {
        let mut removed = Vec::new();
        let mut kept_closed = Vec::with_capacity(self.closed.len());
        let closed = Arc::try_unwrap(std::mem::take(&mut self.closed)).unwrap_or_else(|shared| (*shared).clone());
        for c in closed {
            if c.min_t >= before {
                kept_closed.push(c);
                continue;
            }
            let samples = chunk::decode(&c.data).unwrap_or_default();
            if c.max_t < before {
                removed.extend(samples);
                continue;
            }
            // Straddles `before`: split, re-encode what stays.
            let split = samples.partition_point(|(t, _)| *t < before);
            removed.extend_from_slice(&samples[..split]);
            let mut rest = XorChunk::new();
            for &(t, v) in &samples[split..] {
                rest.append(t, v);
            }
            kept_closed.push(ClosedChunk { min_t: rest.min_time(), max_t: rest.max_time(), data: rest.bytes().into() });
        }
        self.closed = Arc::new(kept_closed);
        if self.open.num_samples() > 0 && self.open.min_time() < before {
            let samples = self.open.samples();
            let split = samples.partition_point(|(t, _)| *t < before);
            removed.extend_from_slice(&samples[..split]);
            let mut rest = XorChunk::new();
            for &(t, v) in &samples[split..] {
                rest.append(t, v);
            }
            self.open = rest;
        }
        if self.ooo.first_key_value().is_some_and(|(t, _)| *t < before) {
            let kept = self.ooo.split_off(&before);
            removed.extend(std::mem::replace(&mut self.ooo, kept).into_iter().map(|(t, v)| (t, f64::from_bits(v))));
            removed.sort_by_key(|s| s.0);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_model::MatchOp;
    use strata_proto::prometheus::{Label, Sample, TimeSeries};

    fn ts(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        let mut labels: Vec<Label> =
            pairs.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        TimeSeries {
            labels,
            samples: samples.iter().map(|(t, v)| Sample { timestamp: *t, value: *v }).collect(),
            ..Default::default()
        }
    }

    fn req(series: Vec<TimeSeries>) -> WriteRequest {
        WriteRequest { timeseries: series, metadata: vec![] }
    }

    fn m(n: &str, op: MatchOp, v: &str) -> Matcher {
        Matcher::new(n, op, v).unwrap()
    }

    /// The borrowed path (`append_view`) and prost's (`append`) give the
    /// same outcomes, messages and head state for the same requests:
    /// in-order, out-of-order, duplicates, out of bounds, the series limit,
    /// chunk cuts, several tenants.
    #[test]
    fn append_view_equals_append() {
        use prost::Message;
        let cfg = HeadConfig {
            chunk_samples: 4,
            ooo_window_ms: 60_000,
            appendable_window_ms: 120_000,
            limits: Limits { max_series: 3, ..Default::default() },
            ..Default::default()
        };
        let (mut a, mut b) = (Head::new(cfg.clone()), Head::new(cfg));
        let run: Vec<(i64, f64)> = (0..10).map(|k| (1_000_000 + k * 15_000, k as f64)).collect();
        let requests = [
            ("t1", req(vec![ts(&[("__name__", "a"), ("job", "x")], &run), ts(&[("__name__", "b")], &run[..3])])),
            ("t1", req(vec![ts(&[("__name__", "a"), ("job", "x")], &[(1_030_000, 2.0), (1_031_000, 7.0)])])),
            ("t1", req(vec![ts(&[("__name__", "a"), ("job", "x")], &[(1_030_000, 9.0), (1_000, 1.0)])])),
            (
                "t1",
                req(vec![ts(&[("__name__", "c")], &[(1_200_000, 1.0)]), ts(&[("__name__", "d")], &[(1_200_000, 1.0)])]),
            ),
            ("t1", req(vec![ts(&[("__name__", "b")], &[]), ts(&[("__name__", "b")], &[(1_135_000, f64::NAN)])])),
            ("t2", req(vec![ts(&[("__name__", "a"), ("job", "x")], &run[5..])])),
        ];
        for (tenant, r) in &requests {
            let bytes = r.encode_to_vec();
            let view = WriteView::parse(&bytes).expect("samples-only request");
            let (oa, ob) = (a.append(tenant, r), b.append_view(tenant, &view));
            assert_eq!(
                (oa.samples_written, oa.samples_rejected, oa.limited, &oa.errors),
                (ob.samples_written, ob.samples_rejected, ob.limited, &ob.errors)
            );
        }
        assert!(a.tenants["t1"].series.len() == 3, "the limit was hit");
        assert_eq!(a.snapshot().unwrap(), b.snapshot().unwrap());
    }

    #[test]
    fn has_samples_in_agrees_with_samples() {
        let mut h = Head::new(HeadConfig { chunk_samples: 4, ..HeadConfig::default() });
        let in_order: Vec<(i64, f64)> = (0..10).map(|k| (k * 1000 + 500, k as f64)).collect();
        h.append("t", &req(vec![ts(&[("__name__", "a")], &in_order)]));
        h.append("t", &req(vec![ts(&[("__name__", "a")], &[(1000, 10.0)])]));
        let th = &h.tenants["t"];
        let s = &th.series[0];
        for lo in (-1000..12_000).step_by(250) {
            for hi in (lo..12_000).step_by(250) {
                assert_eq!(s.has_samples_in(lo, hi), !s.samples(lo, hi).is_empty(), "[{lo}, {hi}]");
            }
        }
    }

    #[test]
    fn chunks_hold_the_same_samples_as_select() {
        let mut h = Head::new(HeadConfig { chunk_samples: 4, ..HeadConfig::default() });
        let in_order: Vec<(i64, f64)> = (0..10).map(|k| (k * 1000 + 500, k as f64)).collect();
        h.append("t", &req(vec![ts(&[("__name__", "a")], &in_order)]));
        // Out-of-order samples inside the window.
        h.append("t", &req(vec![ts(&[("__name__", "a")], &[(1000, 10.0), (2000, 20.0)])]));
        let all = h.select("t", &[m("__name__", MatchOp::Equal, "a")], 1000, 7000, false);
        let chunks = h.select_chunks("t", &[m("__name__", MatchOp::Equal, "a")], 1000, 7000);
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].1.len() >= 3, "closed, open and out-of-order chunks");
        let mut merged: Vec<(i64, f64)> = chunks[0]
            .1
            .iter()
            .flat_map(|(_, _, b)| chunk::decode(b).unwrap())
            .filter(|(t, _)| (1000..=7000).contains(t))
            .collect();
        merged.sort_by_key(|s| s.0);
        assert_eq!(merged, all[0].1);
    }

    #[test]
    fn cut_moves_old_samples_out_and_rejects_late_ones() {
        let mut h = Head::new(HeadConfig::default());
        h.append(
            "t",
            &req(vec![
                ts(&[("__name__", "a")], &[(1000, 1.0), (2000, 2.0), (3000, 3.0)]),
                ts(&[("__name__", "b")], &[(1500, 1.0)]),
            ]),
        );
        let before = h.snapshot().unwrap();
        let cut = h.cut("t", 2500);
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[0].1, vec![(1000, 1.0), (2000, 2.0)]);
        assert_eq!(cut[1].1, vec![(1500, 1.0)]);
        // Only the newer sample stays; series "b" (nothing left, not written since) is gone.
        let left = h.select("t", &[m("__name__", MatchOp::Regex, ".+")], i64::MIN, i64::MAX, false);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1, vec![(3000, 3.0)]);
        assert_eq!(h.tenant_ranges()[0].min_t, 3000);
        let out = h.append("t", &req(vec![ts(&[("__name__", "a")], &[(2400, 9.0), (4000, 4.0)])]));
        assert_eq!((out.samples_written, out.samples_rejected), (1, 1));
        assert!(out.errors[0].contains("already in a block"), "{:?}", out.errors);
        // Cutting is deterministic: the same head cut twice gives the same bytes.
        let mut h2 = Head::new(HeadConfig::default());
        h2.restore(&before).unwrap();
        h2.cut("t", 2500);
        h2.append("t", &req(vec![ts(&[("__name__", "a")], &[(2400, 9.0), (4000, 4.0)])]));
        assert_eq!(h.snapshot().unwrap(), h2.snapshot().unwrap());
    }

    /// A cut inside an apply touches only what it removes: closed chunks
    /// after `before` stay the same allocation, the chunk straddling it is
    /// split, out-of-order samples on both sides go where they belong, and
    /// every sample is either cut or kept, once.
    #[test]
    fn a_cut_in_parts_moves_each_series_once_and_equals_one_cut() {
        let build = || {
            let mut h = Head::new(HeadConfig { chunk_samples: 8, ..Default::default() });
            for i in 0..200 {
                let samples: Vec<(i64, f64)> = (0..30).map(|k| (k * 1000, (i * 100 + k) as f64)).collect();
                h.append("t", &req(vec![ts(&[("__name__", "a"), ("i", &i.to_string())], &samples)]));
            }
            h
        };
        let mut whole = build();
        let want = whole.cut("t", 17_500);
        let mut parted = build();
        let mut got: SeriesSamples = Vec::new();
        for part in 0..7 {
            let cut = parted.cut_part("t", 17_500, part, 7);
            assert!(!cut.is_empty() && cut.len() < 200, "part {part}: {} series", cut.len());
            assert!(cut.iter().all(|(l, _)| cut_part_of(l, 7) == part));
            assert!(cut.windows(2).all(|w| w[0].0 < w[1].0), "label order within a part");
            if part == 0 {
                // From the first part on, older samples are refused for every series.
                let out = parted.append("t", &req(vec![ts(&[("__name__", "a"), ("i", "199")], &[(100, 1.0)])]));
                assert_eq!(out.samples_written, 0);
            }
            got.extend(cut);
            // Repeating a part (a new leader finishing a cut) finds nothing.
            assert!(parted.cut_part("t", 17_500, part, 7).is_empty());
        }
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want);
        assert_eq!(parted.snapshot().unwrap(), whole.snapshot().unwrap());
        assert_eq!(parted.tenant_ranges()[0].min_t, 18_000);
    }

    /// A frozen view shares each series' labels and closed-chunk list with
    /// the head (a snapshot copies only open chunks); appends after the
    /// freeze (a chunk closing) and a cut change the head, not the view.
    #[test]
    fn a_frozen_view_shares_labels_and_closed_chunks_and_stays_as_of_its_capture() {
        let mut h = Head::new(HeadConfig { chunk_samples: 4, ooo_window_ms: 60_000, ..Default::default() });
        for k in 0..10 {
            h.append("t", &req(vec![ts(&[("__name__", "a"), ("k", "v")], &[(k * 1000, k as f64)])]));
        }
        let before = h.snapshot().unwrap();
        let view = h.freeze();
        let (frozen, live) = (&view.0.tenants[0].series[0], &h.tenants["t"].series[0]);
        assert!(Arc::ptr_eq(&frozen.labels, &live.labels), "labels were copied");
        assert!(Arc::ptr_eq(&frozen.closed, &live.closed), "the closed-chunk list was copied");
        for k in 10..20 {
            h.append("t", &req(vec![ts(&[("__name__", "a"), ("k", "v")], &[(k * 1000, k as f64)])]));
        }
        h.cut("t", 3500);
        assert_eq!(h.tenants["t"].series[0].closed.len(), 3, "[4,7] [8,11] [12,15]");
        assert_eq!(view.0.tenants[0].series[0].closed.len(), 2, "[0,3] [4,7] as captured");
        assert_eq!(view.encode().unwrap(), before);
        let mut restored = Head::new(HeadConfig::default());
        restored.restore(&view.encode().unwrap()).unwrap();
        let got = restored.select("t", &[m("__name__", MatchOp::Equal, "a")], i64::MIN, i64::MAX, false);
        assert_eq!(got[0].1, (0..10).map(|k| (k * 1000, k as f64)).collect::<Vec<_>>());
    }

    #[test]
    fn cut_keeps_later_chunks_as_they_are() {
        let mut h = Head::new(HeadConfig { chunk_samples: 4, ooo_window_ms: 60_000, ..Default::default() });
        // 0..20 s in order (chunks [0,3] [4,7] [8,11] [12,15] closed, [16,19] open),
        // then out-of-order samples at 2.5 s and 12.5 s.
        let in_order: Vec<(i64, f64)> = (0..20).map(|k| (k * 1000, k as f64)).collect();
        for &(t, v) in &in_order {
            h.append("t", &req(vec![ts(&[("__name__", "a")], &[(t, v)])]));
        }
        let out = h.append("t", &req(vec![ts(&[("__name__", "a")], &[(2500, 0.5), (12_500, 0.25)])]));
        assert_eq!(out.samples_written, 2, "{:?}", out.errors);
        let later: Vec<Arc<[u8]>> = h.tenants["t"].series[0].closed[2..].iter().map(|c| c.data.clone()).collect();
        let cut = h.cut("t", 9500);
        let want_cut: Vec<(i64, f64)> = {
            let mut v: Vec<(i64, f64)> = in_order[..10].to_vec();
            v.push((2500, 0.5));
            v.sort_by_key(|x| x.0);
            v
        };
        assert_eq!(cut, vec![(Labels::from_pairs(vec![("__name__".into(), "a".into())]), want_cut)]);
        let s = &h.tenants["t"].series[0];
        // [8,11] straddled 9.5 s: split, [10,11] re-encoded; [12,15] kept as is.
        assert_eq!((s.closed[0].min_t, s.closed[0].max_t), (10_000, 11_000));
        assert!(Arc::ptr_eq(&s.closed[1].data, &later[1]), "a later chunk was copied");
        let left = h.select("t", &[m("__name__", MatchOp::Equal, "a")], i64::MIN, i64::MAX, false);
        let mut want_left: Vec<(i64, f64)> = in_order[10..].to_vec();
        want_left.push((12_500, 0.25));
        want_left.sort_by_key(|x| x.0);
        assert_eq!(left[0].1, want_left);
        assert_eq!(h.tenant_ranges()[0].min_t, 10_000);
        // Appends go on after the cut, and a restored copy equals it.
        h.append("t", &req(vec![ts(&[("__name__", "a")], &[(20_000, 20.0)])]));
        let mut r = Head::new(HeadConfig { chunk_samples: 4, ooo_window_ms: 60_000, ..Default::default() });
        r.restore(&h.snapshot().unwrap()).unwrap();
        assert_eq!(r.snapshot().unwrap(), h.snapshot().unwrap());
        // Cutting everything empties the open chunk too.
        let rest = h.cut("t", 100_000);
        assert_eq!(rest[0].1.len(), want_left.len() + 1);
        assert!(h.select("t", &[m("__name__", MatchOp::Equal, "a")], i64::MIN, i64::MAX, false).is_empty());
    }

    #[test]
    fn appends_select_and_all_matcher_types() {
        let mut h = Head::new(HeadConfig::default());
        let out = h.append(
            "t",
            &req(vec![
                ts(&[("__name__", "up"), ("job", "api"), ("env", "prod")], &[(1000, 1.0), (2000, 1.0)]),
                ts(&[("__name__", "up"), ("job", "web"), ("env", "dev")], &[(1000, 0.0)]),
                ts(&[("__name__", "up"), ("job", "db")], &[(1000, 1.0)]),
            ]),
        );
        assert_eq!(out.samples_written, 4);
        let names = |sel: SeriesSamples| {
            let mut v = sel.iter().map(|(l, _)| l.get("job").unwrap().to_string()).collect::<Vec<_>>();
            v.sort();
            v
        };
        assert_eq!(names(h.select("t", &[m("job", MatchOp::Equal, "api")], 0, 5000, false)), vec!["api"]);
        assert_eq!(
            names(h.select(
                "t",
                &[m("__name__", MatchOp::Equal, "up"), m("job", MatchOp::NotEqual, "api")],
                0,
                5000,
                false
            )),
            vec!["db", "web"]
        );
        assert_eq!(names(h.select("t", &[m("job", MatchOp::Regex, "a.*|w.*")], 0, 5000, false)), vec!["api", "web"]);
        assert_eq!(
            names(h.select(
                "t",
                &[m("__name__", MatchOp::Equal, "up"), m("job", MatchOp::NotRegex, "a.*")],
                0,
                5000,
                false
            )),
            vec!["db", "web"]
        );
        // Missing label matches "" (Prometheus semantics).
        assert_eq!(
            names(h.select("t", &[m("__name__", MatchOp::Equal, "up"), m("env", MatchOp::Equal, "")], 0, 5000, false)),
            vec!["db"]
        );
        assert_eq!(
            h.select("t", &[m("job", MatchOp::Equal, "api")], 0, 5000, false)[0].1,
            vec![(1000, 1.0), (2000, 1.0)]
        );
        assert_eq!(h.select("t", &[m("job", MatchOp::Equal, "api")], 1500, 5000, false)[0].1, vec![(2000, 1.0)]);
        assert!(h.select("other", &[m("job", MatchOp::Equal, "api")], 0, 5000, false).is_empty());
        assert_eq!(h.label_values("t", "job", &[]), vec!["api", "db", "web"]);
        assert_eq!(h.label_names("t", &[m("job", MatchOp::Equal, "db")]), vec!["__name__", "job"]);
    }

    #[test]
    fn out_of_order_window_and_duplicates_follow_prometheus() {
        let mut h =
            Head::new(HeadConfig { ooo_window_ms: 600_000, appendable_window_ms: 3_600_000, ..Default::default() });
        let s = |t: i64, v: f64| req(vec![ts(&[("__name__", "x")], &[(t, v)])]);
        let hour = 3_600_000;
        // A 2 h backfill in time order is accepted: the window follows the newest sample.
        for i in 0..120 {
            assert_eq!(h.append("t", &s(i * 60_000, i as f64)).samples_written, 1);
        }
        assert_eq!(h.append("t", &s(2 * hour, 1.0)).samples_written, 1);
        // 5 min behind the newest: inside the window, stored out of order.
        assert_eq!(h.append("t", &s(2 * hour - 300_000 + 1, 7.0)).samples_written, 1);
        // 11 min behind and older than the series' last sample: out of order.
        let o = h.append("t", &s(2 * hour - 660_000, 1.0));
        assert_eq!(o.samples_rejected, 1);
        assert!(o.errors[0].contains("out of order"), "{}", o.errors[0]);
        // Another series, in order but 30 min behind the newest sample: accepted
        // (inside the appendable window); 61 min behind: out of bounds.
        let y = |t: i64| req(vec![ts(&[("__name__", "y")], &[(t, 1.0)])]);
        assert_eq!(h.append("t", &y(2 * hour - 1_800_000)).samples_written, 1);
        let o = h.append("u", &y(0));
        assert_eq!(o.samples_written, 1, "other tenants have their own window");
        let o = h.append("t", &req(vec![ts(&[("__name__", "z")], &[(2 * hour - 3_660_000, 1.0)])]));
        assert!(o.errors[0].contains("out of bounds"), "{}", o.errors[0]);
        // Same timestamp, same value: accepted no-op; different value: duplicate.
        assert_eq!(h.append("t", &s(2 * hour, 1.0)).samples_written, 1);
        let d = h.append("t", &s(2 * hour, 2.0));
        assert!(d.errors[0].contains("duplicate sample for timestamp"), "{:?}", d.errors);
        let d = h.append("t", &s(119 * 60_000, 5.0));
        assert!(d.errors[0].contains("duplicate sample"), "{:?}", d.errors);
        let all = h.select("t", &[m("__name__", MatchOp::Equal, "x")], 0, 3 * hour, false);
        assert_eq!(all[0].1.len(), 122);
        assert!(all[0].1.windows(2).all(|w| w[0].0 < w[1].0), "merged in time order");
        assert_eq!(h.stats(), (4, 124), "series are created even when their first sample is refused, as in Prometheus");
    }

    #[test]
    fn stale_nan_round_trips_and_limits_apply() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let mut h =
            Head::new(HeadConfig { limits: Limits { max_series: 1, ..Default::default() }, ..Default::default() });
        let o = h.append(
            "t",
            &req(vec![ts(&[("__name__", "a")], &[(1, 1.0), (2, stale)]), ts(&[("__name__", "b")], &[(1, 1.0)])]),
        );
        assert_eq!(o.samples_written, 2);
        assert_eq!(o.samples_rejected, 1);
        assert!(o.limited && o.errors[0].contains("max_series"));
        let got = h.select("t", &[m("__name__", MatchOp::Equal, "a")], 0, 10, false);
        assert_eq!(got[0].1[1].1.to_bits(), 0x7ff0_0000_0000_0002);
    }

    #[test]
    fn keeps_latest_metadata_per_family_across_cuts_and_snapshots() {
        use strata_proto::prometheus::MetricMetadata;
        let md = |name: &str, t: i32, help: &str| MetricMetadata {
            r#type: t,
            metric_family_name: name.into(),
            help: help.into(),
            unit: "seconds".into(),
        };
        let mut h = Head::new(HeadConfig::default());
        // Metadata-only requests (Prometheus sends them on their own) are recorded too.
        h.append("a", &WriteRequest { timeseries: vec![], metadata: vec![md("up", 2, "old"), md("", 1, "x")] });
        h.append(
            "a",
            &WriteRequest {
                timeseries: vec![ts(&[("__name__", "up")], &[(1000, 1.0)])],
                metadata: vec![md("up", 2, "Target up."), md("http_requests_total", 1, "Requests.")],
            },
        );
        let want = vec![
            (
                "http_requests_total".to_string(),
                FamilyMetadata { metric_type: 1, help: "Requests.".into(), unit: "seconds".into() },
            ),
            ("up".to_string(), FamilyMetadata { metric_type: 2, help: "Target up.".into(), unit: "seconds".into() }),
        ];
        assert_eq!(h.metadata("a", None, 0), want);
        assert_eq!(h.metadata("a", Some("up"), 0), want[1..].to_vec());
        assert_eq!(h.metadata("a", None, 1), want[..1].to_vec());
        assert!(h.metadata("b", None, 0).is_empty());
        h.cut("a", 2000);
        assert_eq!(h.metadata("a", None, 0), want, "a block cut keeps the metadata");
        let bytes = h.snapshot().unwrap();
        let mut r = Head::new(HeadConfig::default());
        r.restore(&bytes).unwrap();
        assert_eq!(r.metadata("a", None, 0), want);
        // A snapshot from before metadata was kept still restores.
        let v1 = bincode::serialize(&HeadSnapshotV1Write { tenants: vec![] }).unwrap();
        r.restore(&v1).unwrap();
        assert!(r.metadata("a", None, 0).is_empty());
    }

    #[test]
    fn keeps_exemplars_like_prometheus_circular_buffer() {
        use strata_proto::prometheus::Exemplar;
        let ex = |t: i64, v: f64, trace: &str| Exemplar {
            labels: vec![Label { name: "trace_id".into(), value: trace.into() }],
            value: v,
            timestamp: t,
        };
        let mut h = Head::new(HeadConfig { max_exemplars: 3, ..Default::default() });
        let a = [("__name__", "lat_bucket"), ("le", "1")];
        let mut s = ts(&a, &[(1000, 1.0)]);
        s.exemplars = vec![ex(1000, 0.5, "t1"), ex(1000, 0.5, "t1"), ex(900, 0.1, "old")];
        let o = h.append("x", &req(vec![s]));
        assert_eq!(o.exemplars_written, 1, "duplicates and out-of-order exemplars are skipped");
        // Exemplars without samples attach to an existing series only.
        let mut only = ts(&a, &[]);
        only.exemplars = vec![ex(2000, 0.7, "t2"), ex(3000, 0.8, &"x".repeat(130))];
        let mut unknown = ts(&[("__name__", "nope")], &[]);
        unknown.exemplars = vec![ex(2000, 1.0, "t9")];
        assert_eq!(h.append("x", &req(vec![only, unknown])).exemplars_written, 1, "too long or no such series");
        let all = |h: &Head| h.exemplars("x", &[vec![m("__name__", MatchOp::Equal, "lat_bucket")]], 0, i64::MAX);
        let got = all(&h);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.iter().map(|e| e.timestamp).collect::<Vec<_>>(), vec![1000, 2000]);
        assert_eq!(got[0].1[0].labels, vec![("trace_id".to_string(), "t1".to_string())]);
        // The buffer keeps the newest `max_exemplars`.
        let mut more = ts(&a, &[(5000, 2.0)]);
        more.exemplars = vec![ex(4000, 1.0, "t3"), ex(5000, 1.0, "t4")];
        h.append("x", &req(vec![more]));
        let times = |h: &Head| all(h)[0].1.iter().map(|e| e.timestamp).collect::<Vec<_>>();
        assert_eq!(times(&h), vec![2000, 4000, 5000]);
        assert_eq!(h.exemplars("x", &[vec![m("le", MatchOp::Equal, "1")]], 4500, 6000)[0].1.len(), 1);
        // Snapshots and block cuts keep them with their series.
        let mut r = Head::new(HeadConfig { max_exemplars: 3, ..Default::default() });
        r.restore(&h.snapshot().unwrap()).unwrap();
        assert_eq!(times(&r), vec![2000, 4000, 5000]);
        h.cut("x", 3000);
        assert_eq!(times(&h), vec![2000, 4000, 5000]);
        let mut late = ts(&a, &[(6000, 3.0)]);
        late.exemplars = vec![ex(5000, 1.0, "dup")];
        assert_eq!(h.append("x", &req(vec![late])).exemplars_written, 0, "still a duplicate after the cut");
    }

    #[derive(Serialize)]
    struct HeadSnapshotV1Write {
        tenants: Vec<TenantSnapshot>,
    }

    #[test]
    fn snapshot_restores_identical_head() {
        let mut h = Head::new(HeadConfig { chunk_samples: 4, ..Default::default() });
        for i in 0..10 {
            h.append("a", &req(vec![ts(&[("__name__", "x"), ("i", "1")], &[(i * 1000, i as f64)])]));
            h.append("b", &req(vec![ts(&[("__name__", "y")], &[(i * 1000, -(i as f64))])]));
        }
        let bytes = h.snapshot().unwrap();
        let mut r = Head::new(HeadConfig::default());
        r.restore(&bytes).unwrap();
        assert_eq!(r.snapshot().unwrap(), bytes);
        assert_eq!(
            r.select("a", &[m("i", MatchOp::Equal, "1")], 0, 100_000, false),
            h.select("a", &[m("i", MatchOp::Equal, "1")], 0, 100_000, false)
        );
        assert_eq!(r.time_range(), Some((0, 9000)));
        // Appends continue after restore.
        assert_eq!(
            r.append("a", &req(vec![ts(&[("__name__", "x"), ("i", "1")], &[(10_000, 1.0)])])).samples_written,
            1
        );
    }
}
