//! sample-api → strata-agent → Debian's Prometheus (remote write receiver):
//! histograms, business counters and target_info arrive with the agent's
//! `environment` / `data_plane_id` labels and counts equal to the traffic;
//! the agent's optional Prometheus exposition (:8889) shows the same values
//! in a format `promtool check metrics` accepts.

use std::time::Duration;

use dataplane_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_arrives_in_prometheus_with_exact_counts() {
    if !require("prometheus") {
        return;
    }
    let dir = test_dir();
    let prom = Prometheus::start(dir.path(), free_port()).await;
    let exposition = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(
        dir.path(),
        "agent",
        &prom.write_url(),
        "prod",
        "dp-prod-01",
        &["--prometheus-exporter.listen-address", &exposition, "--self-monitoring.interval=1s"],
    )
    .await;
    let no_failures = [("PAYMENT_FAILURE_RATE", "0".to_string())];
    let http_api = SampleApi::start(dir.path(), "api-http", &agent, "http/protobuf", "shop-http", &no_failures).await;
    let grpc_api = SampleApi::start(dir.path(), "api-grpc", &agent, "grpc", "shop-grpc", &no_failures).await;
    let json_api = SampleApi::start(dir.path(), "api-json", &agent, "http/json", "shop-json", &no_failures).await;

    let c = reqwest::Client::new();
    for _ in 0..30 {
        assert!(c.get(http_api.url("/api/products")).send().await.unwrap().status().is_success());
    }
    for i in 1..=5 {
        let r = c
            .post(http_api.url("/api/orders"))
            .json(&serde_json::json!({"product_id": i, "quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    for body in [r#"{"product_id":"x","quantity":1}"#, "not json", r#"{"product_id":1}"#] {
        let r = c
            .post(http_api.url("/api/orders"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let msg: serde_json::Value = r.json().await.unwrap();
        assert!(msg["error"].as_str().unwrap().contains("invalid order"), "{msg}");
    }
    for i in 1..=4 {
        let r = c
            .post(http_api.url("/api/payments"))
            .json(&serde_json::json!({"order_id": i, "amount": 10.5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..12 {
        c.get(grpc_api.url("/api/products")).send().await.unwrap();
    }
    for _ in 0..7 {
        c.get(json_api.url("/api/search?q=x")).send().await.unwrap();
    }

    let base = prom.base();
    let sel = r#"environment="prod",data_plane_id="dp-prod-01""#;
    let mut expect = vec![
        (
            format!(
                r#"sum(http_server_request_duration_seconds_count{{{sel},job="shop-http",http_route="/api/products"}})"#
            ),
            30.0,
        ),
        (
            format!(
                r#"sum(http_server_request_duration_seconds_bucket{{{sel},job="shop-http",http_route="/api/products",le="+Inf"}})"#
            ),
            30.0,
        ),
        (
            format!(
                r#"sum(http_server_request_duration_seconds_count{{{sel},job="shop-http",http_route="/api/orders",http_response_status_code="201"}})"#
            ),
            5.0,
        ),
        (
            format!(
                r#"sum(http_server_request_duration_seconds_count{{{sel},job="shop-http",http_route="/api/orders",http_response_status_code="400"}})"#
            ),
            3.0,
        ),
        (format!(r#"sum(shop_orders_created_total{{{sel},job="shop-http"}})"#), 5.0),
        (format!(r#"sum(shop_payments_total{{{sel},job="shop-http",outcome="success"}})"#), 4.0),
        (
            format!(
                r#"sum(http_server_request_duration_seconds_count{{{sel},job="shop-grpc",http_route="/api/products"}})"#
            ),
            12.0,
        ),
        (
            format!(
                r#"sum(http_server_request_duration_seconds_count{{{sel},job="shop-json",http_route="/api/search"}})"#
            ),
            7.0,
        ),
        (format!(r#"count(target_info{{{sel},job=~"shop-(http|grpc|json)",service_version!=""}})"#), 3.0),
    ];
    // The agent ships its own metrics, labelled like its data (self-monitoring).
    expect.push((format!(r#"count(strata_agent_queue_bytes{{{sel},job="strata-agent"}})"#), 1.0));
    expect.push((format!(r#"count(strata_agent_datapoints_received_total{{{sel},job="strata-agent"}} > 0)"#), 1.0));
    for (q, want) in &expect {
        let got =
            wait_for(Duration::from_secs(30), q, || async { query_value(&base, q).await.filter(|v| v == want) }).await;
        assert_eq!(got, *want, "{q}");
    }
    // Buckets are cumulative: every le bucket ≤ the next, +Inf equals _count.
    let buckets = query(
        &base,
        &format!(r#"http_server_request_duration_seconds_bucket{{{sel},job="shop-http",http_route="/api/products"}}"#),
    )
    .await;
    let mut by_le: Vec<(f64, f64)> = buckets
        .iter()
        .map(|s| {
            let le = s["metric"]["le"].as_str().unwrap();
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
            (le, s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
        })
        .collect();
    by_le.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert_eq!(by_le.len(), 15, "14 semconv bounds + +Inf");
    assert!(by_le.windows(2).all(|w| w[0].1 <= w[1].1), "{by_le:?}");
    let sum = query_value(
        &base,
        &format!(
            r#"sum(http_server_request_duration_seconds_sum{{{sel},job="shop-http",http_route="/api/products"}})"#
        ),
    )
    .await
    .unwrap();
    assert!(sum > 0.0 && sum < 30.0, "sum of 30 fast requests: {sum}");
    // Active requests gauge and breaker state exist.
    assert!(
        query_value(&base, &format!(r#"sum(http_server_active_requests{{{sel},job="shop-http"}})"#)).await.is_some()
    );
    assert_eq!(query_value(&base, &format!(r#"max(circuit_breaker_state{{{sel},job="shop-http"}})"#)).await, Some(0.0));
    // Nothing failed or was rejected on the way.
    assert_eq!(
        agent
            .metric(&format!(
                "strata_agent_samples_failed_total{{endpoint=\"{}\",reason=\"http_400\"}}",
                prom.write_url()
            ))
            .await,
        0.0
    );
    assert!(agent.metric("strata_agent_samples_queued_total").await > 0.0);

    // The exposition endpoint serves the latest value of the same series.
    let text = reqwest::get(format!("http://{exposition}/metrics")).await.unwrap().text().await.unwrap();
    let exposed = |name: &str, labels: &[(&str, &str)]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let common = [("environment", "prod"), ("data_plane_id", "dp-prod-01"), ("job", "shop-http")];
    let products = [common.as_slice(), &[("http_route", "/api/products")]].concat();
    assert_eq!(exposed("http_server_request_duration_seconds_count", &products), 30.0, "{text}");
    assert_eq!(
        exposed("http_server_request_duration_seconds_bucket", &[products.as_slice(), &[("le", "+Inf")]].concat()),
        30.0
    );
    assert_eq!(exposed("shop_orders_created_total", &common), 5.0);
    assert_eq!(exposed("shop_payments_total", &[common.as_slice(), &[("outcome", "success")]].concat()), 4.0);
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram\n"), "{text}");
    assert!(text.contains("# TYPE shop_orders_created_total counter\n"), "{text}");
    assert!(exposed("target_info", &[("job", "shop-grpc")]) == 1.0, "{text}");
    if require("promtool") {
        let mut check = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool check metrics: {report}\n{text}");
    }
    drop((http_api, grpc_api, json_api));
}
