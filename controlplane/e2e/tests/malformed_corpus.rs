//! A seeded corpus of malformed requests (well over 1,000) against every
//! HTTP endpoint of every binary: the ingester (remote write, OTLP, admin,
//! status), the querier (PromQL API, remote read, SQL), the store gateway
//! and compactor (their web ports), the agent's OTLP receiver and the
//! sample API; plus raw bytes that are not HTTP at all. For every request:
//! no 5xx (a client fault is the client's), a 4xx names the problem (a
//! non-empty body), and no process dies. Between batches each server still
//! answers normal traffic (a write is acknowledged and read back).
//!
//! `STRATA_CORPUS_SEED=<n>` replays a corpus (the seed is printed).

use std::collections::BTreeMap;
use std::time::Duration;

use controlplane_e2e::*;
use prost::Message;
use strata_proto::prometheus::{
    Label, LabelMatcher, Query, ReadRequest, Sample, TimeSeries, WriteRequest, label_matcher, read_request,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A mutation of `base`: flipped bytes, truncation, garbage appended or
/// prepended, random bytes, or nothing at all.
fn mutate(rng: &mut SeededRng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    match rng.index(7) {
        0 => {
            for _ in 0..1 + rng.index(8) {
                if !b.is_empty() {
                    let i = rng.index(b.len());
                    b[i] ^= 1 << rng.index(8);
                }
            }
        }
        1 => b.truncate(rng.index(b.len().max(1))),
        2 => {
            let n = 1 + rng.index(64);
            b.extend(rng.bytes(n));
        }
        3 => {
            let n = 1 + rng.index(16);
            let mut g = rng.bytes(n);
            g.extend(b);
            b = g;
        }
        4 => {
            let n = rng.index(4096);
            b = rng.bytes(n);
        }
        5 => b.clear(),
        _ => {
            // A length prefix claiming far more than follows.
            b = vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f];
            b.extend(rng.bytes(16));
        }
    }
    b
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).expect("snappy")
}

fn write_request(now: i64) -> WriteRequest {
    WriteRequest {
        timeseries: (0..3)
            .map(|i| TimeSeries {
                labels: vec![
                    Label { name: "__name__".into(), value: "corpus_metric".into() },
                    Label { name: "i".into(), value: i.to_string() },
                ],
                samples: vec![Sample { value: i as f64, timestamp: now }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
}

fn read_request() -> Vec<u8> {
    ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: i64::MAX,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Eq as i32,
                name: "__name__".into(),
                value: "corpus_metric".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![read_request::ResponseType::Samples as i32],
    }
    .encode_to_vec()
}

const OTLP_JSON: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"corpus"}}]},"scopeMetrics":[{"metrics":[{"name":"corpus_gauge","gauge":{"dataPoints":[{"asDouble":1.5,"timeUnixNano":"1700000000000000000"}]}}]}]}]}"#;

const BAD_PARAMS: &[&str] = &[
    "",
    "abc",
    "-1",
    "0",
    "1e400",
    "NaN",
    "-Inf",
    "2026-13-45T99:99:99Z",
    "9999999999999999999999",
    "sum(",
    "rate(x[5m]",
    "{__name__=~\"(\"}",
    "up offset",
    "x[1y:0s]",
    "label_replace(up, \"a\", \"$1\", \"b\", \"(\")",
    "histogram_quantile()",
    "%00",
    "\u{0}\u{1}",
    "{}",
    "count_values(\"\", up)",
    "1 +",
    "topk(-1, up)",
    "up[-5m]",
    "up @ abc",
    "\"unterminated",
];

