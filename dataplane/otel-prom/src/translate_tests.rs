use super::*;
use strata_proto::otlp::common::v1::InstrumentationScope;
use strata_proto::otlp::metrics::v1::{
    Gauge, Histogram, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, summary_data_point,
};
use strata_proto::otlp::resource::v1::Resource;
use strata_proto::prometheus::{Sample, TimeSeries};

const T: u64 = 1_700_000_000_000_000_000; // ns
const T_MS: i64 = 1_700_000_000_000;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope { name: "shop".into(), version: "1.2".into(), ..Default::default() }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn svc() -> Vec<KeyValue> {
    vec![
        kv("service.name", "shop"),
        kv("service.namespace", "demo"),
        kv("service.instance.id", "i-1"),
        kv("deployment.environment.name", "prod"),
    ]
}

fn number(t: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: "help text".into(),
        data: Some(data),
        ..Default::default()
    }
}

fn sum(points: Vec<NumberDataPoint>, monotonic: bool, temporality: AggregationTemporality) -> Data {
    Data::Sum(Sum { data_points: points, aggregation_temporality: temporality as i32, is_monotonic: monotonic })
}

fn labels_str(ts: &TimeSeries) -> String {
    ts.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>().join(",")
}

fn find(out: &TranslateOutput, name: &str) -> Vec<TimeSeries> {
    out.write_request()
        .timeseries
        .into_iter()
        .filter(|t| t.labels.iter().any(|l| l.name == "__name__" && l.value == name))
        .collect()
}

fn translate(req: &ExportMetricsServiceRequest) -> TranslateOutput {
    Translator::new(TranslatorConfig::default()).translate(req, 0)
}

#[test]
fn counter_gets_total_unit_job_instance_and_scope() {
    let req = request(
        svc(),
        vec![metric(
            "http.server.requests",
            "{request}",
            sum(vec![number(T, 7.0, vec![kv("http.route", "/api")])], true, AggregationTemporality::Cumulative),
        )],
    );
    let out = translate(&req);
    let s = find(&out, "http_server_requests_total");
    assert_eq!(s.len(), 1);
    assert_eq!(
        labels_str(&s[0]),
        "__name__=http_server_requests_total,http_route=/api,instance=i-1,job=demo/shop,otel_scope_name=shop,otel_scope_version=1.2"
    );
    assert_eq!(s[0].samples, vec![Sample { value: 7.0, timestamp: T_MS }]);
    let req = out.write_request();
    let md = req.metadata.iter().find(|m| m.metric_family_name == "http_server_requests_total").unwrap();
    assert_eq!(md.r#type, metric_metadata::MetricType::Counter as i32);
    assert_eq!(md.help, "help text");
}

#[test]
fn labels_are_sorted_and_valid_everywhere() {
    let req = request(
        svc(),
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![number(T, 1.0, vec![kv("Zeta", "1"), kv("a.b", "2"), kv("0x", "3")])],
            }),
        )],
    );
    let out = translate(&req);
    for ts in &out.write_request().timeseries {
        let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
    let g = find(&out, "g");
    assert!(labels_str(&g[0]).contains("key_0x=3"));
    assert!(labels_str(&g[0]).contains("a_b=2"));
}

