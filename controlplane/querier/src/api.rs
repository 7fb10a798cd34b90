//! The Prometheus HTTP API (`/api/v1/*`) with Prometheus' JSON shapes,
//! status codes and `errorType`s.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use strata_promql::{Error as QueryError, FloatHistogram, Labels, QueryValue, format_float};

use crate::QuerierState;
use crate::fanout::FanoutError;
use crate::query_service::{ServiceError, admit, evaluate};

/// Prometheus' limit on points per series in a range query.
pub const MAX_POINTS: i64 = 11_000;
const MIN_TIME: i64 = -9_223_372_036_854_775 / 2;
const MAX_TIME: i64 = 9_223_372_036_854_775 / 2;

/// An API error: Prometheus' `errorType` and HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, kind: "unavailable", message: message.into() }
    }

    pub fn bad_data(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, kind: "bad_data", message: message.into() }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            QueryError::BadData(_) => StatusCode::BAD_REQUEST,
            QueryError::Execution(_) | QueryError::TooManySamples(_) => StatusCode::UNPROCESSABLE_ENTITY,
            QueryError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, kind: e.error_type(), message: e.to_string() }
    }
}

impl From<FanoutError> for ApiError {
    fn from(e: FanoutError) -> Self {
        match e {
            FanoutError::BadRequest(m) => ApiError::bad_data(m),
            FanoutError::TooManySamples => QueryError::TooManySamples("query execution").into(),
            FanoutError::Timeout => QueryError::Timeout("query execution").into(),
            FanoutError::SourceLimit(m) => QueryError::Execution(m).into(),
            other => {
                ApiError { status: StatusCode::SERVICE_UNAVAILABLE, kind: "unavailable", message: other.to_string() }
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Query(q) => q.into(),
            ServiceError::Fanout(f) => f.into(),
            ServiceError::Limit(m) => ApiError::bad_data(m),
            ServiceError::Internal(m) => {
                ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "internal", message: m }
            }
            ServiceError::Downstream { status, kind, message } => {
                ApiError { status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), kind, message }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"status": "error", "errorType": self.kind, "error": self.message});
        (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

/// Form/query parameters; repeated keys (`match[]`) keep every value.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, Vec<String>>);

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Params {
    pub fn parse(query: Option<&str>, body: Option<&[u8]>) -> Params {
        let mut p = Params::default();
        let body = body.and_then(|b| std::str::from_utf8(b).ok());
        for part in query.into_iter().chain(body).flat_map(|s| s.split('&')) {
            if part.is_empty() {
                continue;
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            p.0.entry(percent_decode(k)).or_default().push(percent_decode(v));
        }
        p
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.first()).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// Every `(name, value)`, sorted.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> =
            self.0.iter().flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str()))).collect();
        out.sort();
        out
    }

    pub fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or_default()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Unix seconds (with fraction) or RFC 3339.
pub fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
    {
        return Ok((f * 1000.0).round() as i64);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        });
    }
    Err(ApiError::bad_data(format!("invalid parameter {name:?}: cannot parse {s:?} to a valid timestamp")))
}

/// Seconds (with fraction) or a Prometheus duration such as `1m30s`.
pub fn parse_duration(name: &str, s: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::bad_data(format!("invalid parameter {name:?}: cannot parse {s:?} to a valid duration"));
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() || f.abs() > 9.2e15 {
            return Err(bad());
        }
        return Ok((f * 1000.0).round() as i64);
    }
    let mut total = 0i64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let mult = match unit.as_str() {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(bad()),
        };
        total = total.checked_add(n.checked_mul(mult).ok_or_else(bad)?).ok_or_else(bad)?;
    }
    if !num.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// The request's tenant: `X-Scope-OrgID`, already validated (or set from
/// the credential) by the server layer, or the default tenant.
pub(crate) fn tenant(headers: &HeaderMap) -> String {
    headers
        .get(strata_model::tenant::TENANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or(strata_model::DEFAULT_TENANT)
        .to_string()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn write_ts(out: &mut String, ms: i64) {
    let _ = write!(out, "{}", ms as f64 / 1000.0);
}

fn write_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, (n, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_str(n));
        out.push(':');
        out.push_str(&json_str(v));
    }
    out.push('}');
}

