//! Differential scrape test: Debian's Prometheus and the agent read the
//! same scrape file (static and file_sd targets, relabelling rules of every
//! action, OpenMetrics with exemplars, info and units, the text format with
//! histograms, summaries and escapes) and scrape the same targets; the
//! series that reach Strata (asked through Strata's querier with PromQL)
//! equal Prometheus' own: label sets identical, values equal (the scrape
//! meta series' values aside), `up` and the meta series present. When a
//! target leaves the file_sd file, both mark its series stale.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use controlplane_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEXT: &str = "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\n\
app_requests_total{method=\"GET\",code=\"200\",path=\"/API/Items\"} 1027\n\
app_requests_total{method=\"POST\",code=\"500\",path=\"/api/orders\"} 3\n\
# HELP app_latency_seconds Latency.\n# TYPE app_latency_seconds histogram\n\
app_latency_seconds_bucket{le=\"0.1\"} 5\napp_latency_seconds_bucket{le=\"1\"} 9\napp_latency_seconds_bucket{le=\"+Inf\"} 10\n\
app_latency_seconds_sum 4.5\napp_latency_seconds_count 10\n\
# TYPE rpc_seconds summary\nrpc_seconds{quantile=\"0.5\"} 0.25\nrpc_seconds{quantile=\"0.99\"} 1.5\nrpc_seconds_sum 100\nrpc_seconds_count 400\n\
# TYPE temperature gauge\ntemperature{room=\"a \\\"quoted\\\" \\\\ name\",job=\"inner\",instance=\"inner:1\"} -3.5\n\
untyped_thing 42\n\
debug_noise{x=\"1\"} 1\n";

const OPENMETRICS: &str = "# TYPE jobs counter\n# HELP jobs Jobs run.\n\
jobs_total{kind=\"batch\"} 17.0 # {trace_id=\"abc123\"} 1.0\n\
# TYPE build info\nbuild_info{version=\"1.2.3\"} 1\n\
# TYPE queue_bytes gauge\n# UNIT queue_bytes bytes\nqueue_bytes 2048\n# EOF\n";

/// Serves `/text` (text format) and `/om` (OpenMetrics) on loopback.
async fn serve_targets() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&got);
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let (ct, body) = if path.starts_with("/om") {
                    ("application/openmetrics-text; version=1.0.0; charset=utf-8", OPENMETRICS)
                } else {
                    ("text/plain; version=0.0.4; charset=utf-8", TEXT)
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

fn scrape_file(port: u16) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: text
    metrics_path: /text
    static_configs:
      - targets: ['127.0.0.1:{port}']
        labels: {{team: Payments, __tier: gold}}
    relabel_configs:
      - {{source_labels: [team], target_label: team_lower, action: lowercase}}
      - {{source_labels: [team], target_label: team_upper, action: uppercase}}
      - {{source_labels: [__address__], target_label: shard, modulus: 8, action: hashmod}}
      - {{regex: '__(tier)', replacement: 'tier_$1', action: labelmap}}
      - {{source_labels: [team_lower], target_label: team_lower, action: keepequal}}
      - {{source_labels: [team], target_label: team_upper, action: dropequal}}
      - {{source_labels: [__address__], regex: '127\.0\.0\.1:(\d+)', target_label: port, replacement: 'p$1'}}
    metric_relabel_configs:
      - {{source_labels: [__name__], regex: debug_.*, action: drop}}
      - {{source_labels: [__name__, method], regex: '(app|rpc|temperature|untyped|debug).*;.*', action: keep}}
      - {{regex: team_upper, action: labeldrop}}
      - {{regex: '__name__|code|method|path|le|quantile|room|job|instance|exported_.*|team.*|tier.*|shard|port', action: labelkeep}}
      - {{source_labels: [path], target_label: path, action: lowercase}}
  - job_name: om
    honor_labels: true
    metrics_path: /om
    file_sd_configs:
      - files: ['targets-*.json']
"#
    )
}

/// `{labels without the agent's}` → value, for every series of the jobs.
async fn vector(base: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for r in query(base, r#"{job=~"text|om|inner"}"#).await {
        let mut labels: Vec<(String, String)> = r["metric"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !matches!(k.as_str(), "environment" | "data_plane_id"))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect();
        labels.sort();
        let name = labels.iter().find(|(k, _)| k == "__name__").map(|(_, v)| v.clone()).unwrap_or_default();
        let v: f64 = r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
        // The scrape meta series' values are each scraper's own.
        let v = if name.starts_with("scrape_") { 0.0 } else { v };
        let key: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        out.insert(key.join(","), v);
    }
    out
}

