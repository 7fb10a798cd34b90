//! Downsampling, differentially: the same queries over raw samples
//! (`max_source_resolution=0s`) and over the 5-minute and 1-hour blocks
//! the real `strata compact` writes agree — exactly for `sum_over_time`,
//! `count_over_time`, `min_over_time` and `max_over_time` on aligned
//! windows, within 1e-9 (float summation order) for `avg_over_time`,
//! `rate`, `increase` and `histogram_quantile` — on gauges, counters with
//! resets (inside windows and exactly at block boundaries, the Thanos #922
//! class, where a rate must never inflate) and classic histograms. Then the
//! raw blocks are deleted (raw retention) and the downsampled answers stay
//! the same: they were read from the aggregates.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use controlplane_e2e::*;
use object_store::local::LocalFileSystem;
use strata_blocks::{SeriesData, list_blocks, upload_block};
use strata_model::Labels;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
}

/// Three days of data in three raw 24 h blocks, samples every 15 s with
/// per-series jitter. Returns the first day's start.
async fn fill_bucket(bucket: &Path) -> i64 {
    std::fs::create_dir_all(bucket).unwrap();
    let store = LocalFileSystem::new_with_prefix(bucket).unwrap();
    let day0 = (now_ms() / DAY - 6) * DAY;
    let mut rng = SeededRng(0xd05a_3b1e);
    let mut counters = [0.0f64; 3];
    let mut buckets = [0.0f64; 4];
    for b in 0..3 {
        let (lo, hi) = (day0 + b * DAY, day0 + (b + 1) * DAY);
        let mut series: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        // The "boundary" counter restarts exactly where each block starts.
        counters[2] = 0.0;
        for k in 0..(DAY / 15_000) {
            for (i, kind) in ["smooth", "resets", "boundary"].iter().enumerate() {
                let t = lo + k * 15_000 + (i as i64 * 3 + 1) * 1000;
                counters[i] += (rng.below(20) + 1) as f64 * 0.5;
                if (i == 1 && rng.below(97) == 0) || (i == 2 && rng.below(401) == 0) {
                    counters[i] = rng.below(3) as f64;
                }
                series
                    .entry(labels(&[("__name__", "ds_counter_total"), ("kind", kind)]))
                    .or_default()
                    .push((t, counters[i]));
            }
            for g in 0..2 {
                let t = lo + k * 15_000 + (g * 5 + 2) * 1000;
                // An integer gauge (sums exact in any order) and a fractional one.
                let v = if g == 0 { rng.below(1000) as f64 - 500.0 } else { rng.below(1_000_000) as f64 / 7.0 };
                series.entry(labels(&[("__name__", "ds_gauge"), ("g", &g.to_string())])).or_default().push((t, v));
            }
            let t = lo + k * 15_000 + 4000;
            for j in 0..4 {
                // Cumulative buckets, each at least the one below.
                let add: f64 = (0..=j).map(|x| (rng.below(3) + x as u64) as f64).sum();
                buckets[j] = buckets[j].max(if j > 0 { buckets[j - 1] } else { 0.0 }) + add;
            }
            for (j, le) in ["0.1", "0.5", "1", "+Inf"].iter().enumerate() {
                series
                    .entry(labels(&[("__name__", "ds_latency_bucket"), ("le", le)]))
                    .or_default()
                    .push((t, buckets[j]));
            }
        }
        let data: Vec<SeriesData> =
            series.into_iter().map(|(labels, samples)| SeriesData { labels, samples }).collect();
        upload_block(&store, "anonymous", "shard-0", lo, hi, &data).await.unwrap();
    }
    day0
}

fn compact(bucket: &Path, extra: &[&str]) {
    let out = Command::new(bin("strata"))
        .args([
            "compact".to_string(),
            format!("--objstore.path={}", bucket.display()),
            "--compaction.range=24h".into(),
            "--compaction.delay=1h".into(),
            "--compaction.delete-delay=0s".into(),
            "--once".into(),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "strata compact: {}", String::from_utf8_lossy(&out.stderr));
}

type Answer = BTreeMap<String, Vec<(f64, f64)>>;

async fn range(client: &reqwest::Client, base: &str, q: &str, span: (i64, i64, i64), resolution: &str) -> Answer {
    let (start, end, step) = span;
    let r = client
        .get(format!("{base}/api/v1/query_range"))
        .query(&[
            ("query", q.to_string()),
            ("start", (start / 1000).to_string()),
            ("end", (end / 1000).to_string()),
            ("step", (step / 1000).to_string()),
            ("max_source_resolution", resolution.to_string()),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{q}: {v}");
    let mut out = Answer::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let points = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_str().unwrap().parse::<f64>().unwrap()))
            .collect();
        out.insert(s["metric"].to_string(), points);
    }
    out
}

/// `got` equals `want` series by series and step by step: exactly, or within
/// `tolerance` (relative).
fn assert_agrees(q: &str, res: &str, want: &Answer, got: &Answer, tolerance: f64) {
    assert!(!want.is_empty(), "{q}: the raw answer is empty");
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{q} at {res}: series differ");
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(g.len(), w.len(), "{q} at {res}, {k}: steps differ");
        for (a, b) in g.iter().zip(w) {
            assert_eq!(a.0, b.0, "{q} at {res}, {k}");
            let ok = if tolerance == 0.0 {
                a.1.to_bits() == b.1.to_bits()
            } else {
                (a.1 - b.1).abs() <= tolerance * b.1.abs().max(1.0)
            };
            assert!(ok, "{q} at {res}, {k} at {}: {} (downsampled) vs {} (raw)", a.0, a.1, b.1);
        }
    }
}