fn success(data: &str, warnings: &[String]) -> Response {
    success_annotated(data, warnings, &[])
}

/// Prometheus' success envelope with `warnings` and (PromQL info
/// annotations) `infos`, each only when non-empty.
pub(crate) fn success_annotated(data: &str, warnings: &[String], infos: &[String]) -> Response {
    let mut out = String::with_capacity(data.len() + 64);
    out.push_str("{\"status\":\"success\",\"data\":");
    out.push_str(data);
    for (key, list) in [("warnings", warnings), ("infos", infos)] {
        if !list.is_empty() {
            let _ = write!(out, ",\"{key}\":");
            out.push_str(&serde_json::to_string(list).unwrap_or_else(|_| "[]".into()));
        }
    }
    out.push('}');
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// A native histogram as Prometheus' JSON API writes it: count, sum and the
/// non-empty buckets as `[boundary rule, lower, upper, count]` (rule 0:
/// (lower, upper], 1: [lower, upper), 3: [lower, upper] for the zero bucket).
fn write_histogram(out: &mut String, t: i64, h: &FloatHistogram) {
    out.push('[');
    write_ts(out, t);
    let _ = write!(out, ",{{\"count\":\"{}\",\"sum\":\"{}\"", format_float(h.count), format_float(h.sum));
    let buckets: Vec<_> = h.buckets().into_iter().filter(|b| b.count != 0.0).collect();
    if !buckets.is_empty() {
        out.push_str(",\"buckets\":[");
        for (i, b) in buckets.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let rule = if b.lower < 0.0 && b.upper > 0.0 && !h.uses_custom_buckets() {
                3
            } else if b.upper <= 0.0 && !h.uses_custom_buckets() {
                1
            } else {
                0
            };
            let _ = write!(
                out,
                "[{rule},\"{}\",\"{}\",\"{}\"]",
                format_float(b.lower),
                format_float(b.upper),
                format_float(b.count)
            );
        }
        out.push(']');
    }
    out.push_str("}]");
}

/// Encodes a query result as Prometheus' `data` object.
pub fn encode_value(v: &QueryValue) -> String {
    let mut out = String::new();
    let _ = write!(out, "{{\"resultType\":\"{}\",\"result\":", v.result_type());
    match v {
        QueryValue::Scalar { t, v } => {
            out.push('[');
            write_ts(&mut out, *t);
            let _ = write!(out, ",\"{}\"]", format_float(*v));
        }
        QueryValue::String { t, v } => {
            out.push('[');
            write_ts(&mut out, *t);
            let _ = write!(out, ",{}]", json_str(v));
        }
        QueryValue::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, &s.labels);
                match &s.h {
                    Some(h) => {
                        out.push_str(",\"histogram\":");
                        write_histogram(&mut out, s.t, h);
                        out.push('}');
                    }
                    None => {
                        out.push_str(",\"value\":[");
                        write_ts(&mut out, s.t);
                        let _ = write!(out, ",\"{}\"]}}", format_float(s.v));
                    }
                }
            }
            out.push(']');
        }
        QueryValue::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, &s.labels);
                if !s.samples.is_empty() || s.histograms.is_empty() {
                    out.push_str(",\"values\":[");
                    for (j, (t, v)) in s.samples.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        out.push('[');
                        write_ts(&mut out, *t);
                        let _ = write!(out, ",\"{}\"]", format_float(*v));
                    }
                    out.push(']');
                }
                if !s.histograms.is_empty() {
                    out.push_str(",\"histograms\":[");
                    for (j, (t, h)) in s.histograms.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        write_histogram(&mut out, *t, h);
                    }
                    out.push(']');
                }
                out.push('}');
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

fn query_timeout(state: &QuerierState, p: &Params) -> Result<Duration, ApiError> {
    timeout_param(p, state.engine.options().timeout)
}

/// The `timeout` parameter, at most `max` (`max` without one).
pub(crate) fn timeout_param(p: &Params, max: Duration) -> Result<Duration, ApiError> {
    match p.get("timeout") {
        Some(t) => match parse_duration("timeout", t)? {
            // Prometheus would start such a query with its deadline already
            // past and answer 503; a timeout that cannot be met is bad input.
            ms if ms <= 0 => {
                Err(ApiError::bad_data(format!("invalid parameter \"timeout\": {t:?} is not a positive duration")))
            }
            ms => Ok(Duration::from_millis(ms as u64).min(max)),
        },
        None => Ok(max),
    }
}

