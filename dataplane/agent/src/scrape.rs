//! Scraping (`--scrape.config-file`): the agent pulls `/metrics` endpoints
//! as Prometheus does, from a Prometheus-format file's `global:` and
//! `scrape_configs:` (its other sections are ignored), and ships the
//! samples through the same disk queue and remote write as OTLP data.
//!
//! Per job: `scrape_interval`, `scrape_timeout`, `metrics_path`, `params`,
//! `scheme`, `basic_auth`/`authorization`/`tls_config`, `honor_labels`,
//! `honor_timestamps`, `static_configs`, `file_sd_configs` (JSON or YAML,
//! re-read when they change), `relabel_configs`, `metric_relabel_configs`,
//! `sample_limit`, `label_limit`, `label_name_length_limit`,
//! `label_value_length_limit`, `body_size_limit`, `enable_compression`.
//! Per target: the text format and OpenMetrics (exemplars kept, `_created`
//! series dropped as Prometheus does by default), `up`,
//! `scrape_duration_seconds`, `scrape_samples_scraped`,
//! `scrape_samples_post_metric_relabeling`, `scrape_series_added`,
//! staleness markers for series that disappear, for every series of a
//! failed scrape and of a target that goes away, and a per-target offset
//! within the interval from a hash of the target (Prometheus' spreading).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use strata_proto::prometheus::{Exemplar, Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use strata_textparse::Family;
use tokio::sync::watch;

use crate::config::{AuthorizationConfig, BasicAuthConfig};
use crate::exporter::HttpClient;
use crate::pipeline::Pipeline;
use crate::relabel::{self, RelabelConfig, Rule};

const ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1";

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration: {e}")))
}

/// A size as Prometheus writes one (`10MB`, `512KiB`, `1048576`; KB/MB/GB
/// are powers of 1024, as Prometheus' units); 0 = no limit.
fn byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_yaml::Value::deserialize(d)?;
    let s = match v {
        serde_yaml::Value::Number(n) => return n.as_u64().ok_or_else(|| serde::de::Error::custom("not a size")),
        serde_yaml::Value::String(s) => s,
        _ => return Err(serde::de::Error::custom("a size is a number of bytes or a string like 10MB")),
    };
    parse_size(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a size (e.g. 10MB)")))
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "KIB" => 1 << 10,
        "MB" | "MIB" => 1 << 20,
        "GB" | "GIB" => 1 << 30,
        "TB" | "TIB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `global:` of the scrape file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GlobalConfig {
    #[serde(deserialize_with = "duration")]
    pub scrape_interval: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    pub scrape_timeout: Option<Duration>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    #[serde(default, deserialize_with = "duration")]
    pub refresh_interval: Option<Duration>,
}

fn yes() -> bool {
    true
}

fn default_path() -> String {
    "/metrics".into()
}

fn default_scheme() -> String {
    "http".into()
}

/// One `scrape_configs` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default, deserialize_with = "duration")]
    pub scrape_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub scrape_timeout: Option<Duration>,
    #[serde(default = "default_path")]
    pub metrics_path: String,
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub honor_labels: bool,
    #[serde(default = "yes")]
    pub honor_timestamps: bool,
    #[serde(default = "yes")]
    pub enable_compression: bool,
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    #[serde(default)]
    pub authorization: Option<AuthorizationConfig>,
    #[serde(default)]
    pub tls_config: Option<strata_server::tls::TlsClientConfig>,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub sample_limit: usize,
    #[serde(default)]
    pub label_limit: usize,
    #[serde(default)]
    pub label_name_length_limit: usize,
    #[serde(default)]
    pub label_value_length_limit: usize,
    #[serde(default, deserialize_with = "byte_size")]
    pub body_size_limit: u64,
}

/// The scrape file: Prometheus' `global:` and `scrape_configs:`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ScrapeFile {
    #[serde(default)]
    pub global: GlobalConfig,
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
}

/// A job, checked and ready to scrape.
pub struct Job {
    pub cfg: ScrapeConfig,
    pub interval: Duration,
    pub timeout: Duration,
    relabel: Vec<Rule>,
    metric_relabel: Vec<Rule>,
    client: Arc<HttpClient>,
    /// Directory relative `file_sd_configs` paths are read from.
    base_dir: PathBuf,
}

