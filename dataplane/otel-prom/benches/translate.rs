//! Translation hot path: OTLP data points → Prometheus series, one core.
//! Run: `cargo bench -p strata-otel-prom --bench translate`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_otel_prom::{Translator, TranslatorConfig};
use strata_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use strata_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use strata_proto::otlp::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric::Data, number_data_point,
};
use strata_proto::otlp::resource::v1::Resource;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

/// A request shaped like the sample API's export: 1000 data points of
/// counters, gauges and 12-bucket histograms with 4 attributes each.
fn request(points_per_metric: usize) -> (ExportMetricsServiceRequest, u64) {
    let t = 1_700_000_000_000_000_000u64;
    let attrs = |i: usize| {
        vec![
            kv("http.request.method", if i.is_multiple_of(2) { "GET" } else { "POST" }),
            kv("http.route", &format!("/api/route{}", i % 50)),
            kv("http.response.status_code", &format!("{}", 200 + (i % 3) * 100)),
            kv("server.address", "shop"),
        ]
    };
    let numbers = |n: usize| -> Vec<NumberDataPoint> {
        (0..n)
            .map(|i| NumberDataPoint {
                attributes: attrs(i),
                time_unix_nano: t,
                value: Some(number_data_point::Value::AsDouble(i as f64)),
                ..Default::default()
            })
            .collect()
    };
    let bounds: Vec<f64> = vec![0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0];
    let hist: Vec<HistogramDataPoint> = (0..points_per_metric)
        .map(|i| HistogramDataPoint {
            attributes: attrs(i),
            time_unix_nano: t,
            count: 100,
            sum: Some(12.5),
            bucket_counts: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 22],
            explicit_bounds: bounds.clone(),
            ..Default::default()
        })
        .collect();
    let metrics = vec![
        Metric {
            name: "orders.created".into(),
            unit: "{order}".into(),
            data: Some(Data::Sum(Sum {
                data_points: numbers(points_per_metric),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        Metric {
            name: "http.server.active_requests".into(),
            unit: "{request}".into(),
            data: Some(Data::Gauge(Gauge { data_points: numbers(points_per_metric) })),
            ..Default::default()
        },
        Metric {
            name: "http.server.request.duration".into(),
            unit: "s".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: hist,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        },
    ];
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "shop"),
                    kv("service.instance.id", "i-1"),
                    kv("deployment.environment.name", "prod"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope { name: "shop".into(), ..Default::default() }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    (req, 3 * points_per_metric as u64)
}

fn bench(c: &mut Criterion) {
    let (req, points) = request(1000);
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(points));
    g.bench_function("mixed_1000_points_per_metric", |b| {
        let mut tr = Translator::new(TranslatorConfig::default());
        b.iter(|| tr.translate(&req, 0))
    });
    let (counters_only, _) = request(1000);
    let mut only = counters_only.clone();
    only.resource_metrics[0].scope_metrics[0].metrics.truncate(2);
    g.throughput(Throughput::Elements(2000));
    g.bench_function("counters_and_gauges_2000_points", |b| {
        let mut tr = Translator::new(TranslatorConfig::default());
        b.iter(|| tr.translate(&only, 0))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