pub(crate) fn parse_query(p: &Params) -> Result<strata_promql::Expr, ApiError> {
    let q = p.get("query").ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query is empty"))?;
    strata_promql::parse(q).map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// The query reading downsampled data where that keeps its answer, up to
/// the `max_source_resolution` parameter (`auto` by default, `0s` for raw
/// samples only, `5m`, `1h`), as Thanos' querier takes it.
fn downsampled(
    expr: strata_promql::Expr,
    p: &Params,
    start: i64,
    end: i64,
    step: i64,
) -> Result<strata_promql::Expr, ApiError> {
    let max = strata_promql::downsample::MaxResolution::parse(p.get("max_source_resolution").unwrap_or("auto"))
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"max_source_resolution\": {e}")))?;
    Ok(strata_promql::downsample::rewrite(&expr, start, end, step, max).0)
}

pub async fn query(
    State(state): State<Arc<QuerierState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let p = Params::parse(q.as_deref(), Some(&body));
    let t = match p.get("time") {
        Some(s) => parse_time("time", s)?,
        None => now_ms(),
    };
    let expr = downsampled(parse_query(&p)?, &p, t, t, 0)?;
    let deadline = Instant::now() + query_timeout(&state, &p)?;
    let tenant = tenant(&headers);
    let _slot = admit(&state, &tenant, deadline).await?;
    let r = evaluate(&state, &tenant, expr, t, t, None, deadline).await;
    state.metrics.observe("query", started.elapsed(), r.is_ok());
    let e = r?;
    Ok(success_annotated(&encode_value(&e.value), &e.warnings, &e.infos))
}

pub async fn query_range(
    State(state): State<Arc<QuerierState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let p = Params::parse(q.as_deref(), Some(&body));
    let (start, end, step) = range_params(&p)?;
    let expr = downsampled(parse_query(&p)?, &p, start, end, step)?;
    let deadline = Instant::now() + query_timeout(&state, &p)?;
    let tenant = tenant(&headers);
    let _slot = admit(&state, &tenant, deadline).await?;
    let r = crate::query_frontend::range_query(&state, &tenant, expr, start, end, step, deadline).await;
    state.metrics.observe("query_range", started.elapsed(), r.is_ok());
    let e = r?;
    Ok(success_annotated(&encode_value(&e.value), &e.warnings, &e.infos))
}

/// `start`, `end` and `step` of a range query, checked as Prometheus does.
pub(crate) fn range_params(p: &Params) -> Result<(i64, i64, i64), ApiError> {
    let start = parse_time(
        "start",
        p.get("start")
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"start\": cannot parse \"\" to a valid timestamp"))?,
    )?;
    let end = parse_time(
        "end",
        p.get("end")
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"end\": cannot parse \"\" to a valid timestamp"))?,
    )?;
    if end < start {
        return Err(ApiError::bad_data("invalid parameter \"end\": end timestamp must not be before start time"));
    }
    let step = parse_duration(
        "step",
        p.get("step")
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"step\": cannot parse \"\" to a valid duration"))?,
    )?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    Ok((start, end, step))
}

fn time_range(p: &Params) -> Result<(i64, i64), ApiError> {
    let start = match p.get("start") {
        Some(s) => parse_time("start", s)?,
        None => MIN_TIME,
    };
    let end = match p.get("end") {
        Some(s) => parse_time("end", s)?,
        None => MAX_TIME,
    };
    if end < start {
        return Err(ApiError::bad_data("invalid parameter \"end\": end timestamp must not be before start time"));
    }
    Ok((start, end))
}

fn match_sets(p: &Params) -> Result<Vec<Vec<strata_promql::Matcher>>, ApiError> {
    let mut out = Vec::new();
    for m in p.all("match[]") {
        let sets = strata_promql::parse_series_selector(m)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
        out.extend(sets);
    }
    Ok(out)
}

