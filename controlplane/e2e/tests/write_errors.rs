//! Malformed and over-limit remote writes get the remote-write-spec status
//! with a message naming the problem; valid series of a partly bad request
//! are still written; the node keeps serving.

use controlplane_e2e::*;
use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use strata_proto::remote_write as rw;

fn series(labels: &[(&str, &str)], t: i64, v: f64) -> TimeSeries {
    TimeSeries {
        labels: labels.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect(),
        samples: vec![Sample { value: v, timestamp: t }],
        ..Default::default()
    }
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    ct: &str,
    enc: Option<&str>,
    body: Vec<u8>,
    tenant: Option<&str>,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut rb = c.post(url).header("Content-Type", ct).body(body);
    if let Some(e) = enc {
        rb = rb.header("Content-Encoding", e);
    }
    if let Some(t) = tenant {
        rb = rb.header("X-Scope-OrgID", t);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.text().await.unwrap(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_path_rejects_bad_input_precisely() {
    let dir = test_dir();
    let limits = [
        "--limits.max-request-bytes",
        "100000",
        "--limits.max-samples-per-request",
        "1000",
        "--limits.max-labels-per-series",
        "5",
        "--limits.max-series",
        "50",
    ];
    let cluster = Cluster::start(dir.path(), 1, &limits).await;
    let node = &cluster.nodes[0];
    let url = node.write_url();
    let c = reqwest::Client::new();
    let now = 1_700_000_000_000i64;
    let v1 = |ts: Vec<TimeSeries>| rw::encode_v1(&WriteRequest { timeseries: ts, metadata: vec![] });
    let ok = || series(&[("__name__", "ok"), ("job", "a")], now, 1.0);

    // (case, content type, content encoding, body, status, message)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("json content type", "application/json", Some("snappy"), v1(vec![ok()]), 415, "unsupported Content-Type"),
        ("gzip encoding", rw::CONTENT_TYPE_V1, Some("gzip"), v1(vec![ok()]), 415, "Content-Encoding"),
        ("not snappy", rw::CONTENT_TYPE_V1, Some("snappy"), b"definitely not snappy".to_vec(), 400, "snappy"),
        ("bad protobuf", rw::CONTENT_TYPE_V1, Some("snappy"), rw::compress(&[0xff, 0xff, 0xff]), 400, "protobuf"),
        ("oversize body", rw::CONTENT_TYPE_V1, Some("snappy"), vec![0u8; 200_000], 413, "exceeds"),
        (
            "too many samples",
            rw::CONTENT_TYPE_V1,
            Some("snappy"),
            v1((0..1001).map(|i| series(&[("__name__", "many"), ("i", &i.to_string())], now, 1.0)).collect()),
            413,
            "max_samples_per_request",
        ),
        (
            "unsorted labels",
            rw::CONTENT_TYPE_V1,
            Some("snappy"),
            v1(vec![series(&[("__name__", "x"), ("z", "1"), ("a", "2")], now, 1.0), ok()]),
            400,
            "out of order",
        ),
        (
            "duplicate label",
            rw::CONTENT_TYPE_V1,
            Some("snappy"),
            v1(vec![series(&[("__name__", "x"), ("a", "1"), ("a", "2")], now, 1.0)]),
            400,
            "duplicate label name",
        ),
        (
            "missing name",
            rw::CONTENT_TYPE_V1,
            Some("snappy"),
            v1(vec![series(&[("job", "x")], now, 1.0)]),
            400,
            "no __name__",
        ),
        (
            "empty label name",
            rw::CONTENT_TYPE_V1,
            Some("snappy"),
            v1(vec![series(&[("", "v"), ("__name__", "x")], now, 1.0)]),
            400,
            "empty label name",
        ),
        (
            "too many labels",
            rw::CONTENT_TYPE_V1,
            Some("snappy"),
            v1(vec![series(
                &[("__name__", "x"), ("a", "1"), ("b", "1"), ("c", "1"), ("d", "1"), ("e", "1")],
                now,
                1.0,
            )]),
            400,
            "max_labels_per_series",
        ),
    ];
    for (name, ct, enc, body, want, msg) in cases {
        let (status, text, _) = post(&c, &url, ct, enc, body, None).await;
        assert_eq!(status, want, "{name}: {text}");
        assert!(text.contains(msg), "{name}: {text:?} should mention {msg:?}");
    }
    let (status, text, _) =
        post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), v1(vec![ok()]), Some("bad tenant!")).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("X-Scope-OrgID"));

    // The valid series of the partly bad "unsorted labels" request was written.
    let got = read_series(&node.grpc_addr(), "anonymous", "ok").await;
    assert_eq!(got.values().next().map(|s| s.len()), Some(1), "{got:?}");

    // 1 h behind the series' last sample: out of order (outside the 10 m window);
    // a new series 2 h behind the newest sample: out of bounds (appendable window 1 h).
    let (status, text, _) = post(
        &c,
        &url,
        rw::CONTENT_TYPE_V1,
        Some("snappy"),
        v1(vec![series(&[("__name__", "ok"), ("job", "a")], now - 3_600_000, 1.0)]),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("out of order sample"), "{text}");
    let (status, text, _) = post(
        &c,
        &url,
        rw::CONTENT_TYPE_V1,
        Some("snappy"),
        v1(vec![series(&[("__name__", "old"), ("job", "a")], now - 7_200_000, 1.0)]),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("out of bounds"), "{text}");
    // Duplicate timestamp with another value.
    let (status, text, _) = post(
        &c,
        &url,
        rw::CONTENT_TYPE_V1,
        Some("snappy"),
        v1(vec![series(&[("__name__", "ok"), ("job", "a")], now, 2.0)]),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("duplicate sample for timestamp"), "{text}");

    // Series limit per tenant (50): the 51st series is refused, the others written.
    let many: Vec<TimeSeries> =
        (0..60).map(|i| series(&[("__name__", "lim"), ("i", &format!("{i:02}"))], now, 1.0)).collect();
    let (status, text, _) = post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), v1(many), Some("small")).await;
    assert_eq!(status, 400);
    assert!(text.contains("max_series") && text.contains("10 of 60 samples rejected"), "{text}");
    assert_eq!(read_series(&node.grpc_addr(), "small", "lim").await.len(), 50);
    // Tenants are isolated.
    assert!(read_series(&node.grpc_addr(), "anonymous", "lim").await.is_empty());

    // Remote write 2.0: written headers, also on a partial failure.
    let v2 = rw::encode_v2(&rw::v1_to_v2(&WriteRequest {
        timeseries: vec![series(&[("__name__", "v2m"), ("job", "a")], now, 1.0)],
        metadata: vec![],
    }));
    let (status, _, h) = post(&c, &url, rw::CONTENT_TYPE_V2, Some("snappy"), v2, None).await;
    assert_eq!(status, 204);
    assert_eq!(h.get(rw::SAMPLES_WRITTEN_HEADER).unwrap(), "1");
    let v2 = rw::encode_v2(&rw::v1_to_v2(&WriteRequest {
        timeseries: vec![
            series(&[("__name__", "v2m"), ("job", "b")], now, 1.0),
            series(&[("job", "noname")], now, 1.0),
        ],
        metadata: vec![],
    }));
    let (status, text, h) = post(&c, &url, rw::CONTENT_TYPE_V2, Some("snappy"), v2, None).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(h.get(rw::SAMPLES_WRITTEN_HEADER).unwrap(), "1");
    // A 2.0 body whose symbol references are out of range.
    let bad = strata_proto::write_v2::Request {
        symbols: vec!["".into()],
        timeseries: vec![strata_proto::write_v2::TimeSeries { labels_refs: vec![0, 9], ..Default::default() }],
    };
    let (status, text, _) = post(&c, &url, rw::CONTENT_TYPE_V2, Some("snappy"), rw::encode_v2(&bad), None).await;
    assert_eq!(status, 400);
    assert!(text.contains("symbol"), "{text}");

    // OTLP straight into the control plane.
    let (status, _, _) =
        post(&c, &node.web_url("/otlp/v1/metrics"), "application/x-protobuf", None, vec![0xff, 0x01], None).await;
    assert_eq!(status, 400);
    let otlp = serde_json::json!({"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeMetrics": [{"metrics": [{"name": "otlp.requests", "sum": {"isMonotonic": true, "aggregationTemporality": 2,
        "dataPoints": [{"timeUnixNano": (now * 1_000_000).to_string(), "asInt": "7"}]}}]}]}]});
    let r = c.post(node.web_url("/otlp/v1/metrics")).json(&otlp).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let got = read_series(&node.grpc_addr(), "anonymous", "otlp_requests_total").await;
    assert_eq!(got.values().next().unwrap(), &vec![(now, 7.0)]);

    // Native histograms are not stored yet: never answered 2xx. A request
    // mixing float samples and a native histogram gets a 400 naming the
    // series; its float samples are written (1.0 and 2.0 alike).
    let histogram = strata_proto::prometheus::Histogram {
        count: Some(strata_proto::prometheus::histogram::Count::CountInt(3)),
        sum: 1.5,
        schema: 0,
        timestamp: now,
        ..Default::default()
    };
    let mut with_hist = series(&[("__name__", "nh"), ("job", "a")], now, 1.0);
    with_hist.samples.clear();
    with_hist.histograms = vec![histogram.clone()];
    let floats = series(&[("__name__", "nh_floats"), ("job", "a")], now, 4.0);
    let (status, text, _) =
        post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), v1(vec![floats.clone(), with_hist.clone()]), None).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains(r#"nh{job="a"}"#) && text.contains("native histogram"), "{text}");
    assert!(text.contains("1 of 2 samples rejected (1 written)"), "{text}");
    assert_eq!(read_series(&node.grpc_addr(), "anonymous", "nh_floats").await.values().next(), Some(&vec![(now, 4.0)]));
    let v2 = rw::encode_v2(&rw::v1_to_v2(&WriteRequest {
        timeseries: vec![series(&[("__name__", "nh_floats"), ("job", "b")], now, 5.0), with_hist],
        metadata: vec![],
    }));
    let (status, text, h) = post(&c, &url, rw::CONTENT_TYPE_V2, Some("snappy"), v2, None).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("native histogram"), "{text}");
    assert_eq!(h.get(rw::SAMPLES_WRITTEN_HEADER).unwrap(), "1");
    assert_eq!(h.get(rw::HISTOGRAMS_WRITTEN_HEADER).unwrap(), "0");
    assert_eq!(read_series(&node.grpc_addr(), "anonymous", "nh_floats").await.len(), 2);
    // Histograms only: still a 400, nothing stored for the series.
    let mut only = series(&[("__name__", "nh_only"), ("job", "a")], now, 1.0);
    only.samples.clear();
    only.histograms = vec![histogram];
    let (status, text, _) = post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), v1(vec![only]), None).await;
    assert_eq!(status, 400, "{text}");
    assert!(read_series(&node.grpc_addr(), "anonymous", "nh_only").await.is_empty());

    // A sample from a day ahead (a broken clock, a corrupt request) is
    // refused by name; the sample next to it is written, and the tenant's
    // newest time does not jump ahead (the write below would be "too old").
    let ahead = series(&[("__name__", "from_the_future"), ("job", "a")], now_ms() + 24 * 3_600_000, 1.0);
    let beside = series(&[("__name__", "beside_the_future"), ("job", "a")], now, 2.0);
    let (status, text, _) = post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), v1(vec![ahead, beside]), None).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("from_the_future") && text.contains("in the future"), "{text}");
    assert!(text.contains("--limits.creation-grace-period"), "{text}");
    assert!(read_series(&node.grpc_addr(), "anonymous", "from_the_future").await.is_empty());
    assert_eq!(read_series(&node.grpc_addr(), "anonymous", "beside_the_future").await.len(), 1);

    // Still serving and healthy after all of that.
    assert_eq!(write_one(&c, &url, "after", now, 1.0).await.unwrap(), 204);
    let m = reqwest::get(node.web_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(m.contains("strata_ingester_samples_rejected_total"));
    assert!(m.contains("strata_ingester_native_histograms_rejected_total 3"), "{m}");
}