#[test]
fn non_monotonic_sum_is_a_gauge_and_unit_one_gets_ratio() {
    let req = request(
        svc(),
        vec![
            metric(
                "queue.size",
                "{item}",
                sum(vec![number(T, 3.0, vec![])], false, AggregationTemporality::Cumulative),
            ),
            metric("cpu.utilization", "1", Data::Gauge(Gauge { data_points: vec![number(T, 0.5, vec![])] })),
        ],
    );
    let out = translate(&req);
    assert_eq!(find(&out, "queue_size").len(), 1);
    assert_eq!(find(&out, "cpu_utilization_ratio").len(), 1);
    let req = out.write_request();
    let md = req.metadata.iter().find(|m| m.metric_family_name == "queue_size").unwrap();
    assert_eq!(md.r#type, metric_metadata::MetricType::Gauge as i32);
}

#[test]
fn histogram_becomes_cumulative_buckets_sum_count_with_exemplars() {
    let p = HistogramDataPoint {
        attributes: vec![kv("http.request.method", "GET")],
        time_unix_nano: T,
        count: 10,
        sum: Some(2.5),
        bucket_counts: vec![2, 3, 4, 1],
        explicit_bounds: vec![0.005, 0.1, 1.0],
        exemplars: vec![OtlpExemplar {
            time_unix_nano: T,
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            value: Some(exemplar::Value::AsDouble(0.05)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = request(
        svc(),
        vec![metric(
            "http.server.request.duration",
            "s",
            Data::Histogram(Histogram {
                data_points: vec![p],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        )],
    );
    let out = translate(&req);
    let buckets = find(&out, "http_server_request_duration_seconds_bucket");
    let got: Vec<(String, f64)> = buckets
        .iter()
        .map(|t| (t.labels.iter().find(|l| l.name == "le").unwrap().value.clone(), t.samples[0].value))
        .collect();
    assert_eq!(got, vec![("0.005".into(), 2.0), ("0.1".into(), 5.0), ("1".into(), 9.0), ("+Inf".into(), 10.0)]);
    // The exemplar (0.05 s) sits on the le="0.1" bucket with its trace id.
    assert_eq!(buckets[1].exemplars.len(), 1);
    let ex = &buckets[1].exemplars[0];
    assert!(ex.labels.iter().any(|l| l.name == "trace_id" && l.value == "ab".repeat(16)));
    assert!(ex.labels.iter().any(|l| l.name == "span_id" && l.value == "cd".repeat(8)));
    assert_eq!(find(&out, "http_server_request_duration_seconds_sum")[0].samples[0].value, 2.5);
    assert_eq!(find(&out, "http_server_request_duration_seconds_count")[0].samples[0].value, 10.0);
    let req = out.write_request();
    let md = req.metadata.iter().find(|m| m.metric_family_name == "http_server_request_duration_seconds").unwrap();
    assert_eq!(md.unit, "seconds");
    assert_eq!(md.r#type, metric_metadata::MetricType::Histogram as i32);
}

#[test]
fn histogram_without_sum_has_no_sum_series() {
    let p = HistogramDataPoint {
        time_unix_nano: T,
        count: 1,
        sum: None,
        bucket_counts: vec![1, 0],
        explicit_bounds: vec![1.0],
        ..Default::default()
    };
    let req = request(
        svc(),
        vec![metric(
            "h",
            "",
            Data::Histogram(Histogram {
                data_points: vec![p],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        )],
    );
    let out = translate(&req);
    assert!(find(&out, "h_sum").is_empty());
    assert_eq!(find(&out, "h_count").len(), 1);
}

#[test]
fn summary_becomes_quantiles_sum_count() {
    let p = SummaryDataPoint {
        time_unix_nano: T,
        count: 4,
        sum: 8.0,
        quantile_values: vec![
            summary_data_point::ValueAtQuantile { quantile: 0.5, value: 1.5 },
            summary_data_point::ValueAtQuantile { quantile: 0.99, value: 3.0 },
        ],
        ..Default::default()
    };
    let req = request(svc(), vec![metric("rpc.latency", "ms", Data::Summary(Summary { data_points: vec![p] }))]);
    let out = translate(&req);
    let q = find(&out, "rpc_latency_milliseconds");
    assert_eq!(q.len(), 2);
    assert!(labels_str(&q[1]).contains("quantile=0.99"));
    assert_eq!(find(&out, "rpc_latency_milliseconds_sum")[0].samples[0].value, 8.0);
    assert_eq!(find(&out, "rpc_latency_milliseconds_count")[0].samples[0].value, 4.0);
}

#[test]
fn target_info_has_non_identifying_resource_attributes() {
    let req = request(svc(), vec![metric("g", "", Data::Gauge(Gauge { data_points: vec![number(T, 1.0, vec![])] }))]);
    let out = translate(&req);
    let ti = find(&out, "target_info");
    assert_eq!(ti.len(), 1);
    assert_eq!(labels_str(&ti[0]), "__name__=target_info,deployment_environment_name=prod,instance=i-1,job=demo/shop");
    assert_eq!(ti[0].samples, vec![Sample { value: 1.0, timestamp: T_MS }]);
    // No other attributes → no target_info.
    let req = request(
        vec![kv("service.name", "x")],
        vec![metric("g", "", Data::Gauge(Gauge { data_points: vec![number(T, 1.0, vec![])] }))],
    );
    assert!(find(&translate(&req), "target_info").is_empty());
    // job is service.name alone without a namespace.
    let out = translate(&req);
    assert!(labels_str(&find(&out, "g")[0]).contains("job=x"));
}

#[test]
fn promoted_resource_attributes_become_labels_but_point_attributes_win() {
    let cfg = TranslatorConfig {
        promote_resource_attributes: vec!["deployment.environment.name".into()],
        ..Default::default()
    };
    let req = request(
        svc(),
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![
                    number(T, 1.0, vec![]),
                    number(T, 2.0, vec![kv("deployment.environment.name", "override")]),
                ],
            }),
        )],
    );
    let out = Translator::new(cfg).translate(&req, 0);
    let g = find(&out, "g");
    assert!(labels_str(&g[0]).contains("deployment_environment_name=prod"));
    assert!(labels_str(&g[1]).contains("deployment_environment_name=override"));
}

#[test]
fn colliding_attribute_names_are_joined() {
    let req = request(
        svc(),
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge { data_points: vec![number(T, 1.0, vec![kv("a.b", "x"), kv("a_b", "y")])] }),
        )],
    );
    let out = translate(&req);
    assert!(labels_str(&find(&out, "g")[0]).contains("a_b=x;y"), "{}", labels_str(&find(&out, "g")[0]));
}

#[test]
fn delta_sums_and_histograms_become_cumulative() {
    let mut tr = Translator::new(TranslatorConfig::default());
    let mk = |t: u64, v: f64| {
        request(svc(), vec![metric("orders", "", sum(vec![number(t, v, vec![])], true, AggregationTemporality::Delta))])
    };
    let a = tr.translate(&mk(T, 3.0), 0);
    let b = tr.translate(&mk(T + 5_000_000_000, 2.0), 0);
    assert_eq!(find(&a, "orders_total")[0].samples[0].value, 3.0);
    assert_eq!(find(&b, "orders_total")[0].samples[0].value, 5.0);
    // A repeated (out-of-order) delta is rejected, not double-counted.
    let c = tr.translate(&mk(T + 5_000_000_000, 2.0), 0);
    assert!(find(&c, "orders_total").is_empty());
    assert_eq!(c.stats.rejected_by_reason.get("delta_out_of_order"), Some(&1));

    let hist = |t: u64, counts: Vec<u64>, count: u64, s: f64| {
        request(
            svc(),
            vec![metric(
                "lat",
                "s",
                Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        time_unix_nano: t,
                        count,
                        sum: Some(s),
                        bucket_counts: counts,
                        explicit_bounds: vec![1.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                }),
            )],
        )
    };
    tr.translate(&hist(T, vec![1, 1], 2, 3.0), 0);
    let h = tr.translate(&hist(T + 1_000_000_000, vec![2, 0], 2, 1.0), 0);
    let b: Vec<f64> = find(&h, "lat_seconds_bucket").iter().map(|t| t.samples[0].value).collect();
    assert_eq!(b, vec![3.0, 4.0]);
    assert_eq!(find(&h, "lat_seconds_sum")[0].samples[0].value, 4.0);
    assert_eq!(find(&h, "lat_seconds_count")[0].samples[0].value, 4.0);
}

#[test]
fn no_recorded_value_becomes_a_stale_marker() {
    let mut p = number(T, 1.0, vec![]);
    p.flags = FLAG_NO_RECORDED_VALUE;
    p.value = None;
    let req = request(svc(), vec![metric("g", "", Data::Gauge(Gauge { data_points: vec![p] }))]);
    let out = translate(&req);
    assert!(crate::is_stale_nan(find(&out, "g")[0].samples[0].value));
    // An ordinary NaN gauge is kept but never confused with the marker.
    let req = request(
        svc(),
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge { data_points: vec![number(T, f64::from_bits(crate::STALE_NAN_BITS), vec![])] }),
        )],
    );
    let v = find(&translate(&req), "g")[0].samples[0].value;
    assert!(v.is_nan() && !crate::is_stale_nan(v));
}

