//! `--web.config.file` on an ingester and a querier (real binaries on
//! loopback): every route of both is refused without credentials (401
//! with `WWW-Authenticate`) and with a credential lacking its role (403),
//! a path no table lists needs `admin`, and tenant A's credentials never
//! see tenant B's series, label values or data — whatever `X-Scope-OrgID`
//! they send. The ruler: every route checked the same way, its rules and
//! alerts per tenant through the querier (which passes the caller's
//! credential on), uploads need `write`, results written with its own
//! gateway token.

use std::time::Duration;

use controlplane_e2e::*;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

fn sha256_hex(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
}

fn client(authorization: Option<String>) -> reqwest::Client {
    let mut h = HeaderMap::new();
    if let Some(a) = authorization {
        h.insert(AUTHORIZATION, HeaderValue::from_str(&a).expect("header"));
    }
    reqwest::Client::builder().default_headers(h).timeout(Duration::from_secs(20)).build().expect("client")
}

fn basic(user: &str, password: &str) -> Option<String> {
    use base64::Engine;
    Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))))
}

/// One ingester (its own single-voter cluster) with `web_flag`, ready.
/// (`Cluster::start` waits for a leader through the status API, which
/// needs a credential once a web config is on.)
async fn start_ingester(dir: &std::path::Path, web_flag: &str) -> Node {
    let (grpc, web) = (free_port(), free_port());
    let mut node = Node {
        id: 1,
        grpc,
        web,
        dir: dir.join("node-1"),
        proc: None,
        extra: vec![web_flag.to_string()],
        peers: format!("1=127.0.0.1:{grpc}"),
    };
    node.start(dir);
    wait_ready(&node.web_url("/-/ready"), Duration::from_secs(30)).await;
    node
}