/// Reads and checks a scrape file; errors name the job and the setting.
pub fn load(path: &Path) -> Result<Vec<Arc<Job>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: ScrapeFile = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    jobs(file, &base).map_err(|e| format!("{}: {e}", path.display()))
}

fn jobs(file: ScrapeFile, base_dir: &Path) -> Result<Vec<Arc<Job>>, String> {
    let g_interval = file.global.scrape_interval.unwrap_or(Duration::from_secs(60));
    let g_timeout = file.global.scrape_timeout.unwrap_or(Duration::from_secs(10));
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for cfg in file.scrape_configs {
        let at = format!("scrape_configs: job {:?}", cfg.job_name);
        if cfg.job_name.is_empty() {
            return Err("scrape_configs: job_name is required".into());
        }
        if !names.insert(cfg.job_name.clone()) {
            return Err(format!("{at}: found multiple scrape configs with job name {:?}", cfg.job_name));
        }
        let interval = cfg.scrape_interval.unwrap_or(g_interval);
        let timeout = cfg.scrape_timeout.unwrap_or(g_timeout.min(interval));
        if interval.is_zero() {
            return Err(format!("{at}: scrape_interval must be longer than 0s"));
        }
        if timeout > interval {
            return Err(format!(
                "{at}: scrape timeout greater than scrape interval ({} > {})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ));
        }
        if cfg.scheme != "http" && cfg.scheme != "https" {
            return Err(format!("{at}: scheme must be http or https, not {:?}", cfg.scheme));
        }
        if cfg.basic_auth.is_some() && cfg.authorization.is_some() {
            return Err(format!("{at}: at most one of basic_auth and authorization may be configured"));
        }
        crate::config::authorization_header(&cfg.basic_auth, &cfg.authorization).map_err(|m| format!("{at}: {m}"))?;
        let rules = |list: &[RelabelConfig], what: &str| -> Result<Vec<Rule>, String> {
            list.iter()
                .enumerate()
                .map(|(i, r)| Rule::new(r.clone()).map_err(|m| format!("{at}: {what}[{i}]: {m}")))
                .collect()
        };
        let relabel = rules(&cfg.relabel_configs, "relabel_configs")?;
        let metric_relabel = rules(&cfg.metric_relabel_configs, "metric_relabel_configs")?;
        for s in &cfg.static_configs {
            for k in s.labels.keys() {
                if !relabel::valid_label_name(k) {
                    return Err(format!("{at}: static_configs: {k:?} is not a valid label name"));
                }
            }
        }
        let client =
            HttpClient::with_tls(cfg.tls_config.clone(), cfg.scheme == "https", timeout, crate::exporter::AGENT_UA)
                .map_err(|m| format!("{at}: tls_config: {m}"))?;
        out.push(Arc::new(Job {
            interval,
            timeout,
            relabel,
            metric_relabel,
            client: Arc::new(client),
            base_dir: base_dir.to_path_buf(),
            cfg,
        }));
    }
    Ok(out)
}

/// A target after relabelling: its labels (no `__` ones) and URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub labels: Vec<(String, String)>,
    pub url: String,
}

/// A target group: addresses and labels (static or from a file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn format_duration_prom(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 {
        return format!("{}ms", d.as_millis());
    }
    if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The targets of `job` from its groups, relabelled as Prometheus does.
