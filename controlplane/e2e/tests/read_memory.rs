//! Reads of everything end with a clear 422 at the limits while memory
//! stays bounded: a `{__name__=~".+"}` range query and remote reads (both
//! response types) over a bucket whose samples, decoded, are several times
//! the bound. The store gateway streams bounded batches and stops at the
//! querier's sample limit; the querier counts samples as frames arrive.
//! The peak RSS (`VmHWM`) of both processes is asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use controlplane_e2e::*;
use object_store::ObjectStore;
use strata_proto::prometheus::read_request;

/// Series, blocks and samples per series per block: 16,000,000 samples,
/// 256 MB as decoded (timestamp, value) pairs alone.
const SERIES: usize = 2_000;
const BLOCKS: i64 = 4;
const PER_BLOCK: i64 = 2_000;
const BLOCK_MS: i64 = 2 * 3_600_000;

/// The querier's --query.max-samples: 2,000,000 samples, 32 MB decoded.
const MAX_SAMPLES: usize = 2_000_000;

/// Peak RSS each process may reach.
const STORE_BOUND: u64 = 128 << 20;
const QUERIER_BOUND: u64 = 192 << 20;

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_everything_ends_in_422_with_bounded_memory() {
    let dir = test_dir();
    let bucket = dir.path().join("objstore");
    std::fs::create_dir_all(&bucket).expect("bucket dir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&bucket).expect("local bucket"));
    let t0 = now_ms() - BLOCKS * BLOCK_MS - 60_000;
    let t0 = t0 - t0 % BLOCK_MS;
    let started = Instant::now();
    for b in 0..BLOCKS {
        let lo = t0 + b * BLOCK_MS;
        let step = BLOCK_MS / PER_BLOCK;
        let series: Vec<strata_blocks::SeriesData> = (0..SERIES)
            .map(|i| strata_blocks::SeriesData {
                labels: strata_model::Labels::from_pairs(vec![
                    ("__name__".into(), format!("m{}", i % 10)),
                    ("i".into(), format!("{i:05}")),
                ]),
                // Values that do not compress to nothing.
                samples: (0..PER_BLOCK)
                    .map(|k| (lo + k * step, ((i as i64 * 7919 + k * 104_729) % 100_003) as f64))
                    .collect(),
            })
            .collect();
        strata_blocks::upload_block(store.as_ref(), "anonymous", "s0", lo, lo + BLOCK_MS, &series)
            .await
            .expect("write block");
    }
    eprintln!(
        "bucket: {} samples in {BLOCKS} blocks, written in {:?}",
        SERIES as i64 * BLOCKS * PER_BLOCK,
        started.elapsed()
    );

    let gw = StoreGateway::start(dir.path(), &bucket, &[]).await;
    let max = format!("--query.max-samples={MAX_SAMPLES}");
    // Whole queries, no cache: the read path's memory is what is measured.
    let querier = Querier::start(
        dir.path(),
        &[gw.grpc_addr()],
        &[&max, "--query.split-interval=0s", "--query.results-cache.max-bytes=0"],
    )
    .await;
    let c = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
    let (start, end) = (t0 / 1000, (t0 + BLOCKS * BLOCK_MS) / 1000);
    wait_querier_sees_blocks(&c, &querier.base(), 1, t0 + BLOCKS * BLOCK_MS - 1, i64::MIN).await;

    // Within the limits the same path answers: one series, every sample.
    let end_ms = end * 1000;
    let v = query_range(&c, &querier.base(), r#"count_over_time(m3{i="00003"}[1d])"#, end_ms, end_ms).await;
    let last = &v[0]["values"][0][1];
    assert_eq!(last, &serde_json::json!((BLOCKS * PER_BLOCK).to_string()), "{v}");

    // Everything, as a range query: Prometheus' 422.
    let r = c
        .get(format!("{}/api/v1/query_range", querier.base()))
        .query(&[
            ("query", r#"{__name__=~".+"}"#.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", "60".into()),
        ])
        .send()
        .await
        .expect("query_range");
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["errorType"], "execution", "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("too many samples"), "{body}");

    // Remote reads of both response types: of everything (refused from
    // the block indexes before any sample is read), and of a range cutting
    // two blocks, so that no block lies wholly inside it and the gateway
    // streams batches until the querier's limit stops it (4,000,000
    // samples in range).
    let cuts = (t0 + BLOCK_MS / 2, t0 + BLOCK_MS + BLOCK_MS / 2);
    for (kind, (lo, hi)) in [
        (read_request::ResponseType::Samples, (t0 - 1, t0 + BLOCKS * BLOCK_MS)),
        (read_request::ResponseType::StreamedXorChunks, (t0 - 1, t0 + BLOCKS * BLOCK_MS)),
        (read_request::ResponseType::Samples, cuts),
        (read_request::ResponseType::StreamedXorChunks, cuts),
    ] {
        let (status, text) = remote_read_everything(&c, &querier.base(), lo, hi, kind).await;
        assert_eq!(status, 422, "{kind:?} {lo}..{hi}: {text}");
        assert!(text.contains("too many samples") && text.contains("--query.max-samples"), "{text}");
    }

    // The gateway stopped at the limit each time, and counted it.
    let hits = metric_value(&c, &gw.web_url("/metrics"), "strata_store_series_limit_hits_total").await;
    assert!(hits >= 1.0, "store limit hits: {hits}");

    let store_peak = gw.proc.peak_rss_bytes().expect("store VmHWM");
    let querier_peak = querier.proc.peak_rss_bytes().expect("querier VmHWM");
    eprintln!(
        "peak RSS: store {} MiB (bound {}), querier {} MiB (bound {}); data decoded: {} MiB",
        store_peak / MIB,
        STORE_BOUND / MIB,
        querier_peak / MIB,
        QUERIER_BOUND / MIB,
        (SERIES as u64 * BLOCKS as u64 * PER_BLOCK as u64 * 16) / MIB
    );
    assert!(store_peak < STORE_BOUND, "store peak RSS {} MiB", store_peak / MIB);
    assert!(querier_peak < QUERIER_BOUND, "querier peak RSS {} MiB", querier_peak / MIB);
}