/// OTLP delta streams are turned into cumulative series per tenant: two
/// tenants sending the same stream (same resource, metric and attributes)
/// each get their own running total, never the sum of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_delta_streams_of_two_tenants_stay_apart() {
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let node = &cluster.nodes[0];
    let c = reqwest::Client::new();
    let t0 = now_ms() - 60_000;
    let delta = |start: i64, end: i64, v: f64| {
        serde_json::json!({"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
            "scopeMetrics": [{"metrics": [{"name": "jobs", "sum": {"isMonotonic": true, "aggregationTemporality": 1,
            "dataPoints": [{"startTimeUnixNano": (start * 1_000_000).to_string(), "timeUnixNano": (end * 1_000_000).to_string(), "asDouble": v}]}}]}]}]})
    };
    for (i, (start, end)) in [(t0, t0 + 10_000), (t0 + 10_000, t0 + 20_000)].into_iter().enumerate() {
        for (tenant, v) in [("team-a", 5.0), ("team-b", 7.0)] {
            let r = c
                .post(node.web_url("/otlp/v1/metrics"))
                .header("X-Scope-OrgID", tenant)
                .json(&delta(start, end, v))
                .send()
                .await
                .expect("otlp");
            assert_eq!(r.status(), 200, "point {i} of {tenant}: {}", r.text().await.unwrap_or_default());
        }
    }
    let a = read_series(&node.grpc_addr(), "team-a", "jobs_total").await;
    let b = read_series(&node.grpc_addr(), "team-b", "jobs_total").await;
    assert_eq!(a.values().collect::<Vec<_>>(), vec![&vec![(t0 + 10_000, 5.0), (t0 + 20_000, 10.0)]], "{a:?}");
    assert_eq!(b.values().collect::<Vec<_>>(), vec![&vec![(t0 + 10_000, 7.0), (t0 + 20_000, 14.0)]], "{b:?}");
}