#[test]
fn bad_points_are_rejected_with_messages() {
    let mut no_ts = number(0, 1.0, vec![]);
    no_ts.time_unix_nano = 0;
    let req = request(
        svc(),
        vec![
            metric("", "", Data::Gauge(Gauge { data_points: vec![number(T, 1.0, vec![])] })),
            metric("c", "", sum(vec![number(T, f64::INFINITY, vec![])], true, AggregationTemporality::Cumulative)),
            metric("g", "", Data::Gauge(Gauge { data_points: vec![no_ts, number(T, 1.0, vec![kv("", "v")])] })),
            metric("u", "", sum(vec![number(T, 1.0, vec![])], true, AggregationTemporality::Unspecified)),
            metric(
                "h",
                "",
                Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        time_unix_nano: T,
                        bucket_counts: vec![1, 2, 3],
                        explicit_bounds: vec![1.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            ),
            metric(
                "e",
                "",
                Data::ExponentialHistogram(strata_proto::otlp::metrics::v1::ExponentialHistogram {
                    data_points: vec![Default::default()],
                    aggregation_temporality: 2,
                }),
            ),
            metric("ok", "", Data::Gauge(Gauge { data_points: vec![number(T, 1.0, vec![])] })),
        ],
    );
    let out = translate(&req);
    assert_eq!(out.stats.data_points, 8);
    assert_eq!(out.stats.rejected_points, 7);
    for reason in [
        "invalid_metric_name",
        "non_finite_counter",
        "missing_timestamp",
        "invalid_label_name",
        "unspecified_temporality",
        "invalid_histogram",
        "exponential_histogram_unsupported",
    ] {
        assert_eq!(out.stats.rejected_by_reason.get(reason), Some(&1), "{reason}");
    }
    assert_eq!(find(&out, "ok").len(), 1);
    assert!(out.rejection_message().contains("\"c\""));
}

#[test]
fn external_labels_override_and_empty_values_are_dropped() {
    let cfg = TranslatorConfig {
        external_labels: vec![("job".into(), "forced".into()), ("environment".into(), "prod".into())],
        ..Default::default()
    };
    let req = request(
        svc(),
        vec![metric("g", "", Data::Gauge(Gauge { data_points: vec![number(T, 1.0, vec![kv("empty", "")])] }))],
    );
    let out = Translator::new(cfg).translate(&req, 0);
    let g = find(&out, "g");
    let s = labels_str(&g[0]);
    assert!(s.contains("environment=prod") && s.contains("job=forced") && !s.contains("empty"), "{s}");
    // target_info gets them too.
    assert!(labels_str(&find(&out, "target_info")[0]).contains("environment=prod"));
}

#[test]
fn borrowed_label_names_match_the_sanitizer() {
    for key in ["a", "http_route", "__x", "_x", "9x", "a.b", "A_b9", "é", "_", "__"] {
        let unchanged = label_name_unchanged(key);
        assert_eq!(unchanged, label_name(key).as_deref() == Some(key), "{key}");
    }
}
