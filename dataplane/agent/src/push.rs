//! The Pushgateway-compatible push API: batch jobs push their metrics to
//! the agent (`PUT|POST|DELETE /metrics/job/<job>{/<label>/<value>}`, values
//! `@base64`-encoded where needed, text or delimited-protobuf bodies) and
//! the agent forwards every group through its durable queue on every
//! export interval until the group is deleted (with `honor_labels`
//! semantics: the pushed labels win; the agent's own `labels` are added
//! where a series has none of that name).
//!
//! Semantics are the Pushgateway's: `PUT` replaces the group, `POST`
//! replaces the pushed metric names, `DELETE` removes the group; every
//! metric gets the grouping labels (and `instance=""` when it has none);
//! pushed timestamps are refused; `push_time_seconds` and
//! `push_failure_time_seconds` track each group; a push inconsistent with
//! what is stored (a metric name with another type) is refused with 400 and
//! recorded as a failure. Unlike the Pushgateway, a change is persisted
//! (`push.persistence_file`, fsynced) before it is acknowledged, and the
//! store is bounded (`push.max_series`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use strata_proto::client_model::{LabelPair, MetricFamily, MetricType as PbType};
use strata_proto::prometheus::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use strata_textparse::{Format, model};
use tokio::sync::watch;

use crate::pipeline::Pipeline;

const PUSH_TIME: &str = "push_time_seconds";
const PUSH_FAILURE_TIME: &str = "push_failure_time_seconds";
const PUSH_TIME_HELP: &str = "Last Unix time when changing this group in the Pushgateway succeeded.";
const PUSH_FAILURE_TIME_HELP: &str = "Last Unix time when changing this group in the Pushgateway failed.";

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot read the push persistence file {path}: {message}")]
    Restore { path: String, message: String },
}

/// One group: its grouping labels, its metric families by name, and its
/// push times (seconds; 0 = never).
#[derive(Debug, Clone, Default, PartialEq)]
struct Group {
    families: BTreeMap<String, MetricFamily>,
    push_time: f64,
    failure_time: f64,
}

type GroupingKey = BTreeMap<String, String>;

/// What a push asks for.
pub enum Change {
    /// `PUT`: the group becomes exactly these families.
    Replace(Vec<MetricFamily>),
    /// `POST`: these families replace those of the same names.
    Merge(Vec<MetricFamily>),
    /// `DELETE`: the group goes.
    Delete,
}

/// Why a push was refused: the HTTP status and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal { status: StatusCode::BAD_REQUEST, message: message.into() }
}

/// The pushed groups, persisted to a file when one is configured.
pub struct PushStore {
    groups: Mutex<BTreeMap<GroupingKey, Group>>,
    persistence_file: Option<PathBuf>,
    max_series: usize,
}

fn series_count(g: &Group) -> usize {
    g.families.values().map(|f| model::samples(f).len()).sum::<usize>() + 2
}

