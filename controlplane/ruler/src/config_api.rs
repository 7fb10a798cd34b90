//! The Cortex/Mimir ruler configuration API: rule groups per tenant
//! uploaded, listed and deleted as YAML, kept in object storage
//! ([`crate::rule_store`]) and evaluated by every ruler replica.
//!
//! Routes (each also under Mimir's `/prometheus/config/v1/rules`):
//! * `GET /api/v1/rules/{namespace}`: `{namespace: [groups]}` as YAML;
//! * `GET /api/v1/rules/{namespace}/{group}`: the group as YAML;
//! * `POST /api/v1/rules/{namespace}`: body, one group as YAML → 202;
//! * `DELETE /api/v1/rules/{namespace}/{group}` and
//!   `DELETE /api/v1/rules/{namespace}` → 202.
//!
//! `GET /prometheus/config/v1/rules` lists every namespace of the tenant
//! (`GET /api/v1/rules` stays Prometheus' JSON rules API).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::Manager;
use crate::rule_file::{GroupSpec, RuleFile};

/// Mimir's prefix for the same routes.
pub const MIMIR_PREFIX: &str = strata_querier::RULE_CONFIG_PREFIX;

pub fn routes() -> Router<Arc<Manager>> {
    let mut r = Router::new().route(MIMIR_PREFIX, get(list_all));
    for prefix in ["/api/v1/rules", MIMIR_PREFIX] {
        r = r
            .route(&format!("{prefix}/{{namespace}}"), get(get_namespace).post(set_group).delete(delete_namespace))
            .route(&format!("{prefix}/{{namespace}}/{{group}}"), get(get_group).delete(delete_group));
    }
    r
}

/// Whether a request is a change through this API (needs the `write` role).
pub fn is_config_write(method: &axum::http::Method, path: &str) -> bool {
    (method == axum::http::Method::POST || method == axum::http::Method::DELETE)
        && strata_querier::is_rule_config_path(path)
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    if !m.ends_with('\n') {
        m.push('\n');
    }
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], m).into_response()
}

fn yaml<T: serde::Serialize>(v: &T) -> Response {
    match serde_yaml::to_string(v) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/yaml")], text).into_response(),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding rule groups: {e}")),
    }
}

/// Cortex's answer to a change it accepted.
fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "success", "data": null, "errorType": "", "error": ""})),
    )
        .into_response()
}

fn tenant(headers: &HeaderMap) -> Result<String, Box<Response>> {
    strata_model::tenant::tenant_from_header(headers.get(strata_model::tenant::TENANT_HEADER).map(|v| v.as_bytes()))
        .map_err(|e| Box::new(plain(StatusCode::BAD_REQUEST, e)))
}

fn storage_error(e: impl std::fmt::Display) -> Response {
    plain(StatusCode::SERVICE_UNAVAILABLE, format!("rule storage unavailable: {e}"))
}

fn store(m: &Manager) -> Result<&crate::rule_store::RuleStore, Box<Response>> {
    m.rule_store().ok_or_else(|| {
        Box::new(plain(
            StatusCode::NOT_IMPLEMENTED,
            "the ruler configuration API is off: this ruler has no rule storage",
        ))
    })
}

/// The tenant's stored groups (of one namespace), by namespace.
async fn listed(
    m: &Manager,
    tenant: &str,
    namespace: Option<&str>,
) -> Result<BTreeMap<String, Vec<GroupSpec>>, Response> {
    let store = store(m).map_err(|r| *r)?;
    let mut out: BTreeMap<String, Vec<GroupSpec>> = BTreeMap::new();
    for g in store.list(Some(tenant), namespace).await.map_err(storage_error)? {
        match g {
            Ok(g) => out.entry(g.namespace).or_default().push(g.spec),
            Err(e) => return Err(plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        }
    }
    Ok(out)
}

async fn list_all(State(m): State<Arc<Manager>>, headers: HeaderMap) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    match listed(&m, &tenant, None).await {
        // Mimir answers an empty map (Cortex answered 404); clients take both.
        Ok(groups) => yaml(&groups),
        Err(r) => r,
    }
}

async fn get_namespace(State(m): State<Arc<Manager>>, headers: HeaderMap, Path(ns): Path<String>) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    match listed(&m, &tenant, Some(&ns)).await {
        Ok(groups) if groups.is_empty() => plain(StatusCode::NOT_FOUND, "no rule groups found"),
        Ok(groups) => yaml(&groups),
        Err(r) => r,
    }
}

