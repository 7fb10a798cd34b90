//! Blocks: the head is cut into Parquet blocks in object storage, served by
//! `strata store`; queries across the head/block boundary answer exactly
//! as when everything was in the head; an object-storage outage loses
//! nothing, and a new leader uploads a block its predecessor cut.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use controlplane_e2e::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_blocks_answer_like_the_head_alone() {
    let dir = test_dir();
    let objstore = dir.path().join("objstore");
    let mut cluster = Cluster::start(dir.path(), 3, &["--block.duration=1h", "--block.retain-after-upload=1s"]).await;
    let store = StoreGateway::start(dir.path(), &objstore, &["--store.sync-interval=500ms"]).await;
    let mut endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.grpc_addr()).collect();
    endpoints.push(store.grpc_addr());
    let objstore_arg = format!("--objstore.path={}", objstore.display());
    // No frontend: the same queries must be evaluated again over the blocks, whole
    // (the push-down counts below are per evaluation).
    let querier = Querier::start(
        dir.path(),
        &endpoints,
        &["--sql.enabled=true", &objstore_arg, "--query.results-cache.max-bytes=0", "--query.split-interval=0s"],
    )
    .await;
    let client = reqwest::Client::new();

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let t0 = (now - 40 * 60_000) / 60_000 * 60_000;
    let written = requests_total_data(t0, 20);
    write_series(&client, &cluster.nodes[0].write_url(), &written).await;
    // Before the flush there is no block: SQL sees empty tables.
    let (s, v) = sql(&client, &querier.base(), "SELECT count(*) FROM samples").await;
    assert_eq!((s, &v["data"]["rows"]), (200, &serde_json::json!([[0]])), "{v}");
    // Ends before the samples written after the flush.
    let (start, end) = (t0 + 5 * 60_000, t0 + 19 * 60_000 + 30_000);
    let before = block_query_results(&client, &querier.base(), start, end).await;

    // Cut everything into a block on the leader.
    let leader = cluster.wait_leader(None, Duration::from_secs(10)).await;
    let (s, v) = cluster.nodes[leader as usize - 1].flush(&client).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["blocks"].as_array().map(Vec::len), Some(1), "{v}");
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap();
    let (s, _) = follower.flush(&client).await;
    assert_eq!(s, 421, "a flush sent to a follower names the leader");
    let blocks = objstore_blocks(&objstore);
    assert_eq!(blocks.len(), 1);
    let meta: Value = serde_json::from_slice(&std::fs::read(blocks[0].join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["stats"]["numSeries"], 6);
    assert_eq!(meta["stats"]["numSamples"], 6 * 80);
    assert!(blocks[0].join("series.parquet").exists() && blocks[0].join("samples.parquet").exists());
    // SQL (DataFusion) over the block sees exactly what was written.
    let (s, v) = sql(&client, &querier.base(), SQL_BY_ENV).await;
    assert_eq!(s, 200, "{v}");
    assert_sql_by_env(&v, &requests_total_by_env(&written));
    let (s, v) = sql(&client, &querier.base(), "SELECT nope FROM series").await;
    assert_eq!((s, v["errorType"].as_str()), (400, Some("bad_data")), "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("nope"), "{v}");
    let (s, v) = sql(&client, &querier.base(), "DROP VIEW series").await;
    assert_eq!(s, 400, "SQL is read-only: {v}");

    // New samples go to the head; ones older than the block are rejected.
    write_series(&client, &cluster.nodes[1].write_url(), &requests_total_data(t0 + 20 * 60_000, 10)).await;
    let late = vec![(
        labels(&[("__name__", "requests_total"), ("code", "200"), ("env", "prod")]),
        vec![(t0 + 60_000 + 1, 1.0)],
    )];
    let (status, body) = remote_write(&client, &cluster.nodes[1].write_url(), "anonymous", &late).await;
    assert_eq!(status, 400);
    assert!(body.contains("already in a block"), "{body}");

    // Once the ingesters have released the block's data, it is read from the store.
    wait_for(Duration::from_secs(20), "the ingesters to release the uploaded block", || async {
        let s = read_series(&cluster.nodes[0].grpc_addr(), "anonymous", "requests_total").await;
        s.values().all(|v| v.iter().all(|(t, _)| *t >= t0 + 20 * 60_000)).then_some(())
    })
    .await;
    wait_querier_sees_blocks(&client, &querier.base(), 4, end, t0 + 20 * 60_000).await;
    let pushed = "strata_querier_pushdowns_total{result=\"pushed\"}";
    let metrics_url = format!("{}/metrics", querier.base());
    assert_eq!(metric_value(&client, &metrics_url, pushed).await, 0.0, "nothing pushed down while all was in the head");
    for (q, want) in BLOCK_QUERIES.iter().zip(&before) {
        let got = query_range(&client, &querier.base(), q, start, end).await;
        assert_eq!(&got, want, "{q}: blocks answer differently from the head");
    }
    // The aggregations were computed next to the block by the store gateway.
    assert_eq!(metric_value(&client, &metrics_url, pushed).await, 4.0);
    let store_metrics = format!("http://127.0.0.1:{}/metrics", store.web);
    assert_eq!(metric_value(&client, &store_metrics, "strata_store_aggregate_requests_total").await, 4.0);
    // A window across the boundary has both parts.
    let across = query_range(
        &client,
        &querier.base(),
        "requests_total{env=\"prod\",code=\"200\"}",
        t0 + 15 * 60_000,
        t0 + 25 * 60_000,
    )
    .await;
    assert_eq!(across[0]["values"].as_array().unwrap().len(), 21, "{across}");

    // Object storage outage: a file where the tenant's directory should be makes uploads fail.
    std::fs::write(objstore.join("anonymous2"), b"not a directory").unwrap();
    let outage = vec![(
        labels(&[("__name__", "outage_metric")]),
        (0..20).map(|k| (t0 + 20 * 60_000 + k * 15_000, k as f64)).collect(),
    )];
    let (status, body) = remote_write(&client, &cluster.nodes[0].write_url(), "anonymous2", &outage).await;
    assert_eq!(status, 204, "{body}");
    let (s, v) = cluster.nodes[leader as usize - 1].flush(&client).await;
    assert_eq!(s, 503, "the upload must fail during the outage: {v}");
    // Nothing is lost: the cut block is still served from memory.
    let q = "count_over_time(outage_metric[10m])";
    let v = instant_query(&client, &querier.base(), "anonymous2", q, t0 + 25 * 60_000).await;
    assert_eq!(v["data"]["result"][0]["value"][1], "20", "{v}");
    // The leader dies before uploading; the outage ends; the new leader uploads the pending block.
    cluster.node(leader).kill9();
    std::fs::remove_file(objstore.join("anonymous2")).unwrap();
    let new_leader = cluster.wait_leader(Some(leader), Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);
    let block = wait_for(Duration::from_secs(30), "the new leader to upload the pending block", || async {
        objstore_blocks(&objstore).into_iter().find(|p| p.starts_with(objstore.join("anonymous2")))
    })
    .await;
    let meta: Value = serde_json::from_slice(&std::fs::read(block.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["stats"]["numSamples"], 20);
    assert_eq!(meta["strata"]["tenant"], "anonymous2");
}