/// (method, path, body) of a route.
type Route = (&'static str, &'static str, &'static [u8]);

async fn call(c: &reqwest::Client, base: &str, (method, path, body): Route) -> reqwest::Response {
    let url = format!("{base}{path}");
    let req = match method {
        "GET" => c.get(url),
        "POST" => c.post(url).body(body.to_vec()),
        "DELETE" => c.delete(url),
        m => panic!("method {m}"),
    };
    req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Every route: 401 without credentials, 403 with `wrong`, neither with `right`.
async fn check_routes(base: &str, routes: &[Route], wrong: &reqwest::Client, right: &reqwest::Client) {
    let anonymous = client(None);
    for &route in routes {
        let r = call(&anonymous, base, route).await;
        assert_eq!(r.status().as_u16(), 401, "{} {} without credentials", route.0, route.1);
        assert!(r.headers().contains_key("www-authenticate"), "{} {}: no WWW-Authenticate", route.0, route.1);
        let r = call(wrong, base, route).await;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 403, "{} {} with a credential lacking the role: {body}", route.0, route.1);
        assert!(body.contains("lacks the"), "{} {}: {body}", route.0, route.1);
        let r = call(right, base, route).await;
        let status = r.status().as_u16();
        assert!(status != 401 && status != 403, "{} {} with the right role: {status}", route.0, route.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_roles_and_tenants_on_every_route() {
    let dir = test_dir();
    let hash = |pw: &str| bcrypt::hash(pw, 4).expect("bcrypt");
    let web_config = format!(
        "basic_auth_users:\n  reader-a: '{}'\n  reader-b: '{}'\n  ops: '{}'\n\
         tenants:\n\
         \x20 - {{ user: reader-a, tenant: team-a, roles: [read] }}\n\
         \x20 - {{ user: reader-b, tenant: team-b, roles: [read] }}\n\
         \x20 - {{ token_sha256: {}, tenant: team-a, roles: [write] }}\n\
         \x20 - {{ token_sha256: {}, tenant: team-b, roles: [write] }}\n",
        hash("pa"),
        hash("pb"),
        hash("po"),
        sha256_hex("token-a"),
        sha256_hex("token-b"),
    );
    let web_file = dir.path().join("web.yml");
    std::fs::write(&web_file, web_config).expect("write web config");
    let web_flag = format!("--web.config.file={}", web_file.display());

    let node = start_ingester(dir.path(), &web_flag).await;
    let querier = Querier::start(dir.path(), &[node.grpc_addr()], &[&web_flag]).await;

    let writer_a = client(Some("Bearer token-a".into()));
    let writer_b = client(Some("Bearer token-b".into()));
    let reader_a = client(basic("reader-a", "pa"));
    let reader_b = client(basic("reader-b", "pb"));
    let ops = client(basic("ops", "po"));

    // Ingester: writes need write, status and /metrics read, the admin API
    // (and any path no table lists) admin.
    let ingester = node.web_url("");
    check_routes(&ingester, &[("POST", "/api/v1/write", b""), ("POST", "/otlp/v1/metrics", b"")], &reader_a, &writer_a)
        .await;
    check_routes(&ingester, &[("GET", "/api/v1/status/raft", b""), ("GET", "/metrics", b"")], &writer_a, &reader_a)
        .await;
    check_routes(
        &ingester,
        &[
            ("POST", "/api/v1/admin/raft/learner", b"{"),
            ("POST", "/api/v1/admin/raft/membership", b"{"),
            ("POST", "/api/v1/admin/flush", b""),
            ("GET", "/api/v1/admin/not-a-route", b""),
            ("GET", "/not-a-route", b""),
        ],
        &reader_a,
        &ops,
    )
    .await;

    // Tenant A and B write through their tokens; A's token cannot write as B.
    let t = now_ms();
    let a_data = vec![(labels(&[("__name__", "iso_a"), ("job", "x")]), vec![(t - 2000, 1.0)])];
    let b_data = vec![(labels(&[("__name__", "iso_b"), ("job", "x")]), vec![(t - 2000, 2.0)])];
    let (s, body) = remote_write(&writer_a, &node.write_url(), "team-a", &a_data).await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = remote_write(&writer_b, &node.write_url(), "team-b", &b_data).await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = remote_write(&writer_a, &node.write_url(), "team-b", &b_data).await;
    assert_eq!(s, 403, "token A writing as team-b: {body}");

    // Querier: every route needs read (a write token is refused).
    let q = querier.base();
    check_routes(
        &q,
        &[
            ("GET", "/api/v1/query?query=up", b""),
            ("GET", "/api/v1/query_range?query=up&start=0&end=60&step=15", b""),
            ("GET", "/api/v1/series?match[]=up", b""),
            ("GET", "/api/v1/labels", b""),
            ("GET", "/api/v1/label/job/values", b""),
            ("GET", "/api/v1/metadata", b""),
            ("GET", "/api/v1/query_exemplars?query=up&start=0&end=60", b""),
            ("GET", "/api/v1/status/buildinfo", b""),
            ("GET", "/api/v1/rules", b""),
            ("GET", "/api/v1/alerts", b""),
            ("GET", "/api/v1/format_query?query=up", b""),
            ("POST", "/api/v1/read", b"x"),
            ("GET", "/api/v1/stores", b""),
            ("POST", "/api/v1/sql", b"select 1"),
            ("GET", "/metrics", b""),
            ("GET", "/", b""),
            ("GET", "/assets/none.js", b""),
        ],
        &writer_a,
        &reader_a,
    )
    .await;
    check_routes(&q, &[("GET", "/not-a-route", b""), ("GET", "/api/v2/anything", b"")], &reader_a, &ops).await;

    // Each reader sees its own tenant only, whatever X-Scope-OrgID it sends.
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["data"]["result"]
            .as_array()
            .map(|r| r.iter().filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let query = r#"{__name__=~"iso_.+"}"#;
    let mut seen_a = Vec::new();
    for _ in 0..50 {
        seen_a = names(&instant_query(&reader_a, &q, "team-a", query, t).await);
        if !seen_a.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen_a, vec!["iso_a".to_string()]);
    assert_eq!(names(&instant_query(&reader_b, &q, "team-b", query, t).await), vec!["iso_b".to_string()]);
    // Without a header the credential's tenant is used.
    let r = reader_a
        .get(format!("{q}/api/v1/query"))
        .query(&[("query", query.to_string()), ("time", format!("{}", t as f64 / 1000.0))])
        .send()
        .await
        .expect("query");
    assert_eq!(names(&r.json().await.expect("json")), vec!["iso_a".to_string()]);
    // Another tenant's header: 403, not B's data.
    let r = reader_a
        .get(format!("{q}/api/v1/label/__name__/values"))
        .header("X-Scope-OrgID", "team-b")
        .send()
        .await
        .expect("label values");
    assert_eq!(r.status().as_u16(), 403);
    let values: serde_json::Value = reader_a
        .get(format!("{q}/api/v1/label/__name__/values"))
        .send()
        .await
        .expect("label values")
        .json()
        .await
        .expect("json");
    let values: Vec<&str> = values["data"].as_array().expect("data").iter().filter_map(|v| v.as_str()).collect();
    assert!(values.contains(&"iso_a") && !values.contains(&"iso_b"), "{values:?}");
    let series: serde_json::Value = reader_b
        .get(format!("{q}/api/v1/series"))
        .query(&[("match[]", query)])
        .send()
        .await
        .expect("series")
        .json()
        .await
        .expect("json");
    let series: Vec<&str> =
        series["data"].as_array().expect("data").iter().filter_map(|s| s["__name__"].as_str()).collect();
    assert_eq!(series, vec!["iso_b"]);
}

/// The agent authenticates with a bearer token from a file
/// (`--remote-write.bearer-token-file`); while the ingester refuses the
/// token (401) the data stays in the agent's queue, and once the file
/// holds the right token (read on every request) it is delivered, into
/// the token's tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_refused_data_queued_and_delivers_once_its_token_is_fixed() {
    let dir = test_dir();
    let web_file = dir.path().join("web.yml");
    std::fs::write(
        &web_file,
        format!("tenants:\n  - {{ token_sha256: {}, tenant: team-a, roles: [write] }}\n", sha256_hex("good")),
    )
    .expect("web config");
    let node = start_ingester(dir.path(), &format!("--web.config.file={}", web_file.display())).await;
    let token = dir.path().join("token");
    std::fs::write(&token, "wrong\n").expect("token");
    let token_flag = token.display().to_string();
    let agent = Agent::start(
        dir.path(),
        "agent",
        &node.write_url(),
        "prod",
        "dp-1",
        &["--remote-write.bearer-token-file", &token_flag],
    )
    .await;
    let t = now_ms();
    let otlp = serde_json::json!({"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeMetrics": [{"metrics": [{"name": "jobs", "sum": {"isMonotonic": true, "aggregationTemporality": 2,
        "dataPoints": [{"timeUnixNano": (t * 1_000_000).to_string(), "asDouble": 3.0}]}}]}]}]});
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/metrics", agent.http_port))
        .json(&otlp)
        .send()
        .await
        .expect("otlp to the agent");
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(read_series(&node.grpc_addr(), "team-a", "jobs_total").await.is_empty(), "delivered with a wrong token");
    std::fs::write(&token, "good\n").expect("token");
    wait_for(Duration::from_secs(30), "the queued sample delivered with the fixed token", || async {
        let got = read_series(&node.grpc_addr(), "team-a", "jobs_total").await;
        let (labels, samples) = got.iter().next()?;
        assert!(labels.contains("environment=prod"), "{labels}");
        (samples == &vec![(t, 3.0)]).then_some(())
    })
    .await;
    // Nothing went to the default tenant.
    assert!(read_series(&node.grpc_addr(), "anonymous", "jobs_total").await.is_empty());
}

/// Debian's Prometheus, unchanged, against an ingester and a querier that
/// require credentials: remote write with `basic_auth` and with an
/// `authorization` bearer token (0 failed samples, each into its
/// credential's tenant), and remote read with `basic_auth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_and_reads_with_basic_auth_and_a_bearer_token() {
    if !require("prometheus") {
        return;
    }
    let dir = test_dir();
    let web_file = dir.path().join("web.yml");
    std::fs::write(
        &web_file,
        format!(
            "basic_auth_users:\n  prom: '{}'\ntenants:\n\
             \x20 - {{ user: prom, tenant: team-p, roles: [read, write] }}\n\
             \x20 - {{ token_sha256: {}, tenant: team-q, roles: [write] }}\n",
            bcrypt::hash("pw", 4).expect("bcrypt"),
            sha256_hex("ptoken")
        ),
    )
    .expect("web config");
    let web_flag = format!("--web.config.file={}", web_file.display());
    let node = start_ingester(dir.path(), &web_flag).await;
    let querier = Querier::start(dir.path(), &[node.grpc_addr()], &[&web_flag]).await;
    // A series only Strata has, for remote read to bring back.
    let t = now_ms();
    let only = vec![(labels(&[("__name__", "only_in_strata"), ("job", "x")]), vec![(t - 1000, 42.0)])];
    let (s, body) = remote_write(&client(basic("prom", "pw")), &node.write_url(), "team-p", &only).await;
    assert_eq!(s, 204, "{body}");

    let port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n\
             remote_write:\n\
             \x20 - url: {w}\n    basic_auth: {{username: prom, password: pw}}\n    queue_config: {{batch_send_deadline: 1s}}\n\
             \x20 - url: {w}\n    authorization: {{credentials: ptoken}}\n    queue_config: {{batch_send_deadline: 1s}}\n\
             remote_read:\n  - url: {r}/api/v1/read\n    basic_auth: {{username: prom, password: pw}}\n    read_recent: true\n",
            w = node.write_url(),
            r = querier.base()
        ),
    )
    .expect("prometheus.yml");
    let args = vec![
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", dir.path().join("prom").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    let _prom = Proc::start("prometheus", std::path::Path::new("prometheus"), &args, &[], dir.path());
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/-/ready"), Duration::from_secs(30)).await;
    for tenant in ["team-p", "team-q"] {
        wait_for(Duration::from_secs(40), "Prometheus' own series in each credential's tenant", || async {
            let s = read_series(&node.grpc_addr(), tenant, "prometheus_build_info").await;
            (s.values().next().map(|v| v.len()).unwrap_or(0) >= 3).then_some(())
        })
        .await;
    }
    assert!(read_series(&node.grpc_addr(), "anonymous", "prometheus_build_info").await.is_empty());
    wait_for(Duration::from_secs(30), "samples sent by both queues", || async {
        let r = query(&base, "prometheus_remote_storage_samples_total").await;
        (r.len() == 2 && r.iter().all(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)))
            .then_some(())
    })
    .await;
    let failed = query_value(&base, "sum(prometheus_remote_storage_samples_failed_total)").await;
    assert_eq!(failed, Some(0.0), "Prometheus saw failed samples");
    // Remote read with basic auth: Prometheus answers a series it never scraped.
    let got = wait_for(Duration::from_secs(20), "only_in_strata through remote read", || async {
        query_value(&base, &format!("only_in_strata @ {}", t as f64 / 1000.0)).await
    })
    .await;
    assert_eq!(got, 42.0);
}

