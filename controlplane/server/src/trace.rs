//! Logs and traces of every Strata binary.
//!
//! [`init`] installs the log output (stderr, filtered by `--log.level`)
//! and — only when an OTLP endpoint is configured with the standard
//! variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_TRACES_EXPORTER=none` or
//! `OTEL_SDK_DISABLED=true` turn it off) — a span exporter (OTLP/HTTP
//! protobuf, batched on its own thread; `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_HEADERS` are honoured). Off by default: nothing is
//! exported and the spans cost one disabled-callsite check each.
//!
//! Only Strata's own spans (targets `strata*`, level INFO and above) are
//! exported, not its dependencies'. Context crosses processes as W3C
//! `traceparent` headers: HTTP and gRPC servers continue a caller's trace
//! ([`continue_from`]), gRPC clients built with [`TraceInjector`] send the
//! current span's.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("invalid --log.level: {0}")]
    LogLevel(String),
    #[error("tracing: {0}")]
    Exporter(String),
}

/// Flushes and stops the span exporter when dropped (keep it alive for
/// the whole of `main`, outside the async runtime).
#[must_use = "spans are flushed when the guard is dropped"]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether the environment asks for span export.
pub fn export_configured() -> bool {
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return false;
    }
    if std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none") {
        return false;
    }
    env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
}

fn strata_spans(m: &tracing::Metadata<'_>) -> bool {
    m.target().starts_with("strata") && *m.level() <= tracing::Level::INFO
}

/// Installs logging and, when configured, span export for the process
/// `service` (`strata-ingester`, `strata-agent`, …; `OTEL_SERVICE_NAME`
/// wins). Call once, before the runtime starts.
pub fn init(service: &str, log_level: &str) -> Result<Tracing, TraceError> {
    let filter = tracing_subscriber::EnvFilter::try_new(log_level).map_err(|e| TraceError::LogLevel(e.to_string()))?;
    let logs = tracing_subscriber::fmt::layer().with_filter(filter);
    if !export_configured() {
        let _ = tracing_subscriber::registry().with(logs).try_init();
        return Ok(Tracing { provider: None });
    }
    for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Ok(p) = std::env::var(var) {
            if !p.trim().is_empty() && p.trim() != "http/protobuf" {
                return Err(TraceError::Exporter(format!("{var}={p}: only http/protobuf is supported")));
            }
            break;
        }
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        // Both encodings are compiled in (the sample API exports JSON too):
        // protobuf is the OTLP/HTTP default.
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))?;
    let name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|n| !n.trim().is_empty()).unwrap_or(service.to_string());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(name).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("strata"))
        .with_filter(tracing_subscriber::filter::filter_fn(strata_spans));
    let _ = tracing_subscriber::registry().with(logs).with(otel).try_init();
    Ok(Tracing { provider: Some(provider) })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Makes `span` a child of the trace a caller sent in `headers`
/// (`traceparent`), if any.
pub fn continue_from(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.contains_key("traceparent") {
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let _ = span.set_parent(cx);
    }
}

/// A tonic client interceptor sending the current span's context
/// (`traceparent`) with every call:
/// `StoreClient::with_interceptor(channel, TraceInjector)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceInjector;

impl tonic::service::Interceptor for TraceInjector {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let cx = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(req.metadata_mut()));
        Ok(req)
    }
}

/// A tonic channel whose calls carry the current trace context.
pub type TracedChannel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TraceInjector>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_header_is_continued() {
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(&h));
        use opentelemetry::trace::TraceContextExt;
        let sc = cx.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote());
    }
}
