//! The ruler's HTTP API: Prometheus' `/api/v1/rules` and `/api/v1/alerts`
//! (per tenant, `X-Scope-OrgID`), `/-/reload`, `/-/ready`, `/metrics`, and
//! the Cortex/Mimir configuration API of [`crate::config_api`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::Manager;
use crate::alerting::AlertState;
use crate::gofmt::{format_e, rfc3339_nano};
use crate::group::{GroupRuntime, RuleKind, RuleState};

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub fn router(m: Arc<Manager>) -> Router {
    Router::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .route("/-/reload", post(reload).put(reload))
        .route("/-/ready", get(ready))
        .route("/-/healthy", get(|| async { "Strata ruler is Healthy.\n" }))
        .route("/metrics", get(metrics))
        .merge(crate::config_api::routes())
        .with_state(m)
}

/// What each route needs with `--web.config.file`; a route not listed
/// needs `admin`.
pub fn http_access(method: &axum::http::Method, path: &str) -> strata_server::Access {
    use strata_server::{Access, Role};
    match path {
        "/-/healthy" | "/-/ready" => Access::Open,
        "/metrics" => Access::Role(Role::Read),
        p if method == axum::http::Method::GET
            && (p.starts_with("/api/v1/") || p.starts_with(crate::config_api::MIMIR_PREFIX)) =>
        {
            Access::Role(Role::Read)
        }
        // A tenant's writers manage its rule groups.
        p if crate::config_api::is_config_write(method, p) => Access::Role(Role::Write),
        _ => Access::Role(Role::Admin),
    }
}

fn tenant(headers: &HeaderMap) -> Result<String, Box<Response>> {
    strata_model::tenant::tenant_from_header(headers.get(strata_model::tenant::TENANT_HEADER).map(|v| v.as_bytes()))
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "bad_data", &e)))
}

fn error(status: StatusCode, kind: &str, msg: &str) -> Response {
    (status, axum::Json(json!({"status": "error", "errorType": kind, "error": msg}))).into_response()
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// Query parameters with repeated keys (`rule_name[]=a&rule_name[]=b`).
fn params(q: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        out.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    out
}

fn time_or_zero(ms: Option<i64>) -> String {
    ms.map(rfc3339_nano).unwrap_or_else(|| ZERO_TIME.to_string())
}

fn alert_json(a: &crate::alerting::Alert) -> Value {
    let mut v = json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": rfc3339_nano(a.active_at),
        "value": format_e(a.value, None),
    });
    if let Some(k) = a.keep_firing_since {
        v["keepFiringSince"] = json!(rfc3339_nano(k));
    }
    v
}

fn active_alerts(r: &RuleState) -> Vec<&crate::alerting::Alert> {
    match &r.kind {
        RuleKind::Alerting(a) => {
            let mut v: Vec<_> = a.active.values().filter(|a| a.state != AlertState::Inactive).collect();
            v.sort_by(|x, y| x.labels.cmp(&y.labels));
            v
        }
        RuleKind::Recording { .. } => Vec::new(),
    }
}

fn rule_json(r: &RuleState, with_alerts: bool) -> Value {
    let mut v = match &r.kind {
        RuleKind::Recording { name, labels } => json!({
            "name": name, "query": r.expr, "labels": labels, "type": "recording",
        }),
        RuleKind::Alerting(a) => {
            let alerts = active_alerts(r);
            let state = alerts.iter().map(|a| a.state).fold(AlertState::Inactive, |s, a| match (s, a) {
                (AlertState::Firing, _) | (_, AlertState::Firing) => AlertState::Firing,
                (AlertState::Pending, _) | (_, AlertState::Pending) => AlertState::Pending,
                _ => AlertState::Inactive,
            });
            let mut v = json!({
                "state": state.as_str(),
                "name": a.spec.name,
                "query": r.expr,
                "duration": a.spec.hold.as_secs_f64(),
                "keepFiringFor": a.spec.keep_firing_for.as_secs_f64(),
                "labels": a.spec.labels,
                "annotations": a.spec.annotations,
                "type": "alerting",
            });
            if with_alerts {
                v["alerts"] = Value::Array(alerts.into_iter().map(alert_json).collect());
            }
            v
        }
    };
    v["health"] = json!(r.health.as_str());
    if let Some(e) = &r.last_error {
        v["lastError"] = json!(e);
    }
    v["evaluationTime"] = json!(r.eval_seconds);
    v["lastEvaluation"] = json!(time_or_zero(r.last_eval));
    v
}

