//! Request metrics by route, one wrapper around every handler (as
//! Prometheus' `web/api/v1` instruments its handlers).

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::registry::Registry;
use strata_telemetry::HttpFamilies;

/// `strata_http_requests_total{handler,method,code}`,
/// `strata_http_request_duration_seconds{handler,method}` and
/// `strata_http_requests_in_flight` of a process' servers, `handler` being
/// the route pattern (`/api/v1/query`, `/api/v1/label/{name}/values`;
/// `other` for paths no route matched, so scanners cannot create series).
#[derive(Clone)]
pub struct HttpMetrics {
    families: HttpFamilies,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics::global()
    }
}

impl HttpMetrics {
    /// The process' families, rendered by [`crate::process::append`]
    /// (every server of a binary shares them; `handler` tells them apart).
    pub fn global() -> HttpMetrics {
        HttpMetrics { families: strata_telemetry::global().http().clone() }
    }

    /// Families of their own (tests).
    pub fn new() -> HttpMetrics {
        HttpMetrics { families: HttpFamilies::default() }
    }

    /// Registers families of their own in `registry` (the process' are
    /// rendered by [`crate::process::append`]).
    pub fn register(&self, registry: &mut Registry) {
        self.families.register(registry);
    }

    /// `router` with every request counted and timed by route ([`crate::serve`]
    /// applies it outside its limits when given the metrics).
    pub fn instrument(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), observe))
    }

    /// Requests counted so far for `handler` and `method` with `code`.
    pub fn count(&self, handler: &str, method: &str, code: u16) -> u64 {
        self.families.count(handler, method, code)
    }
}

/// Methods outside this list count as `other` (a client cannot make series).
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Routes probed and scraped every few seconds: no spans.
fn is_probe(handler: &str) -> bool {
    matches!(handler, "/metrics" | "/-/ready" | "/-/healthy")
}

async fn observe(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let handler =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "other".into());
    let method = method_label(req.method());
    let span = if is_probe(&handler) {
        tracing::Span::none()
    } else {
        let span = tracing::info_span!(
            target: "strata_server::http",
            "http",
            otel.name = format!("{method} {handler}"),
            otel.kind = "server",
            http.request.method = method,
            http.route = handler.as_str(),
            http.response.status_code = tracing::field::Empty,
        );
        crate::trace::continue_from(&span, req.headers());
        span
    };
    let started = Instant::now();
    m.families.in_flight.inc();
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    m.families.in_flight.dec();
    m.families.observe(&handler, method, resp.status().as_u16(), started.elapsed());
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
        assert_eq!(m.count("/api/v1/label/{name}/values", "GET", 200), 2);
        assert_eq!(m.count("/fail", "GET", 400), 1);
        let mut registry = Registry::with_prefix("strata_test");
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(r#"strata_test_http_requests_total{handler="/fail",method="GET",code="400"} 1"#),
            "{text}"
        );
        assert!(text.contains("strata_test_http_requests_in_flight 0"), "{text}");
        // Unmatched paths share one series.
        assert!(!text.contains("/nope"), "{text}");
    }
}
