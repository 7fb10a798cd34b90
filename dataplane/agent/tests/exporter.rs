//! Remote write exporter behaviour against scripted receivers:
//! protocol negotiation, retry on 5xx/429, no retry on other 4xx.

mod common;

use common::*;
use prost::Message;
use strata_agent::config::Protocol;

async fn post(agent: &TestAgent, req: &strata_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest) -> u16 {
    reqwest::Client::new()
        .post(agent.otlp_http())
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn has_labels(ts: &strata_proto::prometheus::TimeSeries, want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| ts.labels.iter().any(|l| l.name == *k && l.value == *v))
}

#[tokio::test]
async fn speaks_v2_to_a_v2_receiver() {
    let rx = Receiver::start(Mode::V2).await;
    let agent = TestAgent::start(&rx.url(), Protocol::Auto, |_| {}).await;
    assert_eq!(post(&agent, &counter_request("jobs.done", &[1.0, 2.0])).await, 200);
    wait_until("2 series", || rx.series().len() >= 2).await;
    let got = rx.got.lock().unwrap().clone();
    assert!(got.iter().all(|c| c.version == "2.0.0" && c.content_type.contains("io.prometheus.write.v2")));
    let s = rx.series();
    assert!(s.iter().any(|t| has_labels(
        t,
        &[("__name__", "jobs_done_total"), ("environment", "test"), ("data_plane_id", "dp-test"), ("idx", "1")]
    )));
}

#[tokio::test]
async fn falls_back_to_v1_on_415() {
    let rx = Receiver::start(Mode::V1Strict).await;
    let agent = TestAgent::start(&rx.url(), Protocol::Auto, |_| {}).await;
    assert_eq!(post(&agent, &counter_request("a", &[1.0])).await, 200);
    wait_until("series", || !rx.series().is_empty()).await;
    assert!(rx.got.lock().unwrap().iter().all(|c| c.version == "0.1.0"));
    assert_eq!(rx.series().len(), 1);
}

#[tokio::test]
async fn falls_back_to_v1_when_2xx_lacks_written_headers() {
    // Like Prometheus 2.42: decodes a 2.0 body as an empty 1.0 request and says 204.
    let rx = Receiver::start(Mode::V1Only).await;
    let agent = TestAgent::start(&rx.url(), Protocol::Auto, |_| {}).await;
    assert_eq!(post(&agent, &counter_request("a", &[1.0, 2.0, 3.0])).await, 200);
    wait_until("3 series", || rx.series().len() >= 3).await;
    assert_eq!(rx.series().len(), 3, "each series delivered exactly once");
}

#[tokio::test]
async fn retries_5xx_and_429_until_delivered() {
    for status in [503u16, 429, 500] {
        let rx = Receiver::start(Mode::FailFirst(status, 3)).await;
        let agent = TestAgent::start(&rx.url(), Protocol::V1, |c| c.remote_write.shards = 1).await;
        assert_eq!(post(&agent, &counter_request("a", &[5.0])).await, 200);
        wait_until("delivery after retries", || rx.series().len() == 1).await;
        assert_eq!(rx.calls(), 4, "3 failures then success for {status}");
        let m = agent.metrics().await;
        assert!(m.contains("strata_agent_samples_retried_total{"), "{m}");
        assert!(m.contains(&format!("status=\"{status}\"")), "{m}");
    }
}

#[tokio::test]
async fn does_not_retry_other_4xx_and_keeps_going() {
    let rx = Receiver::start(Mode::FailFirst(400, 1)).await;
    let agent = TestAgent::start(&rx.url(), Protocol::V1, |c| c.remote_write.shards = 1).await;
    assert_eq!(post(&agent, &counter_request("a", &[1.0])).await, 200);
    wait_until("first call", || rx.calls() == 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(rx.calls(), 1, "a 400 is not retried");
    let m = agent.metrics().await;
    assert!(m.contains("reason=\"http_400\"} 1"), "{m}");
    // Later data still flows.
    assert_eq!(post(&agent, &counter_request("b", &[2.0])).await, 200);
    wait_until("second batch", || rx.series().len() == 1).await;
}

#[tokio::test]
async fn sends_to_every_endpoint() {
    let a = Receiver::start(Mode::V1Only).await;
    let b = Receiver::start(Mode::V2).await;
    let url_b = b.url();
    let agent = TestAgent::start(&a.url(), Protocol::Auto, move |c| {
        c.remote_write.endpoints.push(strata_agent::config::EndpointConfig {
            url: url_b,
            protocol: Protocol::Auto,
            ..Default::default()
        });
    })
    .await;
    assert_eq!(post(&agent, &counter_request("x", &[1.0, 2.0])).await, 200);
    wait_until("both endpoints", || a.series().len() == 2 && b.series().len() == 2).await;
}