fn start_prometheus(dir: &Path, cfg: &Path, port: u16) -> Proc {
    let args = vec![
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".to_string(),
    ];
    Proc::start("prometheus-scrape", Path::new("prometheus"), &args, &[], dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_scrapes_what_prometheus_scrapes() {
    if !required("prometheus", require("prometheus")) {
        return;
    }
    let dir = test_dir();
    let port = serve_targets().await;
    let sd = dir.path().join("targets-om.json");
    std::fs::write(&sd, format!(r#"[{{"targets": ["127.0.0.1:{port}"], "labels": {{"site": "lab"}}}}]"#)).unwrap();
    let cfg = dir.path().join("scrape.yml");
    std::fs::write(&cfg, scrape_file(port)).unwrap();

    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let node = &cluster.nodes[0];
    let querier = Querier::start(dir.path(), &[node.grpc_addr()], &[]).await;
    let strata = format!("http://127.0.0.1:{}", querier.port);
    let prom_port = free_port();
    let _prom = start_prometheus(dir.path(), &cfg, prom_port);
    wait_ready(&format!("http://127.0.0.1:{prom_port}/-/ready"), Duration::from_secs(30)).await;
    let prom = format!("http://127.0.0.1:{prom_port}");
    let scrape_flag = format!("--scrape.config-file={}", cfg.display());
    let _agent = Agent::start(dir.path(), "agent", &node.write_url(), "lab", "dp-lab-01", &[&scrape_flag]).await;

    // Both scrape every second: wait until both hold every series and agree.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (want, got) = loop {
        let want = vector(&prom).await;
        let got = vector(&strata).await;
        if (want.len() >= 20 && want == got) || std::time::Instant::now() > deadline {
            break (want, got);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let only = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| -> Vec<String> {
        a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).map(|(k, v)| format!("{k} {v}")).collect()
    };
    assert!(
        want.len() >= 20 && want == got,
        "Prometheus only: {:#?}\nStrata only: {:#?}",
        only(&want, &got),
        only(&got, &want)
    );
    let names: BTreeSet<String> = got
        .keys()
        .filter_map(|k| {
            k.split(',').find_map(|kv| kv.strip_prefix("__name__=")).map(|n| n.trim_matches('"').to_string())
        })
        .collect();
    for n in [
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ] {
        assert!(names.contains(n), "{n} missing: {names:?}");
    }
    assert!(!names.contains("debug_noise"), "{names:?}");
    assert!(
        got.keys().any(|k| k.contains(r#"exported_job="inner""#)),
        "honor_labels: false keeps the target's job: {got:?}"
    );
    assert!(got.keys().any(|k| k.contains(r#"path="/api/items""#)), "lowercase: {got:?}");
    assert!(got.keys().any(|k| k.contains(r#"tier_tier="gold""#)), "labelmap: {got:?}");

    // The om target leaves the file: both mark its series stale.
    std::fs::write(&sd, "[]").unwrap();
    wait_for(Duration::from_secs(30), "the om job's series to go stale in both", || {
        let (prom, strata) = (prom.clone(), strata.clone());
        async move {
            let p = query(&prom, r#"up{job="om"}"#).await;
            let s = query(&strata, r#"up{job="om"}"#).await;
            let jobs = query(&strata, r#"jobs_total"#).await;
            (p.is_empty() && s.is_empty() && jobs.is_empty()).then_some(())
        }
    })
    .await;
    assert_eq!(query(&strata, r#"up{job="text"}"#).await.len(), 1, "the text job keeps being scraped");

    // The scrape file is re-read when it changes: a new job is scraped; a
    // file that no longer loads leaves the running jobs alone.
    let mut text = scrape_file(port);
    text.push_str(&format!(
        "  - job_name: added\n    metrics_path: /text\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    ));
    std::fs::write(&cfg, &text).unwrap();
    wait_for(Duration::from_secs(30), "the added job in Strata", || async {
        (query(&strata, r#"up{job="added"} == 1"#).await.len() == 1).then_some(())
    })
    .await;
    std::fs::write(&cfg, "scrape_configs:\n- job_name: [broken\n").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let fresh = query(&strata, r#"time() - timestamp(up{job="added"}) < 3"#).await;
    assert_eq!(fresh.len(), 1, "a broken file leaves the jobs running: {fresh:?}");
}
