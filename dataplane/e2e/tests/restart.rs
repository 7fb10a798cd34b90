//! kill -9 the agent with a non-empty queue; after a restart on the same
//! queue directory the acknowledged data is delivered.

use std::time::Duration;

use dataplane_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_data_survives_kill_9() {
    if !require("prometheus") {
        return;
    }
    let dir = test_dir();
    let port = free_port();
    let write_url = format!("http://127.0.0.1:{port}/api/v1/write");
    let queue = dir.path().join("queue");
    // The receiver is not running yet: everything stays in the queue.
    let mut agent = Agent::start_with_queue(dir.path(), "agent", &write_url, "dev", "dp-dev-01", &queue, &[]).await;
    let mut api = SampleApi::start(dir.path(), "api", &agent, "http/protobuf", "shop", &[]).await;
    let c = reqwest::Client::new();
    for _ in 0..25 {
        assert!(c.get(api.url("/api/products")).send().await.unwrap().status().is_success());
    }
    // Let the SDK export (every 1 s) a few times after the last request.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let queued = agent.metric("strata_agent_queue_bytes").await;
    assert!(queued > 0.0, "queue holds data before the crash");
    agent.proc.kill9();
    api.proc.kill9();

    let prom = Prometheus::start(dir.path(), port).await;
    let agent2 =
        Agent::start_with_queue(dir.path(), "agent-restarted", &write_url, "dev", "dp-dev-01", &queue, &[]).await;
    let base = prom.base();
    let q = r#"sum(http_server_request_duration_seconds_count{job="shop",http_route="/api/products",environment="dev",data_plane_id="dp-dev-01"})"#;
    let got = wait_for(Duration::from_secs(30), "queued data delivered after restart", || async {
        query_value(&base, q).await.filter(|v| *v == 25.0)
    })
    .await;
    assert_eq!(got, 25.0);
    wait_for(Duration::from_secs(30), "queue drained", || async {
        (agent2.metric("strata_agent_queue_bytes").await == 0.0).then_some(())
    })
    .await;
}
