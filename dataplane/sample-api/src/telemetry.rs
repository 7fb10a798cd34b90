//! OpenTelemetry SDK setup and the shop's instruments.
//!
//! The exporter follows the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, `http/protobuf`, `http/json`),
//! `OTEL_METRIC_EXPORT_INTERVAL` (ms), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`.

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _, UpDownCounter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::breaker::CircuitBreaker;

/// Duration buckets recommended by the HTTP semantic conventions.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
const SIZE_BUCKETS: [f64; 8] = [0.0, 100.0, 1000.0, 10_000.0, 100_000.0, 1e6, 1e7, 1e8];

pub struct ShopMetrics {
    pub request_duration: Histogram<f64>,
    pub active_requests: UpDownCounter<i64>,
    pub request_body_size: Histogram<u64>,
    pub response_body_size: Histogram<u64>,
    pub orders_created: Counter<u64>,
    pub payments: Counter<u64>,
    pub cache_hits: Counter<u64>,
    pub cache_misses: Counter<u64>,
}

impl ShopMetrics {
    pub fn new(meter: &Meter, breaker: Arc<CircuitBreaker>) -> Self {
        let _state = meter
            .i64_observable_gauge("circuit_breaker.state")
            .with_description("Payment provider circuit breaker: 0 closed, 1 open, 2 half-open")
            .with_unit("{state}")
            .with_callback(move |obs| {
                let s = breaker.state();
                obs.observe(s.as_gauge(), &[KeyValue::new("breaker", "payment_provider")]);
            })
            .build();
        ShopMetrics {
            request_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_description("Duration of HTTP server requests.")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            active_requests: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_description("Number of active HTTP server requests.")
                .with_unit("{request}")
                .build(),
            request_body_size: meter
                .u64_histogram("http.server.request.body.size")
                .with_description("Size of HTTP server request bodies.")
                .with_unit("By")
                .with_boundaries(SIZE_BUCKETS.to_vec())
                .build(),
            response_body_size: meter
                .u64_histogram("http.server.response.body.size")
                .with_description("Size of HTTP server response bodies.")
                .with_unit("By")
                .with_boundaries(SIZE_BUCKETS.to_vec())
                .build(),
            orders_created: meter
                .u64_counter("shop.orders.created")
                .with_description("Orders created.")
                .with_unit("{order}")
                .build(),
            payments: meter
                .u64_counter("shop.payments")
                .with_description("Payment attempts by outcome (success, failed, circuit_open).")
                .with_unit("{payment}")
                .build(),
            cache_hits: meter
                .u64_counter("shop.cache.hits")
                .with_description("Product cache hits.")
                .with_unit("{hit}")
                .build(),
            cache_misses: meter
                .u64_counter("shop.cache.misses")
                .with_description("Product cache misses.")
                .with_unit("{miss}")
                .build(),
        }
    }
}

/// Builds the meter provider. Must run inside a Tokio runtime (gRPC exporter).
pub fn init(instance_id: &str) -> anyhow::Result<SdkMeterProvider> {
    let exporter = opentelemetry_otlp::MetricExporter::builder().build()?;
    let reader = PeriodicReader::builder(exporter).build();
    let mut resource = Resource::builder().with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if std::env::var("OTEL_SERVICE_NAME").map(|s| s.is_empty()).unwrap_or(true) {
        resource = resource.with_service_name("sample-api");
    }
    let from_env = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    if !from_env.contains("service.instance.id=") {
        resource = resource.with_attribute(KeyValue::new("service.instance.id", instance_id.to_string()));
    }
    // Env-provided attributes are detected by Resource::builder() and win.
    let resource = resource.build();
    let provider = SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build();
    Ok(provider)
}

pub fn meter(provider: &SdkMeterProvider) -> Meter {
    provider.meter("sample-api")
}
