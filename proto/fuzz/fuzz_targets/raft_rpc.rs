//! Raft RPC messages and forwarded writes as they arrive from the network:
//! bincode-encoded openraft requests and log payloads, and the protobuf
//! forwarded write whose remote-write body goes to the head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use prost::Message;
use strata_ingest::head::{Head, HeadConfig};
use strata_ingest::raft_types::{NodeId, Request, TypeConfig};
use strata_proto::prometheus::WriteRequest;
use strata_proto::raft::{ForwardWriteRequest, RaftMessage};

fuzz_target!(|data: &[u8]| {
    let _ = bincode::deserialize::<AppendEntriesRequest<TypeConfig>>(data);
    let _ = bincode::deserialize::<VoteRequest<NodeId>>(data);
    let _ = bincode::deserialize::<InstallSnapshotRequest<TypeConfig>>(data);
    if let Ok(Request::Write { items }) = bincode::deserialize::<Request>(data) {
        let mut head = Head::new(HeadConfig::default());
        for (tenant, bytes) in items.iter().take(8) {
            if let Ok(req) = WriteRequest::decode(bytes.as_slice()) {
                head.append(tenant, &req);
            }
        }
    }
    let _ = RaftMessage::decode(data);
    if let Ok(fw) = ForwardWriteRequest::decode(data) {
        if let Ok(req) = WriteRequest::decode(fw.write_request.as_ref()) {
            Head::new(HeadConfig::default()).append(&fw.tenant, &req);
        }
    }
});
