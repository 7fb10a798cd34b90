//! The query frontend: range queries split and cached give byte for byte
//! the answer of one unsplit, uncached evaluation — cold, warm, with the
//! window moved forward, after a late sample, per tenant — in process and
//! through a real memcached shared by two queriers, and with memcached
//! gone the queries still answer (the cache bypassed and counted); the
//! sample limit bounds each part.

use std::time::Duration;

use controlplane_e2e::*;

const STEP_MS: i64 = 15_000;
const MINUTES: i64 = 120;

/// `MINUTES` of 15 s samples, offset 7 s from the minute: counters with
/// resets per env × status, a classic histogram per env, gauges. `scale`
/// tells tenants apart.
fn generate(base: i64, scale: f64) -> SeriesData {
    let n = (MINUTES * 60_000 / STEP_MS) as usize;
    let times: Vec<i64> = (0..n).map(|k| base + k as i64 * STEP_MS).collect();
    let mut out = Vec::new();
    for (ei, env) in ["prod", "dev", "qa"].iter().enumerate() {
        for (si, status) in ["200", "500"].iter().enumerate() {
            let mut v = 0.0;
            let samples = times
                .iter()
                .enumerate()
                .map(|(k, &t)| {
                    // A restart every 97 samples.
                    if k % 97 == 96 {
                        v = 0.0;
                    }
                    v += scale * (1.0 + ei as f64 + ((k * 7 + si) % 5) as f64 * if si == 0 { 2.0 } else { 0.2 });
                    (t, v)
                })
                .collect();
            out.push((labels(&[("__name__", "requests_total"), ("env", env), ("status", status)]), samples));
        }
        let mut counts = [0.0f64; 5];
        let mut buckets: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 5];
        for (k, &t) in times.iter().enumerate() {
            let mut cum = 0.0;
            for (b, c) in counts.iter_mut().enumerate() {
                cum += scale * (1 + (k * (b + 1) + ei) % 7) as f64;
                *c += cum;
                buckets[b].push((t, *c));
            }
        }
        for (b, le) in ["0.05", "0.1", "0.5", "1", "+Inf"].iter().enumerate() {
            out.push((labels(&[("__name__", "latency_seconds_bucket"), ("env", env), ("le", le)]), buckets[b].clone()));
        }
        let samples = times
            .iter()
            .enumerate()
            .map(|(k, &t)| (t, scale * (20.0 + ((k as f64) / 11.0 + ei as f64).sin())))
            .collect();
        out.push((labels(&[("__name__", "temperature"), ("env", env)]), samples));
    }
    out
}

const QUERIES: &[&str] = &[
    "sum by (env) (rate(requests_total[5m]))",
    "histogram_quantile(0.95, sum by (le, env) (rate(latency_seconds_bucket[5m])))",
    "sum by (env) (rate(requests_total{status=\"500\"}[5m])) / sum by (env) (rate(requests_total[5m]))",
    "topk(2, temperature)",
    "resets(requests_total[15m])",
    "max_over_time(temperature[10m] offset 5m)",
    "temperature @ end()",
    "time()",
];

/// The raw body of a range query (asserting 200).
async fn range_body(client: &reqwest::Client, base: &str, tenant: &str, q: &str, start: i64, end: i64) -> String {
    let (status, body) = range_response(client, base, tenant, q, start, end).await;
    assert_eq!(status, 200, "{q}: {body}");
    body
}

/// The status and raw body of a range query at 60 s steps.
async fn range_response(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    q: &str,
    start: i64,
    end: i64,
) -> (reqwest::StatusCode, String) {
    let r = client
        .get(format!("{base}/api/v1/query_range"))
        .header("X-Scope-OrgID", tenant)
        .query(&[
            ("query", q.to_string()),
            ("start", format!("{}", start as f64 / 1000.0)),
            ("end", format!("{}", end as f64 / 1000.0)),
            ("step", "60".to_string()),
        ])
        .send()
        .await
        .expect("query_range");
    let status = r.status();
    (status, r.text().await.expect("body"))
}

fn lookups(backend: &str, result: &str) -> String {
    format!("strata_querier_results_cache_lookups_total{{backend=\"{backend}\",result=\"{result}\"}}")
}

