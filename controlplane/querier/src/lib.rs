//! `strata querier`: the Prometheus HTTP API (`/api/v1/query`, `query_range`,
//! `series`, `labels`, `label/<name>/values`, `read`, …) over a StoreAPI
//! fan-out to ingesters and store gateways, evaluated by `strata-promql`.

pub mod api;
pub mod dashboard;
pub mod fanout;
pub mod frontend_server;
mod memcached;
pub mod query_frontend;
pub mod query_queue;
pub mod query_service;
pub mod remote_read;
pub mod results_cache;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use strata_promql::{Engine, EngineOptions};

pub use fanout::StoreSet;

/// Settings of `strata querier`.
#[derive(Debug, Clone)]
pub struct QuerierConfig {
    pub web_listen: SocketAddr,
    /// StoreAPI gRPC endpoints (ingesters and stores).
    pub endpoints: Vec<String>,
    pub timeout: Duration,
    pub max_samples: usize,
    pub lookback_delta: Duration,
    /// Answer with a warning when a shard is unreachable (else fail the query).
    pub partial_response: bool,
    /// How often store `Info` is refreshed.
    pub store_refresh: Duration,
    /// The blocks bucket for `POST /api/v1/sql` (None: SQL disabled).
    pub sql_bucket: Option<strata_blocks::BucketConfig>,
    /// Rows one SQL query returns at most.
    pub sql_max_rows: usize,
    /// Memory, concurrency and threads of SQL (`--sql.*`).
    pub sql_max_memory: usize,
    pub sql_max_concurrency: usize,
    pub sql_threads: usize,
    /// Let store gateways compute pushable aggregations next to the blocks.
    pub pushdown: bool,
    /// PromQL evaluations run at once; more wait (`--query.max-concurrency`).
    pub max_concurrency: usize,
    /// HTTP timeouts and limits (`--web.*`).
    pub http: strata_server::HttpServerConfig,
    /// TLS of connections to ingesters and stores (`--grpc-client.tls-*`).
    pub grpc_client_tls: Option<strata_server::tls::TlsClientConfig>,
    /// Per-tenant query limits reloaded at run time (`--limits.overrides-file`).
    pub overrides_file: Option<std::path::PathBuf>,
    /// Rulers whose `/api/v1/rules` and `/api/v1/alerts` this querier serves (`--ruler.url`).
    pub ruler_urls: Vec<String>,
    /// TLS of the calls to `--ruler.url` (`--http-client.tls-*`).
    pub http_client_tls: Option<strata_server::tls::TlsClientConfig>,
    /// Range query splitting and the results cache (`--query.split-interval`, `--query.results-cache.*`).
    pub frontend: query_frontend::FrontendConfig,
}

