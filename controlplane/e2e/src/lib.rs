//! Helpers for control-plane multi-process tests: a cluster of `strata
//! ingester` processes on loopback, their status, and StoreAPI reads.
//! Process handling comes from the data plane's harness (`dataplane-e2e`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testcontainers::core::IntoContainerPort;
use testcontainers::core::client::ClientError;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt, TestcontainersError};

pub use dataplane_e2e::*;
pub mod pki;
use strata_proto::prometheus::{LabelMatcher, label_matcher};
use strata_proto::store::SeriesRequest;
use strata_proto::store::store_client::StoreClient;

/// splitmix64: small and seedable, for reproducible schedules and corpora.
pub struct SeededRng(pub u64);

impl SeededRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// An index into something of `len` elements.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.index(xs.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// One ingester process.
pub struct Node {
    pub id: u64,
    pub grpc: u16,
    pub web: u16,
    pub dir: PathBuf,
    pub proc: Option<Proc>,
    pub extra: Vec<String>,
    pub peers: String,
}

impl Node {
    pub fn web_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.web)
    }

    pub fn write_url(&self) -> String {
        self.web_url("/api/v1/write")
    }

    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }

    pub fn start(&mut self, log_dir: &Path) {
        self.start_with_env(log_dir, &[]);
    }

    /// [`Node::start`] with extra environment variables.
    pub fn start_with_env(&mut self, log_dir: &Path, env: &[(&str, String)]) {
        let mut args = vec![
            "ingester".to_string(),
            "--raft.node-id".into(),
            self.id.to_string(),
            "--raft.peers".into(),
            self.peers.clone(),
            "--grpc.listen-address".into(),
            self.grpc_addr(),
            "--web.listen-address".into(),
            format!("127.0.0.1:{}", self.web),
            "--storage.path".into(),
            self.dir.display().to_string(),
            "--raft.heartbeat-interval".into(),
            "100ms".into(),
            "--raft.election-timeout".into(),
            "600ms".into(),
            // One bucket shared by the cluster, inside the test directory.
            "--objstore.path".into(),
            self.dir.parent().unwrap_or(&self.dir).join("objstore").display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        self.proc = Some(Proc::start(&format!("ingester-{}", self.id), &bin("strata"), &args, env, log_dir));
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// `POST /api/v1/admin/flush`: status and JSON body.
    pub async fn flush(&self, client: &reqwest::Client) -> (u16, serde_json::Value) {
        let r = client.post(self.web_url("/api/v1/admin/flush")).send().await.expect("flush");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn status(&self) -> Option<serde_json::Value> {
        let r = reqwest::Client::new()
            .get(self.web_url("/api/v1/status/raft"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }
}

/// A 3-voter cluster (plus optional extra nodes).
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: PathBuf,
}

impl Cluster {
    pub async fn start(dir: &Path, voters: u64, extra: &[&str]) -> Cluster {
        Cluster::start_with_env(dir, voters, extra, |_| Vec::new()).await
    }

    /// [`Cluster::start`] with environment variables per node id.
    pub async fn start_with_env(
        dir: &Path,
        voters: u64,
        extra: &[&str],
        env: impl Fn(u64) -> Vec<(&'static str, String)>,
    ) -> Cluster {
        let ports: Vec<(u64, u16, u16)> = (1..=voters).map(|i| (i, free_port(), free_port())).collect();
        let peers = ports.iter().map(|(i, g, _)| format!("{i}=127.0.0.1:{g}")).collect::<Vec<_>>().join(",");
        let mut nodes: Vec<Node> = ports
            .iter()
            .map(|(i, g, w)| Node {
                id: *i,
                grpc: *g,
                web: *w,
                dir: dir.join(format!("node-{i}")),
                proc: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                peers: peers.clone(),
            })
            .collect();
        for n in &mut nodes {
            n.start_with_env(dir, &env(n.id));
        }
        let c = Cluster { nodes, dir: dir.to_path_buf() };
        c.wait_leader(None, Duration::from_secs(30)).await;
        c
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node")
    }

    /// Waits until every running node agrees on a leader other than `not`.
    pub async fn wait_leader(&self, not: Option<u64>, timeout: Duration) -> u64 {
        wait_for(timeout, "an agreed Raft leader", || async {
            let mut leaders = BTreeSet::new();
            for n in self.nodes.iter().filter(|n| n.proc.is_some()) {
                let s = n.status().await?;
                leaders.insert(s["leader_id"].as_u64()?);
            }
            let l = *leaders.iter().next()?;
            (leaders.len() == 1 && Some(l) != not).then_some(l)
        })
        .await
    }

    /// Waits until all running nodes have applied the same last index.
    pub async fn wait_converged(&self, timeout: Duration) -> u64 {
        wait_for(timeout, "replicas to apply the same log", || async {
            let mut applied = BTreeSet::new();
            for n in self.nodes.iter().filter(|n| n.proc.is_some()) {
                let s = n.status().await?;
                applied.insert(s["last_applied_index"].as_u64()?);
            }
            (applied.len() == 1).then(|| *applied.iter().next().expect("one"))
        })
        .await
    }
}

/// Network partitions on loopback. Each ingester's peers reach it through a
/// TCP proxy (the addresses in `--raft.peers`, so in the Raft membership),
/// and each ingester connects out from its own loopback address
/// (`--raft.source-address=127.0.0.<10+id>`), so a proxy knows which node
/// a connection comes from. Isolating a node closes every connection to
/// and from it (and refuses new ones) until healed: Raft, forwarded writes
/// and snapshots alike. Clients (writers, queriers) use the nodes' own
/// ports and are not affected.
pub struct Partitions {
    isolated: tokio::sync::watch::Sender<BTreeSet<u64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The loopback address node `id` connects to its peers from.
pub fn peer_source_ip(id: u64) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 0, 10 + id as u8)
}

impl Partitions {
    /// Cuts node `id` off from its peers.
    pub fn isolate(&self, id: u64) {
        self.isolated.send_modify(|s| {
            s.insert(id);
        });
    }

    /// Reconnects every node.
    pub fn heal(&self) {
        self.isolated.send_modify(|s| s.clear());
    }

    async fn proxy(
        listener: tokio::net::TcpListener,
        node: u64,
        target: u16,
        isolated: tokio::sync::watch::Receiver<BTreeSet<u64>>,
    ) {
        loop {
            let Ok((mut inbound, peer)) = listener.accept().await else { continue };
            let from = match peer.ip() {
                std::net::IpAddr::V4(ip) if ip.octets()[3] > 10 => Some(ip.octets()[3] as u64 - 10),
                _ => None,
            };
            let blocked = move |set: &BTreeSet<u64>| set.contains(&node) || from.is_some_and(|f| set.contains(&f));
            if blocked(&isolated.borrow()) {
                continue;
            }
            let mut rx = isolated.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                let cut = async {
                    loop {
                        if rx.changed().await.is_err() || blocked(&rx.borrow()) {
                            return;
                        }
                    }
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut => {}
                }
            });
        }
    }
}

impl Drop for Partitions {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Cluster {
    /// A cluster whose nodes can be partitioned from each other (see [`Partitions`]).
    pub async fn start_partitionable(dir: &Path, voters: u64, extra: &[&str]) -> (Cluster, Partitions) {
        let (isolated, rx) = tokio::sync::watch::channel(BTreeSet::new());
        let mut tasks = Vec::new();
        let mut nodes = Vec::new();
        let mut peers = Vec::new();
        for id in 1..=voters {
            let (grpc, web) = (free_port(), free_port());
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind proxy");
            let proxy_port = listener.local_addr().expect("proxy address").port();
            tasks.push(tokio::spawn(Partitions::proxy(listener, id, grpc, rx.clone())));
            peers.push(format!("{id}=127.0.0.1:{proxy_port}"));
            let mut node_extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            node_extra.push(format!("--raft.source-address={}", peer_source_ip(id)));
            nodes.push(Node {
                id,
                grpc,
                web,
                dir: dir.join(format!("node-{id}")),
                proc: None,
                extra: node_extra,
                peers: String::new(),
            });
        }
        let peers = peers.join(",");
        for n in &mut nodes {
            n.peers = peers.clone();
            n.start(dir);
        }
        let c = Cluster { nodes, dir: dir.to_path_buf() };
        c.wait_leader(None, Duration::from_secs(30)).await;
        (c, Partitions { isolated, tasks })
    }
}

/// A tmpfs of `bytes` mounted on `dir` (unmounted on drop); None where
/// mounting is not permitted.
pub struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    pub fn mount(dir: &Path, bytes: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| SmallDisk(dir.to_path_buf()))
    }

    /// Fills the disk, leaving about `leave` bytes free.
    pub fn fill(&self, leave: u64) {
        let free = free_bytes(&self.0);
        let filler = vec![0u8; free.saturating_sub(leave) as usize];
        std::fs::write(self.0.join("filler"), filler).expect("fill");
    }

    pub fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("remove filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes free on the filesystem holding `p` (`df`).
pub fn free_bytes(p: &Path) -> u64 {
    let out = std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(p).output().expect("df");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df output")
}

/// A remote read of every series (`__name__=~".+"`) over `[lo, hi]`
/// answered with `kind`; returns the status and the body as text.
pub async fn remote_read_everything(
    client: &reqwest::Client,
    base: &str,
    lo: i64,
    hi: i64,
    kind: strata_proto::prometheus::read_request::ResponseType,
) -> (u16, String) {
    use prost::Message;
    use strata_proto::prometheus::{LabelMatcher, Query, ReadRequest, label_matcher};
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: lo,
            end_timestamp_ms: hi,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Re as i32,
                name: "__name__".into(),
                value: ".+".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![kind as i32],
    };
    let r = client
        .post(format!("{base}/api/v1/read"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(strata_proto::remote_write::compress(&req.encode_to_vec()))
        .send()
        .await
        .expect("remote read");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// All samples of series matching `__name__=name` on one node, keyed by series labels.
pub async fn read_series(grpc_addr: &str, tenant: &str, name: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let client = StoreClient::connect(format!("http://{grpc_addr}")).await.expect("connect StoreAPI");
    read_series_with(client, tenant, name).await.expect("Series")
}

/// [`read_series`] over TLS with `tls`; the gRPC error if the call fails
/// (a refused handshake included).
pub async fn read_series_tls(
    grpc_addr: &str,
    tls: std::sync::Arc<strata_server::tls::ClientTls>,
    tenant: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<(i64, f64)>>, tonic::Status> {
    let ep = tonic::transport::Endpoint::from_shared(format!("https://{grpc_addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20));
    let client = StoreClient::new(strata_server::grpc::channel(ep, Some(tls), None));
    read_series_with(client, tenant, name).await
}

/// StoreAPI `Info` over TLS with `tls`.
pub async fn store_info_tls(
    grpc_addr: &str,
    tls: std::sync::Arc<strata_server::tls::ClientTls>,
) -> Result<strata_proto::store::InfoResponse, tonic::Status> {
    let ep = tonic::transport::Endpoint::from_shared(format!("https://{grpc_addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20));
    let mut client = StoreClient::new(strata_server::grpc::channel(ep, Some(tls), None));
    Ok(client.info(strata_proto::store::InfoRequest {}).await?.into_inner())
}

async fn read_series_with(
    client: StoreClient<tonic::transport::Channel>,
    tenant: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<(i64, f64)>>, tonic::Status> {
    let mut client = client.max_decoding_message_size(256 << 20);
    let req = SeriesRequest {
        tenant: tenant.into(),
        min_time: i64::MIN,
        max_time: i64::MAX,
        matchers: vec![LabelMatcher {
            r#type: label_matcher::Type::Eq as i32,
            name: "__name__".into(),
            value: name.into(),
        }],
        skip_samples: false,
        accept_chunks: false,
        max_samples: 0,
    };
    let mut stream = client.series(req).await?.into_inner();
    let mut out = BTreeMap::new();
    while let Some(batch) = stream.message().await? {
        for s in batch.series {
            let key = s.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>().join(",");
            out.insert(key, s.samples.iter().map(|x| (x.timestamp, x.value)).collect());
        }
    }
    Ok(out)
}

/// Remote write 1.0 of one sample of `name{writer=w}`; returns the HTTP status.
pub async fn write_one(client: &reqwest::Client, url: &str, name: &str, t: i64, v: f64) -> Result<u16, reqwest::Error> {
    use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label { name: "__name__".into(), value: name.into() },
                Label { name: "writer".into(), value: "w".into() },
            ],
            samples: vec![Sample { value: v, timestamp: t }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let r = client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .timeout(Duration::from_secs(5))
        .body(strata_proto::remote_write::encode_v1(&req))
        .send()
        .await?;
    Ok(r.status().as_u16())
}

/// A `strata store` gateway over a local bucket.
pub struct StoreGateway {
    pub proc: Proc,
    pub grpc: u16,
    pub web: u16,
}

impl StoreGateway {
    pub async fn start(dir: &Path, objstore: &Path, extra: &[&str]) -> StoreGateway {
        let (grpc, web) = (free_port(), free_port());
        let mut args = vec![
            "store".to_string(),
            format!("--grpc.listen-address=127.0.0.1:{grpc}"),
            format!("--web.listen-address=127.0.0.1:{web}"),
            format!("--objstore.path={}", objstore.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::start(&format!("store-{grpc}"), &bin("strata"), &args, &[], dir);
        wait_ready(&format!("http://127.0.0.1:{web}/-/ready"), Duration::from_secs(30)).await;
        StoreGateway { proc, grpc, web }
    }

    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }

    pub fn web_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.web)
    }
}

/// A `strata querier` process over the given StoreAPI endpoints.
pub struct Querier {
    pub proc: Proc,
    pub port: u16,
}

impl Querier {
    pub async fn start(dir: &Path, endpoints: &[String], extra: &[&str]) -> Querier {
        let port = free_port();
        let mut args = vec!["querier".to_string(), format!("--web.listen-address=127.0.0.1:{port}")];
        for e in endpoints {
            args.push(format!("--endpoint={e}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::start(&format!("querier-{port}"), &bin("strata"), &args, &[], dir);
        wait_ready(&format!("http://127.0.0.1:{port}/-/ready"), Duration::from_secs(30)).await;
        Querier { proc, port }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A `strata query-frontend` in front of `queriers` (base URLs).
pub struct QueryFrontend {
    pub proc: Proc,
    pub port: u16,
}

impl QueryFrontend {
    pub async fn start(dir: &Path, queriers: &[String], extra: &[&str]) -> QueryFrontend {
        let port = free_port();
        let mut args = vec![
            "query-frontend".to_string(),
            format!("--web.listen-address=127.0.0.1:{port}"),
            format!("--query-frontend.downstream-url={}", queriers.join(",")),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::start(&format!("query-frontend-{port}"), &bin("strata"), &args, &[], dir);
        wait_ready(&format!("http://127.0.0.1:{port}/-/ready"), Duration::from_secs(30)).await;
        QueryFrontend { proc, port }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Remote write 1.0 of many series at once; panics unless the receiver answers 2xx.
/// Series as `(labels, samples)` for [`write_series`].
pub type SeriesData = Vec<(Vec<(String, String)>, Vec<(i64, f64)>)>;

pub async fn write_series(client: &reqwest::Client, url: &str, series: &SeriesData) {
    let (status, body) = remote_write(client, url, "anonymous", series).await;
    assert!((200..300).contains(&status), "remote write to {url}: {status} {body}");
}

/// Remote write 1.0 for `tenant` (`X-Scope-OrgID`); the status and body.
pub async fn remote_write(client: &reqwest::Client, url: &str, tenant: &str, series: &SeriesData) -> (u16, String) {
    let r = client
        .post(url)
        .header("X-Scope-OrgID", tenant)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .timeout(Duration::from_secs(30))
        .body(write_request_body(series))
        .send()
        .await
        .expect("remote write");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// A snappy-compressed remote write 1.0 body of `series`.
pub fn write_request_body(series: &SeriesData) -> Vec<u8> {
    use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
    let req = WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| TimeSeries {
                labels: {
                    let mut l: Vec<Label> =
                        labels.iter().map(|(n, v)| Label { name: n.clone(), value: v.clone() }).collect();
                    l.sort_by(|a, b| a.name.cmp(&b.name));
                    l
                },
                samples: samples.iter().map(|&(t, v)| Sample { value: v, timestamp: t }).collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    strata_proto::remote_write::encode_v1(&req)
}

pub fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// `minutes` of 15 s samples of 6 `requests_total` series (env × code)
/// starting at `t0`: the block tests' data.
pub fn requests_total_data(t0: i64, minutes: i64) -> SeriesData {
    let mut out = Vec::new();
    for env in ["prod", "dev", "qa"] {
        for code in ["200", "500"] {
            let samples = (0..minutes * 4)
                .map(|k| {
                    let t = t0 + k * 15_000;
                    (t, (t / 15_000 % 1000) as f64 * if code == "500" { 0.1 } else { 3.0 } + env.len() as f64)
                })
                .collect();
            out.push((labels(&[("__name__", "requests_total"), ("env", env), ("code", code)]), samples));
        }
    }
    out
}

/// Block directories (those with a `meta.json`) in a filesystem bucket, sorted.
pub fn objstore_blocks(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(tenants) = std::fs::read_dir(dir) {
        for t in tenants.flatten() {
            if let Ok(blocks) = std::fs::read_dir(t.path()) {
                for b in blocks.flatten() {
                    if b.path().join("meta.json").exists() {
                        out.push(b.path());
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// `POST /api/v1/sql` for the anonymous tenant: status and JSON body.
pub async fn sql(client: &reqwest::Client, base: &str, query: &str) -> (u16, serde_json::Value) {
    let r = client.post(format!("{base}/api/v1/sql")).body(query.to_string()).send().await.expect("sql");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Per `env`: (samples, sum of values) of `requests_total_data` — what SQL
/// over the block must find.
pub fn requests_total_by_env(data: &SeriesData) -> Vec<(String, u64, f64)> {
    let mut out: Vec<(String, u64, f64)> = Vec::new();
    for (labels, samples) in data {
        let env = labels.iter().find(|(n, _)| n == "env").map(|(_, v)| v.clone()).unwrap_or_default();
        let sum: f64 = samples.iter().map(|s| s.1).sum();
        match out.iter_mut().find(|e| e.0 == env) {
            Some(e) => {
                e.1 += samples.len() as u64;
                e.2 += sum;
            }
            None => out.push((env, samples.len() as u64, sum)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The SQL the block tests run: samples and sum per `env` of `requests_total`.
pub const SQL_BY_ENV: &str = "SELECT s.l_env, count(*) AS n, sum(p.value) AS total \
     FROM samples p JOIN series s ON p.block = s.block AND p.series_ref = s.series_ref \
     WHERE s.\"__name__\" = 'requests_total' GROUP BY s.l_env ORDER BY s.l_env";

/// Checks a `SQL_BY_ENV` answer against `requests_total_by_env`.
pub fn assert_sql_by_env(v: &serde_json::Value, want: &[(String, u64, f64)]) {
    let rows = v["data"]["rows"].as_array().unwrap_or_else(|| panic!("no rows: {v}"));
    assert_eq!(rows.len(), want.len(), "{v}");
    for (row, (env, n, total)) in rows.iter().zip(want) {
        assert_eq!(row[0].as_str(), Some(env.as_str()), "{v}");
        assert_eq!(row[1].as_u64(), Some(*n), "{v}");
        let got = row[2].as_f64().unwrap_or(f64::NAN);
        assert!((got - total).abs() <= 1e-9 * total.abs().max(1.0), "{env}: sum {got} != {total}");
    }
}

/// `/api/v1/query` at `t_ms` for `tenant`: the whole JSON answer.
pub async fn instant_query(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    q: &str,
    t_ms: i64,
) -> serde_json::Value {
    let r = client
        .get(format!("{base}/api/v1/query"))
        .header("X-Scope-OrgID", tenant)
        .query(&[("query", q.to_string()), ("time", format!("{}", t_ms as f64 / 1000.0))])
        .send()
        .await
        .expect("query");
    r.json().await.expect("json")
}

/// What the block tests compare before and after a flush.
/// The aggregations (sum, count, the max inside topk, min) are computed by the store gateways (aggregation push-down)
/// for the steps their blocks cover.
pub const BLOCK_QUERIES: [&str; 6] = [
    "requests_total",
    "sum by (env) (rate(requests_total[2m]))",
    "max_over_time(requests_total[5m])",
    "count by (code) (requests_total offset 1m)",
    "topk(1, max by (env) (increase(requests_total[3m])))",
    "min(requests_total)",
];

/// Waits until the querier's view of its sources (`/api/v1/stores`, from
/// `Info` refreshed every 5 s) has `sources` entries, the stores' blocks
/// reaching `block_until` and every ingester holding nothing older than
/// `head_from`: from then on it pushes aggregations over the blocks down.
pub async fn wait_querier_sees_blocks(
    client: &reqwest::Client,
    querier: &str,
    sources: usize,
    block_until: i64,
    head_from: i64,
) {
    wait_for(Duration::from_secs(20), "the querier to see the blocks in the store only", || async {
        let v: serde_json::Value =
            client.get(format!("{querier}/api/v1/stores")).send().await.ok()?.json().await.ok()?;
        let list = v["data"].as_array()?;
        let ready = list.iter().all(|s| match s["component"].as_str() {
            Some("store") => s["maxTime"].as_i64().is_some_and(|t| t >= block_until),
            _ => s["minTime"].as_i64().is_some_and(|t| t >= head_from),
        });
        (ready && list.len() == sources).then_some(())
    })
    .await;
}

/// The value of a counter or gauge line (`name{labels} value`) on a
/// `/metrics` page, 0 when absent.
pub async fn metric_value(client: &reqwest::Client, url: &str, series: &str) -> f64 {
    let page = client.get(url).send().await.unwrap().text().await.unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `BLOCK_QUERIES` over `[start_ms, end_ms]`; each must have data.
pub async fn block_query_results(
    client: &reqwest::Client,
    base: &str,
    start_ms: i64,
    end_ms: i64,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for q in BLOCK_QUERIES {
        let r = query_range(client, base, q, start_ms, end_ms).await;
        assert!(r.as_array().is_some_and(|a| !a.is_empty()), "{q}: no data: {r}");
        out.push(r);
    }
    out
}

/// `/api/v1/query_range` with a 30 s step; the `data.result` (asserts 200).
pub async fn query_range(
    client: &reqwest::Client,
    base: &str,
    q: &str,
    start_ms: i64,
    end_ms: i64,
) -> serde_json::Value {
    let r = client
        .get(format!("{base}/api/v1/query_range"))
        .query(&[
            ("query", q.to_string()),
            ("start", format!("{}", start_ms as f64 / 1000.0)),
            ("end", format!("{}", end_ms as f64 / 1000.0)),
            ("step", "30".to_string()),
        ])
        .send()
        .await
        .expect("query_range");
    assert_eq!(r.status(), 200, "query_range {q}");
    let v: serde_json::Value = r.json().await.expect("json");
    v["data"]["result"].clone()
}

/// An S3-compatible server on loopback for the object-store suite: moto's
/// standalone server (PyPI `moto[server]`, installed by `.ci/run`, which
/// speaks the S3 REST API — SigV4-signed requests, ListObjectsV2, multipart —
/// in memory), or MinIO in a container started through testcontainers
/// wherever a Docker engine runs.
pub struct S3Server {
    backend: S3Backend,
    pub port: u16,
    access_key: &'static str,
    secret_key: &'static str,
}

enum S3Backend {
    Moto { proc: Option<Proc>, dir: PathBuf },
    Container(Box<ContainerAsync<GenericImage>>),
}

/// The MinIO release the container suite runs (pinned: the suite asserts
/// exact object listings).
pub const MINIO_IMAGE: (&str, &str) = ("minio/minio", "RELEASE.2025-04-22T22-12-26Z");

/// Where a Docker engine would answer: `DOCKER_HOST` (unix sockets only,
/// as testcontainers defaults to) or /var/run/docker.sock.
fn docker_engine_socket() -> Option<PathBuf> {
    let path = match std::env::var("DOCKER_HOST") {
        Ok(h) => PathBuf::from(h.strip_prefix("unix://")?),
        Err(_) => PathBuf::from("/var/run/docker.sock"),
    };
    std::os::unix::net::UnixStream::connect(&path).ok().map(|_| path)
}

impl S3Server {
    /// moto's server; `None` (test skipped) when moto is not installed,
    /// except under `CI=true`, where that is a failure.
    pub async fn start(dir: &Path) -> Option<S3Server> {
        let found = std::process::Command::new("python3")
            .args(["-c", "import moto.server"])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !required("moto's S3 server (pip install 'moto[server]')", found) {
            return None;
        }
        let mut s = S3Server {
            backend: S3Backend::Moto { proc: None, dir: dir.to_path_buf() },
            port: free_port(),
            access_key: "test",
            secret_key: "test",
        };
        s.restart().await;
        Some(s)
    }

    /// MinIO ([`MINIO_IMAGE`]) in a container via testcontainers, its S3
    /// port published on a fixed loopback port so that a stopped and
    /// restarted container comes back at the same endpoint. `None` (test
    /// skipped, with the reason on stderr) when no Docker engine answers or
    /// the image cannot be pulled — unless `STRATA_REQUIRE_MINIO=1`, which
    /// turns both into failures. Any other container failure panics.
    pub async fn start_minio() -> Option<S3Server> {
        let require = std::env::var("STRATA_REQUIRE_MINIO").is_ok_and(|v| v == "1");
        let skip = |why: String| {
            assert!(!require, "STRATA_REQUIRE_MINIO=1 but {why}");
            eprintln!("SKIPPED: the MinIO suite needs {why} (set STRATA_REQUIRE_MINIO=1 to make this a failure)");
            None
        };
        if docker_engine_socket().is_none() {
            return skip("a Docker engine (none answers at DOCKER_HOST or /var/run/docker.sock)".into());
        }
        let port = free_port();
        let (name, tag) = MINIO_IMAGE;
        let image = GenericImage::new(name, tag)
            .with_exposed_port(9000.tcp())
            .with_cmd(["server", "/data"])
            .with_env_var("MINIO_ROOT_USER", "strata-test")
            .with_env_var("MINIO_ROOT_PASSWORD", "strata-test-secret")
            .with_mapped_port(port, 9000.tcp())
            .with_startup_timeout(Duration::from_secs(120));
        let container = match image.start().await {
            Ok(c) => c,
            Err(TestcontainersError::Client(e @ ClientError::PullImage { .. })) => {
                return skip(format!("the image {name}:{tag}, which could not be pulled: {e}"));
            }
            Err(e) => panic!("starting {name}:{tag}: {e}"),
        };
        let s = S3Server {
            backend: S3Backend::Container(Box::new(container)),
            port,
            access_key: "strata-test",
            secret_key: "strata-test-secret",
        };
        // Readiness is the S3 port answering (polled), not a log line.
        s.wait_listening().await;
        Some(s)
    }

    /// Which server this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            S3Backend::Moto { .. } => "moto",
            S3Backend::Container(_) => "minio",
        }
    }

    /// Starts the server again on the same port: moto comes back empty (it
    /// keeps objects in memory), the container with its data.
    pub async fn restart(&mut self) {
        match &mut self.backend {
            S3Backend::Moto { proc, dir } => {
                let args = ["-m", "moto.server", "-H", "127.0.0.1", "-p", &self.port.to_string()].map(String::from);
                *proc = Some(Proc::start(&format!("s3-{}", self.port), Path::new("python3"), &args, &[], dir));
            }
            S3Backend::Container(c) => c.start().await.expect("restart the S3 container"),
        }
        self.wait_listening().await;
    }

    async fn wait_listening(&self) {
        wait_for(Duration::from_secs(60), "the S3 server to listen", || async {
            reqwest::get(self.endpoint()).await.ok().map(|_| ())
        })
        .await;
    }

    /// An outage: moto is killed with SIGKILL, the container is stopped
    /// without a grace period (and kept, so that `restart` brings it back).
    pub async fn stop(&mut self) {
        match &mut self.backend {
            S3Backend::Moto { proc, .. } => {
                if let Some(mut p) = proc.take() {
                    p.kill9();
                }
            }
            S3Backend::Container(c) => c.stop_with_timeout(Some(0)).await.expect("stop the S3 container"),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (a SigV4-signed `PUT /bucket`, which every
    /// S3-compatible server accepts); one that already exists is fine.
    pub async fn create_bucket(&self, bucket: &str) {
        let path = format!("/{bucket}");
        let host = format!("127.0.0.1:{}", self.port);
        let headers = sigv4_headers("PUT", &host, &path, self.access_key, self.secret_key, SystemTime::now());
        let mut req = reqwest::Client::new().put(format!("{}{path}", self.endpoint()));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.expect("create bucket");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(
            // MinIO answers BucketAlreadyOwnedByYou, s3s BucketAlreadyExists.
            status.is_success() || body.contains("BucketAlreadyOwnedByYou") || body.contains("BucketAlreadyExists"),
            "create bucket {bucket} on {}: {status} {body}",
            self.kind()
        );
    }

    /// `strata` flags for a bucket on this server.
    pub fn objstore_args(&self, bucket: &str, prefix: &str) -> Vec<String> {
        vec![
            "--objstore.type=s3".into(),
            format!("--objstore.s3.bucket={bucket}"),
            format!("--objstore.s3.endpoint={}", self.endpoint()),
            format!("--objstore.s3.prefix={prefix}"),
            format!("--objstore.s3.access-key-id={}", self.access_key),
            // Secrets are refused on the command line: through a config file.
            format!("--config.file={}", self.secret_file().display()),
        ]
    }

    /// A `--config.file` holding the secret key.
    fn secret_file(&self) -> PathBuf {
        let p = std::env::temp_dir().join(format!("strata-e2e-s3-{}-{}.yml", std::process::id(), self.port));
        std::fs::write(&p, format!("objstore.s3.secret-access-key: {:?}\n", self.secret_key)).expect("secret file");
        p
    }

    fn client(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(self.access_key)
            .with_secret_access_key(self.secret_key)
            .build()
            .expect("S3 client")
    }

    /// Object names under `prefix` (a signed ListObjectsV2), sorted.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let prefix = (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix));
        let store = self.client(bucket);
        let listed: Vec<object_store::ObjectMeta> = object_store::ObjectStore::list(&store, prefix.as_ref())
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("list {bucket}: {e}"));
        let mut keys: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
        keys.sort();
        keys
    }

    /// An object's bytes, read with a SigV4-signed GET (the servers refuse
    /// anonymous reads).
    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let store = self.client(bucket);
        let got = store.get(&object_store::path::Path::from(key)).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
        got.bytes().await.unwrap_or_else(|e| panic!("read {key}: {e}")).to_vec()
    }
}

/// AWS Signature Version 4 headers for a request without a body to the S3
/// service in us-east-1 (only bucket creation needs it: object_store signs
/// everything else but cannot create buckets).
pub fn sigv4_headers(
    method: &str,
    host: &str,
    path: &str,
    access_key: &str,
    secret_key: &str,
    now: SystemTime,
) -> Vec<(&'static str, String)> {
    use ring::{digest, hmac};
    let secs = now.duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let tod = secs % 86_400;
    let date = format!("{y:04}{m:02}{d:02}");
    let amz_date = format!("{date}T{:02}{:02}{:02}Z", tod / 3600, tod / 60 % 60, tod % 60);
    let empty_sha = hex::encode(digest::digest(&digest::SHA256, b""));
    let signed_headers = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{empty_sha}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{empty_sha}"
    );
    let scope = format!("{date}/us-east-1/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
    );
    let mac = |key: &[u8], msg: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg.as_bytes());
    let k_date = mac(format!("AWS4{secret_key}").as_bytes(), &date);
    let k_region = mac(k_date.as_ref(), "us-east-1");
    let k_service = mac(k_region.as_ref(), "s3");
    let k_signing = mac(k_service.as_ref(), "aws4_request");
    let signature = hex::encode(mac(k_signing.as_ref(), &to_sign));
    vec![
        ("x-amz-date", amz_date),
        ("x-amz-content-sha256", empty_sha),
        (
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
            ),
        ),
    ]
}

/// (year, month, day) of a day number since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `strata_*` metric names used in the rules' expressions.
pub fn metrics_in_rules(rules_file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(rules_file).expect("rules file");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules yaml");
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("strata_") {
                let tail = &rest[i..];
                let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    names
}

/// docs/metrics.md's tables: metric → (type, binaries serving it, labelled).
pub fn documented_metrics(metrics_md: &Path) -> BTreeMap<String, (String, BTreeSet<String>, bool)> {
    let text = std::fs::read_to_string(metrics_md).expect("docs/metrics.md");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert!(cells.len() >= 5, "docs/metrics.md: row with fewer than 5 cells: {line}");
        let name = cells[0].trim_matches('`').split('{').next().expect("name").to_string();
        let bins: BTreeSet<String> = cells[3].split(',').map(|b| b.trim().to_string()).collect();
        let before = out.insert(name.clone(), (cells[1].to_string(), bins, cells[2] != "—"));
        assert!(before.is_none(), "docs/metrics.md lists {name} twice");
    }
    assert!(out.len() > 50, "docs/metrics.md lists only {} metrics", out.len());
    out
}

/// Runs `promtool ARGS` in `dir` (rule files are named relative to it);
/// panics with promtool's output unless it succeeds.
pub fn promtool_in(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("promtool").args(args).current_dir(dir).output().expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
    }

    /// AWS' documentation example credentials and date; the expected
    /// header was computed with Python's hmac/hashlib from the SigV4
    /// specification. (That servers accept it is shown by the S3 suites:
    /// MinIO and s3s verify signatures.)
    #[test]
    fn sigv4_signature_is_stable() {
        let t = UNIX_EPOCH + Duration::from_secs(1_369_353_600); // 2013-05-24T00:00:00Z
        let h = sigv4_headers(
            "PUT",
            "examplebucket.s3.amazonaws.com",
            "/",
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            t,
        );
        assert_eq!(h[0], ("x-amz-date", "20130524T000000Z".to_string()));
        assert_eq!(h[1].1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(
            h[2].1,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=14b773dd81c5f464da5e186db3e39a28ec75fa635deabd8c6f125ea95c1930d1"
        );
    }
}
