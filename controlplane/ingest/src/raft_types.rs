//! Raft type configuration and log entry payloads.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::head::AppendOutcome;

/// A log entry's application payload (versioned by variant).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Request {
    /// Group-committed remote writes: (tenant, encoded `prometheus.WriteRequest`).
    Write { items: Vec<(String, Vec<u8>)> },
    /// Cut `tenant`'s samples older than `before` out of the head into a
    /// pending block (every replica freezes the same data).
    CutBlock { tenant: String, before: i64 },
    /// The pending block `id` is in object storage: replicas release it.
    BlockUploaded { id: String },
}

/// What applying an entry produced: one outcome per write item.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub outcomes: Vec<AppendOutcome>,
}

openraft::declare_raft_types!(
    /// Strata's Raft types: u64 node ids, nodes addressed by their gRPC address.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