fn targets_of(job: &Job, groups: &[(Group, Option<String>)]) -> Vec<Target> {
    let cfg = &job.cfg;
    let mut out = Vec::new();
    for (g, file) in groups {
        for addr in &g.targets {
            let mut labels: Vec<(String, String)> = vec![("__address__".into(), addr.clone())];
            if let Some(f) = file {
                labels.push(("__meta_filepath".into(), f.clone()));
            }
            for (k, v) in &g.labels {
                labels.retain(|(n, _)| n != k);
                labels.push((k.clone(), v.clone()));
            }
            for (k, v) in [
                ("job", cfg.job_name.clone()),
                ("__scrape_interval__", format_duration_prom(job.interval)),
                ("__scrape_timeout__", format_duration_prom(job.timeout)),
                ("__metrics_path__", cfg.metrics_path.clone()),
                ("__scheme__", cfg.scheme.clone()),
            ] {
                if !labels.iter().any(|(n, _)| n == k) {
                    labels.push((k.to_string(), v));
                }
            }
            for (k, vs) in &cfg.params {
                let name = format!("__param_{k}");
                if let Some(v) = vs.first()
                    && !labels.iter().any(|(n, _)| *n == name)
                {
                    labels.push((name, v.clone()));
                }
            }
            if !relabel::process(&mut labels, &job.relabel) {
                continue;
            }
            fn get(labels: &[(String, String)], n: &str) -> Option<String> {
                labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            }
            let Some(address) = get(&labels, "__address__") else { continue };
            if !labels.iter().any(|(n, _)| n == "instance") {
                labels.push(("instance".into(), address.clone()));
            }
            let get = |n: &str| get(&labels, n);
            let scheme = get("__scheme__").unwrap_or_else(|| cfg.scheme.clone());
            let path = get("__metrics_path__").unwrap_or_else(|| cfg.metrics_path.clone());
            let mut query: Vec<(String, String)> = Vec::new();
            for (k, vs) in &cfg.params {
                match get(&format!("__param_{k}")) {
                    Some(v) => query.push((k.clone(), v)),
                    None => query.extend(vs.iter().map(|v| (k.clone(), v.clone()))),
                }
            }
            for (n, v) in &labels {
                if let Some(k) = n.strip_prefix("__param_")
                    && !cfg.params.contains_key(k)
                {
                    query.push((k.to_string(), v.clone()));
                }
            }
            let mut url = format!("{scheme}://{address}{path}");
            if !query.is_empty() {
                let q: Vec<String> =
                    query.iter().map(|(k, v)| format!("{}={}", url_escape(k), url_escape(v))).collect();
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&q.join("&"));
            }
            labels.retain(|(n, v)| !n.starts_with("__") && !v.is_empty());
            labels.sort();
            out.push(Target { labels, url });
        }
    }
    out.sort();
    out.dedup();
    out
}

fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Expands a `file_sd_configs` pattern (`*` in the last element).
fn expand(base: &Path, pattern: &str) -> Vec<PathBuf> {
    let p = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base.join(pattern) };
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !name.contains('*') {
        return vec![p];
    }
    let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
    let (pre, post) = name.split_once('*').unwrap_or((&name, ""));
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|f| {
            let n = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            n.len() >= pre.len() + post.len() && n.starts_with(pre) && n.ends_with(post)
        })
        .collect();
    out.sort();
    out
}

/// The target groups of a job now: its static groups and what its
/// `file_sd_configs` files hold (a file that does not parse keeps the
/// groups it had last time, as Prometheus).
/// Target groups, each with the file it came from (`__meta_filepath`).
type Groups = Vec<(Group, Option<String>)>;
/// What each file_sd file held when last read.
type FileGroups = HashMap<PathBuf, Vec<Group>>;

fn groups_of(job: &Job, previous: &FileGroups) -> (Groups, FileGroups) {
    let mut out: Vec<(Group, Option<String>)> = job
        .cfg
        .static_configs
        .iter()
        .map(|s| (Group { targets: s.targets.clone(), labels: s.labels.clone() }, None))
        .collect();
    let mut read = HashMap::new();
    for sd in &job.cfg.file_sd_configs {
        for pattern in &sd.files {
            for f in expand(&job.base_dir, pattern) {
                let parsed = std::fs::read_to_string(&f).map_err(|e| e.to_string()).and_then(|t| {
                    if f.extension().is_some_and(|e| e == "json") {
                        serde_json::from_str::<Vec<Group>>(&t).map_err(|e| e.to_string())
                    } else {
                        serde_yaml::from_str::<Vec<Group>>(&t).map_err(|e| e.to_string())
                    }
                });
                let groups = match parsed {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!(job = %job.cfg.job_name, file = %f.display(), error = %e, "cannot read file_sd file; keeping its last targets");
                        match previous.get(&f) {
                            Some(g) => g.clone(),
                            None => continue,
                        }
                    }
                };
                let name = f.display().to_string();
                out.extend(groups.iter().cloned().map(|g| (g, Some(name.clone()))));
                read.insert(f, groups);
            }
        }
    }
    (out, read)
}

