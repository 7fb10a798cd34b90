//! Agent configuration: a YAML file (`--config.file`) with every setting
//! also available as a command-line flag (and `STRATA_AGENT_*` environment
//! variable); flags and environment win over the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::queue::FsyncPolicy;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), message: message.into() }
}

/// Which remote write protocol to speak to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Remote write 1.0 only.
    V1,
    /// Remote write 2.0 only.
    V2,
    /// Try 2.0; fall back to 1.0 for good when the receiver answers 415 or
    /// acknowledges without the 2.0 `-Written` headers (a 1.0-only receiver).
    #[default]
    Auto,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    pub grpc_address: SocketAddr,
    pub http_address: SocketAddr,
    /// TLS of the OTLP gRPC receiver (Prometheus' `tls_server_config`:
    /// `cert_file`, `key_file`, `client_ca_file`); the HTTP receiver's
    /// TLS is `http_server.web_config_file`'s.
    pub grpc_tls_config: Option<strata_server::tls::TlsServerConfig>,
    /// Largest accepted OTLP request body (after decompression).
    pub max_request_bytes: usize,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            grpc_address: ([127, 0, 0, 1], 4317).into(),
            http_address: ([127, 0, 0, 1], 4318).into(),
            grpc_tls_config: None,
            max_request_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    pub listen_address: SocketAddr,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { listen_address: ([127, 0, 0, 1], 8888).into() }
    }
}

/// The optional Prometheus exposition endpoint (latest value of every series).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusExporterConfig {
    /// Where to serve `/metrics` (conventionally :8889); off when unset.
    pub listen_address: Option<SocketAddr>,
    /// Series not updated for this long are no longer exposed.
    #[serde(with = "humantime_serde")]
    pub expiration: Duration,
}

impl Default for PrometheusExporterConfig {
    fn default() -> Self {
        PrometheusExporterConfig { listen_address: None, expiration: Duration::from_secs(300) }
    }
}

/// Scraping (docs/dataplane.md#scrape).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeSection {
    /// A Prometheus-format file (`global:`, `scrape_configs:`); relative
    /// `file_sd_configs` paths are read from its directory.
    pub config_file: Option<PathBuf>,
}

/// The Pushgateway-compatible push API (docs/dataplane.md#push).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Where to serve it (the Pushgateway's port is 9091); off when unset.
    pub listen_address: Option<SocketAddr>,
    /// Pushed groups are written here (fsynced) before a push is
    /// acknowledged and restored at start; in memory only when unset.
    pub persistence_file: Option<PathBuf>,
    /// How often every group is forwarded.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Series the pushed groups may hold in all (a push past it gets 400).
    pub max_series: usize,
    /// Largest push body (after decompression).
    pub max_request_bytes: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            listen_address: None,
            persistence_file: None,
            interval: Duration::from_secs(15),
            max_series: 100_000,
            max_request_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub url: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// Extra HTTP headers (e.g. `X-Scope-OrgID`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Basic-auth credentials (Prometheus' `basic_auth`).
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// An `Authorization` header with a scheme and credentials (Prometheus'
    /// `authorization`; `type` defaults to Bearer).
    #[serde(default)]
    pub authorization: Option<AuthorizationConfig>,
    /// TLS for an `https` URL (Prometheus' `tls_config`: `ca_file`,
    /// `cert_file`, `key_file`, `server_name`); without it the system's
    /// CA certificates verify the server. Re-read when the files change.
    #[serde(default)]
    pub tls_config: Option<strata_server::tls::TlsClientConfig>,
}

/// `basic_auth: {username, password | password_file}`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    /// Read on every request, so a rotated password is picked up.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `authorization: {type, credentials | credentials_file}`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub credentials: Option<String>,
    /// Read on every request, so a rotated token is picked up.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

/// Secrets are never printed: only whether they are set.
impl std::fmt::Debug for BasicAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuthConfig")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

impl std::fmt::Debug for AuthorizationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationConfig")
            .field("type", &self.kind)
            .field("credentials", &self.credentials.as_ref().map(|_| "<secret>"))
            .field("credentials_file", &self.credentials_file)
            .finish()
    }
}

