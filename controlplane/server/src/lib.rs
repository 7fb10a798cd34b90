//! The HTTP server every Strata binary runs (ingester, querier, store,
//! compactor, agent, sample API), written once:
//!
//! - a **header-read timeout**: a client that opens a connection and sends
//!   a partial request line or headers is disconnected after
//!   `--web.read-header-timeout` (hyper's timeout, which `axum::serve`
//!   leaves off because it runs hyper without a timer);
//! - a **request timeout**: a request (body upload included) that has not
//!   produced its response after `--web.request-timeout` is answered 503;
//! - a **concurrent-request limit**: past `--web.max-concurrent-requests`
//!   requests in flight, new ones get 503 with `Retry-After` at once instead
//!   of queueing without bound (remote-write senders and Strata's agent
//!   retry them);
//! - an **in-flight request bytes limit**: the bodies of the requests being
//!   served together may hold at most `--web.max-inflight-request-bytes`;
//!   a request whose `Content-Length` does not fit now gets 503 with
//!   `Retry-After` before its body is read (413 if it could never fit), and
//!   a body without a length is counted as it arrives and cut off at the
//!   limit;
//! - **graceful shutdown**: on shutdown the listener closes, idle
//!   connections are closed, requests in flight finish (up to the request
//!   timeout) and then the server returns.
//!
//! - **request metrics** by route ([`HttpMetrics`], registered into the
//!   component's own registry): requests by handler and status code,
//!   latency, requests in flight, requests refused by the limits.
//!
//! - **authentication and tenancy** ([`auth`]): with `--web.config.file`,
//!   every request needs a credential holding the role its route needs
//!   (the component's [`RouteAccess`] table), and its tenant comes from
//!   the credential; without it, tenant headers are still validated.
//!
//! Health (`/-/healthy`, `/-/ready`) and `/metrics` stay with each
//! component, which knows what they mean for it.

pub mod auth;
pub mod grpc;
mod grpc_metrics;
pub mod http_client;
mod metrics;
pub mod process;
pub mod reload;
pub mod tls;
pub mod trace;

pub use auth::{Access, Role, RouteAccess};
pub use grpc_metrics::GrpcMetricsLayer;
pub use metrics::HttpMetrics;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Limits and timeouts of one HTTP server.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerConfig {
    /// Longest a client may take to send a request's line and headers.
    #[serde(with = "duration_text")]
    pub read_header_timeout: Duration,
    /// Longest a request may take from its headers to its response
    /// (reading the body included).
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    /// Requests served at once; more get 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Body bytes of the requests served at once; more get 503 with
    /// `Retry-After`.
    pub max_inflight_request_bytes: u64,
    /// Prometheus-format web config with credentials and their tenants
    /// ([`auth`]); none: no authentication.
    pub web_config_file: Option<std::path::PathBuf>,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            read_header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
            max_concurrent_requests: 1024,
            max_inflight_request_bytes: 256 << 20,
            web_config_file: None,
        }
    }
}

/// The same settings as command-line flags (flatten into a subcommand).
#[derive(clap::Args, Clone, Debug)]
pub struct HttpServerArgs {
    /// Longest a client may take to send a request line and headers; slower
    /// connections are closed.
    #[arg(long = "web.read-header-timeout", default_value = "10s", value_parser = humantime::parse_duration)]
    pub read_header_timeout: Duration,
    /// Longest an HTTP request may take, body upload included; past it the
    /// request is answered 503.
    #[arg(long = "web.request-timeout", default_value = "5m", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// HTTP requests served at once; more are answered 503 with Retry-After.
    #[arg(long = "web.max-concurrent-requests", default_value_t = 1024)]
    pub max_concurrent_requests: usize,
    /// Request body bytes held by the requests in flight together; a request
    /// that does not fit is answered 503 with Retry-After (413 if larger than
    /// the whole limit).
    #[arg(long = "web.max-inflight-request-bytes", default_value_t = 256 << 20)]
    pub max_inflight_request_bytes: u64,
    /// Web config file (Prometheus' web.config.file format plus a tenants
    /// list): credentials, their roles and tenants. Without it requests are
    /// not authenticated. Re-read on SIGHUP and when it changes.
    #[arg(long = "web.config.file")]
    pub web_config_file: Option<std::path::PathBuf>,
}