/// `--limits.overrides-file`: a tenant over its ingestion rate gets 429
/// with `Retry-After` and nothing of the request is written; another
/// tenant is not limited; a request larger than the burst is refused
/// naming it; a changed file takes effect without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_ingestion_rate_gets_429_and_overrides_reload() {
    let dir = test_dir();
    let file = dir.path().join("overrides.yml");
    std::fs::write(&file, "tenants:\n  slow: { ingestion_rate: 1, ingestion_burst: 20 }\n").expect("overrides");
    let flag = format!("--limits.overrides-file={}", file.display());
    let cluster = Cluster::start(dir.path(), 1, &[&flag]).await;
    let node = &cluster.nodes[0];
    let url = node.write_url();
    let c = reqwest::Client::new();
    let now = now_ms();
    let body = |name: &str, n: usize| {
        let ts = (0..n).map(|i| series(&[("__name__", name), ("i", &i.to_string())], now, 1.0)).collect();
        rw::encode_v1(&WriteRequest { timeseries: ts, metadata: vec![] })
    };
    let (status, text, _) = post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body("big", 21), Some("slow")).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("exceed its ingestion burst (20)"), "{text}");
    let (status, text, _) = post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body("first", 15), Some("slow")).await;
    assert_eq!(status, 204, "{text}");
    // 5 tokens left: 20 samples do not fit (decoded, counted as samples).
    let (status, text, h) = post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body("second", 20), Some("slow")).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("over its ingestion rate (1 samples/s, burst 20): this request's 20 samples"), "{text}");
    let wait: u64 =
        h.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
    // Bucket empty: refused before decoding, counted as a request.
    let (status, text, _) = post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body("fourth", 5), Some("slow")).await;
    assert_eq!(status, 204, "{text}");
    let (status, text, h) = post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body("third", 1), Some("slow")).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("over its ingestion rate (1 samples/s, burst 20): this request was not written"), "{text}");
    assert!(h.get("retry-after").is_some());
    // Another tenant has no limit.
    for k in 0..5 {
        let (status, text, _) =
            post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body(&format!("other{k}"), 500), Some("other")).await;
        assert_eq!(status, 204, "{text}");
    }
    // Refused requests wrote nothing; the admitted one is there.
    assert!(read_series(&node.grpc_addr(), "slow", "second").await.is_empty());
    assert!(read_series(&node.grpc_addr(), "slow", "third").await.is_empty());
    assert!(read_series(&node.grpc_addr(), "slow", "big").await.is_empty());
    assert_eq!(read_series(&node.grpc_addr(), "slow", "first").await.len(), 15);
    assert_eq!(read_series(&node.grpc_addr(), "slow", "fourth").await.len(), 5);
    // Per-tenant usage on /metrics: received, written, rejected by reason,
    // series in the head.
    let m = |s: &'static str| {
        let c = c.clone();
        let url = node.web_url("/metrics");
        async move { metric_value(&c, &url, s).await }
    };
    assert_eq!(m("strata_ingester_tenant_samples_received_total{tenant=\"slow\"}").await, 61.0);
    assert_eq!(m("strata_ingester_tenant_samples_written_total{tenant=\"slow\"}").await, 20.0);
    assert_eq!(m("strata_ingester_tenant_samples_rejected_total{tenant=\"slow\",reason=\"rate_limited\"}").await, 41.0);
    assert_eq!(m("strata_ingester_tenant_requests_rate_limited_total{tenant=\"slow\"}").await, 1.0);
    assert_eq!(m("strata_ingester_tenant_samples_written_total{tenant=\"other\"}").await, 2500.0);
    assert_eq!(m("strata_ingester_tenant_head_series{tenant=\"other\"}").await, 2500.0);
    assert_eq!(m("strata_ingester_tenant_head_series{tenant=\"slow\"}").await, 20.0);
    // A higher limit takes effect without a restart (the file is checked every 5 s).
    std::fs::write(&file, "tenants:\n  slow: { ingestion_rate: 100000, ingestion_burst: 100000 }\n")
        .expect("overrides");
    let mut status = 0;
    for _ in 0..60 {
        status = post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body("third", 500), Some("slow")).await.0;
        if status == 204 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(status, 204, "the raised limit was not picked up");
}