/// For every query and tenant: `frontend`'s answer equals `reference`'s byte for byte.
async fn assert_same(
    client: &reqwest::Client,
    frontend: &str,
    reference: &str,
    tenants: &[&str],
    start: i64,
    end: i64,
    what: &str,
) {
    for q in QUERIES {
        for t in tenants {
            let want = range_body(client, reference, t, q, start, end).await;
            assert!(want.contains("\"values\""), "{what}: {q} for {t}: no data: {want}");
            let got = range_body(client, frontend, t, q, start, end).await;
            assert_eq!(got, want, "{what}: {q} for tenant {t}: split/cached answer differs from the unsplit one");
        }
    }
}

/// Writes `MINUTES` of data ending now for two tenants; the first sample's time.
async fn load(client: &reqwest::Client, cluster: &Cluster) -> i64 {
    let base = (now_ms() - MINUTES * 60_000) / 60_000 * 60_000 + 7_000;
    for (tenant, scale) in [("anonymous", 1.0), ("team-b", 10.0)] {
        let data = generate(base, scale);
        let n = data[0].1.len();
        for from in (0..n).step_by(40) {
            let part: SeriesData =
                data.iter().map(|(l, s)| (l.clone(), s[from..(from + 40).min(n)].to_vec())).collect();
            let (status, body) = remote_write(client, &cluster.nodes[0].write_url(), tenant, &part).await;
            assert!((200..300).contains(&status), "write: {status} {body}");
        }
    }
    base
}