impl From<HttpServerArgs> for HttpServerConfig {
    fn from(a: HttpServerArgs) -> Self {
        HttpServerConfig {
            read_header_timeout: a.read_header_timeout,
            request_timeout: a.request_timeout,
            max_concurrent_requests: a.max_concurrent_requests,
            max_inflight_request_bytes: a.max_inflight_request_bytes,
            web_config_file: a.web_config_file,
        }
    }
}

impl HttpServerConfig {
    /// Checks the values; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.read_header_timeout.is_zero() {
            return Err("web.read-header-timeout must be greater than 0".into());
        }
        if self.request_timeout.is_zero() {
            return Err("web.request-timeout must be greater than 0".into());
        }
        if self.max_concurrent_requests == 0 {
            return Err("web.max-concurrent-requests must be at least 1".into());
        }
        if self.max_inflight_request_bytes == 0 {
            return Err("web.max-inflight-request-bytes must be at least 1".into());
        }
        if let Some(p) = &self.web_config_file {
            auth::WebConfig::load(p).map_err(|e| format!("web.config.file: {e}"))?;
        }
        Ok(())
    }
}

struct Limits {
    in_flight: Arc<Semaphore>,
    max: usize,
    timeout: Duration,
    body_bytes: Arc<BodyBytes>,
}

/// Body bytes held by the requests in flight, against their limit.
struct BodyBytes {
    used: std::sync::atomic::AtomicU64,
    max: u64,
}

impl BodyBytes {
    /// Reserves `n` more bytes, released when the reservation drops; false
    /// if they do not fit now.
    fn reserve(&self, into: &BodyReservation, n: u64) -> bool {
        use std::sync::atomic::Ordering;
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|&t| t <= self.max))
            .is_ok();
        if fits {
            into.n.fetch_add(n, Ordering::AcqRel);
        }
        fits
    }
}

/// One request's bytes, released when the request is done with them (its
/// response produced and its body dropped).
struct BodyReservation {
    bytes: Arc<BodyBytes>,
    n: std::sync::atomic::AtomicU64,
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.bytes.used.fetch_sub(self.n.load(Ordering::Acquire), Ordering::AcqRel);
    }
}

fn over_inflight_bytes(max: u64) -> String {
    format!("request bodies in flight would exceed {max} bytes (--web.max-inflight-request-bytes): retry later\n")
}

/// A body without `Content-Length`, reserving its bytes as frames arrive
/// and failing at the limit.
fn counted_body(body: Body, reservation: Arc<BodyReservation>) -> Body {
    use futures::StreamExt;
    Body::from_stream(body.into_data_stream().map(move |frame| {
        let data = frame?;
        let bytes = &reservation.bytes;
        if bytes.reserve(&reservation, data.len() as u64) {
            Ok(data)
        } else {
            Err(axum::Error::new(over_inflight_bytes(bytes.max).trim_end().to_string()))
        }
    }))
}

/// `router` with the request timeout and the concurrent-request limit.
fn with_limits(router: Router, cfg: &HttpServerConfig) -> Router {
    let limits = Arc::new(Limits {
        in_flight: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
        max: cfg.max_concurrent_requests,
        timeout: cfg.request_timeout,
        body_bytes: Arc::new(BodyBytes { used: 0.into(), max: cfg.max_inflight_request_bytes }),
    });
    router.layer(axum::middleware::from_fn_with_state(limits, limit_request))
}

