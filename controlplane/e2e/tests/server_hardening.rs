//! Every HTTP server of every binary disconnects slow clients (slow-loris:
//! a request line or headers never finished) after
//! `--web.read-header-timeout` and keeps serving normal traffic meanwhile;
//! an ingester whose disk fills stops being ready and exits non-zero, the
//! other replicas keep acknowledging, and after space returns the restarted
//! node holds every acknowledged sample.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use controlplane_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Opens a connection, sends half a request line and then nothing; returns
/// how long the server kept the connection open (None: still open after `give_up`).
async fn slow_client(addr: SocketAddr, give_up: Duration) -> Option<Duration> {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST /api/v1/write HTT").await.expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(give_up, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    closed.ok().map(|_| started.elapsed())
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_disconnected_by_every_http_server() {
    let dir = test_dir();
    let fast = "--web.read-header-timeout=1s";
    let cluster = Cluster::start(dir.path(), 1, &[fast]).await;
    let node = &cluster.nodes[0];
    let objstore = dir.path().join("objstore");
    let store = StoreGateway::start(dir.path(), &objstore, &[fast]).await;
    let querier = Querier::start(dir.path(), &[node.grpc_addr(), store.grpc_addr()], &[fast]).await;
    let compact_port = free_port();
    let _compactor = Proc::start(
        "compactor",
        &bin("strata"),
        &[
            "compact".into(),
            format!("--web.listen-address=127.0.0.1:{compact_port}"),
            format!("--objstore.path={}", objstore.display()),
            fast.into(),
        ],
        &[],
        dir.path(),
    );
    wait_ready(&format!("http://127.0.0.1:{compact_port}/-/ready"), Duration::from_secs(30)).await;
    let agent = Agent::start(dir.path(), "agent", &node.write_url(), "prod", "dp-1", &[fast]).await;
    // The sample API runs with the default timeout (10 s).
    let api = SampleApi::start(dir.path(), "api", &agent, "grpc", "shop", &[]).await;

    let one = Duration::from_secs(1);
    let targets: Vec<(&str, SocketAddr, Duration)> = vec![
        ("ingester", addr(node.web), one),
        ("store", addr(store.web), one),
        ("querier", addr(querier.port), one),
        ("compactor", addr(compact_port), one),
        ("agent OTLP/HTTP", addr(agent.http_port), one),
        ("agent web", addr(agent.web_port), one),
        ("sample-api", addr(api.port), Duration::from_secs(10)),
    ];
    // 20 slow clients per server at once, all in parallel.
    let mut probes = Vec::new();
    for (name, a, timeout) in &targets {
        for _ in 0..20 {
            let (name, a, timeout) = (*name, *a, *timeout);
            probes.push(tokio::spawn(async move {
                (name, timeout, slow_client(a, timeout + Duration::from_secs(10)).await)
            }));
        }
    }
    // Meanwhile every server answers normal requests.
    let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (name, a, _) in &targets {
        let path = if *name == "sample-api" {
            "/health"
        } else if name.starts_with("agent OTLP") {
            "/v1/metrics"
        } else {
            "/-/healthy"
        };
        let r = c.get(format!("http://{a}{path}")).send().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(r.status().as_u16() < 500, "{name}{path}: {}", r.status());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    assert_eq!(write_one(&c, &node.write_url(), "during_slowloris", now, 1.0).await.expect("write"), 204);
    for p in probes {
        let (name, timeout, kept) = p.await.expect("probe");
        let kept = kept.unwrap_or_else(|| panic!("{name}: a slow client was never disconnected"));
        assert!(
            kept + Duration::from_millis(300) >= timeout,
            "{name}: disconnected after {kept:?}, before its {timeout:?} timeout"
        );
        assert!(
            kept <= timeout + Duration::from_secs(3),
            "{name}: disconnected only after {kept:?} (timeout {timeout:?})"
        );
    }
    // Still serving after the storm.
    assert_eq!(write_one(&c, &node.write_url(), "after_slowloris", now, 1.0).await.expect("write"), 204);

    // Admin bodies are small: a 1 MiB membership change is refused.
    let huge = format!("{{\"members\": [1{}]}}", ", 1".repeat(300_000));
    let r = c
        .post(node.web_url("/api/v1/admin/raft/membership"))
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status().as_u16(), 413);
    // The shared server counted all of it by route.
    // (A new connection: the server closes one whose oversized body it did not read.)
    let m = reqwest::get(node.web_url("/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(m.contains(r#"strata_http_requests_total{handler="/api/v1/write",method="POST",code="204"} "#), "{m}");
    assert!(
        m.contains(r#"strata_http_requests_total{handler="/api/v1/admin/raft/membership",method="POST",code="413"} 1"#),
        "{m}"
    );

    // A remote read body of 10 bytes that claims to inflate to 1 GiB is
    // refused before anything is allocated.
    let mut bomb = Vec::new();
    let mut len: u64 = 1 << 30;
    while len >= 0x80 {
        bomb.push((len as u8) | 0x80);
        len >>= 7;
    }
    bomb.push(len as u8);
    bomb.extend_from_slice(&[0u8; 5]);
    let r = c
        .post(format!("{}/api/v1/read", querier.base()))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(bomb)
        .send()
        .await
        .expect("remote read");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("over the limit"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingester_whose_disk_fills_stops_being_ready_and_exits() {
    let dir = test_dir();
    let Some(disk) = SmallDisk::mount(&dir.path().join("node-3"), 64 << 20) else {
        required("permission to mount a tmpfs (run the tests as root)", false);
        return;
    };
    let mut cluster = Cluster::start(dir.path(), 3, &["--raft.snapshot-logs=100000"]).await;
    let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let t0 = 1_700_000_000_000i64;
    // Some acknowledged data before the disk fills.
    let mut acked: Vec<(i64, f64)> = Vec::new();
    let mut t = t0;
    let write = |t: i64| -> SeriesData {
        (0..200).map(|i| (labels(&[("__name__", "fill"), ("i", &i.to_string())]), vec![(t, t as f64)])).collect()
    };
    let url1 = cluster.nodes[0].write_url();
    for _ in 0..5 {
        let (status, body) = remote_write(&c, &url1, "anonymous", &write(t)).await;
        assert_eq!(status, 204, "{body}");
        acked.push((t, t as f64));
        t += 1000;
    }
    disk.fill(256 << 10);
    let filled = Instant::now();
    // Keep writing through node 1 until node 3 has exited.
    let mut exited = None;
    let mut saw_unready = false;
    let ready3 = cluster.nodes[2].web_url("/-/ready");
    while filled.elapsed() < Duration::from_secs(60) {
        let (status, _) = remote_write(&c, &url1, "anonymous", &write(t)).await;
        if status == 204 {
            acked.push((t, t as f64));
        }
        t += 1000;
        if let Ok(r) = c.get(&ready3).timeout(Duration::from_millis(500)).send().await
            && r.status().as_u16() == 503
        {
            saw_unready = true;
        }
        if let Some(status) = cluster.nodes[2].proc.as_mut().and_then(|p| p.exit_status()) {
            exited = Some((status, filled.elapsed()));
            break;
        }
    }
    let log = cluster.nodes[2].proc.as_ref().map(|p| p.log_tail()).unwrap_or_default();
    let (status, after) = exited.unwrap_or_else(|| panic!("node 3 still running 60 s after its disk filled:\n{log}"));
    assert!(!status.success(), "node 3 exited with {status}:\n{log}");
    assert!(log.contains("Raft core has stopped") || log.contains("Raft core stopped"), "{log}");
    eprintln!("node 3 exited {after:?} after its disk filled (saw /-/ready 503: {saw_unready})");
    cluster.nodes[2].proc = None;
    // The two healthy replicas keep acknowledging.
    for _ in 0..5 {
        let (status, body) = remote_write(&c, &url1, "anonymous", &write(t)).await;
        assert_eq!(status, 204, "{body}");
        acked.push((t, t as f64));
        t += 1000;
    }
    // Space returns; the supervisor's restart brings the node back with
    // every acknowledged sample.
    disk.free();
    cluster.nodes[2].start(dir.path());
    cluster.wait_converged(Duration::from_secs(60)).await;
    for n in &cluster.nodes {
        let got = read_series(&n.grpc_addr(), "anonymous", "fill").await;
        assert_eq!(got.len(), 200, "node {}", n.id);
        for (key, samples) in &got {
            for a in &acked {
                assert!(samples.contains(a), "node {}: {key} lost acknowledged sample {a:?}", n.id);
            }
        }
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stop_at_the_sample_limit_with_a_clear_422() {
    use strata_proto::prometheus::read_request;

    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let node = &cluster.nodes[0];
    let c = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let t0 = now - 20 * 60_000;
    // 20 series x 200 samples = 4,000 samples; the querier allows 1,000.
    let data: SeriesData = (0..20)
        .map(|i| {
            (
                labels(&[("__name__", "big"), ("i", &format!("{i:02}"))]),
                (0..200).map(|k| (t0 + k * 5000, k as f64)).collect(),
            )
        })
        .collect();
    write_series(&c, &node.write_url(), &data).await;
    let querier = Querier::start(dir.path(), &[node.grpc_addr()], &["--query.max-samples=1000"]).await;
    let base = querier.base();

    let range = |q: &'static str| {
        c.get(format!("{base}/api/v1/query_range"))
            .query(&[
                ("query", q.to_string()),
                ("start", (t0 / 1000).to_string()),
                ("end", (now / 1000).to_string()),
                ("step", "30".into()),
            ])
            .send()
    };
    // Within the limit: one series answers.
    let r = range(r#"big{i="03"}"#).await.expect("query_range");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    // Everything: Prometheus' 422 with errorType execution.
    let r = range(r#"{__name__=~".+"}"#).await.expect("query_range");
    assert_eq!(r.status(), 422);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["errorType"], "execution", "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("too many samples"), "{v}");

    // Remote read of everything, both response types.
    for kind in [read_request::ResponseType::Samples, read_request::ResponseType::StreamedXorChunks] {
        let (status, text) = remote_read_everything(&c, &base, t0 - 1, now + 1, kind).await;
        assert_eq!(status, 422, "{kind:?}: {text}");
        assert!(text.contains("too many samples") && text.contains("--query.max-samples"), "{text}");
    }
}
