//! Turns client writes into Raft entries.
//!
//! Any node accepts writes. On the leader, concurrent writes are
//! group-committed: the batch loop drains whatever is waiting (up to 256
//! writes or 16 MiB) into one `Request::WriteSnappy` entry (each write
//! snappy-compressed; remote write 1.0 bodies as received), proposes it, and
//! answers each writer with its own outcome once the entry is committed and
//! applied. A follower forwards the write to the leader over gRPC. When
//! leadership moves, the write is retried against the new leader until a
//! deadline, so clients see no redirects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};
use tracing::Instrument as _;

use openraft::error::{ClientWriteError, RaftError};
use strata_proto::raft::ForwardWriteRequest;
use strata_proto::raft::raft_client::RaftClient;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::head::AppendOutcome;
use crate::raft_types::{NodeId, Raft, Request};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the Raft leader (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    #[error("no Raft leader is available; retry later")]
    NoLeader,
    #[error("Raft error: {0}")]
    Raft(String),
    #[error("forwarding to the leader failed: {0}")]
    Forward(String),
}

/// An encoded `prometheus.WriteRequest` to propose.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Protobuf bytes.
    Raw(Vec<u8>),
    /// Snappy-compressed (block format) protobuf bytes, e.g. a remote
    /// write 1.0 body as received.
    Snappy(Vec<u8>),
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Payload::Raw(b) | Payload::Snappy(b) => b.len(),
        }
    }

    /// Compressed bytes, as log entries hold them.
    fn into_snappy(self) -> Vec<u8> {
        match self {
            Payload::Raw(b) => strata_proto::remote_write::compress(&b),
            Payload::Snappy(b) => b,
        }
    }

    /// Protobuf bytes, as a forwarded write carries them.
    fn to_raw(&self) -> Result<Vec<u8>, ProposeError> {
        match self {
            Payload::Raw(b) => Ok(b.clone()),
            Payload::Snappy(b) => snap::raw::Decoder::new()
                .decompress_vec(b)
                .map_err(|e| ProposeError::Forward(format!("cannot decompress the write: {e}"))),
        }
    }
}

struct Item {
    tenant: String,
    payload: Payload,
    done: oneshot::Sender<Result<AppendOutcome, ProposeError>>,
}

pub struct Proposer {
    raft: Raft,
    node_id: NodeId,
    tx: mpsc::Sender<Item>,
    clients: Mutex<HashMap<String, RaftClient<strata_server::trace::TracedChannel>>>,
    deadline: Duration,
    via: crate::network::PeerTransport,
}

const MAX_ITEMS: usize = 256;
const MAX_BYTES: usize = 16 << 20;

impl Proposer {
    /// `via`: how forwarded writes reach the leader.
    pub fn start(raft: Raft, node_id: NodeId, via: crate::network::PeerTransport) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(batch_loop(raft.clone(), rx));
        Arc::new(Proposer {
            raft,
            node_id,
            tx,
            clients: Mutex::new(HashMap::new()),
            deadline: Duration::from_secs(15),
            via,
        })
    }

    /// Proposes on this node (must be the leader), group-committed with concurrent writes.
    pub async fn propose_local(&self, tenant: String, payload: Payload) -> Result<AppendOutcome, ProposeError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Item { tenant, payload, done })
            .await
            .map_err(|_| ProposeError::Raft("proposer stopped".into()))?;
        wait.await.map_err(|_| ProposeError::Raft("proposer dropped the write".into()))?
    }

    fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&leader)?.addr.clone();
        Some((leader, addr))
    }

    async fn forward(&self, addr: &str, tenant: &str, bytes: &[u8]) -> Result<AppendOutcome, ProposeError> {
        let mut client = {
            let mut c = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            match c.get(addr) {
                Some(cl) => cl.clone(),
                None => {
                    let ch =
                        crate::network::channel(addr, &self.via).map_err(|e| ProposeError::Forward(e.to_string()))?;
                    let cl = RaftClient::with_interceptor(ch, strata_server::trace::TraceInjector)
                        .max_decoding_message_size(1 << 30)
                        .max_encoding_message_size(1 << 30);
                    c.insert(addr.to_string(), cl.clone());
                    cl
                }
            }
        };
        let resp = client
            .forward_write(ForwardWriteRequest { tenant: tenant.to_string(), write_request: bytes.to_vec().into() })
            .await
            .map_err(|s| ProposeError::Forward(s.message().to_string()))?;
        bincode::deserialize(&resp.into_inner().data).map_err(|e| ProposeError::Forward(e.to_string()))
    }

    /// Proposes a write from any node, retrying across leader changes until the deadline.
    pub async fn propose(&self, tenant: &str, payload: Payload) -> Result<AppendOutcome, ProposeError> {
        let start = Instant::now();
        let mut last_err = ProposeError::NoLeader;
        // Forwarded writes travel as protobuf bytes (what every version's
        // leader accepts); decompressed once, when first needed.
        let mut raw: Option<Vec<u8>> = None;
        while start.elapsed() < self.deadline {
            let result = match self.leader() {
                Some((id, _)) if id == self.node_id => {
                    // Replicated, committed by a majority and applied on
                    // this (the leader's) head when it returns.
                    self.propose_local(tenant.to_string(), payload.clone())
                        .instrument(tracing::info_span!("raft commit", leader = id))
                        .await
                }
                Some((id, addr)) => {
                    if raw.is_none() {
                        raw = Some(payload.to_raw()?);
                    }
                    self.forward(&addr, tenant, raw.as_deref().unwrap_or_default())
                        .instrument(tracing::info_span!("forward to leader", otel.kind = "client", leader = id))
                        .await
                }
                None => Err(ProposeError::NoLeader),
            };
            match result {
                Ok(o) => return Ok(o),
                Err(e @ (ProposeError::NotLeader(_) | ProposeError::NoLeader | ProposeError::Forward(_))) => {
                    last_err = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err)
    }
}

async fn batch_loop(raft: Raft, mut rx: mpsc::Receiver<Item>) {
    let inflight = Arc::new(Semaphore::new(8));
    while let Some(first) = rx.recv().await {
        let mut bytes = first.payload.len();
        let mut items = vec![first];
        while items.len() < MAX_ITEMS && bytes < MAX_BYTES {
            match rx.try_recv() {
                Ok(it) => {
                    bytes += it.payload.len();
                    items.push(it);
                }
                Err(_) => break,
            }
        }
        let Ok(permit) = inflight.clone().acquire_owned().await else { return };
        let raft = raft.clone();
        tokio::spawn(async move {
            let mut waiters = Vec::with_capacity(items.len());
            let mut payload = Vec::with_capacity(items.len());
            for it in items {
                payload.push((it.tenant, it.payload.into_snappy()));
                waiters.push(it.done);
            }
            let res = raft.client_write(Request::WriteSnappy { items: payload }).await;
            drop(permit);
            match res {
                Ok(resp) => {
                    let mut outcomes = resp.data.outcomes.into_iter();
                    for w in waiters {
                        let _ = w.send(Ok(outcomes.next().unwrap_or_default()));
                    }
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    for w in waiters {
                        let _ = w.send(Err(ProposeError::NotLeader(f.leader_id)));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for w in waiters {
                        let _ = w.send(Err(ProposeError::Raft(msg.clone())));
                    }
                }
            }
        });
    }
}
