//! The querier against Debian's Prometheus: the same generated data is
//! remote-written to both (in Strata, the first half is flushed into a
//! Parquet block served by `strata store`, the rest stays in the head), and
//! a corpus of dashboard-style and edge-case queries over a window crossing
//! that boundary must give the same answers through both HTTP APIs. Also the
//! API's shapes and errors, a replica failure, and Prometheus reading
//! Strata through `remote_read`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use controlplane_e2e::*;
use serde_json::Value;

const ENVS: [&str; 3] = ["prod", "dev", "qa"];
const ROUTES: [&str; 4] = ["/api/products", "/api/orders", "/api/reports", "/api/search"];
const BUCKETS: [&str; 6] = ["0.05", "0.1", "0.25", "0.5", "1", "+Inf"];
const STEP_MS: i64 = 15_000;
const MINUTES: i64 = 70;

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// 70 minutes of 15 s samples, offset by 7 s so no sample sits on a
/// minute boundary (Prometheus 2.42 closes range windows on the left,
/// Prometheus 3 and Strata leave them open; off-boundary data reads the same).
fn generate(base: i64) -> SeriesData {
    let n = (MINUTES * 60_000 / STEP_MS) as usize;
    let times: Vec<i64> = (0..n).map(|k| base + k as i64 * STEP_MS).collect();
    let mut out = Vec::new();
    for (ei, env) in ENVS.iter().enumerate() {
        for (ri, route) in ROUTES.iter().enumerate() {
            for (si, status) in ["200", "500"].iter().enumerate() {
                let mut v = 1000.0 * (ei + 1) as f64;
                let samples = times
                    .iter()
                    .enumerate()
                    .map(|(k, &t)| {
                        let rate = if si == 0 { 10.0 + ri as f64 * 3.0 } else { 0.5 + ((k * 7 + ri) % 5) as f64 * 0.3 };
                        v += rate * (1.0 + ei as f64 * 0.5) + ((k * k * 7 + ri) % 13) as f64 * 0.1;
                        (t, v)
                    })
                    .collect();
                out.push((
                    labels(&[("__name__", "http_requests_total"), ("env", env), ("route", route), ("status", status)]),
                    samples,
                ));
            }
        }
        // A classic histogram per env: cumulative buckets.
        let mut counts = [0.0f64; 6];
        let mut series: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 6];
        for (k, &t) in times.iter().enumerate() {
            let mut cum = 0.0;
            for (b, c) in counts.iter_mut().enumerate() {
                cum += (3 + (k * (b + 1) + ei) % 7) as f64 * (1.0 + ei as f64);
                *c += cum;
                series[b].push((t, *c));
            }
        }
        for (b, le) in BUCKETS.iter().enumerate() {
            out.push((
                labels(&[("__name__", "http_request_duration_seconds_bucket"), ("env", env), ("le", le)]),
                series[b].clone(),
            ));
        }
        for inst in 0..2 {
            let instance = format!("10.0.0.{inst}:8080");
            let samples = times
                .iter()
                .enumerate()
                .map(|(k, &t)| (t, 5.0 + 4.0 * ((k as f64 / 9.0) + ei as f64 + inst as f64).sin() + ei as f64))
                .collect();
            out.push((labels(&[("__name__", "active_requests"), ("env", env), ("instance", &instance)]), samples));
        }
    }
    // A counter with resets, only for resets()/changes().
    let samples = times.iter().enumerate().map(|(k, &t)| (t, (k % 37) as f64 * 2.0)).collect();
    out.push((labels(&[("__name__", "restarts_total"), ("env", "prod")]), samples));
    out
}

/// Writes `data` in 10-minute slices, in time order.
async fn write_all(client: &reqwest::Client, url: &str, data: &SeriesData) {
    write_range(client, url, data, 0, data[0].1.len()).await;
}

/// Writes samples `from..to` of every series, in 10-minute slices.
async fn write_range(client: &reqwest::Client, url: &str, data: &SeriesData, from: usize, n: usize) {
    let slice = 40; // samples per series per request
    let mut i = from;
    while i < n {
        let part: SeriesData = data.iter().map(|(l, s)| (l.clone(), s[i..(i + slice).min(n)].to_vec())).collect();
        write_series(client, url, &part).await;
        i += slice;
    }
}