/// `strata hash-password` and `strata hash-token` read the secret from
/// standard input (never an argument) and print what a web config holds.
#[test]
fn the_hash_subcommands_read_stdin_and_print_web_config_values() {
    use std::io::Write;
    let run = |args: &[&str], input: &str| {
        let mut child = std::process::Command::new(bin("strata"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("strata");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("wait");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let (ok, hash) = run(&["hash-password", "--cost", "4"], "s3cret\n");
    assert!(ok && bcrypt::verify("s3cret", &hash).expect("a bcrypt hash"), "{hash}");
    assert_eq!(run(&["hash-token"], "tok\n"), (true, sha256_hex("tok")));
    assert!(!run(&["hash-token"], "").0, "an empty input is refused");
}

/// Tenant isolation on every read endpoint of the querier, with each
/// tenant's data both in Parquet blocks (served by `strata store`, read by
/// SQL) and in the ingester's head: series, label names and values,
/// metadata, exemplars, instant and range queries, SQL rows and remote
/// read answer tenant A's credential with A's data and never a trace of
/// B's (B's metric names, label values, help text and exemplar trace ids
/// are all unique strings that must not appear in any answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_sees_another_tenants_data_on_any_read_endpoint() {
    use strata_proto::prometheus::{Exemplar, Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
    use strata_proto::remote_write as rw;
    let dir = test_dir();
    let web_file = dir.path().join("web.yml");
    std::fs::write(
        &web_file,
        format!(
            "basic_auth_users:\n  reader-a: '{}'\n  ops: '{}'\n\
             tenants:\n\
             \x20 - {{ user: reader-a, tenant: team-a, roles: [read] }}\n\
             \x20 - {{ token_sha256: {}, tenant: team-a, roles: [write] }}\n\
             \x20 - {{ token_sha256: {}, tenant: team-b, roles: [write] }}\n",
            bcrypt::hash("pa", 4).expect("bcrypt"),
            bcrypt::hash("po", 4).expect("bcrypt"),
            sha256_hex("token-a"),
            sha256_hex("token-b"),
        ),
    )
    .expect("web config");
    let web_flag = format!("--web.config.file={}", web_file.display());
    let objstore = dir.path().join("objstore");
    let node = start_ingester(dir.path(), &web_flag).await;
    let store = StoreGateway::start(dir.path(), &objstore, &["--store.sync-interval=500ms"]).await;
    let sql_flags = ["--sql.enabled=true".to_string(), format!("--objstore.path={}", objstore.display())];
    let querier =
        Querier::start(dir.path(), &[node.grpc_addr(), store.grpc_addr()], &[&web_flag, &sql_flags[0], &sql_flags[1]])
            .await;
    let q = querier.base();
    let writer = |token: &str| client(Some(format!("Bearer {token}")));
    let (writer_a, writer_b) = (writer("token-a"), writer("token-b"));
    let reader_a = client(basic("reader-a", "pa"));
    let ops = client(basic("ops", "po"));
    let t = now_ms();
    // Each tenant's data: a series with an exemplar and metadata whose
    // strings carry the tenant's marker.
    let request = |marker: &str, phase: &str, at: i64| {
        let label = |n: &str, v: &str| Label { name: n.into(), value: v.into() };
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    label("__name__", &format!("iso_{marker}_{phase}")),
                    label("owner", &format!("owner_{marker}")),
                ],
                samples: (0..4).map(|k| Sample { value: k as f64, timestamp: at + k * 15_000 }).collect(),
                exemplars: vec![Exemplar {
                    labels: vec![label("trace_id", &format!("trace_{marker}_{phase}"))],
                    value: 1.0,
                    timestamp: at + 15_000,
                }],
                ..Default::default()
            }],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: format!("iso_{marker}_{phase}"),
                help: format!("help_{marker}_{phase}"),
                unit: String::new(),
            }],
        }
    };
    let send = |c: &reqwest::Client, req: WriteRequest| {
        let c = c.clone();
        let url = node.write_url();
        async move {
            let r = c
                .post(url)
                .header("Content-Type", rw::CONTENT_TYPE_V1)
                .header("Content-Encoding", "snappy")
                .body(rw::encode_v1(&req))
                .send()
                .await
                .expect("write");
            assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap_or_default());
        }
    };
    // Older data, cut into blocks and served by the store gateway...
    let old = t - 20 * 60_000;
    send(&writer_a, request("a", "block", old)).await;
    send(&writer_b, request("b", "block", old)).await;
    let (s, v) = node.flush(&ops).await;
    assert_eq!(s, 200, "{v}");
    wait_for(Duration::from_secs(30), "the store gateway to serve both tenants' blocks", || async {
        let got = read_series(&store.grpc_addr(), "team-b", "iso_b_block").await;
        (!got.is_empty()).then_some(())
    })
    .await;
    // ...and newer data in the head.
    send(&writer_a, request("a", "head", t - 60_000)).await;
    send(&writer_b, request("b", "head", t - 60_000)).await;

    let sec = |ms: i64| format!("{}", ms as f64 / 1000.0);
    let (start, end) = (sec(old - 60_000), sec(t + 60_000));
    let all = r#"{__name__=~"iso_.+"}"#;
    let gets: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("/api/v1/query", vec![("query", all.into()), ("time", sec(t))]),
        ("/api/v1/query", vec![("query", format!("last_over_time({all}[30m])")), ("time", sec(t))]),
        (
            "/api/v1/query_range",
            vec![("query", all.into()), ("start", start.clone()), ("end", end.clone()), ("step", "60".into())],
        ),
        ("/api/v1/series", vec![("match[]", all.into()), ("start", start.clone()), ("end", end.clone())]),
        ("/api/v1/labels", vec![("start", start.clone()), ("end", end.clone())]),
        ("/api/v1/label/__name__/values", vec![("start", start.clone()), ("end", end.clone())]),
        ("/api/v1/label/owner/values", vec![("start", start.clone()), ("end", end.clone())]),
        ("/api/v1/metadata", vec![]),
        ("/api/v1/query_exemplars", vec![("query", all.into()), ("start", start.clone()), ("end", end.clone())]),
        ("/api/v1/rules", vec![]),
        ("/api/v1/alerts", vec![]),
    ];
    for with_header in [false, true] {
        let mut seen_block = false;
        let mut seen_head = false;
        for (path, params) in &gets {
            let mut rb = reader_a.get(format!("{q}{path}")).query(params);
            if with_header {
                rb = rb.header("X-Scope-OrgID", "team-a");
            }
            let r = rb.send().await.expect(path);
            let status = r.status().as_u16();
            let text = r.text().await.expect("body");
            assert_eq!(status, 200, "{path}: {text}");
            assert!(!text.contains("_b_") && !text.contains("owner_b"), "{path} shows tenant B's data: {text}");
            seen_block |=
                text.contains("iso_a_block") || text.contains("trace_a_block") || text.contains("help_a_block");
            seen_head |= text.contains("iso_a_head") || text.contains("trace_a_head") || text.contains("help_a_head");
        }
        assert!(seen_block && seen_head, "tenant A's own data, block and head, must be visible");
        // SQL over the blocks: A's rows only.
        let mut rb = reader_a.post(format!("{q}/api/v1/sql")).body("SELECT DISTINCT \"__name__\", l_owner FROM series");
        if with_header {
            rb = rb.header("X-Scope-OrgID", "team-a");
        }
        let text = rb.send().await.expect("sql").text().await.expect("body");
        assert!(text.contains("iso_a_block") && !text.contains("_b_") && !text.contains("owner_b"), "SQL: {text}");
    }
    // Remote read (what Prometheus and Grafana's remote-read clients send):
    // A's credential asking for everything gets A's series only.
    let got = remote_read_labels(&reader_a, &q, old - 60_000, t + 60_000).await;
    assert!(got.iter().any(|l| l.contains("iso_a_block")) && got.iter().any(|l| l.contains("iso_a_head")), "{got:?}");
    assert!(got.iter().all(|l| !l.contains("_b_") && !l.contains("owner_b")), "remote read: {got:?}");
    // Naming B is refused outright.
    let r = reader_a.get(format!("{q}/api/v1/series")).query(&[("match[]", all)]).header("X-Scope-OrgID", "team-b");
    assert_eq!(r.send().await.expect("series").status().as_u16(), 403);
}