#[tokio::test(flavor = "multi_thread")]
async fn split_and_cached_range_queries_answer_exactly_like_one_evaluation() {
    let memcached_found = require("memcached");
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let endpoints = vec![cluster.nodes[0].grpc_addr()];
    let client = reqwest::Client::new();
    let base = load(&client, &cluster).await;
    // The reference: one evaluation per query, no cache.
    let reference =
        Querier::start(dir.path(), &endpoints, &["--query.split-interval=0s", "--query.results-cache.max-bytes=0"])
            .await;
    // 10-minute splits: a 2 h query is 13 of them, the first partial.
    let frontend = ["--query.split-interval=10m", "--query.cache-freshness=10m"];
    let inproc = Querier::start(dir.path(), &endpoints, &frontend).await;
    let (r, a) = (reference.base(), inproc.base());
    let tenants = ["anonymous", "team-b"];
    let metrics = format!("{a}/metrics");

    // An unaligned start (7 s past the minute) and an end at now.
    let (start, end) = (base + 5_000, now_ms());
    assert_same(&client, &a, &r, &tenants, start, end, "cold").await;
    let misses = metric_value(&client, &metrics, &lookups("inprocess", "miss")).await;
    let hits = metric_value(&client, &metrics, &lookups("inprocess", "hit")).await;
    assert!(misses >= 10.0 && hits == 0.0, "cold: {misses} misses, {hits} hits");
    assert!(metric_value(&client, &metrics, "strata_querier_results_cache_bytes").await > 0.0);
    let splits = metric_value(&client, &metrics, "strata_querier_query_splits_total").await;
    assert!(splits >= (QUERIES.len() - 1) as f64 * 2.0 * 12.0, "{splits} splits");
    // Cold consecutive splits run as one query (up to 31): each query of
    // each tenant in one evaluation, not one per split (13).
    let evaluations = metric_value(&client, &metrics, "strata_querier_query_split_evaluations_total").await;
    assert!(evaluations > 0.0 && evaluations <= QUERIES.len() as f64 * 2.0, "cold: {evaluations} evaluations");

    // Refreshed: the same bytes, from the cache.
    assert_same(&client, &a, &r, &tenants, start, end, "warm").await;
    let warm_hits = metric_value(&client, &metrics, &lookups("inprocess", "hit")).await;
    assert!(warm_hits >= (QUERIES.len() - 1) as f64 * 2.0 * 11.0, "warm: only {warm_hits} hits");

    // A sample arriving late — timestamped inside the window just
    // answered, within the freshness — shows on the next refresh.
    let late_t = end - 180_000;
    let late = vec![(labels(&[("__name__", "temperature"), ("env", "edge")]), vec![(late_t, 999.0)])];
    let (status, body) = remote_write(&client, &cluster.nodes[0].write_url(), "anonymous", &late).await;
    assert!((200..300).contains(&status), "late write: {status} {body}");
    let shown = range_body(&client, &a, "anonymous", "temperature", start, end).await;
    assert!(shown.contains("\"999\""), "the late sample is missing: {shown}");
    assert_same(&client, &a, &r, &tenants, start, end, "after a late sample").await;
    // The window moved forward (a dashboard's next refresh) reuses the
    // cached extents.
    let end2 = now_ms();
    assert_same(&client, &a, &r, &tenants, start + 120_000, end2, "moved window").await;
    let before = metric_value(&client, &metrics, &lookups("inprocess", "hit")).await;
    assert!(before > warm_hits, "the moved window reused nothing");

    // A shared memcached: what one querier cached, the other serves.
    if !memcached_found {
        return;
    }
    let port = free_port();
    let mut mc = Proc::start(
        "memcached",
        std::path::Path::new("memcached"),
        &["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-m", "64", "-u", "root"].map(String::from),
        &[],
        dir.path(),
    );
    wait_for(Duration::from_secs(10), "memcached to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
    })
    .await;
    let shared = format!("--query.results-cache.memcached.addresses=127.0.0.1:{port}");
    let c1 = Querier::start(dir.path(), &endpoints, &[frontend[0], frontend[1], &shared]).await;
    let c2 = Querier::start(dir.path(), &endpoints, &[frontend[0], frontend[1], &shared]).await;
    let (end3, m2) = (now_ms(), format!("{}/metrics", c2.base()));
    assert_same(&client, &c1.base(), &r, &tenants, start, end3, "memcached, first querier").await;
    let stored = metric_value(
        &client,
        &format!("{}/metrics", c1.base()),
        "strata_querier_results_cache_stores_total{backend=\"memcached\",result=\"stored\"}",
    )
    .await;
    assert!(stored >= 10.0, "{stored} results stored in memcached");
    assert_same(&client, &c2.base(), &r, &tenants, start, end3, "memcached, second querier").await;
    let shared_hits = metric_value(&client, &m2, &lookups("memcached", "hit")).await;
    assert!(shared_hits >= 10.0, "the second querier found only {shared_hits} results in memcached");

    // memcached gone: the same answers, the failures counted.
    mc.kill9();
    assert_same(&client, &c2.base(), &r, &tenants, start, end3, "memcached down").await;
    let errors = metric_value(&client, &m2, &lookups("memcached", "error")).await;
    assert!(errors >= 10.0, "{errors} lookup errors counted with memcached down");
}

