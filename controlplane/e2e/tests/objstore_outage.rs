//! Object storage goes away for a long outage under steady ingest, time
//! compressed: 2 s blocks and a 384 KiB `--ingest.max-pending-bytes`, so
//! the 30 s outage spans 15 block ranges (30 h with 2 h blocks) and fills
//! the bound. The block grace (how late a sample may arrive) is 30 s, longer
//! than the refusals last, as the default 1 h grace is longer than the
//! refusals of an outage that fills a 1 GiB bound at moderate ingest.
//! Cut blocks spill to local disk; once their bytes reach the bound, writes
//! get 503 with `Retry-After` (and only then); the ingesters' memory stays
//! flat; the agent's disk queue absorbs the refusals; after recovery every
//! acknowledged sample is in the uploaded blocks, exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use controlplane_e2e::*;

const WRITERS: usize = 2;
const SERIES: usize = 200;
const LIMIT: u64 = 384 << 10;
const OUTAGE: Duration = Duration::from_secs(30);
/// Ingester RSS may grow at most this much while writes are refused.
const RSS_GROWTH_WHILE_THROTTLED: u64 = 48 << 20;
/// Ingester RSS ceiling during the whole outage (debug build).
const RSS_CEILING: u64 = 400 << 20;

/// The value of writer sample `n` in series `s`: distinct, badly compressible.
fn value(n: i64, s: usize) -> f64 {
    ((n * 1_000_003 + s as i64 * 7919) % 1_000_000_007) as f64 / 3.0
}

#[derive(Default)]
struct History {
    /// Sample number → timestamp, for everything sent.
    sent: BTreeMap<i64, i64>,
    acked: BTreeSet<i64>,
    /// 503s naming the pending bound, with the pending bytes they reported.
    throttled: Vec<u64>,
    other_errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objstore_outage_spills_throttles_and_loses_nothing() {
    let dir = test_dir();
    let limit = format!("--ingest.max-pending-bytes={LIMIT}");
    let mut cluster = Cluster::start(
        dir.path(),
        3,
        &[
            "--block.duration=2s",
            "--block.grace=30s",
            "--block.idle-flush=30s",
            "--block.retain-after-upload=2s",
            "--block.upload-backoff-max=2s",
            "--raft.snapshot-logs=200",
            &limit,
        ],
    )
    .await;
    let objstore = dir.path().join("objstore");
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.write_url()).collect();
    let metrics_urls: Vec<String> = cluster.nodes.iter().map(|n| n.web_url("/metrics")).collect();