struct Case {
    what: String,
    method: reqwest::Method,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

#[derive(Default)]
struct Tally {
    sent: usize,
    by_status: BTreeMap<u16, usize>,
    failures: Vec<String>,
}

async fn send(client: &reqwest::Client, c: Case, tally: &mut Tally) {
    let mut r = client.request(c.method.clone(), &c.url).timeout(Duration::from_secs(30));
    for (k, v) in &c.headers {
        r = r.header(*k, v.as_str());
    }
    tally.sent += 1;
    let resp = match r.body(c.body).send().await {
        Ok(resp) => resp,
        Err(e) => {
            tally.failures.push(format!("{}: no answer: {e}", c.what));
            return;
        }
    };
    let status = resp.status().as_u16();
    *tally.by_status.entry(status).or_default() += 1;
    let body = resp.text().await.unwrap_or_default();
    if status >= 500 {
        tally.failures.push(format!("{}: {status} {}", c.what, body.chars().take(300).collect::<String>()));
    } else if status >= 400 && body.trim().is_empty() {
        tally.failures.push(format!("{}: {status} with an empty body", c.what));
    }
}

/// Raw bytes at an HTTP port: the server answers 4xx or closes; it must not die.
async fn send_raw(port: u16, bytes: &[u8], what: &str, tally: &mut Tally) {
    tally.sent += 1;
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        tally.failures.push(format!("{what}: connection refused"));
        return;
    };
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(12)]).to_string();
    if head.starts_with("HTTP/1.1 5") {
        tally.failures.push(format!("{what}: {head}"));
    }
    *tally.by_status.entry(head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)).or_default() += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_corpus_gets_clear_4xx_and_crashes_nothing() {
    let seed: u64 = std::env::var("STRATA_CORPUS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("malformed corpus: seed {seed} (replay with STRATA_CORPUS_SEED={seed})");
    let mut rng = SeededRng(seed);
    let dir = test_dir();
    let mut cluster = Cluster::start(dir.path(), 1, &[]).await;
    let objstore = dir.path().join("objstore");
    let mut store = StoreGateway::start(dir.path(), &objstore, &[]).await;
    let mut querier = Querier::start(
        dir.path(),
        &[cluster.nodes[0].grpc_addr(), store.grpc_addr()],
        &["--sql.enabled=true", "--query.max-samples=100000"],
    )
    .await;
    let compactor_port = free_port();
    let mut compactor = Proc::start(
        "compactor",
        &bin("strata"),
        &[
            "compact".into(),
            format!("--web.listen-address=127.0.0.1:{compactor_port}"),
            format!("--objstore.path={}", objstore.display()),
        ],
        &[],
        dir.path(),
    );
    wait_ready(&format!("http://127.0.0.1:{compactor_port}/-/ready"), Duration::from_secs(30)).await;
    let mut agent = Agent::start(dir.path(), "agent", &cluster.nodes[0].write_url(), "qa", "dp-qa-01", &[]).await;
    let mut api = SampleApi::start(dir.path(), "api", &agent, "http/protobuf", "shop", &[]).await;

    let ingester = cluster.nodes[0].web_url("");
    let q = querier.base();
    let store_web = store.web_url("");
    let compactor_web = format!("http://127.0.0.1:{compactor_port}");
    let agent_otlp = format!("http://127.0.0.1:{}", agent.http_port);
    let agent_web = format!("http://127.0.0.1:{}", agent.web_port);
    let api_base = api.url("");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let rw_raw = write_request(now).encode_to_vec();
    let rw_v2_type = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
    let read_raw = read_request();
    let client = reqwest::Client::new();
    let mut tally = Tally::default();

    for round in 0..10 {
        let mut cases: Vec<Case> = Vec::new();
        let post = |what: &str, url: String, headers: Vec<(&'static str, String)>, body: Vec<u8>| Case {
            what: what.to_string(),
            method: reqwest::Method::POST,
            url,
            headers,
            body,
        };
        // Remote write: broken protobuf inside valid snappy, broken snappy,
        // wrong headers, bad tenants.
        for _ in 0..20 {
            let body = match rng.index(3) {
                0 => snappy(&mutate(&mut rng, &rw_raw)),
                1 => mutate(&mut rng, &snappy(&rw_raw)),
                _ => snappy(&rw_raw),
            };
            let ct =
                rng.pick(&["application/x-protobuf", rw_v2_type, "text/plain", "", "application/json"]).to_string();
            let enc = rng.pick(&["snappy", "snappy", "gzip", "", "identity, snappy"]).to_string();
            let tenant = rng.pick(&["anonymous", "", "a/b", "..", "bad tenant!", &"x".repeat(300)]).to_string();
            let mut h = vec![("Content-Type", ct), ("Content-Encoding", enc)];
            if !tenant.is_empty() {
                h.push(("X-Scope-OrgID", tenant));
            }
            cases.push(post("ingester remote write", format!("{ingester}/api/v1/write"), h, body));
        }
        // OTLP into the ingester and the agent: protobuf garbage and broken JSON.
        for (who, url) in [
            ("ingester OTLP", format!("{ingester}/otlp/v1/metrics")),
            ("agent OTLP", format!("{agent_otlp}/v1/metrics")),
        ] {
            for _ in 0..10 {
                let (ct, body) = if rng.index(2) == 0 {
                    ("application/json", mutate(&mut rng, OTLP_JSON.as_bytes()))
                } else {
                    ("application/x-protobuf", mutate(&mut rng, &rw_raw))
                };
                let ct = if rng.index(5) == 0 { "text/html".to_string() } else { ct.to_string() };
                let mut h = vec![("Content-Type", ct)];
                if rng.index(4) == 0 {
                    h.push(("Content-Encoding", "gzip".into()));
                }
                cases.push(post(who, url.clone(), h, body));
            }
        }
        // Admin: broken JSON and membership changes that cannot be made.
        for _ in 0..6 {
            let (path, base) = *rng.pick(&[
                ("/api/v1/admin/raft/membership", r#"{"members":[1]}"#),
                ("/api/v1/admin/raft/learner", r#"{"node_id":7,"addr":"127.0.0.1:1"}"#),
            ]);
            let body = match rng.index(4) {
                0 => br#"{"members":[]}"#.to_vec(),
                1 => br#"{"members":[42]}"#.to_vec(),
                2 => vec![b'{'; 100_000],
                _ => {
                    let m = mutate(&mut rng, base.as_bytes());
                    // A mutation that is still a valid learner request would wait for an unreachable node.
                    if path.ends_with("learner") && serde_json::from_slice::<serde_json::Value>(&m).is_ok() {
                        b"{".to_vec()
                    } else {
                        m
                    }
                }
            };
            cases.push(post(
                "ingester admin",
                format!("{ingester}{path}"),
                vec![("Content-Type", "application/json".into())],
                body,
            ));
        }
        // PromQL API: bad parameters of every kind.
        for _ in 0..40 {
            let (path, params): (&str, &[&str]) = *rng.pick(&[
                ("/api/v1/query", &["query", "time", "timeout", "limit"][..]),
                ("/api/v1/query_range", &["query", "start", "end", "step", "timeout"][..]),
                ("/api/v1/series", &["match[]", "start", "end", "limit"][..]),
                ("/api/v1/labels", &["match[]", "start", "end"][..]),
                ("/api/v1/label/__name__/values", &["match[]", "start", "end"][..]),
                ("/api/v1/label/%FF%FE/values", &["match[]"][..]),
                ("/api/v1/metadata", &["metric", "limit"][..]),
                ("/api/v1/query_exemplars", &["query", "start", "end"][..]),
                ("/api/v1/format_query", &["query"][..]),
            ]);
            let mut pairs: Vec<(String, String)> = Vec::new();
            for p in params {
                if rng.index(4) != 0 {
                    pairs.push((p.to_string(), rng.pick(BAD_PARAMS).to_string()));
                }
            }
            if path == "/api/v1/query_range" && rng.index(3) == 0 {
                pairs = vec![
                    ("query".into(), "up".into()),
                    ("start".into(), "0".into()),
                    ("end".into(), "100000000000".into()),
                    ("step".into(), rng.pick(&["1", "0.001", "-1", "0"]).to_string()),
                ];
            }
            let url = reqwest::Url::parse_with_params(&format!("{q}{path}"), &pairs).expect("url");
            let method = if rng.index(3) == 0 { reqwest::Method::POST } else { reqwest::Method::GET };
            cases.push(Case {
                what: format!("querier {method} {path}"),
                method,
                url: url.to_string(),
                headers: vec![],
                body: vec![],
            });
        }
        // Remote read and SQL.
        for _ in 0..6 {
            let body = match rng.index(3) {
                0 => snappy(&mutate(&mut rng, &read_raw)),
                1 => mutate(&mut rng, &snappy(&read_raw)),
                _ => vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0],
            };
            let h = vec![
                ("Content-Type", "application/x-protobuf".into()),
                ("Content-Encoding", rng.pick(&["snappy", "gzip"]).to_string()),
            ];
            cases.push(post("querier remote read", format!("{q}/api/v1/read"), h, body));
        }
        for _ in 0..4 {
            let sql = *rng.pick(&[
                "",
                "SELEC",
                "SELECT * FROM nope",
                "SELECT 1/",
                "DROP TABLE samples",
                "SELECT * FROM samples WHERE",
                "\u{0}",
            ]);
            cases.push(post("querier SQL", format!("{q}/api/v1/sql"), vec![], mutate(&mut rng, sql.as_bytes())));
        }
        // Web ports that serve only metrics and probes: wrong paths and methods.
        for base in [&store_web, &compactor_web, &agent_web, &ingester, &q] {
            let path = *rng.pick(&["/nope", "/metrics/x", "/-/ready/..", "/api/v2/write", "/%00"]);
            cases.push(Case {
                what: format!("unknown path on {base}"),
                method: reqwest::Method::GET,
                url: format!("{base}{path}"),
                headers: vec![],
                body: vec![],
            });
            cases.push(Case {
                what: format!("DELETE /metrics on {base}"),
                method: reqwest::Method::DELETE,
                url: format!("{base}/metrics"),
                headers: vec![],
                body: vec![],
            });
        }
        // The sample API: invalid orders, payments, searches and fault updates.
        for _ in 0..6 {
            let (path, base) = *rng.pick(&[
                ("/api/orders", r#"{"product_id":1,"quantity":2}"#),
                ("/api/payments", r#"{"order_id":1,"amount":9.5}"#),
                ("/admin/faults", r#"{"error_rate":0.0}"#),
            ]);
            let mut body = mutate(&mut rng, base.as_bytes());
            if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
                // Still valid JSON: make the values invalid instead.
                body = br#"{"product_id":-1,"quantity":0,"order_id":-3,"amount":-1,"error_rate":7}"#.to_vec();
            }
            cases.push(post(
                "sample API",
                format!("{api_base}{path}"),
                vec![("Content-Type", "application/json".into())],
                body,
            ));
        }
        for _ in 0..2 {
            let q = rng.pick(BAD_PARAMS).to_string();
            let url = reqwest::Url::parse_with_params(
                &format!("{api_base}/api/search"),
                &[("q", q), ("limit", "abc".into())],
            )
            .expect("url");
            cases.push(Case {
                what: "sample API search".into(),
                method: reqwest::Method::GET,
                url: url.to_string(),
                headers: vec![],
                body: vec![],
            });
        }
        for c in cases {
            send(&client, c, &mut tally).await;
        }
        // Not HTTP at all.
        let ports: Vec<u16> = [&ingester, &q, &store_web, &compactor_web, &agent_otlp, &agent_web, &api_base]
            .iter()
            .map(|u| reqwest::Url::parse(u).expect("url").port().expect("port"))
            .collect();
        for &port in &ports {
            let n = 1 + rng.index(2000);
            let bytes = match rng.index(5) {
                0 => rng.bytes(n),
                1 => b"GET / HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n".to_vec(),
                2 => format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000)).into_bytes(),
                3 => b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
                _ => b"POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec(),
            };
            send_raw(port, &bytes, &format!("raw bytes at port {port}"), &mut tally).await;
        }

        // Normal traffic still works everywhere.
        let t = now + round as i64 * 1000 + 1;
        let ok = vec![(labels(&[("__name__", "corpus_ok")]), vec![(t, round as f64)])];
        let (s, b) = remote_write(&client, &cluster.nodes[0].write_url(), "anonymous", &ok).await;
        assert_eq!(s, 204, "round {round}: a valid write after the corpus: {b}");
        let v = instant_query(&client, &q, "anonymous", "corpus_ok", t).await;
        assert_eq!(v["data"]["result"][0]["value"][1], round.to_string(), "round {round}: {v}");
        for url in [
            store.web_url("/-/ready"),
            format!("{compactor_web}/-/ready"),
            format!("{agent_web}/-/ready"),
            api.url("/health"),
        ] {
            let s = client.get(&url).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            assert_eq!(s, 200, "round {round}: {url}");
        }
    }

    for (name, p) in [
        ("ingester", cluster.nodes[0].proc.as_mut().expect("running")),
        ("compactor", &mut compactor),
        ("store", &mut store.proc),
        ("querier", &mut querier.proc),
        ("agent", &mut agent.proc),
        ("sample API", &mut api.proc),
    ] {
        assert!(p.exit_status().is_none(), "{name} exited during the corpus:\n{}", p.log_tail());
    }
    eprintln!("malformed corpus: seed {seed}: {} requests, statuses {:?}", tally.sent, tally.by_status);
    assert!(tally.sent >= 1000, "{} requests", tally.sent);
    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed:\n{}",
        tally.failures.len(),
        tally.sent,
        tally.failures.join("\n")
    );
}
