//! The CI-results example (docs/ci-metrics.md, docs/examples/ci/): its
//! rules pass `promtool check rules` and their unit tests; two CI runs'
//! JUnit files pushed through the agent's push API with
//! `push_junit.py` (Prometheus' Python client, unchanged) reach Strata, and
//! every panel of `ci-dashboard.json` answers through the querier with what
//! those runs say (pass rate, failing and flaky tests, durations).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use controlplane_e2e::*;

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/ci")
}

#[test]
fn ci_rules_are_valid_and_their_unit_tests_pass() {
    if !required("promtool", require("promtool")) {
        return;
    }
    promtool_in(&example_dir(), &["check", "rules", "ci.rules.yml"]);
    promtool_in(&example_dir(), &["test", "rules", "ci.rules.test.yml"]);
}

fn push(gateway: &str, junit: &str) {
    let out = Command::new("python3")
        .arg(example_dir().join("push_junit.py"))
        .args(["--gateway", gateway, "--pipeline", "shop", "--branch", "main"])
        .arg(example_dir().join(junit))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "push_junit.py {junit}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The panels' queries with the dashboard's variables at "All".
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(example_dir().join("ci-dashboard.json")).expect("ci-dashboard.json");
    let d: serde_json::Value = serde_json::from_str(&text).expect("ci-dashboard.json is JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr").replace("$pipeline", ".*").replace("$branch", ".*");
            out.push((p["title"].as_str().unwrap_or("").to_string(), expr));
        }
    }
    out
}

fn label_set(v: &serde_json::Value, label: &str) -> BTreeSet<String> {
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["metric"][label].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pushed_ci_results_fill_every_panel_of_the_ci_dashboard() {
    if !required("prometheus_client (pip)", python_has("prometheus_client")) {
        return;
    }
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let node = &cluster.nodes[0];
    let querier = Querier::start(dir.path(), &[node.grpc_addr()], &[]).await;
    let push_addr = format!("127.0.0.1:{}", free_port());
    let flag = format!("--push.listen-address={push_addr}");
    let _agent =
        Agent::start(dir.path(), "agent", &node.write_url(), "ci", "dp-ci-01", &[&flag, "--push.interval=500ms"]).await;
    let c = reqwest::Client::new();
    let query = |q: String| {
        let (c, base) = (c.clone(), querier.base());
        async move { instant_query(&c, &base, "anonymous", &q, now_ms()).await }
    };

    // Run 1: everything executed passes.
    push(&push_addr, "junit-run1.xml");
    wait_for(Duration::from_secs(30), "run 1 in Strata", || async {
        let v = query(r#"ci_run_tests{outcome="passed"} == 3"#.into()).await;
        (v["data"]["result"].as_array().is_some_and(|r| r.len() == 1)).then_some(())
    })
    .await;
    // Run 2: the flaky test and the payment test fail.
    push(&push_addr, "junit-run2.xml");
    let pass_rate = r#"sum by (pipeline, branch) (ci_run_tests{outcome="passed"}) / sum by (pipeline, branch) (ci_run_tests{outcome=~"passed|failed"})"#;
    wait_for(Duration::from_secs(30), "run 2 in Strata", || async {
        let v = query(pass_rate.into()).await;
        let r = v["data"]["result"].as_array().cloned().unwrap_or_default();
        let value = r.first().and_then(|s| s["value"][1].as_str()).and_then(|s| s.parse::<f64>().ok());
        value.is_some_and(|x| (x - 1.0 / 3.0).abs() < 1e-9).then_some(())
    })
    .await;

    // Every panel answers with data.
    let queries = dashboard_queries();
    assert_eq!(queries.len(), 8, "{queries:?}");
    for (title, expr) in &queries {
        let v = query(expr.clone()).await;
        assert_eq!(v["status"], "success", "{title}: {expr}: {v}");
        let n = v["data"]["result"].as_array().map_or(0, Vec::len);
        assert!(n > 0, "panel {title:?} has no data: {expr}: {v}");
    }
    // And what they show is what the runs said.
    let find = |t: &str| queries.iter().find(|(title, _)| title.starts_with(t)).map(|(_, e)| e.clone()).unwrap();
    let failing = query(find("Failing tests")).await;
    assert_eq!(
        label_set(&failing, "test"),
        BTreeSet::from(["cart.test_flaky".to_string(), "checkout.test_payment".to_string()]),
        "{failing}"
    );
    let flaky = query(find("Flaky tests")).await;
    assert_eq!(label_set(&flaky, "test"), label_set(&failing, "test"), "both flipped once: {flaky}");
    let slowest = query(find("Slowest tests")).await;
    let top = slowest["data"]["result"]
        .as_array()
        .and_then(|r| {
            r.iter().max_by(|a, b| {
                let f =
                    |x: &serde_json::Value| x["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
                f(a).total_cmp(&f(b))
            })
        })
        .and_then(|s| s["metric"]["test"].as_str())
        .map(str::to_string);
    assert_eq!(top.as_deref(), Some("checkout.test_payment"), "{slowest}");
    let green = query(find("Runs all green")).await;
    assert_eq!(green["data"]["result"][0]["value"][1], "0", "{green}");
    let since = query(find("Since the last run")).await;
    let s: f64 = since["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::MAX);
    assert!((0.0..120.0).contains(&s), "pushed moments ago: {since}");
}

fn python_has(module: &str) -> bool {
    Command::new("python3").args(["-c", &format!("import {module}")]).status().is_ok_and(|s| s.success())
}
