//! Raft type configuration and log entry payloads.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::head::AppendOutcome;

/// A log entry's application payload (versioned by variant).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Request {
    /// Group-committed remote writes: (tenant, encoded `prometheus.WriteRequest`).
    Write {
        #[serde(with = "write_items")]
        items: Vec<(String, Vec<u8>)>,
    },
    /// Cut `tenant`'s samples older than `before` out of the head into a
    /// pending block (every replica freezes the same data).
    CutBlock { tenant: String, before: i64 },
    /// The pending block `id` is in object storage: replicas release it.
    BlockUploaded { id: String },
    /// Like `Write`, each encoded `prometheus.WriteRequest` snappy-compressed
    /// (remote write 1.0 bodies as the client sent them): fewer bytes to
    /// write, fsync, cache and replicate. Appended last so older entries keep their
    /// encoding; what the proposer writes since session 6.
    WriteSnappy {
        #[serde(with = "write_items")]
        items: Vec<(String, Vec<u8>)>,
    },
    /// `CutBlock` of the series in `part` of `parts` (`strata_head::cut_part_of`):
    /// the leader cuts a large tenant in several entries, each a block of its
    /// own, so no single apply holds writes back for long.
    CutBlockPart { tenant: String, before: i64, part: u32, parts: u32 },
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

/// Serde for `Request::Write::items` that writes each encoded request as a
/// byte string (one length + memcpy) instead of a sequence of `u8`s, which
/// bincode would serialize one byte at a time. The bincode encoding is the
/// same either way (u64 length, then the bytes), so existing logs and
/// snapshots still read.
mod write_items {
    use serde::de::{SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct AsBytes<'a>(&'a [u8]);

    impl Serialize for AsBytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    struct ByteBuf(Vec<u8>);

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a byte string")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                    while let Some(b) = seq.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(ByteBuf(out))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }

    pub fn serialize<S: Serializer>(items: &[(String, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(items.len()))?;
        for (tenant, bytes) in items {
            seq.serialize_element(&(tenant, AsBytes(bytes)))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let items: Vec<(String, ByteBuf)> = Vec::deserialize(d)?;
        Ok(items.into_iter().map(|(t, b)| (t, b.0)).collect())
    }
}

/// The leader this node vouches for: none when its Raft core has stopped,
/// and not itself when it leads but no majority has acknowledged it for
/// `lease` (the election timeout: by then the others may have elected a
/// new leader; openraft 0.9 keeps such a leader in place until it hears a
/// higher term).
pub fn acting_leader(
    m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>,
    lease: std::time::Duration,
) -> Option<NodeId> {
    if m.running_state.is_err() {
        return None;
    }
    let leader = m.current_leader?;
    if leader == m.id && m.millis_since_quorum_ack.is_some_and(|ms| ms > lease.as_millis() as u64) {
        return None;
    }
    Some(leader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_without_quorum_acknowledgements_stops_claiming_leadership() {
        let lease = std::time::Duration::from_millis(600);
        let mut m = openraft::RaftMetrics::<NodeId, openraft::BasicNode>::new_initial(1);
        assert_eq!(acting_leader(&m, lease), None, "no leader known");
        m.current_leader = Some(1);
        m.millis_since_quorum_ack = Some(100);
        assert_eq!(acting_leader(&m, lease), Some(1));
        m.millis_since_quorum_ack = Some(601);
        assert_eq!(acting_leader(&m, lease), None, "partitioned leader");
        // A follower reports the leader it follows, whatever its own acks.
        m.current_leader = Some(2);
        assert_eq!(acting_leader(&m, lease), Some(2));
        m.running_state = Err(openraft::error::Fatal::Panicked);
        assert_eq!(acting_leader(&m, lease), None, "stopped core");
    }

    /// The layout `Request` had before `write_items`: a plain derive.
    #[derive(Serialize, Deserialize)]
    enum PlainRequest {
        Write { items: Vec<(String, Vec<u8>)> },
    }

    #[test]
    fn write_items_encode_exactly_like_the_plain_derive() {
        let items = vec![("anonymous".to_string(), vec![1u8, 2, 3, 255]), ("team-a".to_string(), Vec::new())];
        let new = bincode::serialize(&Request::Write { items: items.clone() }).unwrap();
        let old = bincode::serialize(&PlainRequest::Write { items: items.clone() }).unwrap();
        assert_eq!(new, old);
        assert_eq!(bincode::deserialize::<Request>(&old).unwrap(), Request::Write { items: items.clone() });
        // Self-describing formats (snapshots, debugging) round-trip too.
        let json = serde_json::to_string(&Request::Write { items: items.clone() }).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), Request::Write { items });
    }

    /// The variants' bincode tags are their positions: `WriteSnappy`, added
    /// last, leaves the encoding of entries already in logs unchanged.
    #[test]
    fn variant_tags_stay_put() {
        let tag = |r: &Request| u32::from_le_bytes(bincode::serialize(r).unwrap()[..4].try_into().unwrap());
        assert_eq!(tag(&Request::Write { items: vec![] }), 0);
        assert_eq!(tag(&Request::CutBlock { tenant: "t".into(), before: 1 }), 1);
        assert_eq!(tag(&Request::BlockUploaded { id: "b".into() }), 2);
        let snappy = Request::WriteSnappy { items: vec![("t".into(), vec![9, 8, 7])] };
        assert_eq!(tag(&snappy), 3);
        assert_eq!(bincode::deserialize::<Request>(&bincode::serialize(&snappy).unwrap()).unwrap(), snappy);
        assert_eq!(tag(&Request::CutBlockPart { tenant: "t".into(), before: 1, part: 0, parts: 2 }), 4);
    }
}
