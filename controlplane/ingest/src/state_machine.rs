//! The Raft state machine: the head. Every replica applies the same log
//! entries in the same order and so holds the same head. Snapshots are the
//! serialized head plus the last applied log id and membership; they are
//! also written to disk so a restart replays only the log after them.
//!
//! Cut blocks wait for their upload in `pending` (replicated state). Each
//! replica spills them to `<state>/pending-blocks/<tenant>/<id>/` in their
//! final Parquet form (the block flusher does, outside apply), after which
//! only their series index stays in memory. The snapshot on disk refers to
//! spilled blocks by id; the snapshot sent to a follower carries their files.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StoredMembership,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use strata_proto::prometheus::WriteRequest;
use strata_proto::write_view::WriteView;
use tokio::sync::RwLock;

use crate::head::{AppendOutcome, Head, HeadConfig, SeriesSamples};
use crate::raft_types::{Entry, LogId, NodeId, Request, Response, StorageError, TypeConfig};

/// A block cut from the head: frozen data waiting for (or kept briefly
/// after) its upload.
#[derive(Debug, Clone)]
pub struct FrozenBlock {
    pub id: String,
    pub tenant: String,
    /// Oldest sample; the block covers `[min_t, before)`.
    pub min_t: i64,
    pub before: i64,
    pub data: FrozenData,
}

/// Where a frozen block's samples are.
#[derive(Debug, Clone)]
pub enum FrozenData {
    /// In memory, as cut (until the flusher spills it).
    Memory(Arc<SeriesSamples>),
    /// On local disk, encoded as it will be uploaded.
    Spilled(Arc<SpilledBlock>),
}

/// A block spilled to local disk, with its series index in memory.
#[derive(Debug)]
pub struct SpilledBlock {
    pub local: strata_blocks::LocalBlock,
    pub index: strata_blocks::BlockIndex,
}

impl SpilledBlock {
    /// Opens a spilled block (checking its files) and loads its index.
    pub fn open(root: &std::path::Path, tenant: &str, id: &str) -> Result<SpilledBlock, strata_blocks::BlockError> {
        let local = strata_blocks::LocalBlock::open(root, tenant, id)?;
        let index = local.index()?;
        Ok(SpilledBlock { local, index })
    }
}

impl FrozenBlock {
    /// Bytes the block takes: its files once spilled, else an estimate of
    /// its memory (16 bytes a sample plus the label text).
    pub fn bytes(&self) -> u64 {
        match &self.data {
            FrozenData::Spilled(b) => b.local.bytes,
            FrozenData::Memory(series) => series
                .iter()
                .map(|(l, s)| 16 * s.len() as u64 + l.iter().map(|(n, v)| (n.len() + v.len() + 16) as u64).sum::<u64>())
                .sum(),
        }
    }
}

/// Blocks cut from the head. `pending` is replicated state (in snapshots);
/// `retained` is local: uploaded blocks kept in memory until the store
/// gateways have surely picked them up.
#[derive(Debug, Default)]
pub struct BlockBook {
    pub pending: BTreeMap<String, FrozenBlock>,
    pub retained: Vec<(FrozenBlock, std::time::Instant)>,
    pub cut_total: u64,
    pub uploaded_total: u64,
    /// Pending blocks this replica failed to spill (local; they stay in memory).
    pub spill_failed: std::collections::BTreeSet<String>,
}

impl BlockBook {
    /// Bytes held for pending blocks: the files of spilled ones, and the
    /// memory of those that could not be spilled. A block just cut (not yet
    /// spilled: the flusher spills right after cutting) counts once spilled;
    /// until then it is the head memory it was a moment before.
    pub fn pending_bytes(&self) -> u64 {
        self.pending
            .values()
            .filter(|b| matches!(b.data, FrozenData::Spilled(_)) || self.spill_failed.contains(&b.id))
            .map(FrozenBlock::bytes)
            .sum()
    }
}

/// State shared with readers (StoreAPI, status).
pub struct SmState {
    pub head: Head,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
    pub blocks: BlockBook,
}

/// `snapshot.bin`: one `strata_wal` record whose body is this, bincode,
/// replaced atomically. Files from before the record framing (bare
/// bincode) are still read.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// [`SnapshotFile`] borrowed, for writing (the same bincode).
#[derive(Serialize)]
struct SnapshotFileOut<'a> {
    meta: &'a SnapshotMeta<NodeId, openraft::BasicNode>,
    data: &'a [u8],
}

const SNAPSHOT_FILE: &str = "snapshot.bin";

/// Reads `snapshot.bin` (`Ok(None)` if there is none).
fn read_snapshot_file(path: &std::path::Path) -> std::io::Result<Option<SnapshotFile>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()));
    // One record filling the file; else a file from before the framing (an
    // old file that fails both is reported with the framing's error).
    match strata_wal::parse(&bytes, bytes.len() as u64) {
        Ok(Some((body, used))) if used == bytes.len() => {
            bincode::deserialize(body).map(Some).map_err(|e| invalid(e.to_string()))
        }
        framing => bincode::deserialize(&bytes).map(Some).map_err(|e| match framing {
            Err(f) => invalid(f.to_string()),
            _ => invalid(e.to_string()),
        }),
    }
}

