//! The head: recent samples in memory (see [`head`]), stored as Prometheus
//! XOR chunks ([`chunk`]). Deterministic, so every Raft replica that applies
//! the same writes holds the same head.

pub mod chunk;
pub mod head;

pub use head::{
    AppendOutcome, ChunkList, FamilyMetadata, Head, HeadConfig, SeriesSamples, StoredExemplar, TenantRange, cut_part_of,
};
