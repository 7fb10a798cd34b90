//! Raft RPC over tonic: the client side (openraft's network traits) and the
//! server side (`strata.raft.Raft`). openraft's messages travel as bincode
//! inside protobuf `bytes`.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use strata_proto::raft::raft_client::RaftClient;
use strata_proto::raft::raft_server::Raft as RaftService;
use strata_proto::raft::{ForwardWriteRequest, RaftMessage};
use tonic::transport::{Channel, Endpoint};

use crate::proposer::Proposer;
use crate::raft_types::{NodeId, Raft, TypeConfig};

/// How this node connects to its peers (Raft RPCs, forwarded writes).
#[derive(Clone, Default)]
pub struct PeerTransport {
    /// Local address of the connections (`--raft.source-address`; default:
    /// the OS chooses).
    pub source: Option<std::net::IpAddr>,
    /// TLS, with this node's client certificate for peers that require one
    /// (`--grpc-client.tls-*`); none: plaintext.
    pub tls: Option<Arc<strata_server::tls::ClientTls>>,
}

/// A lazily connecting channel to a peer.
pub fn channel(addr: &str, via: &PeerTransport) -> Result<Channel, tonic::transport::Error> {
    let ep = Endpoint::from_shared(strata_server::grpc::uri(addr, via.tls.is_some()))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10));
    Ok(strata_server::grpc::channel(ep, via.tls.clone(), via.source))
}

/// Creates clients for peers.
#[derive(Clone, Default)]
pub struct Network {
    pub via: PeerTransport,
}

pub struct PeerClient {
    target: NodeId,
    client: Option<RaftClient<Channel>>,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let client = channel(&node.addr, &self.via)
            .ok()
            .map(|c| RaftClient::new(c).max_decoding_message_size(1 << 30).max_encoding_message_size(1 << 30));
        PeerClient { target, client, addr: node.addr.clone() }
    }
}

fn enc<T: Serialize>(v: &T, target: NodeId) -> Result<RaftMessage, bincode::Error> {
    Ok(RaftMessage { data: bincode::serialize(v)?.into(), target })
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        req: &Req,
        timeout: Duration,
        which: &'static str,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                "bad peer address {}",
                self.addr
            )))));
        };
        let msg = enc(req, self.target).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(msg);
        request.set_timeout(timeout);
        let resp = match which {
            "append" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let resp = resp.map_err(|s| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(s.to_string()))))?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&resp.into_inner().data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(&rpc, option.hard_ttl(), "append").await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(&rpc, option.hard_ttl(), "snapshot").await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(&rpc, option.hard_ttl(), "vote").await
    }
}

/// Server side of the Raft RPC.
pub struct RaftRpc {
    pub raft: Raft,
    pub proposer: Arc<Proposer>,
    pub node_id: NodeId,
    /// The write limits forwarded writes are checked against, as the HTTP
    /// path checks its own (with the tenant's label limits from the
    /// overrides in their place, as there).
    pub limits: strata_model::Limits,
    pub overrides: Arc<strata_server::reload::LiveOverrides>,
}

/// A forwarded write must be what a follower's HTTP path would have
/// proposed: a valid tenant, a decodable request within the per-request
/// sample limit, valid series, no native histograms. Anything else comes
/// from something other than a Strata follower and is refused whole.
pub fn check_forwarded(tenant: &str, bytes: &[u8], limits: &strata_model::Limits) -> Result<(), String> {
    use prost::Message;
    strata_model::tenant::validate_tenant(tenant).map_err(|m| format!("forwarded write: tenant: {m}"))?;
    let req = strata_proto::prometheus::WriteRequest::decode(bytes)
        .map_err(|e| format!("forwarded write: invalid WriteRequest protobuf: {e}"))?;
    let samples: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
    if samples > limits.max_samples_per_request {
        return Err(format!(
            "forwarded write: {samples} samples, over the limit of {} (max_samples_per_request)",
            limits.max_samples_per_request
        ));
    }
    for ts in &req.timeseries {
        if !ts.histograms.is_empty() {
            return Err(format!(
                "forwarded write: series {} carries native histograms",
                strata_model::series_text(&ts.labels)
            ));
        }
        strata_model::validate_series(&ts.labels, limits).map_err(|m| format!("forwarded write: {m}"))?;
    }
    Ok(())
}

impl RaftRpc {
    fn check_target(&self, m: &RaftMessage) -> Result<(), tonic::Status> {
        if m.target != self.node_id {
            return Err(tonic::Status::failed_precondition(format!(
                "this is Raft node {}, not node {}: check --raft.peers",
                self.node_id, m.target
            )));
        }
        Ok(())
    }
}

fn dec<T: DeserializeOwned>(m: &RaftMessage) -> Result<T, tonic::Status> {
    bincode::deserialize(&m.data).map_err(|e| tonic::Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn reply<T: Serialize>(v: &T) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
    enc(v, 0).map(tonic::Response::new).map_err(|e| tonic::Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn append_entries(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        self.check_target(req.get_ref())?;
        let rpc: AppendEntriesRequest<TypeConfig> = dec(req.get_ref())?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        self.check_target(req.get_ref())?;
        let rpc: VoteRequest<NodeId> = dec(req.get_ref())?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        self.check_target(req.get_ref())?;
        let rpc: InstallSnapshotRequest<TypeConfig> = dec(req.get_ref())?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn forward_write(
        &self,
        req: tonic::Request<ForwardWriteRequest>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let r = req.into_inner();
        check_forwarded(&r.tenant, &r.write_request, &self.overrides.current().write_limits(&r.tenant, &self.limits))
            .map_err(tonic::Status::invalid_argument)?;
        match self
            .proposer
            .propose_local(r.tenant, crate::proposer::Payload::Raw(r.write_request.to_vec()))
            .instrument(tracing::info_span!("raft commit", leader = self.node_id))
            .await
        {
            Ok(outcome) => reply(&outcome),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod forward_tests {
    use super::*;
    use prost::Message;
    use strata_proto::prometheus::{Histogram, Label, Sample, TimeSeries, WriteRequest};

    fn series(name: &str, samples: usize) -> TimeSeries {
        TimeSeries {
            labels: vec![Label { name: "__name__".into(), value: name.into() }],
            samples: (0..samples as i64).map(|t| Sample { timestamp: t, value: 1.0 }).collect(),
            ..Default::default()
        }
    }

    fn bytes(ts: Vec<TimeSeries>) -> Vec<u8> {
        WriteRequest { timeseries: ts, metadata: vec![] }.encode_to_vec()
    }

    #[test]
    fn forwarded_writes_are_checked_like_the_http_path() {
        let limits = strata_model::Limits { max_samples_per_request: 10, ..Default::default() };
        assert_eq!(check_forwarded("team-a", &bytes(vec![series("up", 3)]), &limits), Ok(()));
        let refused = |tenant: &str, b: Vec<u8>| check_forwarded(tenant, &b, &limits).unwrap_err();
        assert!(refused("a/b", bytes(vec![series("up", 1)])).contains("tenant"));
        assert!(refused("t", vec![0xff, 0xff, 0xff]).contains("invalid WriteRequest"));
        assert!(refused("t", bytes(vec![series("up", 11)])).contains("max_samples_per_request"));
        assert!(refused("t", bytes(vec![series("1bad", 1)])).contains("forwarded write:"));
        let mut h = series("h", 0);
        h.histograms = vec![Histogram::default()];
        assert!(refused("t", bytes(vec![h])).contains("native histograms"));
    }
}