/// Scraped series of one scrape, ready to send.
struct Scraped {
    series: Vec<TimeSeries>,
    metadata: Vec<MetricMetadata>,
    scraped: usize,
}

fn to_labels(l: Vec<(String, String)>) -> Vec<Label> {
    l.into_iter().map(|(name, value)| Label { name, value }).collect()
}

/// Merges a scraped sample's labels with the target's: with
/// `honor_labels` the scraped ones win; otherwise the target's win and a
/// clashing scraped label is kept as `exported_<name>`.
fn merge_labels(
    name: &str,
    scraped: &[(String, String)],
    target: &[(String, String)],
    honor: bool,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![("__name__".into(), name.into())];
    if honor {
        out.extend(scraped.iter().cloned());
        for (k, v) in target {
            if !out.iter().any(|(n, _)| n == k) {
                out.push((k.clone(), v.clone()));
            }
        }
    } else {
        for (k, v) in scraped {
            let mut k = k.clone();
            while target.iter().any(|(n, _)| *n == k) || (k != *"__name__" && out.iter().any(|(n, _)| *n == k)) {
                k = format!("exported_{k}");
            }
            out.push((k, v.clone()));
        }
        out.extend(target.iter().cloned());
    }
    out.retain(|(_, v)| !v.is_empty());
    out
}

fn parse_body(body: &[u8], content_type: Option<&str>) -> Result<Vec<Family>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    match strata_textparse::Format::of_content_type(content_type) {
        strata_textparse::Format::OpenMetrics => strata_textparse::parse_openmetrics(text),
        _ => strata_textparse::parse_text(text),
    }
    .map_err(|e| e.to_string())
}

async fn fetch(job: &Job, target: &Target) -> Result<(Vec<u8>, Option<String>), String> {
    let mut req = job
        .client
        .current()
        .get(&target.url)
        .header("Accept", ACCEPT)
        .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", job.timeout.as_secs_f64()))
        .header("User-Agent", concat!("strata-agent/", env!("CARGO_PKG_VERSION")));
    req = req.header("Accept-Encoding", if job.cfg.enable_compression { "gzip" } else { "identity" });
    if let Some(h) = crate::config::authorization_header(&job.cfg.basic_auth, &job.cfg.authorization)? {
        req = req.header("Authorization", h);
    }
    let resp = tokio::time::timeout(job.timeout, req.send())
        .await
        .map_err(|_| format!("Get {:?}: context deadline exceeded", target.url))?
        .map_err(|e| format!("Get {:?}: {e}", target.url))?;
    if !resp.status().is_success() {
        return Err(format!("server returned HTTP status {}", resp.status()));
    }
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let gzip = resp.headers().get("content-encoding").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "gzip");
    let limit = if job.cfg.body_size_limit == 0 { u64::MAX } else { job.cfg.body_size_limit };
    let mut resp = resp;
    let mut raw = Vec::new();
    loop {
        let chunk = tokio::time::timeout(job.timeout, resp.chunk())
            .await
            .map_err(|_| "context deadline exceeded reading the body".to_string())?
            .map_err(|e| format!("reading the body: {e}"))?;
        let Some(chunk) = chunk else { break };
        raw.extend_from_slice(&chunk);
        if raw.len() as u64 > limit {
            return Err(format!("body size limit exceeded ({} bytes)", job.cfg.body_size_limit));
        }
    }
    if gzip {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| format!("invalid gzip body: {e}"))?;
        if out.len() as u64 > limit {
            return Err(format!("body size limit exceeded ({} bytes)", job.cfg.body_size_limit));
        }
        raw = out;
    }
    Ok((raw, ct))
}

