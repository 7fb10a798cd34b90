//! `strata query-frontend`: the query frontend of [`crate::query_frontend`]
//! as a process of its own in front of several queriers (the shape of
//! Cortex's and Thanos' query-frontend). Range queries are split at
//! `--query.split-interval`, each split answered from the results cache
//! (in process, or memcached shared by several frontends) or sent to the
//! queriers, round-robin, as an ordinary `query_range` call; the queriers'
//! JSON answers are parsed back and joined. Every other request goes to a
//! querier unchanged.
//!
//! Exactness: the queriers print every float in its shortest round-trip
//! form, so parsing the JSON back gives their values bit for bit, and the
//! joined answer is the one a querier gives for the whole range. Answers
//! holding native histograms are not split (their JSON carries bucket
//! bounds, not the bucket indexes a cached extent keeps): the whole query
//! goes to a querier and its answer is passed back as it is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use strata_promql::{Expr, Labels, QueryValue, Series};

use crate::api::{self, ApiError, Params};
use crate::query_frontend::{FrontendConfig, FrontendQuery, QueryFrontend, SplitEvaluator, depends_on_range};
use crate::query_service::{Evaluated, ServiceError};

/// Settings of `strata query-frontend`.
#[derive(Debug, Clone)]
pub struct FrontendServerConfig {
    pub web_listen: SocketAddr,
    /// Base URLs of the queriers (`--query-frontend.downstream-url`).
    pub downstream: Vec<String>,
    /// The queriers' `--query.lookback-delta`: which steps of a split read
    /// data recent enough not to be cached.
    pub lookback_delta: Duration,
    /// Longest a query may take (`--query.timeout`); the queriers get what is left.
    pub timeout: Duration,
    pub frontend: FrontendConfig,
    pub http: strata_server::HttpServerConfig,
    /// TLS of the calls to the queriers (`--http-client.tls-*`).
    pub http_client_tls: Option<strata_server::tls::TlsClientConfig>,
}

/// Headers a querier needs from the caller's request.
const FORWARDED: [&str; 4] = ["authorization", strata_model::tenant::TENANT_HEADER, "content-type", "accept"];

struct FrontendServer {
    frontend: QueryFrontend,
    queriers: Queriers,
    lookback_ms: i64,
    timeout: Duration,
    registry: Registry,
    /// Range queries passed to a querier whole (native histograms in the answer).
    unsplit: Counter,
    ready: AtomicBool,
}

/// The queriers behind the frontend, used round-robin.
struct Queriers {
    urls: Vec<String>,
    next: AtomicUsize,
    client: strata_server::http_client::HttpClient,
}

impl Queriers {
    /// Sends the request to the next querier; on a connection error, to the
    /// one after it, each at most once.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<reqwest_rustls::Response, String> {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_error = String::from("no --query-frontend.downstream-url");
        for i in 0..self.urls.len() {
            let base = &self.urls[(first + i) % self.urls.len()];
            let mut req = self.client.current().request(method.clone(), format!("{base}{path_and_query}"));
            for name in FORWARDED {
                if let Some(v) = headers.get(name) {
                    req = req.header(name, v.clone());
                }
            }
            match req.body(body.clone()).send().await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_connect() => last_error = format!("{base}: {e}"),
                Err(e) => return Err(format!("{base}: {e}")),
            }
        }
        Err(last_error)
    }
}

/// Evaluates the splits of one request by asking the queriers.
struct SplitRequests<'a> {
    server: &'a FrontendServer,
    /// The query as the caller wrote it.
    query: &'a str,
    /// The caller's other parameters (`max_source_resolution`, …), passed on.
    params: &'a [(String, String)],
    headers: &'a HeaderMap,
    /// Set when an answer held native histograms.
    histograms: &'a AtomicBool,
}

/// `ms` as seconds with three decimals (the API's timestamps).
fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let a = ms.unsigned_abs();
    format!("{sign}{}.{:03}", a / 1000, a % 1000)
}

