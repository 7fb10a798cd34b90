//! kill -9 the leader while a writer sends numbered samples: a new leader
//! is elected, the writer's retries succeed, and after the old leader
//! restarts every acknowledged sample is on all three replicas exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use controlplane_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leader_kill() {
    let dir = test_dir();
    let mut cluster = Cluster::start(dir.path(), 3, &[]).await;
    let leader = cluster.wait_leader(None, Duration::from_secs(30)).await;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.write_url()).collect();
    let base_t = 1_700_000_000_000i64;

    let client = reqwest::Client::new();
    let mut acked = BTreeSet::new();
    let mut attempted = BTreeSet::new();
    let mut target = 0usize;
    let mut n = 0i64;
    let mut killed_at: Option<Instant> = None;
    let mut new_leader = None;
    while acked.len() < 300 {
        n += 1;
        attempted.insert(n);
        // Retry this sample (as a remote write sender does) until acknowledged.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "sample {n} never acknowledged");
            match write_one(&client, &urls[target], "seq_test", base_t + n * 1000, n as f64).await {
                Ok(204) => {
                    acked.insert(n);
                    break;
                }
                Ok(s) if s >= 500 => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(s) => panic!("unexpected status {s} for sample {n}"),
                // Connection refused: the node is dead; try the next one.
                Err(_) => target = (target + 1) % urls.len(),
            }
        }
        if acked.len() == 100 && killed_at.is_none() {
            cluster.node(leader).kill9();
            killed_at = Some(Instant::now());
            let elected = cluster.wait_leader(Some(leader), Duration::from_secs(30)).await;
            let took = killed_at.unwrap().elapsed();
            eprintln!("leader {leader} killed; node {elected} elected in {} ms", took.as_millis());
            new_leader = Some(elected);
        }
    }
    assert!(new_leader.is_some());

    // The old leader comes back and catches up.
    let log_dir = cluster.dir.clone();
    cluster.node(leader).start(&log_dir);
    cluster.wait_leader(None, Duration::from_secs(30)).await;
    cluster.wait_converged(Duration::from_secs(30)).await;

    let mut replicas = Vec::new();
    for node in &cluster.nodes {
        let series = read_series(&node.grpc_addr(), "anonymous", "seq_test").await;
        assert_eq!(series.len(), 1, "node {}: one series", node.id);
        let samples = series.into_values().next().unwrap();
        let ts: Vec<i64> = samples.iter().map(|(t, _)| (t - base_t) / 1000).collect();
        let unique: BTreeSet<i64> = ts.iter().copied().collect();
        assert_eq!(unique.len(), ts.len(), "node {}: no duplicates", node.id);
        assert!(
            acked.is_subset(&unique),
            "node {}: lost acknowledged samples {:?}",
            node.id,
            acked.difference(&unique).take(5).collect::<Vec<_>>()
        );
        assert!(unique.is_subset(&attempted), "node {}: samples nobody sent", node.id);
        assert!(samples.iter().all(|(t, v)| ((t - base_t) / 1000) as f64 == *v), "values match their sequence numbers");
        replicas.push(samples);
    }
    assert_eq!(replicas[0], replicas[1]);
    assert_eq!(replicas[1], replicas[2]);
    eprintln!("{} samples acknowledged; all {} present on all three replicas", acked.len(), acked.len());
}