/// Per-tenant series limits from `--limits.overrides-file`: new series past
/// a tenant's `max_series_per_metric` or `max_series` are refused (400
/// naming the limit, the rest of the request written), existing series
/// keep being written, other tenants are unaffected, the refusals are
/// counted by reason, and a raised limit applies without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_series_limits_gets_new_series_refused() {
    let dir = test_dir();
    let file = dir.path().join("overrides.yml");
    std::fs::write(&file, "tenants:\n  capped: { max_series: 5, max_series_per_metric: 3 }\n").expect("overrides");
    let flag = format!("--limits.overrides-file={}", file.display());
    let cluster = Cluster::start(dir.path(), 1, &[&flag]).await;
    let node = &cluster.nodes[0];
    let url = node.write_url();
    let c = reqwest::Client::new();
    let now = now_ms();
    let body = |name: &str, from: usize, to: usize, t: i64| {
        let ts = (from..to).map(|i| series(&[("__name__", name), ("i", &i.to_string())], t, 1.0)).collect();
        rw::encode_v1(&WriteRequest { timeseries: ts, metadata: vec![] })
    };
    // 4 series of one metric: the 4th is past max_series_per_metric (3).
    let (status, text, _) =
        post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body("a", 0, 4, now), Some("capped")).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("1 of 4 samples rejected") && text.contains("max_series_per_metric"), "{text}");
    // 3 series of another metric: only 2 fit under max_series (5).
    let (status, text, _) =
        post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body("b", 0, 3, now), Some("capped")).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("1 of 3 samples rejected") && text.contains("limit of 5 series (max_series"), "{text}");
    // Existing series keep taking samples.
    let (status, text, _) =
        post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body("a", 0, 3, now + 15_000), Some("capped")).await;
    assert_eq!(status, 204, "{text}");
    assert_eq!(read_series(&node.grpc_addr(), "capped", "a").await.len(), 3);
    assert_eq!(read_series(&node.grpc_addr(), "capped", "b").await.len(), 2);
    // Another tenant: no limit.
    let (status, text, _) =
        post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body("a", 0, 50, now), Some("free")).await;
    assert_eq!(status, 204, "{text}");
    let rejected = metric_value(
        &c,
        &node.web_url("/metrics"),
        "strata_ingester_tenant_samples_rejected_total{tenant=\"capped\",reason=\"series_limit\"}",
    )
    .await;
    assert_eq!(rejected, 2.0);
    // Raised without a restart.
    std::fs::write(&file, "tenants:\n  capped: { max_series: 100 }\n").expect("overrides");
    let mut status = 0;
    for _ in 0..60 {
        status =
            post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), body("a", 0, 10, now + 30_000), Some("capped")).await.0;
        if status == 204 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(status, 204, "the raised limit was not picked up");
}

