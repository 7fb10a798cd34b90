//! The metrics every Strata process serves about itself, under one set of
//! names whatever the component (the `job` label tells them apart):
//!
//! - `strata_http_requests_total{handler,method,code}`,
//!   `strata_http_request_duration_seconds{handler,method}`,
//!   `strata_http_requests_in_flight` ([`HttpFamilies`]; the server layer
//!   observes every route);
//! - `strata_grpc_server_handled_total{grpc_service,grpc_method,grpc_code}`,
//!   `strata_grpc_server_handling_seconds{grpc_service,grpc_method}`,
//!   `strata_grpc_server_in_flight` (StoreAPI, Raft, forwarded writes, OTLP);
//! - `strata_objstore_operations_total{operation,result}`,
//!   `strata_objstore_operation_duration_seconds{operation}`,
//!   `strata_objstore_bytes_total{operation}` (every bucket request);
//! - `strata_background_runs_total{worker,result}`,
//!   `strata_background_run_duration_seconds{worker}`,
//!   `strata_background_last_success_timestamp_seconds{worker}` (cuts,
//!   spills, uploads, snapshots, store syncs, compactions).
//!
//! One process runs one component, so the families are process-wide, as
//! Prometheus' default registry is: [`global`] holds them and [`encode`]
//! renders them into a `/metrics` page. Label values come from code (route
//! patterns, method names, worker names), never from requests, so the
//! series count is bounded.
//!
//! `STRATA_SELF_METRICS=off` in the environment stops the recording (the
//! families stay, without series): it exists to measure what the
//! instrumentation costs (loadgen/bench/instrumentation.sh), not for
//! production.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub handler: String,
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRouteLabels {
    pub handler: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcMethodLabels {
    grpc_service: String,
    grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationResultLabels {
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerResultLabels {
    worker: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: &'static str,
}

/// Request latency buckets: 0.5 ms to ~65 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// HTTP request families: one set per process ([`Telemetry::http`]) or
/// one per test.
#[derive(Clone)]
pub struct HttpFamilies {
    pub requests: Family<HttpLabels, Counter>,
    pub duration: Family<HttpRouteLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Gauge,
}

impl Default for HttpFamilies {
    fn default() -> Self {
        HttpFamilies {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency),
            in_flight: Gauge::default(),
        }
    }
}

impl HttpFamilies {
    /// Registers the families under `registry`'s prefix (`strata_` for the
    /// process' own).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests by route pattern, method and status code (refusals by the server's limits and auth included)",
            self.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route pattern and method, until the response head",
            self.duration.clone(),
        );
        registry.register("http_requests_in_flight", "HTTP requests being served", self.in_flight.clone());
    }

    pub fn observe(&self, handler: &str, method: &str, code: u16, elapsed: Duration) {
        if !recording() {
            return;
        }
        let route = HttpRouteLabels { handler: handler.to_string(), method: method.to_string() };
        self.duration.get_or_create(&route).observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&HttpLabels { handler: route.handler, method: route.method, code: code.to_string() })
            .inc();
    }

    /// Requests counted so far for `handler` and `method` with `code`.
    pub fn count(&self, handler: &str, method: &str, code: u16) -> u64 {
        self.requests
            .get_or_create(&HttpLabels { handler: handler.into(), method: method.into(), code: code.to_string() })
            .get()
    }
}