/// `strata query-frontend` in front of two queriers that neither split nor
/// cache: the same bytes as one querier evaluating each query whole, cold
/// and from its cache, per tenant; the splits spread over both queriers;
/// everything else passed through; a querier's refusal keeps its status;
/// one querier gone, the other answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_separate_query_frontend_answers_like_one_querier() {
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let endpoints = vec![cluster.nodes[0].grpc_addr()];
    let client = reqwest::Client::new();
    let base = load(&client, &cluster).await;
    let plain = ["--query.split-interval=0s", "--query.results-cache.max-bytes=0"];
    let reference = Querier::start(dir.path(), &endpoints, &plain).await;
    let q1 = Querier::start(dir.path(), &endpoints, &plain).await;
    let mut q2 = Querier::start(dir.path(), &endpoints, &plain).await;
    let frontend = QueryFrontend::start(
        dir.path(),
        &[q1.base(), q2.base()],
        &["--query.split-interval=10m", "--query.cache-freshness=10m"],
    )
    .await;
    let fe = frontend.base();
    let (r, tenants) = (reference.base(), ["anonymous", "team-b"]);
    let metrics = format!("{fe}/metrics");
    let fe_lookups = |result: &str| {
        format!("strata_query_frontend_results_cache_lookups_total{{backend=\"inprocess\",result=\"{result}\"}}")
    };

    let (start, end) = (base + 5_000, now_ms());
    assert_same(&client, &fe, &r, &tenants, start, end, "frontend, cold").await;
    let misses = metric_value(&client, &metrics, &fe_lookups("miss")).await;
    assert!(misses >= 10.0, "cold: {misses} misses");
    let splits = metric_value(&client, &metrics, "strata_query_frontend_query_splits_total").await;
    assert!(splits >= (QUERIES.len() - 1) as f64 * 2.0 * 12.0, "{splits} splits");
    assert_same(&client, &fe, &r, &tenants, start, end, "frontend, warm").await;
    let hits = metric_value(&client, &metrics, &fe_lookups("hit")).await;
    assert!(hits >= (QUERIES.len() - 1) as f64 * 2.0 * 11.0, "warm: only {hits} hits");
    // Both queriers evaluated splits.
    let served = "strata_querier_requests_total{handler=\"query_range\",outcome=\"success\"}";
    for q in [&q1, &q2] {
        let n = metric_value(&client, &format!("{}/metrics", q.base()), served).await;
        assert!(n >= 10.0, "querier {} evaluated only {n} splits", q.base());
    }

    // Other requests pass through unchanged.
    for path in ["/api/v1/labels", "/api/v1/label/env/values", "/api/v1/query?query=sum(temperature)&time=1"] {
        let get = |b: String| {
            let c = client.clone();
            async move { c.get(b).header("X-Scope-OrgID", "team-b").send().await.unwrap().text().await.unwrap() }
        };
        assert_eq!(get(format!("{fe}{path}")).await, get(format!("{r}{path}")).await, "{path}");
    }
    // Bad input: refused by the frontend itself, or by the querier with
    // its status and error type.
    for (params, status, kind) in [
        (vec![("query", "sum("), ("start", "1"), ("end", "2"), ("step", "1")], 400, "bad_data"),
        (
            vec![("query", "up"), ("start", "1"), ("end", "2"), ("step", "1"), ("max_source_resolution", "bogus")],
            400,
            "bad_data",
        ),
    ] {
        let resp = client.get(format!("{fe}/api/v1/query_range")).query(&params).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{params:?}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["errorType"], kind, "{params:?}: {v}");
        assert!(!v["error"].as_str().unwrap_or_default().is_empty(), "{v}");
    }

    // One querier gone: the other answers everything (uncached steps included).
    q2.proc.kill9();
    let end2 = now_ms();
    assert_same(&client, &fe, &r, &tenants, start + 60_000, end2, "frontend, one querier down").await;
}

/// `--query.max-samples` bounds each part of a split query, as behind
/// `strata query-frontend` and in Cortex' frontend: 3 series × 480 samples
/// read whole are refused at 1 000; read in 10-minute parts (20 minutes
/// of samples each, in whole head chunks of up to 120: at most 720) they
/// are answered, exactly as without a limit.
#[tokio::test(flavor = "multi_thread")]
async fn the_sample_limit_bounds_each_part_of_a_split_query() {
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let endpoints = vec![cluster.nodes[0].grpc_addr()];
    let client = reqwest::Client::new();
    let base = load(&client, &cluster).await;
    let limit = "--query.max-samples=1000";
    let unsplit = Querier::start(dir.path(), &endpoints, &["--query.split-interval=0s", limit]).await;
    let split = Querier::start(dir.path(), &endpoints, &["--query.split-interval=10m", limit]).await;
    let reference =
        Querier::start(dir.path(), &endpoints, &["--query.split-interval=0s", "--query.results-cache.max-bytes=0"])
            .await;
    let q = "max_over_time(temperature[10m])";
    let (start, end) = (base + 5_000, now_ms());
    let (status, body) = range_response(&client, &unsplit.base(), "anonymous", q, start, end).await;
    assert_eq!(status, 422, "unsplit: {body}");
    assert!(body.contains("too many samples"), "{body}");
    let want = range_body(&client, &reference.base(), "anonymous", q, start, end).await;
    let got = range_body(&client, &split.base(), "anonymous", q, start, end).await;
    assert_eq!(got, want, "split under the per-part limit");
}
