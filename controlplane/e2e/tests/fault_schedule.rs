//! A randomized fault schedule with a history checker. Three ingesters and
//! a querier on 127.0.0.1; three writers send numbered samples to random
//! nodes, retrying each until it is acknowledged, and record every
//! acknowledgement; a scheduler meanwhile applies random faults, one at a
//! time and healed before the next (so a quorum always remains):
//!
//! - kill -9 of any node (the leader or a follower), restarted after 0.5–2 s;
//! - SIGSTOP of any node (a paused leader keeps its term but cannot act)
//!   for 0.5–3 s, then SIGCONT;
//! - the object store taken away (its directory replaced by a file) for
//!   1–4 s while blocks are cut every ten seconds, then restored;
//! - a network partition of one node from its peers for 1–4 s (a TCP proxy
//!   in front of each node's gRPC port, see `Partitions`); a partitioned
//!   leader must stop claiming leadership within 3 s;
//! - the disk of one node filled (each node's directory is a small tmpfs):
//!   it must stop and exit non-zero within 30 s, then space returns and the
//!   node is restarted.
//!
//! After healing, the checker reads everything back through each replica's
//! StoreAPI and through the querier (heads and, through a store gateway,
//! the uploaded blocks): every acknowledged sample present exactly once, no
//! value changed, nothing that was never sent, and the replicas identical.
//!
//! Sample `n` of a writer carries the value `n` at a timestamp that follows
//! the wall clock (so blocks are cut as time passes); a retried sample keeps
//! its timestamp.
//!
//! The schedule is reproducible from its seed: `STRATA_FAULT_SEED=<n>`
//! (printed by every run); `STRATA_FAULTS=<n>` sets the number of faults
//! (default 20; the soak run in docs/operations.md uses 200).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use controlplane_e2e::*;

/// What one writer sent and what was acknowledged.
#[derive(Default)]
struct History {
    /// Every sample number sent (acknowledged or not) and its timestamp.
    sent: BTreeMap<i64, i64>,
    acked: BTreeSet<i64>,
    /// Samples refused with a clear 4xx (e.g. out of bounds after a retry
    /// outlived the block grace): not acknowledged, may or may not be stored.
    refused: usize,
    /// Longest time between two acknowledgements.
    worst_gap: Duration,
}

