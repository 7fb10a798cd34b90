//! Helpers for control-plane multi-process tests: a cluster of `strata
//! ingester` processes on loopback, their status, and StoreAPI reads.
//! Process handling comes from the data plane's harness (`dataplane-e2e`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use dataplane_e2e::*;
use strata_proto::prometheus::{LabelMatcher, label_matcher};
use strata_proto::store::SeriesRequest;
use strata_proto::store::store_client::StoreClient;

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
        self.proc = Some(Proc::start(&format!("ingester-{}", self.id), &bin("strata"), &args, &[], log_dir));
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
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
            n.start(dir);
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

/// All samples of series matching `__name__=name` on one node, keyed by series labels.
pub async fn read_series(grpc_addr: &str, tenant: &str, name: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut client = StoreClient::connect(format!("http://{grpc_addr}")).await.expect("connect StoreAPI");
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
    };
    let mut stream = client.series(req).await.expect("Series").into_inner();
    let mut out = BTreeMap::new();
    while let Some(batch) = stream.message().await.expect("stream") {
        for s in batch.series {
            let key = s.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>().join(",");
            out.insert(key, s.samples.iter().map(|x| (x.timestamp, x.value)).collect());
        }
    }
    out
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

/// Remote write 1.0 of many series at once; panics unless the receiver answers 2xx.
/// Series as `(labels, samples)` for [`write_series`].
pub type SeriesData = Vec<(Vec<(String, String)>, Vec<(i64, f64)>)>;

pub async fn write_series(client: &reqwest::Client, url: &str, series: &SeriesData) {
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
    let r = client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .timeout(Duration::from_secs(30))
        .body(strata_proto::remote_write::encode_v1(&req))
        .send()
        .await
        .expect("remote write");
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "remote write to {url}: {status} {body}");
}
