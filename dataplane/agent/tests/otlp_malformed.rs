//! Malformed OTLP gets the OTLP-specified answer with a message naming the
//! problem; the agent keeps serving and delivers what it accepted.

mod common;

use std::io::Write;

use common::*;
use prost::Message;
use strata_agent::config::Protocol;
use strata_agent::receiver::RpcStatus;
use strata_proto::otlp::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use strata_proto::otlp::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};

struct Case {
    name: &'static str,
    content_type: &'static str,
    encoding: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    message: &'static str,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn malformed_http_requests_get_documented_errors() {
    let rx = Receiver::start(Mode::V1Only).await;
    let agent = TestAgent::start(&rx.url(), Protocol::V1, |c| c.otlp.max_request_bytes = 64 * 1024).await;
    let valid = counter_request("ok.counter", &[1.0]).encode_to_vec();
    let cases = vec![
        Case {
            name: "garbage protobuf",
            content_type: "application/x-protobuf",
            encoding: None,
            body: vec![0xff, 0xff, 0xff, 0x01],
            status: 400,
            message: "invalid OTLP protobuf",
        },
        Case {
            name: "truncated protobuf",
            content_type: "application/x-protobuf",
            encoding: None,
            body: valid[..valid.len() - 3].to_vec(),
            status: 400,
            message: "invalid OTLP protobuf",
        },
        Case {
            name: "bad json",
            content_type: "application/json",
            encoding: None,
            body: b"{\"resourceMetrics\": [".to_vec(),
            status: 400,
            message: "invalid OTLP JSON",
        },
        Case {
            name: "json of wrong shape",
            content_type: "application/json",
            encoding: None,
            body: b"{\"resourceMetrics\": 5}".to_vec(),
            status: 400,
            message: "invalid OTLP JSON",
        },
        Case {
            name: "wrong content type",
            content_type: "text/plain",
            encoding: None,
            body: valid.clone(),
            status: 415,
            message: "unsupported Content-Type",
        },
        Case {
            name: "unsupported encoding",
            content_type: "application/x-protobuf",
            encoding: Some("br"),
            body: valid.clone(),
            status: 415,
            message: "unsupported Content-Encoding",
        },
        Case {
            name: "bad gzip",
            content_type: "application/x-protobuf",
            encoding: Some("gzip"),
            body: b"not gzip".to_vec(),
            status: 400,
            message: "invalid gzip",
        },
        Case {
            name: "oversize body",
            content_type: "application/x-protobuf",
            encoding: None,
            body: vec![0u8; 100 * 1024],
            status: 413,
            message: "exceeds the limit",
        },
        Case {
            name: "gzip bomb",
            content_type: "application/x-protobuf",
            encoding: Some("gzip"),
            body: gzip(&vec![0u8; 1 << 20]),
            status: 413,
            message: "exceeds the limit",
        },
    ];
    let c = reqwest::Client::new();
    for case in &cases {
        let mut rb = c.post(agent.otlp_http()).header("content-type", case.content_type).body(case.body.clone());
        if let Some(e) = case.encoding {
            rb = rb.header("content-encoding", e);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), case.status, "{}", case.name);
        let is_json = resp.headers().get("content-type").map(|v| v.to_str().unwrap().contains("json")).unwrap_or(false);
        let body = resp.bytes().await.unwrap();
        let message = if is_json {
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["message"].as_str().unwrap().to_string()
        } else {
            RpcStatus::decode(body.as_ref()).unwrap().message
        };
        assert!(message.contains(case.message), "{}: {message}", case.name);
    }

    // Data points the translator cannot use: partial success naming them.
    let mut req = counter_request("bad.counter", &[f64::NAN, 3.0]);
    let mut empty_name = counter_request("", &[1.0]).resource_metrics.remove(0);
    req.resource_metrics.push(empty_name.clone());
    empty_name.resource = None; // an empty resource is fine, its points still count
    empty_name.scope_metrics[0].metrics[0].name = "no.resource".into();
    req.resource_metrics.push(empty_name);
    let resp = c
        .post(agent.otlp_http())
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let out = ExportMetricsServiceResponse::decode(resp.bytes().await.unwrap().as_ref()).unwrap();
    let ps = out.partial_success.expect("partial success");
    assert_eq!(ps.rejected_data_points, 2);
    assert!(
        ps.error_message.contains("bad.counter") && ps.error_message.contains("not a finite number"),
        "{}",
        ps.error_message
    );
    assert!(ps.error_message.contains("metric name"), "{}", ps.error_message);

    // JSON partial success is JSON.
    let json = serde_json::json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "j", "sum": {"isMonotonic": true, "aggregationTemporality": 2, "dataPoints": [{"timeUnixNano": now_ns().to_string(), "asDouble": 1.5}]}}]}]}]});
    let resp = c.post(agent.otlp_http()).json(&json).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body.get("partialSuccess").map(|p| p.is_null()).unwrap_or(true), "{body}");

    // A valid request after all of that is delivered, as are the accepted points above.
    let resp = c
        .post(agent.otlp_http())
        .header("content-type", "application/x-protobuf")
        .body(valid.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let gz = c
        .post(agent.otlp_http())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gzip(&counter_request("gz.counter", &[9.0]).encode_to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), 200);
    wait_until("accepted data delivered", || {
        let s = rx.series();
        let names: Vec<String> =
            s.iter().flat_map(|t| t.labels.iter().filter(|l| l.name == "__name__").map(|l| l.value.clone())).collect();
        ["ok_counter_total", "bad_counter_total", "no_resource_total", "j_total", "gz_counter_total"]
            .iter()
            .all(|n| names.iter().any(|x| x == n))
    })
    .await;
    // The NaN point was dropped, the 3.0 point kept.
    let bad: Vec<f64> = rx
        .series()
        .iter()
        .filter(|t| t.labels.iter().any(|l| l.value == "bad_counter_total"))
        .map(|t| t.samples[0].value)
        .collect();
    assert_eq!(bad, vec![3.0]);
    let m = agent.metrics().await;
    assert!(m.contains("strata_agent_datapoints_rejected_total{reason=\"non_finite_counter\"} 1"), "{m}");
    assert!(m.contains("strata_agent_datapoints_rejected_total{reason=\"invalid_metric_name\"} 1"), "{m}");
}

