//! `strata demo` as a user runs it (the README's first command), with
//! `--scenario prod-latency`: the scripted `curl` of `/api/v1/query` sees
//! all three environments; every query in docs/promql-examples.md answers
//! with data; prod's p95 latency rises during the incident;
//! the dashboard in headless Chromium (`controlplane/dashboard/tests/browser.mjs`,
//! playwright-core + Debian's chromium; screenshots in
//! `test-output/dashboard/`); Ctrl-C stops every process; a restart keeps
//! the data.
//!
//! The demo's ports are fixed (DESIGN.md); the test shifts them all with
//! `--port-offset` to a range where every one is free.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use controlplane_e2e::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every port `strata demo` listens on, before `--port-offset`.
const DEMO_PORTS: [u16; 22] = [
    9090, 9009, 9109, 9209, 9095, 9195, 9295, 9096, 9097, 9098, 8081, 8082, 8083, 4317, 4318, 4327, 4328, 4337, 4338,
    8888, 8898, 8908,
];

fn all_free(offset: u16) -> bool {
    DEMO_PORTS.iter().all(|p| TcpListener::bind(("127.0.0.1", p + offset)).is_ok())
}

/// An offset that keeps every port below the ephemeral range (32768) and free now.
fn free_offset() -> u16 {
    let start = std::process::id() as u16 % 20;
    (0..20u16)
        .map(|k| 11_000 + 500 * ((start + k) % 20))
        .find(|&o| all_free(o))
        .expect("no free port range for the demo")
}

const INCIDENT_AFTER_S: i64 = 60;
const PROD_P95: &str = r#"histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{environment="prod"}[20s])))"#;
const ENVS: &str = "count by (environment) (http_server_request_duration_seconds_count)";