/// `labels → [(t, value)]` of a query_range answer.
fn matrix(v: &Value) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let key = s["metric"].to_string();
        let points = s["values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| {
                (p[0].as_f64().unwrap_or(f64::NAN), p[1].as_str().unwrap_or("").parse::<f64>().unwrap_or(f64::NAN))
            })
            .collect();
        out.insert(key, points);
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1e-9)
}

async fn get_json(client: &reqwest::Client, url: &str, params: &[(&str, String)]) -> (u16, Value) {
    let r = client.get(url).query(params).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

const QUERIES: &[&str] = &[
    "http_requests_total",
    "http_requests_total{env=\"prod\"}",
    "http_requests_total{status=~\"5..\"}",
    "http_requests_total{route!=\"/api/orders\",env=\"qa\"}",
    "{__name__=~\"http_.*_total\",env!~\"d.*\"}",
    "rate(http_requests_total[5m])",
    "irate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    "delta(active_requests[10m])",
    "idelta(active_requests[5m])",
    "deriv(active_requests[10m])",
    "predict_linear(active_requests[15m], 600)",
    "resets(restarts_total[30m])",
    "changes(active_requests[5m])",
    "sum(rate(http_requests_total[5m])) by (env)",
    "sum by (env, status) (rate(http_requests_total[5m]))",
    "sum without (route) (rate(http_requests_total[5m]))",
    "avg(active_requests) by (env)",
    "min(active_requests) by (env)",
    "max(active_requests)",
    "count(http_requests_total) by (status)",
    "stddev(active_requests)",
    "stdvar by (env) (active_requests)",
    "topk(3, rate(http_requests_total[5m]))",
    "bottomk(2, active_requests)",
    "topk by (env) (1, rate(http_requests_total[5m]))",
    "quantile(0.9, rate(http_requests_total[5m]))",
    "count_values(\"status_code\", count by (status) (http_requests_total))",
    "group by (env) (http_requests_total)",
    "sum(rate(http_requests_total{status=\"500\"}[5m])) by (env) / sum(rate(http_requests_total[5m])) by (env)",
    "histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket[5m])) by (le, env))",
    "histogram_quantile(0.5, sum(rate(http_request_duration_seconds_bucket[5m])) by (le))",
    "histogram_quantile(0.99, rate(http_request_duration_seconds_bucket{env=\"qa\"}[10m]))",
    "active_requests > 6",
    "active_requests > bool 6",
    "6 < active_requests",
    "active_requests * on(env) group_left sum by (env) (rate(http_requests_total[5m]))",
    "rate(http_requests_total[5m]) / ignoring(status) group_left sum without (status) (rate(http_requests_total[5m]))",
    "http_requests_total and on(env) (active_requests > 7)",
    "active_requests or vector(1)",
    "active_requests unless on(env) active_requests{env=\"dev\"}",
    "rate(http_requests_total[5m] offset 10m)",
    "rate(http_requests_total[5m] offset -5m)",
    "max_over_time(rate(http_requests_total{env=\"prod\"}[5m])[29m30s:1m])",
    "avg_over_time(active_requests[10m])",
    "sum_over_time(active_requests[5m])",
    "count_over_time(active_requests[7m])",
    "min_over_time(active_requests[5m])",
    "quantile_over_time(0.9, active_requests[10m])",
    "last_over_time(active_requests[5m])",
    "stddev_over_time(active_requests[10m])",
    "present_over_time(active_requests{env=\"qa\"}[5m])",
    "abs(active_requests - 8)",
    "ceil(active_requests)",
    "floor(active_requests)",
    "round(active_requests, 0.5)",
    "clamp_min(active_requests, 6)",
    "clamp_max(active_requests, 6)",
    "sqrt(active_requests)",
    "exp(active_requests / 10)",
    "ln(active_requests)",
    "log2(active_requests)",
    "label_replace(active_requests, \"host\", \"$1\", \"instance\", \"(.*):.*\")",
    "label_join(active_requests, \"id\", \"-\", \"env\", \"instance\")",
    "timestamp(active_requests)",
    "absent(nonexistent_metric{job=\"x\"})",
    "absent_over_time(nonexistent_metric[5m])",
    "vector(1) + 2",
    "scalar(sum(active_requests))",
    "time()",
    "hour(vector(time()))",
    "sum(active_requests) - 2 * max(active_requests)",
    "-active_requests",
    "active_requests % 3",
    "2 ^ (active_requests / 10)",
    "sum(http_requests_total @ end())",
    "sum(rate(http_requests_total[5m] @ start()))",
    "rate(http_requests_total[70s:20s])",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_against_prometheus() {
    if !require("prometheus") {
        return;
    }
    let dir = test_dir();
    let mut cluster = Cluster::start(dir.path(), 3, &["--block.retain-after-upload=1s"]).await;
    let store = StoreGateway::start(dir.path(), &dir.path().join("objstore"), &["--store.sync-interval=500ms"]).await;
    let mut endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.grpc_addr()).collect();
    endpoints.push(store.grpc_addr());
    let querier = Querier::start(dir.path(), &endpoints, &[]).await;
    let prom = Prometheus::start(dir.path(), free_port()).await;
    let client = reqwest::Client::new();

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let base = (now - MINUTES * 60_000) / 60_000 * 60_000 + 7_000;
    let data = generate(base);
    write_all(&client, &prom.write_url(), &data).await;
    // Strata: the first 35 minutes go into a block, the rest stays in the head.
    let split = 140;
    write_range(&client, &cluster.nodes[1].write_url(), &data, 0, split).await;
    let leader = cluster.wait_leader(None, Duration::from_secs(10)).await;
    let r = client.post(cluster.nodes[leader as usize - 1].web_url("/api/v1/admin/flush")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    write_range(&client, &cluster.nodes[1].write_url(), &data, split, data[0].1.len()).await;
    let cut = data[0].1[split].0;
    wait_for(Duration::from_secs(30), "the ingesters to release the block's samples", || async {
        let s = read_series(&cluster.nodes[1].grpc_addr(), "anonymous", "http_requests_total").await;
        s.values().all(|v| v.first().is_some_and(|(t, _)| *t >= cut)).then_some(())
    })
    .await;

    let start = (base / 60_000 + 16) * 60_000;
    let end = (base / 60_000 + MINUTES - 2) * 60_000;
    // Aggregations over the steps the block covers are pushed down to the store.
    wait_querier_sees_blocks(&client, &querier.base(), 4, start, cut).await;
    let sec = |ms: i64| format!("{}", ms as f64 / 1000.0);
    let mut failures = Vec::new();
    let mut compared = 0;
    for q in QUERIES {
        let params = vec![("query", q.to_string()), ("start", sec(start)), ("end", sec(end)), ("step", "60".into())];
        let (ps, pv) = get_json(&client, &format!("{}/api/v1/query_range", prom.base()), &params).await;
        let (ss, sv) = get_json(&client, &format!("{}/api/v1/query_range", querier.base()), &params).await;
        assert_eq!(ps, 200, "Prometheus rejected {q}: {pv}");
        if ss != 200 {
            failures.push(format!("{q}: Strata answered {ss}: {sv}"));
            continue;
        }
        let (pm, sm) = (matrix(&pv), matrix(&sv));
        if pm.is_empty() && !q.starts_with("absent") {
            failures.push(format!("{q}: Prometheus returned no data (corpus error)"));
            continue;
        }
        if pm.keys().collect::<Vec<_>>() != sm.keys().collect::<Vec<_>>() {
            failures.push(format!("{q}: series differ\n  prometheus: {:?}\n  strata:     {:?}", pm.keys(), sm.keys()));
            continue;
        }
        for (k, pp) in &pm {
            let sp = &sm[k];
            let same = pp.len() == sp.len() && pp.iter().zip(sp).all(|(a, b)| a.0 == b.0 && close(a.1, b.1));
            if !same {
                failures.push(format!("{q}: {k}\n  prometheus: {pp:?}\n  strata:     {sp:?}"));
                break;
            }
        }
        compared += 1;
    }
    // Instant queries too, at the end of the range.
    for q in QUERIES.iter().take(30) {
        let params = vec![("query", q.to_string()), ("time", sec(end))];
        let (_, pv) = get_json(&client, &format!("{}/api/v1/query", prom.base()), &params).await;
        let (_, sv) = get_json(&client, &format!("{}/api/v1/query", querier.base()), &params).await;
        let norm = |v: &Value| -> BTreeMap<String, String> {
            v["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|s| (s["metric"].to_string(), s["value"][1].as_str().unwrap_or("").to_string()))
                .collect()
        };
        let (a, b) = (norm(&pv), norm(&sv));
        let same = a.len() == b.len()
            && a.iter().all(|(k, v)| {
                b.get(k).is_some_and(|w| close(v.parse().unwrap_or(f64::NAN), w.parse().unwrap_or(f64::NAN)))
            });
        if !same {
            failures.push(format!("instant {q}:\n  prometheus: {a:?}\n  strata:     {b:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} queries differ:\n{}", failures.len(), QUERIES.len(), failures.join("\n"));
    assert!(compared >= 50, "only {compared} queries compared");
    let pushed = "strata_querier_pushdowns_total{result=\"pushed\"}";
    let pushed = metric_value(&client, &format!("{}/metrics", querier.base()), pushed).await;
    assert!(pushed >= 10.0, "the store computed only {pushed} aggregations");

    // Exemplars (remote write 1.0, with their samples and on their own as
    // Prometheus sends them) answer /api/v1/query_exemplars like Prometheus.
    let recent = base + (MINUTES - 10) * 60_000;
    exemplars_answer_like_prometheus(&client, &prom, &cluster.nodes[0].write_url(), &querier.base(), recent).await;

    // A replica failure is invisible: the querier reads the shard from another replica.
    let leader = cluster.wait_leader(None, Duration::from_secs(10)).await;
    cluster.node(leader).kill9();
    let q = "sum(http_requests_total)";
    let params = vec![("query", q.to_string()), ("time", sec(end))];
    let (s, v) = get_json(&client, &format!("{}/api/v1/query", querier.base()), &params).await;
    assert_eq!(s, 200, "{v}");
    let (_, pv) = get_json(&client, &format!("{}/api/v1/query", prom.base()), &params).await;
    let num = |v: &Value| v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok());
    let (a, b) = (num(&v).expect("Strata value"), num(&pv).expect("Prometheus value"));
    assert!(close(a, b), "after the leader's loss: Strata {a}, Prometheus {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_shapes_and_errors() {
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let querier = Querier::start(dir.path(), &[cluster.nodes[0].grpc_addr()], &[]).await;
    let client = reqwest::Client::new();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let t0 = now - 10 * 60_000;
    let data: SeriesData = (0..3)
        .map(|i| {
            (
                labels(&[("__name__", "up"), ("job", "api"), ("instance", &format!("i{i}"))]),
                (0..40).map(|k| (t0 + k * 15_000, (i % 2) as f64)).collect(),
            )
        })
        .collect();
    write_series(&client, &cluster.nodes[0].write_url(), &data).await;
    let base = querier.base();
    let t = format!("{}", (t0 + 39 * 15_000) as f64 / 1000.0);

    // A write is visible to the next query.
    let (s, v) =
        get_json(&client, &format!("{base}/api/v1/query"), &[("query", "sum(up)".into()), ("time", t.clone())]).await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    assert_eq!(v["data"]["result"][0]["value"][1], "1");
    // PromQL annotations reach the answer: `up` is no counter, 1.5 no quantile.
    let (s, v) =
        get_json(&client, &format!("{base}/api/v1/query"), &[("query", "rate(up[5m])".into()), ("time", t.clone())])
            .await;
    assert_eq!(s, 200);
    let infos = v["infos"].as_array().cloned().unwrap_or_default();
    assert!(
        infos
            .iter()
            .any(|i| i.as_str().is_some_and(|i| i.contains("metric might not be a counter") && i.contains("\"up\""))),
        "{v}"
    );
    let (_, v) = get_json(
        &client,
        &format!("{base}/api/v1/query"),
        &[("query", "quantile(1.5, up)".into()), ("time", t.clone())],
    )
    .await;
    assert_eq!(
        v["warnings"],
        serde_json::json!(["PromQL warning: quantile value should be between 0 and 1, got 1.5"]),
        "{v}"
    );
    assert!(v.get("infos").is_none(), "no infos key without infos: {v}");
    let (_, v) = get_json(&client, &format!("{base}/api/v1/query"), &[("query", "1 + 1".into())]).await;
    assert_eq!(v["data"]["resultType"], "scalar");
    assert_eq!(v["data"]["result"][1], "2");

    // query_range as a form POST (what Grafana sends).
    let r = client
        .post(format!("{base}/api/v1/query_range"))
        .form(&[("query", "up"), ("start", &format!("{}", t0 / 1000)), ("end", &t), ("step", "30s")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 3);

    // Metadata endpoints.
    let (_, v) =
        get_json(&client, &format!("{base}/api/v1/series"), &[("match[]", "up{instance=~\"i[01]\"}".into())]).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["data"][0]["__name__"], "up");
    let (_, v) = get_json(&client, &format!("{base}/api/v1/labels"), &[]).await;
    let names: Vec<&str> = v["data"].as_array().unwrap().iter().filter_map(|x| x.as_str()).collect();
    assert_eq!(names, vec!["__name__", "instance", "job"]);
    let (_, v) = get_json(&client, &format!("{base}/api/v1/label/instance/values"), &[]).await;
    assert_eq!(v["data"], serde_json::json!(["i0", "i1", "i2"]));
    // What Grafana's Prometheus data source sends besides queries (11.x,
    // httpMethod POST): label/series lookups as form POSTs with match[] and
    // second-resolution start/end, metric metadata, exemplars.
    let (start, end) = (format!("{}", t0 / 1000), t.clone());
    let form = |path: &str, extra: Vec<(&'static str, String)>| {
        let mut f: Vec<(&str, String)> = vec![("start", start.clone()), ("end", end.clone())];
        f.extend(extra);
        client.post(format!("{base}{path}")).form(&f).send()
    };
    let r = form("/api/v1/labels", vec![("match[]", "up".into())]).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"], serde_json::json!(["__name__", "instance", "job"]));
    let r = form("/api/v1/series", vec![("match[]", "up{job=\"api\"}".into())]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["data"].as_array().map(Vec::len), Some(3));
    let (s, v) = get_json(
        &client,
        &format!("{base}/api/v1/label/__name__/values"),
        &[("start", start.clone()), ("end", end.clone())],
    )
    .await;
    assert_eq!((s, v["data"].clone()), (200, serde_json::json!(["up"])));
    let (s, v) = get_json(&client, &format!("{base}/api/v1/metadata"), &[("metric", "up".into())]).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("success")), "{v}");
    assert!(v["data"].is_object(), "{v}");
    let r = form("/api/v1/query_exemplars", vec![("query", "up".into())]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["data"].is_array());

    // No ruler: empty rules and alerts, as Prometheus without rule files.
    let (s, v) = get_json(&client, &format!("{base}/api/v1/rules"), &[]).await;
    assert_eq!((s, v["data"].clone()), (200, serde_json::json!({"groups": []})));
    let (s, v) = get_json(&client, &format!("{base}/api/v1/alerts"), &[]).await;
    assert_eq!((s, v["data"].clone()), (200, serde_json::json!({"alerts": []})));

    let (_, v) = get_json(&client, &format!("{base}/api/v1/status/buildinfo"), &[]).await;
    // Grafana reads `version` as a Prometheus version (features by semver).
    assert_eq!(v["data"]["version"], "3.5.0");
    assert_eq!(v["data"]["application"], "strata");
    assert!(v["data"]["strataVersion"].is_string());
    let (_, v) = get_json(&client, &format!("{base}/api/v1/format_query"), &[("query", "sum(up)by(job)".into())]).await;
    assert_eq!(v["data"], "sum by (job) (up)");

    // Errors: Prometheus' status codes and errorTypes.
    type ErrorCase<'a> = (&'a str, Vec<(&'a str, String)>, u16, &'a str, &'a str);
    let cases: Vec<ErrorCase> = vec![
        ("query", vec![("query", "sum(up".into())], 400, "bad_data", "query"),
        ("query", vec![("query", "up".into()), ("time", "yesterday".into())], 400, "bad_data", "time"),
        (
            "query_range",
            vec![("query", "up".into()), ("start", "100".into()), ("end", "50".into()), ("step", "1".into())],
            400,
            "bad_data",
            "end timestamp must not be before start time",
        ),
        (
            "query_range",
            vec![("query", "up".into()), ("start", "0".into()), ("end", "50".into()), ("step", "0".into())],
            400,
            "bad_data",
            "zero or negative",
        ),
        (
            "query_range",
            vec![("query", "up".into()), ("start", "0".into()), ("end", "100000".into()), ("step", "1".into())],
            400,
            "bad_data",
            "11,000 points",
        ),
        (
            "query",
            vec![("query", "label_replace(up, \"x\", \"$1\", \"job\", \"(\")".into()), ("time", t.clone())],
            422,
            "execution",
            "invalid regular expression",
        ),
        ("series", vec![], 400, "bad_data", "no match[] parameter provided"),
        ("query", vec![("query", "up".into()), ("timeout", "0".into())], 400, "bad_data", "not a positive duration"),
        ("query", vec![("query", "up".into()), ("timeout", "-1s".into())], 400, "bad_data", "\"timeout\""),
    ];
    for (path, params, status, kind, msg) in cases {
        let (s, v) = get_json(&client, &format!("{base}/api/v1/{path}"), &params).await;
        assert_eq!(s, status, "{path} {params:?}: {v}");
        assert_eq!(v["status"], "error");
        assert_eq!(v["errorType"], kind, "{v}");
        assert!(v["error"].as_str().unwrap_or("").contains(msg), "{path}: {v}");
    }
    // Too many samples: a limit that fails cleanly.
    let small = Querier::start(dir.path(), &[cluster.nodes[0].grpc_addr()], &["--query.max-samples=10"]).await;
    let (s, v) = get_json(
        &client,
        &format!("{}/api/v1/query", small.base()),
        &[("query", "sum_over_time(up[10m])".into()), ("time", t.clone())],
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("too many samples"), "{v}");
    // The querier serves /metrics about itself.
    let m = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("strata_querier_requests_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_strata_through_remote_read() {
    if !require("prometheus") {
        return;
    }
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let querier = Querier::start(dir.path(), &[cluster.nodes[0].grpc_addr()], &[]).await;
    let client = reqwest::Client::new();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let t0 = now - 5 * 60_000;
    let data: SeriesData = vec![(
        labels(&[("__name__", "strata_only_metric"), ("env", "prod")]),
        (0..20).map(|k| (t0 + k * 15_000, k as f64)).collect(),
    )];
    write_series(&client, &cluster.nodes[0].write_url(), &data).await;

    let port = free_port();
    let cfg = dir.path().join("prometheus-rr.yml");
    std::fs::write(&cfg, format!("remote_read:\n  - url: {}/api/v1/read\n    read_recent: true\n", querier.base()))
        .unwrap();
    let args = vec![
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", dir.path().join("prom-rr").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".to_string(),
    ];
    let _prom = Proc::start("prometheus-rr", std::path::Path::new("prometheus"), &args, &[], dir.path());
    let pbase = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{pbase}/-/ready"), Duration::from_secs(30)).await;
    let t = format!("{}", (t0 + 19 * 15_000) as f64 / 1000.0);
    let (s, v) = get_json(
        &client,
        &format!("{pbase}/api/v1/query"),
        &[("query", "strata_only_metric{env=\"prod\"}".into()), ("time", t.clone())],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["result"][0]["value"][1], "19", "{v}");
    let (_, v) = get_json(
        &client,
        &format!("{pbase}/api/v1/query"),
        &[("query", "count_over_time(strata_only_metric[10m])".into()), ("time", t)],
    )
    .await;
    assert_eq!(v["data"]["result"][0]["value"][1], "20", "{v}");
}

async fn exemplars_answer_like_prometheus(
    client: &reqwest::Client,
    prom: &Prometheus,
    strata_write: &str,
    querier: &str,
    base: i64,
) {
    use strata_proto::prometheus::{Exemplar, Label, Sample, TimeSeries, WriteRequest};
    use strata_proto::remote_write as rw;
    let label = |n: &str, v: &str| Label { name: n.into(), value: v.into() };
    let series = |le: &str| vec![label("__name__", "checkout_seconds_bucket"), label("job", "shop"), label("le", le)];
    let ex = |t: i64, v: f64, trace: &str| Exemplar {
        labels: vec![label("span_id", "s1"), label("trace_id", trace)],
        value: v,
        timestamp: t,
    };
    let with_samples = WriteRequest {
        timeseries: ["0.5", "1"]
            .iter()
            .map(|le| TimeSeries {
                labels: series(le),
                samples: (0..10).map(|k| Sample { value: k as f64, timestamp: base + k * 15_000 }).collect(),
                exemplars: vec![ex(base + 15_000, 0.25, "a1"), ex(base + 30_000 + 7, 0.4, "a2")],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    let on_their_own = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: series("1"),
            exemplars: vec![ex(base + 90_000, 0.9, "b1"), ex(base + 30_000 + 7, 0.4, "a2")],
            ..Default::default()
        }],
        metadata: vec![],
    };
    for url in [prom.write_url(), strata_write.to_string()] {
        for req in [&with_samples, &on_their_own] {
            let r = client
                .post(&url)
                .header("Content-Type", rw::CONTENT_TYPE_V1)
                .header("Content-Encoding", "snappy")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(rw::encode_v1(req))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{url}: {}", r.text().await.unwrap_or_default());
        }
    }
    let sec = |ms: i64| format!("{}", ms as f64 / 1000.0);
    for (q, from, to) in [
        ("checkout_seconds_bucket", base, base + 300_000),
        ("sum(rate(checkout_seconds_bucket{le=\"1\"}[5m]))", base + 20_000, base + 60_000),
        ("checkout_seconds_bucket{le=\"nope\"}", base, base + 300_000),
    ] {
        let params = vec![("query", q.to_string()), ("start", sec(from)), ("end", sec(to))];
        let (ps, pv) = get_json(client, &format!("{}/api/v1/query_exemplars", prom.base()), &params).await;
        let (ss, sv) = get_json(client, &format!("{querier}/api/v1/query_exemplars"), &params).await;
        assert_eq!((ps, ss), (200, 200), "{q}: {pv} / {sv}");
        assert_eq!(sv["data"], pv["data"], "{q}");
        if !q.contains("nope") {
            assert!(pv["data"].as_array().is_some_and(|a| !a.is_empty()), "{q}: Prometheus has none: {pv}");
        }
    }
}

/// Per-tenant query limits from the querier's `--limits.overrides-file`:
/// a tenant over its `max_samples_per_query` gets Prometheus' 422, a query
/// reading more than its `max_query_length` gets 400 naming the limit, other
/// tenants are unaffected, and a raised limit applies without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_query_limits_come_from_the_overrides_file_and_reload() {
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let node = &cluster.nodes[0];
    let file = dir.path().join("overrides.yml");
    std::fs::write(&file, "tenants:\n  small: { max_samples_per_query: 100, max_query_length: 1h }\n")
        .expect("overrides");
    let flag = format!("--limits.overrides-file={}", file.display());
    // Unsplit: the frontend bounds each day's part, and a 10-minute range
    // may cross midnight.
    let querier = Querier::start(dir.path(), &[node.grpc_addr()], &[&flag, "--query.split-interval=0s"]).await;
    let c = reqwest::Client::new();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64 / 1000 * 1000;
    // 20 series × 20 samples (15 s apart) for each tenant.
    let data: SeriesData = (0..20)
        .map(|i| {
            let l = labels(&[("__name__", "lim"), ("i", &i.to_string())]);
            (l, (0..20).map(|k| (now - 300_000 + k * 15_000, k as f64)).collect())
        })
        .collect();
    for tenant in ["small", "big"] {
        let (s, body) = remote_write(&c, &node.write_url(), tenant, &data).await;
        assert_eq!(s, 204, "{body}");
    }
    let range = |tenant: &'static str, span_s: i64| {
        let c = c.clone();
        let base = querier.base();
        async move {
            let r = c
                .get(format!("{base}/api/v1/query_range"))
                .header("X-Scope-OrgID", tenant)
                .query(&[
                    ("query", "sum(lim)".to_string()),
                    ("start", ((now - span_s * 1000) / 1000).to_string()),
                    ("end", (now / 1000).to_string()),
                    ("step", "60".to_string()),
                ])
                .send()
                .await
                .expect("query_range");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or_default())
        }
    };
    // 400 samples > 100: refused for `small`, fine for `big`.
    let (s, v) = range("small", 600).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("too many samples"), "{v}");
    let (s, v) = range("big", 600).await;
    assert_eq!(s, 200, "{v}");
    // Two hours (plus lookback) > 1h for `small`.
    let (s, v) = range("small", 7200).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("max_query_length 1h"), "{v}");
    assert_eq!(range("big", 7200).await.0, 200);
    // Raised without a restart (checked every 5 s).
    std::fs::write(&file, "tenants:\n  small: { max_samples_per_query: 100000 }\n").expect("overrides");
    let got = wait_for(Duration::from_secs(30), "the raised limit", || async {
        let (s, v) = range("small", 7200).await;
        (s == 200).then_some(v)
    })
    .await;
    assert_eq!(got["status"], "success");
}