impl Default for QuerierConfig {
    fn default() -> Self {
        QuerierConfig {
            web_listen: ([127, 0, 0, 1], 9090).into(),
            endpoints: vec!["127.0.0.1:9095".into()],
            timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            lookback_delta: Duration::from_secs(300),
            partial_response: true,
            store_refresh: Duration::from_secs(5),
            sql_bucket: None,
            sql_max_rows: 10_000,
            sql_max_memory: 512 << 20,
            sql_max_concurrency: 2,
            sql_threads: 1,
            pushdown: true,
            max_concurrency: 20,
            http: strata_server::HttpServerConfig::default(),
            grpc_client_tls: None,
            overrides_file: None,
            ruler_urls: Vec::new(),
            http_client_tls: None,
            frontend: query_frontend::FrontendConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    handler: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// The querier's own metrics, served on `/metrics`.
pub struct Metrics {
    registry: Registry,
    requests: Family<HandlerLabels, Counter>,
    duration: Family<HandlerLabels, Histogram>,
    phases: Family<PhaseLabels, Histogram>,
    samples: Histogram,
    pushdowns: Family<ResultLabels, Counter>,
    queries_waiting: prometheus_client::metrics::gauge::Gauge,
    /// Requests of the HTTP server by route (`strata_http_*`, process-wide).
    pub http: strata_server::HttpMetrics,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("strata_querier");
        let requests = Family::<HandlerLabels, Counter>::default();
        let duration = Family::<HandlerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register("requests", "API requests by handler and outcome", requests.clone());
        registry.register("request_duration_seconds", "API request latency", duration.clone());
        let phases = Family::<PhaseLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "query_phase_duration_seconds",
            "PromQL query time by phase: fetch (StoreAPI fan-out and merge) and eval (the engine)",
            phases.clone(),
        );
        let samples = Histogram::new(exponential_buckets(1000.0, 4.0, 12));
        registry.register("query_samples_loaded", "Samples one PromQL query loaded from the sources", samples.clone());
        for phase in ["fetch", "eval"] {
            let _ = phases.get_or_create(&PhaseLabels { phase });
        }
        let pushdowns = Family::<ResultLabels, Counter>::default();
        registry.register(
            "pushdowns",
            "Aggregations computed by store gateways (pushed) or, after a failed push-down, from raw samples (fallback)",
            pushdowns.clone(),
        );
        for result in ["pushed", "fallback"] {
            let _ = pushdowns.get_or_create(&ResultLabels { result });
        }
        let queries_waiting = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "queries_waiting",
            "PromQL queries waiting for a slot (--query.max-concurrency)",
            queries_waiting.clone(),
        );
        let http = strata_server::HttpMetrics::global();
        Metrics { registry, requests, duration, phases, samples, pushdowns, queries_waiting, http }
    }

    /// Records one PromQL query's fetch and evaluation times and samples loaded.
    pub fn observe_query(&self, fetch: Duration, eval: Duration, samples: usize) {
        self.phases.get_or_create(&PhaseLabels { phase: "fetch" }).observe(fetch.as_secs_f64());
        self.phases.get_or_create(&PhaseLabels { phase: "eval" }).observe(eval.as_secs_f64());
        self.samples.observe(samples as f64);
    }

