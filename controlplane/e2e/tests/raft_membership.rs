//! A follower restarted after missing writes catches up (log replay), and a
//! brand-new node added as learner catches up from a snapshot (the log is
//! purged) and then becomes a voter.

use std::time::Duration;

use controlplane_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_restart_and_new_learner_catch_up() {
    let dir = test_dir();
    // Snapshot every 50 entries and keep only 10, so a newcomer needs a snapshot.
    let mut cluster = Cluster::start(dir.path(), 3, &["--raft.snapshot-logs", "50", "--raft.keep-logs", "10"]).await;
    let leader = cluster.wait_leader(None, Duration::from_secs(30)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let client = reqwest::Client::new();
    let url = cluster.node(leader).write_url();
    let base = 1_700_000_000_000i64;
    for i in 0..100 {
        assert_eq!(write_one(&client, &url, "m", base + i * 1000, i as f64).await.unwrap(), 204);
    }
    cluster.node(follower).kill9();
    for i in 100..250 {
        assert_eq!(write_one(&client, &url, "m", base + i * 1000, i as f64).await.unwrap(), 204);
    }
    let log_dir = cluster.dir.clone();
    cluster.node(follower).start(&log_dir);
    cluster.wait_converged(Duration::from_secs(30)).await;
    let want = read_series(&cluster.node(leader).grpc_addr(), "anonymous", "m").await;
    assert_eq!(want.values().next().unwrap().len(), 250);
    assert_eq!(
        read_series(&cluster.node(follower).grpc_addr(), "anonymous", "m").await,
        want,
        "restarted follower caught up"
    );

    // A new node, not in the initial peers (it does not bootstrap).
    let (g, w) = (free_port(), free_port());
    let mut n4 = Node {
        id: 4,
        grpc: g,
        web: w,
        dir: dir.path().join("node-4"),
        proc: None,
        extra: vec![],
        peers: String::new(),
    };
    n4.start(dir.path());
    wait_ready(&n4.web_url("/-/healthy"), Duration::from_secs(30)).await;
    let admin = cluster.node(leader).web_url("/api/v1/admin/raft/learner");
    let r = client.post(&admin).json(&serde_json::json!({"node_id": 4, "addr": n4.grpc_addr()})).send().await.unwrap();
    assert!(r.status().is_success(), "add learner: {}", r.text().await.unwrap());
    cluster.nodes.push(n4);
    cluster.wait_converged(Duration::from_secs(30)).await;
    let s4 = cluster.node(4).status().await.unwrap();
    assert_eq!(s4["role"], "learner");
    assert!(s4["snapshot_index"].as_u64().is_some(), "learner was brought up by snapshot install: {s4}");
    assert_eq!(read_series(&cluster.node(4).grpc_addr(), "anonymous", "m").await, want, "learner has all data");

    let admin = cluster.node(leader).web_url("/api/v1/admin/raft/membership");
    let r = client.post(&admin).json(&serde_json::json!({"members": [1, 2, 3, 4]})).send().await.unwrap();
    assert!(r.status().is_success(), "change membership: {}", r.text().await.unwrap());
    let s4 = wait_for(Duration::from_secs(20), "node 4 to become a voter", || async {
        let s = cluster.nodes.last().unwrap().status().await?;
        (s["role"] == "follower" && s["members"].as_array()?.len() == 4).then_some(s)
    })
    .await;
    assert_eq!(s4["members"], serde_json::json!([1, 2, 3, 4]));
    // Writes still commit with four voters.
    assert_eq!(write_one(&client, &url, "m", base + 300_000, 1.0).await.unwrap(), 204);
}