fn start_demo(data: &std::path::Path, offset: u16, log_dir: &std::path::Path, name: &str) -> Proc {
    let args: Vec<String> = [
        "demo",
        &format!("--data-dir={}", data.display()),
        "--scenario=prod-latency",
        &format!("--incident.after={INCIDENT_AFTER_S}s"),
        "--incident.duration=10m",
        "--block.duration=1m",
        &format!("--port-offset={offset}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Proc::start(name, &bin("strata"), &args, &[], log_dir)
}

fn scalar(v: &serde_json::Value) -> Option<f64> {
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok().filter(|x: &f64| x.is_finite())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_three_environments_and_the_prod_latency_incident() {
    let dash = repo_root().join("controlplane/dashboard");
    if !require("node") || !require("chromium") {
        return;
    }
    if !dash.join("node_modules/playwright-core").exists() {
        let msg = "controlplane/dashboard/node_modules missing: run `make dashboard` (npm ci + build)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIP: {msg}");
        return;
    }
    let dir = test_dir();
    let data = dir.path().join("data");
    let offset = free_offset();
    let base = format!("http://127.0.0.1:{}", 9090 + offset);
    let t0 = now_ms();
    let mut demo = start_demo(&data, offset, dir.path(), "demo");
    wait_ready(&format!("{base}/-/ready"), Duration::from_secs(60)).await;
    let client = reqwest::Client::new();
    let index = client.get(&base).send().await.unwrap().text().await.unwrap();
    assert!(
        !index.contains("dashboard was not built"),
        "the strata binary was built without the dashboard: run `make dashboard` before building"
    );

    // The scripted curl: every environment has data.
    wait_for(Duration::from_secs(90), "data from prod, dev and qa", || async {
        let r = query(&base, ENVS).await;
        let mut envs: Vec<String> =
            r.iter().filter_map(|s| s["metric"]["environment"].as_str().map(String::from)).collect();
        envs.sort();
        (envs == ["dev", "prod", "qa"]).then_some(())
    })
    .await;

    // Every agent ships its own metrics: the Data planes page's queue depth.
    wait_for(Duration::from_secs(60), "agent self-monitoring from prod, dev and qa", || async {
        let r = query(&base, "count by (environment, data_plane_id) (strata_agent_queue_bytes{job=\"strata-agent\"})")
            .await;
        (r.len() == 3).then_some(())
    })
    .await;

    // Strata observes itself: the demo's scraping agent collects every
    // control-plane component's /metrics into environment "strata".
    wait_for(Duration::from_secs(60), "the control plane's own metrics (environment=strata)", || async {
        let r = query(&base, r#"up{environment="strata"} == 1"#).await;
        let jobs: std::collections::BTreeSet<String> =
            r.iter().filter_map(|s| s["metric"]["job"].as_str().map(String::from)).collect();
        (r.len() == 7 && jobs.len() == 5).then_some(())
    })
    .await;
    assert!(
        !query(&base, r#"strata_ingester_tenant_samples_written_total{environment="strata"}"#).await.is_empty(),
        "the ingesters' own metrics are queryable"
    );
    // Every component serves process metrics and its build.
    let rss = query(&base, r#"process_resident_memory_bytes{environment="strata"} > 0"#).await;
    assert_eq!(rss.len(), 7, "process metrics of every control-plane component: {rss:?}");
    let builds = query(&base, r#"count by (version) (strata_build_info{environment="strata"})"#).await;
    assert_eq!(builds.len(), 1, "one version: {builds:?}");

    // qa runs with a 10% injected error rate: the injected 500s are measured.
    wait_for(Duration::from_secs(60), "injected 500s on qa in the request metrics", || async {
        let q = r#"http_server_request_duration_seconds_count{environment="qa",http_response_status_code="500"}"#;
        (!query(&base, q).await.is_empty()).then_some(())
    })
    .await;

    // Every query in docs/promql-examples.md answers with data.
    let examples = std::fs::read_to_string(repo_root().join("docs/promql-examples.md")).expect("promql-examples.md");
    let queries: Vec<String> = examples
        .split("```promql\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(|q| q.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(queries.len() >= 15, "only {} examples found", queries.len());
    for q in &queries {
        let result = wait_for(Duration::from_secs(30), &format!("data for the example {q}"), || {
            let (c, b) = (client.clone(), base.clone());
            async move {
                let v = instant_query(&c, &b, "anonymous", q, now_ms()).await;
                assert_eq!(v["status"], "success", "{q}: {v}");
                v["data"]["result"].as_array().filter(|r| !r.is_empty()).map(Vec::len)
            }
        })
        .await;
        eprintln!("example ok ({result} series): {q}");
    }

    // Strata's own alert rules run on Strata's own metrics: every rule's
    // expression evaluates, and every metric the rules read is there
    // (families with labels appear with their first event: a healthy demo
    // has no dropped samples).
    let rules_file = repo_root().join("helm/strata/alerts/strata.rules.yml");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&rules_file).expect("rules file")).expect("rules yaml");
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            let v = instant_query(&client, &base, "anonymous", expr, now_ms()).await;
            assert_eq!(v["status"], "success", "rule {:?}: {v}", rule["alert"]);
        }
    }
    let documented = documented_metrics(&repo_root().join("docs/metrics.md"));
    for name in metrics_in_rules(&rules_file) {
        let labelled = documented.get(&name).map(|(_, _, l)| *l).unwrap_or(false);
        if labelled {
            continue;
        }
        wait_for(Duration::from_secs(60), &format!("{name} in the demo (the alert rules read it)"), || {
            let (c, b, q) = (client.clone(), base.clone(), format!("count({name})"));
            async move {
                let v = instant_query(&c, &b, "anonymous", &q, now_ms()).await;
                v["data"]["result"].as_array().filter(|r| !r.is_empty()).map(|_| ())
            }
        })
        .await;
    }

    // Every panel of Strata's Grafana dashboards (Helm ConfigMap and
    // compose) shows data: at least one of its queries answers with series.
    let default_job = ".*strata-(ingester|querier|store|compactor).*";
    let mut panels = 0;
    for entry in std::fs::read_dir(repo_root().join("helm/strata/dashboards")).expect("dashboards") {
        let path = entry.expect("entry").path();
        let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        for panel in d["panels"].as_array().expect("panels") {
            let exprs: Vec<String> = panel["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .map(|t| {
                    t["expr"].as_str().expect("expr").replace("$__rate_interval", "1m").replace("$job", default_job)
                })
                .collect();
            let what = format!("data for panel {:?} of {}", panel["title"], path.display());
            wait_for(Duration::from_secs(90), &what, || {
                let (c, b, exprs) = (client.clone(), base.clone(), exprs.clone());
                async move {
                    for e in &exprs {
                        let v = instant_query(&c, &b, "anonymous", e, now_ms()).await;
                        assert_eq!(v["status"], "success", "{e}: {v}");
                        if v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
                            return Some(());
                        }
                    }
                    None
                }
            })
            .await;
            panels += 1;
        }
    }
    assert!(panels >= 40, "only {panels} panels in helm/strata/dashboards");

    // The dashboard in Chromium (before and into the incident).
    let out = repo_root().join("test-output/dashboard");
    let status = Command::new("node")
        .arg("tests/browser.mjs")
        .arg(&base)
        .arg(&out)
        .current_dir(&dash)
        .status()
        .expect("run node");
    assert!(status.success(), "browser test failed; screenshots in {}", out.display());
    for shot in ["overview", "environment-qa", "explore", "cardinality"] {
        assert!(out.join(format!("{shot}.png")).exists(), "missing screenshot {shot}");
    }

    // The incident: prod's p95 before it started (the window ends 5 s before
    // the earliest possible start) against p95 once it has run 40 s.
    let before_ms = t0 + (INCIDENT_AFTER_S - 5) * 1000;
    let during_ms = t0 + (INCIDENT_AFTER_S + 40) * 1000;
    if let Ok(wait) = u64::try_from(during_ms - now_ms()) {
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    let before = instant_query(&client, &base, "anonymous", PROD_P95, before_ms).await;
    let during = instant_query(&client, &base, "anonymous", PROD_P95, now_ms()).await;
    let (Some(b), Some(d)) = (scalar(&before), scalar(&during)) else {
        panic!("prod p95 missing: before {before}, during {during}\n{}", demo.log_tail())
    };
    assert!(d > 2.5 * b, "prod p95 did not rise during the incident: before {b} s, during {d} s");
    eprintln!("prod p95: {b:.3} s before the incident, {d:.3} s during it");

    // The ruler (Strata's own alerts + the RED rules) sees the incident:
    // HighRequestLatency for prod goes pending, then firing, as the querier's
    // /api/v1/alerts (from --ruler.url) reports.
    let latency_alert = |alerts: &serde_json::Value, state: &str| {
        alerts["data"]["alerts"].as_array().is_some_and(|l| {
            l.iter().any(|a| {
                a["labels"]["alertname"] == "HighRequestLatency"
                    && a["labels"]["environment"] == "prod"
                    && a["state"] == state
            })
        })
    };
    let firing_at = wait_for(Duration::from_secs(240), "HighRequestLatency firing for prod", || {
        let (c, b) = (client.clone(), base.clone());
        async move {
            let v: serde_json::Value = c.get(format!("{b}/api/v1/alerts")).send().await.ok()?.json().await.ok()?;
            latency_alert(&v, "firing").then(now_ms)
        }
    })
    .await;
    // Before firing it was pending: the ALERTS series the ruler wrote back
    // through the ingesters say when, and the pending state came first.
    let states =
        |state: &str| format!(r#"ALERTS{{alertname="HighRequestLatency",environment="prod",alertstate="{state}"}}"#);
    let first_at = |state: &str| {
        let (c, b, q) = (client.clone(), base.clone(), states(state));
        async move {
            let v: serde_json::Value = c
                .get(format!("{b}/api/v1/query_range"))
                .query(&[
                    ("query", q.as_str()),
                    ("start", &format!("{}", t0 / 1000)),
                    ("end", &format!("{}", now_ms() / 1000)),
                    ("step", "5"),
                ])
                .send()
                .await
                .expect("query_range")
                .json()
                .await
                .expect("json");
            v["data"]["result"][0]["values"][0][0].as_f64()
        }
    };
    let pending_since =
        wait_for(Duration::from_secs(30), "ALERTS{alertstate=\"pending\"} for prod", || first_at("pending")).await;
    let firing_since =
        wait_for(Duration::from_secs(30), "ALERTS{alertstate=\"firing\"} for prod", || first_at("firing")).await;
    assert!(
        pending_since + 55.0 <= firing_since,
        "pending from {pending_since}, firing from {firing_since}: not `for: 1m` apart"
    );
    eprintln!(
        "HighRequestLatency: pending {:.0} s, firing {:.0} s after the demo started",
        pending_since - t0 as f64 / 1000.0,
        firing_since - t0 as f64 / 1000.0
    );
    assert!(firing_at > t0);
    let status = Command::new("node")
        .arg("tests/browser.mjs")
        .arg(&base)
        .arg(&out)
        .arg("alerts")
        .current_dir(&dash)
        .status()
        .expect("run node");
    assert!(status.success(), "browser test of the Alerts page failed; screenshots in {}", out.display());
    for shot in ["alerts", "overview-alert", "alerts-page"] {
        assert!(out.join(format!("{shot}.png")).exists(), "missing screenshot {shot}");
    }
    // Alertmanager (Debian's, started by the demo when installed) got it.
    if require("prometheus-alertmanager") {
        let am = format!("http://127.0.0.1:{}/api/v2/alerts", 9093 + offset);
        wait_for(Duration::from_secs(60), "HighRequestLatency in Alertmanager", || {
            let (c, am) = (client.clone(), am.clone());
            async move {
                let v: serde_json::Value = c.get(&am).send().await.ok()?.json().await.ok()?;
                v.as_array()?
                    .iter()
                    .any(|a| a["labels"]["alertname"] == "HighRequestLatency" && a["labels"]["environment"] == "prod")
                    .then_some(())
            }
        })
        .await;
    }

    // Ctrl-C stops every process: all ports are free again.
    let stop_ms = now_ms();
    let status = demo.interrupt(Duration::from_secs(90));
    assert!(status.is_some_and(|s| s.success()), "demo did not exit cleanly on Ctrl-C: {status:?}");
    assert!(all_free(offset), "a demo process still holds a port after Ctrl-C");

    // A restart keeps the data written before the stop.
    let mut demo = start_demo(&data, offset, dir.path(), "demo-restarted");
    wait_ready(&format!("{base}/-/ready"), Duration::from_secs(60)).await;
    let at = stop_ms - 10_000;
    let envs = wait_for(Duration::from_secs(60), "data from before the restart", || {
        let c = client.clone();
        let b = base.clone();
        async move {
            let v = instant_query(&c, &b, "anonymous", ENVS, at).await;
            v["data"]["result"].as_array().filter(|r| r.len() == 3).map(|r| r.len())
        }
    })
    .await;
    assert_eq!(envs, 3);
    let status = demo.interrupt(Duration::from_secs(90));
    assert!(status.is_some_and(|s| s.success()), "restarted demo did not exit cleanly: {status:?}");
}