/// The process' self-metrics (see the crate documentation).
pub struct Telemetry {
    registry: Registry,
    http: HttpFamilies,
    grpc_handled: Family<GrpcLabels, Counter>,
    grpc_duration: Family<GrpcMethodLabels, Histogram, fn() -> Histogram>,
    grpc_in_flight: Gauge,
    objstore_ops: Family<OperationResultLabels, Counter>,
    objstore_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    objstore_bytes: Family<OperationLabels, Counter>,
    background_runs: Family<WorkerResultLabels, Counter>,
    background_duration: Family<WorkerLabels, Histogram, fn() -> Histogram>,
    background_last_success: Family<WorkerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Telemetry {
    fn new() -> Telemetry {
        let mut registry = Registry::with_prefix("strata");
        let t = Telemetry {
            registry: Registry::default(),
            http: HttpFamilies::default(),
            grpc_handled: Family::default(),
            grpc_duration: Family::new_with_constructor(latency),
            grpc_in_flight: Gauge::default(),
            objstore_ops: Family::default(),
            objstore_duration: Family::new_with_constructor(latency),
            objstore_bytes: Family::default(),
            background_runs: Family::default(),
            background_duration: Family::new_with_constructor(latency),
            background_last_success: Family::default(),
        };
        t.http.register(&mut registry);
        registry.register(
            "grpc_server_handled",
            "gRPC calls completed by service, method and status code",
            t.grpc_handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "gRPC call latency by service and method, until the last message and status",
            t.grpc_duration.clone(),
        );
        registry.register("grpc_server_in_flight", "gRPC calls being served", t.grpc_in_flight.clone());
        registry.register(
            "objstore_operations",
            "Object-storage operations by kind and result (success or error)",
            t.objstore_ops.clone(),
        );
        registry.register(
            "objstore_operation_duration_seconds",
            "Object-storage operation latency by kind (get: until the response head)",
            t.objstore_duration.clone(),
        );
        registry.register(
            "objstore_bytes",
            "Bytes moved by object-storage operations (put: written, get: read)",
            t.objstore_bytes.clone(),
        );
        registry.register(
            "background_runs",
            "Runs of background workers by worker and result (success or error)",
            t.background_runs.clone(),
        );
        registry.register(
            "background_run_duration_seconds",
            "Duration of background worker runs",
            t.background_duration.clone(),
        );
        registry.register(
            "background_last_success_timestamp_seconds",
            "Unix time of each background worker's last successful run",
            t.background_last_success.clone(),
        );
        Telemetry { registry, ..t }
    }

    /// The HTTP families the process' servers share.
    pub fn http(&self) -> &HttpFamilies {
        &self.http
    }

    /// A gRPC call started: the returned guard is recorded with its status
    /// code by [`GrpcCall::finish`] (or as `Canceled` when dropped first;
    /// Go's code names, as grpc-ecosystem's metrics use).
    pub fn grpc_call(&'static self, service: &str, method: &str) -> GrpcCall {
        if !recording() {
            return GrpcCall { t: self, labels: GrpcMethodLabels::default(), started: Instant::now(), done: true };
        }
        self.grpc_in_flight.inc();
        GrpcCall {
            t: self,
            labels: GrpcMethodLabels { grpc_service: service.to_string(), grpc_method: method.to_string() },
            started: Instant::now(),
            done: false,
        }
    }

    /// Records one object-storage operation.
    pub fn objstore(&self, operation: &'static str, ok: bool, elapsed: Duration, bytes: u64) {
        if !recording() {
            return;
        }
        let result = if ok { "success" } else { "error" };
        self.objstore_ops.get_or_create(&OperationResultLabels { operation, result }).inc();
        self.objstore_duration.get_or_create(&OperationLabels { operation }).observe(elapsed.as_secs_f64());
        if bytes > 0 {
            self.objstore_bytes.get_or_create(&OperationLabels { operation }).inc_by(bytes);
        }
    }

    /// Records one run of a background worker.
    pub fn background(&self, worker: &'static str, ok: bool, elapsed: Duration) {
        if !recording() {
            return;
        }
        let result = if ok { "success" } else { "error" };
        self.background_runs.get_or_create(&WorkerResultLabels { worker, result }).inc();
        self.background_duration.get_or_create(&WorkerLabels { worker }).observe(elapsed.as_secs_f64());
        if ok {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            self.background_last_success.get_or_create(&WorkerLabels { worker }).set(now);
        }
    }

    /// Operations of `operation` with `ok`'s result so far (tests, checks).
    pub fn objstore_count(&self, operation: &'static str, ok: bool) -> u64 {
        let result = if ok { "success" } else { "error" };
        self.objstore_ops.get_or_create(&OperationResultLabels { operation, result }).get()
    }

    /// Runs of `worker` with `ok`'s result so far.
    pub fn background_count(&self, worker: &'static str, ok: bool) -> u64 {
        let result = if ok { "success" } else { "error" };
        self.background_runs.get_or_create(&WorkerResultLabels { worker, result }).get()
    }
}

/// One gRPC call being served (see [`Telemetry::grpc_call`]).
pub struct GrpcCall {
    t: &'static Telemetry,
    labels: GrpcMethodLabels,
    started: Instant,
    done: bool,
}

impl GrpcCall {
    /// Records the call with its status code name (`OK`, `Unavailable`, …).
    pub fn finish(mut self, code: &str) {
        self.record(code);
    }

