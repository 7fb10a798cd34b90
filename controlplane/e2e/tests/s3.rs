//! Blocks in an S3-compatible bucket: a 3-node cluster uploads through the
//! S3 API (path-style, SigV4, under a prefix), a store gateway serves the
//! blocks from the bucket so queries answer as from the head, and an S3
//! outage loses nothing: the flush fails cleanly, the data stays queryable,
//! and the upload goes through once the server is back.
//!
//! A block larger than `--block.upload-part-size` goes up as an S3
//! multipart upload (moto enforces S3's 5 MiB minimum part size) and reads
//! back identically through a store gateway.
//!
//! The same suite runs against moto's server (always; `.ci/run` installs it)
//! and against MinIO in a container started with testcontainers wherever a
//! Docker engine runs (skipped without one; `STRATA_REQUIRE_MINIO=1` makes
//! that a failure).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use controlplane_e2e::*;
use serde_json::Value;

const BUCKET: &str = "strata-blocks";
const PREFIX: &str = "cluster-a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_round_trip_through_an_s3_bucket() {
    let dir = test_dir();
    let Some(mut s3) = S3Server::start(dir.path()).await else { return };
    round_trip_suite(dir.path(), &mut s3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_round_trip_through_minio_in_a_container() {
    let dir = test_dir();
    let Some(mut s3) = S3Server::start_minio().await else { return };
    round_trip_suite(dir.path(), &mut s3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_block_goes_up_in_parts() {
    const PART: u64 = 5 << 20;
    let dir = test_dir();
    let Some(s3) = S3Server::start(dir.path()).await else { return };
    s3.create_bucket(BUCKET).await;
    let bucket_args = s3.objstore_args(BUCKET, PREFIX);
    let part = format!("--block.upload-part-size={PART}");
    let mut extra: Vec<&str> = vec!["--block.duration=2h", "--block.retain-after-upload=1s", &part];
    extra.extend(bucket_args.iter().map(String::as_str));
    let cluster = Cluster::start(dir.path(), 1, &extra).await;
    let client = reqwest::Client::new();

    // 100 series × 8000 samples of values that do not compress: samples.parquet > 5 MiB.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let t0 = now - 45 * 60_000;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut written: SeriesData = Vec::new();
    for s in 0..100 {
        let samples = (0..8000i64)
            .map(|k| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (t0 + k * 300, (x >> 11) as f64 / (1u64 << 20) as f64)
            })
            .collect();
        written.push((labels(&[("__name__", "large_block"), ("s", &format!("{s:03}"))]), samples));
    }
    for chunk in written.chunks(10) {
        write_series(&client, &cluster.nodes[0].write_url(), &chunk.to_vec()).await;
    }
    let (s, v) = cluster.nodes[0].flush(&client).await;
    assert_eq!(s, 200, "{v}");

    let keys = s3.keys(BUCKET, "").await;
    let meta_key = keys.iter().find(|k| k.ends_with("meta.json")).expect("meta.json uploaded");
    let meta: Value = serde_json::from_slice(&s3.get(BUCKET, meta_key).await).expect("meta.json");
    assert_eq!(meta["stats"]["numSamples"], 800_000);
    let size = |name: &str| {
        meta["strata"]["files"].as_array().unwrap().iter().find(|f| f["path"] == name).unwrap()["size"]
            .as_u64()
            .unwrap()
    };
    let samples_size = size("samples.parquet");
    assert!(samples_size > PART, "samples.parquet is {samples_size} bytes: not large enough for parts");
    let samples_key = keys.iter().find(|k| k.ends_with("samples.parquet")).unwrap();
    assert_eq!(s3.get(BUCKET, samples_key).await.len() as u64, samples_size);
    // series.parquet, meta.json and the (small) rollup-1h.parquet: one PUT
    // each; samples.parquet: create, one request per part, complete.
    assert!(size("rollup-1h.parquet") <= PART, "the rollup is not uploaded in parts");
    let parts = samples_size.div_ceil(PART);
    let requests =
        metric_value(&client, &cluster.nodes[0].web_url("/metrics"), "strata_ingester_block_upload_requests_total")
            .await;
    assert_eq!(requests as u64, 3 + 2 + parts, "requests of the upload ({parts} parts)");

    // A store gateway reads the block back from S3: every sample, bit for bit.
    let mut store_args: Vec<&str> = vec!["--store.sync-interval=500ms"];
    store_args.extend(bucket_args.iter().map(String::as_str));
    let store = StoreGateway::start(dir.path(), &dir.path().join("unused"), &store_args).await;
    let got = wait_for(Duration::from_secs(30), "the store gateway to serve the block", || async {
        let got = read_series(&store.grpc_addr(), "anonymous", "large_block").await;
        (got.len() == 100).then_some(got)
    })
    .await;
    for (l, samples) in &written {
        let key = format!("__name__=large_block,s={}", l[1].1);
        let g = got.get(&key).unwrap_or_else(|| panic!("{key} missing; have {:?}", got.keys().next()));
        assert_eq!(g, samples, "{key}");
    }
    drop(cluster);
}

async fn round_trip_suite(dir: &Path, s3: &mut S3Server) {
    s3.create_bucket(BUCKET).await;
    let bucket_args = s3.objstore_args(BUCKET, PREFIX);
    let mut extra: Vec<&str> = vec!["--block.duration=1h", "--block.retain-after-upload=1s"];
    extra.extend(bucket_args.iter().map(String::as_str));
    let cluster = Cluster::start(dir, 3, &extra).await;
    let mut store_args: Vec<&str> = vec!["--store.sync-interval=500ms"];
    store_args.extend(bucket_args.iter().map(String::as_str));
    // The filesystem path is ignored with --objstore.type=s3: nothing may appear there.
    let unused = dir.join("objstore");
    let store = StoreGateway::start(dir, &unused, &store_args).await;
    let mut endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.grpc_addr()).collect();
    endpoints.push(store.grpc_addr());
    // No frontend: the same queries must be evaluated again over the blocks, whole
    // (the push-down counts below are per evaluation).
    let mut querier_args: Vec<&str> =
        vec!["--sql.enabled=true", "--query.results-cache.max-bytes=0", "--query.split-interval=0s"];
    querier_args.extend(bucket_args.iter().map(String::as_str));
    let querier = Querier::start(dir, &endpoints, &querier_args).await;
    let client = reqwest::Client::new();

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let t0 = (now - 40 * 60_000) / 60_000 * 60_000;
    let written = requests_total_data(t0, 20);
    write_series(&client, &cluster.nodes[0].write_url(), &written).await;
    let (start, end) = (t0 + 5 * 60_000, t0 + 19 * 60_000 + 30_000);
    let before = block_query_results(&client, &querier.base(), start, end).await;

    let leader = cluster.wait_leader(None, Duration::from_secs(10)).await;
    let (s, v) = cluster.nodes[leader as usize - 1].flush(&client).await;
    assert_eq!(s, 200, "{v}");
    let block_id = v["blocks"][0].as_str().expect("block id").to_string();
    let keys = s3.keys(BUCKET, "").await;
    assert_eq!(keys.len(), 4, "one block of four objects, all under the prefix: {keys:?}");
    for (key, file) in keys.iter().zip(["meta.json", "rollup-1h.parquet", "samples.parquet", "series.parquet"]) {
        assert!(key.starts_with(&format!("{PREFIX}/anonymous/")) && key.ends_with(file), "{keys:?}");
        assert!(key.contains(&block_id), "{key} is not in block {block_id}");
    }
    let meta: Value = serde_json::from_slice(&s3.get(BUCKET, &keys[0]).await).expect("meta.json");
    assert_eq!(meta["stats"]["numSeries"], 6);
    assert_eq!(meta["stats"]["numSamples"], 6 * 80);
    // Parquet magic at both ends: a file anything can read.
    let series = s3.get(BUCKET, &keys[3]).await;
    assert!(series.starts_with(b"PAR1") && series.ends_with(b"PAR1"));
    assert!(!unused.exists(), "the filesystem bucket must not be used");
    // SQL (DataFusion reading Parquet through the S3 API) sees what was written.
    let (s, v) = sql(&client, &querier.base(), SQL_BY_ENV).await;
    assert_eq!(s, 200, "{v}");
    assert_sql_by_env(&v, &requests_total_by_env(&written));

    // Once the ingesters release the block, its data comes from the store gateway (and so from S3).
    wait_for(Duration::from_secs(20), "the ingesters to release the uploaded block", || async {
        read_series(&cluster.nodes[0].grpc_addr(), "anonymous", "requests_total").await.is_empty().then_some(())
    })
    .await;
    let from_store = read_series(&store.grpc_addr(), "anonymous", "requests_total").await;
    assert_eq!(from_store.len(), 6);
    assert!(from_store.values().all(|s| s.len() == 80));
    for (q, want) in BLOCK_QUERIES.iter().zip(&before) {
        let got = query_range(&client, &querier.base(), q, start, end).await;
        assert_eq!(&got, want, "{q}: the S3 block answers differently from the head");
    }

    // Outage: the S3 server goes away. Writes are still acknowledged, the
    // flush fails with 503 (within seconds, not object_store's 3 min of
    // retries), and the cut data stays queryable from memory.
    s3.stop().await;
    let outage = vec![(
        labels(&[("__name__", "outage_metric")]),
        (0..20).map(|k| (t0 + 20 * 60_000 + k * 15_000, k as f64)).collect(),
    )];
    let (status, body) = remote_write(&client, &cluster.nodes[1].write_url(), "team-b", &outage).await;
    assert_eq!(status, 204, "{body}");
    let asked = std::time::Instant::now();
    let (s, v) = cluster.nodes[leader as usize - 1].flush(&client).await;
    assert_eq!(s, 503, "the upload must fail while S3 is down: {v}");
    assert!(asked.elapsed() < Duration::from_secs(60), "flush took {:?}", asked.elapsed());
    let q = "count_over_time(outage_metric[10m])";
    let v = instant_query(&client, &querier.base(), "team-b", q, t0 + 25 * 60_000).await;
    assert_eq!(v["data"]["result"][0]["value"][1], "20", "{v}");

    // The server comes back (moto empty: it keeps objects in memory; MinIO
    // with its data); the leader's retry loop uploads the pending block
    // without being asked.
    s3.restart().await;
    s3.create_bucket(BUCKET).await;
    let keys = wait_for(Duration::from_secs(60), "the pending block to be uploaded after the outage", || async {
        let keys = s3.keys(BUCKET, &format!("{PREFIX}/team-b/")).await;
        keys.iter().any(|k| k.ends_with("meta.json")).then_some(keys)
    })
    .await;
    let meta_key = keys.iter().find(|k| k.ends_with("meta.json")).unwrap();
    let meta: Value = serde_json::from_slice(&s3.get(BUCKET, meta_key).await).expect("meta.json");
    assert_eq!(meta["stats"]["numSamples"], 20);
    assert_eq!(meta["strata"]["tenant"], "team-b");
    drop(cluster);
}

/// An S3 endpoint behind HTTPS with a certificate from a private CA:
/// with `--objstore.s3.ca-file` the ingester uploads through it; without,
/// the upload fails (503 naming the certificate problem) and nothing is
/// lost — the block stays pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_go_up_to_an_https_endpoint_verified_with_a_private_ca() {
    let dir = test_dir();
    let Some(s3) = S3Server::start(dir.path()).await else { return };
    s3.create_bucket(BUCKET).await;
    let pki = controlplane_e2e::pki::Pki::new(dir.path());
    let upstream = s3.endpoint().trim_start_matches("http://").to_string();
    let port = controlplane_e2e::pki::tls_proxy(upstream, &pki.member).await;
    let https = format!("https://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let t0 = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64 - 40 * 60_000) / 60_000 * 60_000;
    for (name, trusted) in [("untrusting", false), ("trusting", true)] {
        let bucket_args: Vec<String> =
            s3.objstore_args(BUCKET, name)
                .into_iter()
                .map(|a| {
                    if a.starts_with("--objstore.s3.endpoint=") { format!("--objstore.s3.endpoint={https}") } else { a }
                })
                .collect();
        let mut extra: Vec<String> = vec!["--block.duration=1h".into()];
        extra.extend(bucket_args);
        if trusted {
            extra.push(format!("--objstore.s3.ca-file={}", pki.ca.display()));
        }
        let node_dir = dir.path().join(name);
        std::fs::create_dir_all(&node_dir).expect("dir");
        let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        let cluster = Cluster::start(&node_dir, 1, &extra_refs).await;
        write_series(&client, &cluster.nodes[0].write_url(), &requests_total_data(t0, 20)).await;
        let (s, v) = cluster.nodes[0].flush(&client).await;
        let keys = s3.keys(BUCKET, &format!("{name}/")).await;
        if trusted {
            assert_eq!(s, 200, "{v}");
            assert_eq!(keys.len(), 4, "one block through the HTTPS endpoint: {keys:?}");
        } else {
            assert_eq!(s, 503, "an endpoint the ingester cannot verify must fail the upload: {v}");
            assert!(v.to_string().to_lowercase().contains("certificate"), "the error names the certificate: {v}");
            assert!(keys.is_empty(), "{keys:?}");
            // Not lost: still queryable from the ingester.
            assert_eq!(read_series(&cluster.nodes[0].grpc_addr(), "anonymous", "requests_total").await.len(), 6);
        }
    }
}