impl SplitEvaluator for SplitRequests<'_> {
    fn evaluate<'a>(
        &'a self,
        _tenant: &'a str,
        _expr: &'a Expr,
        start: i64,
        end: i64,
        step: i64,
        deadline: Instant,
    ) -> futures::future::BoxFuture<'a, Result<Evaluated, ServiceError>> {
        // The tenant travels in the forwarded X-Scope-OrgID, the query as
        // the caller wrote it (`expr` is its parsed form).
        Box::pin(async move {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(strata_promql::Error::Timeout("query execution").into());
            }
            let mut form: Vec<(&str, String)> = vec![
                ("query", self.query.to_string()),
                ("start", seconds(start)),
                ("end", seconds(end)),
                ("step", seconds(step)),
                ("timeout", seconds(left.as_millis().max(1) as i64)),
            ];
            form.extend(self.params.iter().map(|(k, v)| (k.as_str(), v.clone())));
            let body = form_body(&form);
            let mut headers = self.headers.clone();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
            let resp = self
                .server
                .queriers
                .send(Method::POST, "/api/v1/query_range", &headers, Bytes::from(body))
                .await
                .map_err(|e| ServiceError::Downstream { status: 503, kind: "unavailable", message: e })?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.map_err(|e| ServiceError::Downstream {
                status: 503,
                kind: "unavailable",
                message: format!("reading a querier's answer: {e}"),
            })?;
            match parse_answer(status, &bytes)? {
                Parsed::Matrix(e) => Ok(e),
                Parsed::Histograms => {
                    self.histograms.store(true, Ordering::Relaxed);
                    Err(ServiceError::Internal("the answer holds native histograms".into()))
                }
            }
        })
    }
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form_body(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode(&mut out, k);
        out.push('=');
        percent_encode(&mut out, v);
    }
    out
}

fn percent_encode(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    infos: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<MatrixSeries>,
}

#[derive(serde::Deserialize)]
struct MatrixSeries {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    #[serde(default)]
    histograms: Option<serde::de::IgnoredAny>,
}

enum Parsed {
    Matrix(Evaluated),
    Histograms,
}

/// Prometheus' error types, as the API's static names.
fn error_kind(t: &str) -> &'static str {
    match t {
        "bad_data" => "bad_data",
        "execution" => "execution",
        "timeout" => "timeout",
        "canceled" => "canceled",
        "unavailable" => "unavailable",
        "not_found" => "not_found",
        _ => "internal",
    }
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// A querier's `query_range` answer (HTTP status and body).
fn parse_answer(status: u16, body: &[u8]) -> Result<Parsed, ServiceError> {
    let bad = |m: String| ServiceError::Downstream { status: 502, kind: "internal", message: m };
    let a: Answer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(bad(format!("a querier answered {status} with no API answer ({e}): {text}")));
        }
    };
    if a.status != "success" || !(200..300).contains(&status) {
        return Err(ServiceError::Downstream {
            status: if (400..600).contains(&status) { status } else { 502 },
            kind: error_kind(a.error_type.as_deref().unwrap_or("internal")),
            message: a.error.unwrap_or_else(|| format!("a querier answered {status}")),
        });
    }
    let data = a.data.ok_or_else(|| bad("a querier's answer has no data".into()))?;
    if data.result_type != "matrix" {
        return Err(bad(format!("a querier answered a range query with a {}", data.result_type)));
    }
    let mut series = Vec::with_capacity(data.result.len());
    for s in data.result {
        if s.histograms.is_some() {
            return Ok(Parsed::Histograms);
        }
        let mut samples = Vec::with_capacity(s.values.len());
        for (t, v) in s.values {
            let v = parse_float(&v).ok_or_else(|| bad(format!("a querier's answer has the value {v:?}")))?;
            samples.push(((t * 1000.0).round() as i64, v));
        }
        series.push(Series { labels: Labels::new(s.metric.into_iter().collect()), samples, histograms: Vec::new() });
    }
    Ok(Parsed::Matrix(Evaluated { value: QueryValue::Matrix(series), warnings: a.warnings, infos: a.infos, loaded: 0 }))
}

