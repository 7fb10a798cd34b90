//! The dashboard in headless Chromium against a running stack: three data
//! planes (sample API + agent) → 3 Raft ingesters → querier serving the
//! embedded dashboard. Drives `controlplane/dashboard/tests/browser.mjs`
//! (playwright-core + Debian's chromium); screenshots land in
//! `test-output/dashboard/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use controlplane_e2e::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
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
    let cluster = Cluster::start(dir.path(), 3, &[]).await;
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.grpc_addr()).collect();
    let querier = Querier::start(dir.path(), &endpoints, &[]).await;
    let client = reqwest::Client::new();
    let index = client.get(querier.base()).send().await.unwrap().text().await.unwrap();
    assert!(
        !index.contains("dashboard was not built"),
        "the strata binary was built without the dashboard: run `make dashboard` before building"
    );

    let mut planes = Vec::new();
    for (i, env) in ["prod", "dev", "qa"].iter().enumerate() {
        let agent = Agent::start(
            dir.path(),
            &format!("agent-{env}"),
            &cluster.nodes[i].write_url(),
            env,
            &format!("dp-{env}-01"),
            &[],
        )
        .await;
        let api = SampleApi::start(dir.path(), &format!("api-{env}"), &agent, "grpc", "shop-api", &[]).await;
        planes.push((agent, api));
    }
    // Traffic for a while (errors on qa via its payment path).
    let traffic = {
        let urls: Vec<String> = planes.iter().map(|(_, api)| api.url("")).collect();
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            for k in 0..10_000u32 {
                for u in &urls {
                    let _ = c.get(format!("{u}/api/products")).send().await;
                    if k % 3 == 0 {
                        let _ = c
                            .post(format!("{u}/api/orders"))
                            .json(&serde_json::json!({"product_id": 1, "quantity": 1}))
                            .send()
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Data from all three environments is queryable.
    wait_for(Duration::from_secs(60), "request rates of three environments", || async {
        let r =
            query(&querier.base(), "sum by (environment) (rate(http_server_request_duration_seconds_count[1m]))").await;
        (r.len() >= 3).then_some(())
    })
    .await;

    let out = repo_root().join("test-output/dashboard");
    let status = Command::new("node")
        .arg("tests/browser.mjs")
        .arg(querier.base())
        .arg(&out)
        .current_dir(&dash)
        .status()
        .expect("run node");
    traffic.abort();
    assert!(status.success(), "browser test failed; screenshots in {}", out.display());
    for shot in ["overview", "environment-qa", "explore", "cardinality"] {
        assert!(out.join(format!("{shot}.png")).exists(), "missing screenshot {shot}");
    }
}