async fn limit_request(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let Ok(permit) = limits.in_flight.clone().try_acquire_owned() else {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many requests in flight (limit {}, --web.max-concurrent-requests): retry later\n", limits.max),
        )
            .into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    // The body's bytes: reserved at once from Content-Length, or counted as
    // they arrive.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let max_bytes = limits.body_bytes.max;
    let reservation = Arc::new(BodyReservation { bytes: limits.body_bytes.clone(), n: 0.into() });
    let req = match declared {
        Some(n) if n > max_bytes => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body of {n} bytes is larger than --web.max-inflight-request-bytes ({max_bytes})\n"),
            )
                .into_response();
        }
        Some(n) => {
            if !limits.body_bytes.reserve(&reservation, n) {
                let mut r = (StatusCode::SERVICE_UNAVAILABLE, over_inflight_bytes(max_bytes)).into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
            req
        }
        None => {
            let counted = reservation.clone();
            req.map(|b| counted_body(b, counted))
        }
    };
    let resp = match tokio::time::timeout(limits.timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "request not answered within {} (--web.request-timeout)\n",
                humantime::format_duration(limits.timeout)
            ),
        )
            .into_response(),
    };
    drop((permit, reservation));
    resp
}

/// Unknown paths: 404 naming the path (axum's default body is empty).
async fn not_found(uri: axum::http::Uri) -> (axum::http::StatusCode, String) {
    (axum::http::StatusCode::NOT_FOUND, format!("no such endpoint: {}\n", uri.path()))
}

/// Known path, wrong method: 405 naming both.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> (axum::http::StatusCode, String) {
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, format!("method {method} is not allowed on {}\n", uri.path()))
}

/// Serves `router` (with [`with_limits`]) on `listener` until `shutdown`
/// resolves, then closes the listener and idle connections and waits for
/// requests in flight (at most the request timeout). Unknown paths and
/// methods are answered 404/405 naming them.
/// With `metrics`, every request is counted by route, those refused by the
/// limits or by authentication included. `access` is the component's route
/// table for `--web.config.file` ([`auth`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: &HttpServerConfig,
    metrics: Option<&HttpMetrics>,
    access: RouteAccess,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let authenticator = auth::Authenticator::new(cfg.web_config_file.as_deref(), access)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let authenticator = Arc::new(authenticator);
    authenticator.watch(Duration::from_secs(5));
    let tls = https(cfg.web_config_file.as_deref())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let addr = listener.local_addr()?;
    if !authenticator.enabled() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "serving HTTP on a non-loopback address without authentication: anyone who can reach it can read \
             and write every tenant; set --web.config.file (docs/security.md)"
        );
    }
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(authenticator, auth::authenticate));
    let app = with_limits(router, cfg);
    let app = match metrics {
        Some(m) => m.instrument(app),
        None => app,
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(cfg.read_header_timeout).keep_alive(true);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Every connection task holds a sender; when all are gone, all are done.
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the
                    // connections already open, try again shortly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = stop_rx.clone();
        let open = open_tx.clone();
        let http = http.clone();
        match &tls {
            None => {
                tokio::spawn(serve_connection(http, stream, app, stop, open));
            }
            Some(tls) => {
                // The handshake counts against the header-read timeout, and
                // runs in the connection's task so a slow client holds up
                // no one else.
                let acceptor = tls.acceptor();
                let timeout = cfg.read_header_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_connection(http, s, app, stop, open).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_tx);
    // Requests in flight finish within the request timeout (plus the time
    // to write their response); do not wait longer for a stuck client.
    let drain = cfg.request_timeout + Duration::from_secs(5);
    if tokio::time::timeout(drain, open_rx.recv()).await.is_err() {
        tracing::warn!("HTTP connections still open after the drain time; stopping anyway");
    }
    Ok(())
}

/// The listener's TLS from the web config's `tls_server_config`, if any,
/// reloaded when the web config or the certificate files change.
fn https(web_config: Option<&std::path::Path>) -> Result<Option<Arc<tls::ServerTls>>, auth::WebConfigError> {
    let Some(path) = web_config else { return Ok(None) };
    let Some(first) = auth::WebConfig::load(path)?.tls else { return Ok(None) };
    let mut files = vec![path.to_path_buf()];
    files.extend(first.files());
    let path = path.to_path_buf();
    let load = Box::new(move || {
        let wc = auth::WebConfig::load(&path).map_err(|e| tls::TlsError::Invalid(e.to_string()))?;
        let Some(t) = wc.tls else {
            return Err(tls::TlsError::Invalid(
                "tls_server_config was removed: the listener keeps serving HTTPS until restarted".into(),
            ));
        };
        t.build(tls::ALPN_HTTP1, "tls_server_config")
    });
    let tls = tls::ServerTls::from_loader(load, files).map_err(|e| auth::WebConfigError::Invalid {
        path: web_config.map(|p| p.to_path_buf()).unwrap_or_default(),
        msg: e.to_string(),
    })?;
    tls.watch(Duration::from_secs(5));
    Ok(Some(tls))
}

/// Serves one connection until it closes, or until `stop` (then
/// gracefully: the request in flight finishes).
async fn serve_connection<IO>(
    http: hyper::server::conn::http1::Builder,
    io: IO,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    open: tokio::sync::mpsc::Sender<()>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        app.clone().oneshot(req.map(Body::new))
    });
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    drop(open);
}