/// A pending block in a snapshot.
#[derive(Serialize, Deserialize)]
enum PendingWire {
    /// Not spilled yet: the samples themselves.
    Memory { id: String, tenant: String, min_t: i64, before: i64, series: SeriesSamples },
    /// In the local snapshot file: spilled, its files are in the spill directory.
    OnDisk { id: String, tenant: String, min_t: i64, before: i64 },
    /// In a snapshot sent to another node: the spilled block's files.
    Files { id: String, tenant: String, min_t: i64, before: i64, files: Vec<(String, Vec<u8>)> },
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    head: Vec<u8>,
    pending: Vec<PendingWire>,
}

/// Prefix of snapshot bodies since spilled blocks (older ones are read too).
const BODY_MAGIC: &[u8] = b"strata-sm-v3\n";

fn encode_body(body: &SnapshotBody) -> Result<Vec<u8>, bincode::Error> {
    let mut out = BODY_MAGIC.to_vec();
    bincode::serialize_into(&mut out, body)?;
    Ok(out)
}

/// The state as of one applied index, captured under the state lock at
/// the cost of sharing (closed head chunks, cut blocks) rather than
/// copying; [`SnapshotView::encode`] serializes it after the lock is
/// released, so writes go on meanwhile.
struct SnapshotView {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    head: strata_head::head::HeadView,
    pending: Vec<FrozenBlock>,
}

/// [`PendingWire`]'s wire form, borrowed (same variants in the same order).
#[derive(Serialize)]
enum PendingOut<'a> {
    Memory { id: &'a str, tenant: &'a str, min_t: i64, before: i64, series: &'a SeriesSamples },
    OnDisk { id: &'a str, tenant: &'a str, min_t: i64, before: i64 },
}

impl SnapshotView {
    /// The body bytes, as [`encode_body`] writes them. The head is encoded
    /// straight into the body (bincode writes a struct as its fields in
    /// order and `head: Vec<u8>` as a u64 length and the bytes), so the
    /// encoded head is not held twice.
    fn encode(&self) -> Result<Vec<u8>, bincode::Error> {
        let mut out = BODY_MAGIC.to_vec();
        bincode::serialize_into(&mut out, &self.last_applied)?;
        bincode::serialize_into(&mut out, &self.membership)?;
        let len_at = out.len();
        out.extend_from_slice(&[0; 8]);
        self.head.encode_into(&mut out)?;
        let head_len = (out.len() - len_at - 8) as u64;
        out[len_at..len_at + 8].copy_from_slice(&head_len.to_le_bytes());
        let pending: Vec<PendingOut> = self
            .pending
            .iter()
            .map(|b| {
                let (id, tenant, min_t, before) = (b.id.as_str(), b.tenant.as_str(), b.min_t, b.before);
                match &b.data {
                    FrozenData::Memory(series) => PendingOut::Memory { id, tenant, min_t, before, series },
                    FrozenData::Spilled(_) => PendingOut::OnDisk { id, tenant, min_t, before },
                }
            })
            .collect();
        bincode::serialize_into(&mut out, &pending)?;
        Ok(out)
    }

    /// Ids of the spilled blocks the body refers to.
    fn on_disk_ids(&self) -> std::collections::BTreeSet<String> {
        self.pending.iter().filter(|b| matches!(b.data, FrozenData::Spilled(_))).map(|b| b.id.clone()).collect()
    }
}

/// Pending blocks of snapshots written before blocks were spilled.
#[derive(Deserialize)]
struct FrozenBlockV2 {
    id: String,
    tenant: String,
    min_t: i64,
    before: i64,
    series: SeriesSamples,
}

#[derive(Deserialize)]
struct SnapshotBodyV2 {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    head: Vec<u8>,
    pending_blocks: Vec<FrozenBlockV2>,
}

/// Directory (under the state directory) of spilled pending blocks.
const SPILL_DIR: &str = "pending-blocks";

#[derive(Clone)]
pub struct StateMachine {
    pub state: Arc<RwLock<SmState>>,
    dir: PathBuf,
    /// Ids of the spilled blocks the snapshot on disk refers to (their files
    /// must stay until a newer snapshot no longer does).
    snapshot_refs: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// [`BlockBook::pending_bytes`], kept current for the write path.
    pending_bytes: Arc<std::sync::atomic::AtomicU64>,
    snapshot_idx: Arc<std::sync::atomic::AtomicU64>,
    /// Shard name: part of every block id.
    shard: String,
    /// Held while spilling and while sweeping the spill directory: the
    /// flusher's loop and an operator's flush both spill, and a second
    /// writer of one block (or a sweep) would replace its directory under an
    /// upload reading it.
    spill_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Snapshot body written before blocks existed (session-1 data dirs).
#[derive(Deserialize)]
struct SnapshotBodyV1 {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    head: Vec<u8>,
}

fn decode_body(data: &[u8]) -> Result<SnapshotBody, bincode::Error> {
    if let Some(rest) = data.strip_prefix(BODY_MAGIC) {
        return bincode::deserialize::<SnapshotBody>(rest);
    }
    bincode::deserialize::<SnapshotBodyV2>(data)
        .map(|v2| SnapshotBody {
            last_applied: v2.last_applied,
            membership: v2.membership,
            head: v2.head,
            pending: v2
                .pending_blocks
                .into_iter()
                .map(|b| PendingWire::Memory {
                    id: b.id,
                    tenant: b.tenant,
                    min_t: b.min_t,
                    before: b.before,
                    series: b.series,
                })
                .collect(),
        })
        .or_else(|e| {
            let v1: SnapshotBodyV1 = bincode::deserialize(data).map_err(|_| e)?;
            Ok(SnapshotBody {
                last_applied: v1.last_applied,
                membership: v1.membership,
                head: v1.head,
                pending: vec![],
            })
        })
}

#[derive(Debug, thiserror::Error)]
enum RestoreError {
    #[error("snapshot: {0}")]
    Decode(#[from] bincode::Error),
    #[error(
        "pending block {id}: {source} (this replica's copy is damaged: remove its data directory to resync it from the others)"
    )]
    Block { id: String, source: strata_blocks::BlockError },
}