async fn get_group(
    State(m): State<Arc<Manager>>,
    headers: HeaderMap,
    Path((ns, group)): Path<(String, String)>,
) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let store = match store(&m) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match store.get(&tenant, &ns, &group).await {
        Ok(Some(g)) => yaml(&g),
        Ok(None) => plain(StatusCode::NOT_FOUND, "group does not exist"),
        Err(e) => storage_error(e),
    }
}

/// Checks an uploaded group as a rule file holding it, then against the
/// tenant's limits; the message says what is wrong.
async fn check_upload(m: &Manager, tenant: &str, ns: &str, body: &[u8]) -> Result<GroupSpec, Response> {
    let text = std::str::from_utf8(body).map_err(|_| plain(StatusCode::BAD_REQUEST, "the body is not UTF-8"))?;
    let spec: GroupSpec = serde_yaml::from_str(text)
        .map_err(|e| plain(StatusCode::BAD_REQUEST, format!("the body is not a rule group: {e}")))?;
    let file = RuleFile { groups: vec![spec.clone()] };
    let checked = crate::rule_file::check(ns, &file, m.config().evaluation_interval).map_err(|errs| {
        let errs: Vec<String> = errs.into_iter().map(|e| format!("namespace {ns:?}: {e}")).collect();
        plain(StatusCode::BAD_REQUEST, errs.join("\n"))
    })?;
    let limits = m.services().query.state().overrides.current().ruler(tenant);
    if let Some(max) = limits.max_rules_per_group
        && spec.rules.len() > max
    {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            format!(
                "per-group rules limit exceeded: group {:?} has {} rules, tenant {tenant:?} may have {max} (ruler_max_rules_per_rule_group)",
                spec.name,
                spec.rules.len()
            ),
        ));
    }
    if let (Some(min), Some(g)) = (limits.min_interval, checked.first())
        && g.interval < min
    {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            format!(
                "group {:?}: interval {:?} is shorter than tenant {tenant:?}'s minimum {:?} (ruler_min_evaluation_interval)",
                spec.name, g.interval, min
            ),
        ));
    }
    if let Some(max) = limits.max_rule_groups {
        let existing = listed(m, tenant, None).await?;
        let others = existing
            .iter()
            .flat_map(|(n, gs)| gs.iter().map(move |g| (n, &g.name)))
            .filter(|(n, name)| !(n.as_str() == ns && **name == spec.name))
            .count();
        if others + 1 > max {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                format!(
                    "per-tenant rule groups limit exceeded: tenant {tenant:?} has {others} groups and may have {max} (ruler_max_rule_groups_per_tenant)"
                ),
            ));
        }
    }
    Ok(spec)
}

/// Applies a change on this replica at once (the others see it at their
/// next poll).
async fn apply(m: &Manager) {
    m.services().metrics.api_changes.inc();
    if let Err(e) = m.sync_store().await {
        tracing::warn!(error = %e, "rule groups changed but not reloaded yet");
    }
}

async fn set_group(State(m): State<Arc<Manager>>, headers: HeaderMap, Path(ns): Path<String>, body: Bytes) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let store = match store(&m) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let spec = match check_upload(&m, &tenant, &ns, &body).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = store.put(&tenant, &ns, &spec).await {
        return storage_error(e);
    }
    tracing::info!(%tenant, namespace = %ns, group = %spec.name, "rule group stored");
    apply(&m).await;
    accepted()
}

async fn delete_group(
    State(m): State<Arc<Manager>>,
    headers: HeaderMap,
    Path((ns, group)): Path<(String, String)>,
) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let store = match store(&m) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match store.delete_group(&tenant, &ns, &group).await {
        Ok(true) => {
            tracing::info!(%tenant, namespace = %ns, %group, "rule group deleted");
            apply(&m).await;
            accepted()
        }
        Ok(false) => plain(StatusCode::NOT_FOUND, "group does not exist"),
        Err(e) => storage_error(e),
    }
}

async fn delete_namespace(State(m): State<Arc<Manager>>, headers: HeaderMap, Path(ns): Path<String>) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let store = match store(&m) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match store.delete_namespace(&tenant, &ns).await {
        Ok(0) => plain(StatusCode::NOT_FOUND, "no rule groups found"),
        Ok(n) => {
            tracing::info!(%tenant, namespace = %ns, groups = n, "rule namespace deleted");
            apply(&m).await;
            accepted()
        }
        Err(e) => storage_error(e),
    }
}
