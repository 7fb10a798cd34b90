//! The remote write receiver goes away for 30 s while traffic runs: the
//! agent queues on disk, nothing is lost, the queue drains after recovery,
//! and the agent's memory stays bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataplane_e2e::*;

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_outage_loses_nothing() {
    if !require("prometheus") {
        return;
    }
    let dir = test_dir();
    let port = free_port();
    let mut prom = Prometheus::start(dir.path(), port).await;
    let agent = Agent::start(dir.path(), "agent", &prom.write_url(), "qa", "dp-qa-01", &[]).await;
    let api = SampleApi::start(dir.path(), "api", &agent, "http/protobuf", "shop", &[]).await;

    // Continuous traffic, counted.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (stop, sent, url) = (stop.clone(), sent.clone(), api.url("/api/products"));
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                if c.get(&url).send().await.map(|r| r.status().is_success()).unwrap_or(false) {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = now_s();
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Outage: Prometheus stops for 30 s.
    prom.proc.terminate();
    let outage_start = now_s();
    let mut max_rss = 0u64;
    let mut max_queue = 0.0f64;
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        max_rss = max_rss.max(agent.proc.rss_bytes().unwrap_or(0));
        max_queue = max_queue.max(agent.metric("strata_agent_queue_bytes").await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let outage_end = now_s();
    assert!(max_queue > 0.0, "data should wait in the disk queue during the outage");
    let retried =
        agent.metric(&format!("strata_agent_samples_retried_total{{endpoint=\"{}\"}}", prom.write_url())).await;
    assert!(retried > 0.0, "sends were retried during the outage");

    // Recovery on the same port and data directory.
    let prom = Prometheus::start(dir.path(), port).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let total = sent.load(Ordering::Relaxed) as f64;
    assert!(total > 400.0, "traffic ran: {total} requests");

    let base = prom.base();
    let sel = r#"http_server_request_duration_seconds_count{job="shop",http_route="/api/products",environment="qa"}"#;
    let q = format!("sum({sel})");
    wait_for(Duration::from_secs(60), "final count equal to requests sent", || async {
        query_value(&base, &q).await.filter(|v| *v == total)
    })
    .await;
    wait_for(Duration::from_secs(30), "queue drained", || async {
        (agent.metric("strata_agent_queue_bytes").await == 0.0).then_some(())
    })
    .await;

    // Every export made during the outage arrived: raw samples every ~1 s with no gap.
    let raw = query(&base, &format!("{sel}[5m]")).await;
    assert_eq!(raw.len(), 1, "one series");
    let ts: Vec<f64> = raw[0]["values"].as_array().unwrap().iter().map(|v| v[0].as_f64().unwrap()).collect();
    let in_outage = ts.iter().filter(|t| **t > outage_start && **t < outage_end).count();
    assert!(in_outage >= 27, "expected ~30 samples recorded during the 30 s outage, got {in_outage}");
    let first_after_start = ts.iter().copied().filter(|t| *t >= started).collect::<Vec<_>>();
    let max_gap = first_after_start.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(max_gap < 2.5, "gap of {max_gap:.1}s in the series: a sample was lost");
    let values: Vec<f64> =
        raw[0]["values"].as_array().unwrap().iter().map(|v| v[1].as_str().unwrap().parse().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "counter never goes backwards");

    // Accounting: nothing dropped, memory bounded.
    let metrics = reqwest::get(agent.metrics_url()).await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("strata_agent_samples_failed_total{"), "no samples dropped:\n{metrics}");
    eprintln!(
        "outage test: {total} requests, {in_outage} samples during outage, max queue {max_queue} B, max agent RSS {} MiB",
        max_rss >> 20
    );
    assert!(max_rss > 0 && max_rss < 150 << 20, "agent RSS {max_rss} B during the outage");
    drop(api);
}
