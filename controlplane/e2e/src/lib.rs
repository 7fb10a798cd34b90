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
    let (status, body) = remote_write(client, url, "anonymous", series).await;
    assert!((200..300).contains(&status), "remote write to {url}: {status} {body}");
}

/// Remote write 1.0 for `tenant` (`X-Scope-OrgID`); the status and body.
pub async fn remote_write(client: &reqwest::Client, url: &str, tenant: &str, series: &SeriesData) -> (u16, String) {
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
        .header("X-Scope-OrgID", tenant)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .timeout(Duration::from_secs(30))
        .body(strata_proto::remote_write::encode_v1(&req))
        .send()
        .await
        .expect("remote write");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
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

/// An S3-compatible server on loopback: moto's standalone server (PyPI
/// `moto[server]`, installed by `.ci/run`), which speaks the S3 REST API
/// (SigV4-signed requests, ListObjectsV2, multipart) in memory.
pub struct S3Server {
    pub proc: Option<Proc>,
    pub port: u16,
    dir: PathBuf,
}

impl S3Server {
    /// `None` (test skipped) when moto is not installed, except under
    /// `CI=true`, where that is a failure.
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
        let mut s = S3Server { proc: None, port: free_port(), dir: dir.to_path_buf() };
        s.restart().await;
        Some(s)
    }

    /// Starts the server (again) on the same port; an in-memory server
    /// comes back empty.
    pub async fn restart(&mut self) {
        let args = ["-m", "moto.server", "-H", "127.0.0.1", "-p", &self.port.to_string()].map(String::from);
        self.proc = Some(Proc::start(&format!("s3-{}", self.port), Path::new("python3"), &args, &[], &self.dir));
        wait_for(Duration::from_secs(30), "the S3 server to listen", || async {
            reqwest::get(self.endpoint()).await.ok().map(|_| ())
        })
        .await;
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let r =
            reqwest::Client::new().put(format!("{}/{bucket}", self.endpoint())).send().await.expect("create bucket");
        assert!(r.status().is_success(), "create bucket {bucket}: {}", r.status());
    }

    /// `strata` flags for a bucket on this server.
    pub fn objstore_args(&self, bucket: &str, prefix: &str) -> Vec<String> {
        vec![
            "--objstore.type=s3".into(),
            format!("--objstore.s3.bucket={bucket}"),
            format!("--objstore.s3.endpoint={}", self.endpoint()),
            format!("--objstore.s3.prefix={prefix}"),
            "--objstore.s3.access-key-id=test".into(),
            "--objstore.s3.secret-access-key=test".into(),
        ]
    }

    /// Object names under `prefix` (ListObjectsV2), sorted.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let r = reqwest::Client::new()
            .get(format!("{}/{bucket}", self.endpoint()))
            .query(&[("list-type", "2"), ("prefix", prefix)])
            .send()
            .await
            .expect("list objects");
        let xml = r.text().await.unwrap_or_default();
        let mut keys: Vec<String> =
            xml.split("<Key>").skip(1).filter_map(|k| k.split("</Key>").next()).map(String::from).collect();
        keys.sort();
        keys
    }

    /// An object's bytes, read with a SigV4-signed GET (the server refuses
    /// anonymous reads).
    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .expect("S3 client");
        let got = store.get(&object_store::path::Path::from(key)).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
        got.bytes().await.unwrap_or_else(|e| panic!("read {key}: {e}")).to_vec()
    }
}
