//! `bench otlp`: OTLP/HTTP load for a collector (strata-agent), to measure
//! OTLP → remote write throughput end to end.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use strata_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use strata_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use strata_proto::otlp::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric::Data,
    number_data_point,
};
use strata_proto::otlp::resource::v1::Resource;

use crate::stats::{ms, quantile_us};

#[derive(Debug, Clone)]
pub struct OtlpBench {
    pub url: String,
    pub series: usize,
    pub steps: usize,
    pub points_per_request: usize,
    pub senders: usize,
    /// Agent /metrics URL: when given, wait until everything queued was sent.
    pub agent_metrics: Option<String>,
}

fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }),
        ..Default::default()
    }
}

fn request(first: usize, n: usize, step: usize, t0_ns: u64) -> Vec<u8> {
    let t = t0_ns + step as u64 * 15_000_000_000;
    let points: Vec<NumberDataPoint> = (first..first + n)
        .map(|i| NumberDataPoint {
            attributes: vec![
                kv("http.route", format!("/api/r{}", i % 100)),
                kv("series", i.to_string()),
                kv("http.request.method", "GET".into()),
            ],
            time_unix_nano: t,
            value: Some(number_data_point::Value::AsDouble((step * (i % 7 + 1)) as f64)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "bench".into()), kv("service.instance.id", "bench-1".into())],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: None,
                metrics: vec![Metric {
                    name: "bench.requests".into(),
                    unit: "{request}".into(),
                    data: Some(Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

async fn scrape(client: &reqwest::Client, url: &str, name: &str) -> f64 {
    let Ok(r) = client.get(url).send().await else { return 0.0 };
    let text = r.text().await.unwrap_or_default();
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

pub async fn run(b: OtlpBench) -> anyhow::Result<()> {
    let t0 = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 - b.steps as u64 * 15_000_000_000;
    // Senders own disjoint series ranges and send their steps in order.
    let per = b.series.div_ceil(b.senders);
    let mut plans: Vec<Vec<(Vec<u8>, usize)>> = Vec::new();
    for s in 0..b.senders {
        let lo = s * per;
        let hi = ((s + 1) * per).min(b.series);
        let mut bodies = Vec::new();
        for step in 0..b.steps {
            let mut i = lo;
            while i < hi {
                let n = b.points_per_request.min(hi - i);
                bodies.push((request(i, n, step, t0), n));
                i += n;
            }
        }
        plans.push(bodies);
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let sent_before = match &b.agent_metrics {
        Some(u) => scrape(&client, u, "strata_agent_samples_sent_total").await,
        None => 0.0,
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for bodies in plans {
        let (c, url) = (client.clone(), b.url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut lat) = (0u64, Vec::new());
            for (body, n) in bodies {
                loop {
                    let t = Instant::now();
                    let r =
                        c.post(&url).header("content-type", "application/x-protobuf").body(body.clone()).send().await;
                    lat.push(t.elapsed().as_micros() as u64);
                    match r {
                        Ok(r) if r.status().is_success() => {
                            ok += n as u64;
                            break;
                        }
                        Ok(r) if r.status().as_u16() == 503 || r.status().as_u16() == 429 => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Ok(r) => anyhow::bail!("OTLP answered {}", r.status()),
                        Err(e) => anyhow::bail!("OTLP request failed: {e}"),
                    }
                }
            }
            Ok((ok, lat))
        }));
    }
    let (mut ok, mut lat) = (0u64, Vec::new());
    for t in tasks {
        let (o, l) = t.await??;
        ok += o;
        lat.extend(l);
    }
    let accepted_secs = start.elapsed().as_secs_f64();
    println!(
        "bench otlp: {ok} data points acknowledged in {accepted_secs:.2}s = {:.0} points/s (request p50 {} p99 {})",
        ok as f64 / accepted_secs,
        ms(quantile_us(&lat, 0.5)),
        ms(quantile_us(&lat, 0.99))
    );
    if let Some(u) = &b.agent_metrics {
        // Each counter point becomes one sample (plus target_info per request).
        loop {
            let sent = scrape(&client, u, "strata_agent_samples_sent_total").await - sent_before;
            if sent >= ok as f64 {
                break;
            }
            if start.elapsed() > Duration::from_secs(600) {
                anyhow::bail!("agent did not finish sending within 10 minutes ({sent} of {ok})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "bench otlp: end to end (remote write acknowledged) {ok} points in {secs:.2}s = {:.0} points/s",
            ok as f64 / secs
        );
    }
    Ok(())
}
