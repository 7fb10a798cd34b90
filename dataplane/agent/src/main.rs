use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use strata_agent::config::{AgentConfig, EndpointConfig, Protocol};
use strata_agent::queue::FsyncPolicy;

// OTLP decoding allocates a string per attribute key and value; mimalloc
// makes that (and freeing the decoded request) markedly cheaper than
// glibc's allocator (docs/benchmarks.md, "OTLP → remote write").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// strata-agent: receives OTLP metrics, labels and translates them to
/// Prometheus series, keeps them in a durable disk queue and remote-writes
/// them to Strata (or any Prometheus remote write receiver).
///
/// Every flag can also be set in the YAML file given by --config.file
/// (flags win) and through the environment variable shown.
#[derive(Parser, Debug)]
#[command(name = "strata-agent", version = strata_revision::version!())]
struct Cli {
    /// YAML configuration file (see docs/dataplane.md).
    #[arg(long = "config.file", env = "STRATA_AGENT_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    /// OTLP gRPC listen address.
    #[arg(long = "otlp.grpc-address", env = "STRATA_AGENT_OTLP_GRPC_ADDRESS")]
    otlp_grpc_address: Option<SocketAddr>,
    /// OTLP HTTP listen address.
    #[arg(long = "otlp.http-address", env = "STRATA_AGENT_OTLP_HTTP_ADDRESS")]
    otlp_http_address: Option<SocketAddr>,
    /// Largest OTLP request accepted, in bytes.
    #[arg(long = "otlp.max-request-bytes", env = "STRATA_AGENT_OTLP_MAX_REQUEST_BYTES")]
    otlp_max_request_bytes: Option<usize>,
    /// Address for /metrics, /-/ready and /-/healthy.
    #[arg(long = "web.listen-address", env = "STRATA_AGENT_WEB_LISTEN_ADDRESS")]
    web_listen_address: Option<SocketAddr>,
    /// Longest a client may take to send request line and headers (all HTTP servers).
    #[arg(long = "web.read-header-timeout", env = "STRATA_AGENT_WEB_READ_HEADER_TIMEOUT", value_parser = humantime::parse_duration)]
    web_read_header_timeout: Option<std::time::Duration>,
    /// Longest an HTTP request may take, body upload included (then 503).
    #[arg(long = "web.request-timeout", env = "STRATA_AGENT_WEB_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
    web_request_timeout: Option<std::time::Duration>,
    /// HTTP requests served at once per server; more are answered 503 with Retry-After.
    #[arg(long = "web.max-concurrent-requests", env = "STRATA_AGENT_WEB_MAX_CONCURRENT_REQUESTS")]
    web_max_concurrent_requests: Option<usize>,
    /// Request body bytes in flight per server; a request that does not fit
    /// is answered 503 with Retry-After (413 if larger than the whole limit).
    #[arg(long = "web.max-inflight-request-bytes", env = "STRATA_AGENT_WEB_MAX_INFLIGHT_REQUEST_BYTES")]
    web_max_inflight_request_bytes: Option<u64>,
    /// Web config file (Prometheus' web.config.file format plus tenants) for the OTLP/HTTP receiver, the web
    /// port and the exposition: credentials, roles, HTTPS (docs/security.md). Re-read on SIGHUP and when it changes.
    #[arg(long = "web.config.file", env = "STRATA_AGENT_WEB_CONFIG_FILE")]
    web_config_file: Option<PathBuf>,
    /// Serve the latest value of every translated series in the Prometheus
    /// text format on this address (conventionally :8889); off by default.
    #[arg(long = "prometheus-exporter.listen-address", env = "STRATA_AGENT_PROMETHEUS_EXPORTER_LISTEN_ADDRESS")]
    prometheus_exporter_listen_address: Option<SocketAddr>,
    /// Series not updated for this long drop out of the exposition.
    #[arg(long = "prometheus-exporter.expiration", env = "STRATA_AGENT_PROMETHEUS_EXPORTER_EXPIRATION", value_parser = humantime::parse_duration)]
    prometheus_exporter_expiration: Option<std::time::Duration>,
    /// Scrape the targets of this Prometheus-format file (`global:`, `scrape_configs:`; other sections ignored).
    #[arg(long = "scrape.config-file", env = "STRATA_AGENT_SCRAPE_CONFIG_FILE")]
    scrape_config_file: Option<std::path::PathBuf>,
    /// Serve the Pushgateway-compatible push API (PUT/POST/DELETE
    /// /metrics/job/<job>{/<label>/<value>}, /api/v1/metrics) on this address
    /// (the Pushgateway's port is 9091); off by default.
    #[arg(long = "push.listen-address", env = "STRATA_AGENT_PUSH_LISTEN_ADDRESS")]
    push_listen_address: Option<SocketAddr>,
    /// Pushed groups are written to this file (fsynced) before a push is acknowledged, and restored at start.
    #[arg(long = "push.persistence-file", env = "STRATA_AGENT_PUSH_PERSISTENCE_FILE")]
    push_persistence_file: Option<std::path::PathBuf>,
    /// How often every pushed group is forwarded (default 15s).
    #[arg(long = "push.interval", env = "STRATA_AGENT_PUSH_INTERVAL", value_parser = humantime::parse_duration)]
    push_interval: Option<std::time::Duration>,
    /// Series all pushed groups may hold together; a push past it gets 400 (default 100000).
    #[arg(long = "push.max-series", env = "STRATA_AGENT_PUSH_MAX_SERIES")]
    push_max_series: Option<usize>,
    /// How often the agent ships its own metrics (`strata_agent_*`, labelled
    /// with --label and job="strata-agent") through its queue; 0s: never.
    #[arg(long = "self-monitoring.interval", env = "STRATA_AGENT_SELF_MONITORING_INTERVAL", value_parser = humantime::parse_duration)]
    self_monitoring_interval: Option<std::time::Duration>,
    /// Remote write endpoint (repeatable); replaces the file's endpoints.
    #[arg(long = "remote-write.url", env = "STRATA_AGENT_REMOTE_WRITE_URL", value_delimiter = ',')]
    remote_write_url: Vec<String>,
    /// File holding a bearer token sent with every request to the --remote-write.url endpoints (read on every
    /// request, so a rotated token is picked up).
    #[arg(long = "remote-write.bearer-token-file", env = "STRATA_AGENT_REMOTE_WRITE_BEARER_TOKEN_FILE")]
    remote_write_bearer_token_file: Option<PathBuf>,
    /// CA certificates (PEM) that verify --remote-write.url https endpoints (default: the system's).
    #[arg(long = "remote-write.tls-ca-file", env = "STRATA_AGENT_REMOTE_WRITE_TLS_CA_FILE")]
    remote_write_tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to --remote-write.url endpoints that require one.
    #[arg(long = "remote-write.tls-cert-file", env = "STRATA_AGENT_REMOTE_WRITE_TLS_CERT_FILE")]
    remote_write_tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --remote-write.tls-cert-file.
    #[arg(long = "remote-write.tls-key-file", env = "STRATA_AGENT_REMOTE_WRITE_TLS_KEY_FILE")]
    remote_write_tls_key_file: Option<PathBuf>,
    /// Remote write protocol for --remote-write.url endpoints: auto, v1 or v2.
    #[arg(long = "remote-write.protocol", env = "STRATA_AGENT_REMOTE_WRITE_PROTOCOL", value_parser = parse_protocol)]
    remote_write_protocol: Option<Protocol>,
    /// Concurrent senders per endpoint.
    #[arg(long = "remote-write.shards", env = "STRATA_AGENT_REMOTE_WRITE_SHARDS")]
    remote_write_shards: Option<usize>,
    /// Label set on every series, as name=value (repeatable).
    #[arg(long = "label", env = "STRATA_AGENT_LABELS", value_delimiter = ',')]
    label: Vec<String>,
    /// Directory of the durable queue.
    #[arg(long = "queue.path", env = "STRATA_AGENT_QUEUE_PATH")]
    queue_path: Option<PathBuf>,
    /// Upper bound of the queue on disk, in bytes.
    #[arg(long = "queue.max-bytes", env = "STRATA_AGENT_QUEUE_MAX_BYTES")]
    queue_max_bytes: Option<u64>,
    /// Size of one queue segment file, in bytes.
    #[arg(long = "queue.segment-bytes", env = "STRATA_AGENT_QUEUE_SEGMENT_BYTES")]
    queue_segment_bytes: Option<u64>,
    /// When to fsync the queue: always, interval or never.
    #[arg(long = "queue.fsync", env = "STRATA_AGENT_QUEUE_FSYNC", value_parser = parse_fsync)]
    queue_fsync: Option<FsyncPolicy>,
    /// Batch timeout (e.g. 200ms).
    #[arg(long = "batch.timeout", env = "STRATA_AGENT_BATCH_TIMEOUT", value_parser = humantime::parse_duration)]
    batch_timeout: Option<std::time::Duration>,
    /// Check the configuration (file + flags), print it as the agent would run it, and exit.
    #[arg(long = "config.check")]
    config_check: bool,
    /// Log filter (tracing EnvFilter syntax), e.g. info or strata_agent=debug.
    #[arg(long = "log.level", env = "STRATA_AGENT_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "auto" => Ok(Protocol::Auto),
        "v1" | "1.0" => Ok(Protocol::V1),
        "v2" | "2.0" => Ok(Protocol::V2),
        _ => Err(format!("{s:?} is not one of auto, v1, v2")),
    }
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    match s {
        "always" => Ok(FsyncPolicy::Always),
        "interval" => Ok(FsyncPolicy::Interval),
        "never" => Ok(FsyncPolicy::Never),
        _ => Err(format!("{s:?} is not one of always, interval, never")),
    }
}