/// Passes a request to a querier and its answer back.
async fn proxy(s: &FrontendServer, method: Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let resp = match s.queriers.send(method, path_and_query, headers, body).await {
        Ok(r) => r,
        Err(e) => return ApiError::unavailable(format!("no querier answered: {e}")).into_response(),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    match resp.bytes().await {
        Ok(b) => {
            let mut r = (status, b).into_response();
            if let Some(ct) = content_type {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            r
        }
        Err(e) => ApiError::unavailable(format!("reading a querier's answer: {e}")).into_response(),
    }
}

async fn query_range(
    State(s): State<Arc<FrontendServer>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), Some(&body));
    let checked = (|| -> Result<_, ApiError> {
        let (start, end, step) = api::range_params(&p)?;
        let expr = api::parse_query(&p)?;
        Ok((start, end, step, expr, api::timeout_param(&p, s.timeout)?))
    })();
    let (start, end, step, expr, timeout) = match checked {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    if !s.frontend.splits_or_caches() || depends_on_range(&expr) {
        return proxy(&s, method, &uri, &headers, body).await;
    }
    let params: Vec<(String, String)> = p
        .pairs()
        .into_iter()
        .filter(|(k, _)| !matches!(*k, "query" | "start" | "end" | "step" | "timeout"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let key_extra = params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let tenant = api::tenant(&headers);
    let query = p.get("query").unwrap_or_default();
    let histograms = AtomicBool::new(false);
    let eval = SplitRequests { server: &s, query, params: &params, headers: &headers, histograms: &histograms };
    let fq = FrontendQuery { tenant: &tenant, expr: &expr, key_extra: &key_extra, start, end, step };
    match s.frontend.answer(&eval, s.lookback_ms, fq, Instant::now() + timeout).await {
        Ok(e) => api::success_annotated(&api::encode_value(&e.value), &e.warnings, &e.infos),
        Err(_) if histograms.load(Ordering::Relaxed) => {
            s.unsplit.inc();
            proxy(&s, method, &uri, &headers, body).await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn pass_on(
    State(s): State<Arc<FrontendServer>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    proxy(&s, method, &uri, &headers, body).await
}

async fn metrics(State(s): State<Arc<FrontendServer>>) -> Response {
    strata_server::process::metrics_response(&s.registry)
}

async fn ready(State(s): State<Arc<FrontendServer>>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "Strata query-frontend is Ready.\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Strata query-frontend is not ready: no querier is ready.\n")
    }
}

/// Ready while at least one querier is.
async fn probe_loop(s: Arc<FrontendServer>) {
    loop {
        let mut any = false;
        for base in &s.queriers.urls {
            let r = s.queriers.client.current().get(format!("{base}/-/ready")).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                any = true;
                break;
            }
        }
        s.ready.store(any, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Runs `strata query-frontend` until `shutdown` resolves.
pub async fn run(
    cfg: FrontendServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    if cfg.downstream.is_empty() {
        return Err(invalid("at least one --query-frontend.downstream-url is required".into()));
    }
    let mut urls = Vec::new();
    for u in &cfg.downstream {
        let parsed = reqwest_rustls::Url::parse(u)
            .map_err(|e| invalid(format!("--query-frontend.downstream-url {u:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(format!("--query-frontend.downstream-url {u:?}: not an http(s) URL")));
        }
        urls.push(u.trim_end_matches('/').to_string());
    }
    let https = urls.iter().any(|u| u.starts_with("https://"));
    let client = strata_server::http_client::HttpClient::with_tls(
        cfg.http_client_tls.clone(),
        https,
        cfg.timeout + Duration::from_secs(10),
        concat!("strata-query-frontend/", env!("CARGO_PKG_VERSION")),
    )
    .map_err(|e| invalid(format!("--http-client.tls-*: {e}")))?;
    let mut registry = Registry::with_prefix("strata_query_frontend");
    let frontend = QueryFrontend::new(&cfg.frontend, &mut registry);
    let unsplit = Counter::default();
    registry.register(
        "unsplit_queries",
        "Range queries passed to a querier whole because their answer holds native histograms",
        unsplit.clone(),
    );
    let state = Arc::new(FrontendServer {
        frontend,
        queriers: Queriers { urls, next: AtomicUsize::new(0), client },
        lookback_ms: cfg.lookback_delta.as_millis() as i64,
        timeout: cfg.timeout,
        registry,
        unsplit,
        ready: AtomicBool::new(false),
    });
    tokio::spawn(probe_loop(state.clone()));
    let app = Router::new()
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/metrics", get(metrics))
        .route("/-/ready", get(ready))
        .route("/-/healthy", get(|| async { "Strata query-frontend is Healthy.\n" }))
        // Every other path goes to a querier (the API, remote read, the
        // dashboard); a route rather than a fallback, which the server
        // layer reserves for its 404.
        .route("/", axum::routing::any(pass_on))
        .route("/{*rest}", axum::routing::any(pass_on))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(cfg.web_listen).await?;
    tracing::info!(addr = %cfg.web_listen, downstream = ?cfg.downstream, "query-frontend listening");
    let http_metrics = strata_server::HttpMetrics::global();
    strata_server::serve(listener, app, &cfg.http, Some(&http_metrics), crate::http_access, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn querier_answers_parse_back_bit_exact() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"a","__name__":"up"},"values":[[1796356800,"1"],[1796356800.5,"-0"],[1796356801.25,"NaN"],[1796356802,"+Inf"],[1796356803,"0.30000000000000004"],[1796356804,"1e-300"]]}]},"warnings":["w"],"infos":["i"]}"#;
        let Ok(Parsed::Matrix(e)) = parse_answer(200, body) else { panic!("not parsed") };
        let QueryValue::Matrix(m) = &e.value else { panic!("not a matrix") };
        assert_eq!(m[0].labels, Labels::new(vec![("__name__".into(), "up".into()), ("job".into(), "a".into())]));
        let ts: Vec<i64> = m[0].samples.iter().map(|s| s.0).collect();
        assert_eq!(
            ts,
            vec![
                1_796_356_800_000,
                1_796_356_800_500,
                1_796_356_801_250,
                1_796_356_802_000,
                1_796_356_803_000,
                1_796_356_804_000
            ]
        );
        let v: Vec<f64> = m[0].samples.iter().map(|s| s.1).collect();
        assert_eq!(v[1].to_bits(), (-0.0f64).to_bits());
        assert!(v[2].is_nan());
        assert_eq!(v[3], f64::INFINITY);
        assert_eq!(v[4], 0.1 + 0.2);
        assert_eq!(v[5], 1e-300);
        assert_eq!((e.warnings, e.infos), (vec!["w".to_string()], vec!["i".to_string()]));
        // Printed again, the answer is the querier's text.
        let printed = api::encode_value(&e.value);
        assert!(printed.contains(r#"[1796356800.5,"-0"]"#), "{printed}");
        assert!(printed.contains(r#""0.30000000000000004""#), "{printed}");
    }

    #[test]
    fn errors_keep_the_queriers_status_and_type() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        match parse_answer(400, body) {
            Err(ServiceError::Downstream { status: 400, kind: "bad_data", message }) => {
                assert_eq!(message, "parse error")
            }
            _ => panic!("not a downstream error"),
        }
        assert!(matches!(
            parse_answer(502, b"<html>bad gateway</html>"),
            Err(ServiceError::Downstream { status: 502, .. })
        ));
        let hist = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"histograms":[[1,{"count":"1"}]]}]}}"#;
        assert!(matches!(parse_answer(200, hist), Ok(Parsed::Histograms)));
    }

    #[test]
    fn timestamps_and_forms_encode_like_the_api() {
        assert_eq!(seconds(1_796_356_800_500), "1796356800.500");
        assert_eq!(seconds(-1500), "-1.500");
        assert_eq!(seconds(0), "0.000");
        let f = form_body(&[("query", "sum(rate(x{a=\"b c\"}[5m]))".into()), ("step", "60.000".into())]);
        assert_eq!(f, "query=sum%28rate%28x%7Ba%3D%22b%20c%22%7D%5B5m%5D%29%29&step=60.000");
    }
}