impl PushStore {
    /// Opens the store, restoring the groups persisted in `persistence_file`.
    pub fn open(persistence_file: Option<PathBuf>, max_series: usize) -> Result<PushStore, PushError> {
        let groups = match &persistence_file {
            Some(p) => restore(p)?,
            None => BTreeMap::new(),
        };
        Ok(PushStore { groups: Mutex::new(groups), persistence_file, max_series })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<GroupingKey, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one push (checked, then persisted, then acknowledged).
    pub fn apply(&self, key: GroupingKey, change: Change, now_s: f64) -> Result<(), Refusal> {
        let mut groups = self.lock();
        let mut next = groups.clone();
        let result = match change {
            Change::Delete => {
                next.remove(&key);
                Ok(())
            }
            Change::Replace(families) | Change::Merge(families) if model::has_timestamps(&families) => Err(bad(
                "pushed metrics are invalid or inconsistent with existing metrics: pushed metrics must not have timestamps",
            )),
            change => {
                let replace = matches!(change, Change::Replace(_));
                let (Change::Replace(families) | Change::Merge(families)) = change else { unreachable!() };
                let group = next.entry(key.clone()).or_default();
                if replace {
                    group.families.clear();
                }
                let mut checked = Ok(());
                for mut f in families {
                    if let Err(m) = sanitize(&mut f, &key) {
                        checked = Err(m);
                        break;
                    }
                    group.families.insert(f.name().to_string(), f);
                }
                group.push_time = now_s;
                checked
                    .and_then(|()| consistent(&next))
                    .map_err(|m| bad(format!("pushed metrics are invalid or inconsistent with existing metrics: {m}")))
            }
        };
        let result = result.and_then(|()| {
            let total: usize = next.values().map(series_count).sum();
            if total > self.max_series {
                return Err(bad(format!(
                    "the push would hold {total} series, over the agent's limit of {} (push.max_series)",
                    self.max_series
                )));
            }
            Ok(())
        });
        if let Err(refusal) = result {
            // As the Pushgateway: a failed push is recorded on its group.
            let g = groups.entry(key).or_default();
            g.failure_time = now_s;
            let _ = self.persist(&groups);
            return Err(refusal);
        }
        self.persist(&next).map_err(|m| Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("cannot persist the push (nothing was changed): {m}"),
        })?;
        *groups = next;
        Ok(())
    }

    fn persist(&self, groups: &BTreeMap<GroupingKey, Group>) -> Result<(), String> {
        let Some(path) = &self.persistence_file else { return Ok(()) };
        let doc = PersistedFile {
            version: 1,
            groups: groups
                .iter()
                .map(|(k, g)| PersistedGroup {
                    labels: k.clone(),
                    push_time_seconds: g.push_time,
                    push_failure_time_seconds: g.failure_time,
                    families: base64::engine::general_purpose::STANDARD
                        .encode(model::encode_delimited(&g.families.values().cloned().collect::<Vec<_>>())),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
        strata_wal::replace(path, true, |w| w.write_all(&bytes)).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The series to forward now: every group's samples at `now_ms`, with
    /// `extra` labels added where missing and empty labels dropped, plus
    /// one metadata entry per family.
    pub fn write_request(&self, extra: &[(String, String)], now_ms: i64) -> WriteRequest {
        let groups = self.lock();
        let mut timeseries = Vec::new();
        let mut metadata: BTreeMap<String, MetricMetadata> = BTreeMap::new();
        for (key, g) in groups.iter() {
            for f in g.families.values() {
                metadata.entry(f.name().to_string()).or_insert_with(|| MetricMetadata {
                    r#type: model::type_of(f).to_metadata() as i32,
                    metric_family_name: f.name().to_string(),
                    help: f.help().to_string(),
                    unit: f.unit().to_string(),
                });
                for s in model::samples(f) {
                    timeseries.push(series(&s.name, s.labels, extra, s.value, now_ms));
                }
            }
            for (name, v) in [(PUSH_TIME, g.push_time), (PUSH_FAILURE_TIME, g.failure_time)] {
                let labels = key.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                timeseries.push(series(name, labels, extra, v, now_ms));
            }
        }
        for (name, help) in [(PUSH_TIME, PUSH_TIME_HELP), (PUSH_FAILURE_TIME, PUSH_FAILURE_TIME_HELP)] {
            metadata.insert(
                name.into(),
                MetricMetadata {
                    r#type: strata_textparse::MetricType::Gauge.to_metadata() as i32,
                    metric_family_name: name.into(),
                    help: help.into(),
                    unit: String::new(),
                },
            );
        }
        WriteRequest { timeseries, metadata: metadata.into_values().collect() }
    }

    /// The `/api/v1/metrics` listing (the Pushgateway's JSON).
    pub fn status(&self) -> serde_json::Value {
        let groups = self.lock();
        let data: Vec<serde_json::Value> = groups
            .iter()
            .map(|(key, g)| {
                let mut obj = serde_json::Map::new();
                let labels: serde_json::Map<String, serde_json::Value> =
                    key.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
                obj.insert("labels".into(), labels.clone().into());
                obj.insert("last_push_successful".into(), (g.push_time >= g.failure_time).into());
                let stamp = |t: f64| {
                    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0)))
                        .to_string()
                };
                for (name, v, help) in [
                    (PUSH_TIME, g.push_time, PUSH_TIME_HELP),
                    (PUSH_FAILURE_TIME, g.failure_time, PUSH_FAILURE_TIME_HELP),
                ] {
                    obj.insert(
                        name.into(),
                        serde_json::json!({
                            "time_stamp": stamp(g.push_time),
                            "type": "GAUGE",
                            "help": help,
                            "metrics": [{"labels": labels, "value": strata_textparse::go_float(v)}],
                        }),
                    );
                }
                for f in g.families.values() {
                    obj.insert(
                        f.name().to_string(),
                        serde_json::json!({
                            "time_stamp": stamp(g.push_time),
                            "type": f.r#type().as_str_name(),
                            "help": f.help(),
                            "metrics": f.metric.iter().map(status_metric).collect::<Vec<_>>(),
                        }),
                    );
                }
                serde_json::Value::Object(obj)
            })
            .collect();
        serde_json::json!({ "status": "success", "data": data })
    }
}

fn status_metric(m: &strata_proto::client_model::Metric) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> =
        m.label.iter().map(|l| (l.name().to_string(), l.value().into())).collect();
    let g = strata_textparse::go_float;
    if let Some(h) = &m.histogram {
        let buckets: serde_json::Map<String, serde_json::Value> =
            h.bucket.iter().map(|b| (g(b.upper_bound()), g(b.cumulative_count() as f64).into())).collect();
        return serde_json::json!({"labels": labels, "buckets": buckets, "count": g(h.sample_count() as f64), "sum": g(h.sample_sum())});
    }
    if let Some(s) = &m.summary {
        let q: serde_json::Map<String, serde_json::Value> =
            s.quantile.iter().map(|q| (g(q.quantile()), g(q.value()).into())).collect();
        return serde_json::json!({"labels": labels, "quantiles": q, "count": g(s.sample_count() as f64), "sum": g(s.sample_sum())});
    }
    let v = m
        .counter
        .as_ref()
        .map(|c| c.value())
        .or(m.gauge.as_ref().map(|x| x.value()))
        .or(m.untyped.as_ref().map(|x| x.value()))
        .unwrap_or(0.0);
    serde_json::json!({"labels": labels, "value": g(v)})
}