impl SmState {
    /// Restores a snapshot body; spilled blocks are opened from (or, when
    /// the body carries their files, written to) `spill_root`.
    fn restore_body(&mut self, body: SnapshotBody, spill_root: &std::path::Path) -> Result<(), RestoreError> {
        let mut pending = BTreeMap::new();
        for w in body.pending {
            let block_err = |id: &str| {
                let id = id.to_string();
                move |source| RestoreError::Block { id, source }
            };
            let b = match w {
                PendingWire::Memory { id, tenant, min_t, before, series } => {
                    FrozenBlock { id, tenant, min_t, before, data: FrozenData::Memory(Arc::new(series)) }
                }
                PendingWire::OnDisk { id, tenant, min_t, before } => {
                    let sb = SpilledBlock::open(spill_root, &tenant, &id).map_err(block_err(&id))?;
                    FrozenBlock { id, tenant, min_t, before, data: FrozenData::Spilled(Arc::new(sb)) }
                }
                PendingWire::Files { id, tenant, min_t, before, files } => {
                    strata_blocks::write_local_files(spill_root, &tenant, &id, &files).map_err(block_err(&id))?;
                    let sb = SpilledBlock::open(spill_root, &tenant, &id).map_err(block_err(&id))?;
                    FrozenBlock { id, tenant, min_t, before, data: FrozenData::Spilled(Arc::new(sb)) }
                }
            };
            pending.insert(b.id.clone(), b);
        }
        self.head.restore(&body.head)?;
        self.last_applied = body.last_applied;
        self.membership = body.membership;
        self.blocks.pending = pending;
        Ok(())
    }

    /// The state as of now, cheaply ([`SnapshotView`]).
    fn view(&self) -> SnapshotView {
        SnapshotView {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            head: self.head.freeze(),
            pending: self.blocks.pending.values().cloned().collect(),
        }
    }
}

/// Ids of the blocks a body refers to on disk.
fn on_disk_ids(body: &SnapshotBody) -> std::collections::BTreeSet<String> {
    body.pending
        .iter()
        .filter_map(|w| match w {
            PendingWire::OnDisk { id, .. } | PendingWire::Files { id, .. } => Some(id.clone()),
            PendingWire::Memory { .. } => None,
        })
        .collect()
}

fn sm_err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, std::io::Error::other(e.to_string()))
}

impl StateMachine {
    /// Opens the state machine, restoring the last snapshot from `dir` if present.
    pub fn open(dir: PathBuf, cfg: HeadConfig, shard: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut state = SmState {
            head: Head::new(cfg),
            last_applied: None,
            membership: StoredMembership::default(),
            blocks: BlockBook::default(),
        };
        let spill_root = dir.join(SPILL_DIR);
        let mut refs = std::collections::BTreeSet::new();
        if let Some(file) = read_snapshot_file(&dir.join(SNAPSHOT_FILE))? {
            let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            let body = decode_body(&file.data).map_err(|e| invalid(e.to_string()))?;
            refs = on_disk_ids(&body);
            state.restore_body(body, &spill_root).map_err(|e| invalid(e.to_string()))?;
            tracing::info!(last_applied = ?state.last_applied, "restored head from snapshot");
        }
        let pending_bytes = state.blocks.pending_bytes();
        Ok(StateMachine {
            state: Arc::new(RwLock::new(state)),
            dir,
            snapshot_refs: Arc::new(std::sync::Mutex::new(refs)),
            pending_bytes: Arc::new(pending_bytes.into()),
            snapshot_idx: Arc::new(0.into()),
            shard: shard.to_string(),
            spill_lock: Default::default(),
        })
    }

    /// Where pending blocks are spilled (`<tenant>/<id>/` under it).
    pub fn spill_root(&self) -> PathBuf {
        self.dir.join(SPILL_DIR)
    }

