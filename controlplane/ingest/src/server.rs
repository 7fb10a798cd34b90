//! The ingester process: Raft node, HTTP API (:9009) and gRPC (:9095).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use strata_proto::raft::raft_server::RaftServer;
use strata_proto::store::store_server::StoreServer;

use crate::block_flush::{BlockConfig, BlockFlusher, FlushError};
use crate::head::HeadConfig;
use crate::log_store::LogStore;
use crate::network::{Network, RaftRpc};
use crate::proposer::Proposer;
use crate::raft_types::{NodeId, Raft};
use crate::state_machine::StateMachine;
use crate::store_api::HeadStore;

/// Ingester settings (flags of `strata ingester`).
#[derive(Debug, Clone)]
pub struct IngesterConfig {
    pub node_id: NodeId,
    /// Initial voters: id → gRPC address.
    pub peers: BTreeMap<NodeId, String>,
    pub grpc_listen: SocketAddr,
    pub web_listen: SocketAddr,
    pub storage_path: PathBuf,
    pub head: HeadConfig,
    /// Largest accepted (compressed) request body.
    pub max_request_bytes: usize,
    /// Shard name reported in StoreAPI Info (replicas of one group share it).
    pub shard: String,
    /// Take a snapshot (and purge the log) after this many entries.
    pub snapshot_logs: u64,
    /// Log entries kept after a snapshot (for lagging followers).
    pub keep_logs: u64,
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    /// Local address of connections to peers (`--raft.source-address`).
    pub raft_source: Option<std::net::IpAddr>,
    /// TLS of the gRPC listener (`--grpc.tls-*`); with a client CA, peers
    /// and queriers must present certificates it signed.
    pub grpc_tls: Option<strata_server::tls::TlsServerConfig>,
    /// TLS of connections to peers (`--grpc-client.tls-*`).
    pub peer_tls: Option<strata_server::tls::TlsClientConfig>,
    pub blocks: BlockConfig,
    /// Object storage for blocks (local directory or S3 bucket).
    pub objstore: strata_blocks::BucketConfig,
    /// HTTP timeouts and limits (`--web.*`).
    pub http: strata_server::HttpServerConfig,
    /// Bytes of cut blocks waiting for upload past which writes get 503.
    pub max_pending_bytes: u64,
    /// Per-tenant limits reloaded at run time (`--limits.overrides-file`).
    pub overrides_file: Option<PathBuf>,
}

