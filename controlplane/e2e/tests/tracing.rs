//! Traces across processes: with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at
//! a tiny OTLP/HTTP receiver (this test's), one remote write sent to a
//! follower and one query produce connected spans — follower → leader
//! (forwarded write) and querier → ingesters and store gateway (StoreAPI
//! Series) — each hop's server span the child of the caller's client span.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controlplane_e2e::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[derive(Clone, Debug)]
struct Span {
    /// `service.name` / `service.instance.id` of the exporting process.
    service: String,
    instance: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    name: String,
}

/// An OTLP/HTTP receiver: `POST /v1/traces` bodies decoded into spans.
async fn otlp_receiver() -> (u16, Arc<Mutex<Vec<Span>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let out = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { return };
            let out = out.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    let mut path = String::new();
                    let mut head = String::new();
                    loop {
                        line.clear();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                        if path.is_empty() {
                            path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if conn.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    assert_eq!(path, "/v1/traces", "the exporter posts to /v1/traces");
                    let req = ExportTraceServiceRequest::decode(body.as_slice())
                        .unwrap_or_else(|e| panic!("OTLP protobuf: {e}; request head:\n{head}"));
                    let mut got = Vec::new();
                    for rs in req.resource_spans {
                        let attr = |key: &str| {
                            rs.resource
                                .as_ref()
                                .and_then(|r| r.attributes.iter().find(|a| a.key == key))
                                .and_then(|a| a.value.as_ref())
                                .and_then(|v| match &v.value {
                                    Some(Value::StringValue(s)) => Some(s.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default()
                        };
                        let (service, instance) = (attr("service.name"), attr("service.instance.id"));
                        for ss in rs.scope_spans {
                            for s in ss.spans {
                                got.push(Span {
                                    service: service.clone(),
                                    instance: instance.clone(),
                                    trace: s.trace_id,
                                    id: s.span_id,
                                    parent: s.parent_span_id,
                                    name: s.name,
                                });
                            }
                        }
                    }
                    out.lock().expect("spans").extend(got);
                    let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                    if conn.get_mut().write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, spans)
}

fn env(port: u16, instance: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("OTEL_RESOURCE_ATTRIBUTES", format!("service.instance.id={instance}")),
    ]
}

/// The span named `name` on `instance` that is a child of a span in `of`.
fn child<'a>(spans: &'a [Span], name: &str, instance: &str, of: &Span) -> Option<&'a Span> {
    spans.iter().find(|s| s.name == name && s.instance == instance && s.trace == of.trace && s.parent == of.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_and_a_query_produce_connected_spans_across_processes() {
    let dir = test_dir();
    let (port, spans) = otlp_receiver().await;
    let mut cluster = Cluster::start_with_env(dir.path(), 3, &[], |id| env(port, &format!("ingester-{id}"))).await;
    let leader = cluster.wait_leader(None, Duration::from_secs(30)).await;
    let follower = cluster.nodes.iter().map(|n| n.id).find(|id| *id != leader).expect("a follower");
    let (leader_i, follower_i) = (format!("ingester-{leader}"), format!("ingester-{follower}"));
    let client = reqwest::Client::new();

    // The write: sent to a follower, which forwards it to the leader.
    let t = now_ms();
    let status = write_one(&client, &cluster.node(follower).write_url(), "traced_metric", t, 4.0).await.expect("write");
    assert!((200..300).contains(&status), "write: {status}");
    let (http, forward, forwarded, commit) = wait_for(Duration::from_secs(30), "the write's spans", || {
        let spans = spans.lock().expect("spans").clone();
        let (follower_i, leader_i) = (follower_i.clone(), leader_i.clone());
        async move {
            let http = spans.iter().find(|s| s.name == "POST /api/v1/write" && s.instance == follower_i)?;
            let forward = child(&spans, "forward to leader", &follower_i, http)?;
            let forwarded = child(&spans, "strata.raft.Raft/ForwardWrite", &leader_i, forward)?;
            let commit = child(&spans, "raft commit", &leader_i, forwarded)?;
            Some((http.clone(), forward.clone(), forwarded.clone(), commit.clone()))
        }
    })
    .await;
    assert_eq!(http.service, "strata-ingester");
    assert!(http.parent.is_empty(), "the write's HTTP span is the trace's root");
    assert_eq!([&forward.trace, &forwarded.trace, &commit.trace], [&http.trace; 3]);

    // Into a block the store gateway serves, so the query reads both.
    let (status, body) = cluster.node(leader).flush(&client).await;
    assert_eq!(status, 200, "flush: {body}");
    let objstore = dir.path().join("objstore");
    let (sgrpc, sweb) = (free_port(), free_port());
    let _store = Proc::start(
        "store",
        &bin("strata"),
        &[
            "store".into(),
            format!("--grpc.listen-address=127.0.0.1:{sgrpc}"),
            format!("--web.listen-address=127.0.0.1:{sweb}"),
            format!("--objstore.path={}", objstore.display()),
        ],
        &env(port, "store"),
        dir.path(),
    );
    wait_ready(&format!("http://127.0.0.1:{sweb}/-/ready"), Duration::from_secs(30)).await;
    let qport = free_port();
    let mut args = vec!["querier".to_string(), format!("--web.listen-address=127.0.0.1:{qport}")];
    args.extend(cluster.nodes.iter().map(|n| format!("--endpoint={}", n.grpc_addr())));
    args.push(format!("--endpoint=127.0.0.1:{sgrpc}"));
    let _querier = Proc::start("querier", &bin("strata"), &args, &env(port, "querier"), dir.path());
    let base = format!("http://127.0.0.1:{qport}");
    wait_ready(&format!("{base}/-/ready"), Duration::from_secs(30)).await;

    // The query: fans out to the store gateway and an ingester per shard.
    let q = format!("{base}/api/v1/query?query=traced_metric[10m]&time={}", (t + 1000) as f64 / 1000.0);
    wait_for(Duration::from_secs(30), "the query answers the written sample", || {
        let (c, q) = (client.clone(), q.clone());
        async move {
            let body: serde_json::Value = c.get(&q).send().await.ok()?.json().await.ok()?;
            (body["data"]["result"][0]["values"][0][1] == "4").then_some(())
        }
    })
    .await;
    let (query, phases, served) = wait_for(Duration::from_secs(30), "the query's spans", || {
        let spans = spans.lock().expect("spans").clone();
        async move {
            // The last query's trace: its store calls reached the store gateway.
            spans.iter().rev().filter(|s| s.name == "GET /api/v1/query" && s.instance == "querier").find_map(|q| {
                let in_trace: Vec<&Span> = spans.iter().filter(|s| s.trace == q.trace).collect();
                let phases: BTreeSet<String> = in_trace.iter().map(|s| s.name.clone()).collect();
                let mut served = BTreeSet::new();
                for call in in_trace.iter().filter(|s| s.name == "store call" && s.instance == "querier") {
                    for s in in_trace.iter().filter(|s| s.parent == call.id && s.name == "strata.store.Store/Series") {
                        served.insert(s.instance.clone());
                    }
                }
                served.contains("store").then(|| (q.clone(), phases, served))
            })
        }
    })
    .await;
    assert_eq!(query.service, "strata-querier");
    for phase in ["plan", "fetch", "store call", "merge", "evaluate", "strata.store.Store/Series"] {
        assert!(phases.contains(phase), "no {phase:?} span in the query's trace: {phases:?}");
    }
    let services: BTreeSet<String> =
        spans.lock().expect("spans").iter().filter(|s| s.trace == query.trace).map(|s| s.service.clone()).collect();
    assert!(services.contains("strata-store"), "{services:?}");
    eprintln!(
        "query trace served by {served:?} across {services:?}; write trace {:?}",
        [&http.name, &forward.name, &forwarded.name, &commit.name]
    );
}
