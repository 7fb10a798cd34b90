//! Request metrics by route, one wrapper around every handler (as
//! Prometheus' `web/api/v1` instruments its handlers).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    handler: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    handler: String,
}

/// `http_requests_total{handler,code}`, `http_request_duration_seconds{handler}`
/// and `http_requests_in_flight` of one server, `handler` being the route
/// pattern (`/api/v1/query`, `/api/v1/label/{name}/values`; `other` for
/// paths no route matched, so scanners cannot create series).
#[derive(Clone)]
pub struct HttpMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    requests: Family<RequestLabels, Counter>,
    duration: Family<HandlerLabels, Histogram>,
    in_flight: Gauge,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics::new()
    }
}

impl HttpMetrics {
    pub fn new() -> HttpMetrics {
        HttpMetrics {
            inner: Arc::new(Inner {
                requests: Family::default(),
                duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 18))),
                in_flight: Gauge::default(),
            }),
        }
    }

    /// Registers the metrics in `registry` (under its prefix, e.g.
    /// `strata_ingester_http_requests_total`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests by route and status code (503s from the server's limits included)",
            self.inner.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route, until the response head",
            self.inner.duration.clone(),
        );
        registry.register("http_requests_in_flight", "HTTP requests being served", self.inner.in_flight.clone());
    }

    /// `router` with every request counted and timed by route ([`crate::serve`]
    /// applies it outside its limits when given the metrics).
    pub fn instrument(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), observe))
    }

    /// Requests counted so far for `handler` with `code` (for tests).
    pub fn count(&self, handler: &str, code: u16) -> u64 {
        self.inner.requests.get_or_create(&RequestLabels { handler: handler.into(), code: code.to_string() }).get()
    }
}

async fn observe(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let handler =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "other".into());
    let started = Instant::now();
    m.inner.in_flight.inc();
    let resp = next.run(req).await;
    m.inner.in_flight.dec();
    m.inner
        .duration
        .get_or_create(&HandlerLabels { handler: handler.clone() })
        .observe(started.elapsed().as_secs_f64());
    m.inner.requests.get_or_create(&RequestLabels { handler, code: resp.status().as_u16().to_string() }).inc();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn requests_are_counted_by_route_pattern_and_code() {
        let m = HttpMetrics::new();
        let app = m.instrument(
            Router::new()
                .route("/api/v1/label/{name}/values", get(|| async { "[]" }))
                .route("/fail", get(|| async { (axum::http::StatusCode::BAD_REQUEST, "no") })),
        );
        for uri in ["/api/v1/label/job/values", "/api/v1/label/env/values", "/fail", "/nope"] {
            let _ = app
                .clone()
                .oneshot(Request::builder().uri(uri).body(axum::body::Body::empty()).expect("request"))
                .await;
        }
        assert_eq!(m.count("/api/v1/label/{name}/values", 200), 2);
        assert_eq!(m.count("/fail", 400), 1);
        let mut registry = Registry::with_prefix("strata_test");
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains(r#"strata_test_http_requests_total{handler="/fail",code="400"} 1"#), "{text}");
        assert!(text.contains("strata_test_http_requests_in_flight 0"), "{text}");
        // Unmatched paths share one series.
        assert!(!text.contains("/nope"), "{text}");
    }
}