    fn record(&mut self, code: &str) {
        if self.done {
            return;
        }
        self.done = true;
        if !recording() {
            return;
        }
        self.t.grpc_in_flight.dec();
        // Paths come from clients: one nobody serves counts as `other`.
        if code == "Unimplemented" {
            self.labels = GrpcMethodLabels { grpc_service: "other".into(), grpc_method: "other".into() };
        }
        self.t.grpc_duration.get_or_create(&self.labels).observe(self.started.elapsed().as_secs_f64());
        self.t
            .grpc_handled
            .get_or_create(&GrpcLabels {
                grpc_service: self.labels.grpc_service.clone(),
                grpc_method: self.labels.grpc_method.clone(),
                grpc_code: code.to_string(),
            })
            .inc();
    }
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        // The client went away before the status was sent.
        self.record("Canceled");
    }
}

/// Times a background run and records it when finished.
pub struct BackgroundRun {
    worker: &'static str,
    started: Instant,
}

impl BackgroundRun {
    pub fn start(worker: &'static str) -> BackgroundRun {
        BackgroundRun { worker, started: Instant::now() }
    }

    pub fn finish(self, ok: bool) {
        global().background(self.worker, ok, self.started.elapsed());
    }
}

static GLOBAL: OnceLock<Telemetry> = OnceLock::new();
static RECORDING: OnceLock<AtomicBool> = OnceLock::new();

/// False when `STRATA_SELF_METRICS=off` (read once).
fn recording() -> bool {
    RECORDING
        .get_or_init(|| AtomicBool::new(!std::env::var("STRATA_SELF_METRICS").is_ok_and(|v| v == "off")))
        .load(Ordering::Relaxed)
}

/// The process' self-metrics.
pub fn global() -> &'static Telemetry {
    GLOBAL.get_or_init(Telemetry::new)
}

/// Appends the self-metrics to a rendered `/metrics` page (before its
/// `# EOF` line when it has one).
pub fn encode(out: &mut String) {
    let eof = out.ends_with("# EOF\n");
    if eof {
        out.truncate(out.len() - "# EOF\n".len());
    }
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode_registry(&mut text, &global().registry);
    out.push_str(&text);
    if eof {
        out.push_str("# EOF\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_renders_under_the_strata_prefix() {
        let t = global();
        t.http().observe("/api/v1/query", "GET", 200, Duration::from_millis(3));
        t.grpc_call("strata.store.Store", "Series").finish("OK");
        drop(t.grpc_call("strata.store.Store", "Series"));
        t.grpc_call("x.Scanner", "Probe1").finish("Unimplemented");
        t.objstore("put", true, Duration::from_millis(2), 1234);
        t.objstore("get", false, Duration::from_millis(1), 0);
        BackgroundRun::start("upload").finish(true);
        let mut out = String::from("# TYPE x gauge\nx 1\n# EOF\n");
        encode(&mut out);
        for want in [
            r#"strata_http_requests_total{handler="/api/v1/query",method="GET",code="200"} 1"#,
            r#"strata_http_request_duration_seconds_count{handler="/api/v1/query",method="GET"} 1"#,
            "strata_http_requests_in_flight 0",
            r#"strata_grpc_server_handled_total{grpc_service="strata.store.Store",grpc_method="Series",grpc_code="OK"} 1"#,
            r#"strata_grpc_server_handled_total{grpc_service="strata.store.Store",grpc_method="Series",grpc_code="Canceled"} 1"#,
            r#"strata_grpc_server_handled_total{grpc_service="other",grpc_method="other",grpc_code="Unimplemented"} 1"#,
            "strata_grpc_server_in_flight 0",
            r#"strata_objstore_operations_total{operation="put",result="success"} 1"#,
            r#"strata_objstore_operations_total{operation="get",result="error"} 1"#,
            r#"strata_objstore_bytes_total{operation="put"} 1234"#,
            r#"strata_background_runs_total{worker="upload",result="success"} 1"#,
            r#"strata_background_run_duration_seconds_count{worker="upload"} 1"#,
            r#"strata_background_last_success_timestamp_seconds{worker="upload"} "#,
        ] {
            assert!(out.contains(want), "{want} missing:\n{out}");
        }
        assert!(out.ends_with("# EOF\n") && out.matches("# EOF").count() == 1, "{out}");
    }
}