/// A secret given inline or in a file (read now, trailing newline dropped).
fn secret(inline: &Option<String>, file: &Option<PathBuf>, what: &str) -> Result<String, String> {
    match (inline, file) {
        (Some(v), None) => Ok(v.clone()),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map(|t| t.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("cannot read {what}_file {}: {e}", p.display())),
        (Some(_), Some(_)) => Err(format!("give {what} or {what}_file, not both")),
        (None, None) => Err(format!("{what} or {what}_file is required")),
    }
}

impl EndpointConfig {
    /// The `Authorization` header value to send now, if any. Files are read
    /// on every call, so rotated credentials take effect without a restart.
    pub fn authorization_header(&self) -> Result<Option<String>, String> {
        authorization_header(&self.basic_auth, &self.authorization)
    }
}

/// The `Authorization` header value of Prometheus' `basic_auth` or
/// `authorization` block (remote-write endpoints and scrape jobs alike).
pub fn authorization_header(
    basic_auth: &Option<BasicAuthConfig>,
    authorization: &Option<AuthorizationConfig>,
) -> Result<Option<String>, String> {
    {
        use base64::Engine;
        match (basic_auth, authorization) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err("give basic_auth or authorization, not both".into()),
            (Some(b), None) => {
                let password = secret(&b.password, &b.password_file, "password")?;
                let pair = format!("{}:{password}", b.username);
                Ok(Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))))
            }
            (None, Some(a)) => {
                let credentials = secret(&a.credentials, &a.credentials_file, "credentials")?;
                Ok(Some(format!("{} {credentials}", a.kind.as_deref().unwrap_or("Bearer"))))
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    pub endpoints: Vec<EndpointConfig>,
    /// Concurrent senders per endpoint; series are assigned to a shard by
    /// hash, so each series' samples stay in order.
    pub shards: usize,
    /// Largest number of samples in one request.
    pub max_samples_per_send: usize,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        RemoteWriteConfig {
            endpoints: Vec::new(),
            shards: 4,
            max_samples_per_send: 5000,
            timeout: Duration::from_secs(30),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            path: PathBuf::from("./data/agent-queue"),
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Largest number of samples in one queue record.
    pub send_batch_size: usize,
    /// Extra time to wait for more requests before writing a record. 0 (the
    /// default) writes whatever is waiting as soon as the previous record is
    /// on disk — group commit without added latency.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { send_batch_size: 8192, timeout: Duration::ZERO }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslationConfig {
    pub promote_resource_attributes: Vec<String>,
    pub scope_labels: bool,
    pub target_info: bool,
    pub delta_max_streams: usize,
    #[serde(with = "humantime_serde")]
    pub delta_max_stale: Duration,
}

impl Default for TranslationConfig {
    fn default() -> Self {
        let d = strata_otel_prom::TranslatorConfig::default();
        TranslationConfig {
            promote_resource_attributes: d.promote_resource_attributes,
            scope_labels: d.scope_labels,
            target_info: d.target_info,
            delta_max_streams: d.delta_max_streams,
            delta_max_stale: d.delta_max_stale,
        }
    }
}

/// The agent's own metrics, shipped through its queue like the data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfMonitoringConfig {
    /// How often; 0s turns self-monitoring off.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for SelfMonitoringConfig {
    fn default() -> Self {
        SelfMonitoringConfig { interval: Duration::from_secs(15) }
    }
}

/// Complete agent configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub otlp: OtlpConfig,
    pub web: WebConfig,
    pub prometheus_exporter: PrometheusExporterConfig,
    pub push: PushConfig,
    pub scrape: ScrapeSection,
    pub remote_write: RemoteWriteConfig,
    pub queue: QueueConfig,
    pub batch: BatchConfig,
    pub translation: TranslationConfig,
    pub self_monitoring: SelfMonitoringConfig,
    /// Labels set (or overridden) on every series, e.g. `environment`, `data_plane_id`.
    pub labels: BTreeMap<String, String>,
    /// Timeouts and limits of the agent's HTTP servers (OTLP/HTTP, web,
    /// Prometheus exposition): `read_header_timeout`, `request_timeout`,
    /// `max_concurrent_requests`, `max_inflight_request_bytes`.
    pub http_server: strata_server::HttpServerConfig,
}

