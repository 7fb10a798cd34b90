//! `strata ingester`: Raft-replicated ingest.
//!
//! A remote write (or OTLP) request is validated, proposed through Raft
//! (group-committed with concurrent writes, forwarded to the leader from
//! any node), acknowledged once committed on a quorum and applied, and
//! lives in every replica's in-memory head (XOR-compressed chunks with an
//! inverted index). The Raft log is a checksummed, fsynced segmented WAL;
//! snapshots of the head let the log be purged and bring new or lagging
//! replicas up to date. The head is served over the StoreAPI.

pub mod block_flush;
pub mod log_store;
pub mod network;
pub mod proposer;
pub mod raft_types;
pub mod server;
pub mod state_machine;
pub mod store_api;
pub mod tenant_usage;
pub mod write;

pub use block_flush::BlockConfig;
pub use server::{IngestError, IngesterConfig, parse_peers, run};
pub use strata_head::{chunk, head};
