//! Real peers write into the cluster unchanged: Debian's Prometheus via
//! `remote_write`, and the data plane (sample API → strata-agent).

use std::time::Duration;

use controlplane_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_write_into_the_cluster() {
    if !require("prometheus") {
        return;
    }
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 3, &[]).await;
    // Prometheus scrapes itself every second and remote-writes to a follower-or-leader node.
    let port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\nremote_write:\n  - url: {}\n    queue_config: {{batch_send_deadline: 1s}}\n    metadata_config: {{send_interval: 2s}}\n",
            cluster.nodes[1].write_url()
        ),
    )
    .unwrap();
    let args = vec![
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", dir.path().join("prom").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    let _prom = Proc::start("prometheus", std::path::Path::new("prometheus"), &args, &[], dir.path());
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/-/ready"), Duration::from_secs(30)).await;
    // Data arrives on every replica.
    for node in &cluster.nodes {
        wait_for(Duration::from_secs(40), "Prometheus' own series in the cluster", || async {
            let s = read_series(&node.grpc_addr(), "anonymous", "prometheus_build_info").await;
            (s.values().next().map(|v| v.len()).unwrap_or(0) >= 3).then_some(())
        })
        .await;
    }
    let sent = wait_for(Duration::from_secs(30), "samples sent by Prometheus", || async {
        query_value(&base, "sum(prometheus_remote_storage_samples_total)").await.filter(|v| *v > 0.0)
    })
    .await;
    let failed = query_value(&base, "sum(prometheus_remote_storage_samples_failed_total)").await;
    assert_eq!(failed, Some(0.0), "Prometheus saw failed samples");
    assert!(sent > 100.0);

    // The metric metadata Prometheus sends along (type, help, unit) is kept
    // and answered by the querier's /api/v1/metadata exactly as Prometheus
    // answers it for its own scrape target.
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.grpc_addr()).collect();
    let querier = Querier::start(dir.path(), &endpoints, &[]).await;
    let client = reqwest::Client::new();
    for metric in ["prometheus_http_requests_total", "prometheus_build_info", "go_gc_duration_seconds"] {
        let url = |b: &str| format!("{b}/api/v1/metadata?metric={metric}");
        let want: serde_json::Value = client.get(url(&base)).send().await.unwrap().json().await.unwrap();
        assert!(want["data"][metric].is_array(), "Prometheus has no metadata for {metric}: {want}");
        let got = wait_for(Duration::from_secs(30), "metric metadata in the cluster", || async {
            let v: serde_json::Value = client.get(url(&querier.base())).send().await.ok()?.json().await.ok()?;
            v["data"][metric].is_array().then_some(v)
        })
        .await;
        assert_eq!(got["data"], want["data"], "{metric}");
    }
    let all: serde_json::Value =
        client.get(format!("{}/api/v1/metadata?limit=2", querier.base())).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["data"].as_object().map(|m| m.len()), Some(2), "{all}");
    let bad = client.get(format!("{}/api/v1/metadata?limit=x", querier.base())).send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_writes_into_the_cluster() {
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 3, &[]).await;
    let agent = Agent::start(dir.path(), "agent", &cluster.nodes[2].write_url(), "prod", "dp-prod-01", &[]).await;
    let api = SampleApi::start(dir.path(), "api", &agent, "grpc", "shop", &[]).await;
    let c = reqwest::Client::new();
    for _ in 0..20 {
        assert!(c.get(api.url("/api/products")).send().await.unwrap().status().is_success());
    }
    cluster.wait_converged(Duration::from_secs(30)).await;
    for node in &cluster.nodes {
        wait_for(Duration::from_secs(30), "request count on every replica", || async {
            let s = read_series(&node.grpc_addr(), "anonymous", "http_server_request_duration_seconds_count").await;
            let (labels, samples) = s.iter().find(|(k, _)| k.contains("http_route=/api/products"))?;
            assert!(labels.contains("environment=prod") && labels.contains("data_plane_id=dp-prod-01"), "{labels}");
            (samples.last()?.1 == 20.0).then_some(())
        })
        .await;
    }
    // The agent negotiated remote write 2.0 with the ingester.
    let m = reqwest::get(agent.metrics_url()).await.unwrap().text().await.unwrap();
    assert!(
        m.lines().any(|l| l.starts_with("strata_agent_remote_write_requests_total")
            && l.contains("protocol=\"2.0\"")
            && l.contains("status=\"204\"")),
        "{m}"
    );
    drop(api);
}