/// One scrape: fetch, parse, label, relabel, check the limits.
async fn scrape_once(job: &Job, target: &Target, extra: &[(String, String)], now: i64) -> Result<Scraped, String> {
    let (body, ct) = fetch(job, target).await?;
    let families = parse_body(&body, ct.as_deref())?;
    let cfg = &job.cfg;
    let mut series = Vec::new();
    let mut metadata = Vec::new();
    let mut scraped = 0;
    let mut seen: HashSet<u64, foldhash::fast::FixedState> = HashSet::default();
    for f in &families {
        metadata.push(MetricMetadata {
            r#type: f.kind.to_metadata() as i32,
            metric_family_name: f.name.clone(),
            help: f.help.clone().unwrap_or_default(),
            unit: f.unit.clone().unwrap_or_default(),
        });
        for s in &f.samples {
            if f.is_created(s) {
                continue;
            }
            scraped += 1;
            let mut labels = merge_labels(&s.name, &s.labels, &target.labels, cfg.honor_labels);
            if !relabel::process(&mut labels, &job.metric_relabel) {
                continue;
            }
            for (k, v) in extra {
                if !labels.iter().any(|(n, _)| n == k) {
                    labels.push((k.clone(), v.clone()));
                }
            }
            labels.sort();
            if cfg.label_limit > 0 && labels.len() > cfg.label_limit {
                return Err(format!(
                    "label_limit exceeded (metric: {}, number of labels: {}, limit: {})",
                    s.name,
                    labels.len(),
                    cfg.label_limit
                ));
            }
            for (n, v) in &labels {
                if cfg.label_name_length_limit > 0 && n.len() > cfg.label_name_length_limit {
                    return Err(format!(
                        "label_name_length_limit exceeded (metric: {}, label name: {n}, limit: {})",
                        s.name, cfg.label_name_length_limit
                    ));
                }
                if cfg.label_value_length_limit > 0 && v.len() > cfg.label_value_length_limit {
                    return Err(format!(
                        "label_value_length_limit exceeded (metric: {}, label name: {n}, limit: {})",
                        s.name, cfg.label_value_length_limit
                    ));
                }
            }
            if !seen.insert(series_hash(labels.iter().map(|(n, v)| (n.as_str(), v.as_str())))) {
                continue;
            }
            let ts = match (cfg.honor_timestamps, s.timestamp_ms) {
                (true, Some(t)) => t,
                _ => now,
            };
            let exemplars = s
                .exemplar
                .iter()
                .map(|e| Exemplar {
                    labels: to_labels(e.labels.clone()),
                    value: e.value,
                    timestamp: e.timestamp_ms.unwrap_or(ts),
                })
                .collect();
            series.push(TimeSeries {
                labels: to_labels(labels),
                samples: vec![Sample { value: s.value, timestamp: ts }],
                exemplars,
                ..Default::default()
            });
        }
    }
    if cfg.sample_limit > 0 && series.len() > cfg.sample_limit {
        return Err(format!("sample limit exceeded ({} samples, sample_limit {})", series.len(), cfg.sample_limit));
    }
    Ok(Scraped { series, metadata, scraped })
}

/// A series' identity within one target's scrapes: a 64-bit hash of its
/// sorted labels (as Prometheus' scrape cache keys staleness), so the
/// duplicate and staleness sets hold no copies of label strings.
fn series_hash<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = foldhash::quality::FixedState::with_seed(0x5eed_5c12_a9e0_0001).build_hasher();
    for (n, v) in labels {
        h.write(n.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xfe);
    }
    h.finish()
}