async fn rules(State(m): State<Arc<Manager>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let p = params(q.as_deref());
    let kind = p.get("type").and_then(|v| v.first()).map(|s| s.to_lowercase());
    let (want_alerts, want_records) = match kind.as_deref() {
        None | Some("") => (true, true),
        Some("alert") => (true, false),
        Some("record") => (false, true),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                &format!("invalid parameter type: {other:?} (want alert or record)"),
            );
        }
    };
    let list = |k: &str| p.get(k).cloned().unwrap_or_default();
    let (names, groups, files) = (list("rule_name[]"), list("rule_group[]"), list("file[]"));
    let exclude_alerts = p.get("exclude_alerts").and_then(|v| v.first()).is_some_and(|v| v == "true");
    let filtered = !names.is_empty() || !groups.is_empty() || !files.is_empty() || kind.is_some();
    let mut out = Vec::new();
    for g in m.groups_of(&tenant) {
        if (!groups.is_empty() && !groups.contains(&g.group.name))
            || (!files.is_empty() && !files.contains(&g.group.file))
        {
            continue;
        }
        if let Some(v) = group_json(&g, want_alerts, want_records, &names, !exclude_alerts)
            && (!filtered || v["rules"].as_array().is_some_and(|r| !r.is_empty()))
        {
            out.push(v);
        }
    }
    success(json!({ "groups": out }))
}

fn group_json(g: &GroupRuntime, alerts: bool, records: bool, names: &[String], with_alerts: bool) -> Option<Value> {
    let st = g.state.lock().ok()?;
    let rules: Vec<Value> = st
        .rules
        .iter()
        .filter(|r| match r.kind {
            RuleKind::Alerting(_) => alerts,
            RuleKind::Recording { .. } => records,
        })
        .filter(|r| names.is_empty() || names.iter().any(|n| n == r.name()))
        .map(|r| rule_json(r, with_alerts))
        .collect();
    Some(json!({
        "name": g.group.name,
        "file": g.group.file,
        "rules": rules,
        "interval": g.group.interval.as_secs_f64(),
        "limit": g.group.limit,
        "evaluationTime": st.eval_seconds,
        "lastEvaluation": time_or_zero(st.last_eval),
    }))
}

async fn alerts(State(m): State<Arc<Manager>>, headers: HeaderMap) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let mut out = Vec::new();
    for g in m.groups_of(&tenant) {
        let Ok(st) = g.state.lock() else { continue };
        for r in &st.rules {
            out.extend(active_alerts(r).into_iter().map(alert_json));
        }
    }
    success(json!({ "alerts": out }))
}

async fn reload(State(m): State<Arc<Manager>>) -> Response {
    match m.reload() {
        Ok(n) => (StatusCode::OK, format!("{n} rule groups loaded\n")).into_response(),
        Err(errs) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload rules; the previous rules stay:\n{}\n", errs.join("\n")),
        )
            .into_response(),
    }
}

async fn ready(State(m): State<Arc<Manager>>) -> Response {
    if m.is_loaded() {
        (StatusCode::OK, "Strata ruler is Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Strata ruler is not ready: rules not loaded yet.\n").into_response()
    }
}

async fn metrics(State(m): State<Arc<Manager>>) -> Response {
    strata_server::process::page_response(m.services().metrics.encode())
}
