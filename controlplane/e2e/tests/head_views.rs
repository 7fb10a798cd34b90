//! Downsampled reads (views) of an ingester's head: every view of a raw
//! sample but `count` is the sample itself, so the head answers those
//! views with its XOR chunks, undecoded, and `count` with samples of 1 —
//! the same points either way as the raw read.

use controlplane_e2e::*;
use strata_model::downsample::{RESOLUTION_LABEL, VIEW_LABEL};
use strata_proto::prometheus::{LabelMatcher, label_matcher};
use strata_proto::store::SeriesRequest;
use strata_proto::store::store_client::StoreClient;

const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Per series (labels as text): its samples as `(t, value bits)`, and
/// whether any came as chunks / as samples.
type Answer = std::collections::BTreeMap<String, (Vec<(i64, u64)>, bool, bool)>;

async fn series(grpc: &str, view: Option<&str>, accept_chunks: bool) -> Answer {
    let mut client = StoreClient::connect(format!("http://{grpc}")).await.expect("connect StoreAPI");
    let eq = |name: &str, value: &str| LabelMatcher {
        r#type: label_matcher::Type::Eq as i32,
        name: name.into(),
        value: value.into(),
    };
    let mut matchers = vec![eq("__name__", "requests_total")];
    if let Some(v) = view {
        matchers.push(eq(VIEW_LABEL, v));
        matchers.push(eq(RESOLUTION_LABEL, "3600000"));
    }
    let req = SeriesRequest {
        tenant: "anonymous".into(),
        min_time: i64::MIN,
        max_time: i64::MAX,
        matchers,
        skip_samples: false,
        accept_chunks,
        max_samples: 0,
    };
    let mut stream = client.series(req).await.expect("Series").into_inner();
    let mut out = Answer::new();
    while let Some(batch) = stream.message().await.expect("Series frame") {
        for s in batch.series {
            let key = s.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>().join(",");
            let mut points: Vec<(i64, u64)> = s.samples.iter().map(|x| (x.timestamp, x.value.to_bits())).collect();
            for c in &s.chunks {
                let decoded = strata_head::chunk::decode(&c.data).expect("a decodable XOR chunk");
                points.extend(decoded.into_iter().map(|(t, v)| (t, v.to_bits())));
            }
            points.sort();
            points.dedup();
            let entry = out.entry(key).or_default();
            entry.0.extend(points);
            entry.1 |= !s.chunks.is_empty();
            entry.2 |= !s.samples.is_empty();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_views_with_its_chunks_and_count_with_ones() {
    let dir = test_dir();
    let cluster = Cluster::start(dir.path(), 1, &[]).await;
    let node = &cluster.nodes[0];
    let client = reqwest::Client::new();
    let t0 = now_ms() - 40 * 60_000;
    let mut data = requests_total_data(t0, 30);
    // A staleness marker in one series: kept by every view.
    data[0].1[40].1 = f64::from_bits(STALE_NAN_BITS);
    write_series(&client, &node.write_url(), &data).await;
    let grpc = node.grpc_addr();

    let raw = series(&grpc, None, false).await;
    assert_eq!(raw.len(), data.len());
    for (labels, samples) in &data {
        let key = {
            let mut l = labels.clone();
            l.sort();
            l.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(",")
        };
        let want: Vec<(i64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
        assert_eq!(raw.get(&key).map(|a| &a.0), Some(&want), "{key}: the raw read is what was written");
    }
    let points = |a: &Answer| -> Vec<(String, Vec<(i64, u64)>)> {
        a.iter().map(|(k, (p, _, _))| (k.clone(), p.clone())).collect()
    };
    for view in ["counter", "sum", "min", "max"] {
        let got = series(&grpc, Some(view), true).await;
        assert_eq!(points(&got), points(&raw), "{view}: the raw samples");
        assert!(got.values().all(|(_, chunks, samples)| *chunks && !*samples), "{view}: answered with chunks");
        // A caller that does not decode chunks still gets samples.
        let plain = series(&grpc, Some(view), false).await;
        assert_eq!(points(&plain), points(&raw), "{view}, without chunks");
        assert!(plain.values().all(|(_, chunks, _)| !*chunks), "{view}: chunks sent to a caller that refused them");
    }
    let count = series(&grpc, Some("count"), true).await;
    assert!(count.values().all(|(_, chunks, _)| !*chunks), "count: answered with samples");
    let ones: Vec<(String, Vec<(i64, u64)>)> = points(&raw)
        .into_iter()
        .map(|(k, p)| {
            let p = p.into_iter().map(|(t, b)| (t, if b == STALE_NAN_BITS { b } else { 1f64.to_bits() })).collect();
            (k, p)
        })
        .collect();
    assert_eq!(points(&count), ones, "count: 1 per sample, staleness markers kept");
}