fn build_config(cli: &Cli) -> anyhow::Result<AgentConfig> {
    let mut cfg = match &cli.config_file {
        Some(p) => AgentConfig::from_file(p)?,
        None => AgentConfig::default(),
    };
    if let Some(a) = cli.otlp_grpc_address {
        cfg.otlp.grpc_address = a;
    }
    if let Some(a) = cli.otlp_http_address {
        cfg.otlp.http_address = a;
    }
    if let Some(n) = cli.otlp_max_request_bytes {
        cfg.otlp.max_request_bytes = n;
    }
    if let Some(a) = cli.web_listen_address {
        cfg.web.listen_address = a;
    }
    if let Some(d) = cli.web_read_header_timeout {
        cfg.http_server.read_header_timeout = d;
    }
    if let Some(d) = cli.web_request_timeout {
        cfg.http_server.request_timeout = d;
    }
    if let Some(n) = cli.web_max_concurrent_requests {
        cfg.http_server.max_concurrent_requests = n;
    }
    if let Some(n) = cli.web_max_inflight_request_bytes {
        cfg.http_server.max_inflight_request_bytes = n;
    }
    if let Some(f) = cli.web_config_file.clone() {
        cfg.http_server.web_config_file = Some(f);
    }
    if let Some(a) = cli.prometheus_exporter_listen_address {
        cfg.prometheus_exporter.listen_address = Some(a);
    }
    if let Some(d) = cli.prometheus_exporter_expiration {
        cfg.prometheus_exporter.expiration = d;
    }
    if let Some(f) = cli.scrape_config_file.clone() {
        cfg.scrape.config_file = Some(f);
    }
    if let Some(a) = cli.push_listen_address {
        cfg.push.listen_address = Some(a);
    }
    if let Some(f) = cli.push_persistence_file.clone() {
        cfg.push.persistence_file = Some(f);
    }
    if let Some(d) = cli.push_interval {
        cfg.push.interval = d;
    }
    if let Some(n) = cli.push_max_series {
        cfg.push.max_series = n;
    }
    if let Some(d) = cli.self_monitoring_interval {
        cfg.self_monitoring.interval = d;
    }
    if !cli.remote_write_url.is_empty() {
        cfg.remote_write.endpoints = cli
            .remote_write_url
            .iter()
            .map(|u| EndpointConfig {
                url: u.clone(),
                protocol: cli.remote_write_protocol.unwrap_or_default(),
                authorization: cli.remote_write_bearer_token_file.clone().map(|f| {
                    strata_agent::config::AuthorizationConfig { credentials_file: Some(f), ..Default::default() }
                }),
                tls_config: (cli.remote_write_tls_ca_file.is_some()
                    || cli.remote_write_tls_cert_file.is_some()
                    || cli.remote_write_tls_key_file.is_some())
                .then(|| strata_server::tls::TlsClientConfig {
                    ca_file: cli.remote_write_tls_ca_file.clone(),
                    cert_file: cli.remote_write_tls_cert_file.clone(),
                    key_file: cli.remote_write_tls_key_file.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
    } else if let Some(p) = cli.remote_write_protocol {
        for e in &mut cfg.remote_write.endpoints {
            e.protocol = p;
        }
    }
    if let Some(n) = cli.remote_write_shards {
        cfg.remote_write.shards = n;
    }
    for kv in &cli.label {
        let (k, v) = kv.split_once('=').with_context(|| format!("invalid --label {kv:?}: expected name=value"))?;
        cfg.labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    if let Some(p) = &cli.queue_path {
        cfg.queue.path = p.clone();
    }
    if let Some(n) = cli.queue_max_bytes {
        cfg.queue.max_bytes = n;
    }
    if let Some(n) = cli.queue_segment_bytes {
        cfg.queue.segment_bytes = n;
    }
    if let Some(f) = cli.queue_fsync {
        cfg.queue.fsync = f;
    }
    if let Some(t) = cli.batch_timeout {
        cfg.batch.timeout = t;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _tracing = strata_server::trace::init("strata-agent", &cli.log_level)?;
    strata_server::process::set_build_info(env!("CARGO_PKG_VERSION"), env!("STRATA_REVISION"));
    let cfg = build_config(&cli)?;
    if cli.config_check {
        let labels: Vec<String> = cfg.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let endpoints: Vec<&str> = cfg.remote_write.endpoints.iter().map(|e| e.url.as_str()).collect();
        println!(
            "configuration OK: OTLP gRPC {} HTTP {}, web {}, labels {{{}}}, queue {} (max {} bytes), remote write to {}",
            cfg.otlp.grpc_address,
            cfg.otlp.http_address,
            cfg.web.listen_address,
            labels.join(", "),
            cfg.queue.path.display(),
            cfg.queue.max_bytes,
            endpoints.join(", ")
        );
        if let Some(p) = &cfg.scrape.config_file {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let jobs = rt.block_on(async { strata_agent::scrape::load(p) }).map_err(anyhow::Error::msg)?;
            println!("scrape configuration OK: {} jobs in {}", jobs.len(), p.display());
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        strata_agent::run(cfg, async {
            shutdown_signal().await;
            tracing::info!("shutting down");
        })
        .await
    })?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
