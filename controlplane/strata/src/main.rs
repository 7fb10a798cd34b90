mod config_file;
mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_ingest::IngesterConfig;

// Remote write decoding and head appends allocate per label; glibc's
// allocator took ~40 % of an ingester's CPU in the live-shape ingest profile
// (docs/benchmarks.md). Built without transparent huge pages to keep RSS
// proportional to what is in use.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long freed memory stays with the allocator of a store gateway or a
/// querier before it goes back to the OS. A pushed-down aggregation over a
/// month decodes and frees gigabytes in seconds; with mimalloc's default
/// (1 s) the next query faults all of it in again, a fifth of a 30-day
/// dashboard's time in the gateway (docs/benchmarks.md, "30 days"); the
/// querier, which evaluates the raw samples of the newest steps itself,
/// frees and faults in the same way. The cost: RSS stays at the last
/// queries' peak for this long after them. `MIMALLOC_PURGE_DELAY` (ms)
/// overrides it.
const QUERY_PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// `mi_option_purge_delay` in `mimalloc.h` (v2 and v3); the bindings
/// leave it out.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn delay_allocator_purge(ms: std::ffi::c_long) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options (an integer it reads when
        // it schedules a purge); any value is valid.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
    }
}

/// Strata control plane. Every flag can also be set in the YAML file given
/// by --config.file (keys are flag names, e.g. `raft.node-id: 1`); flags on
/// the command line win.
#[derive(Parser)]
#[command(name = "strata", version = strata_revision::version!())]
struct Cli {
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long = "log.level", global = true, default_value = "info", env = "STRATA_LOG_LEVEL")]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at startup: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Raft-replicated ingester: remote write + OTLP in, head served over the StoreAPI.
    Ingester(IngesterArgs),
    /// Prometheus HTTP API + remote read over the StoreAPI of ingesters and stores.
    Querier(QuerierArgs),
    /// Query frontend in front of several queriers: range queries split by day, the parts cached
    /// (in process or memcached) and spread over the queriers; everything else passed on.
    QueryFrontend(QueryFrontendArgs),
    /// Store gateway: serves the Parquet blocks in object storage over the StoreAPI.
    Store(StoreArgs),
    /// Compactor: merges small blocks into larger ones, applies retention (run one per bucket).
    Compact(CompactArgs),
    /// Ruler: evaluates Prometheus recording and alerting rules through the query service, writes
    /// the results back through remote write and sends alerts to Alertmanager (`strata ruler test`
    /// runs rule unit tests as `promtool test rules`).
    Ruler(RulerArgs),
    /// The whole stack on this machine: 3 data planes, 3 ingesters, store,
    /// querier + dashboard on :9090 and the load generator (Ctrl-C stops it).
    Demo(demo::DemoArgs),
    /// Prints the bcrypt hash of a password read from standard input, for
    /// `basic_auth_users` in a --web.config.file (never pass it as an argument: ps shows arguments).
    HashPassword {
        /// bcrypt cost (4-31; each step doubles the time a login takes).
        #[arg(long = "cost", default_value_t = 10)]
        cost: u32,
    },
    /// Prints the hex SHA-256 of a bearer token read from standard input, for
    /// `token_sha256` in a --web.config.file.
    HashToken,
    /// Checks a --web.config.file (as `promtool check web-config`): its
    /// syntax, credentials and, with tls_server_config, that the
    /// certificate and key load and match. Exit status 1 naming the problem.
    CheckWebConfig {
        /// The web config file(s).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
}

/// The one line on standard input (without its line ending).
fn secret_from_stdin(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).with_context(|| format!("cannot read the {what} from standard input"))?;
    let s = line.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(!s.is_empty(), "no {what} on standard input");
    Ok(s)
}