/// Per-tenant label limits from `--limits.overrides-file` replace the
/// `--limits.*` flags for that tenant, looser or stricter, on the node that
/// received the write and on the leader a follower forwards it to: a tenant
/// allowed 40 labels writes 35-label series through a follower (the flag's
/// 30 would refuse them), a tenant limited to 8-byte values is refused with
/// a 400 naming the limit, another tenant keeps the flags' limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tenant_label_limits_replace_the_flags_on_every_node() {
    let dir = test_dir();
    let file = dir.path().join("overrides.yml");
    std::fs::write(&file, "tenants:\n  wide: { max_labels_per_series: 40 }\n  narrow: { max_label_value_length: 8 }\n")
        .expect("overrides");
    let flag = format!("--limits.overrides-file={}", file.display());
    let cluster = Cluster::start(dir.path(), 3, &[&flag]).await;
    let leader = cluster.wait_leader(None, std::time::Duration::from_secs(30)).await;
    let follower = cluster.nodes.iter().find(|n| n.id != leader).expect("a follower");
    let url = follower.write_url();
    let c = reqwest::Client::new();
    let now = now_ms();
    let wide_series = |name: &str| {
        let mut labels: Vec<(String, String)> = vec![("__name__".into(), name.into())];
        labels.extend((0..34).map(|i| (format!("l{i:02}"), "v".to_string())));
        let refs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        rw::encode_v1(&WriteRequest { timeseries: vec![series(&refs, now, 1.0)], metadata: vec![] })
    };
    let (status, text, _) =
        post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), wide_series("wide_metric"), Some("wide")).await;
    assert_eq!(status, 204, "35 labels within the tenant's 40: {text}");
    // Read where the write was acknowledged: the leader (the follower
    // applies it a replication lag later).
    let leader_node = cluster.nodes.iter().find(|n| n.id == leader).expect("the leader");
    assert_eq!(read_series(&leader_node.grpc_addr(), "wide", "wide_metric").await.len(), 1);
    let (status, text, _) =
        post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), wide_series("wide_metric"), Some("other")).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("over the limit of 30 (max_labels_per_series)"), "{text}");
    let long_value = rw::encode_v1(&WriteRequest {
        timeseries: vec![
            series(&[("__name__", "nm"), ("job", "a-long-job-name")], now, 1.0),
            series(&[("__name__", "nm"), ("job", "short")], now, 1.0),
        ],
        metadata: vec![],
    });
    let (status, text, _) =
        post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), long_value.clone(), Some("narrow")).await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("1 of 2 samples rejected") && text.contains("longer than 8 (max_label_value_length)"),
        "{text}"
    );
    assert_eq!(read_series(&leader_node.grpc_addr(), "narrow", "nm").await.len(), 1);
    let (status, text, _) = post(&c, &url, rw::CONTENT_TYPE_V1, Some("snappy"), long_value, Some("other")).await;
    assert_eq!(status, 204, "{text}");
}
