//! The agent's Pushgateway-compatible push API against Debian's
//! `prometheus-pushgateway`: the same push sequence (PUT, POST, DELETE,
//! grouping keys with `@base64`, text and delimited-protobuf bodies, refused
//! pushes) gets the same statuses from both, and the groups the
//! Pushgateway exposes on `/metrics` equal what the agent forwards into
//! Strata (labels and values; timestamps ignored). Python's
//! `prometheus_client.push_to_gateway` works against the agent unchanged,
//! a deleted group's series get staleness markers, and the groups survive
//! an agent restart (`--push.persistence-file`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use controlplane_e2e::*;
use strata_proto::client_model::{Counter, LabelPair, Metric, MetricFamily, MetricType};

type Flat = BTreeMap<String, f64>;

/// `name{a=1,b=2}` → value, empty labels dropped, for the series a push
/// test compares (those with a `job` label, push times left out).
fn flatten_exposition(text: &str) -> Flat {
    let mut out = Flat::new();
    for f in strata_textparse::parse_text(text).expect("the Pushgateway's /metrics parses") {
        for s in &f.samples {
            if s.label("job").is_none() || s.name.starts_with("push_") {
                continue;
            }
            let mut labels: Vec<(String, String)> = s.labels.iter().filter(|(_, v)| !v.is_empty()).cloned().collect();
            labels.sort();
            out.insert(key(&s.name, &labels), s.value);
        }
    }
    out
}

fn key(name: &str, labels: &[(String, String)]) -> String {
    let l: Vec<String> = labels.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!("{name}{{{}}}", l.join(","))
}

/// The same series as they reached Strata: the latest sample of each
/// series of `names`, the agent's own labels taken off.
async fn flatten_strata(grpc: &str, names: &BTreeSet<String>) -> Flat {
    let mut out = Flat::new();
    for name in names {
        for (series, samples) in read_series(grpc, "anonymous", name).await {
            let Some(&(_, v)) = samples.last() else { continue };
            if v.to_bits() == 0x7ff0_0000_0000_0002 {
                continue;
            }
            let labels: Vec<(String, String)> = series
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(n, _)| !matches!(*n, "__name__" | "environment" | "data_plane_id"))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            out.insert(key(name, &labels), v);
        }
    }
    out
}

fn start_pushgateway(dir: &Path, port: u16) -> Proc {
    let args = vec![
        format!("--web.listen-address=127.0.0.1:{port}"),
        format!("--persistence.file={}", dir.join("pushgateway.db").display()),
        "--log.level=warn".to_string(),
    ];
    Proc::start("pushgateway", Path::new("prometheus-pushgateway"), &args, &[], dir)
}

fn protobuf_body() -> Vec<u8> {
    let pair = |n: &str, v: &str| LabelPair { name: Some(n.into()), value: Some(v.into()) };
    let fam = MetricFamily {
        name: Some("ci_tests_passed_total".into()),
        help: Some("Tests passed in the run.".into()),
        r#type: Some(MetricType::Counter as i32),
        metric: vec![
            Metric {
                label: vec![pair("suite", "unit")],
                counter: Some(Counter { value: Some(412.0), ..Default::default() }),
                ..Default::default()
            },
            Metric {
                label: vec![pair("suite", "e2e")],
                counter: Some(Counter { value: Some(37.0), ..Default::default() }),
                ..Default::default()
            },
        ],
        unit: None,
    };
    strata_textparse::model::encode_delimited(&[fam])
}