impl Default for IngesterConfig {
    fn default() -> Self {
        IngesterConfig {
            node_id: 1,
            peers: BTreeMap::new(),
            grpc_listen: ([127, 0, 0, 1], 9095).into(),
            web_listen: ([127, 0, 0, 1], 9009).into(),
            storage_path: PathBuf::from("./data/ingester"),
            head: HeadConfig::default(),
            max_request_bytes: 32 << 20,
            shard: "shard-0".into(),
            snapshot_logs: 20_000,
            keep_logs: 1000,
            heartbeat: Duration::from_millis(200),
            election_timeout: Duration::from_millis(1000),
            raft_source: None,
            grpc_tls: None,
            peer_tls: None,
            blocks: BlockConfig::default(),
            objstore: strata_blocks::BucketConfig::default(),
            http: strata_server::HttpServerConfig::default(),
            max_pending_bytes: 1 << 30,
            overrides_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot open storage at {path}: {source}")]
    Storage { path: String, source: std::io::Error },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("Raft failed: {0}")]
    Raft(String),
    #[error("{0} server failed: {1}")]
    Serve(&'static str, String),
}

pub struct IngesterMetrics {
    registry: Registry,
    pub samples_written: Counter,
    pub samples_rejected: Counter,
    pub histograms_rejected: Counter,
    pub write_errors: Counter,
    pub writes_throttled: Counter,
    pub writes_rate_limited: Counter,
    pending_bytes: Gauge,
    pending_limit: Gauge,
    term: Gauge,
    last_log: Gauge,
    applied: Gauge,
    is_leader: Gauge,
    head_series: Gauge,
    head_samples: Gauge,
    blocks_cut: Gauge,
    blocks_uploaded: Gauge,
    blocks_pending: Gauge,
    block_upload_errors: Gauge,
    /// Requests of the HTTP server by route (`strata_http_*`, process-wide).
    pub http: strata_server::HttpMetrics,
    /// Per-tenant usage (`strata_ingester_tenant_*`).
    pub usage: Arc<crate::tenant_usage::TenantUsage>,
}

impl IngesterMetrics {
    fn new(flush: &crate::block_flush::FlushMetrics) -> Self {
        let mut r = Registry::with_prefix("strata_ingester");
        let m = IngesterMetrics {
            samples_written: Counter::default(),
            samples_rejected: Counter::default(),
            histograms_rejected: Counter::default(),
            write_errors: Counter::default(),
            writes_throttled: Counter::default(),
            writes_rate_limited: Counter::default(),
            pending_bytes: Gauge::default(),
            pending_limit: Gauge::default(),
            term: Gauge::default(),
            last_log: Gauge::default(),
            applied: Gauge::default(),
            is_leader: Gauge::default(),
            head_series: Gauge::default(),
            head_samples: Gauge::default(),
            blocks_cut: Gauge::default(),
            blocks_uploaded: Gauge::default(),
            blocks_pending: Gauge::default(),
            block_upload_errors: Gauge::default(),
            http: strata_server::HttpMetrics::global(),
            usage: Arc::default(),
            registry: Registry::default(),
        };
        m.usage.register(&mut r);
        flush.register(&mut r);
        r.register(
            "samples_written",
            "Samples written to the head through this node's write endpoints",
            m.samples_written.clone(),
        );
        r.register(
            "samples_rejected",
            "Samples rejected (invalid, out of bounds, duplicate, over limits)",
            m.samples_rejected.clone(),
        );
        r.register(
            "native_histograms_rejected",
            "Native histogram samples rejected (not stored yet; also counted in samples_rejected)",
            m.histograms_rejected.clone(),
        );
        r.register(
            "write_errors",
            "Writes that could not be committed (no leader, Raft errors)",
            m.write_errors.clone(),
        );
        r.register("raft_term", "Current Raft term", m.term.clone());
        r.register("raft_last_log_index", "Last Raft log index", m.last_log.clone());
        r.register("raft_applied_index", "Last applied Raft log index", m.applied.clone());
        r.register("raft_is_leader", "1 if this node is the Raft leader", m.is_leader.clone());
        r.register("head_series", "Series in the head (all tenants)", m.head_series.clone());
        r.register("head_samples", "Samples in the head (all tenants)", m.head_samples.clone());
        r.register("blocks_cut", "Blocks cut from the head since start (applied cuts)", m.blocks_cut.clone());
        r.register("blocks_uploaded", "Blocks confirmed uploaded since start", m.blocks_uploaded.clone());
        r.register("blocks_pending", "Blocks cut but not yet uploaded", m.blocks_pending.clone());
        r.register("block_upload_errors", "Failed block uploads by this node", m.block_upload_errors.clone());
        r.register(
            "writes_throttled",
            "Write requests refused with 503 because too many cut blocks wait for their upload",
            m.writes_throttled.clone(),
        );
        r.register(
            "writes_rate_limited",
            "Write requests refused with 429 because their tenant is over its ingestion rate (--limits.overrides-file)",
            m.writes_rate_limited.clone(),
        );
        r.register(
            "pending_bytes",
            "Bytes of cut blocks waiting for their upload (spilled to disk or in memory)",
            m.pending_bytes.clone(),
        );
        r.register(
            "pending_limit_bytes",
            "--ingest.max-pending-bytes: writes get 503 past it",
            m.pending_limit.clone(),
        );
        IngesterMetrics { registry: r, ..m }
    }
}

/// Shared by the HTTP handlers.
pub struct AppState {
    pub cfg: IngesterConfig,
    pub flusher: Arc<BlockFlusher>,
    pub raft: Raft,
    pub sm: StateMachine,
    pub proposer: Arc<Proposer>,
    pub metrics: IngesterMetrics,
    /// OTLP translation state, per tenant.
    pub translators: Mutex<crate::write::OtlpTranslators>,
    /// The per-tenant overrides (`--limits.overrides-file`, kept current).
    pub overrides: Arc<strata_server::reload::LiveOverrides>,
    /// Ingestion rate buckets per tenant, at this entry point.
    pub limiter: Mutex<strata_model::overrides::IngestionLimiter>,
}

fn raft_config(cfg: &IngesterConfig) -> Result<Arc<Config>, IngestError> {
    let hb = cfg.heartbeat.as_millis() as u64;
    let el = cfg.election_timeout.as_millis() as u64;
    let c = Config {
        cluster_name: "strata".into(),
        heartbeat_interval: hb,
        election_timeout_min: el,
        election_timeout_max: el * 2,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs),
        max_in_snapshot_log_to_keep: cfg.keep_logs,
        purge_batch_size: 1,
        max_payload_entries: 64,
        ..Default::default()
    };
    Ok(Arc::new(c.validate().map_err(|e| IngestError::Config(e.to_string()))?))
}

/// What each HTTP route needs with `--web.config.file`; a route not
/// listed needs `admin`.
pub fn http_access(_: &axum::http::Method, path: &str) -> strata_server::Access {
    use strata_server::{Access, Role};
    match path {
        "/-/healthy" | "/-/ready" => Access::Open,
        "/api/v1/write" | "/otlp/v1/metrics" => Access::Role(Role::Write),
        "/metrics" | "/api/v1/status/raft" => Access::Role(Role::Read),
        _ => Access::Role(Role::Admin),
    }
}

async fn raft_status(State(st): State<Arc<AppState>>) -> Response {
    let m = st.raft.metrics().borrow().clone();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let membership = m.membership_config.membership();
    let members: Vec<u64> = membership.voter_ids().collect();
    let learners: Vec<u64> = membership.learner_ids().collect();
    let (series, samples) = st.sm.state.read().await.head.stats();
    Json(json!({
        "node_id": m.id,
        // A leader cut off from its quorum stops naming itself (see `acting_leader`).
        "leader_id": crate::raft_types::acting_leader(&m, st.cfg.election_timeout),
        "millis_since_quorum_ack": m.millis_since_quorum_ack,
        "term": m.current_term,
        "role": role,
        "last_log_index": m.last_log_index,
        "last_applied_index": m.last_applied.map(|l| l.index),
        "members": members,
        "learners": learners,
        "snapshot_index": m.snapshot.map(|l| l.index),
        "purged_index": m.purged.map(|l| l.index),
        "head_series": series,
        "head_samples": samples,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct LearnerReq {
    node_id: NodeId,
    addr: String,
}

#[derive(Deserialize)]
struct MembershipReq {
    members: BTreeSet<NodeId>,
}

fn raft_error(e: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "error", "error": e.to_string()}))).into_response()
}

/// Errors of the membership API: the caller's mistakes are 400, a request
/// sent to a follower 421 (naming the leader), the rest 503.
fn membership_error(
    e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>>,
) -> Response {
    use openraft::error::{ClientWriteError, RaftError};
    let status = match &e {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(_)) => StatusCode::BAD_REQUEST,
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => StatusCode::MISDIRECTED_REQUEST,
        RaftError::Fatal(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(json!({"status": "error", "error": e.to_string()}))).into_response()
}

async fn add_learner(State(st): State<Arc<AppState>>, Json(r): Json<LearnerReq>) -> Response {
    match st.raft.add_learner(r.node_id, BasicNode::new(r.addr), true).await {
        Ok(resp) => Json(json!({"status": "success", "log_index": resp.log_id.index})).into_response(),
        Err(e) => membership_error(e),
    }
}

async fn change_membership(State(st): State<Arc<AppState>>, Json(r): Json<MembershipReq>) -> Response {
    match st.raft.change_membership(r.members, false).await {
        Ok(resp) => Json(json!({"status": "success", "log_index": resp.log_id.index})).into_response(),
        Err(e) => membership_error(e),
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let m = st.raft.metrics().borrow().clone();
    st.metrics.term.set(m.current_term as i64);
    st.metrics.last_log.set(m.last_log_index.unwrap_or(0) as i64);
    st.metrics.applied.set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
    st.metrics
        .is_leader
        .set((crate::raft_types::acting_leader(&m, st.cfg.election_timeout) == Some(st.cfg.node_id)) as i64);
    {
        let sm = st.sm.state.read().await;
        let (series, samples) = sm.head.stats();
        st.metrics.head_series.set(series as i64);
        st.metrics.head_samples.set(samples as i64);
        st.metrics.blocks_cut.set(sm.blocks.cut_total as i64);
        st.metrics.blocks_uploaded.set(sm.blocks.uploaded_total as i64);
        st.metrics.blocks_pending.set(sm.blocks.pending.len() as i64);
        st.metrics.usage.set_head(&sm.head.tenant_stats());
    }
    st.metrics.pending_bytes.set(st.sm.pending_bytes() as i64);
    st.metrics.pending_limit.set(st.cfg.max_pending_bytes as i64);
    st.metrics.block_upload_errors.set(st.flusher.upload_errors.load(std::sync::atomic::Ordering::Relaxed) as i64);
    strata_server::process::metrics_response(&st.metrics.registry)
}

/// `POST /api/v1/admin/flush`: cut and upload everything the head holds now
/// (scale-down, maintenance, tests). Must be sent to the leader.
async fn admin_flush(State(st): State<Arc<AppState>>) -> Response {
    match st.flusher.flush_all().await {
        Ok(ids) => Json(json!({"status": "success", "blocks": ids})).into_response(),
        Err(FlushError::NotLeader(l)) => (
            StatusCode::MISDIRECTED_REQUEST,
            Json(json!({"status": "error", "error": format!("this node is not the Raft leader; send the flush to node {l:?}")})),
        )
            .into_response(),
        Err(e) => raft_error(e),
    }
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    let m = st.raft.metrics().borrow().clone();
    if let Err(fatal) = &m.running_state {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: the Raft core has stopped: {fatal}\n"))
            .into_response();
    }
    if m.current_leader == Some(st.cfg.node_id)
        && crate::raft_types::acting_leader(&m, st.cfg.election_timeout).is_none()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: leader without a quorum (no acknowledgement from a majority for {} ms)\n",
                m.millis_since_quorum_ack.unwrap_or(0)
            ),
        )
            .into_response();
    }
    if m.current_leader.is_some() {
        (StatusCode::OK, "Ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no Raft leader known\n").into_response()
    }
}