/// One series: `__name__`, the labels (empty ones dropped), the agent's
/// `extra` labels where the series has none of that name; sorted.
fn series(name: &str, labels: Vec<(String, String)>, extra: &[(String, String)], value: f64, t: i64) -> TimeSeries {
    let mut out: Vec<Label> =
        labels.into_iter().filter(|(_, v)| !v.is_empty()).map(|(name, value)| Label { name, value }).collect();
    for (k, v) in extra {
        if !out.iter().any(|l| &l.name == k) {
            out.push(Label { name: k.clone(), value: v.clone() });
        }
    }
    out.push(Label { name: "__name__".into(), value: name.into() });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    TimeSeries { labels: out, samples: vec![Sample { value, timestamp: t }], ..Default::default() }
}

/// Sets the grouping labels on every metric (overriding pushed values),
/// adds `instance=""` where missing, sorts the labels, and checks names.
fn sanitize(f: &mut MetricFamily, key: &GroupingKey) -> Result<(), String> {
    let name = f.name().to_string();
    if !strata_textparse::valid_metric_name(&name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    if name == PUSH_TIME || name == PUSH_FAILURE_TIME {
        return Err(format!("{name} is the agent's own metric of each group and cannot be pushed"));
    }
    let mut seen: BTreeSet<Vec<(String, String)>> = BTreeSet::new();
    for m in &mut f.metric {
        for l in &mut m.label {
            if let Some(v) = key.get(l.name()) {
                l.value = Some(v.clone());
            }
        }
        for (k, v) in key {
            if !m.label.iter().any(|l| l.name() == k) {
                m.label.push(LabelPair { name: Some(k.clone()), value: Some(v.clone()) });
            }
        }
        if !m.label.iter().any(|l| l.name() == "instance") {
            m.label.push(LabelPair { name: Some("instance".into()), value: Some(String::new()) });
        }
        m.label.sort_by(|a, b| a.name().cmp(b.name()));
        for w in m.label.windows(2) {
            if w[0].name() == w[1].name() {
                return Err(format!("metric {name} has label {:?} twice", w[0].name()));
            }
        }
        for l in &m.label {
            if !strata_textparse::valid_label_name(l.name()) || l.name().starts_with("__") {
                return Err(format!("metric {name} has invalid label name {:?}", l.name()));
            }
        }
        let ls: Vec<(String, String)> = m.label.iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
        if !seen.insert(ls.clone()) {
            return Err(format!("metric {name} with labels {ls:?} was pushed twice"));
        }
    }
    Ok(())
}

/// A metric name must have one type across all groups (as a Prometheus
/// gatherer requires).
fn consistent(groups: &BTreeMap<GroupingKey, Group>) -> Result<(), String> {
    let mut types: BTreeMap<&str, PbType> = BTreeMap::new();
    for g in groups.values() {
        for f in g.families.values() {
            match types.insert(f.name(), f.r#type()) {
                Some(t) if t != f.r#type() => {
                    return Err(format!(
                        "gathered metric family {} has type {} but should have {}",
                        f.name(),
                        f.r#type().as_str_name(),
                        t.as_str_name()
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PersistedFile {
    version: u32,
    groups: Vec<PersistedGroup>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PersistedGroup {
    labels: GroupingKey,
    push_time_seconds: f64,
    push_failure_time_seconds: f64,
    /// Delimited `io.prometheus.client.MetricFamily` protobuf, base64.
    families: String,
}

fn restore(path: &Path) -> Result<BTreeMap<GroupingKey, Group>, PushError> {
    let err = |message: String| PushError::Restore { path: path.display().to_string(), message };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    let doc: PersistedFile = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
    if doc.version != 1 {
        return Err(err(format!("unknown version {}", doc.version)));
    }
    let mut groups = BTreeMap::new();
    for g in doc.groups {
        let raw = base64::engine::general_purpose::STANDARD.decode(&g.families).map_err(|e| err(e.to_string()))?;
        let families = model::decode_delimited(&raw).map_err(|e| err(e.to_string()))?;
        groups.insert(
            g.labels,
            Group {
                families: families.into_iter().map(|f| (f.name().to_string(), f)).collect(),
                push_time: g.push_time_seconds,
                failure_time: g.push_failure_time_seconds,
            },
        );
    }
    Ok(groups)
}

/// Decodes a value given `@base64` (URL-safe alphabet, padding ignored).
fn decode_base64(s: &str) -> Result<String, String> {
    let raw =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|e| e.to_string())?;
    String::from_utf8(raw).map_err(|_| "not UTF-8".into())
}

/// The grouping key of `/metrics/<job|job@base64>/<job>{/<label>/<value>}`.
pub fn grouping_key(job_segment: &str, rest: &str) -> Result<GroupingKey, String> {
    let mut parts = rest.split('/');
    let job_raw = parts.next().unwrap_or("");
    let job = match job_segment {
        "job" => job_raw.to_string(),
        "job@base64" => {
            decode_base64(job_raw).map_err(|e| format!("invalid base64 encoding in job name {job_raw:?}: {e}"))?
        }
        other => return Err(format!("unknown path segment {other:?}: expected /metrics/job/<job>")),
    };
    if job.is_empty() {
        return Err("job name is required".into());
    }
    let comps: Vec<&str> = parts.collect();
    if !comps.len().is_multiple_of(2) {
        return Err(format!("odd number of components in label string {:?}", format!("/{}", comps.join("/"))));
    }
    let mut key = GroupingKey::new();
    for pair in comps.chunks(2) {
        let (name, value) = (pair[0], pair[1]);
        let (trimmed, b64) = match name.strip_suffix("@base64") {
            Some(t) => (t, true),
            None => (name, false),
        };
        if !strata_textparse::valid_label_name(trimmed) || trimmed.starts_with("__") {
            return Err(format!("improper label name {trimmed:?}"));
        }
        let value = if b64 {
            decode_base64(value).map_err(|e| format!("invalid base64 encoding for label {trimmed}={value:?}: {e}"))?
        } else {
            value.to_string()
        };
        key.insert(trimmed.to_string(), value);
    }
    key.insert("job".into(), job);
    Ok(key)
}

/// Parses a push body by its `Content-Type` (text unless it is the
/// delimited protobuf), gunzipped when `Content-Encoding: gzip`.
pub fn parse_body(headers: &HeaderMap, body: &[u8], max_bytes: usize) -> Result<Vec<MetricFamily>, Refusal> {
    let gz;
    let body = match headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(max_bytes as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("invalid gzip body: {e}")))?;
            if out.len() > max_bytes {
                return Err(Refusal {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("body is over {max_bytes} bytes uncompressed (push.max_request_bytes)"),
                });
            }
            gz = out;
            &gz[..]
        }
        Some(e) if !e.eq_ignore_ascii_case("identity") => {
            return Err(Refusal {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: format!("unsupported Content-Encoding {e:?} (gzip or none)"),
            });
        }
        _ => body,
    };
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    match Format::of_content_type(ct) {
        Format::Protobuf => model::decode_delimited(body).map_err(|e| bad(e.to_string())),
        _ => {
            let text = std::str::from_utf8(body).map_err(|_| bad("body is not UTF-8 text"))?;
            let families =
                strata_textparse::parse_text(text).map_err(|e| bad(format!("text format parsing error in {e}")))?;
            model::from_families(families).map_err(bad)
        }
    }
}

struct PushState {
    store: Arc<PushStore>,
    max_bytes: usize,
    pipeline: Arc<Pipeline>,
}

fn now_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn text(status: StatusCode, msg: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg + "\n").into_response()
}

async fn push(
    State(st): State<Arc<PushState>>,
    method: Method,
    UrlPath((job_segment, rest)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = match grouping_key(&job_segment, &rest) {
        Ok(k) => k,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let change = if method == Method::DELETE {
        Change::Delete
    } else {
        let bytes: Bytes = match axum::body::to_bytes(body, st.max_bytes).await {
            Ok(b) => b,
            Err(_) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body is over {} bytes (push.max_request_bytes)", st.max_bytes),
                );
            }
        };
        let families = match parse_body(&headers, &bytes, st.max_bytes) {
            Ok(f) => f,
            Err(r) => return text(r.status, r.message),
        };
        if method == Method::PUT { Change::Replace(families) } else { Change::Merge(families) }
    };
    // Refuse when the queue cannot take the next export: a push the agent
    // cannot forward is not accepted.
    if let Err(e) = st.pipeline.check_capacity() {
        return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    let deleting = matches!(change, Change::Delete);
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.apply(key, change, now_s())).await {
        Ok(Ok(())) if deleting => StatusCode::ACCEPTED.into_response(),
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(r)) => text(r.status, r.message),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("push failed: {e}")),
    }
}

/// What the push routes need with `--web.config.file`: pushes need
/// `write`, the listing and probes `read`/open.
pub fn access(method: &Method, path: &str) -> strata_server::Access {
    use strata_server::{Access, Role};
    if path.starts_with("/metrics/") && method != Method::GET {
        return Access::Role(Role::Write);
    }
    strata_server::auth::status_access(method, path)
}

/// The push API's routes.
pub fn router(store: Arc<PushStore>, pipeline: Arc<Pipeline>, max_bytes: usize) -> Router {
    let listing = store.clone();
    Router::new()
        .route("/metrics/{job_segment}/{*rest}", axum::routing::put(push).post(push).delete(push))
        .route(
            "/api/v1/metrics",
            get(move || {
                let s = listing.clone();
                async move { axum::Json(s.status()) }
            }),
        )
        .route("/-/healthy", get(|| async { "OK\n" }))
        .route("/-/ready", get(|| async { "Ready\n" }))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(Arc::new(PushState { store, max_bytes, pipeline }))
}

/// Forwards every group every `every`, and staleness markers for the
/// series that went away since the last round (a deleted group, a metric
/// replaced away), until `stop`.
pub async fn run_forwarder(
    store: Arc<PushStore>,
    pipeline: Arc<Pipeline>,
    extra: Vec<(String, String)>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    type Key = Vec<(String, String)>;
    let key_of = |t: &TimeSeries| -> Key { t.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect() };
    let mut last: BTreeSet<Key> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = crate::now_ms() as i64;
        let mut req = store.write_request(&extra, now);
        let current: BTreeSet<Key> = req.timeseries.iter().map(key_of).collect();
        for gone in last.difference(&current) {
            req.timeseries.push(TimeSeries {
                labels: gone.iter().map(|(name, value)| Label { name: name.clone(), value: value.clone() }).collect(),
                samples: vec![Sample { value: strata_otel_prom::stale_nan(), timestamp: now }],
                ..Default::default()
            });
        }
        if req.timeseries.is_empty() {
            continue;
        }
        match pipeline.submit_series(&req).await {
            Ok(()) => last = current,
            Err(e) => tracing::warn!(error = %e, "cannot queue the pushed groups; retrying next interval"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fams(text: &str) -> Vec<MetricFamily> {
        model::from_families(strata_textparse::parse_text(text).unwrap()).unwrap()
    }

    fn key(job: &str) -> GroupingKey {
        grouping_key("job", job).unwrap()
    }

    fn names(s: &PushStore) -> Vec<String> {
        let req = s.write_request(&[], 0);
        req.timeseries
            .iter()
            .map(|t| t.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>().join(","))
            .collect()
    }

    #[test]
    fn grouping_keys_decode_base64_and_refuse_bad_paths() {
        let k = grouping_key("job@base64", "L3Zhci90bXA/instance/a/path@base64/L3Zhci90bXA=/empty@base64/=").unwrap();
        assert_eq!(k.get("job").map(String::as_str), Some("/var/tmp"));
        assert_eq!(k.get("path").map(String::as_str), Some("/var/tmp"));
        assert_eq!(k.get("empty").map(String::as_str), Some(""));
        assert_eq!(k.get("instance").map(String::as_str), Some("a"));
        for (seg, rest, want) in [
            ("job", "", "job name is required"),
            ("job", "a/b", "odd number of components"),
            ("job", "a/__x/y", "improper label name \"__x\""),
            ("job", "a/1x/y", "improper label name"),
            ("job@base64", "!!", "invalid base64 encoding in job name"),
            ("jobs", "a", "unknown path segment"),
        ] {
            let e = grouping_key(seg, rest).unwrap_err();
            assert!(e.contains(want), "{seg}/{rest}: {e}");
        }
    }

    #[test]
    fn put_post_delete_follow_the_pushgateway() {
        let s = PushStore::open(None, 1000).unwrap();
        s.apply(key("j"), Change::Replace(fams("a{x=\"1\"} 1\nb 2\n")), 10.0).unwrap();
        assert_eq!(
            names(&s),
            vec![
                "__name__=a,job=j,x=1",
                "__name__=b,job=j",
                "__name__=push_time_seconds,job=j",
                "__name__=push_failure_time_seconds,job=j"
            ]
        );
        // POST replaces same-name metrics only.
        s.apply(key("j"), Change::Merge(fams("a{x=\"2\"} 3\n")), 11.0).unwrap();
        let n = names(&s);
        assert!(n.contains(&"__name__=a,job=j,x=2".into()) && !n.contains(&"__name__=a,job=j,x=1".into()), "{n:?}");
        assert!(n.contains(&"__name__=b,job=j".into()));
        // PUT replaces the group.
        s.apply(key("j"), Change::Replace(fams("c 1\n")), 12.0).unwrap();
        assert_eq!(names(&s).len(), 3);
        // The grouping key wins over a pushed label.
        s.apply(
            grouping_key("job", "k/instance/i1").unwrap(),
            Change::Replace(fams("d{instance=\"other\",job=\"x\"} 1\n")),
            13.0,
        )
        .unwrap();
        assert!(names(&s).contains(&"__name__=d,instance=i1,job=k".into()), "{:?}", names(&s));
        s.apply(key("j"), Change::Delete, 14.0).unwrap();
        assert!(!names(&s).iter().any(|n| n.contains("job=j")));
    }

    #[test]
    fn refused_pushes_change_nothing_but_the_failure_time() {
        let s = PushStore::open(None, 8).unwrap();
        s.apply(key("j"), Change::Replace(fams("# TYPE a counter\na 1\n")), 10.0).unwrap();
        let e = s.apply(key("k"), Change::Replace(fams("# TYPE a gauge\na 1\n")), 11.0).unwrap_err();
        assert!(e.message.contains("has type GAUGE but should have COUNTER"), "{e:?}");
        let e = s.apply(key("j"), Change::Merge(fams("b 1 1000\n")), 12.0).unwrap_err();
        assert!(e.message.contains("must not have timestamps"), "{e:?}");
        let e = s.apply(key("j"), Change::Merge(fams("push_time_seconds 1\n")), 12.0).unwrap_err();
        assert!(e.message.contains("cannot be pushed"), "{e:?}");
        let many: String = (0..10).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
        let e = s.apply(key("j"), Change::Merge(fams(&many)), 13.0).unwrap_err();
        assert!(e.message.contains("push.max_series"), "{e:?}");
        let req = s.write_request(&[], 0);
        let v = |name: &str, job: &str| {
            req.timeseries
                .iter()
                .find(|t| t.labels.iter().any(|l| l.value == name) && t.labels.iter().any(|l| l.value == job))
                .map(|t| t.samples[0].value)
        };
        assert_eq!(v("push_time_seconds", "j"), Some(10.0));
        assert_eq!(v("push_failure_time_seconds", "j"), Some(13.0));
        assert_eq!(v("push_time_seconds", "k"), Some(0.0), "a refused first push creates the group's failure record");
        assert_eq!(v("push_failure_time_seconds", "k"), Some(11.0));
        assert!(!req.timeseries.iter().any(|t| t.labels.iter().any(|l| l.value == "m")));
    }

    #[test]
    fn groups_survive_a_restart_through_the_persistence_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("push.json");
        let s = PushStore::open(Some(file.clone()), 1000).unwrap();
        s.apply(
            key("j"),
            Change::Replace(fams("# HELP a A.\n# TYPE a histogram\na_bucket{le=\"1\"} 1\na_sum 1\na_count 1\n")),
            10.0,
        )
        .unwrap();
        let before = s.write_request(&[], 0);
        drop(s);
        let s = PushStore::open(Some(file.clone()), 1000).unwrap();
        assert_eq!(s.write_request(&[], 0), before);
        std::fs::write(&file, b"{not json").unwrap();
        let e = PushStore::open(Some(file), 1000).err().unwrap();
        assert!(e.to_string().contains("push.json"), "{e}");
    }

    #[test]
    fn forwarded_series_keep_pushed_labels_and_gain_the_agents() {
        let s = PushStore::open(None, 1000).unwrap();
        s.apply(key("j"), Change::Replace(fams("a{environment=\"mine\"} 1\nb 2\n")), 10.0).unwrap();
        let extra = vec![("environment".to_string(), "prod".to_string())];
        let n: Vec<String> = s
            .write_request(&extra, 0)
            .timeseries
            .iter()
            .map(|t| t.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>().join(","))
            .collect();
        assert!(n.contains(&"__name__=a,environment=mine,job=j".into()), "{n:?}");
        assert!(n.contains(&"__name__=b,environment=prod,job=j".into()), "{n:?}");
    }
}