mod duration_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(router: Router, cfg: HttpServerConfig) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        start_with(router, cfg, None).await
    }

    async fn start_with(
        router: Router,
        cfg: HttpServerConfig,
        metrics: Option<HttpMetrics>,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            serve(listener, router, &cfg, metrics.as_ref(), |_, _| Access::Open, async move {
                let _ = rx.await;
            })
            .await
        });
        (addr, tx)
    }

    async fn request(addr: std::net::SocketAddr, raw: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(raw.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_disconnected() {
        let cfg = HttpServerConfig { read_header_timeout: Duration::from_millis(300), ..Default::default() };
        let (addr, _stop) = start(Router::new().route("/", get(|| async { "hi" })), cfg).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"POST /api/v1/write HTT").await.expect("write");
        let started = Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "connection still open after 5 s");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250), "closed after {took:?}, before the timeout");
        // A normal request on a new connection is still served.
        let ok = request(addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("hi"), "{ok}");
    }

    #[tokio::test]
    async fn requests_past_the_limit_get_503_with_retry_after() {
        let (entered_tx, mut entered_rx) = tokio::sync::mpsc::channel::<()>(4);
        let release = Arc::new(tokio::sync::Notify::new());
        let r = release.clone();
        let router = Router::new().route(
            "/slow",
            get(move || {
                let (entered, release) = (entered_tx.clone(), r.clone());
                async move {
                    let _ = entered.send(()).await;
                    release.notified().await;
                    "done"
                }
            }),
        );
        let cfg = HttpServerConfig { max_concurrent_requests: 1, ..Default::default() };
        let metrics = HttpMetrics::new();
        let (addr, _stop) = start_with(router, cfg, Some(metrics.clone())).await;
        let first = tokio::spawn(request(addr, "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        entered_rx.recv().await.expect("first request running");
        let second = request(addr, "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(second.starts_with("HTTP/1.1 503"), "{second}");
        assert!(second.to_ascii_lowercase().contains("retry-after: 1"), "{second}");
        assert!(second.contains("--web.max-concurrent-requests"), "{second}");
        release.notify_one();
        let first = first.await.expect("first");
        assert!(first.starts_with("HTTP/1.1 200") && first.ends_with("done"), "{first}");
        // Both counted under the route, the refused one with its 503.
        assert_eq!(metrics.count("/slow", "GET", 200), 1);
        assert_eq!(metrics.count("/slow", "GET", 503), 1);
    }

    #[tokio::test]
    async fn request_bodies_in_flight_are_bounded_in_bytes() {
        use axum::routing::post;
        let (entered_tx, mut entered_rx) = tokio::sync::mpsc::channel::<usize>(4);
        let release = Arc::new(tokio::sync::Notify::new());
        let r = release.clone();
        let router = Router::new().route(
            "/write",
            post(move |body: axum::body::Bytes| {
                let (entered, release) = (entered_tx.clone(), r.clone());
                async move {
                    if body.len() == 800 {
                        let _ = entered.send(body.len()).await;
                        release.notified().await;
                    }
                    format!("got {}", body.len())
                }
            }),
        );
        let cfg = HttpServerConfig { max_inflight_request_bytes: 1000, ..Default::default() };
        let (addr, _stop) = start(router, cfg).await;
        let post_of = |n: usize| {
            format!(
                "POST /write HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {n}\r\n\r\n{}",
                "a".repeat(n)
            )
        };
        // 800 bytes held by a request in flight.
        let first = tokio::spawn(request(addr, post_of(800).leak()));
        assert_eq!(entered_rx.recv().await, Some(800));
        // 300 more do not fit now: 503 with Retry-After, before the body is read.
        let r = request(addr, &post_of(300)).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.to_ascii_lowercase().contains("retry-after: 1"), "{r}");
        assert!(r.contains("--web.max-inflight-request-bytes"), "{r}");
        // 200 do.
        let r = request(addr, &post_of(200)).await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("got 200"), "{r}");
        // More than the whole limit can never fit: 413.
        let r = request(addr, &post_of(2000)).await;
        assert!(r.starts_with("HTTP/1.1 413") && r.contains("--web.max-inflight-request-bytes"), "{r}");
        // A chunked body (no length) is counted as it arrives: 300 bytes
        // do not fit beside the 800 and the request fails naming the limit.
        let chunked = format!(
            "POST /write HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n12c\r\n{}\r\n0\r\n\r\n",
            "b".repeat(300)
        );
        let r = request(addr, &chunked).await;
        assert!(!r.starts_with("HTTP/1.1 2"), "{r}");
        assert!(r.contains("--web.max-inflight-request-bytes"), "{r}");
        // Released with the first request's response.
        release.notify_one();
        let first = first.await.expect("first");
        assert!(first.ends_with("got 800"), "{first}");
        let r = request(addr, &chunked).await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("got 300"), "{r}");
        let r = request(addr, &post_of(300)).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }

    #[tokio::test]
    async fn a_request_past_the_timeout_gets_503_naming_the_flag() {
        let router = Router::new().route(
            "/stuck",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }),
        );
        let cfg = HttpServerConfig { request_timeout: Duration::from_millis(200), ..Default::default() };
        let (addr, _stop) = start(router, cfg).await;
        let r = request(addr, "GET /stuck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503") && r.contains("--web.request-timeout"), "{r}");
    }

    #[tokio::test]
    async fn shutdown_lets_a_request_in_flight_finish() {
        let (entered_tx, mut entered_rx) = tokio::sync::mpsc::channel::<()>(1);
        let router = Router::new().route(
            "/work",
            get(move || {
                let entered = entered_tx.clone();
                async move {
                    let _ = entered.send(()).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "finished"
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(listener, router, &HttpServerConfig::default(), None, |_, _| Access::Open, async move {
                let _ = rx.await;
            })
            .await
        });
        let req = tokio::spawn(request(addr, "GET /work HTTP/1.1\r\nHost: x\r\n\r\n"));
        entered_rx.recv().await.expect("request running");
        let _ = tx.send(());
        let r = req.await.expect("request");
        assert!(r.starts_with("HTTP/1.1 200") && r.contains("finished"), "{r}");
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("server stopped").expect("join").expect("ok");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener still open");
    }

    #[test]
    fn config_from_yaml_and_validation() {
        let c: HttpServerConfig =
            serde_yaml_like("read_header_timeout: 2s\nmax_concurrent_requests: 8").expect("parse");
        assert_eq!(c.read_header_timeout, Duration::from_secs(2));
        assert_eq!(c.max_concurrent_requests, 8);
        assert_eq!(c.request_timeout, HttpServerConfig::default().request_timeout);
        let bad = HttpServerConfig { max_concurrent_requests: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("web.max-concurrent-requests"));
    }

    fn serde_yaml_like(text: &str) -> Result<HttpServerConfig, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }
}
