//! The alerting rules Strata ships (`helm/strata/alerts/strata.rules.yml`):
//! valid for Prometheus (`promtool check rules`), each alert fires on the
//! failure it describes and stays quiet on a healthy cluster (`promtool test
//! rules`), every metric they use is served by the running binaries,
//! every alert has its runbook in docs/operations.md, and docs/metrics.md
//! lists exactly the metric families each binary serves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use controlplane_e2e::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rules_dir() -> PathBuf {
    repo_root().join("helm/strata/alerts")
}

fn promtool(args: &[&str]) {
    promtool_in(&rules_dir(), args);
}

/// Metric names (without labels) in a Prometheus text exposition.
async fn scrape_names(client: &reqwest::Client, url: &str) -> BTreeSet<String> {
    let text = client.get(url).send().await.expect("scrape").text().await.expect("body");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(String::from)
        .collect()
}

/// Metric families in a text exposition: name (as samples carry it:
/// counters with `_total`) → type.
async fn scrape_families(client: &reqwest::Client, url: &str) -> BTreeMap<String, String> {
    let text = client.get(url).send().await.expect("scrape").text().await.expect("body");
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| {
            let name =
                if kind == "counter" && !name.ends_with("_total") { format!("{name}_total") } else { name.into() };
            (name, kind.trim().to_string())
        })
        .collect()
}

#[test]
fn rules_are_valid_and_fire_on_the_failures_they_describe() {
    if !require("promtool") {
        return;
    }
    for (rules, tests) in RULE_FILES {
        promtool(&["check", "rules", rules]);
        promtool(&["test", "rules", tests]);
    }
}

/// The shipped rule files and their unit tests.
const RULE_FILES: [(&str, &str); 2] =
    [("strata.rules.yml", "strata.rules.test.yml"), ("red.rules.yml", "red.rules.test.yml")];