const PROTOBUF: &str = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The push sequence: (method, path, content type, body).
fn sequence() -> Vec<(reqwest::Method, String, &'static str, Vec<u8>)> {
    use reqwest::Method;
    let text = "text/plain; version=0.0.4";
    let first = "# HELP batch_last_success_seconds Last success.\n# TYPE batch_last_success_seconds gauge\nbatch_last_success_seconds 1.7e9\n\
# TYPE batch_records_total counter\nbatch_records_total{table=\"orders\"} 1200\nbatch_records_total{table=\"users\"} 40\n\
# HELP batch_duration_seconds Run time.\n# TYPE batch_duration_seconds histogram\nbatch_duration_seconds_bucket{le=\"0.5\"} 1\nbatch_duration_seconds_bucket{le=\"1.0\"} 3\nbatch_duration_seconds_bucket{le=\"+Inf\"} 4\nbatch_duration_seconds_sum 3.25\nbatch_duration_seconds_count 4\n\
# TYPE batch_latency_seconds summary\nbatch_latency_seconds{quantile=\"0.5\"} 0.2\nbatch_latency_seconds{quantile=\"0.99\"} 0.9\nbatch_latency_seconds_sum 12\nbatch_latency_seconds_count 50\n\
batch_untyped{job=\"overridden\",instance=\"kept-by-key\"} 7\n";
    vec![
        (Method::PUT, "/metrics/job/batch/instance/node-1".into(), text, first.as_bytes().to_vec()),
        // POST replaces only the metric names it carries.
        (
            Method::POST,
            "/metrics/job/batch/instance/node-1".into(),
            text,
            b"# TYPE batch_records_total counter\nbatch_records_total{table=\"orders\"} 1500\n".to_vec(),
        ),
        // base64 job and label values (a '/' in each), protobuf body.
        (Method::PUT, "/metrics/job@base64/Y2kvcnVu/path@base64/L3Zhci90bXA=".into(), PROTOBUF, protobuf_body()),
        // An empty label value in the grouping key.
        (Method::PUT, "/metrics/job/empty/stage@base64/=".into(), text, b"stage_ok 1\n".to_vec()),
        (Method::PUT, "/metrics/job/gone".into(), text, b"gone_metric 5\n".to_vec()),
        (Method::DELETE, "/metrics/job/gone".into(), text, Vec::new()),
        // Refused: a timestamp; a type conflicting with another group's.
        (Method::PUT, "/metrics/job/bad".into(), text, b"with_timestamp 1 1700000000000\n".to_vec()),
        (
            Method::PUT,
            "/metrics/job/bad2".into(),
            text,
            b"# TYPE batch_records_total gauge\nbatch_records_total 1\n".to_vec(),
        ),
        // Refused: unparseable, odd path.
        (Method::PUT, "/metrics/job/bad3".into(), text, b"not a metric line\n".to_vec()),
        (Method::PUT, "/metrics/job/bad4/onlyname".into(), text, b"x 1\n".to_vec()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_reach_strata_as_the_pushgateway_exposes_them() {
    if !required("prometheus-pushgateway", require("prometheus-pushgateway")) {
        return;
    }
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let node = &cluster.nodes[0];
    let pg_port = free_port();
    let mut pushgateway = start_pushgateway(dir.path(), pg_port);
    wait_ready(&format!("http://127.0.0.1:{pg_port}/-/ready"), Duration::from_secs(30)).await;
    let push_addr = format!("127.0.0.1:{}", free_port());
    let persistence = dir.path().join("agent-push.json");
    let agent_flags = [
        format!("--push.listen-address={push_addr}"),
        format!("--push.persistence-file={}", persistence.display()),
        "--push.interval=500ms".to_string(),
    ];
    let flags: Vec<&str> = agent_flags.iter().map(String::as_str).collect();
    let mut agent = Agent::start(dir.path(), "agent", &node.write_url(), "ci", "dp-ci-01", &flags).await;

    let c = reqwest::Client::new();
    for (method, path, ct, body) in sequence() {
        let mut statuses = Vec::new();
        let mut messages = Vec::new();
        for base in [format!("http://127.0.0.1:{pg_port}"), format!("http://{push_addr}")] {
            let r = c
                .request(method.clone(), format!("{base}{path}"))
                .header("Content-Type", ct)
                .body(body.clone())
                .send()
                .await
                .expect("push");
            statuses.push(r.status().as_u16());
            messages.push(r.text().await.unwrap_or_default());
        }
        assert_eq!(statuses[0], statuses[1], "{method} {path}: Pushgateway {messages:?}");
        if statuses[0] >= 400 {
            assert!(!messages[1].trim().is_empty(), "{method} {path}: the agent's refusal names the problem");
        }
    }

    // Python's client library, unchanged, against the agent.
    let script = format!(
        "from prometheus_client import CollectorRegistry, Gauge, push_to_gateway\n\
r = CollectorRegistry()\n\
Gauge('py_job_last_success_unixtime', 'Last time the job succeeded', registry=r).set(1234.5)\n\
push_to_gateway('{push_addr}', job='py-batch', registry=r, grouping_key={{'branch': 'main'}})\n"
    );
    let py = std::process::Command::new("python3").arg("-c").arg(&script).output().expect("python3");
    assert!(py.status.success(), "push_to_gateway: {}", String::from_utf8_lossy(&py.stderr));

    // What the Pushgateway exposes equals what reached Strata.
    let exposed = c.get(format!("http://127.0.0.1:{pg_port}/metrics")).send().await.unwrap().text().await.unwrap();
    let want = flatten_exposition(&exposed);
    assert!(want.len() >= 15, "the Pushgateway holds the pushed groups: {want:?}");
    let names: BTreeSet<String> =
        want.keys().map(|k| k.split('{').next().unwrap_or("").to_string()).collect::<BTreeSet<_>>();
    let got = wait_for(Duration::from_secs(30), "the pushed groups in Strata", || {
        let (names, want) = (names.clone(), want.clone());
        let grpc = node.grpc_addr();
        async move {
            let got = flatten_strata(&grpc, &names).await;
            (got == want).then_some(got)
        }
    })
    .await;
    assert!(got.contains_key("ci_tests_passed_total{job=ci/run,path=/var/tmp,suite=unit}"), "{got:?}");
    assert_eq!(got.get("batch_records_total{instance=node-1,job=batch,table=orders}"), Some(&1500.0));
    assert_eq!(got.get("batch_untyped{instance=node-1,job=batch}"), Some(&7.0));
    // The Python push came last: wait for a round that carries it.
    wait_for(Duration::from_secs(30), "the Python client's push in Strata", || async {
        let py = read_series(&node.grpc_addr(), "anonymous", "py_job_last_success_unixtime").await;
        py.keys().any(|k| k.contains("branch=main") && k.contains("job=py-batch")).then_some(())
    })
    .await;
    // push_time_seconds per group, and the failure times of refused pushes.
    let pushed = read_series(&node.grpc_addr(), "anonymous", "push_failure_time_seconds").await;
    let failed = |job: &str| {
        pushed
            .iter()
            .find(|(k, _)| k.split(',').any(|kv| kv == format!("job={job}")))
            .and_then(|(_, s)| s.last())
            .map(|s| s.1)
    };
    assert!(failed("bad").is_some_and(|t| t > 1.6e9), "{pushed:?}");
    assert!(failed("batch").is_some_and(|t| t == 0.0), "{pushed:?}");
    // A group forwarded, then deleted: its series end in a staleness marker.
    let r = c.put(format!("http://{push_addr}/metrics/job/doomed")).body("doomed_metric 5\n").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let stale = |s: &Vec<(i64, f64)>| s.last().is_some_and(|x| x.1.to_bits() == 0x7ff0_0000_0000_0002);
    wait_for(Duration::from_secs(30), "doomed_metric in Strata", || async {
        let d = read_series(&node.grpc_addr(), "anonymous", "doomed_metric").await;
        (d.len() == 1 && !d.values().any(stale)).then_some(())
    })
    .await;
    let r = c.delete(format!("http://{push_addr}/metrics/job/doomed")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    wait_for(Duration::from_secs(30), "a staleness marker for the deleted group", || async {
        let d = read_series(&node.grpc_addr(), "anonymous", "doomed_metric").await;
        (d.len() == 1 && d.values().all(stale)).then_some(())
    })
    .await;

    // The status listing and a restart: the groups are still there.
    let listing: serde_json::Value =
        c.get(format!("http://{push_addr}/api/v1/metrics")).send().await.unwrap().json().await.unwrap();
    let groups = |v: &serde_json::Value| -> BTreeSet<String> {
        v["data"].as_array().into_iter().flatten().map(|g| g["labels"].to_string()).collect()
    };
    let before = groups(&listing);
    assert!(before.len() >= 5, "{listing}");
    let pg_listing: serde_json::Value =
        c.get(format!("http://127.0.0.1:{pg_port}/api/v1/metrics")).send().await.unwrap().json().await.unwrap();
    let mut pg_groups = groups(&pg_listing);
    pg_groups.retain(|g| !g.contains("py-batch"));
    let mut ours = before.clone();
    ours.retain(|g| !g.contains("py-batch"));
    assert_eq!(ours, pg_groups, "the same groups as the Pushgateway lists");
    agent.proc.terminate();
    let agent = Agent::start(dir.path(), "agent-restarted", &node.write_url(), "ci", "dp-ci-01", &flags).await;
    let listing: serde_json::Value =
        c.get(format!("http://{push_addr}/api/v1/metrics")).send().await.unwrap().json().await.unwrap();
    assert_eq!(groups(&listing), before, "groups after a restart");
    drop(agent);
    pushgateway.terminate();
}