fn proto_hash(labels: &[Label]) -> u64 {
    series_hash(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
}

fn stale(labels: &[Label], t: i64) -> TimeSeries {
    TimeSeries {
        labels: labels.to_vec(),
        samples: vec![Sample { value: strata_otel_prom::stale_nan(), timestamp: t }],
        ..Default::default()
    }
}

fn report(target: &Target, extra: &[(String, String)], name: &str, v: f64, t: i64) -> TimeSeries {
    let mut labels = vec![("__name__".to_string(), name.to_string())];
    labels.extend(target.labels.iter().cloned());
    for (k, val) in extra {
        if !labels.iter().any(|(n, _)| n == k) {
            labels.push((k.clone(), val.clone()));
        }
    }
    labels.sort();
    TimeSeries { labels: to_labels(labels), samples: vec![Sample { value: v, timestamp: t }], ..Default::default() }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The offset of a target's scrapes within the interval (a hash of the
/// target, so scrapes spread out and each target keeps its slot).
fn offset(target: &Target, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    target.hash(&mut h);
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % ms)
}

const REPORT: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Scrapes `target` every interval until `stop`; then marks its series stale.
async fn scrape_loop(
    job: Arc<Job>,
    target: Target,
    pipeline: Arc<Pipeline>,
    extra: Vec<(String, String)>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = job.interval;
    let now = now_ms();
    let ms = interval.as_millis() as i64;
    let off = offset(&target, interval).as_millis() as i64;
    let mut first = now - now.rem_euclid(ms) + off;
    if first < now {
        first += ms;
    }
    let start = tokio::time::Instant::now() + Duration::from_millis((first - now) as u64);
    let mut tick = tokio::time::interval_at(start, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The previous scrape's series (hash → labels), for staleness markers.
    let mut last: HashMap<u64, Vec<Label>, foldhash::fast::FixedState> = HashMap::default();
    let mut last_metadata = (Vec::<MetricMetadata>::new(), 0i64);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let t = now_ms();
        let began = std::time::Instant::now();
        let result = scrape_once(&job, &target, &extra, t).await;
        let took = began.elapsed().as_secs_f64();
        let mut req = WriteRequest::default();
        let (up, scraped, post, added, current) = match result {
            Ok(s) => {
                let current: Vec<u64> = s.series.iter().map(|t| proto_hash(&t.labels)).collect();
                let added = current.iter().filter(|h| !last.contains_key(*h)).count();
                if s.metadata != last_metadata.0 || t - last_metadata.1 >= 60_000 {
                    req.metadata = s.metadata.clone();
                    last_metadata = (s.metadata, t);
                }
                let post = s.series.len();
                req.timeseries = s.series;
                (1.0, s.scraped, post, added, current)
            }
            Err(e) => {
                tracing::debug!(job = %job.cfg.job_name, url = %target.url, error = %e, "scrape failed");
                (0.0, 0, 0, 0, Vec::new())
            }
        };
        let present: HashSet<u64, foldhash::fast::FixedState> = current.iter().copied().collect();
        for (_, gone) in last.iter().filter(|(h, _)| !present.contains(*h)) {
            req.timeseries.push(stale(gone, t));
        }
        for (name, v) in REPORT.iter().zip([up, took, scraped as f64, post as f64, added as f64]) {
            req.timeseries.push(report(&target, &extra, name, v, t));
        }
        match pipeline.submit_series(&req).await {
            // The scraped series lead the request: keep their labels (moved, not copied).
            Ok(()) => last = current.into_iter().zip(req.timeseries.drain(..post).map(|t| t.labels)).collect(),
            Err(e) => tracing::warn!(job = %job.cfg.job_name, url = %target.url, error = %e, "cannot queue a scrape"),
        }
    }
    // The target went away: its series and its report series end now.
    let t = now_ms();
    let mut req = WriteRequest::default();
    req.timeseries.extend(last.values().map(|k| stale(k, t)));
    for name in REPORT {
        let mut r = report(&target, &extra, name, 0.0, t);
        r.samples[0].value = strata_otel_prom::stale_nan();
        req.timeseries.push(r);
    }
    if let Err(e) = pipeline.submit_series(&req).await {
        tracing::warn!(job = %job.cfg.job_name, url = %target.url, error = %e, "cannot queue staleness markers");
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Runs every job's targets until `stop`: starts a loop per target,
/// re-reads `file_sd_configs` files every 2 s, re-reads the scrape file
/// itself when it changes (a file that no longer loads is logged and the
/// running jobs stay), and stops the loops of targets (or jobs whose
/// settings changed) that went away.
pub async fn run(
    config_file: Option<PathBuf>,
    jobs: Vec<Arc<Job>>,
    pipeline: Arc<Pipeline>,
    extra: Vec<(String, String)>,
    mut stop: watch::Receiver<bool>,
) {
    // Keyed by the job's settings as well, so a changed job restarts its loops.
    type Key = (String, Target);
    let mut jobs = jobs;
    let mut seen = config_file.as_deref().and_then(modified);
    let mut running: HashMap<Key, (watch::Sender<bool>, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut files: HashMap<String, HashMap<PathBuf, Vec<Group>>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        if let Some(path) = &config_file {
            let now = modified(path);
            if now != seen {
                seen = now;
                match load(path) {
                    Ok(j) => {
                        tracing::info!(file = %path.display(), jobs = j.len(), "scrape configuration reloaded");
                        jobs = j;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot reload the scrape configuration; the running jobs stay")
                    }
                }
            }
        }
        let mut wanted: HashMap<Key, Arc<Job>> = HashMap::new();
        for job in &jobs {
            let prev = files.remove(&job.cfg.job_name).unwrap_or_default();
            let (groups, read) = groups_of(job, &prev);
            files.insert(job.cfg.job_name.clone(), read);
            let fingerprint = format!("{:?}", job.cfg);
            for t in targets_of(job, &groups) {
                wanted.insert((fingerprint.clone(), t), job.clone());
            }
        }
        let gone: Vec<Key> = running.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for k in gone {
            if let Some((tx, _)) = running.remove(&k) {
                let _ = tx.send(true);
            }
        }
        for (k, job) in wanted {
            if running.contains_key(&k) {
                continue;
            }
            let (tx, rx) = watch::channel(false);
            let h = tokio::spawn(scrape_loop(job, k.1.clone(), pipeline.clone(), extra.clone(), rx));
            running.insert(k, (tx, h));
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (_, (tx, h)) in running {
        let _ = tx.send(true);
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> Arc<Job> {
        let file: ScrapeFile = serde_yaml::from_str(yaml).unwrap();
        jobs(file, Path::new("/")).unwrap().remove(0)
    }

    #[test]
    fn targets_are_labelled_and_relabelled_like_prometheus() {
        let j = job(
            "global: {scrape_interval: 15s}\nscrape_configs:\n- job_name: node\n  params: {module: [http_2xx]}\n  static_configs:\n  - targets: ['a:9100', 'b:9100']\n    labels: {env: prod}\n  relabel_configs:\n  - {source_labels: [__address__], regex: 'b:.*', action: drop}\n  - {source_labels: [__address__], target_label: __param_target}\n",
        );
        let (groups, _) = groups_of(&j, &HashMap::new());
        let t = targets_of(&j, &groups);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].url, "http://a:9100/metrics?module=http_2xx&target=a%3A9100");
        assert_eq!(
            t[0].labels,
            vec![("env".into(), "prod".into()), ("instance".into(), "a:9100".into()), ("job".into(), "node".into())]
        );
        assert_eq!(j.interval, Duration::from_secs(15));
        assert_eq!(j.timeout, Duration::from_secs(10));
    }

    #[test]
    fn scraped_labels_clash_with_the_targets_as_in_prometheus() {
        let target = vec![("instance".to_string(), "a:1".to_string()), ("job".to_string(), "j".to_string())];
        let scraped = vec![("job".to_string(), "inner".to_string()), ("x".to_string(), "1".to_string())];
        let merged = merge_labels("m", &scraped, &target, false);
        assert!(
            merged.contains(&("exported_job".into(), "inner".into())) && merged.contains(&("job".into(), "j".into()))
        );
        let honored = merge_labels("m", &scraped, &target, true);
        assert!(
            honored.contains(&("job".into(), "inner".into())) && honored.contains(&("instance".into(), "a:1".into()))
        );
    }

    #[test]
    fn bad_scrape_files_name_the_job_and_the_setting() {
        for (yaml, want) in [
            ("scrape_configs:\n- job_name: a\n- job_name: a\n", "multiple scrape configs with job name \"a\""),
            (
                "scrape_configs:\n- job_name: a\n  scrape_interval: 5s\n  scrape_timeout: 10s\n",
                "greater than scrape interval",
            ),
            ("scrape_configs:\n- job_name: a\n  scheme: ftp\n", "scheme must be http or https"),
            (
                "scrape_configs:\n- job_name: a\n  relabel_configs: [{action: hashmod, target_label: x}]\n",
                "relabel_configs[0]: relabel configuration for hashmod",
            ),
        ] {
            let file: ScrapeFile = serde_yaml::from_str(yaml).unwrap();
            let e = jobs(file, Path::new("/")).err().unwrap();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        assert!(
            serde_yaml::from_str::<ScrapeFile>("scrape_configs:\n- job_name: a\n  kubernetes_sd_configs: []\n")
                .is_err()
        );
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1XB"), None);
    }
}
