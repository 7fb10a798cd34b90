//! The alerting rules Strata ships (`helm/strata/alerts/strata.rules.yml`):
//! valid for Prometheus (`promtool check rules`), each alert fires on the
//! failure it describes and stays quiet on a healthy cluster (`promtool test
//! rules`), every metric they use is served by the running binaries, and
//! every alert has its runbook in docs/operations.md.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use controlplane_e2e::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rules_dir() -> PathBuf {
    repo_root().join("helm/strata/alerts")
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool").args(args).current_dir(rules_dir()).output().expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `strata_*` metric names used in the rules' expressions.
fn metrics_in_rules() -> BTreeSet<String> {
    let text = std::fs::read_to_string(rules_dir().join("strata.rules.yml")).expect("rules file");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules yaml");
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("strata_") {
                let tail = &rest[i..];
                let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    names
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

#[test]
fn rules_are_valid_and_fire_on_the_failures_they_describe() {
    if !require("promtool") {
        return;
    }
    promtool(&["check", "rules", "strata.rules.yml"]);
    promtool(&["test", "rules", "strata.rules.test.yml"]);
}

#[test]
fn every_alert_has_a_runbook() {
    let text = std::fs::read_to_string(rules_dir().join("strata.rules.yml")).expect("rules file");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules yaml");
    let ops = std::fs::read_to_string(repo_root().join("docs/operations.md")).expect("docs/operations.md");
    let headings: BTreeSet<String> =
        ops.lines().filter_map(|l| l.strip_prefix("### ")).map(|h| h.trim().to_lowercase()).collect();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            let url = rule["annotations"]["runbook_url"].as_str().unwrap_or_default();
            assert_eq!(url, format!("docs/operations.md#{}", name.to_lowercase()), "{name}: runbook_url");
            assert!(headings.contains(&name.to_lowercase()), "docs/operations.md has no '### {name}' runbook");
            alerts += 1;
        }
    }
    assert!(alerts >= 10, "only {alerts} alerts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_use_is_served() {
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let store = StoreGateway::start(dir.path(), &dir.path().join("objstore"), &[]).await;
    let querier = Querier::start(dir.path(), &[cluster.nodes[0].grpc_addr(), store.grpc_addr()], &[]).await;
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

    let mut served = BTreeSet::new();
    for url in [
        cluster.nodes[0].web_url("/metrics"),
        format!("http://127.0.0.1:{}/metrics", store.web),
        format!("{}/metrics", querier.base()),
        agent.metrics_url(),
        format!("http://127.0.0.1:{compactor_port}/metrics"),
    ] {
        served.extend(scrape_names(&client, &url).await);
    }
    let used = metrics_in_rules();
    assert!(used.len() >= 10, "rules use only {used:?}");
    let missing: Vec<&String> = used.iter().filter(|m| !served.contains(*m)).collect();
    assert!(missing.is_empty(), "the rules use metrics no component serves: {missing:?}");
}