const EXACT: [&str; 5] = [
    "sum_over_time(ds_gauge{g=\"0\"}[1h])",
    "count_over_time(ds_gauge[1h])",
    "min_over_time(ds_gauge[1h])",
    "max_over_time(ds_gauge[1h])",
    "count_over_time(ds_counter_total[2h])",
];

const CLOSE: [&str; 8] = [
    "sum_over_time(ds_gauge{g=\"1\"}[1h])",
    "avg_over_time(ds_gauge[1h])",
    "rate(ds_counter_total[1h])",
    "increase(ds_counter_total[3h])",
    "sum by (kind) (rate(ds_counter_total[1h]))",
    "histogram_quantile(0.9, sum by (le) (rate(ds_latency_bucket[1h])))",
    "sum(increase(ds_counter_total{kind=\"boundary\"}[1h]))",
    "avg_over_time(ds_gauge[1h]) - avg_over_time(ds_gauge[1h] offset 1h)",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downsampled_answers_equal_raw_ones() {
    let dir = test_dir();
    let bucket = dir.path().join("objstore");
    let day0 = fill_bucket(&bucket).await;
    compact(&bucket, &["--downsampling.5m-after=0s", "--downsampling.1h-after=0s"]);
    let store = LocalFileSystem::new_with_prefix(&bucket).unwrap();
    let metas = list_blocks(&store).await.unwrap();
    let by_res = |r: i64| metas.iter().filter(|m| m.downsample.resolution == r).count();
    assert_eq!((by_res(0), by_res(5 * MIN), by_res(HOUR)), (3, 3, 3), "raw, 5m and 1h blocks of each day");

    let gateway = StoreGateway::start(dir.path(), &bucket, &["--store.sync-interval=300ms"]).await;
    let no_cache = ["--query.split-interval=0s", "--query.results-cache.max-bytes=0"];
    let querier = Querier::start(dir.path(), &[gateway.grpc_addr()], &no_cache).await;
    let client = reqwest::Client::new();
    let base = querier.base();
    // Hourly steps (1 h resolution) and 5-minute steps over the second day
    // with a 30-minute range (5 m resolution; 30m is no multiple of 1h).
    // Every range lies within the data: where a range reaches past a
    // series' first sample, Prometheus extrapolates a rate by half the
    // average sample interval, which downsampling coarsens
    // (docs/querier.md).
    let hourly = (day0 + 4 * HOUR, day0 + 3 * DAY, HOUR);
    let fine = (day0 + DAY, day0 + 2 * DAY, 5 * MIN);
    let mut raw_answers = Vec::new();
    for (queries, tolerance) in [(&EXACT[..], 0.0), (&CLOSE[..], 1e-9)] {
        for q in queries {
            let raw = range(&client, &base, q, hourly, "0s").await;
            for res in ["auto", "1h", "5m"] {
                let got = range(&client, &base, q, hourly, res).await;
                assert_agrees(q, res, &raw, &got, tolerance);
            }
            let q30 = q.replace("[1h]", "[30m]").replace("[2h]", "[30m]").replace("[3h]", "[30m]");
            let raw30 = range(&client, &base, &q30, fine, "0s").await;
            assert_agrees(&q30, "auto", &raw30, &range(&client, &base, &q30, fine, "auto").await, tolerance);
            raw_answers.push((q.to_string(), raw, tolerance));
        }
    }
    // Aggregations over downsampled data are computed by the store
    // gateway (pushed down) like those over raw blocks: one each.
    let metrics_url = format!("{base}/metrics");
    let pushed = |c: &reqwest::Client| {
        let (c, u) = (c.clone(), metrics_url.clone());
        async move { metric_value(&c, &u, "strata_querier_pushdowns_total{result=\"pushed\"}").await }
    };
    for res in ["0s", "1h", "5m"] {
        let before = pushed(&client).await;
        range(&client, &base, "sum by (kind) (rate(ds_counter_total[1h]))", hourly, res).await;
        assert_eq!(pushed(&client).await, before + 1.0, "the aggregation at {res} was not pushed down");
    }

    // Thanos #922: a counter restarting at every block boundary never
    // makes a downsampled rate larger than the raw one.
    let q = "rate(ds_counter_total{kind=\"boundary\"}[1h])";
    let raw = range(&client, &base, q, hourly, "0s").await;
    let down = range(&client, &base, q, hourly, "1h").await;
    for (k, w) in &raw {
        for (a, b) in down[k].iter().zip(w) {
            assert!(a.1 <= b.1 * (1.0 + 1e-9), "{q} at {}: {} downsampled > {} raw", a.0, a.1, b.1);
        }
    }

    // Raw retention deletes the raw blocks; the answers stay, now read
    // from the 5m and 1h blocks alone.
    compact(&bucket, &["--downsampling.disable", "--retention.resolution-raw=1h"]);
    let metas = list_blocks(&store).await.unwrap();
    assert!(metas.iter().all(|m| m.downsample.resolution > 0), "raw blocks deleted");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !range(&client, &base, EXACT[1], hourly, "0s").await.is_empty() {
        assert!(Instant::now() < deadline, "the store gateway still serves raw blocks");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (q, raw, tolerance) in &raw_answers {
        let got = range(&client, &base, q, hourly, "auto").await;
        assert_agrees(q, "auto, raw blocks deleted", raw, &got, *tolerance);
    }
    // A range no resolution aligns with has nothing left to read.
    let off_grid = (day0 + 4 * HOUR + MIN, day0 + 3 * DAY, HOUR);
    assert!(range(&client, &base, EXACT[1], off_grid, "auto").await.is_empty());
}
