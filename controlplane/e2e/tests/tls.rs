//! TLS everywhere (real binaries on loopback, certificates generated per
//! test):
//!
//! - peer traffic with mutual TLS: a three-node cluster elects, replicates
//!   and forwards writes over it, while a client without a certificate
//!   from the cluster CA (none, or a rogue CA's) cannot vote, append,
//!   install a snapshot, forward a write or read the StoreAPI, and a node
//!   with a rogue certificate added as a learner never receives the data;
//! - HTTPS with client certificates and credentials: the agent delivers to
//!   an ingester that requires a client certificate; clients without one,
//!   or with a rogue one, are refused; the querier answers over HTTPS with
//!   basic auth (as Grafana calls it);
//! - Debian's Prometheus remote-writes over TLS (client certificate plus
//!   basic auth, and plus a bearer token, 0 failed samples) and
//!   remote-reads over TLS with basic auth.

use std::time::Duration;

use controlplane_e2e::pki::Pki;
use controlplane_e2e::*;
use strata_proto::raft::raft_client::RaftClient;
use strata_proto::raft::{ForwardWriteRequest, RaftMessage};

fn sha256_hex(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
}

/// A Raft client to `addr`: plaintext without `tls`.
fn raft_client(
    addr: &str,
    tls: Option<std::sync::Arc<strata_server::tls::ClientTls>>,
) -> RaftClient<tonic::transport::Channel> {
    let ep = tonic::transport::Endpoint::from_shared(strata_server::grpc::uri(addr, tls.is_some()))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    RaftClient::new(strata_server::grpc::channel(ep, tls, None))
}

/// Every Raft RPC through `client`: the status codes.
async fn raft_calls(
    client: &mut RaftClient<tonic::transport::Channel>,
    target: u64,
) -> Vec<(&'static str, tonic::Status)> {
    let msg = || RaftMessage { data: vec![1, 2, 3].into(), target };
    let mut out = Vec::new();
    if let Err(e) = client.vote(msg()).await {
        out.push(("Vote", e));
    }
    if let Err(e) = client.append_entries(msg()).await {
        out.push(("AppendEntries", e));
    }
    if let Err(e) = client.install_snapshot(msg()).await {
        out.push(("InstallSnapshot", e));
    }
    let body = write_request_body(&vec![(labels(&[("__name__", "forged")]), vec![(now_ms(), 1.0)])]);
    if let Err(e) =
        client.forward_write(ForwardWriteRequest { tenant: "anonymous".into(), write_request: body.into() }).await
    {
        out.push(("ForwardWrite", e));
    }
    out
}