#[derive(clap::Args)]
struct QuerierArgs {
    /// Prometheus HTTP API, remote read, SQL, the dashboard and /metrics.
    #[arg(long = "web.listen-address", default_value = "127.0.0.1:9090")]
    web_listen: SocketAddr,
    /// StoreAPI gRPC endpoint (ingester or store); repeat for each.
    #[arg(long = "endpoint", default_value = "127.0.0.1:9095")]
    endpoints: Vec<String>,
    /// Longest a query may run.
    #[arg(long = "query.timeout", default_value = "2m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Most samples one query may load.
    #[arg(long = "query.max-samples", default_value_t = 50_000_000)]
    max_samples: usize,
    /// PromQL queries evaluated at once; more wait in line, and the wait
    /// counts against their timeout.
    #[arg(long = "query.max-concurrency", default_value_t = 20)]
    max_concurrency: usize,
    /// How far back an instant selector looks for the latest sample.
    #[arg(long = "query.lookback-delta", default_value = "5m", value_parser = humantime::parse_duration)]
    lookback_delta: Duration,
    /// Answer with a warning when a shard is unreachable (false: fail the query).
    #[arg(long = "query.partial-response", default_value_t = true, action = clap::ArgAction::Set)]
    partial_response: bool,
    /// Let store gateways compute `sum`/`min`/`max`/`count`/`group` of one
    /// selector next to the blocks, for the steps their blocks cover
    /// (false: always read raw samples).
    #[arg(long = "query.pushdown", default_value_t = true, action = clap::ArgAction::Set)]
    pushdown: bool,
    /// Serve `POST /api/v1/sql` (DataFusion over the blocks in the `--objstore.*` bucket).
    #[arg(long = "sql.enabled", default_value_t = false, action = clap::ArgAction::Set)]
    sql_enabled: bool,
    /// Rows one SQL query returns at most.
    #[arg(long = "sql.max-rows", default_value_t = 10_000)]
    sql_max_rows: usize,
    /// Bytes all running SQL queries' operators may hold together; past it a query fails with "Resources exhausted".
    #[arg(long = "sql.max-memory", default_value_t = 512 << 20)]
    sql_max_memory: usize,
    /// SQL queries running at once; more wait within their timeout (then 503).
    #[arg(long = "sql.max-concurrency", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    sql_max_concurrency: u64,
    /// Worker threads of SQL's own runtime (kept apart from PromQL's).
    #[arg(long = "sql.threads", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    sql_threads: u64,
    #[command(flatten)]
    http: strata_server::HttpServerArgs,
    #[command(flatten)]
    grpc_client_tls: strata_server::grpc::GrpcClientTlsArgs,
    /// Per-tenant query limits reloaded at run time (YAML: defaults and tenants with max_samples_per_query,
    /// max_query_length, max_concurrent_queries). Re-read on SIGHUP and when it changes.
    #[arg(long = "limits.overrides-file")]
    overrides_file: Option<PathBuf>,
    /// The blocks bucket, for SQL (same flags as the ingesters and stores).
    #[command(flatten)]
    objstore: ObjstoreArgs,
    /// A `strata ruler` whose rules and alerts /api/v1/rules and /api/v1/alerts serve; repeat for each.
    #[arg(long = "ruler.url")]
    ruler_urls: Vec<String>,
    #[command(flatten)]
    http_client_tls: strata_server::http_client::HttpClientTlsArgs,
    #[command(flatten)]
    frontend: FrontendArgs,
}

/// The query frontend's flags: the querier's built-in one and `strata query-frontend`.
#[derive(clap::Args)]
struct FrontendArgs {
    /// Range queries are split at multiples of this (UTC days by default), the parts evaluated in
    /// parallel and cached one by one; `0s`: not split.
    #[arg(long = "query.split-interval", default_value = "24h", value_parser = humantime::parse_duration)]
    split_interval: Duration,
    /// Results reading data newer than this (before now) are not cached: such data may still arrive.
    /// Keep it above how late samples reach the ingesters (their out-of-order window, agents' retries).
    #[arg(long = "query.cache-freshness", default_value = "10m", value_parser = humantime::parse_duration)]
    cache_freshness: Duration,
    /// Bytes the in-process results cache holds (`0`: none); unused with memcached.
    #[arg(long = "query.results-cache.max-bytes", default_value = "128MB", value_parser = strata_compactor::parse_size)]
    results_cache_max_bytes: u64,
    /// memcached servers (host:port, comma-separated) shared by several queriers as the results cache.
    #[arg(long = "query.results-cache.memcached.addresses", value_delimiter = ',')]
    results_cache_memcached: Vec<String>,
    /// Longest one memcached operation may take; past it the cache is bypassed.
    #[arg(long = "query.results-cache.memcached.timeout", default_value = "200ms", value_parser = humantime::parse_duration)]
    results_cache_memcached_timeout: Duration,
    /// Largest cached result (memcached's default item size is 1 MiB).
    #[arg(long = "query.results-cache.max-item-size", default_value = "1MB", value_parser = strata_compactor::parse_size)]
    results_cache_max_item: u64,
    /// How long a cached result is kept.
    #[arg(long = "query.results-cache.ttl", default_value = "7d", value_parser = humantime::parse_duration)]
    results_cache_ttl: Duration,
}

impl FrontendArgs {
    fn config(self) -> strata_querier::query_frontend::FrontendConfig {
        strata_querier::query_frontend::FrontendConfig {
            split_interval: self.split_interval,
            freshness: self.cache_freshness,
            cache: strata_querier::results_cache::ResultsCacheConfig {
                max_bytes: self.results_cache_max_bytes as usize,
                memcached: self.results_cache_memcached.into_iter().filter(|m| !m.is_empty()).collect(),
                memcached_timeout: self.results_cache_memcached_timeout,
                max_item_bytes: self.results_cache_max_item as usize,
                ttl: self.results_cache_ttl,
            },
        }
    }
}

/// `strata query-frontend`.
#[derive(clap::Args)]
struct QueryFrontendArgs {
    /// The Prometheus HTTP API (range queries split and cached, the rest passed on) and /metrics.
    #[arg(long = "web.listen-address", default_value = "127.0.0.1:9093")]
    web_listen: SocketAddr,
    /// A querier's base URL (http://host:9090); repeat or comma-separate for several, used round-robin.
    #[arg(long = "query-frontend.downstream-url", value_delimiter = ',', required = true)]
    downstream: Vec<String>,
    /// Longest a query may run (the queriers get what is left of it).
    #[arg(long = "query.timeout", default_value = "2m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The queriers' --query.lookback-delta (which steps read data too recent to cache).
    #[arg(long = "query.lookback-delta", default_value = "5m", value_parser = humantime::parse_duration)]
    lookback_delta: Duration,
    #[command(flatten)]
    frontend: FrontendArgs,
    #[command(flatten)]
    http: strata_server::HttpServerArgs,
    #[command(flatten)]
    http_client_tls: strata_server::http_client::HttpClientTlsArgs,
}