    /// Counts one aggregation push-down (`pushed`) or fallback to raw samples.
    pub fn observe_pushdown(&self, ok: bool) {
        let result = if ok { "pushed" } else { "fallback" };
        self.pushdowns.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn observe(&self, handler: &str, took: Duration, ok: bool) {
        let l = HandlerLabels { handler: handler.into(), outcome: if ok { "success" } else { "error" }.into() };
        self.requests.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
    }
}

/// Shared state of the HTTP handlers.
pub struct QuerierState {
    pub stores: StoreSet,
    pub engine: Engine,
    pub metrics: Metrics,
    /// Extra routes (the dashboard) merged by the binary.
    pub ready: Mutex<bool>,
    /// SQL over the blocks, when a bucket is configured.
    pub sql: Option<strata_sql::SqlEngine>,
    /// Aggregation push-down to the store gateways is enabled.
    pub pushdown: bool,
    /// Admission of PromQL evaluations (`--query.max-concurrency`).
    pub queries: query_queue::QueryQueue,
    /// Per-tenant query limits (`--limits.overrides-file`).
    pub overrides: Arc<strata_server::reload::LiveOverrides>,
    /// Per-tenant admission (`max_concurrent_queries`).
    pub tenant_queries: query_queue::TenantQueues,
    /// Rulers answering `/api/v1/rules` and `/api/v1/alerts`.
    pub ruler_urls: Vec<String>,
    /// Client of the rulers (`--http-client.tls-*`).
    pub http: strata_server::http_client::HttpClient,
    /// Range query splitting and the results cache.
    pub frontend: query_frontend::QueryFrontend,
}

impl QuerierState {
    pub fn new(cfg: &QuerierConfig) -> Result<Arc<Self>, fanout::FanoutError> {
        let tls = match &cfg.grpc_client_tls {
            Some(t) => {
                let tls =
                    strata_server::tls::ClientTls::new(t.clone(), strata_server::tls::ALPN_H2, "--grpc-client.tls-*")
                        .map_err(|e| fanout::FanoutError::Endpoint("--grpc-client.tls-*".into(), e.to_string()))?;
                tls.watch(Duration::from_secs(5));
                Some(tls)
            }
            None => None,
        };
        let stores = StoreSet::new(&cfg.endpoints, cfg.timeout, cfg.partial_response, tls)?;
        let sql = match &cfg.sql_bucket {
            Some(bucket) => {
                let opts = strata_sql::SqlOptions {
                    max_rows: cfg.sql_max_rows,
                    timeout: cfg.timeout,
                    max_memory: cfg.sql_max_memory,
                    max_concurrency: cfg.sql_max_concurrency,
                    threads: cfg.sql_threads,
                };
                Some(
                    strata_sql::SqlEngine::open(bucket, opts)
                        .map_err(|e| fanout::FanoutError::Config(e.to_string()))?,
                )
            }
            None => None,
        };
        let engine = Engine::new(EngineOptions {
            lookback_delta: cfg.lookback_delta,
            max_samples: cfg.max_samples,
            timeout: cfg.timeout,
            ..EngineOptions::default()
        });
        let mut metrics = Metrics::new();
        let frontend = query_frontend::QueryFrontend::new(&cfg.frontend, &mut metrics.registry);
        Ok(Arc::new(QuerierState {
            stores,
            engine,
            metrics,
            frontend,
            ready: Mutex::new(false),
            sql,
            pushdown: cfg.pushdown,
            queries: query_queue::QueryQueue::new(cfg.max_concurrency),
            overrides: strata_server::reload::LiveOverrides::load(cfg.overrides_file.as_deref())
                .map_err(fanout::FanoutError::Config)?,
            tenant_queries: query_queue::TenantQueues::default(),
            ruler_urls: cfg.ruler_urls.clone(),
            http: strata_server::http_client::HttpClient::with_tls(
                cfg.http_client_tls.clone(),
                false,
                Duration::from_secs(30),
                concat!("strata-querier/", env!("CARGO_PKG_VERSION")),
            )
            .map_err(|e| fanout::FanoutError::Config(format!("--http-client.tls-*: {e}")))?,
        }))
    }
}

impl QuerierState {
    /// Samples one query of `tenant` may load: `--query.max-samples`, or
    /// the tenant's `max_samples_per_query` when lower.
    pub fn max_samples_for(&self, tenant: &str) -> usize {
        let global = self.engine.options().max_samples;
        match self.overrides.current().query(tenant).max_samples {
            Some(own) => global.min(usize::try_from(own).unwrap_or(usize::MAX)),
            None => global,
        }
    }
}

async fn metrics(State(state): State<Arc<QuerierState>>) -> axum::response::Response {
    state.metrics.queries_waiting.set(state.queries.waiting());
    strata_server::process::metrics_response(&state.metrics.registry)
}

async fn ready(State(state): State<Arc<QuerierState>>) -> impl IntoResponse {
    if state.ready.lock().map(|g| *g).unwrap_or(false) {
        (StatusCode::OK, "Strata querier is Ready.\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Strata querier is not ready: no store reached yet.\n")
    }
}

/// Mimir's prefix of the ruler configuration API (Cortex's is
/// `/api/v1/rules/{namespace}`).
pub const RULE_CONFIG_PREFIX: &str = "/prometheus/config/v1/rules";

/// Whether `path` is in the ruler configuration API (either prefix).
pub fn is_rule_config_path(path: &str) -> bool {
    path.starts_with("/api/v1/rules/") || path.starts_with(RULE_CONFIG_PREFIX)
}

/// The querier's HTTP routes.
pub fn router(state: Arc<QuerierState>) -> Router {
    Router::new()
        .route("/api/v1/query", get(api::query).post(api::query))
        .route("/api/v1/query_range", get(api::query_range).post(api::query_range))
        .route("/api/v1/series", get(api::series).post(api::series))
        .route("/api/v1/labels", get(api::labels).post(api::labels))
        .route("/api/v1/label/{name}/values", get(api::label_values))
        .route("/api/v1/metadata", get(api::metadata))
        .route("/api/v1/query_exemplars", get(api::query_exemplars).post(api::query_exemplars))
        .route("/api/v1/status/buildinfo", get(api::buildinfo))
        .route("/api/v1/rules", get(api::rules))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/rules/{*rest}", axum::routing::any(api::rule_config))
        .route(RULE_CONFIG_PREFIX, axum::routing::any(api::rule_config))
        .route(&format!("{RULE_CONFIG_PREFIX}/{{*rest}}"), axum::routing::any(api::rule_config))
        .route("/api/v1/format_query", get(api::format_query).post(api::format_query))
        .route("/api/v1/read", axum::routing::post(remote_read::read))
        .route("/api/v1/stores", get(api::stores))
        .route("/api/v1/sql", axum::routing::post(api::sql))
        .route("/metrics", get(metrics))
        .route("/-/ready", get(ready))
        .route("/-/healthy", get(|| async { "Strata querier is Healthy.\n" }))
        .with_state(state)
        .merge(dashboard::router())
}

/// Keeps store `Info` fresh (leaders, shards, time ranges): every
/// `every`, and every [`UNKNOWN_INFO_REFRESH`] while some source's `Info` is
/// unknown (down, or a store gateway before its first sync), so that a
/// source coming up is used (and its blocks pushed down to) within a second.
pub async fn refresh_loop(state: Arc<QuerierState>, every: Duration) {
    loop {
        state.stores.refresh().await;
        let status = state.stores.status();
        let any = status.iter().any(|(_, i)| i.is_some());
        let all = status.iter().all(|(_, i)| i.is_some());
        if let Ok(mut g) = state.ready.lock() {
            *g = any;
        }
        tokio::time::sleep(if all { every } else { every.min(UNKNOWN_INFO_REFRESH) }).await;
    }
}

/// How often `Info` is asked again while some source's is unknown.
pub const UNKNOWN_INFO_REFRESH: Duration = Duration::from_millis(500);

/// Runs the querier until `shutdown` resolves. `extra` routes (the
/// dashboard) are merged in.
pub async fn run(
    cfg: QuerierConfig,
    extra: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state =
        QuerierState::new(&cfg).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    tokio::spawn(refresh_loop(state.clone(), cfg.store_refresh));
    let http_metrics = state.metrics.http.clone();
    let app = router(state).merge(extra);
    let listener = tokio::net::TcpListener::bind(cfg.web_listen).await?;
    tracing::info!(addr = %cfg.web_listen, endpoints = ?cfg.endpoints, "querier listening");
    strata_server::serve(listener, app, &cfg.http, Some(&http_metrics), http_access, shutdown).await
}

/// What each HTTP route needs with `--web.config.file`: the querier only
/// reads (the API, remote read, SQL, the dashboard, `/metrics`); a route
/// not listed needs `admin`.
pub fn http_access(method: &axum::http::Method, path: &str) -> strata_server::Access {
    use strata_server::{Access, Role};
    let read_method = method == axum::http::Method::GET || method == axum::http::Method::POST;
    match path {
        "/-/healthy" | "/-/ready" => Access::Open,
        "/" | "/metrics" => Access::Role(Role::Read),
        // A tenant's writers manage its rule groups (forwarded to a ruler).
        p if is_rule_config_path(p) => {
            if method == axum::http::Method::GET {
                Access::Role(Role::Read)
            } else {
                Access::Role(Role::Write)
            }
        }
        p if read_method && (p.starts_with("/api/v1/") || p.starts_with("/assets/")) => Access::Role(Role::Read),
        _ => Access::Role(Role::Admin),
    }
}