mod humantime_serde {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration: {e}")))
    }
}

impl AgentConfig {
    /// Parses a YAML document; errors name the offending key and position.
    pub fn from_yaml(text: &str, path: &std::path::Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(AgentConfig::default());
        }
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.to_path_buf(), source: e })?;
        Self::from_yaml(&text, path)
    }

    /// Checks cross-field rules; call after flags are applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http_server.validate().map_err(|e| {
            let (setting, problem) = e.split_once(' ').unwrap_or((e.as_str(), ""));
            invalid(
                &format!("http_server.{}", setting.trim_start_matches("web.").replace('-', "_")),
                problem.to_string(),
            )
        })?;
        if let Some(t) = &self.otlp.grpc_tls_config {
            t.build(strata_server::tls::ALPN_H2, "otlp.grpc_tls_config")
                .map_err(|m| invalid("otlp.grpc_tls_config", m.to_string()))?;
        }
        if self.remote_write.endpoints.is_empty() {
            return Err(invalid("remote_write.endpoints", "at least one endpoint is required (--remote-write.url)"));
        }
        for (i, e) in self.remote_write.endpoints.iter().enumerate() {
            let url = reqwest::Url::parse(&e.url)
                .map_err(|err| invalid(&format!("remote_write.endpoints[{i}].url"), format!("{:?}: {err}", e.url)))?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(invalid(&format!("remote_write.endpoints[{i}].url"), "scheme must be http or https"));
            }
            if let Some(t) = &e.tls_config {
                let at = format!("remote_write.endpoints[{i}].tls_config");
                if url.scheme() != "https" {
                    return Err(invalid(&at, "is set but the URL is not https"));
                }
                t.build(strata_server::tls::ALPN_HTTP1, &at).map_err(|m| invalid(&at, m.to_string()))?;
            }
            if e.basic_auth.is_some() || e.authorization.is_some() {
                if e.headers.keys().any(|k| k.eq_ignore_ascii_case("authorization")) {
                    return Err(invalid(
                        &format!("remote_write.endpoints[{i}].headers"),
                        "an Authorization header conflicts with basic_auth/authorization",
                    ));
                }
                let at = if e.basic_auth.is_some() { "basic_auth" } else { "authorization" };
                e.authorization_header().map_err(|m| invalid(&format!("remote_write.endpoints[{i}].{at}"), m))?;
            }
        }
        if self.remote_write.shards == 0 || self.remote_write.shards > 256 {
            return Err(invalid("remote_write.shards", "must be between 1 and 256"));
        }
        if self.remote_write.max_samples_per_send == 0 {
            return Err(invalid("remote_write.max_samples_per_send", "must be positive"));
        }
        if self.remote_write.min_backoff > self.remote_write.max_backoff {
            return Err(invalid("remote_write.min_backoff", "must not exceed remote_write.max_backoff"));
        }
        if self.queue.segment_bytes < 1024 {
            return Err(invalid("queue.segment_bytes", "must be at least 1024"));
        }
        if self.queue.max_bytes < self.queue.segment_bytes {
            return Err(invalid("queue.max_bytes", "must be at least queue.segment_bytes"));
        }
        if self.push.interval.is_zero() {
            return Err(invalid("push.interval", "must be longer than 0s"));
        }
        if self.push.max_series == 0 {
            return Err(invalid("push.max_series", "must be positive"));
        }
        if self.batch.send_batch_size == 0 {
            return Err(invalid("batch.send_batch_size", "must be positive"));
        }
        for name in self.labels.keys() {
            let ok = name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if name.is_empty() || !ok || name.starts_with("__") {
                return Err(invalid(&format!("labels.{name}"), "not a valid Prometheus label name"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn full_file_parses() {
        let cfg = AgentConfig::from_yaml(
            r#"
otlp: { grpc_address: "0.0.0.0:4317", http_address: "0.0.0.0:4318" }
remote_write:
  endpoints: [{ url: "http://127.0.0.1:9009/api/v1/write", protocol: v1, headers: { X-Scope-OrgID: team-a } }]
  shards: 2
  timeout: 5s
queue: { path: /tmp/q, max_bytes: 1048576, segment_bytes: 65536, fsync: interval, fsync_interval: 500ms }
batch: { send_batch_size: 100, timeout: 50ms }
labels: { environment: prod, data_plane_id: dp-prod-01 }
translation: { promote_resource_attributes: [deployment.environment.name] }
"#,
            Path::new("agent.yml"),
        )
        .unwrap();
        assert_eq!(cfg.remote_write.shards, 2);
        assert_eq!(cfg.queue.fsync, FsyncPolicy::Interval);
        assert_eq!(cfg.batch.timeout, Duration::from_millis(50));
        assert_eq!(cfg.labels["environment"], "prod");
        cfg.validate().unwrap();
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let err = AgentConfig::from_yaml("queue: { fsinc: always }", Path::new("a.yml")).unwrap_err().to_string();
        assert!(err.contains("fsinc"), "{err}");
        let err = AgentConfig::from_yaml("queue: { fsync: sometimes }", Path::new("a.yml")).unwrap_err().to_string();
        assert!(err.contains("sometimes"), "{err}");
        let err = AgentConfig::from_yaml("batch: { timeout: soon }", Path::new("a.yml")).unwrap_err().to_string();
        assert!(err.contains("soon"), "{err}");
        let cfg = AgentConfig::default();
        assert!(cfg.validate().unwrap_err().to_string().contains("remote_write.endpoints"));
        let mut cfg = AgentConfig::default();
        cfg.remote_write.endpoints.push(EndpointConfig {
            url: "ftp://x".into(),
            protocol: Protocol::V1,
            ..Default::default()
        });
        assert!(cfg.validate().unwrap_err().to_string().contains("remote_write.endpoints[0].url"));
        let mut cfg = AgentConfig::default();
        cfg.remote_write.endpoints.push(EndpointConfig {
            url: "http://x".into(),
            protocol: Protocol::V1,
            ..Default::default()
        });
        cfg.labels.insert("bad-name".into(), "v".into());
        assert!(cfg.validate().unwrap_err().to_string().contains("labels.bad-name"));
    }

    #[test]
    fn endpoint_credentials_like_prometheus_remote_write() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tok-1\n").unwrap();
        let yaml = format!(
            "remote_write:\n  endpoints:\n    - url: http://a/api/v1/write\n      authorization: {{ credentials_file: {} }}\n    \
             - url: http://b/api/v1/write\n      basic_auth: {{ username: u, password: p }}\n",
            token.display()
        );
        let cfg = AgentConfig::from_yaml(&yaml, Path::new("a.yml")).unwrap();
        cfg.validate().unwrap();
        let eps = &cfg.remote_write.endpoints;
        assert_eq!(eps[0].authorization_header().unwrap().as_deref(), Some("Bearer tok-1"));
        assert_eq!(eps[1].authorization_header().unwrap().as_deref(), Some("Basic dTpw"));
        // The file is read at each request: a rotated token is used at once.
        std::fs::write(&token, "tok-2").unwrap();
        assert_eq!(eps[0].authorization_header().unwrap().as_deref(), Some("Bearer tok-2"));
        // Secrets never show in Debug output.
        assert!(!format!("{:?}", eps[1]).contains("password: Some(\"p\")"), "{:?}", eps[1]);
        for (bad, want) in [
            ("basic_auth: { username: u }", "password or password_file is required"),
            ("basic_auth: { username: u, password: p, password_file: /x }", "not both"),
            ("authorization: { credentials_file: /nonexistent/token }", "cannot read credentials_file"),
            ("authorization: { credentials: t }\n      headers: { Authorization: x }", "conflicts"),
        ] {
            let yaml = format!("remote_write:\n  endpoints:\n    - url: http://a/\n      {bad}\n");
            let err = AgentConfig::from_yaml(&yaml, Path::new("a.yml")).and_then(|c| c.validate().map(|_| c));
            let err = err.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want) && err.contains("remote_write.endpoints[0]"), "{bad}: {err}");
        }
    }
}