#[test]
fn strata_ruler_passes_the_shipped_rules_unit_tests() {
    for (_, tests) in RULE_FILES {
        let out = std::process::Command::new(bin("strata"))
            .args(["ruler", "test", tests])
            .current_dir(rules_dir())
            .output()
            .expect("run strata ruler test");
        assert!(
            out.status.success(),
            "strata ruler test {tests}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
    }
}

#[test]
fn every_alert_has_a_runbook() {
    let ops = std::fs::read_to_string(repo_root().join("docs/operations.md")).expect("docs/operations.md");
    let headings: BTreeSet<String> =
        ops.lines().filter_map(|l| l.strip_prefix("### ")).map(|h| h.trim().to_lowercase()).collect();
    let mut alerts = 0;
    for (file, _) in RULE_FILES {
        let text = std::fs::read_to_string(rules_dir().join(file)).expect("rules file");
        let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules yaml");
        for rule in
            rules["groups"].as_sequence().expect("groups").iter().flat_map(|g| g["rules"].as_sequence().expect("rules"))
        {
            let Some(name) = rule["alert"].as_str() else { continue };
            let url = rule["annotations"]["runbook_url"].as_str().unwrap_or_default();
            assert_eq!(url, format!("docs/operations.md#{}", name.to_lowercase()), "{name}: runbook_url");
            assert!(headings.contains(&name.to_lowercase()), "docs/operations.md has no '### {name}' runbook");
            alerts += 1;
        }
    }
    assert!(alerts >= 15, "only {alerts} alerts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_use_is_served_and_every_served_metric_is_documented() {
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let store = StoreGateway::start(dir.path(), &dir.path().join("objstore"), &[]).await;
    let querier = Querier::start(dir.path(), &[cluster.nodes[0].grpc_addr(), store.grpc_addr()], &[]).await;
    let query_frontend = QueryFrontend::start(dir.path(), &[querier.base()], &[]).await;
    let frontend = query_frontend.base();
    let compactor_port = free_port();
    let _compactor = Proc::start(
        "compactor",
        &bin("strata"),
        &[
            "compact".into(),
            format!("--web.listen-address=127.0.0.1:{compactor_port}"),
            format!("--objstore.path={}", dir.path().join("objstore").display()),
        ],
        &[],
        dir.path(),
    );
    wait_ready(&format!("http://127.0.0.1:{compactor_port}/-/ready"), Duration::from_secs(30)).await;
    // A ruler with a recording and an alerting rule, an Alertmanager that
    // does not answer (the error family gets a series) and rule storage.
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: g\n  interval: 1s\n  rules:\n  - record: r\n    expr: vector(1)\n  - alert: A\n    expr: vector(1)\n",
    )
    .expect("rules");
    let ruler_port = free_port();
    let _ruler = Proc::start(
        "ruler",
        &bin("strata"),
        &[
            "ruler".into(),
            format!("--web.listen-address=127.0.0.1:{ruler_port}"),
            format!("--rule.files={}", rules.display()),
            format!("--endpoint={}", cluster.nodes[0].grpc_addr()),
            format!("--remote-write.url={}", cluster.nodes[0].write_url()),
            format!("--alertmanager.url=http://127.0.0.1:{}", free_port()),
            format!("--objstore.path={}", dir.path().join("objstore").display()),
        ],
        &[],
        dir.path(),
    );
    wait_ready(&format!("http://127.0.0.1:{ruler_port}/-/ready"), Duration::from_secs(30)).await;
    // A second endpoint that answers 404 (the querier has no write path):
    // the agent drops what it rejects, so the dropped-samples family has a series.
    let urls = format!("{},{}/api/v1/write", cluster.nodes[0].write_url(), querier.base());
    let agent = Agent::start(dir.path(), "agent", &urls, "prod", "dp-prod-01", &[]).await;
    let api = SampleApi::start(dir.path(), "api", &agent, "grpc", "shop-api", &[]).await;
    let client = reqwest::Client::new();
    // Traffic through the whole path, so labelled families have series.
    wait_for(Duration::from_secs(60), "samples sent and dropped by the agent", || {
        let (c, url, metrics) = (client.clone(), api.url("/api/products"), agent.metrics_url());
        async move {
            let _ = c.get(url).send().await;
            let names = scrape_names(&c, &metrics).await;
            (names.contains("strata_agent_samples_sent_total") && names.contains("strata_agent_samples_failed_total"))
                .then_some(())
        }
    })
    .await;
    let _ = query(&querier.base(), "up").await;
    // A range query through the frontend (its cache families get series).
    let now = now_ms() / 1000;
    let r = client
        .get(format!("{frontend}/api/v1/query_range"))
        .query(&[
            ("query", "up".to_string()),
            ("start", (now - 600).to_string()),
            ("end", now.to_string()),
            ("step", "60".into()),
        ])
        .send()
        .await
        .expect("query_range through the frontend");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    // A flush: cut, spill and upload run on the ingester (background and
    // object-storage families get series there).
    let (status, body) = cluster.nodes[0].flush(&client).await;
    assert_eq!(status, 200, "flush: {body}");
    let _ = query(&querier.base(), "up").await;

    let mut served = BTreeSet::new();
    let mut families = BTreeMap::new();
    for (binary, url) in [
        ("ingester", cluster.nodes[0].web_url("/metrics")),
        ("store", format!("http://127.0.0.1:{}/metrics", store.web)),
        ("querier", format!("{}/metrics", querier.base())),
        ("query-frontend", format!("{frontend}/metrics")),
        ("agent", agent.metrics_url()),
        ("compactor", format!("http://127.0.0.1:{compactor_port}/metrics")),
        ("ruler", format!("http://127.0.0.1:{ruler_port}/metrics")),
    ] {
        served.extend(scrape_names(&client, &url).await);
        families.insert(binary, scrape_families(&client, &url).await);
    }
    let documented = documented_metrics(&repo_root().join("docs/metrics.md"));
    let mut problems = Vec::new();
    for (binary, served) in &families {
        for (name, kind) in served {
            match documented.get(name) {
                None => problems.push(format!("{binary} serves {name} ({kind}), not in docs/metrics.md")),
                Some((k, bins, _)) if k != kind || !bins.contains(*binary) => {
                    problems.push(format!("{binary} serves {name} as a {kind}; docs/metrics.md says {k} on {bins:?}"))
                }
                Some(_) => {}
            }
        }
    }
    for (name, (_, bins, labelled)) in &documented {
        for b in bins {
            // Labelled families appear with their first event.
            if !labelled && !families.get(b.as_str()).is_some_and(|f| f.contains_key(name)) {
                problems.push(format!("docs/metrics.md lists {name} on {b}, which does not serve it"));
            }
        }
    }
    assert!(problems.is_empty(), "docs/metrics.md and the binaries disagree:\n{}", problems.join("\n"));
    // The shared families count what happened.
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let ingester =
        client.get(cluster.nodes[0].web_url("/metrics")).send().await.expect("scrape").text().await.expect("body");
    for series in [
        r#"strata_background_runs_total{worker="spill",result="success"}"#,
        r#"strata_background_runs_total{worker="upload",result="success"}"#,
        r#"strata_objstore_operations_total{operation="put",result="success"}"#,
        r#"strata_http_requests_total{handler="/api/v1/admin/flush",method="POST",code="200"}"#,
        r#"strata_grpc_server_handled_total{grpc_service="strata.store.Store",grpc_method="Series",grpc_code="OK"}"#,
    ] {
        assert!(value(&ingester, series) >= 1.0, "ingester: {series} missing or 0:\n{ingester}");
    }
    let used = metrics_in_rules(&rules_dir().join("strata.rules.yml"));
    assert!(used.len() >= 10, "rules use only {used:?}");
    let missing: Vec<&String> = used.iter().filter(|m| !served.contains(*m)).collect();
    assert!(missing.is_empty(), "the rules use metrics no component serves: {missing:?}");
}