pub async fn series(
    State(state): State<Arc<QuerierState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let p = Params::parse(q.as_deref(), Some(&body));
    let sets = match_sets(&p)?;
    if sets.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let (start, end) = time_range(&p)?;
    let tenant = tenant(&headers);
    let mut all: std::collections::BTreeSet<Labels> = std::collections::BTreeSet::new();
    let mut warnings = Vec::new();
    for m in &sets {
        let r = state.stores.select(&tenant, m, start, end, true, &crate::fanout::SampleBudget::unlimited()).await?;
        warnings.extend(r.warnings);
        all.extend(r.data.into_iter().map(|s| s.labels));
    }
    let mut out = String::from("[");
    for (i, l) in all.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_labels(&mut out, l);
    }
    out.push(']');
    state.metrics.observe("series", started.elapsed(), true);
    Ok(success(&out, &warnings))
}

pub async fn labels(
    State(state): State<Arc<QuerierState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let p = Params::parse(q.as_deref(), Some(&body));
    let sets = match_sets(&p)?;
    let (start, end) = time_range(&p)?;
    let (names, warnings) = label_list(&state, &tenant(&headers), &sets, start, end, None).await?;
    state.metrics.observe("labels", started.elapsed(), true);
    Ok(success(&serde_json::to_string(&names).unwrap_or_else(|_| "[]".into()), &warnings))
}

/// Label names (`name` = None) or one label's values, unioned over the
/// `match[]` selectors (all series without any), with the sources' warnings.
async fn label_list(
    state: &QuerierState,
    tenant: &str,
    sets: &[Vec<strata_promql::Matcher>],
    start: i64,
    end: i64,
    name: Option<&str>,
) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let all = [Vec::new()];
    let sets = if sets.is_empty() { &all[..] } else { sets };
    let mut out = std::collections::BTreeSet::new();
    let mut warnings = Vec::new();
    for m in sets {
        let r = match name {
            None => state.stores.label_names(tenant, m, start, end).await?,
            Some(n) => state.stores.label_values(tenant, n, m, start, end).await?,
        };
        warnings.extend(r.warnings);
        out.extend(r.data);
    }
    Ok((out.into_iter().collect(), warnings))
}

