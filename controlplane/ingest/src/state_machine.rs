//! The Raft state machine: the head. Every replica applies the same log
//! entries in the same order and so holds the same head. Snapshots are the
//! serialized head plus the last applied log id and membership; they are
//! also written to disk so a restart replays only the log after them.

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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrozenBlock {
    pub id: String,
    pub tenant: String,
    /// Oldest sample; the block covers `[min_t, before)`.
    pub min_t: i64,
    pub before: i64,
    pub series: SeriesSamples,
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
}

/// State shared with readers (StoreAPI, status).
pub struct SmState {
    pub head: Head,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
    pub blocks: BlockBook,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    head: Vec<u8>,
    pending_blocks: Vec<FrozenBlock>,
}

#[derive(Clone)]
pub struct StateMachine {
    pub state: Arc<RwLock<SmState>>,
    dir: PathBuf,
    snapshot_idx: Arc<std::sync::atomic::AtomicU64>,
    /// Shard name: part of every block id.
    shard: String,
}

/// Snapshot body written before blocks existed (session-1 data dirs).
#[derive(Deserialize)]
struct SnapshotBodyV1 {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    head: Vec<u8>,
}

fn decode_body(data: &[u8]) -> Result<SnapshotBody, bincode::Error> {
    bincode::deserialize::<SnapshotBody>(data).or_else(|e| {
        let v1: SnapshotBodyV1 = bincode::deserialize(data).map_err(|_| e)?;
        Ok(SnapshotBody {
            last_applied: v1.last_applied,
            membership: v1.membership,
            head: v1.head,
            pending_blocks: vec![],
        })
    })
}

impl SmState {
    fn restore_body(&mut self, body: SnapshotBody) -> Result<(), bincode::Error> {
        self.head.restore(&body.head)?;
        self.last_applied = body.last_applied;
        self.membership = body.membership;
        self.blocks.pending = body.pending_blocks.into_iter().map(|b| (b.id.clone(), b)).collect();
        Ok(())
    }
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
        if let Ok(bytes) = std::fs::read(dir.join("snapshot.bin")) {
            let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            let file: SnapshotFile = bincode::deserialize(&bytes).map_err(invalid)?;
            let body = decode_body(&file.data).map_err(invalid)?;
            state.restore_body(body).map_err(invalid)?;
            tracing::info!(last_applied = ?state.last_applied, "restored head from snapshot");
        }
        Ok(StateMachine {
            state: Arc::new(RwLock::new(state)),
            dir,
            snapshot_idx: Arc::new(0.into()),
            shard: shard.to_string(),
        })
    }

    fn save_snapshot_file(&self, meta: &SnapshotMeta<NodeId, openraft::BasicNode>, data: &[u8]) -> std::io::Result<()> {
        let file = SnapshotFile { meta: meta.clone(), data: data.to_vec() };
        let bytes = bincode::serialize(&file).map_err(std::io::Error::other)?;
        let tmp = self.dir.join("snapshot.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join("snapshot.bin"))?;
        // The rename itself is durable only once the directory is synced.
        std::fs::File::open(&self.dir)?.sync_all()
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

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_applied, membership) = {
            let st = self.state.read().await;
            let head = tokio::task::block_in_place(|| st.head.snapshot()).map_err(|e| sm_err(ErrorVerb::Read, e))?;
            let body = SnapshotBody {
                last_applied: st.last_applied,
                membership: st.membership.clone(),
                head,
                pending_blocks: st.blocks.pending.values().cloned().collect(),
            };
            (bincode::serialize(&body).map_err(|e| sm_err(ErrorVerb::Read, e))?, st.last_applied, st.membership.clone())
        };
        let idx = self.snapshot_idx.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{idx}", l.leader_id, l.index),
            None => format!("--{idx}"),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        tokio::task::block_in_place(|| self.save_snapshot_file(&meta, &data))
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        tracing::info!(bytes = data.len(), last = ?last_applied, "built snapshot");
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
                    tokio::task::block_in_place(|| {
                        let series = st.head.cut(&tenant, before);
                        if series.is_empty() {
                            return;
                        }
                        let min_t = series.iter().filter_map(|(_, s)| s.first().map(|x| x.0)).min().unwrap_or(before);
                        let id = strata_blocks::block_id(&shard, &tenant, min_t, before);
                        st.blocks.cut_total += 1;
                        tracing::info!(%id, %tenant, min_t, before, series = series.len(), "cut block");
                        st.blocks.pending.insert(id.clone(), FrozenBlock { id, tenant, min_t, before, series });
                    });
                    out.push(Response::default());
                }
                EntryPayload::Normal(Request::BlockUploaded { id }) => {
                    if let Some(b) = st.blocks.pending.remove(&id) {
                        st.blocks.uploaded_total += 1;
                        st.blocks.retained.push((b, std::time::Instant::now()));
                    }
                    out.push(Response::default());
                }
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Response::default());
                }
            }
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
        {
            let mut st = self.state.write().await;
            tokio::task::block_in_place(|| st.restore_body(body)).map_err(|e| sm_err(ErrorVerb::Read, e))?;
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
        }
        tokio::task::block_in_place(|| self.save_snapshot_file(meta, &data))
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        tracing::info!(last = ?meta.last_log_id, bytes = data.len(), "installed snapshot from leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        match std::fs::read(self.dir.join("snapshot.bin")) {
            Ok(bytes) => {
                let file: SnapshotFile = bincode::deserialize(&bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
                Ok(Some(Snapshot { meta: file.meta, snapshot: Box::new(Cursor::new(file.data)) }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(sm_err(ErrorVerb::Read, e)),
        }
    }
}
