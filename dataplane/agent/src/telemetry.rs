//! The agent's own metrics, served at `/metrics` on `--web.listen-address`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub type Labels = Vec<(String, String)>;

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub struct AgentMetrics {
    registry: Registry,
    pub otlp_requests: Family<Labels, Counter>,
    pub datapoints_received: Counter,
    pub datapoints_rejected: Family<Labels, Counter>,
    pub datapoints_refused: Family<Labels, Counter>,
    pub samples_queued: Counter,
    pub queue_records: Counter,
    pub queue_pending_bytes: Gauge<u64, AtomicU64>,
    pub queue_disk_bytes: Gauge<u64, AtomicU64>,
    pub queue_oldest_age_seconds: Gauge<f64, AtomicU64>,
    pub queue_corrupt_records: Gauge<u64, AtomicU64>,
    pub samples_sent: Family<Labels, Counter>,
    pub samples_retried: Family<Labels, Counter>,
    pub samples_failed: Family<Labels, Counter>,
    pub requests_sent: Family<Labels, Counter>,
    pub send_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pub delta_streams: Gauge<u64, AtomicU64>,
    /// Requests of the OTLP/HTTP and web servers by route (`strata_http_*`, process-wide).
    pub http: strata_server::HttpMetrics,
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("strata_agent");
        let otlp_requests = Family::<Labels, Counter>::default();
        r.register("otlp_requests", "OTLP export requests by receiver protocol and outcome", otlp_requests.clone());
        let datapoints_received = Counter::default();
        r.register("datapoints_received", "OTLP data points received", datapoints_received.clone());
        let datapoints_rejected = Family::<Labels, Counter>::default();
        r.register(
            "datapoints_rejected",
            "OTLP data points rejected (dropped) by reason; returned to senders as partial success",
            datapoints_rejected.clone(),
        );
        let datapoints_refused = Family::<Labels, Counter>::default();
        r.register(
            "datapoints_refused",
            "OTLP data points refused with a retryable error (the sender keeps them) by reason",
            datapoints_refused.clone(),
        );
        let samples_queued = Counter::default();
        r.register("samples_queued", "Prometheus samples written to the disk queue", samples_queued.clone());
        let queue_records = Counter::default();
        r.register("queue_records_appended", "Records appended to the disk queue", queue_records.clone());
        let queue_pending_bytes = Gauge::<u64, AtomicU64>::default();
        r.register(
            "queue_bytes",
            "Bytes in the disk queue not yet sent by the slowest endpoint",
            queue_pending_bytes.clone(),
        );
        let queue_disk_bytes = Gauge::<u64, AtomicU64>::default();
        r.register("queue_disk_bytes", "Bytes of queue segment files on disk", queue_disk_bytes.clone());
        let queue_oldest_age_seconds = Gauge::<f64, AtomicU64>::default();
        r.register(
            "queue_oldest_age_seconds",
            "Age of the oldest record not yet sent (0 when the queue is drained)",
            queue_oldest_age_seconds.clone(),
        );
        let queue_corrupt_records = Gauge::<u64, AtomicU64>::default();
        r.register("queue_corrupt_records", "Corrupt queue records skipped since start", queue_corrupt_records.clone());
        let samples_sent = Family::<Labels, Counter>::default();
        r.register("samples_sent", "Samples acknowledged by a remote write endpoint", samples_sent.clone());
        let samples_retried = Family::<Labels, Counter>::default();
        r.register("samples_retried", "Samples re-sent after a retryable failure", samples_retried.clone());
        let samples_failed = Family::<Labels, Counter>::default();
        r.register(
            "samples_failed",
            "Samples dropped because the endpoint rejected them with a non-retryable status",
            samples_failed.clone(),
        );
        let requests_sent = Family::<Labels, Counter>::default();
        r.register(
            "remote_write_requests",
            "Remote write requests by endpoint, protocol and status",
            requests_sent.clone(),
        );
        let send_duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        r.register("send_duration_seconds", "Remote write request latency", send_duration.clone());
        let delta_streams = Gauge::<u64, AtomicU64>::default();
        r.register("delta_streams", "Delta streams being converted to cumulative", delta_streams.clone());
        let http = strata_server::HttpMetrics::global();
        AgentMetrics {
            http,
            registry: r,
            otlp_requests,
            datapoints_received,
            datapoints_rejected,
            datapoints_refused,
            samples_queued,
            queue_records,
            queue_pending_bytes,
            queue_disk_bytes,
            queue_oldest_age_seconds,
            queue_corrupt_records,
            samples_sent,
            samples_retried,
            samples_failed,
            requests_sent,
            send_duration,
            delta_streams,
        }
    }

    pub fn otlp_request(&self, protocol: &str, outcome: &str) {
        self.otlp_requests.get_or_create(&l(&[("protocol", protocol), ("outcome", outcome)])).inc();
    }

    pub fn endpoint(&self, endpoint: &str) -> Labels {
        l(&[("endpoint", endpoint)])
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        strata_server::process::append(&mut out);
        out
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}