pub async fn label_values(
    State(state): State<Arc<QuerierState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let p = Params::parse(q.as_deref(), None);
    let sets = match_sets(&p)?;
    let (start, end) = time_range(&p)?;
    if name.is_empty() {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let (values, warnings) = label_list(&state, &tenant(&headers), &sets, start, end, Some(&name)).await?;
    state.metrics.observe("label_values", started.elapsed(), true);
    Ok(success(&serde_json::to_string(&values).unwrap_or_else(|_| "[]".into()), &warnings))
}

/// `/api/v1/metadata`: per metric family, its distinct metadata entries
/// (`type`, `help`, `unit`) as the ingesters recorded them from remote write
/// and OTLP; `metric` filters, `limit` caps the families and
/// `limit_per_metric` the entries per family (negative or absent: no cap).
pub async fn metadata(
    State(state): State<Arc<QuerierState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let p = Params::parse(q.as_deref(), None);
    let int = |key: &str| -> Result<Option<usize>, ApiError> {
        match p.get(key) {
            None | Some("") => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n < 0 => Ok(None),
                Ok(n) => Ok(Some(n as usize)),
                Err(_) => Err(ApiError::bad_data(format!("{key} must be a number"))),
            },
        }
    };
    let (limit, per_metric) = (int("limit")?, int("limit_per_metric")?);
    let metric = p.get("metric").unwrap_or_default().to_string();
    let r = state.stores.metadata(&tenant(&headers), &metric, 0).await?;
    let mut by_family: std::collections::BTreeMap<String, Vec<serde_json::Value>> = Default::default();
    for m in r.data {
        let entry = serde_json::json!({"type": metric_type_name(m.r#type), "help": m.help, "unit": m.unit});
        let list = by_family.entry(m.metric_family_name).or_default();
        if !list.contains(&entry) {
            list.push(entry);
        }
    }
    let mut out = serde_json::Map::new();
    for (family, mut list) in by_family {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        if let Some(n) = per_metric {
            list.truncate(n);
        }
        out.insert(family, serde_json::Value::Array(list));
    }
    state.metrics.observe("metadata", started.elapsed(), true);
    Ok(success(&serde_json::Value::Object(out).to_string(), &r.warnings))
}

/// Prometheus' API name of a remote-write metric type.
fn metric_type_name(t: i32) -> &'static str {
    match t {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

/// `/api/v1/rules` and `/api/v1/alerts` from the rulers given by
/// `--ruler.url`, merged (groups or alerts of every ruler, in the order
/// given), for the caller's tenant; with no ruler, Prometheus' answer for a
/// server without rule files, so Grafana's alert list shows "none".
async fn from_rulers(
    state: &QuerierState,
    headers: &HeaderMap,
    query: Option<&str>,
    path: &str,
    key: &str,
) -> Response {
    if state.ruler_urls.is_empty() {
        return success(&format!("{{\"{key}\":[]}}"), &[]);
    }
    let tenant = tenant(headers);
    let mut merged: Vec<serde_json::Value> = Vec::new();
    for base in &state.ruler_urls {
        let mut url = format!("{}{path}", base.trim_end_matches('/'));
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(q);
        }
        let answer = with_credential(state.http.current().get(&url), headers)
            .header(strata_model::tenant::TENANT_HEADER, &tenant)
            .send()
            .await
            .map_err(|e| e.to_string());
        let body: serde_json::Value = match answer {
            Ok(r) if r.status().is_success() => {
                match r
                    .bytes()
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string()))
                {
                    Ok(v) => v,
                    Err(e) => return ApiError::unavailable(format!("ruler {base}: {e}")).into_response(),
                }
            }
            Ok(r) if r.status() == StatusCode::BAD_REQUEST => {
                let text = r.text().await.unwrap_or_default();
                let msg = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(String::from))
                    .unwrap_or(text);
                return ApiError::bad_data(msg).into_response();
            }
            Ok(r) => return ApiError::unavailable(format!("ruler {base}: HTTP {}", r.status())).into_response(),
            Err(e) => return ApiError::unavailable(format!("ruler {base}: {e}")).into_response(),
        };
        if let Some(items) = body["data"][key].as_array() {
            merged.extend(items.iter().cloned());
        }
    }
    let data = serde_json::json!({ key: merged });
    success(&data.to_string(), &[])
}

/// The caller's credential passed on to a ruler (which reads the same web
/// config), so the ruler checks the same roles and tenant.
fn with_credential(req: reqwest_rustls::RequestBuilder, headers: &HeaderMap) -> reqwest_rustls::RequestBuilder {
    match headers.get(axum::http::header::AUTHORIZATION) {
        Some(v) => req.header(axum::http::header::AUTHORIZATION, v.clone()),
        None => req,
    }
}

/// The ruler configuration API (`/api/v1/rules/{namespace}[/{group}]`,
/// `/prometheus/config/v1/rules…`), forwarded for the caller's tenant to
/// the first `--ruler.url` that answers, so clients (Grafana, mimirtool)
/// need only the querier's address. The ruler's status and body come back.
pub async fn rule_config(
    State(state): State<Arc<QuerierState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if state.ruler_urls.is_empty() {
        return (StatusCode::NOT_IMPLEMENTED, "no ruler: start the querier with --ruler.url\n").into_response();
    }
    let tenant = tenant(&headers);
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or(uri.path());
    let mut last = String::new();
    for base in &state.ruler_urls {
        let mut req = with_credential(
            state.http.current().request(method.clone(), format!("{}{path_and_query}", base.trim_end_matches('/'))),
            &headers,
        )
        .header(strata_model::tenant::TENANT_HEADER, &tenant)
        .body(body.clone());
        if let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE) {
            req = req.header(axum::http::header::CONTENT_TYPE, ct);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status();
                let ct = r.headers().get(axum::http::header::CONTENT_TYPE).cloned();
                let bytes = match r.bytes().await {
                    Ok(b) => b,
                    Err(e) => {
                        last = format!("ruler {base}: {e}");
                        continue;
                    }
                };
                let mut resp = (status, bytes).into_response();
                if let Some(ct) = ct {
                    resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, ct);
                }
                return resp;
            }
            Err(e) => last = format!("ruler {base}: {e}"),
        }
    }
    (StatusCode::SERVICE_UNAVAILABLE, format!("no ruler answered: {last}\n")).into_response()
}

