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

/// An answer a handler gives early (an error); `?` returns it.
struct Refusal(Box<Response>);

impl From<Response> for Refusal {
    fn from(r: Response) -> Self {
        Refusal(Box::new(r))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

type Answer = Result<Response, Refusal>;

fn refuse(status: StatusCode, msg: impl Into<String>) -> Refusal {
    plain(status, msg).into()
}

fn tenant(headers: &HeaderMap) -> Result<String, Refusal> {
    strata_model::tenant::tenant_from_header(headers.get(strata_model::tenant::TENANT_HEADER).map(|v| v.as_bytes()))
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e))
}

fn storage_error(e: impl std::fmt::Display) -> Refusal {
    refuse(StatusCode::SERVICE_UNAVAILABLE, format!("rule storage unavailable: {e}"))
}

fn store(m: &Manager) -> Result<&crate::rule_store::RuleStore, Refusal> {
    m.rule_store().ok_or_else(|| {
        refuse(StatusCode::NOT_IMPLEMENTED, "the ruler configuration API is off: this ruler has no rule storage")
    })
}

/// The tenant's stored groups (of one namespace), by namespace.
async fn listed(
    m: &Manager,
    tenant: &str,
    namespace: Option<&str>,
) -> Result<BTreeMap<String, Vec<GroupSpec>>, Refusal> {
    let mut out: BTreeMap<String, Vec<GroupSpec>> = BTreeMap::new();
    for g in store(m)?.list(Some(tenant), namespace).await.map_err(storage_error)? {
        let g = g.map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        out.entry(g.namespace).or_default().push(g.spec);
    }
    Ok(out)
}

async fn list_all(State(m): State<Arc<Manager>>, headers: HeaderMap) -> Answer {
    // Mimir answers an empty map (Cortex answered 404); clients take both.
    Ok(yaml(&listed(&m, &tenant(&headers)?, None).await?))
}

async fn get_namespace(State(m): State<Arc<Manager>>, headers: HeaderMap, Path(ns): Path<String>) -> Answer {
    let groups = listed(&m, &tenant(&headers)?, Some(&ns)).await?;
    if groups.is_empty() {
        return Err(refuse(StatusCode::NOT_FOUND, "no rule groups found"));
    }
    Ok(yaml(&groups))
}

async fn get_group(
    State(m): State<Arc<Manager>>,
    headers: HeaderMap,
    Path((ns, group)): Path<(String, String)>,
) -> Answer {
    match store(&m)?.get(&tenant(&headers)?, &ns, &group).await.map_err(storage_error)? {
        Some(g) => Ok(yaml(&g)),
        None => Err(refuse(StatusCode::NOT_FOUND, "group does not exist")),
    }
}

/// Checks an uploaded group as a rule file holding it, then against the
/// tenant's limits; the message says what is wrong.
async fn check_upload(m: &Manager, tenant: &str, ns: &str, body: &[u8]) -> Result<GroupSpec, Refusal> {
    let bad = |msg: String| refuse(StatusCode::BAD_REQUEST, msg);
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8".into()))?;
    let spec: GroupSpec = serde_yaml::from_str(text).map_err(|e| bad(format!("the body is not a rule group: {e}")))?;
    let file = RuleFile { groups: vec![spec.clone()] };
    let checked = crate::rule_file::check(ns, &file, m.config().evaluation_interval).map_err(|errs| {
        let errs: Vec<String> = errs.into_iter().map(|e| format!("namespace {ns:?}: {e}")).collect();
        bad(errs.join("\n"))
    })?;
    let limits = m.services().query.state().overrides.current().ruler(tenant);
    if let Some(max) = limits.max_rules_per_group
        && spec.rules.len() > max
    {
        return Err(bad(format!(
            "per-group rules limit exceeded: group {:?} has {} rules, tenant {tenant:?} may have {max} (ruler_max_rules_per_rule_group)",
            spec.name,
            spec.rules.len()
        )));
    }
    if let (Some(min), Some(g)) = (limits.min_interval, checked.first())
        && g.interval < min
    {
        return Err(bad(format!(
            "group {:?}: interval {:?} is shorter than tenant {tenant:?}'s minimum {:?} (ruler_min_evaluation_interval)",
            spec.name, g.interval, min
        )));
    }
    if let Some(max) = limits.max_rule_groups {
        let existing = listed(m, tenant, None).await?;
        let others = existing
            .iter()
            .flat_map(|(n, gs)| gs.iter().map(move |g| (n, &g.name)))
            .filter(|(n, name)| !(n.as_str() == ns && **name == spec.name))
            .count();
        if others + 1 > max {
            return Err(bad(format!(
                "per-tenant rule groups limit exceeded: tenant {tenant:?} has {others} groups and may have {max} (ruler_max_rule_groups_per_tenant)"
            )));
        }
    }
    Ok(spec)
}

/// Applies a change on this replica at once (the others see it at their
/// next poll).
async fn apply(m: &Manager) -> Response {
    m.services().metrics.api_changes.inc();
    if let Err(e) = m.sync_store().await {
        tracing::warn!(error = %e, "rule groups changed but not reloaded yet");
    }
    accepted()
}

async fn set_group(State(m): State<Arc<Manager>>, headers: HeaderMap, Path(ns): Path<String>, body: Bytes) -> Answer {
    let tenant = tenant(&headers)?;
    let store = store(&m)?;
    let spec = check_upload(&m, &tenant, &ns, &body).await?;
    store.put(&tenant, &ns, &spec).await.map_err(storage_error)?;
    tracing::info!(%tenant, namespace = %ns, group = %spec.name, "rule group stored");
    Ok(apply(&m).await)
}

async fn delete_group(
    State(m): State<Arc<Manager>>,
    headers: HeaderMap,
    Path((ns, group)): Path<(String, String)>,
) -> Answer {
    let tenant = tenant(&headers)?;
    if !store(&m)?.delete_group(&tenant, &ns, &group).await.map_err(storage_error)? {
        return Err(refuse(StatusCode::NOT_FOUND, "group does not exist"));
    }
    tracing::info!(%tenant, namespace = %ns, %group, "rule group deleted");
    Ok(apply(&m).await)
}

async fn delete_namespace(State(m): State<Arc<Manager>>, headers: HeaderMap, Path(ns): Path<String>) -> Answer {
    let tenant = tenant(&headers)?;
    match store(&m)?.delete_namespace(&tenant, &ns).await.map_err(storage_error)? {
        0 => Err(refuse(StatusCode::NOT_FOUND, "no rule groups found")),
        n => {
            tracing::info!(%tenant, namespace = %ns, groups = n, "rule namespace deleted");
            Ok(apply(&m).await)
        }
    }
}
