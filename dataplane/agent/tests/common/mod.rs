//! In-process harness: a real agent (`strata_agent::run`) on loopback ports
//! and a scriptable remote write receiver that decodes what it gets.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use strata_agent::config::{AgentConfig, EndpointConfig, Protocol};
use strata_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use strata_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use strata_proto::otlp::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric::Data,
    number_data_point,
};
use strata_proto::otlp::resource::v1::Resource;
use strata_proto::prometheus::WriteRequest;
use strata_proto::remote_write as rw;
use tokio::sync::oneshot;

/// How the fake receiver answers.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mode {
    /// 1.0 only, like Prometheus 2.42: decodes any body as 1.0 and says 204.
    V1Only,
    /// 1.0 only but checks Content-Type: 415 for 2.0.
    V1Strict,
    /// Speaks 2.0 and returns the -Written headers.
    V2,
    /// Answers `status` for the first `n` requests, then behaves like V1Only.
    FailFirst(u16, usize),
}

#[derive(Debug, Clone)]
pub struct Captured {
    pub content_type: String,
    pub version: String,
    pub request: WriteRequest,
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Captured>>>,
    pub calls: Arc<Mutex<usize>>,
}

impl Receiver {
    pub async fn start(mode: Mode) -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(Mutex::new(0usize));
        let (g, c) = (got.clone(), calls.clone());
        let app = axum::Router::new().route(
            "/api/v1/write",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (g, c) = (g.clone(), c.clone());
                async move { handle(mode, &g, &c, headers, body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, got, calls }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    pub fn series(&self) -> Vec<strata_proto::prometheus::TimeSeries> {
        self.got.lock().unwrap().iter().flat_map(|c| c.request.timeseries.clone()).collect()
    }

    pub fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

fn handle(mode: Mode, got: &Mutex<Vec<Captured>>, calls: &Mutex<usize>, headers: HeaderMap, body: Bytes) -> Response {
    let n = {
        let mut c = calls.lock().unwrap();
        *c += 1;
        *c
    };
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let version = headers.get(rw::VERSION_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if let Mode::FailFirst(status, k) = mode
        && n <= k
    {
        return (StatusCode::from_u16(status).unwrap(), format!("scripted failure {n}")).into_response();
    }
    let is_v2 = ct == rw::CONTENT_TYPE_V2;
    match mode {
        Mode::V1Strict if is_v2 => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "only 1.0").into_response(),
        Mode::V2 if is_v2 => {
            let req = rw::v2_to_v1(&rw::decode_v2(&body, 64 << 20).unwrap());
            let samples: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
            got.lock().unwrap().push(Captured { content_type: ct, version, request: req });
            return (
                StatusCode::NO_CONTENT,
                [
                    (rw::SAMPLES_WRITTEN_HEADER, samples.to_string()),
                    (rw::HISTOGRAMS_WRITTEN_HEADER, "0".into()),
                    (rw::EXEMPLARS_WRITTEN_HEADER, "0".into()),
                ],
            )
                .into_response();
        }
        _ => {}
    }
    // 1.0 path (a 1.0-only receiver decodes whatever it gets as 1.0).
    match rw::decode_v1(&body, 64 << 20) {
        Ok(req) => {
            got.lock().unwrap().push(Captured { content_type: ct, version, request: req });
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A running in-process agent; stops when dropped.
pub struct TestAgent {
    pub cfg: AgentConfig,
    stop: Option<oneshot::Sender<()>>,
    pub _queue_dir: tempfile::TempDir,
}

impl TestAgent {
    pub async fn start(url: &str, protocol: Protocol, tweak: impl FnOnce(&mut AgentConfig)) -> TestAgent {
        let qdir = tempfile::tempdir().unwrap();
        let mut cfg = AgentConfig::default();
        cfg.otlp.grpc_address = free_addr();
        cfg.otlp.http_address = free_addr();
        cfg.web.listen_address = free_addr();
        cfg.queue.path = qdir.path().to_path_buf();
        cfg.batch.timeout = Duration::from_millis(20);
        cfg.remote_write.min_backoff = Duration::from_millis(20);
        cfg.remote_write.max_backoff = Duration::from_millis(200);
        cfg.remote_write.endpoints = vec![EndpointConfig { url: url.to_string(), protocol, ..Default::default() }];
        cfg.labels.insert("environment".into(), "test".into());
        cfg.labels.insert("data_plane_id".into(), "dp-test".into());
        // The receivers count exactly what the tests send.
        cfg.self_monitoring.interval = Duration::ZERO;
        tweak(&mut cfg);
        let (tx, rx) = oneshot::channel();
        let run_cfg = cfg.clone();
        tokio::spawn(async move {
            strata_agent::run(run_cfg, async {
                let _ = rx.await;
            })
            .await
            .unwrap()
        });
        let web = format!("http://{}/-/ready", cfg.web.listen_address);
        for _ in 0..100 {
            if reqwest::get(&web).await.map(|r| r.status().is_success()).unwrap_or(false) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        TestAgent { cfg, stop: Some(tx), _queue_dir: qdir }
    }

    pub fn otlp_http(&self) -> String {
        format!("http://{}/v1/metrics", self.cfg.otlp.http_address)
    }

    pub fn otlp_grpc(&self) -> String {
        format!("http://{}", self.cfg.otlp.grpc_address)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.cfg.web.listen_address)).await.unwrap().text().await.unwrap()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// A request with one cumulative counter per entry of `values`.
pub fn counter_request(name: &str, values: &[f64]) -> ExportMetricsServiceRequest {
    let t = now_ns();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![kv("service.name", "svc")], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                scope: None,
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(Data::Sum(Sum {
                        data_points: values
                            .iter()
                            .enumerate()
                            .map(|(i, v)| NumberDataPoint {
                                attributes: vec![kv("idx", &i.to_string())],
                                time_unix_nano: t,
                                value: Some(number_data_point::Value::AsDouble(*v)),
                                ..Default::default()
                            })
                            .collect(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