pub async fn rules(State(state): State<Arc<QuerierState>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    from_rulers(&state, &headers, q.as_deref(), "/api/v1/rules", "groups").await
}

pub async fn alerts(State(state): State<Arc<QuerierState>>, headers: HeaderMap) -> Response {
    from_rulers(&state, &headers, None, "/api/v1/alerts", "alerts").await
}

/// `/api/v1/query_exemplars`: the exemplars the ingesters keep for the
/// series the query's selectors match, between `start` and `end`.
pub async fn query_exemplars(
    State(state): State<Arc<QuerierState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let p = Params::parse(q.as_deref(), Some(&body));
    let expr = parse_query(&p)?;
    let (start, end) = time_range(&p)?;
    let lookback = state.engine.options().lookback_delta.as_millis() as i64;
    let mut sets: Vec<Vec<strata_promql::Matcher>> =
        strata_promql::selections(&expr, start, end, lookback).into_iter().map(|s| s.matchers).collect();
    sets.dedup_by(|a, b| a.iter().map(|m| m.to_string()).eq(b.iter().map(|m| m.to_string())));
    let tenant = tenant(&headers);
    let fetches = sets.iter().map(|ms| state.stores.exemplars(&tenant, ms, start, end));
    let mut by_series: std::collections::BTreeMap<Labels, Vec<(i64, u64, Labels)>> = Default::default();
    let mut warnings = Vec::new();
    for r in futures::future::join_all(fetches).await {
        let r = r?;
        warnings.extend(r.warnings);
        for (labels, exemplars) in r.data {
            let list = by_series.entry(labels).or_default();
            for e in exemplars {
                let el = Labels::from_sorted_or_sort(e.labels.into_iter().map(|l| (l.name, l.value)).collect());
                list.push((e.timestamp, e.value.to_bits(), el));
            }
        }
    }
    let mut out = String::from("[");
    for (i, (labels, mut list)) in by_series.into_iter().enumerate() {
        list.sort();
        list.dedup();
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"seriesLabels\":");
        write_labels(&mut out, &labels);
        out.push_str(",\"exemplars\":[");
        for (j, (t, v, el)) in list.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str("{\"labels\":");
            write_labels(&mut out, el);
            let _ = write!(out, ",\"value\":\"{}\",\"timestamp\":", strata_promql::format_float(f64::from_bits(*v)));
            write_ts(&mut out, *t);
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push(']');
    warnings.sort();
    warnings.dedup();
    state.metrics.observe("query_exemplars", started.elapsed(), true);
    Ok(success(&out, &warnings))
}

/// Prometheus' buildinfo. `version` is the Prometheus API and PromQL
/// version Strata implements (clients such as Grafana enable features by
/// it); Strata's own version is `strataVersion`.
pub const PROMETHEUS_COMPATIBLE_VERSION: &str = "3.5.0";

pub async fn buildinfo() -> Response {
    let data = serde_json::json!({
        "version": PROMETHEUS_COMPATIBLE_VERSION,
        "strataVersion": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": "strata",
    });
    success(&data.to_string(), &[])
}

pub async fn format_query(RawQuery(q): RawQuery, body: Bytes) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), Some(&body));
    let expr = parse_query(&p)?;
    Ok(success(&json_str(&expr.prettify()), &[]))
}