    /// Bytes of the pending blocks (cut, not uploaded).
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Recounts the pending bytes after `st.blocks.pending` changed.
    pub fn recount_pending(&self, st: &SmState) {
        self.pending_bytes.store(st.blocks.pending_bytes(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes every pending block still in memory to the spill directory
    /// and keeps only its index in memory. Per block: `(id, bytes)` or
    /// `(id, error)` (that block stays in memory).
    pub async fn spill_pending(&self) -> Vec<Result<(String, u64), (String, String)>> {
        let _spilling = self.spill_lock.lock().await;
        let todo: Vec<(FrozenBlock, Arc<SeriesSamples>)> = {
            let st = self.state.read().await;
            st.blocks
                .pending
                .values()
                .filter_map(|b| match &b.data {
                    FrozenData::Memory(s) => Some((b.clone(), s.clone())),
                    FrozenData::Spilled(_) => None,
                })
                .collect()
        };
        let mut out = Vec::new();
        for (b, series) in todo {
            let (root, shard) = (self.spill_root(), self.shard.clone());
            let (tenant, id, range) = (b.tenant.clone(), b.id.clone(), (b.min_t, b.before));
            // Encoding and fsyncs run outside the state lock.
            let written = tokio::task::spawn_blocking(move || {
                strata_blocks::write_local_block(&root, &tenant, &shard, &id, range, series.as_slice())?;
                SpilledBlock::open(&root, &tenant, &id)
            })
            .await;
            match written {
                Ok(Ok(spilled)) => {
                    let bytes = spilled.local.bytes;
                    let mut st = self.state.write().await;
                    if let Some(p) = st.blocks.pending.get_mut(&b.id) {
                        p.data = FrozenData::Spilled(Arc::new(spilled));
                    }
                    st.blocks.spill_failed.remove(&b.id);
                    self.recount_pending(&st);
                    out.push(Ok((b.id.clone(), bytes)));
                }
                Ok(Err(e)) => out.push(Err((b.id.clone(), e.to_string()))),
                Err(e) => out.push(Err((b.id.clone(), e.to_string()))),
            }
            if matches!(out.last(), Some(Err(_))) {
                let mut st = self.state.write().await;
                st.blocks.spill_failed.insert(b.id.clone());
                self.recount_pending(&st);
            }
        }
        out
    }

    /// Excludes [`StateMachine::spill_pending`] while held (for a sweep of
    /// the spill directory, which must not remove a block being written).
    pub async fn lock_spills(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.spill_lock.lock().await
    }

    /// Spilled blocks the snapshot on disk refers to.
    pub fn snapshot_refs(&self) -> std::collections::BTreeSet<String> {
        self.snapshot_refs.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn set_snapshot_refs(&self, refs: std::collections::BTreeSet<String>) {
        if let Ok(mut g) = self.snapshot_refs.lock() {
            *g = refs;
        }
    }

    fn save_snapshot_file(&self, meta: &SnapshotMeta<NodeId, openraft::BasicNode>, data: &[u8]) -> std::io::Result<()> {
        // Serialized once, into the record (no copy of `data` beside it).
        let mut rec = Vec::with_capacity(data.len() + 1024);
        let start = strata_wal::begin_record(&mut rec);
        bincode::serialize_into(&mut rec, &SnapshotFileOut { meta, data }).map_err(std::io::Error::other)?;
        strata_wal::end_record(&mut rec, start);
        strata_wal::replace(&self.dir.join(SNAPSHOT_FILE), true, |w| w.write_all(&rec))
    }
}

impl StateMachine {
    /// A snapshot body as sent to another node: spilled blocks replaced by
    /// their files.
    fn portable(&self, data: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut body = decode_body(&data).map_err(|e| e.to_string())?;
        if !body.pending.iter().any(|w| matches!(w, PendingWire::OnDisk { .. })) {
            return Ok(data);
        }
        let root = self.spill_root();
        for w in body.pending.iter_mut() {
            if let PendingWire::OnDisk { id, tenant, min_t, before } = w {
                let files = strata_blocks::LocalBlock::open(&root, tenant, id)
                    .and_then(|b| b.read_files())
                    .map_err(|e| format!("spilled block {id}: {e}"))?;
                *w = PendingWire::Files {
                    id: std::mem::take(id),
                    tenant: std::mem::take(tenant),
                    min_t: *min_t,
                    before: *before,
                    files,
                };
            }
        }
        encode_body(&body).map_err(|e| e.to_string())
    }
}

/// Applies one write item; an undecodable item (never produced by our
/// write path) is reported as fully rejected rather than stopping the node.
fn apply_write(head: &mut Head, tenant: &str, bytes: &[u8]) -> AppendOutcome {
    // Samples-only writes (nearly all) are read in place: decoding them with
    // prost allocated two strings per label and was half of apply's CPU.
    if let Some(view) = WriteView::parse(bytes) {
        return head.append_view(tenant, &view);
    }
    match WriteRequest::decode(bytes) {
        Ok(req) => head.append(tenant, &req),
        Err(e) => AppendOutcome { errors: vec![format!("undecodable write in log: {e}")], ..Default::default() },
    }
}

/// `id`, unless a pending or retained block of another tenant already has
/// it (block ids hash (shard, tenant) with 64-bit FNV, which a chosen tenant
/// name can collide with): then `id` plus the first 16 hex digits of the
/// tenant's SHA-256, so the two tenants' blocks never share an entry. The
/// same on every replica (it depends only on replicated state), and ids
/// without a collision are unchanged, so replicas of older versions agree.
fn unique_block_id(book: &BlockBook, id: String, tenant: &str) -> String {
    let taken = |id: &str| {
        book.pending.get(id).is_some_and(|b| b.tenant != tenant)
            || book.retained.iter().any(|(b, _)| b.id == id && b.tenant != tenant)
    };
    if !taken(&id) {
        return id;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, tenant.as_bytes());
    let suffix: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let unique = format!("{id}-{suffix}");
    tracing::warn!(%id, %unique, %tenant, "block id taken by another tenant's block; using a tenant-qualified id");
    unique
}

/// Applies a cut (of one part of a tenant's series): the samples older than
/// `before` become a pending block. A cut in parts makes one block per part;
/// its id names the part, so the parts of one range never collide.
fn cut_block(st: &mut SmState, shard: &str, tenant: &str, before: i64, part: u32, parts: u32) {
    let started = std::time::Instant::now();
    let series = st.head.cut_part(tenant, before, part, parts);
    if series.is_empty() {
        return;
    }
    let min_t = series.iter().filter_map(|(_, s)| s.first().map(|x| x.0)).min().unwrap_or(before);
    let id = if parts <= 1 {
        strata_blocks::block_id(shard, tenant, min_t, before)
    } else {
        strata_blocks::block_id(&format!("{shard}\u{0}part {part} of {parts}"), tenant, min_t, before)
    };
    let id = unique_block_id(&st.blocks, id, tenant);
    st.blocks.cut_total += 1;
    tracing::info!(
        %id,
        %tenant,
        min_t,
        before,
        part,
        parts,
        series = series.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "cut block"
    );
    let data = FrozenData::Memory(Arc::new(series));
    st.blocks.pending.insert(id.clone(), FrozenBlock { id, tenant: tenant.to_string(), min_t, before, data });
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let run = strata_telemetry::BackgroundRun::start("snapshot");
        let r = self.build_snapshot_file().await;
        run.finish(r.is_ok());
        r
    }
}

impl StateMachine {
    async fn build_snapshot_file(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Under the state lock only the cheap capture; the serialization
        // runs after it is released, so applies (writes) do not wait.
        let started = std::time::Instant::now();
        let view = {
            let st = self.state.read().await;
            let view = tokio::task::block_in_place(|| st.view());
            // The new file will refer to these; the old one to the previous
            // set: keep both until the rename (a crash in between leaves
            // either). Set before the lock is released, so the spill GC
            // never sees a captured block as unreferenced.
            let mut refs = self.snapshot_refs();
            refs.extend(view.on_disk_ids());
            self.set_snapshot_refs(refs);
            view
        };
        let captured = started.elapsed();
        let data = tokio::task::block_in_place(|| view.encode()).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let encoded = started.elapsed();
        let (last_applied, membership, refs) = (view.last_applied, view.membership.clone(), view.on_disk_ids());
        drop(view);
        let idx = self.snapshot_idx.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{idx}", l.leader_id, l.index),
            None => format!("--{idx}"),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        tokio::task::block_in_place(|| self.save_snapshot_file(&meta, &data))
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.set_snapshot_refs(refs);
        tracing::info!(
            bytes = data.len(),
            last = ?last_applied,
            capture_ms = captured.as_millis() as u64,
            encode_ms = (encoded - captured).as_millis() as u64,
            save_ms = (started.elapsed() - encoded).as_millis() as u64,
            "built snapshot"
        );
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, openraft::BasicNode>), StorageError> {
        let st = self.state.read().await;
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut st = self.state.write().await;
        let mut out = Vec::new();
        let mut blocks_changed = false;
        for e in entries {
            st.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Response::default()),
                EntryPayload::Normal(Request::Write { items }) => {
                    let outcomes = tokio::task::block_in_place(|| {
                        items.iter().map(|(t, b)| apply_write(&mut st.head, t, b)).collect()
                    });
                    out.push(Response { outcomes });
                }
                EntryPayload::Normal(Request::WriteSnappy { items }) => {
                    let outcomes = tokio::task::block_in_place(|| {
                        let mut raw = Vec::new();
                        let mut dec = snap::raw::Decoder::new();
                        items
                            .iter()
                            .map(|(t, b)| {
                                let n = snap::raw::decompress_len(b).unwrap_or(0);
                                raw.resize(n, 0);
                                match dec.decompress(b, &mut raw) {
                                    Ok(n) => apply_write(&mut st.head, t, &raw[..n]),
                                    Err(e) => AppendOutcome {
                                        errors: vec![format!("undecodable write in log: {e}")],
                                        ..Default::default()
                                    },
                                }
                            })
                            .collect()
                    });
                    out.push(Response { outcomes });
                }
                EntryPayload::Normal(Request::CutBlock { tenant, before }) => {
                    let shard = self.shard.clone();
                    tokio::task::block_in_place(|| cut_block(&mut st, &shard, &tenant, before, 0, 1));
                    blocks_changed = true;
                    out.push(Response::default());
                }
                EntryPayload::Normal(Request::CutBlockPart { tenant, before, part, parts }) => {
                    let shard = self.shard.clone();
                    tokio::task::block_in_place(|| cut_block(&mut st, &shard, &tenant, before, part, parts));
                    blocks_changed = true;
                    out.push(Response::default());
                }
                EntryPayload::Normal(Request::BlockUploaded { id }) => {
                    if let Some(b) = st.blocks.pending.remove(&id) {
                        st.blocks.spill_failed.remove(&id);
                        st.blocks.uploaded_total += 1;
                        st.blocks.retained.push((b, std::time::Instant::now()));
                    }
                    blocks_changed = true;
                    out.push(Response::default());
                }
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Response::default());
                }
            }
        }
        if blocks_changed {
            self.recount_pending(&st);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body = decode_body(&data).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let refs = on_disk_ids(&body);
        let local = {
            let mut st = self.state.write().await;
            let root = self.spill_root();
            tokio::task::block_in_place(|| st.restore_body(body, &root)).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
            self.recount_pending(&st);
            // Kept on disk with references to the block files just written.
            tokio::task::block_in_place(|| st.view())
        };
        let local = tokio::task::block_in_place(|| local.encode()).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let mut all = self.snapshot_refs();
        all.extend(refs.iter().cloned());
        self.set_snapshot_refs(all);
        tokio::task::block_in_place(|| self.save_snapshot_file(meta, &local))
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.set_snapshot_refs(refs);
        tracing::info!(last = ?meta.last_log_id, bytes = data.len(), "installed snapshot from leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let file = tokio::task::block_in_place(|| read_snapshot_file(&self.dir.join(SNAPSHOT_FILE)))
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let Some(file) = file else { return Ok(None) };
        let data = tokio::task::block_in_place(|| self.portable(file.data)).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot { meta: file.meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

#[cfg(test)]
mod block_id_tests {
    use super::*;

    fn frozen(id: &str, tenant: &str) -> FrozenBlock {
        FrozenBlock {
            id: id.into(),
            tenant: tenant.into(),
            min_t: 0,
            before: 1,
            data: FrozenData::Memory(Arc::new(Vec::new())),
        }
    }

    #[test]
    fn a_block_id_another_tenant_holds_is_qualified_by_tenant() {
        let mut book = BlockBook::default();
        book.pending.insert("b-1".into(), frozen("b-1", "team-a"));
        // Same tenant (a re-cut of the same range): the same id.
        assert_eq!(unique_block_id(&book, "b-1".into(), "team-a"), "b-1");
        // Another tenant colliding: qualified, deterministic, distinct per tenant.
        let b = unique_block_id(&book, "b-1".into(), "team-b");
        assert!(b.starts_with("b-1-") && b.len() == "b-1-".len() + 16, "{b}");
        assert_eq!(b, unique_block_id(&book, "b-1".into(), "team-b"));
        assert_ne!(b, unique_block_id(&book, "b-1".into(), "team-c"));
        // A retained (uploaded, kept) block counts too; free ids are unchanged.
        book.retained.push((frozen("b-2", "team-a"), std::time::Instant::now()));
        assert_ne!(unique_block_id(&book, "b-2".into(), "team-b"), "b-2");
        assert_eq!(unique_block_id(&book, "b-3".into(), "team-b"), "b-3");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::prometheus::{Label, Sample, TimeSeries};

    fn entry(index: u64, req: Request) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(req),
        }
    }

    fn write(t0: i64, series: usize, samples: usize) -> Request {
        let req = WriteRequest {
            timeseries: (0..series)
                .map(|i| TimeSeries {
                    labels: vec![
                        Label { name: "__name__".into(), value: "m".into() },
                        Label { name: "i".into(), value: format!("{i:03}") },
                    ],
                    samples: (0..samples as i64)
                        .map(|k| Sample { timestamp: t0 + k * 1000, value: (k * 7 + i as i64) as f64 })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        Request::Write { items: vec![("t1".into(), req.encode_to_vec())] }
    }

    async fn spilled_samples(sm: &StateMachine) -> Vec<(strata_model::Labels, Vec<(i64, f64)>)> {
        let st = sm.state.read().await;
        let mut out = Vec::new();
        let store: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(sm.spill_root()).unwrap());
        for b in st.blocks.pending.values() {
            let FrozenData::Spilled(sb) = &b.data else { panic!("block {} is not spilled", b.id) };
            let refs: Vec<u32> = (0..sb.index.labels.len() as u32).collect();
            let samples = sb.index.read_samples(store.clone(), &refs, i64::MIN, i64::MAX).await.unwrap();
            out.extend(sb.index.labels.iter().cloned().zip(samples));
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spilled_blocks_survive_snapshot_install_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t0 =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 600_000;
        let mut a = StateMachine::open(dir.path().join("a"), HeadConfig::default(), "shard-0").unwrap();
        a.apply(vec![
            entry(1, write(t0, 20, 300)),
            entry(2, Request::CutBlock { tenant: "t1".into(), before: t0 + 300_000 }),
        ])
        .await
        .unwrap();
        // Just cut, not spilled: still counted as the head memory it was.
        assert_eq!(a.pending_bytes(), 0);
        let memory_bytes = a.state.read().await.blocks.pending.values().map(FrozenBlock::bytes).sum::<u64>();
        assert!(memory_bytes > 20 * 300 * 16, "{memory_bytes}");
        let want: Vec<(strata_model::Labels, Vec<(i64, f64)>)> = {
            let st = a.state.read().await;
            let b = st.blocks.pending.values().next().unwrap();
            let FrozenData::Memory(s) = &b.data else { panic!("cut blocks start in memory") };
            let mut v = s.as_ref().clone();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        assert_eq!(want.len(), 20);

        let results = a.spill_pending().await;
        assert_eq!(results.len(), 1);
        let (_, spilled_bytes) = results[0].clone().unwrap();
        assert_eq!(a.pending_bytes(), spilled_bytes);
        assert!(spilled_bytes < memory_bytes / 4, "spilled {spilled_bytes} vs memory {memory_bytes}");
        assert_eq!(spilled_samples(&a).await, want);

        // The snapshot on disk refers to the block; the one sent to a follower carries its files.
        let mut builder = a.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap();
        let local = std::fs::read(dir.path().join("a/snapshot.bin")).unwrap();
        assert!(local.len() < spilled_bytes as usize, "local snapshot {} bytes holds the block", local.len());
        let sent = a.get_current_snapshot().await.unwrap().unwrap();
        let data = sent.snapshot.into_inner();
        assert!(data.len() > spilled_bytes as usize, "sent snapshot {} bytes lacks the block", data.len());

        let mut b = StateMachine::open(dir.path().join("b"), HeadConfig::default(), "shard-0").unwrap();
        b.install_snapshot(&sent.meta, Box::new(Cursor::new(data))).await.unwrap();
        assert_eq!(b.pending_bytes(), spilled_bytes);
        assert_eq!(spilled_samples(&b).await, want);
        drop(b);
        let b = StateMachine::open(dir.path().join("b"), HeadConfig::default(), "shard-0").unwrap();
        assert_eq!(spilled_samples(&b).await, want, "after a restart");
        assert_eq!(b.snapshot_refs().len(), 1);

        // A replica whose spilled files are gone refuses to start, naming the block.
        drop(a);
        std::fs::remove_dir_all(dir.path().join("a").join(SPILL_DIR)).unwrap();
        let err = StateMachine::open(dir.path().join("a"), HeadConfig::default(), "shard-0").err().unwrap().to_string();
        assert!(err.contains("pending block b-") && err.contains("resync"), "{err}");
    }

    /// The flusher's loop and an operator's flush spill at the same time:
    /// each block is written once, and its directory is never replaced
    /// under a reader.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_spills_write_each_block_once() {
        let dir = tempfile::tempdir().unwrap();
        let t0 =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 600_000;
        let mut a = StateMachine::open(dir.path().join("a"), HeadConfig::default(), "shard-0").unwrap();
        a.apply(vec![
            entry(1, write(t0, 20, 300)),
            entry(2, Request::CutBlock { tenant: "t1".into(), before: t0 + 100_000 }),
            entry(3, Request::CutBlock { tenant: "t1".into(), before: t0 + 200_000 }),
        ])
        .await
        .unwrap();
        let want: Vec<String> = a.state.read().await.blocks.pending.keys().cloned().collect();
        assert_eq!(want.len(), 2);
        let (x, y) = tokio::join!(a.spill_pending(), a.spill_pending());
        let mut spilled: Vec<String> = x.into_iter().chain(y).map(|r| r.unwrap().0).collect();
        spilled.sort();
        assert_eq!(spilled, want, "every block spilled exactly once");
        assert_eq!(spilled_samples(&a).await.len(), 2 * 20);
    }

    /// The view captured under the lock encodes to exactly the body the
    /// owned form encodes (one wire format, old snapshots still read), and
    /// the head it froze is unaffected by writes applied after the capture.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_view_encodes_like_the_owned_body_while_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let t0 =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 600_000;
        let mut a = StateMachine::open(dir.path().join("a"), HeadConfig::default(), "shard-0").unwrap();
        a.apply(vec![
            entry(1, write(t0, 20, 300)),
            entry(2, Request::CutBlock { tenant: "t1".into(), before: t0 + 100_000 }),
        ])
        .await
        .unwrap();
        // One cut block spilled, one in memory: both wire variants.
        assert!(a.spill_pending().await.iter().all(|r| r.is_ok()));
        a.apply(vec![entry(3, Request::CutBlock { tenant: "t1".into(), before: t0 + 200_000 })]).await.unwrap();
        let (view, owned) = {
            let st = a.state.read().await;
            let head = st.head.snapshot().unwrap();
            let pending = st
                .blocks
                .pending
                .values()
                .map(|b| match &b.data {
                    FrozenData::Memory(series) => PendingWire::Memory {
                        id: b.id.clone(),
                        tenant: b.tenant.clone(),
                        min_t: b.min_t,
                        before: b.before,
                        series: series.as_ref().clone(),
                    },
                    FrozenData::Spilled(_) => PendingWire::OnDisk {
                        id: b.id.clone(),
                        tenant: b.tenant.clone(),
                        min_t: b.min_t,
                        before: b.before,
                    },
                })
                .collect();
            let owned =
                SnapshotBody { last_applied: st.last_applied, membership: st.membership.clone(), head, pending };
            (st.view(), encode_body(&owned).unwrap())
        };
        assert!(view.pending.iter().any(|b| matches!(b.data, FrozenData::Spilled(_))));
        assert!(view.pending.iter().any(|b| matches!(b.data, FrozenData::Memory(_))));
        // Writes applied after the capture change the head, not the view.
        a.apply(vec![entry(4, write(t0 + 300_000, 20, 100))]).await.unwrap();
        let encoded = view.encode().unwrap();
        assert_eq!(encoded, owned, "the view's bytes differ from the owned body's");
        let body = decode_body(&encoded).unwrap();
        assert_eq!(body.last_applied.map(|l| l.index), Some(3));
        assert_eq!(on_disk_ids(&body), view.on_disk_ids());
    }

    /// A cut in parts makes one pending block per part with distinct ids,
    /// together holding what one cut holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_in_parts_makes_one_block_per_part() {
        let dir = tempfile::tempdir().unwrap();
        let mut one = StateMachine::open(dir.path().join("one"), HeadConfig::default(), "shard-0").unwrap();
        let mut parted = StateMachine::open(dir.path().join("parted"), HeadConfig::default(), "shard-0").unwrap();
        one.apply(vec![
            entry(1, write(1_000, 50, 10)),
            entry(2, Request::CutBlock { tenant: "t1".into(), before: 6_000 }),
        ])
        .await
        .unwrap();
        let mut entries = vec![entry(1, write(1_000, 50, 10))];
        for part in 0..4 {
            entries.push(entry(
                2 + part as u64,
                Request::CutBlockPart { tenant: "t1".into(), before: 6_000, part, parts: 4 },
            ));
        }
        parted.apply(entries).await.unwrap();
        let samples = |sm: &StateMachine| {
            let st = sm.state.try_read().unwrap();
            let mut all: Vec<_> = st
                .blocks
                .pending
                .values()
                .flat_map(|b| match &b.data {
                    FrozenData::Memory(s) => s.as_ref().clone(),
                    FrozenData::Spilled(_) => panic!("not spilled yet"),
                })
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            (st.blocks.pending.len(), all)
        };
        let (n_one, want) = samples(&one);
        let (n_parted, got) = samples(&parted);
        assert_eq!((n_one, n_parted), (1, 4));
        assert_eq!(got, want);
        assert_eq!(want.len(), 50);
        assert_eq!(parted.state.read().await.head.stats(), one.state.read().await.head.stats());
    }

    /// `snapshot.bin` is one checksummed record: it restores after a
    /// restart, a damaged one is refused naming the problem (never read as
    /// whatever bincode makes of it), and a file from before the framing
    /// (bare bincode) still restores.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_snapshot_file_is_a_checksummed_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join(SNAPSHOT_FILE);
        let mut a = StateMachine::open(dir.path().join("a"), HeadConfig::default(), "shard-0").unwrap();
        a.apply(vec![entry(1, write(1_000, 5, 10))]).await.unwrap();
        a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        drop(a);
        let good = std::fs::read(&path).unwrap();
        let (body, used) = strata_wal::parse(&good, good.len() as u64).unwrap().unwrap();
        assert_eq!(used, good.len());
        let (series, samples) = {
            let a = StateMachine::open(dir.path().join("a"), HeadConfig::default(), "shard-0").unwrap();
            a.state.read().await.head.stats()
        };
        assert_eq!((series, samples), (5, 50));

        let legacy = body.to_vec();
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let err = StateMachine::open(dir.path().join("a"), HeadConfig::default(), "shard-0").err().unwrap().to_string();
        assert!(err.contains("snapshot.bin") && err.contains("checksum mismatch"), "{err}");
        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(StateMachine::open(dir.path().join("a"), HeadConfig::default(), "shard-0").is_err(), "torn");

        std::fs::write(&path, &legacy).unwrap();
        let a = StateMachine::open(dir.path().join("a"), HeadConfig::default(), "shard-0").unwrap();
        assert_eq!(a.state.read().await.head.stats(), (5, 50));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_from_before_spilling_still_restore() {
        #[derive(Serialize)]
        struct OldBlock {
            id: String,
            tenant: String,
            min_t: i64,
            before: i64,
            series: SeriesSamples,
        }
        #[derive(Serialize)]
        struct OldBody {
            last_applied: Option<LogId>,
            membership: StoredMembership<NodeId, openraft::BasicNode>,
            head: Vec<u8>,
            pending_blocks: Vec<OldBlock>,
        }
        let dir = tempfile::tempdir().unwrap();
        let labels = strata_model::Labels::from_pairs(vec![("__name__".into(), "m".into())]);
        let body = OldBody {
            last_applied: None,
            membership: StoredMembership::default(),
            head: Head::new(HeadConfig::default()).snapshot().unwrap(),
            pending_blocks: vec![OldBlock {
                id: "b-old".into(),
                tenant: "t1".into(),
                min_t: 1,
                before: 3,
                series: vec![(labels, vec![(1, 1.0), (2, 2.0)])],
            }],
        };
        let file = SnapshotFile { meta: SnapshotMeta::default(), data: bincode::serialize(&body).unwrap() };
        std::fs::create_dir_all(dir.path().join("s")).unwrap();
        std::fs::write(dir.path().join("s/snapshot.bin"), bincode::serialize(&file).unwrap()).unwrap();
        let sm = StateMachine::open(dir.path().join("s"), HeadConfig::default(), "shard-0").unwrap();
        let st = sm.state.read().await;
        let FrozenData::Memory(s) = &st.blocks.pending["b-old"].data else { panic!("old blocks load into memory") };
        assert_eq!(s[0].1, vec![(1, 1.0), (2, 2.0)]);
    }
}