/// The label sets a remote read of every series (`SAMPLES` response)
/// returns, as `name=value,...` strings.
async fn remote_read_labels(c: &reqwest::Client, base: &str, lo: i64, hi: i64) -> Vec<String> {
    use prost::Message;
    use strata_proto::prometheus::{LabelMatcher, Query, ReadRequest, ReadResponse, label_matcher, read_request};
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: lo,
            end_timestamp_ms: hi,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Re as i32,
                name: "__name__".into(),
                value: ".+".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![read_request::ResponseType::Samples as i32],
    };
    let r = c
        .post(format!("{base}/api/v1/read"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(strata_proto::remote_write::compress(&req.encode_to_vec()))
        .send()
        .await
        .expect("remote read");
    assert_eq!(r.status().as_u16(), 200);
    let body = r.bytes().await.expect("body");
    let raw = strata_proto::remote_write::decompress(&body, 64 << 20).expect("snappy");
    let resp = ReadResponse::decode(raw.as_slice()).expect("ReadResponse");
    resp.results
        .iter()
        .flat_map(|q| &q.timeseries)
        .map(|ts| ts.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>().join(","))
        .collect()
}

/// The other binaries with a web config: the store gateway's, the
/// compactor's and the agent's web ports (status routes: `/metrics` needs
/// read, probes are open, anything else admin) and the agent's OTLP/HTTP
/// receiver (write): each route refused without credentials (401) and with
/// a credential lacking its role (403), served with the right one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_compactor_and_agent_routes_need_credentials() {
    let dir = test_dir();
    let web_file = dir.path().join("web.yml");
    std::fs::write(
        &web_file,
        format!(
            "basic_auth_users:\n  reader: '{}'\n  ops: '{}'\n\
             tenants:\n\
             \x20 - {{ user: reader, tenant: team-a, roles: [read] }}\n\
             \x20 - {{ token_sha256: {}, tenant: team-a, roles: [write] }}\n",
            bcrypt::hash("pr", 4).expect("bcrypt"),
            bcrypt::hash("po", 4).expect("bcrypt"),
            sha256_hex("token-w"),
        ),
    )
    .expect("web config");
    let web_flag = format!("--web.config.file={}", web_file.display());
    let objstore = dir.path().join("objstore");
    let store = StoreGateway::start(dir.path(), &objstore, &[&web_flag]).await;
    let port = free_port();
    let compactor_args = vec![
        "compact".to_string(),
        format!("--web.listen-address=127.0.0.1:{port}"),
        format!("--objstore.path={}", objstore.display()),
        web_flag.clone(),
    ];
    let _compactor = Proc::start("compactor", &bin("strata"), &compactor_args, &[], dir.path());
    let compactor = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{compactor}/-/ready"), Duration::from_secs(30)).await;
    let agent =
        Agent::start(dir.path(), "agent", "http://127.0.0.1:9/api/v1/write", "prod", "dp-1", &[&web_flag]).await;

    let reader = client(basic("reader", "pr"));
    let writer = client(Some("Bearer token-w".into()));
    let ops = client(basic("ops", "po"));
    let status_routes: &[Route] = &[("GET", "/metrics", b"")];
    let admin_routes: &[Route] = &[("GET", "/not-a-route", b""), ("POST", "/api/v1/anything", b"")];
    for base in [store.web_url(""), compactor.clone(), format!("http://127.0.0.1:{}", agent.web_port)] {
        check_routes(&base, status_routes, &writer, &reader).await;
        check_routes(&base, admin_routes, &reader, &ops).await;
        // Probes stay open.
        for probe in ["/-/healthy", "/-/ready"] {
            let r = client(None).get(format!("{base}{probe}")).send().await.expect("probe");
            assert!(r.status().is_success(), "{base}{probe}: {}", r.status());
        }
    }
    let receiver = format!("http://127.0.0.1:{}", agent.http_port);
    check_routes(&receiver, &[("POST", "/v1/metrics", b"{}")], &reader, &writer).await;
    check_routes(&receiver, admin_routes, &writer, &ops).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ruler_checks_roles_and_keeps_tenants_apart() {
    let dir = test_dir();
    let hash = |pw: &str| bcrypt::hash(pw, 4).expect("bcrypt");
    let web_config = format!(
        "basic_auth_users:\n  reader-a: '{}'\n  reader-b: '{}'\n  ops: '{}'\n\
         tenants:\n\
         \x20 - {{ user: reader-a, tenant: team-a, roles: [read] }}\n\
         \x20 - {{ user: reader-b, tenant: team-b, roles: [read] }}\n\
         \x20 - {{ token_sha256: {}, tenant: team-a, roles: [write] }}\n\
         \x20 - {{ token_sha256: {}, tenants: \"*\", roles: [write] }}\n",
        hash("pa"),
        hash("pb"),
        hash("po"),
        sha256_hex("token-a"),
        sha256_hex("ruler-token"),
    );
    let web_file = dir.path().join("web.yml");
    std::fs::write(&web_file, web_config).expect("write web config");
    let web_flag = format!("--web.config.file={}", web_file.display());
    let node = start_ingester(dir.path(), &web_flag).await;

    let tenants = dir.path().join("rules");
    for (tenant, rule, v) in [("team-a", "a_rule", 1), ("team-b", "b_rule", 2)] {
        std::fs::create_dir_all(tenants.join(tenant)).expect("rules dir");
        std::fs::write(
            tenants.join(tenant).join("g.yml"),
            format!(
                "groups:\n- name: {tenant}-group\n  interval: 1s\n  rules:\n  - record: {rule}\n    expr: vector({v})\n"
            ),
        )
        .expect("rule file");
    }
    let token = dir.path().join("ruler-token");
    std::fs::write(&token, "ruler-token").expect("token");
    let port = free_port();
    let _ruler = Proc::start(
        "ruler",
        &bin("strata"),
        &[
            "ruler".to_string(),
            format!("--web.listen-address=127.0.0.1:{port}"),
            format!("--rule.tenants-dir={}", tenants.display()),
            format!("--endpoint={}", node.grpc_addr()),
            format!("--remote-write.url={}", node.write_url()),
            format!("--remote-write.bearer-token-file={}", token.display()),
            format!("--objstore.path={}", dir.path().join("objstore").display()),
            web_flag.clone(),
        ],
        &[],
        dir.path(),
    );
    let ruler = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{ruler}/-/ready"), Duration::from_secs(30)).await;
    let ruler_url = format!("--ruler.url={ruler}");
    let querier = Querier::start(dir.path(), &[node.grpc_addr()], &[&web_flag, &ruler_url]).await;
    let q = querier.base();

    let writer_a = client(Some("Bearer token-a".into()));
    let reader_a = client(basic("reader-a", "pa"));
    let reader_b = client(basic("reader-b", "pb"));
    let ops = client(basic("ops", "po"));

    // The ruler's routes: reading needs read, rule uploads write, reload admin.
    let reads: &[Route] = &[
        ("GET", "/api/v1/rules", b""),
        ("GET", "/api/v1/alerts", b""),
        ("GET", "/api/v1/rules/ns", b""),
        ("GET", "/api/v1/rules/ns/g", b""),
        ("GET", "/prometheus/config/v1/rules", b""),
        ("GET", "/metrics", b""),
    ];
    check_routes(&ruler, reads, &writer_a, &reader_a).await;
    let writes: &[Route] = &[
        ("POST", "/api/v1/rules/ns", b"name: g\nrules: []\n"),
        ("DELETE", "/api/v1/rules/ns/g", b""),
        ("DELETE", "/prometheus/config/v1/rules/ns", b""),
    ];
    check_routes(&ruler, writes, &reader_a, &writer_a).await;
    check_routes(&ruler, &[("POST", "/-/reload", b""), ("GET", "/not-a-route", b"")], &reader_a, &ops).await;
    // The same through the querier, which forwards the caller's credential.
    check_routes(&q, &reads[..5], &writer_a, &reader_a).await;
    check_routes(&q, writes, &reader_a, &writer_a).await;

    // Each reader sees its own tenant's rules, through the querier too.
    let groups = |c: reqwest::Client, url: String| async move {
        let v: serde_json::Value = c.get(url).send().await.expect("rules").json().await.expect("json");
        v["data"]["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(|g| g["name"].as_str().map(str::to_string)).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    for base in [&ruler, &q] {
        assert_eq!(groups(reader_a.clone(), format!("{base}/api/v1/rules")).await, vec!["team-a-group"]);
        assert_eq!(groups(reader_b.clone(), format!("{base}/api/v1/rules")).await, vec!["team-b-group"]);
        let r = reader_a.get(format!("{base}/api/v1/rules")).header("X-Scope-OrgID", "team-b").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "reader-a asking for team-b's rules at {base}");
    }
    // An upload by team-a's writer lands in team-a only.
    let r = writer_a
        .post(format!("{q}/api/v1/rules/uploaded"))
        .body("name: up-group\ninterval: 1s\nrules:\n- record: up_rule\n  expr: vector(3)\n")
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap_or_default());
    assert_eq!(reader_a.get(format!("{q}/api/v1/rules/uploaded")).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(reader_b.get(format!("{q}/api/v1/rules/uploaded")).send().await.unwrap().status().as_u16(), 404);

    // The results, written with the ruler's gateway token, in each tenant.
    let names = |v: serde_json::Value| -> Vec<String> {
        let mut n: Vec<String> = v["data"]["result"]
            .as_array()
            .map(|r| r.iter().filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        n.sort();
        n
    };
    let query = r#"{__name__=~".+_rule"}"#;
    let seen_a = wait_for(Duration::from_secs(30), "team-a's rule results", || {
        let (c, q) = (reader_a.clone(), q.clone());
        async move {
            let n = names(instant_query(&c, &q, "team-a", query, now_ms()).await);
            (n.len() == 2).then_some(n)
        }
    })
    .await;
    assert_eq!(seen_a, vec!["a_rule".to_string(), "up_rule".to_string()]);
    let seen_b = wait_for(Duration::from_secs(30), "team-b's rule results", || {
        let (c, q) = (reader_b.clone(), q.clone());
        async move {
            let n = names(instant_query(&c, &q, "team-b", query, now_ms()).await);
            (!n.is_empty()).then_some(n)
        }
    })
    .await;
    assert_eq!(seen_b, vec!["b_rule".to_string()]);
}