/// Runs an ingester until `shutdown` resolves.
pub async fn run(
    cfg: IngesterConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), IngestError> {
    if !cfg.peers.is_empty() && !cfg.peers.contains_key(&cfg.node_id) {
        return Err(IngestError::Config(format!("--raft.node-id {} is not in --raft.peers", cfg.node_id)));
    }
    let overrides =
        strata_server::reload::LiveOverrides::load(cfg.overrides_file.as_deref()).map_err(IngestError::Config)?;
    let storage = |p: PathBuf| move |source| IngestError::Storage { path: p.display().to_string(), source };
    let log = LogStore::open(&cfg.storage_path.join("raft")).map_err(storage(cfg.storage_path.join("raft")))?;
    let sm = StateMachine::open(cfg.storage_path.join("state"), cfg.head.clone(), &cfg.shard)
        .map_err(storage(cfg.storage_path.join("state")))?;
    let objstore = cfg.objstore.open().map_err(|e| IngestError::Config(e.to_string()))?;
    tracing::info!(bucket = %cfg.objstore.describe(), "block storage");
    let grpc_tls = match &cfg.grpc_tls {
        Some(t) => Some(
            strata_server::tls::ServerTls::new(t.clone(), strata_server::tls::ALPN_H2, "--grpc.tls-*")
                .map_err(|e| IngestError::Config(e.to_string()))?,
        ),
        None => None,
    };
    let peer_tls = match &cfg.peer_tls {
        Some(t) => {
            let tls = strata_server::tls::ClientTls::new(t.clone(), strata_server::tls::ALPN_H2, "--grpc-client.tls-*")
                .map_err(|e| IngestError::Config(e.to_string()))?;
            tls.watch(Duration::from_secs(5));
            Some(tls)
        }
        None => None,
    };
    let via = crate::network::PeerTransport { source: cfg.raft_source, tls: peer_tls };
    let raft = Raft::new(cfg.node_id, raft_config(&cfg)?, Network { via: via.clone() }, log, sm.clone())
        .await
        .map_err(|e| IngestError::Raft(e.to_string()))?;
    let proposer = Proposer::start(raft.clone(), cfg.node_id, via);
    let flusher =
        BlockFlusher::new(cfg.blocks.clone(), raft.clone(), sm.clone(), cfg.node_id, cfg.shard.clone(), objstore);
    tokio::spawn(flusher.clone().run());

    let grpc_listener = tokio::net::TcpListener::bind(cfg.grpc_listen).await.map_err(|source| IngestError::Bind {
        what: "gRPC",
        addr: cfg.grpc_listen,
        source,
    })?;
    let web_listener = tokio::net::TcpListener::bind(cfg.web_listen).await.map_err(|source| IngestError::Bind {
        what: "HTTP",
        addr: cfg.web_listen,
        source,
    })?;

    let ingester_metrics = IngesterMetrics::new(&flusher.metrics);
    let state = Arc::new(AppState {
        cfg: cfg.clone(),
        flusher,
        raft: raft.clone(),
        sm: sm.clone(),
        proposer: proposer.clone(),
        metrics: ingester_metrics,
        translators: Mutex::new(crate::write::OtlpTranslators::default()),
        overrides: overrides.clone(),
        limiter: Mutex::new(Default::default()),
    });
    let http_metrics = state.metrics.http.clone();
    let app = Router::new()
        .route("/api/v1/write", post(crate::write::remote_write))
        .route("/otlp/v1/metrics", post(crate::write::otlp))
        .route("/api/v1/status/raft", get(raft_status))
        .route("/api/v1/admin/raft/learner", post(add_learner))
        .route("/api/v1/admin/raft/membership", post(change_membership))
        .route("/api/v1/admin/flush", post(admin_flush))
        .route("/metrics", get(metrics))
        .route("/-/ready", get(ready))
        .route("/-/healthy", get(|| async { "OK\n" }))
        // The write endpoints stream their bodies under
        // --limits.max-request-bytes; extractor bodies (the admin API's
        // JSON) are tiny, so anything past 64 KiB is refused with 413.
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
        .with_state(state);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut s1 = stop_rx.clone();
    let grpc = tonic::transport::Server::builder()
        .layer(strata_server::GrpcMetricsLayer)
        .add_service(
            RaftServer::new(RaftRpc {
                raft: raft.clone(),
                proposer,
                node_id: cfg.node_id,
                limits: cfg.head.limits.clone(),
                overrides: overrides.clone(),
            })
            .max_decoding_message_size(1 << 30)
            .max_encoding_message_size(1 << 30),
        )
        .add_service(
            StoreServer::new(HeadStore {
                sm: sm.clone(),
                raft: raft.clone(),
                node_id: cfg.node_id,
                shard: cfg.shard.clone(),
                lease: cfg.election_timeout,
            })
            .max_encoding_message_size(256 << 20),
        )
        .serve_with_incoming_shutdown(strata_server::grpc::incoming(grpc_listener, grpc_tls), async move {
            let _ = s1.wait_for(|s| *s).await;
        });
    let mut s2 = stop_rx.clone();
    let web = strata_server::serve(web_listener, app, &cfg.http, Some(&http_metrics), http_access, async move {
        let _ = s2.wait_for(|s| *s).await;
    });

    // Bootstrap: the lowest peer id initializes the cluster once.
    if cfg.peers.keys().next() == Some(&cfg.node_id) {
        let raft = raft.clone();
        let members: BTreeMap<NodeId, BasicNode> = cfg.peers.iter().map(|(id, a)| (*id, BasicNode::new(a))).collect();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            match raft.is_initialized().await {
                Ok(false) => match raft.initialize(members).await {
                    Ok(()) => tracing::info!("initialized the Raft cluster"),
                    Err(e) => tracing::info!(error = %e, "cluster initialization skipped"),
                },
                Ok(true) => {}
                Err(e) => tracing::error!(error = %e, "Raft is not running"),
            }
        });
    }
    tracing::info!(node_id = cfg.node_id, grpc = %cfg.grpc_listen, web = %cfg.web_listen, peers = ?cfg.peers, "strata ingester started");
    // A Raft core that stopped on a fatal error (the log or state machine
    // could not be written: disk full, I/O error) never recovers in this
    // process: stop serving and exit with an error, so readiness fails at
    // once and a supervisor restarts the node on its durable state.
    let (fatal_tx, fatal_rx) = tokio::sync::watch::channel(None::<String>);
    {
        let stop_tx = stop_tx.clone();
        let mut metrics = raft.metrics();
        tokio::spawn(async move {
            let stopped = metrics.wait_for(|m| m.running_state.is_err()).await;
            let reason = match stopped {
                Ok(m) => m.running_state.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
                // The sender is gone: the core is shut down (normal on exit).
                Err(_) => return,
            };
            if *stop_tx.borrow() {
                return;
            }
            tracing::error!(error = %reason, "the Raft core has stopped; shutting down this ingester");
            let _ = fatal_tx.send(Some(reason));
            let _ = stop_tx.send(true);
        });
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let served = async { tokio::join!(grpc, web) };
    tokio::pin!(served);
    let mut fatal = fatal_rx.clone();
    let (g, w) = tokio::select! {
        r = &mut served => r,
        // Requests in flight get a few seconds; the node exits well within
        // the 30 s an operator (and the zombie test) allows.
        _ = async {
            if fatal.wait_for(|f| f.is_some()).await.is_err() {
                // No fatal error will come (the watcher has ended).
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        } => (Ok(()), Ok(())),
    };
    if let Some(reason) = fatal_rx.borrow().clone() {
        return Err(IngestError::Raft(format!("the Raft core stopped: {reason}")));
    }
    let _ = raft.shutdown().await;
    g.map_err(|e| IngestError::Serve("gRPC", e.to_string()))?;
    w.map_err(|e| IngestError::Serve("HTTP", e.to_string()))?;
    Ok(())
}

/// Parses `--raft.peers` (`1=127.0.0.1:9095,2=…`).
pub fn parse_peers(s: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("invalid peer {part:?}: expected id=host:port"))?;
        let id: NodeId = id.trim().parse().map_err(|_| format!("invalid peer id {id:?} in {part:?}"))?;
        if id == 0 {
            return Err("peer ids start at 1".into());
        }
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("peer id {id} listed twice"));
        }
    }
    Ok(out)
}