/// Strata extension: SQL over the blocks in object storage (DataFusion;
/// tables `series` and `samples`, see docs/querier.md). The SQL is the
/// `query` parameter (form or URL) or else the whole request body.
pub async fn sql(
    State(state): State<Arc<QuerierState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let p = Params::parse(q.as_deref(), if form { Some(&body) } else { None });
    // `curl --data-binary @q.sql` labels raw SQL as a form: without a
    // `query` field the body is the SQL.
    let text = match p.get("query") {
        Some(s) => s.to_string(),
        None => String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_data("SQL must be UTF-8"))?,
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_data("missing SQL: send it as the request body or the \"query\" parameter"));
    }
    let Some(engine) = &state.sql else {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "unavailable",
            message: "SQL is disabled: the querier has no object storage configured (--objstore.*)".into(),
        });
    };
    let r = engine.query(&tenant(&headers), &text).await;
    state.metrics.observe("sql", started.elapsed(), r.is_ok());
    let r = r.map_err(|e| {
        let status = match &e {
            strata_sql::SqlError::BadQuery(_) => StatusCode::BAD_REQUEST,
            strata_sql::SqlError::Execution(_) => StatusCode::UNPROCESSABLE_ENTITY,
            strata_sql::SqlError::Storage(_) | strata_sql::SqlError::Timeout(_) | strata_sql::SqlError::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError { status, kind: e.error_type(), message: e.to_string() }
    })?;
    let columns: Vec<serde_json::Value> =
        r.columns.iter().map(|(n, t)| serde_json::json!({"name": n, "type": t})).collect();
    let data = serde_json::json!({"columns": columns, "rows": r.rows}).to_string();
    let warnings =
        if r.truncated { vec![format!("result truncated to the first {} rows", r.rows.len())] } else { Vec::new() };
    Ok(success(&data, &warnings))
}

/// Strata extension: the StoreAPI sources and what they reported.
pub async fn stores(State(state): State<Arc<QuerierState>>) -> Response {
    let list: Vec<serde_json::Value> = state
        .stores
        .status()
        .into_iter()
        .map(|(addr, info)| match info {
            Some(i) => serde_json::json!({
                "endpoint": addr, "up": true, "component": i.component, "shard": i.shard,
                "nodeId": i.node_id, "leaderId": i.leader_id, "minTime": i.min_time, "maxTime": i.max_time,
            }),
            None => serde_json::json!({"endpoint": addr, "up": false}),
        })
        .collect();
    success(&serde_json::Value::Array(list).to_string(), &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_promql::Series;

    #[test]
    fn parses_times_and_durations() {
        assert_eq!(parse_time("t", "1435781451.781").unwrap(), 1_435_781_451_781);
        assert_eq!(parse_time("t", "2015-07-01T20:10:51.781Z").unwrap(), 1_435_781_451_781);
        assert!(parse_time("t", "yesterday").is_err());
        assert_eq!(parse_duration("step", "15").unwrap(), 15_000);
        assert_eq!(parse_duration("step", "1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration("step", "0.5").unwrap(), 500);
        assert!(parse_duration("step", "5x").is_err());
    }

    #[test]
    fn params_keep_repeated_keys_and_decode() {
        let p = Params::parse(Some("match%5B%5D=up&match[]=a%7Bb%3D%22c%22%7D&query=sum+by(x)"), None);
        assert_eq!(p.all("match[]"), &["up".to_string(), "a{b=\"c\"}".to_string()]);
        assert_eq!(p.get("query"), Some("sum by(x)"));
    }

    #[test]
    fn encodes_like_prometheus() {
        let v = QueryValue::Vector(vec![strata_promql::InstantSample {
            labels: Labels::new(vec![("__name__".into(), "up".into()), ("job".into(), "a\"b".into())]),
            t: 1_435_781_451_781,
            v: 1.0,
            h: None,
        }]);
        assert_eq!(
            encode_value(&v),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1435781451.781,"1"]}]}"#
        );
        let h = FloatHistogram {
            schema: strata_promql::histogram::CUSTOM_BUCKETS_SCHEMA,
            custom_values: vec![0.5],
            count: 3.0,
            sum: 2.5,
            positive: [(0, 1.0), (1, 2.0)].into(),
            ..Default::default()
        };
        let m = QueryValue::Matrix(vec![Series {
            labels: Labels::default(),
            samples: vec![],
            histograms: vec![(2000, std::sync::Arc::new(h))],
        }]);
        assert_eq!(
            encode_value(&m),
            r#"{"resultType":"matrix","result":[{"metric":{},"histograms":[[2,{"count":"3","sum":"2.5","buckets":[[0,"-Inf","0.5","1"],[0,"0.5","+Inf","2"]]}]]}]}"#
        );
        let s = QueryValue::Scalar { t: 1000, v: f64::INFINITY };
        assert_eq!(encode_value(&s), r#"{"resultType":"scalar","result":[1,"+Inf"]}"#);
    }
}
