//! `strata compact` on a real bucket: twenty 1-minute blocks cut by an
//! ingester become two 10-minute blocks; the store gateway serves them and
//! every query (PromQL and SQL) answers exactly as before; the replaced
//! blocks are deleted; retention then removes everything older than it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use controlplane_e2e::*;

fn compact(objstore: &Path, extra: &[&str]) {
    let out = Command::new(bin("strata"))
        .arg("compact")
        .arg("--once")
        .arg(format!("--objstore.path={}", objstore.display()))
        .args(["--compaction.range=10m", "--compaction.delay=0s", "--compaction.delete-delay=0s"])
        .args(extra)
        .output()
        .expect("run strata compact");
    assert!(out.status.success(), "strata compact failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

async fn blocks_loaded(client: &reqwest::Client, store: &StoreGateway) -> Option<f64> {
    store_gauge(client, store, "strata_store_blocks_loaded").await
}

async fn store_gauge(client: &reqwest::Client, store: &StoreGateway, name: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{}/metrics", store.web);
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_blocks_answer_like_their_sources() {
    let dir = test_dir();
    let objstore = dir.path().join("objstore");
    let cluster = Cluster::start(dir.path(), 1, &["--block.duration=1m", "--block.retain-after-upload=1s"]).await;
    let store = StoreGateway::start(dir.path(), &objstore, &["--store.sync-interval=300ms"]).await;
    let objstore_arg = format!("--objstore.path={}", objstore.display());
    let querier = Querier::start(
        dir.path(),
        &[cluster.nodes[0].grpc_addr(), store.grpc_addr()],
        // No frontend: the same queries must be evaluated again, whole, over the compacted blocks.
        &["--sql.enabled=true", &objstore_arg, "--query.results-cache.max-bytes=0", "--query.split-interval=0s"],
    )
    .await;
    let client = reqwest::Client::new();

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let t0 = (now - 60 * 60_000) / 600_000 * 600_000; // aligned to 10 minutes
    let written = requests_total_data(t0, 20);
    write_series(&client, &cluster.nodes[0].write_url(), &written).await;
    // The ingester cuts each elapsed minute into its own block; the flush uploads the rest.
    wait_for(Duration::from_secs(60), "one-minute blocks cut by the ingester", || async {
        (objstore_blocks(&objstore).len() >= 19).then_some(())
    })
    .await;
    let (s, v) = cluster.nodes[0].flush(&client).await;
    assert_eq!(s, 200, "{v}");
    let sources = objstore_blocks(&objstore);
    assert_eq!(sources.len(), 20, "{sources:?}");
    wait_for(Duration::from_secs(30), "the store to load every block (and the head to release them)", || async {
        (blocks_loaded(&client, &store).await == Some(sources.len() as f64)).then_some(())
    })
    .await;
    // The 20 blocks' label sets, each held once.
    assert_eq!(store_gauge(&client, &store, "strata_store_label_sets").await, Some(6.0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (start, end) = (t0 + 2 * 60_000, t0 + 19 * 60_000 + 30_000);
    let before = block_query_results(&client, &querier.base(), start, end).await;
    // What the store gateway alone serves (the head may still hold the data too).
    let from_store = read_series(&store.grpc_addr(), "anonymous", "requests_total").await;
    assert_eq!(from_store.values().map(Vec::len).sum::<usize>(), 6 * 80);

    compact(&objstore, &[]);
    let compacted = objstore_blocks(&objstore);
    assert_eq!(compacted.len(), 2, "two 10-minute windows: {compacted:?}");
    for b in &compacted {
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(b.join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["compaction"]["level"], 2, "{meta}");
        assert_eq!(meta["stats"]["numSeries"], 6, "{meta}");
        assert_eq!(meta["stats"]["numSamples"], 6 * 40, "{meta}");
    }
    for s in &sources {
        assert!(!s.exists(), "{} was not deleted", s.display());
    }
    wait_for(Duration::from_secs(30), "the store to serve the compacted blocks", || async {
        (blocks_loaded(&client, &store).await == Some(2.0)).then_some(())
    })
    .await;
    let after = block_query_results(&client, &querier.base(), start, end).await;
    assert_eq!(after, before, "queries differ after compaction");
    assert_eq!(store_gauge(&client, &store, "strata_store_label_sets").await, Some(6.0));
    assert_eq!(read_series(&store.grpc_addr(), "anonymous", "requests_total").await, from_store);
    let (s, v) = sql(&client, &querier.base(), SQL_BY_ENV).await;
    assert_eq!(s, 200, "{v}");
    assert_sql_by_env(&v, &requests_total_by_env(&written));

    // A second pass finds nothing to do.
    compact(&objstore, &[]);
    assert_eq!(objstore_blocks(&objstore), compacted);

    // Retention: t0 is 60–70 minutes ago, so the windows ended 50–60 and
    // 40–50 minutes ago: 65 minutes keeps both, 35 minutes expires both.
    compact(&objstore, &["--retention=65m"]);
    assert_eq!(objstore_blocks(&objstore).len(), 2);
    compact(&objstore, &["--retention=35m"]);
    assert!(objstore_blocks(&objstore).is_empty(), "retention left {:?}", objstore_blocks(&objstore));
    wait_for(Duration::from_secs(30), "the store to drop expired blocks", || async {
        (blocks_loaded(&client, &store).await == Some(0.0)).then_some(())
    })
    .await;
    let r = read_series(&store.grpc_addr(), "anonymous", "requests_total").await;
    assert!(r.is_empty(), "the store still serves expired data: {} series", r.len());
    // No block holds a label set any more: the gateway forgot them all.
    assert_eq!(store_gauge(&client, &store, "strata_store_label_sets").await, Some(0.0));
}