#[derive(clap::Args)]
struct IngesterArgs {
    /// This node's Raft id (≥ 1).
    #[arg(long = "raft.node-id")]
    node_id: u64,
    /// Initial voters as id=host:port (gRPC addresses), comma-separated.
    #[arg(long = "raft.peers", default_value = "")]
    peers: String,
    /// How often the leader sends heartbeats.
    #[arg(long = "raft.heartbeat-interval", default_value = "200ms", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// A follower without heartbeats for this long (randomised up to 2×) starts an election.
    #[arg(long = "raft.election-timeout", default_value = "1s", value_parser = humantime::parse_duration)]
    election_timeout: Duration,
    /// Local address of this node's connections to its peers (Raft, forwarded writes); default: chosen by the OS.
    #[arg(long = "raft.source-address")]
    raft_source: Option<std::net::IpAddr>,
    /// Snapshot the head and purge the log after this many entries.
    #[arg(long = "raft.snapshot-logs", default_value_t = 20_000)]
    snapshot_logs: u64,
    /// Log entries kept after a snapshot, so briefly lagging followers catch up from the log.
    #[arg(long = "raft.keep-logs", default_value_t = 1000)]
    keep_logs: u64,
    /// Raft RPC (between ingesters) and the StoreAPI (for queriers).
    #[arg(long = "grpc.listen-address", default_value = "127.0.0.1:9095")]
    grpc_listen: SocketAddr,
    /// Remote write, OTLP/HTTP, admin API, /metrics, /-/ready, /-/healthy.
    #[arg(long = "web.listen-address", default_value = "127.0.0.1:9009")]
    web_listen: SocketAddr,
    /// Raft log, vote and snapshots.
    #[arg(long = "storage.path", default_value = "./data/ingester")]
    storage_path: PathBuf,
    /// Out-of-order samples (older than their series' last sample) are accepted
    /// this far behind the tenant's newest sample.
    #[arg(long = "ingest.ooo-window", default_value = "10m", value_parser = humantime::parse_duration)]
    ooo_window: Duration,
    /// In-order samples are accepted this far behind the tenant's newest
    /// sample; older ones are "out of bounds" (Prometheus: half a block).
    #[arg(long = "ingest.appendable-window", default_value = "1h", value_parser = humantime::parse_duration)]
    appendable_window: Duration,
    /// Per tenant: exemplars kept (a circular buffer, the oldest go first); 0 keeps none.
    #[arg(long = "storage.max-exemplars", default_value_t = 100_000)]
    max_exemplars: usize,
    /// Shard name reported to queriers (replicas of one Raft group share it).
    #[arg(long = "shard", default_value = "shard-0")]
    shard: String,
    /// Per tenant: series in the head at most (new series beyond it are rejected).
    #[arg(long = "limits.max-series", default_value_t = 1_000_000)]
    max_series: usize,
    /// Labels per series at most (`__name__` included).
    #[arg(long = "limits.max-labels-per-series", default_value_t = 30)]
    max_labels: usize,
    /// Longest label name, in bytes.
    #[arg(long = "limits.max-label-name-length", default_value_t = 1024)]
    max_label_name: usize,
    /// Longest label value, in bytes.
    #[arg(long = "limits.max-label-value-length", default_value_t = 4096)]
    max_label_value: usize,
    /// Samples in one write request at most.
    #[arg(long = "limits.max-samples-per-request", default_value_t = 1_000_000)]
    max_samples: usize,
    /// Refuse samples more than this far ahead of this node's clock (0s: accept any).
    #[arg(long = "limits.creation-grace-period", default_value = "10m", value_parser = humantime::parse_duration)]
    creation_grace_period: Duration,
    /// Largest accepted request body in bytes (compressed).
    #[arg(long = "limits.max-request-bytes", default_value_t = 32 << 20)]
    max_request_bytes: usize,
    /// Per-tenant limits reloaded at run time (YAML: defaults and tenants with ingestion_rate samples/s and
    /// ingestion_burst; over the rate: 429 with Retry-After). Re-read on SIGHUP and when it changes.
    #[arg(long = "limits.overrides-file")]
    overrides_file: Option<PathBuf>,
    /// Block range: the head is cut into blocks of this span (Prometheus: 2h).
    #[arg(long = "block.duration", default_value = "2h", value_parser = humantime::parse_duration)]
    block_duration: Duration,
    /// A range is cut once the newest sample is this far past its end (default: half the block duration).
    #[arg(long = "block.grace", value_parser = humantime::parse_duration)]
    block_grace: Option<Duration>,
    /// A tenant without new samples for this long is flushed entirely (default: the block duration).
    #[arg(long = "block.idle-flush", value_parser = humantime::parse_duration)]
    block_idle_flush: Option<Duration>,
    /// How long an uploaded block stays in memory (until store gateways have synced it).
    #[arg(long = "block.retain-after-upload", default_value = "5m", value_parser = humantime::parse_duration)]
    block_retain: Duration,
    /// Bytes of cut blocks waiting for their upload (spilled to local disk) past which writes get 503 + Retry-After.
    #[arg(long = "ingest.max-pending-bytes", default_value_t = 1 << 30)]
    max_pending_bytes: u64,
    /// Block files larger than this are uploaded in parts of this size (S3: at least 5 MiB).
    #[arg(long = "block.upload-part-size", default_value_t = 16 << 20)]
    upload_part_size: usize,
    /// Longest wait between two attempts to upload a block (the wait doubles from 1s, with jitter).
    #[arg(long = "block.upload-backoff-max", default_value = "2m", value_parser = humantime::parse_duration)]
    upload_backoff_max: Duration,
    /// Series cut out of the head per Raft entry: a tenant with more is cut in parts (one block each), so writes never wait behind a cut of the whole head.
    #[arg(long = "block.cut-part-series", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    cut_part_series: u64,
    #[command(flatten)]
    objstore: ObjstoreArgs,
    #[command(flatten)]
    http: strata_server::HttpServerArgs,
    #[command(flatten)]
    grpc_tls: strata_server::grpc::GrpcServerTlsArgs,
    #[command(flatten)]
    grpc_client_tls: strata_server::grpc::GrpcClientTlsArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ObjstoreType {
    Filesystem,
    S3,
}

/// Where blocks live; the same flags on ingesters (upload) and stores (read).
#[derive(clap::Args)]
struct ObjstoreArgs {
    /// Object storage kind: a local directory or an S3-compatible bucket.
    #[arg(long = "objstore.type", value_enum, default_value = "filesystem")]
    kind: ObjstoreType,
    /// Directory for `--objstore.type=filesystem`.
    #[arg(long = "objstore.path", default_value = "./data/objstore")]
    path: PathBuf,
    /// Bucket name for `--objstore.type=s3`.
    #[arg(long = "objstore.s3.bucket", default_value = "")]
    s3_bucket: String,
    /// S3 endpoint, e.g. http://minio:9000 (default: AWS_ENDPOINT, else AWS S3; http:// disables TLS).
    #[arg(long = "objstore.s3.endpoint")]
    s3_endpoint: Option<String>,
    /// Region for `--objstore.type=s3` (most S3-compatible servers accept any).
    #[arg(long = "objstore.s3.region", default_value = "us-east-1")]
    s3_region: String,
    /// Access key (default: AWS_ACCESS_KEY_ID).
    #[arg(long = "objstore.s3.access-key-id")]
    s3_access_key_id: Option<String>,
    /// Secret key: only from --config.file (default: AWS_SECRET_ACCESS_KEY); refused on the command line, where ps
    /// shows it.
    #[arg(long = "objstore.s3.secret-access-key")]
    s3_secret_access_key: Option<String>,
    /// Put every object under this prefix.
    #[arg(long = "objstore.s3.prefix", default_value = "")]
    s3_prefix: String,
    /// Virtual-hosted-style addressing (bucket.endpoint/key) instead of path style.
    #[arg(long = "objstore.s3.virtual-hosted-style", default_value_t = false, action = clap::ArgAction::Set)]
    s3_virtual_hosted_style: bool,
    /// CA certificates (PEM) that verify an https --objstore.s3.endpoint signed by a private CA (default: the system's).
    #[arg(long = "objstore.s3.ca-file")]
    s3_ca_file: Option<std::path::PathBuf>,
}

impl ObjstoreArgs {
    fn bucket(self) -> strata_blocks::BucketConfig {
        match self.kind {
            ObjstoreType::Filesystem => strata_blocks::BucketConfig::Filesystem { path: self.path },
            ObjstoreType::S3 => strata_blocks::BucketConfig::S3(strata_blocks::S3Config {
                bucket: self.s3_bucket,
                endpoint: self.s3_endpoint,
                region: self.s3_region,
                access_key_id: self.s3_access_key_id,
                secret_access_key: self.s3_secret_access_key,
                prefix: self.s3_prefix,
                virtual_hosted_style: self.s3_virtual_hosted_style,
                ca_file: self.s3_ca_file,
            }),
        }
    }
}

#[derive(clap::Args)]
struct StoreArgs {
    /// StoreAPI for queriers.
    #[arg(long = "grpc.listen-address", default_value = "127.0.0.1:9096")]
    grpc_listen: SocketAddr,
    /// /metrics, /-/ready, /-/healthy.
    #[arg(long = "web.listen-address", default_value = "127.0.0.1:9097")]
    web_listen: SocketAddr,
    #[command(flatten)]
    objstore: ObjstoreArgs,
    /// How often the bucket is listed for new blocks.
    #[arg(long = "store.sync-interval", default_value = "30s", value_parser = humantime::parse_duration)]
    sync_interval: Duration,
    /// Shard name reported to queriers (store replicas of one bucket share it).
    #[arg(long = "shard", default_value = "blocks")]
    shard: String,
    /// Series one StoreAPI Series call may match before it is refused (0: no limit).
    #[arg(long = "store.max-series-per-query", default_value_t = 1_000_000)]
    max_series: usize,
    /// Samples one Series call may load (0: only the querier's --query.max-samples, sent with each call).
    #[arg(long = "store.max-samples-per-query", default_value_t = 0)]
    max_samples: u64,
    /// Bytes one Series call may send (encoded chunks, 16 per raw sample; 0: no limit).
    #[arg(long = "store.max-bytes-per-query", default_value_t = 1 << 30)]
    max_bytes: u64,
    /// Block data (Parquet pages) read for queries kept in memory for the next reads, at most this many
    /// bytes (`0`: none); blocks never change, so entries stay valid until evicted.
    #[arg(long = "store.cache.max-bytes", default_value = "256MB", value_parser = strata_compactor::parse_size)]
    cache_max_bytes: u64,
    #[command(flatten)]
    http: strata_server::HttpServerArgs,
    #[command(flatten)]
    grpc_tls: strata_server::grpc::GrpcServerTlsArgs,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct RulerArgs {
    #[command(subcommand)]
    cmd: Option<RulerCmd>,
    /// Rule files (Prometheus' format; a glob) for the default tenant; repeat for more.
    #[arg(long = "rule.files")]
    rule_files: Vec<String>,
    /// A directory holding one subdirectory of rule files (*.yml, *.yaml) per tenant, named as the tenant.
    #[arg(long = "rule.tenants-dir")]
    tenants_dir: Option<PathBuf>,
    /// Interval of groups that set none.
    #[arg(long = "evaluation-interval", default_value = "1m", value_parser = humantime::parse_duration)]
    evaluation_interval: Duration,
    /// StoreAPI gRPC endpoint (ingester or store) rules read from; repeat for each (as the querier's).
    #[arg(long = "endpoint", default_value = "127.0.0.1:9095")]
    endpoints: Vec<String>,
    /// Remote write URL of the ingesters (e.g. http://ingester:9009/api/v1/write) where rule results go;
    /// repeat for alternatives, tried in turn.
    #[arg(long = "remote-write.url")]
    remote_write_urls: Vec<String>,
    /// Bearer token (a file, re-read on every write) for --remote-write.url.
    #[arg(long = "remote-write.bearer-token-file")]
    remote_write_bearer_token_file: Option<PathBuf>,
    /// Alertmanager base URL (API v2 at <url>/api/v2/alerts); repeat for each.
    #[arg(long = "alertmanager.url")]
    alertmanager_urls: Vec<String>,
    /// Alerts waiting for Alertmanager at most; beyond it the oldest are dropped (counted).
    #[arg(long = "alertmanager.notification-queue-capacity", default_value_t = 10_000)]
    notification_queue_capacity: usize,
    /// External label k=v added to alerts and written series; repeat for each.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// URL the ruler is reached at (generator URLs of alerts, `$externalURL`).
    #[arg(long = "web.external-url")]
    external_url: Option<String>,
    /// Minimum time before an alert is re-sent to Alertmanager.
    #[arg(long = "rules.alert.resend-delay", default_value = "1m", value_parser = humantime::parse_duration)]
    resend_delay: Duration,
    /// Longest ruler outage over which the `for` state of alerts is restored from ALERTS_FOR_STATE.
    #[arg(long = "rules.alert.for-outage-tolerance", default_value = "1h", value_parser = humantime::parse_duration)]
    for_outage_tolerance: Duration,
    /// Least time an alert with a restored `for` state waits before firing.
    #[arg(long = "rules.alert.for-grace-period", default_value = "10m", value_parser = humantime::parse_duration)]
    for_grace_period: Duration,
    /// Serve the Cortex/Mimir rule configuration API (/api/v1/rules/{namespace}[/{group}]), keeping uploaded
    /// groups in the --objstore.* bucket under __rules__/ (share the bucket with every ruler replica).
    #[arg(long = "rule.api", default_value_t = true, action = clap::ArgAction::Set)]
    rule_api: bool,
    /// How often uploaded rule groups are read again from the bucket (changes made at this replica apply at once).
    #[arg(long = "rule.storage.poll-interval", default_value = "1m", value_parser = humantime::parse_duration)]
    rule_storage_poll_interval: Duration,
    #[command(flatten)]
    objstore: ObjstoreArgs,
    /// Per-tenant limits (ruler_max_rule_groups_per_tenant, ruler_max_rules_per_rule_group,
    /// ruler_min_evaluation_interval for uploads; query limits), reloaded when the file changes.
    #[arg(long = "limits.overrides-file")]
    overrides_file: Option<PathBuf>,
    /// /api/v1/rules, /api/v1/alerts, /-/reload, /metrics.
    #[arg(long = "web.listen-address", default_value = "127.0.0.1:9099")]
    web_listen: SocketAddr,
    /// Longest one rule's query may run.
    #[arg(long = "query.timeout", default_value = "2m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Most samples one rule's query may load.
    #[arg(long = "query.max-samples", default_value_t = 50_000_000)]
    max_samples: usize,
    /// How far back an instant selector looks for the latest sample.
    #[arg(long = "query.lookback-delta", default_value = "5m", value_parser = humantime::parse_duration)]
    lookback_delta: Duration,
    #[command(flatten)]
    http: strata_server::HttpServerArgs,
    #[command(flatten)]
    grpc_client_tls: strata_server::grpc::GrpcClientTlsArgs,
    #[command(flatten)]
    http_client_tls: strata_server::http_client::HttpClientTlsArgs,
}

#[derive(Subcommand)]
enum RulerCmd {
    /// Runs rule unit tests (`promtool test rules` format, output and exit codes).
    Test {
        /// Test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct CompactArgs {
    /// /metrics, /-/ready, /-/healthy.
    #[arg(long = "web.listen-address", default_value = "127.0.0.1:9098")]
    web_listen: SocketAddr,
    #[command(flatten)]
    objstore: ObjstoreArgs,
    /// Blocks inside one aligned window of this length are merged into one block.
    #[arg(long = "compaction.range", default_value = "24h", value_parser = humantime::parse_duration)]
    range: Duration,
    /// A window is compacted once it ended this long ago (more than the ingesters' --block.grace).
    #[arg(long = "compaction.delay", default_value = "2h", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Time between passes.
    #[arg(long = "compaction.interval", default_value = "5m", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Blocks replaced or expired are deleted this long after being hidden (more than the stores' --store.sync-interval).
    #[arg(long = "compaction.delete-delay", default_value = "15m", value_parser = humantime::parse_duration)]
    delete_delay: Duration,
    /// Delete data older than this (0s: keep everything).
    #[arg(long = "retention", default_value = "0s", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// Most bytes of blocks to keep in the bucket; beyond it the oldest blocks are deleted first
    /// (as Prometheus' --storage.tsdb.retention.size: bytes, or with B, KB, MB, GB, TB, PB, powers
    /// of 1024; KiB… accepted too). 0: no limit.
    #[arg(long = "retention.size", default_value = "0", value_parser = strata_compactor::parse_size)]
    retention_size: u64,
    /// Write 5-minute downsampled blocks of raw blocks whose data ended this long ago.
    #[arg(long = "downsampling.5m-after", default_value = "40h", value_parser = humantime::parse_duration)]
    downsampling_5m_after: Duration,
    /// Write 1-hour downsampled blocks of blocks whose data ended this long ago.
    #[arg(long = "downsampling.1h-after", default_value = "10d", value_parser = humantime::parse_duration)]
    downsampling_1h_after: Duration,
    /// Write no downsampled blocks (those written stay and are still read).
    #[arg(long = "downsampling.disable", default_value_t = false)]
    downsampling_disable: bool,
    /// Delete raw blocks whose data ended this long ago (0s: keep them; --retention applies too).
    #[arg(long = "retention.resolution-raw", default_value = "0s", value_parser = humantime::parse_duration)]
    retention_raw: Duration,
    /// Delete 5-minute blocks whose data ended this long ago (0s: keep them).
    #[arg(long = "retention.resolution-5m", default_value = "0s", value_parser = humantime::parse_duration)]
    retention_5m: Duration,
    /// Delete 1-hour blocks whose data ended this long ago (0s: keep them).
    #[arg(long = "retention.resolution-1h", default_value = "0s", value_parser = humantime::parse_duration)]
    retention_1h: Duration,
    /// Run one pass and exit.
    #[arg(long = "once", default_value_t = false)]
    once: bool,
    #[command(flatten)]
    http: strata_server::HttpServerArgs,
}

fn main() -> anyhow::Result<()> {
    let args = config_file::expand(std::env::args().collect())?;
    let cli = Cli::parse_from(args);
    let service = match &cli.cmd {
        Cmd::Ingester(_) => "strata-ingester",
        Cmd::Querier(_) => "strata-querier",
        Cmd::QueryFrontend(_) => "strata-query-frontend",
        Cmd::Store(_) => "strata-store",
        Cmd::Compact(_) => "strata-compactor",
        Cmd::Ruler(_) => "strata-ruler",
        _ => "strata",
    };
    // Spans are exported only when OTEL_EXPORTER_OTLP_*ENDPOINT is set
    // (docs/tracing.md); the guard flushes them at exit.
    let _tracing = strata_server::trace::init(service, &cli.log_level)?;
    strata_server::process::set_build_info(env!("CARGO_PKG_VERSION"), env!("STRATA_REVISION"));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.cmd {
        Cmd::Ingester(a) => {
            let peers =
                strata_ingest::parse_peers(&a.peers).map_err(|e| anyhow::anyhow!("invalid --raft.peers: {e}"))?;
            anyhow::ensure!(a.node_id >= 1, "--raft.node-id must be at least 1");
            let mut cfg = IngesterConfig {
                node_id: a.node_id,
                peers,
                grpc_listen: a.grpc_listen,
                web_listen: a.web_listen,
                storage_path: a.storage_path,
                max_request_bytes: a.max_request_bytes,
                shard: a.shard,
                snapshot_logs: a.snapshot_logs,
                keep_logs: a.keep_logs,
                heartbeat: a.heartbeat,
                election_timeout: a.election_timeout,
                raft_source: a.raft_source,
                grpc_tls: a.grpc_tls.config().map_err(anyhow::Error::msg)?,
                peer_tls: a.grpc_client_tls.config(),
                blocks: strata_ingest::BlockConfig {
                    duration: a.block_duration,
                    grace: a.block_grace.unwrap_or(a.block_duration / 2),
                    idle_flush: a.block_idle_flush.unwrap_or(a.block_duration),
                    retain_after_upload: a.block_retain,
                    upload: strata_blocks::UploadOptions { part_size: a.upload_part_size, ..Default::default() },
                    upload_backoff_max: a.upload_backoff_max,
                    cut_part_series: a.cut_part_series as usize,
                },
                objstore: a.objstore.bucket(),
                http: http_config(a.http)?,
                max_pending_bytes: a.max_pending_bytes,
                overrides_file: a.overrides_file,
                ..Default::default()
            };
            anyhow::ensure!(a.block_duration >= Duration::from_secs(1), "--block.duration must be at least 1s");
            anyhow::ensure!(a.upload_part_size >= 1024, "--block.upload-part-size must be at least 1024 bytes");
            anyhow::ensure!(a.max_pending_bytes > 0, "--ingest.max-pending-bytes must be positive");
            cfg.head.ooo_window_ms = a.ooo_window.as_millis() as i64;
            cfg.head.appendable_window_ms = a.appendable_window.as_millis() as i64;
            cfg.head.max_exemplars = a.max_exemplars;
            cfg.head.limits = strata_model::Limits {
                max_series: a.max_series,
                max_labels_per_series: a.max_labels,
                max_label_name_length: a.max_label_name,
                max_label_value_length: a.max_label_value,
                max_samples_per_request: a.max_samples,
                creation_grace_period_ms: i64::try_from(a.creation_grace_period.as_millis()).unwrap_or(i64::MAX),
            };
            if let Err(e) = rt.block_on(strata_ingest::run(cfg, shutdown_signal())) {
                // Exit non-zero promptly (a supervisor restarts the node)
                // even if a blocking task is stuck on a failing disk.
                tracing::error!(error = %e, "strata ingester failed");
                rt.shutdown_timeout(Duration::from_secs(2));
                eprintln!("Error: {e}");
                std::process::exit(1);
            }
        }
        Cmd::Querier(a) => {
            delay_allocator_purge(QUERY_PURGE_DELAY_MS);
            let endpoints = split_endpoints(&a.endpoints);
            anyhow::ensure!(!endpoints.is_empty(), "at least one --endpoint is required");
            anyhow::ensure!(a.max_concurrency >= 1, "--query.max-concurrency must be at least 1");
            let cfg = strata_querier::QuerierConfig {
                web_listen: a.web_listen,
                endpoints,
                timeout: a.timeout,
                max_samples: a.max_samples,
                lookback_delta: a.lookback_delta,
                partial_response: a.partial_response,
                pushdown: a.pushdown,
                sql_bucket: a.sql_enabled.then(|| a.objstore.bucket()),
                sql_max_rows: a.sql_max_rows,
                sql_max_memory: a.sql_max_memory,
                sql_max_concurrency: a.sql_max_concurrency as usize,
                sql_threads: a.sql_threads as usize,
                max_concurrency: a.max_concurrency,
                http: http_config(a.http)?,
                grpc_client_tls: a.grpc_client_tls.config(),
                overrides_file: a.overrides_file,
                ruler_urls: a.ruler_urls,
                http_client_tls: a.http_client_tls.config(),
                frontend: a.frontend.config(),
                ..Default::default()
            };
            rt.block_on(strata_querier::run(cfg, axum::Router::new(), shutdown_signal()))?;
        }
        Cmd::QueryFrontend(a) => {
            let cfg = strata_querier::frontend_server::FrontendServerConfig {
                web_listen: a.web_listen,
                downstream: a.downstream.into_iter().filter(|u| !u.is_empty()).collect(),
                lookback_delta: a.lookback_delta,
                timeout: a.timeout,
                frontend: a.frontend.config(),
                http: http_config(a.http)?,
                http_client_tls: a.http_client_tls.config(),
            };
            rt.block_on(strata_querier::frontend_server::run(cfg, shutdown_signal()))?;
        }
        Cmd::Store(a) => {
            delay_allocator_purge(QUERY_PURGE_DELAY_MS);
            let cfg = strata_store::StoreConfig {
                grpc_listen: a.grpc_listen,
                web_listen: a.web_listen,
                objstore: a.objstore.bucket(),
                sync_interval: a.sync_interval,
                shard: a.shard,
                http: http_config(a.http)?,
                limits: strata_store::SeriesLimits {
                    max_series: a.max_series,
                    max_samples: a.max_samples,
                    max_bytes: a.max_bytes,
                },
                grpc_tls: a.grpc_tls.config().map_err(anyhow::Error::msg)?,
                cache_max_bytes: a.cache_max_bytes,
            };
            rt.block_on(strata_store::run(cfg, shutdown_signal()))?;
        }
        Cmd::Compact(a) => {
            let cfg = strata_compactor::CompactorConfig {
                objstore: a.objstore.bucket(),
                web_listen: a.web_listen,
                interval: a.interval,
                range: a.range,
                delay: a.delay,
                retention: a.retention,
                retention_size: a.retention_size,
                delete_delay: a.delete_delay,
                downsampling: {
                    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                    let on = !a.downsampling_disable;
                    strata_compactor::DownsamplePlan {
                        after_5m_ms: on.then(|| ms(a.downsampling_5m_after)),
                        after_1h_ms: on.then(|| ms(a.downsampling_1h_after)),
                        retention_raw_ms: ms(a.retention_raw),
                        retention_5m_ms: ms(a.retention_5m),
                        retention_1h_ms: ms(a.retention_1h),
                    }
                },
                once: a.once,
                http: http_config(a.http)?,
            };
            rt.block_on(strata_compactor::run(cfg, shutdown_signal()))?;
        }
        Cmd::Ruler(a) => {
            if let Some(RulerCmd::Test { files }) = a.cmd {
                let code = strata_ruler::unit_test::run_files(&files, &mut std::io::stdout(), &mut std::io::stderr());
                std::process::exit(code);
            }
            anyhow::ensure!(
                !a.rule_files.is_empty() || a.tenants_dir.is_some() || a.rule_api,
                "no rules: give --rule.files GLOB or --rule.tenants-dir DIR, or keep --rule.api on"
            );
            let endpoints = split_endpoints(&a.endpoints);
            anyhow::ensure!(!endpoints.is_empty(), "at least one --endpoint is required");
            let mut external_labels = std::collections::BTreeMap::new();
            for l in &a.labels {
                let (k, v) = l.split_once('=').with_context(|| format!("--label {l:?}: expected name=value"))?;
                anyhow::ensure!(strata_ruler::rule_file::valid_label_name(k), "--label {l:?}: invalid label name");
                external_labels.insert(k.to_string(), v.trim_matches('"').to_string());
            }
            let external_url =
                a.external_url.unwrap_or_else(|| format!("http://{}", a.web_listen)).trim_end_matches('/').to_string();
            let cfg = strata_ruler::RulerConfig {
                web_listen: a.web_listen,
                rule_files: a.rule_files,
                tenants_dir: a.tenants_dir,
                evaluation_interval: a.evaluation_interval,
                remote_write_urls: a.remote_write_urls,
                remote_write_bearer_token_file: a.remote_write_bearer_token_file,
                alertmanager_urls: a.alertmanager_urls,
                notification_queue_capacity: a.notification_queue_capacity,
                rule_storage: a.rule_api.then(|| a.objstore.bucket()),
                http_client_tls: a.http_client_tls.config(),
                rule_storage_poll_interval: a.rule_storage_poll_interval,
                options: strata_ruler::RulerOptions {
                    external_labels,
                    external_url,
                    resend_delay: a.resend_delay,
                    for_outage_tolerance: a.for_outage_tolerance,
                    for_grace_period: a.for_grace_period,
                },
                query: strata_querier::QuerierConfig {
                    endpoints,
                    timeout: a.timeout,
                    max_samples: a.max_samples,
                    lookback_delta: a.lookback_delta,
                    // A rule over a partial answer would write wrong results.
                    partial_response: false,
                    grpc_client_tls: a.grpc_client_tls.config(),
                    overrides_file: a.overrides_file,
                    // Rules ask for instants at now: nothing to split or cache.
                    frontend: strata_querier::query_frontend::FrontendConfig {
                        split_interval: Duration::ZERO,
                        cache: strata_querier::results_cache::ResultsCacheConfig { max_bytes: 0, ..Default::default() },
                        ..Default::default()
                    },
                    ..Default::default()
                },
                http: http_config(a.http)?,
            };
            rt.block_on(strata_ruler::run(cfg, shutdown_signal()))?;
        }
        Cmd::Demo(a) => rt.block_on(demo::run(a))?,
        Cmd::HashPassword { cost } => {
            let pw = secret_from_stdin("password")?;
            println!("{}", strata_server::auth::hash_password(&pw, cost).map_err(anyhow::Error::msg)?);
        }
        Cmd::HashToken => println!("{}", strata_server::auth::token_sha256_hex(&secret_from_stdin("token")?)),
        Cmd::CheckWebConfig { files } => {
            for f in files {
                let cfg = strata_server::auth::WebConfig::load(&f)?;
                println!("{}: OK ({})", f.display(), cfg.summary());
            }
        }
    }
    Ok(())
}

/// `--endpoint` values, each possibly a comma-separated list.
fn split_endpoints(given: &[String]) -> Vec<String> {
    given.iter().flat_map(|e| e.split(',')).map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect()
}

/// The `--web.*` server flags, checked.
fn http_config(a: strata_server::HttpServerArgs) -> anyhow::Result<strata_server::HttpServerConfig> {
    let cfg = strata_server::HttpServerConfig::from(a);
    cfg.validate().map_err(|e| anyhow::anyhow!("invalid --{e}"))?;
    Ok(cfg)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objstore_flags_from_a_config_file_select_s3() {
        let yaml = "objstore.type: s3\nobjstore.s3.bucket: blocks\nobjstore.s3.endpoint: http://minio:9000\n\
                    objstore.s3.virtual-hosted-style: false\n";
        let mut args = vec!["strata".to_string(), "store".to_string()];
        args.extend(config_file::flags_from_yaml(yaml).unwrap());
        args.push("--objstore.s3.prefix=prod".into());
        let Cmd::Store(a) = Cli::try_parse_from(args).unwrap().cmd else { panic!("not the store command") };
        let want = strata_blocks::BucketConfig::S3(strata_blocks::S3Config {
            bucket: "blocks".into(),
            endpoint: Some("http://minio:9000".into()),
            region: "us-east-1".into(),
            prefix: "prod".into(),
            ..Default::default()
        });
        assert_eq!(a.objstore.bucket(), want);
        let Cmd::Ingester(a) =
            Cli::try_parse_from(["strata", "ingester", "--raft.node-id=1", "--objstore.path=/x"]).unwrap().cmd
        else {
            panic!("not the ingester command")
        };
        assert_eq!(a.objstore.bucket(), strata_blocks::BucketConfig::Filesystem { path: "/x".into() });
        assert!(Cli::try_parse_from(["strata", "store", "--objstore.type=gcs"]).is_err());
    }
}
