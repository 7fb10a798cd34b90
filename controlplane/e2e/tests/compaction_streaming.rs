//! The streaming compactor on a real bucket: merging blocks that hold ten
//! times its memory budget stays under the budget (peak RSS of the real
//! `strata compact` process, read from /proc), and killing it with SIGKILL
//! at random moments, again and again, never loses or duplicates a sample
//! (checked in the bucket after every kill, and through a store gateway and
//! querier at the end).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use controlplane_e2e::*;
use object_store::local::LocalFileSystem;
use strata_blocks::{SeriesData, list_blocks, read_block, upload_block};
use strata_model::Labels;

const HOUR: i64 = 3_600_000;

/// `blocks` blocks of 3 h, each with `series` series of samples every
/// `interval_ms`, in one 24 h window ending two days ago. Returns the
/// samples per series.
async fn fill_bucket(bucket: &Path, blocks: i64, series: usize, interval_ms: i64) -> BTreeMap<Labels, usize> {
    std::fs::create_dir_all(bucket).unwrap();
    let store = LocalFileSystem::new_with_prefix(bucket).unwrap();
    let day0 = (now_ms() / (24 * HOUR) - 3) * 24 * HOUR;
    let mut counts = BTreeMap::new();
    for b in 0..blocks {
        let (lo, hi) = (day0 + b * 3 * HOUR, day0 + (b + 1) * 3 * HOUR);
        let data: Vec<SeriesData> = (0..series)
            .map(|i| {
                let labels = Labels::from_pairs(vec![
                    ("__name__".into(), "load_total".into()),
                    ("instance".into(), format!("host-{:05}", i)),
                    ("job".into(), ["api", "db", "web"][i % 3].into()),
                ]);
                let mut v = (b as f64) * 1e6 + i as f64;
                let samples = (0..(3 * HOUR / interval_ms))
                    .map(|k| {
                        v += ((k * 7 + i as i64) % 11) as f64 + 0.25;
                        (lo + k * interval_ms + (i as i64 % 10) * 1000, v)
                    })
                    .collect();
                SeriesData { labels, samples }
            })
            .collect();
        for s in &data {
            *counts.entry(s.labels.clone()).or_default() += s.samples.len();
        }
        upload_block(&store, "anonymous", "shard-0", lo, hi, &data).await.unwrap();
    }
    counts
}

fn compact_args(bucket: &Path) -> Vec<String> {
    vec![
        "compact".into(),
        format!("--objstore.path={}", bucket.display()),
        "--compaction.range=24h".into(),
        "--compaction.delay=1h".into(),
        "--compaction.delete-delay=0s".into(),
        // Compaction alone (downsampling has its own test).
        "--downsampling.disable".into(),
        "--log.level=info".into(),
    ]
}

/// Peak resident memory of a process (VmHWM), polled until it exits.
fn run_measuring_peak(mut cmd: Command) -> (std::process::ExitStatus, u64) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn strata compact");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            if let Some(kb) = hwm {
                peak = peak.max(kb * 1024);
            }
        }
        if let Some(status) = child.try_wait().expect("wait") {
            return (status, peak);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every visible block's series merged by label set (samples by
/// timestamp): samples per series, and the visible blocks' total.
async fn visible_samples(bucket: &Path) -> (BTreeMap<Labels, usize>, u64, usize) {
    let store = LocalFileSystem::new_with_prefix(bucket).unwrap();
    let metas = list_blocks(&store).await.unwrap();
    let mut merged: BTreeMap<Labels, Vec<i64>> = BTreeMap::new();
    let mut total = 0;
    for m in &metas {
        let (_, series) = read_block(&store, &m.strata.tenant, &m.ulid).await.unwrap();
        for s in series {
            total += s.samples.len() as u64;
            merged.entry(s.labels).or_default().extend(s.samples.iter().map(|(t, _)| *t));
        }
    }
    let counts = merged
        .into_iter()
        .map(|(l, mut ts)| {
            ts.sort_unstable();
            ts.dedup();
            (l, ts.len())
        })
        .collect();
    (counts, total, metas.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacting_ten_times_the_memory_budget_stays_under_it() {
    // The process's whole RSS (a debug build's text included: 28 MB idle).
    const BUDGET: u64 = 96 << 20;
    let dir = test_dir();
    let bucket = dir.path().join("objstore");
    // 8 blocks × 7500 series × 1080 samples (10 s) = 64.8 M samples: 1037 MB
    // as (timestamp, value) pairs, ten times the budget.
    let want = fill_bucket(&bucket, 8, 7500, 10_000).await;
    let samples: usize = want.values().sum();
    assert!(samples as u64 * 16 >= 10 * BUDGET, "{samples} samples");
    let mut cmd = Command::new(bin("strata"));
    cmd.args(compact_args(&bucket)).arg("--once");
    let started = Instant::now();
    let (status, peak) = run_measuring_peak(cmd);
    eprintln!(
        "compacted {samples} samples ({} MB decoded) in {:?}, peak RSS {} MB",
        (samples * 16) >> 20,
        started.elapsed(),
        peak >> 20
    );
    assert!(status.success(), "strata compact failed: {status}");
    assert!(peak < BUDGET, "peak RSS {} MB is over the {} MB budget", peak >> 20, BUDGET >> 20);
    let (got, total, blocks) = visible_samples(&bucket).await;
    assert_eq!(blocks, 1, "one compacted block");
    assert_eq!(total, samples as u64, "no sample lost or duplicated");
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_the_compactor_never_loses_or_duplicates_a_sample() {
    let dir = test_dir();
    let bucket = dir.path().join("objstore");
    let want = fill_bucket(&bucket, 8, 1000, 15_000).await;
    let samples: usize = want.values().sum();
    let seed = 0x5eed_c0de ^ now_ms() as u64;
    let mut rng = SeededRng(seed);
    eprintln!("kill schedule seed {seed:#x}; {samples} samples in 8 blocks");
    let mut args = compact_args(&bucket);
    args.push("--compaction.interval=200ms".into());
    for round in 0..12 {
        let web = free_port();
        let mut a = args.clone();
        a.push(format!("--web.listen-address=127.0.0.1:{web}"));
        let mut p = Proc::start(&format!("compact-{round}"), &bin("strata"), &a, &[], dir.path());
        let wait = rng.millis(30, 2500);
        tokio::time::sleep(wait).await;
        p.kill9();
        // After any crash, the visible blocks hold every sample.
        let (got, total, blocks) = visible_samples(&bucket).await;
        eprintln!("round {round}: killed after {wait:?}: {blocks} visible blocks, {total} samples");
        assert_eq!(got, want, "round {round}: samples lost after a kill at {wait:?} ({blocks} visible blocks)");
    }
    // Left to finish: exactly the data, once.
    let out = Command::new(bin("strata")).args(compact_args(&bucket)).arg("--once").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (got, total, blocks) = visible_samples(&bucket).await;
    assert_eq!(got, want);
    assert_eq!((blocks, total), (1, samples as u64), "one block holding every sample once");

    // Through a store gateway and a querier: the same count.
    let store = StoreGateway::start(dir.path(), &bucket, &["--store.sync-interval=300ms"]).await;
    let querier = Querier::start(dir.path(), &[store.grpc_addr()], &[]).await;
    let client = reqwest::Client::new();
    let v =
        instant_query(&client, &querier.base(), "anonymous", "sum(count_over_time(load_total[5d]))", now_ms()).await;
    let counted: f64 = v["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert_eq!(counted as usize, samples, "querier counts {v}");
}