const WRITERS: usize = 3;

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_samples_survive_a_random_fault_schedule() {
    let seed: u64 = std::env::var("STRATA_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    let faults: usize = std::env::var("STRATA_FAULTS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    eprintln!("fault schedule: seed {seed}, {faults} faults (rerun with STRATA_FAULT_SEED={seed})");
    let mut rng = SeededRng(seed);

    let dir = test_dir();
    // Each node's directory on a small disk of its own, for the disk-full
    // fault (tmpfs takes only the memory in use).
    let disks: Vec<SmallDisk> =
        (1..=3).filter_map(|id| SmallDisk::mount(&dir.path().join(format!("node-{id}")), 256 << 20)).collect();
    let disk_full =
        required("permission to mount a tmpfs for the disk-full fault (run the tests as root)", disks.len() == 3);
    // Blocks of ten seconds: the writers' timestamps follow the wall clock,
    // so blocks are cut and uploaded (or retried) throughout the schedule.
    // One series per cut entry: every cut goes in parts (one entry and one
    // block each), faults land between the parts of a cut.
    let (mut cluster, partitions) = Cluster::start_partitionable(
        dir.path(),
        3,
        &[
            "--block.duration=10s",
            "--block.grace=5s",
            "--block.retain-after-upload=1h",
            "--block.upload-backoff-max=2s",
            "--raft.snapshot-logs=500",
            "--block.cut-part-series=1",
        ],
    )
    .await;
    let objstore = dir.path().join("objstore");
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.write_url()).collect();

    let histories: Arc<Vec<Mutex<History>>> = Arc::new((0..WRITERS).map(|_| Mutex::new(History::default())).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (urls, histories, stop) = (urls.clone(), histories.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
            let mut target = w % urls.len();
            let mut n = 0i64;
            let mut last_t = 0i64;
            let mut last_ack = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = now_ms().max(last_t + 1);
                last_t = t;
                histories[w].lock().expect("history").sent.insert(n, t);
                // Retry this sample until acknowledged (as remote-write
                // senders do); stop only between samples.
                loop {
                    let name = format!("fault_history_{w}");
                    match write_one(&client, &urls[target], &name, t, n as f64).await {
                        Ok(204) => {
                            let mut h = histories[w].lock().expect("history");
                            h.acked.insert(n);
                            h.worst_gap = h.worst_gap.max(last_ack.elapsed());
                            last_ack = Instant::now();
                            break;
                        }
                        Ok(s) if s == 503 || s == 500 || s == 429 => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(400) => {
                            histories[w].lock().expect("history").refused += 1;
                            break;
                        }
                        Ok(s) => panic!("writer {w}: unexpected status {s} for sample {n}"),
                        // Refused or timed out (killed or paused node): try another.
                        Err(_) => target = (target + 1) % urls.len(),
                    }
                    if stop.load(Ordering::Relaxed) && last_ack.elapsed() > Duration::from_secs(60) {
                        panic!("writer {w}: sample {n} not acknowledged for 60 s after healing");
                    }
                }
            }
        }));
    }

    let started = Instant::now();
    let mut applied: BTreeMap<&str, usize> = BTreeMap::new();
    let mut worst_step_down = Duration::ZERO;
    let mut worst_disk_exit = Duration::ZERO;
    for i in 0..faults {
        tokio::time::sleep(rng.millis(200, 1000)).await;
        let leader = cluster.wait_leader(None, Duration::from_secs(60)).await;
        let victim = if rng.below(2) == 0 { leader } else { 1 + rng.below(3) };
        let kind = match rng.below(7) {
            0 | 1 => "kill",
            2 | 3 => "pause",
            4 => "partition",
            5 => "objstore",
            _ if disk_full => "disk-full",
            _ => "kill",
        };
        *applied.entry(kind).or_default() += 1;
        match kind {
            "kill" => {
                let down = rng.millis(500, 2000);
                eprintln!("fault {i}: kill -9 node {victim} (leader {leader}) for {down:?}");
                cluster.node(victim).kill9();
                tokio::time::sleep(down).await;
                let log_dir = cluster.dir.clone();
                cluster.node(victim).start(&log_dir);
            }
            "pause" => {
                let paused = rng.millis(500, 3000);
                eprintln!("fault {i}: SIGSTOP node {victim} (leader {leader}) for {paused:?}");
                let pid = cluster.node(victim).proc.as_ref().map(|p| p.pid()).expect("running");
                signal(pid, "STOP");
                tokio::time::sleep(paused).await;
                signal(pid, "CONT");
            }
            "partition" => {
                let cut = rng.millis(1000, 4000);
                eprintln!("fault {i}: partition node {victim} (leader {leader}) for {cut:?}");
                let started = Instant::now();
                partitions.isolate(victim);
                if victim == leader {
                    // The ex-leader stops claiming leadership once no quorum
                    // has acknowledged it for the election timeout (600 ms).
                    let node = &cluster.nodes[(victim - 1) as usize];
                    loop {
                        let claims = node.status().await.and_then(|s| s["leader_id"].as_u64()) == Some(victim);
                        if !claims {
                            let took = started.elapsed();
                            worst_step_down = worst_step_down.max(took);
                            break;
                        }
                        assert!(
                            started.elapsed() < Duration::from_secs(3),
                            "fault {i}: partitioned leader {victim} still claims leadership after 3 s"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                tokio::time::sleep(cut.saturating_sub(started.elapsed())).await;
                partitions.heal();
            }
            "disk-full" => {
                eprintln!("fault {i}: disk full on node {victim} (leader {leader})");
                let disk = &disks[(victim - 1) as usize];
                let filled = Instant::now();
                disk.fill(64 << 10);
                // Its next Raft log or state write fails: the node stops
                // and exits non-zero (no zombie), within 30 s.
                let status = loop {
                    if let Some(s) = cluster.node(victim).proc.as_mut().and_then(|p| p.exit_status()) {
                        break s;
                    }
                    let log = cluster.nodes[(victim - 1) as usize].proc.as_ref().map(|p| p.log_tail());
                    assert!(
                        filled.elapsed() < Duration::from_secs(30),
                        "fault {i}: node {victim} still running 30 s after its disk filled:\n{}",
                        log.unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                assert!(!status.success(), "fault {i}: node {victim} exited with {status} on a full disk");
                worst_disk_exit = worst_disk_exit.max(filled.elapsed());
                // Space returns; the supervisor restarts it.
                disk.free();
                let log_dir = cluster.dir.clone();
                cluster.node(victim).proc = None;
                cluster.node(victim).start(&log_dir);
            }
            _ => {
                let out = rng.millis(1000, 4000);
                eprintln!("fault {i}: object store away for {out:?}");
                let away = dir.path().join("objstore-away");
                let _ = std::fs::rename(&objstore, &away);
                // Uploads now fail (the bucket directory is a plain file).
                let _ = std::fs::write(&objstore, b"not a directory");
                tokio::time::sleep(out).await;
                let _ = std::fs::remove_file(&objstore);
                let _ = std::fs::rename(&away, &objstore);
            }
        }
    }
    let schedule_took = started.elapsed();

    // Heal: every node up, a leader, writers finish their current sample.
    cluster.wait_leader(None, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer panicked");
    }
    cluster.wait_converged(Duration::from_secs(60)).await;

    // The checker. Uploaded blocks stay in an ingester's memory only as a
    // local cache (not replicated, not in snapshots), so each replica is
    // checked together with the bucket: a querier over that one replica and
    // a store gateway must return every writer's complete history; then a
    // querier over all of them must too.
    let histories: Vec<History> = Arc::try_unwrap(histories)
        .ok()
        .expect("writers done")
        .into_iter()
        .map(|m| m.into_inner().expect("lock"))
        .collect();
    let store = StoreGateway::start(dir.path(), &objstore, &["--store.sync-interval=1s"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let client = reqwest::Client::new();
    let mut checked = 0usize;
    let mut views: Vec<(String, Vec<String>)> = cluster
        .nodes
        .iter()
        .map(|n| (format!("replica {} + store", n.id), vec![n.grpc_addr(), store.grpc_addr()]))
        .collect();
    views.push((
        "all replicas + store".into(),
        cluster.nodes.iter().map(|n| n.grpc_addr()).chain([store.grpc_addr()]).collect(),
    ));
    for (view, endpoints) in &views {
        let querier = Querier::start(dir.path(), endpoints, &[]).await;
        for (w, h) in histories.iter().enumerate() {
            let stored = query_history(&client, &querier.base(), w, h).await;
            check_history(&format!("writer {w} through {view}"), h, &stored);
            checked += h.acked.len();
        }
    }

    let blocks = objstore_blocks(&objstore);
    eprintln!(
        "fault schedule done: seed {seed}; {faults} faults ({applied:?}) in {:.1} s; {} blocks uploaded; \
         {checked} acknowledged samples checked through 4 views ({} refused with a 400); \
         worst gap between acknowledgements {:?}; a partitioned leader stopped claiming leadership within \
         {worst_step_down:?}; a node on a full disk exited within {worst_disk_exit:?}",
        schedule_took.as_secs_f64(),
        blocks.len(),
        histories.iter().map(|h| h.refused).sum::<usize>(),
        histories.iter().map(|h| h.worst_gap).max().unwrap_or_default()
    );
    assert!(!blocks.is_empty(), "no block was uploaded during the schedule");
    drop(store);
}

/// Every sample of writer `w` through the querier at `base` (a range
/// vector selector over everything it sent).
async fn query_history(client: &reqwest::Client, base: &str, w: usize, h: &History) -> Vec<(i64, f64)> {
    let first = h.sent.values().next().copied().unwrap_or(0);
    let end = h.sent.values().next_back().copied().unwrap_or(0) + 1;
    let range = end - first + 1000;
    let v = instant_query(client, base, "anonymous", &format!("fault_history_{w}[{range}ms]"), end).await;
    assert_eq!(v["status"], "success", "{v}");
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    assert_eq!(result.len(), 1, "writer {w}: {v}");
    assert!(v["warnings"].is_null(), "writer {w}: partial response {v}");
    result[0]["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|p| {
            let t = (p[0].as_f64().expect("time") * 1000.0).round() as i64;
            (t, p[1].as_str().and_then(|s| s.parse().ok()).expect("value"))
        })
        .collect()
}

/// Every acknowledged sample present exactly once with its value; nothing
/// stored that was never sent.
fn check_history(what: &str, h: &History, stored: &[(i64, f64)]) {
    let mut seen = BTreeSet::new();
    for &(t, v) in stored {
        let n = v as i64;
        assert_eq!(n as f64, v, "{what}: value {v} at {t}, which no writer sent");
        assert_eq!(
            h.sent.get(&n),
            Some(&t),
            "{what}: sample {n} at {t} stored, but it was sent at {:?}",
            h.sent.get(&n)
        );
        assert!(seen.insert(n), "{what}: sample {n} stored twice");
    }
    let lost: Vec<&i64> = h.acked.iter().filter(|n| !seen.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{what}: {} acknowledged samples lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}