/// Whether a call failed in the transport (refused handshake, closed
/// connection) rather than being answered by the node.
fn at_the_connection(e: &tonic::Status) -> bool {
    use std::error::Error;
    e.source().is_some_and(|s| s.is::<tonic::transport::Error>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_need_a_certificate_from_the_cluster_ca() {
    let dir = test_dir();
    let pki = Pki::new(dir.path());
    let flags = pki.peer_flags();
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    // Elects over mutual TLS (Cluster::start waits for an agreed leader).
    let mut cluster = Cluster::start(dir.path(), 3, &flag_refs).await;
    let leader = cluster.wait_leader(None, Duration::from_secs(30)).await;
    let follower = cluster.nodes.iter().map(|n| n.id).find(|&i| i != leader).expect("a follower");
    let http = reqwest::Client::new();
    let t = now_ms();
    // Written on a follower: forwarded to the leader over mutual TLS.
    for (id, name) in [(leader, "via_leader"), (follower, "via_follower")] {
        let series = vec![(labels(&[("__name__", name)]), vec![(t, 7.0)])];
        let (s, body) = remote_write(&http, &cluster.node(id).write_url(), "anonymous", &series).await;
        assert_eq!(s, 204, "write on node {id}: {body}");
    }
    cluster.wait_converged(Duration::from_secs(20)).await;
    let member = Pki::grpc_client(&pki.ca, Some(&pki.member));
    for n in &cluster.nodes {
        for name in ["via_leader", "via_follower"] {
            let got = read_series_tls(&n.grpc_addr(), member.clone(), "anonymous", name).await.expect("member reads");
            assert_eq!(got.values().next(), Some(&vec![(t, 7.0)]), "{name} on node {}", n.id);
        }
    }

    // Members (verified client certificates) see which tenants exist.
    let info = store_info_tls(&cluster.node(leader).grpc_addr(), member.clone()).await.expect("Info");
    assert_eq!(info.tenants, vec!["anonymous".to_string()]);
    // A member's own RPCs reach the application (which checks them).
    let addr = cluster.node(leader).grpc_addr();
    let mut as_member = raft_client(&addr, Some(member.clone()));
    let refused = raft_calls(&mut as_member, 999).await;
    assert!(refused.iter().all(|(_, e)| !at_the_connection(e)), "a member's calls must reach the node: {refused:?}");

    // Outsiders never get past the connection: plaintext, TLS without a
    // client certificate, a rogue CA's certificate.
    let outsiders = [
        ("plaintext", None),
        ("no client certificate", Some(Pki::grpc_client(&pki.ca, None))),
        ("a rogue certificate", Some(Pki::grpc_client(&pki.ca, Some(&pki.rogue)))),
    ];
    for (who, tls) in outsiders {
        let mut c = raft_client(&addr, tls.clone());
        let refused = raft_calls(&mut c, leader).await;
        assert_eq!(refused.len(), 4, "{who}: every Raft RPC must fail: {refused:?}");
        for (rpc, e) in &refused {
            assert!(at_the_connection(e), "{who}: {rpc} must be refused at the connection: {e:?}");
        }
        if let Some(tls) = tls {
            let e = read_series_tls(&addr, tls, "anonymous", "via_leader").await.expect_err(who);
            assert!(at_the_connection(&e), "{who}: StoreAPI: {e:?}");
        }
    }
    // The forged write never landed.
    assert!(read_series_tls(&addr, member.clone(), "anonymous", "forged").await.expect("read").is_empty());

    // A node with a rogue certificate, added as a learner by an admin,
    // never receives the data: the leader does not trust its certificate.
    let (grpc, web) = (free_port(), free_port());
    let rogue_flags = vec![
        format!("--grpc.tls-cert-file={}", pki.rogue.cert.display()),
        format!("--grpc.tls-key-file={}", pki.rogue.key.display()),
        format!("--grpc.tls-client-ca-file={}", pki.rogue_ca.display()),
        format!("--grpc-client.tls-ca-file={}", pki.rogue_ca.display()),
        format!("--grpc-client.tls-cert-file={}", pki.rogue.cert.display()),
        format!("--grpc-client.tls-key-file={}", pki.rogue.key.display()),
    ];
    let mut rogue = Node {
        id: 9,
        grpc,
        web,
        dir: dir.path().join("node-9"),
        proc: None,
        extra: rogue_flags,
        // Not the lowest id: it does not start a cluster of its own.
        peers: format!("1={},9=127.0.0.1:{grpc}", cluster.node(1).grpc_addr()),
    };
    rogue.start(dir.path());
    wait_ready(&rogue.web_url("/-/healthy"), Duration::from_secs(30)).await;
    let _ = http
        .post(cluster.node(leader).web_url("/api/v1/admin/raft/learner"))
        .json(&serde_json::json!({"node_id": 9, "addr": rogue.grpc_addr()}))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = rogue.status().await.expect("rogue status");
    assert!(s["last_applied_index"].is_null(), "the rogue node applied entries: {s}");
    let rogue_reader = Pki::grpc_client(&pki.rogue_ca, Some(&pki.rogue));
    let got = read_series_tls(&rogue.grpc_addr(), rogue_reader, "anonymous", "via_leader").await.expect("rogue read");
    assert!(got.is_empty(), "the rogue node holds cluster data: {got:?}");
    // The voters are unchanged and the cluster still takes writes.
    let s = cluster.node(leader).status().await.expect("leader status");
    assert_eq!(s["members"], serde_json::json!([1, 2, 3]), "{s}");
    let series = vec![(labels(&[("__name__", "after_rogue")]), vec![(now_ms(), 1.0)])];
    let (code, body) = remote_write(&http, &cluster.node(follower).write_url(), "anonymous", &series).await;
    assert_eq!(code, 204, "{body}");
}

/// An ingester serving HTTPS that requires client certificates (and a
/// credential), mutual TLS on its gRPC listener, and a querier serving
/// HTTPS with basic auth that reaches the ingester over mutual TLS.
struct Secured {
    _dir: tempfile::TempDir,
    pki: Pki,
    node: Node,
    querier: Querier,
    /// `https://127.0.0.1:<ingester web port>`.
    ingester_base: String,
    querier_base: String,
}

async fn wait_ready_https(client: &reqwest_rustls::Client, url: &str) {
    wait_for(Duration::from_secs(30), url, || async {
        let r = client.get(url).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

async fn secured() -> Secured {
    let dir = test_dir();
    let pki = Pki::new(dir.path());
    let hash = bcrypt::hash("pw", 4).expect("bcrypt");
    let ingester_web = dir.path().join("ingester-web.yml");
    std::fs::write(
        &ingester_web,
        format!(
            "tls_server_config:\n  cert_file: {c}\n  key_file: {k}\n  client_ca_file: {ca}\n\
             basic_auth_users:\n  prom: '{hash}'\n\
             tenants:\n\
             \x20 - {{ user: prom, tenant: team-p, roles: [read, write] }}\n\
             \x20 - {{ token_sha256: {pt}, tenant: team-q, roles: [write] }}\n\
             \x20 - {{ token_sha256: {at}, tenant: team-a, roles: [write] }}\n",
            c = pki.member.cert.display(),
            k = pki.member.key.display(),
            ca = pki.ca.display(),
            pt = sha256_hex("ptoken"),
            at = sha256_hex("agent-token"),
        ),
    )
    .expect("ingester web config");
    // The querier: HTTPS without client certificates (Grafana's data
    // source sends basic auth), relative paths resolved from the file.
    std::fs::copy(&pki.member.cert, dir.path().join("querier.crt")).expect("copy");
    std::fs::copy(&pki.member.key, dir.path().join("querier.key")).expect("copy");
    let querier_web = dir.path().join("querier-web.yml");
    std::fs::write(
        &querier_web,
        format!(
            "tls_server_config: {{ cert_file: querier.crt, key_file: querier.key }}\n\
             basic_auth_users:\n  prom: '{hash}'\n\
             tenants:\n  - {{ user: prom, tenant: team-p, roles: [read] }}\n"
        ),
    )
    .expect("querier web config");
    let (grpc, web) = (free_port(), free_port());
    let mut extra = pki.peer_flags();
    extra.push(format!("--web.config.file={}", ingester_web.display()));
    let mut node = Node {
        id: 1,
        grpc,
        web,
        dir: dir.path().join("node-1"),
        proc: None,
        extra,
        peers: format!("1=127.0.0.1:{grpc}"),
    };
    node.start(dir.path());
    let ingester_base = format!("https://127.0.0.1:{web}");
    let member_https = Pki::https_client(&pki.ca, Some(&pki.member));
    wait_ready_https(&member_https, &format!("{ingester_base}/-/healthy")).await;
    let mut qflags = pki.client_flags();
    qflags.push(format!("--web.config.file={}", querier_web.display()));
    let qport = free_port();
    let mut args = vec![
        "querier".to_string(),
        format!("--web.listen-address=127.0.0.1:{qport}"),
        format!("--endpoint={}", node.grpc_addr()),
    ];
    args.extend(qflags);
    let proc = Proc::start(&format!("querier-{qport}"), &bin("strata"), &args, &[], dir.path());
    let querier = Querier { proc, port: qport };
    let querier_base = format!("https://127.0.0.1:{qport}");
    wait_ready_https(&Pki::https_client(&pki.ca, None), &format!("{querier_base}/-/healthy")).await;
    Secured { _dir: dir, pki, node, querier, ingester_base, querier_base }
}

/// Sends what no TLS client sends to `addr` and waits for the server to
/// close each connection (within the handshake timeout).
async fn hostile_connections(addr: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut x: u64 = 0xBAD_C0DE;
    let random: Vec<u8> = (0..65_536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let huge_record = [0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0xff, 0xff];
    let inputs: [&[u8]; 4] =
        [&random, &huge_record, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"];
    for input in inputs {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = c.write_all(input).await;
        let mut buf = vec![0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => assert!(
                        !String::from_utf8_lossy(&buf[..n]).contains("200 OK"),
                        "{addr} answered a non-TLS request"
                    ),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{addr} kept a hostile connection open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_delivers_to_an_https_ingester_that_requires_a_client_certificate() {
    let s = secured().await;
    let write_url = format!("{}/api/v1/write", s.ingester_base);
    let t = now_ms();
    let series = vec![(labels(&[("__name__", "https_probe")]), vec![(t, 5.0)])];
    let post = |c: reqwest_rustls::Client, auth: Option<&'static str>| {
        let mut rb = c
            .post(&write_url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .body(write_request_body(&series));
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        rb.send()
    };
    // Without a client certificate, or with a rogue one: no connection.
    for (who, c) in [
        ("no client certificate", Pki::https_client(&s.pki.ca, None)),
        ("a rogue certificate", Pki::https_client(&s.pki.ca, Some(&s.pki.rogue))),
    ] {
        let r = post(c, Some("Bearer agent-token")).await;
        assert!(r.is_err(), "{who}: {:?}", r.map(|r| r.status()));
    }
    // Plain HTTP to the HTTPS port: no answer a client could take for success.
    let r = reqwest::Client::new().post(s.node.write_url()).body(write_request_body(&series)).send().await;
    assert!(r.map(|r| !r.status().is_success()).unwrap_or(true), "plain HTTP was served");
    // Hostile connections to both TLS listeners (random bytes, a TLS
    // record claiming 16 MiB, plaintext HTTP/2 and HTTP/1.1) are dropped;
    // both keep serving.
    let web_addr = s.ingester_base.trim_start_matches("https://").to_string();
    for addr in [web_addr.as_str(), s.node.grpc_addr().as_str()] {
        hostile_connections(addr).await;
    }
    let health = Pki::https_client(&s.pki.ca, Some(&s.pki.member))
        .get(format!("{}/-/healthy", s.ingester_base))
        .send()
        .await
        .expect("healthy after hostile connections");
    assert!(health.status().is_success());
    // The certificate alone is not a credential.
    let member = Pki::https_client(&s.pki.ca, Some(&s.pki.member));
    let r = post(member.clone(), None).await.expect("with a client certificate");
    assert_eq!(r.status(), 401);
    assert!(
        read_series_tls(&s.node.grpc_addr(), Pki::grpc_client(&s.pki.ca, Some(&s.pki.member)), "team-a", "https_probe")
            .await
            .expect("read")
            .is_empty()
    );

    // The agent: client certificate, CA and bearer token from files.
    let dir = s._dir.path();
    let token = dir.join("agent-token");
    std::fs::write(&token, "agent-token\n").expect("token");
    let flags = [
        format!("--remote-write.tls-ca-file={}", s.pki.ca.display()),
        format!("--remote-write.tls-cert-file={}", s.pki.member.cert.display()),
        format!("--remote-write.tls-key-file={}", s.pki.member.key.display()),
        format!("--remote-write.bearer-token-file={}", token.display()),
    ];
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let agent = Agent::start(dir, "agent", &write_url, "prod", "dp-1", &flag_refs).await;
    let otlp = serde_json::json!({"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeMetrics": [{"metrics": [{"name": "tls_jobs", "sum": {"isMonotonic": true, "aggregationTemporality": 2,
        "dataPoints": [{"timeUnixNano": (t * 1_000_000).to_string(), "asDouble": 3.0}]}}]}]}]});
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/metrics", agent.http_port))
        .json(&otlp)
        .send()
        .await
        .expect("otlp to the agent");
    assert_eq!(r.status(), 200);
    let reader = Pki::grpc_client(&s.pki.ca, Some(&s.pki.member));
    wait_for(Duration::from_secs(30), "the agent's sample over HTTPS with a client certificate", || async {
        let got = read_series_tls(&s.node.grpc_addr(), reader.clone(), "team-a", "tls_jobs_total").await.ok()?;
        let (labels, samples) = got.iter().next()?;
        assert!(labels.contains("environment=prod"), "{labels}");
        (samples == &vec![(t, 3.0)]).then_some(())
    })
    .await;

    // The querier over HTTPS with basic auth, as Grafana's data source
    // calls it (it reaches the ingester over mutual TLS).
    let grafana = Pki::https_client(&s.pki.ca, None);
    let q = |auth: bool| {
        let mut rb = grafana
            .get(format!("{}/api/v1/query", s.querier_base))
            .query(&[("query", "https_probe"), ("time", &format!("{}", t as f64 / 1000.0))]);
        if auth {
            rb = rb.basic_auth("prom", Some("pw"));
        }
        rb.send()
    };
    assert_eq!(q(false).await.expect("query").status(), 401);
    let series = vec![(labels(&[("__name__", "https_probe")]), vec![(t, 5.0)])];
    let r = member
        .post(&write_url)
        .basic_auth("prom", Some("pw"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(write_request_body(&series))
        .send()
        .await
        .expect("write");
    assert_eq!(r.status(), 204);
    let text = q(true).await.expect("query").text().await.expect("body");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["data"]["result"][0]["value"][1], "5", "{v}");
    drop(s.querier);
}

/// Debian's Prometheus, unchanged: remote write over TLS with a client
/// certificate and basic auth, and with a bearer token; remote read over
/// TLS with basic auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_and_reads_over_tls() {
    if !require("prometheus") {
        return;
    }
    let s = secured().await;
    let dir = s._dir.path();
    let t = now_ms();
    let only = vec![(labels(&[("__name__", "only_in_strata"), ("job", "x")]), vec![(t - 1000, 42.0)])];
    let member = Pki::https_client(&s.pki.ca, Some(&s.pki.member));
    let r = member
        .post(format!("{}/api/v1/write", s.ingester_base))
        .basic_auth("prom", Some("pw"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(write_request_body(&only))
        .send()
        .await
        .expect("write");
    assert_eq!(r.status(), 204);
    let port = free_port();
    let cfg = dir.join("prometheus.yml");
    let tls = format!(
        "{{ca_file: {}, cert_file: {}, key_file: {}}}",
        s.pki.ca.display(),
        s.pki.member.cert.display(),
        s.pki.member.key.display()
    );
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n\
             remote_write:\n\
             \x20 - url: {w}\n    basic_auth: {{username: prom, password: pw}}\n    tls_config: {tls}\n    queue_config: {{batch_send_deadline: 1s}}\n\
             \x20 - url: {w}\n    authorization: {{credentials: ptoken}}\n    tls_config: {tls}\n    queue_config: {{batch_send_deadline: 1s}}\n\
             remote_read:\n  - url: {r}/api/v1/read\n    basic_auth: {{username: prom, password: pw}}\n    tls_config: {{ca_file: {ca}}}\n    read_recent: true\n",
            w = format!("{}/api/v1/write", s.ingester_base),
            r = s.querier_base,
            ca = s.pki.ca.display(),
        ),
    )
    .expect("prometheus.yml");
    let args = vec![
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", dir.join("prom").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    let _prom = Proc::start("prometheus", std::path::Path::new("prometheus"), &args, &[], dir);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/-/ready"), Duration::from_secs(30)).await;
    let reader = Pki::grpc_client(&s.pki.ca, Some(&s.pki.member));
    for tenant in ["team-p", "team-q"] {
        wait_for(Duration::from_secs(40), "Prometheus' own series in each credential's tenant", || async {
            let got =
                read_series_tls(&s.node.grpc_addr(), reader.clone(), tenant, "prometheus_build_info").await.ok()?;
            (got.values().next().map(|v| v.len()).unwrap_or(0) >= 3).then_some(())
        })
        .await;
    }
    wait_for(Duration::from_secs(30), "samples sent by both queues", || async {
        let r = query(&base, "prometheus_remote_storage_samples_total").await;
        (r.len() == 2 && r.iter().all(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)))
            .then_some(())
    })
    .await;
    let failed = query_value(&base, "sum(prometheus_remote_storage_samples_failed_total)").await;
    assert_eq!(failed, Some(0.0), "Prometheus saw failed samples");
    let got = wait_for(Duration::from_secs(20), "only_in_strata through remote read over TLS", || async {
        query_value(&base, &format!("only_in_strata @ {}", t as f64 / 1000.0)).await
    })
    .await;
    assert_eq!(got, 42.0);
}

/// Certificates rotate without a restart: the ingester's HTTPS and gRPC
/// listeners pick up a certificate from a new CA once its files change
/// (new connections get it), and the old one stops being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart() {
    let dir = test_dir();
    let old = Pki::new(&dir.path().join("old"));
    let new = Pki::new(&dir.path().join("new"));
    // The files the ingester is configured with start as the old ones.
    let (cert, key) = (dir.path().join("served.crt"), dir.path().join("served.key"));
    std::fs::copy(&old.member.cert, &cert).expect("copy");
    std::fs::copy(&old.member.key, &key).expect("copy");
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "tls_server_config: { cert_file: served.crt, key_file: served.key }\n").expect("web config");
    let (grpc, port) = (free_port(), free_port());
    let mut node = Node {
        id: 1,
        grpc,
        web: port,
        dir: dir.path().join("node-1"),
        proc: None,
        extra: vec![
            format!("--web.config.file={}", web.display()),
            format!("--grpc.tls-cert-file={}", cert.display()),
            format!("--grpc.tls-key-file={}", key.display()),
        ],
        peers: format!("1=127.0.0.1:{grpc}"),
    };
    node.start(dir.path());
    let url = format!("https://127.0.0.1:{port}/-/healthy");
    let trusts_old = Pki::https_client(&old.ca, None);
    let trusts_new = Pki::https_client(&new.ca, None);
    wait_ready_https(&trusts_old, &url).await;
    assert!(trusts_new.get(&url).send().await.is_err(), "the new CA is not served yet");
    let grpc_old = Pki::grpc_client(&old.ca, None);
    let grpc_new = Pki::grpc_client(&new.ca, None);
    read_series_tls(&node.grpc_addr(), grpc_old.clone(), "anonymous", "x").await.expect("gRPC with the old CA");

    // A caller without a client certificate (this listener does not
    // require one) is not told which tenants exist.
    let series = vec![(labels(&[("__name__", "tenant_probe")]), vec![(now_ms(), 1.0)])];
    let r = trusts_old
        .post(format!("https://127.0.0.1:{port}/api/v1/write"))
        .header("X-Scope-OrgID", "secret-customer")
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(write_request_body(&series))
        .send()
        .await
        .expect("write");
    assert_eq!(r.status(), 204);
    let info = store_info_tls(&node.grpc_addr(), grpc_old.clone()).await.expect("Info");
    assert!(info.tenants.is_empty(), "tenants listed to an anonymous caller: {:?}", info.tenants);
    assert!(
        !read_series_tls(&node.grpc_addr(), grpc_old.clone(), "secret-customer", "tenant_probe")
            .await
            .expect("read")
            .is_empty()
    );

    // Rotate: the key first, then the certificate (a reload in between
    // fails on the mismatch and keeps the old pair).
    std::fs::copy(&new.member.key, &key).expect("copy");
    std::fs::copy(&new.member.cert, &cert).expect("copy");
    wait_for(Duration::from_secs(20), "the HTTPS listener to serve the new certificate", || async {
        trusts_new.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
    // A new connection (the old client's pooled one keeps its session).
    let fresh_old = Pki::https_client(&old.ca, None);
    assert!(fresh_old.get(&url).send().await.is_err(), "the old certificate is still served");
    assert!(trusts_old.get(&url).send().await.is_ok(), "an open connection keeps working through a rotation");
    wait_for(Duration::from_secs(20), "the gRPC listener to serve the new certificate", || async {
        read_series_tls(&node.grpc_addr(), grpc_new.clone(), "anonymous", "x").await.ok().map(|_| ())
    })
    .await;
    assert!(read_series_tls(&node.grpc_addr(), Pki::grpc_client(&old.ca, None), "anonymous", "x").await.is_err());
    drop(grpc_old);
}

/// `strata ruler` against an HTTPS ingester that requires a client
/// certificate and a credential: its results arrive with
/// `--http-client.tls-*` and a bearer token; without the CA they are
/// refused at the handshake and counted, never lost silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ruler_writes_over_https_with_a_client_certificate_and_a_token() {
    let s = secured().await;
    let dir = s._dir.path();
    let rules = dir.join("ruler-tenants/team-a");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(
        rules.join("check.yml"),
        "groups:\n- name: tls\n  interval: 1s\n  rules:\n  - record: ruler_tls_check\n    expr: vector(7)\n",
    )
    .expect("rule file");
    let token = dir.join("ruler-token");
    std::fs::write(&token, "agent-token").expect("token");
    let start = |name: &str, http_tls: bool| {
        let port = free_port();
        let mut args = vec![
            "ruler".to_string(),
            format!("--rule.tenants-dir={}", dir.join("ruler-tenants").display()),
            format!("--endpoint={}", s.node.grpc_addr()),
            format!("--remote-write.url={}/api/v1/write", s.ingester_base),
            format!("--remote-write.bearer-token-file={}", token.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--rule.api=false".to_string(),
        ];
        args.extend(s.pki.client_flags());
        if http_tls {
            args.push(format!("--http-client.tls-ca-file={}", s.pki.ca.display()));
            args.push(format!("--http-client.tls-cert-file={}", s.pki.member.cert.display()));
            args.push(format!("--http-client.tls-key-file={}", s.pki.member.key.display()));
        }
        (Proc::start(name, &bin("strata"), &args, &[], dir), port)
    };
    // Without the cluster CA the writes fail (and say so in the metrics).
    let (mut untrusting, p) = start("ruler-no-ca", false);
    wait_for(Duration::from_secs(30), "the untrusting ruler counting failed writes", || async {
        let m = reqwest::get(format!("http://127.0.0.1:{p}/metrics")).await.ok()?.text().await.ok()?;
        m.lines()
            .find(|l| l.starts_with("strata_ruler_remote_write_failures_total "))
            .and_then(|l| l.split(' ').nth(1)?.parse::<f64>().ok())
            .filter(|v| *v >= 1.0)
    })
    .await;
    untrusting.kill9();
    let tls = Pki::grpc_client(&s.pki.ca, Some(&s.pki.member));
    assert!(read_series_tls(&s.node.grpc_addr(), tls.clone(), "team-a", "ruler_tls_check").await.unwrap().is_empty());
    // With it, the recording rule's output lands in the token's tenant.
    let (_ruler, _) = start("ruler", true);
    let got = wait_for(Duration::from_secs(30), "ruler_tls_check written over HTTPS", || {
        let tls = tls.clone();
        let addr = s.node.grpc_addr();
        async move {
            let got = read_series_tls(&addr, tls, "team-a", "ruler_tls_check").await.ok()?;
            (!got.is_empty()).then_some(got)
        }
    })
    .await;
    assert!(got.values().flatten().all(|(_, v)| *v == 7.0), "{got:?}");
}