#[tokio::test]
async fn grpc_partial_success_and_errors() {
    let rx = Receiver::start(Mode::V1Only).await;
    let agent = TestAgent::start(&rx.url(), Protocol::V1, |_| {}).await;
    let mut client = MetricsServiceClient::connect(agent.otlp_grpc()).await.unwrap();
    let resp = client.export(counter_request("g.counter", &[f64::INFINITY, 1.0])).await.unwrap().into_inner();
    assert_eq!(resp.partial_success.unwrap().rejected_data_points, 1);
    let resp = client.export(counter_request("g.ok", &[1.0])).await.unwrap().into_inner();
    assert!(resp.partial_success.is_none());
    let resp = client.export(ExportMetricsServiceRequest::default()).await.unwrap().into_inner();
    assert!(resp.partial_success.is_none(), "an empty request is a success");
    wait_until("delivered", || rx.series().len() == 2).await;
}

#[tokio::test]
async fn full_queue_answers_retryable_errors() {
    // Nothing listens at the endpoint, so the queue fills up.
    // Port 1 on loopback: connections are refused and no test binds it.
    let dead = "http://127.0.0.1:1/api/v1/write".to_string();
    let agent = TestAgent::start(&dead, Protocol::V1, |c| {
        c.queue.max_bytes = 8 * 1024;
        c.queue.segment_bytes = 2 * 1024;
    })
    .await;
    let c = reqwest::Client::new();
    let big = counter_request("fill", &(0..40).map(|i| i as f64).collect::<Vec<_>>()).encode_to_vec();
    let mut saw_503 = false;
    for _ in 0..100 {
        let resp = c
            .post(agent.otlp_http())
            .header("content-type", "application/x-protobuf")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        if resp.status() == 503 {
            assert_eq!(resp.headers().get("retry-after").unwrap(), "5");
            let st = RpcStatus::decode(resp.bytes().await.unwrap().as_ref()).unwrap();
            assert_eq!(st.code, 14);
            assert!(st.message.contains("queue is full"), "{}", st.message);
            saw_503 = true;
            break;
        }
        assert_eq!(resp.status(), 200);
    }
    assert!(saw_503, "queue never filled");
    let mut client = MetricsServiceClient::connect(agent.otlp_grpc()).await.unwrap();
    let big_req = ExportMetricsServiceRequest::decode(big.as_slice()).unwrap();
    let err = client.export(big_req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let m = agent.metrics().await;
    assert!(m.contains("strata_agent_datapoints_refused_total{reason=\"queue_full\"}"), "{m}");
}