    // The data plane: an instrumented API whose agent remote-writes to node 1.
    let agent = Agent::start(dir.path(), "agent", &urls[0], "qa", "dp-qa-01", &[]).await;
    let api = SampleApi::start(dir.path(), "api", &agent, "http/protobuf", "shop", &[]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (stop.clone(), api.url("/api/products"));
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let _ = c.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Writers: SERIES series per request, numbered samples, every
    // acknowledgement recorded; 503s retried like a remote-write sender.
    let histories: Arc<Vec<Mutex<History>>> = Arc::new((0..WRITERS).map(|_| Mutex::new(History::default())).collect());
    let acked_total = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (urls, histories, stop, acked_total) = (urls.clone(), histories.clone(), stop.clone(), acked_total.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
            let mut n = 0i64;
            let mut last_t = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = now_ms().max(last_t + 1);
                last_t = t;
                histories[w].lock().expect("history").sent.insert(n, t);
                let series: SeriesData = (0..SERIES)
                    .map(|s| {
                        let sv = format!("{s:03}");
                        (labels(&[("__name__", &format!("outage_w{w}")), ("s", &sv)]), vec![(t, value(n, s))])
                    })
                    .collect();
                loop {
                    let (status, body) = remote_write(&client, &urls[w % urls.len()], "anonymous", &series).await;
                    let done = {
                        let mut h = histories[w].lock().expect("history");
                        match status {
                            204 => {
                                h.acked.insert(n);
                                acked_total.fetch_add(SERIES as u64, Ordering::Relaxed);
                                true
                            }
                            503 if body.contains("--ingest.max-pending-bytes") => {
                                let pending = body
                                    .split_whitespace()
                                    .nth(2)
                                    .and_then(|x| x.parse().ok())
                                    .unwrap_or_else(|| panic!("no byte count in {body:?}"));
                                h.throttled.push(pending);
                                false
                            }
                            _ => {
                                h.other_errors.push(format!("{status} {body}"));
                                false
                            }
                        }
                    };
                    if done {
                        break;
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }

    // Normal operation first: blocks are cut and uploaded.
    let client = reqwest::Client::new();
    wait_for(Duration::from_secs(60), "blocks uploaded before the outage", || async {
        (objstore_blocks(&objstore).len() >= 3).then_some(())
    })
    .await;
    let throttled_before: usize = histories.iter().map(|h| h.lock().expect("history").throttled.len()).sum();
    assert_eq!(throttled_before, 0, "writes refused while object storage was up");

    // The outage: the bucket directory becomes a plain file.
    let away = dir.path().join("objstore-away");
    std::fs::rename(&objstore, &away).expect("move the bucket away");
    std::fs::write(&objstore, b"not a directory").expect("block the bucket path");
    let outage_start = Instant::now();
    let mut max_pending = 0f64;
    let mut max_queue = 0f64;
    let mut rss_first_throttle: Option<Vec<u64>> = None;
    let mut max_rss = vec![0u64; cluster.nodes.len()];
    let mut max_rss_throttled = vec![0u64; cluster.nodes.len()];
    let mut acked_at_first_throttle = 0;
    while outage_start.elapsed() < OUTAGE {
        let rss: Vec<u64> =
            cluster.nodes.iter().map(|n| n.proc.as_ref().and_then(|p| p.rss_bytes()).unwrap_or(0)).collect();
        for (m, r) in max_rss.iter_mut().zip(&rss) {
            *m = (*m).max(*r);
        }
        let mut pending = Vec::new();
        for u in &metrics_urls {
            pending.push(metric_value(&client, u, "strata_ingester_pending_bytes").await);
        }
        max_pending = pending.iter().copied().fold(max_pending, f64::max);
        eprintln!("outage {:>5.1}s: pending bytes {pending:?}", outage_start.elapsed().as_secs_f64());
        max_queue = max_queue.max(agent.metric("strata_agent_queue_bytes").await);
        let throttled = histories.iter().any(|h| !h.lock().expect("history").throttled.is_empty());
        if throttled {
            let base = rss_first_throttle.get_or_insert_with(|| {
                acked_at_first_throttle = acked_total.load(Ordering::Relaxed);
                eprintln!("first 503 after {:?} of outage; RSS {rss:?}", outage_start.elapsed());
                rss.clone()
            });
            let _ = base;
            for (m, r) in max_rss_throttled.iter_mut().zip(&rss) {
                *m = (*m).max(*r);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let acked_in_outage_after_throttle = acked_total.load(Ordering::Relaxed) - acked_at_first_throttle;

    // Recovery.
    std::fs::remove_file(&objstore).expect("unblock the bucket path");
    std::fs::rename(&away, &objstore).expect("bring the bucket back");
    let recovered = Instant::now();
    let acked_before = acked_total.load(Ordering::Relaxed);
    wait_for(Duration::from_secs(60), "writes acknowledged again", || async {
        (acked_total.load(Ordering::Relaxed) > acked_before + 10 * SERIES as u64).then_some(())
    })
    .await;
    let write_recovery = recovered.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer panicked");
    }
    traffic.await.expect("traffic");
    wait_for(Duration::from_secs(60), "the agent's queue drained", || async {
        (agent.metric("strata_agent_queue_bytes").await == 0.0).then_some(())
    })
    .await;
    let leader = cluster.wait_leader(None, Duration::from_secs(30)).await;
    let (status, body) = cluster.node(leader).flush(&client).await;
    assert_eq!(status, 200, "flush: {body}");
    wait_for(Duration::from_secs(60), "no pending blocks on any node", || async {
        for u in &metrics_urls {
            if metric_value(&client, u, "strata_ingester_blocks_pending").await != 0.0
                || metric_value(&client, u, "strata_ingester_pending_bytes").await != 0.0
            {
                return None;
            }
        }
        Some(())
    })
    .await;

    // Refusals: only past the bound, and the bound was reached.
    let histories: Vec<History> = Arc::try_unwrap(histories)
        .ok()
        .expect("writers done")
        .into_iter()
        .map(|m| m.into_inner().expect("lock"))
        .collect();
    let throttled: Vec<u64> = histories.iter().flat_map(|h| h.throttled.iter().copied()).collect();
    assert!(!throttled.is_empty(), "writes were never refused during a {OUTAGE:?} outage (max pending {max_pending})");
    assert!(throttled.iter().all(|&p| p >= LIMIT), "a 503 below the bound: {throttled:?}");
    for h in &histories {
        assert!(h.other_errors.is_empty(), "errors other than the pending bound: {:?}", h.other_errors);
    }
    assert!(max_pending >= LIMIT as f64, "pending bytes reached {max_pending}");
    assert!(max_pending <= (3 * LIMIT) as f64, "pending bytes overshot the bound: {max_pending}");
    assert!(
        acked_in_outage_after_throttle < (acked_at_first_throttle / 4).max(20 * SERIES as u64),
        "writes kept being acknowledged while throttled: {acked_in_outage_after_throttle}"
    );

    // Memory: flat while refused, under the ceiling throughout.
    let base = rss_first_throttle.expect("throttled during the outage");
    for i in 0..base.len() {
        assert!(max_rss[i] < RSS_CEILING, "node {} RSS {} MiB during the outage", i + 1, max_rss[i] >> 20);
        assert!(
            max_rss_throttled[i] < base[i] + RSS_GROWTH_WHILE_THROTTLED,
            "node {} RSS grew from {} to {} MiB while writes were refused",
            i + 1,
            base[i] >> 20,
            max_rss_throttled[i] >> 20
        );
    }

    // The agent queued what the ingesters refused, retried, dropped nothing.
    let retried = agent.metric(&format!("strata_agent_samples_retried_total{{endpoint=\"{}\"}}", urls[0])).await;
    assert!(max_queue > 0.0 && retried > 0.0, "agent queue {max_queue} B, retried {retried}");
    let agent_metrics =
        client.get(agent.metrics_url()).send().await.expect("agent metrics").text().await.expect("text");
    assert!(!agent_metrics.contains("strata_agent_samples_failed_total{"), "agent dropped samples:\n{agent_metrics}");

    // The checker: every acknowledged sample in the bucket exactly once,
    // with its value; nothing that was never sent.
    let mut stored: BTreeMap<(usize, usize), Vec<(i64, f64)>> = BTreeMap::new();
    let bucket = object_store::local::LocalFileSystem::new_with_prefix(&objstore).expect("bucket");
    let blocks = objstore_blocks(&objstore);
    for b in &blocks {
        let tenant = b.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).expect("tenant dir");
        let id = b.file_name().and_then(|n| n.to_str()).expect("block dir");
        let (_, series) = strata_blocks::read_block(&bucket, tenant, id).await.expect("read block");
        for s in series {
            let Some(w) = s.labels.get("__name__").and_then(|n| n.strip_prefix("outage_w")) else { continue };
            let w: usize = w.parse().expect("writer");
            let k: usize = s.labels.get("s").and_then(|v| v.parse().ok()).expect("series");
            stored.entry((w, k)).or_default().extend(s.samples);
        }
    }
    let mut checked = 0usize;
    for (w, h) in histories.iter().enumerate() {
        let by_t: BTreeMap<i64, i64> = h.sent.iter().map(|(n, t)| (*t, *n)).collect();
        for k in 0..SERIES {
            let mut got = stored.remove(&(w, k)).unwrap_or_default();
            got.sort_by_key(|x| x.0);
            let ts: Vec<i64> = got.iter().map(|x| x.0).collect();
            assert!(ts.windows(2).all(|p| p[0] < p[1]), "writer {w} series {k}: a sample stored twice");
            for (t, v) in &got {
                let n = by_t.get(t).unwrap_or_else(|| panic!("writer {w} series {k}: sample at {t} never sent"));
                assert_eq!(*v, value(*n, k), "writer {w} series {k}: sample {n} changed");
            }
            let have: BTreeSet<i64> = got.iter().map(|(t, _)| by_t[t]).collect();
            let missing: Vec<&i64> = h.acked.iter().filter(|n| !have.contains(n)).collect();
            assert!(missing.is_empty(), "writer {w} series {k}: acknowledged samples missing: {missing:?}");
            checked += h.acked.len();
        }
    }
    assert!(stored.is_empty(), "series nobody wrote: {:?}", stored.keys().collect::<Vec<_>>());
    eprintln!(
        "objstore outage: {OUTAGE:?} outage, {} blocks, {checked} acknowledged samples checked, {} refusals \
         (pending {}..{} B, bound {LIMIT}), max pending {max_pending} B, writes acknowledged again {write_recovery:?} \
         after recovery, agent queue max {max_queue} B, RSS at first refusal {:?} MiB, max while refused {:?} MiB, \
         max {:?} MiB",
        blocks.len(),
        throttled.len(),
        throttled.iter().min().copied().unwrap_or(0),
        throttled.iter().max().copied().unwrap_or(0),
        base.iter().map(|r| r >> 20).collect::<Vec<_>>(),
        max_rss_throttled.iter().map(|r| r >> 20).collect::<Vec<_>>(),
        max_rss.iter().map(|r| r >> 20).collect::<Vec<_>>(),
    );
    drop(api);
    drop(agent);
}
