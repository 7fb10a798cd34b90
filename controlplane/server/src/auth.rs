//! Authentication and tenancy for every Strata HTTP server, from a web
//! config file (`--web.config.file`) in Prometheus' `web.config.file`
//! format, extended with a `tenants:` list:
//!
//! ```yaml
//! basic_auth_users:              # name → bcrypt hash, as in Prometheus
//!   grafana: $2y$10$...
//!   gateway: $2y$10$...
//! tenants:
//!   - { user: grafana, tenant: team-a, roles: [read] }
//!   - { token_sha256: 5e88…, tenant: team-a, roles: [write] }   # hex SHA-256 of a bearer token
//!   - { user: gateway, tenants: "*", roles: [read, write] }      # picks a tenant with X-Scope-OrgID
//! ```
//!
//! Each request must carry a basic-auth credential or a bearer token (401
//! with `WWW-Authenticate` otherwise); the route says which role it needs
//! ([`Access`], from the component's own table; anything not listed needs
//! `admin`) and a credential without it gets 403. The tenant comes from
//! the credential: the server sets `X-Scope-OrgID` to it before the
//! handler runs, so a client cannot pick another tenant; a credential
//! allowed several tenants (a gateway) names one with `X-Scope-OrgID`. A
//! `basic_auth_users` entry with no `tenants:` entry keeps Prometheus'
//! meaning (full access) and may act for any tenant.
//!
//! Without a web config file every request is let through, but an
//! `X-Scope-OrgID` header is still validated (400 naming the rule).
//!
//! bcrypt is slow by design (tens of ms): verified basic-auth credentials
//! are remembered (by a SHA-256 of user and password, never the password)
//! and bcrypt runs on one blocking thread at a time, as Prometheus'
//! exporter-toolkit does, so wrong passwords cannot take every core.
//!
//! The file is re-read on SIGHUP and when it changes on disk; a file that
//! does not parse is logged and the previous configuration stays.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use strata_model::tenant::{TENANT_HEADER, validate_tenant};

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health probes).
    Open,
    /// A credential with this role.
    Role(Role),
}

/// A permission a credential may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries, metadata, status pages, `/metrics`.
    Read,
    /// Remote write, OTLP, pushes.
    Write,
    /// Membership changes, flushes, anything a component does not list.
    Admin,
}

/// A component's route table: the access each method and path needs.
pub type RouteAccess = fn(&Method, &str) -> Access;

/// The table of a server with only health and `/metrics` (store gateway,
/// compactor, the agent's web port): health open, `/metrics` read, the
/// rest admin.
pub fn status_access(_: &Method, path: &str) -> Access {
    match path {
        "/-/healthy" | "/-/ready" => Access::Open,
        "/metrics" => Access::Role(Role::Read),
        _ => Access::Role(Role::Admin),
    }
}

/// The tenants a credential may act for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantScope {
    /// Exactly this one; `X-Scope-OrgID` may only repeat it.
    One(String),
    /// One of these, named by `X-Scope-OrgID`.
    Some(BTreeSet<String>),
    /// Any, named by `X-Scope-OrgID` (the default tenant without it).
    Any,
}

/// Who made a request (in the request's extensions once authenticated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user name, or `token:<first 8 hex digits of its SHA-256>`.
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub tenants: TenantScope,
}

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("web config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("web config file {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

/// The file's form.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    #[serde(default)]
    tls_server_config: Option<crate::tls::TlsServerConfig>,
    #[serde(default)]
    http_server_config: Option<serde_yaml::Value>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    tenants: Vec<TenantEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    user: Option<String>,
    token_sha256: Option<String>,
    tenant: Option<String>,
    tenants: Option<TenantsField>,
    roles: Vec<Role>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TenantsField {
    All(String),
    List(Vec<String>),
}

/// A loaded web config: who may do what.
#[derive(Debug, Default)]
pub struct WebConfig {
    /// User → (bcrypt hash, identity).
    users: BTreeMap<String, (String, Identity)>,
    /// SHA-256 of a bearer token → identity.
    tokens: BTreeMap<[u8; 32], Identity>,
    /// `tls_server_config`: the listener serves HTTPS.
    pub tls: Option<crate::tls::TlsServerConfig>,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_le_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn token_digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// A `basic_auth_users` entry's value: the bcrypt hash of `password`.
pub fn hash_password(password: &str, cost: u32) -> Result<String, String> {
    bcrypt::hash(password, cost).map_err(|e| format!("bcrypt: {e}"))
}

/// A `token_sha256` value: the hex SHA-256 of `token`.
pub fn token_sha256_hex(token: &str) -> String {
    hex::encode(token_digest(token))
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

impl WebConfig {
    /// Reads and checks a web config file; the error names the file and
    /// the problem.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| WebConfigError::Read { path: path.to_path_buf(), source })?;
        let invalid = |msg| WebConfigError::Invalid { path: path.to_path_buf(), msg };
        let mut cfg = WebConfig::parse(&text).map_err(invalid)?;
        if let Some(tls) = &mut cfg.tls {
            // Relative paths are relative to the web config file, as in Prometheus.
            let dir = path.parent().unwrap_or(Path::new("."));
            for p in
                [Some(&mut tls.cert_file), Some(&mut tls.key_file), tls.client_ca_file.as_mut()].into_iter().flatten()
            {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
            tls.build(crate::tls::ALPN_HTTP1, "tls_server_config").map_err(|e| invalid(e.to_string()))?;
        }
        Ok(cfg)
    }

    /// Parses a web config (the message names the entry at fault).
    pub fn parse(text: &str) -> Result<WebConfig, String> {
        let file: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| e.to_string())?
        };
        if file.http_server_config.is_some() {
            return Err("http_server_config is not supported (use the --web.* flags)".into());
        }
        let all_roles: BTreeSet<Role> = [Role::Read, Role::Write, Role::Admin].into();
        let mut users = BTreeMap::new();
        for (name, hash) in &file.basic_auth_users {
            if name.is_empty() || name.contains(':') {
                return Err(format!("basic_auth_users: user name {name:?} must be non-empty without ':'"));
            }
            // A cost and a salt that bcrypt accepts: checked now, not at the first login.
            hash.parse::<bcrypt::HashParts>()
                .map_err(|e| format!("basic_auth_users: {name}: not a bcrypt hash ({e})"))?;
            let full = Identity { name: name.clone(), roles: all_roles.clone(), tenants: TenantScope::Any };
            users.insert(name.clone(), (hash.clone(), full));
        }
        let mut tokens = BTreeMap::new();
        let mut given: HashSet<String> = HashSet::new();
        for (i, e) in file.tenants.iter().enumerate() {
            let at = format!("tenants[{i}]");
            if e.roles.is_empty() {
                return Err(format!("{at}: roles must list at least one of read, write, admin"));
            }
            let tenants = match (&e.tenant, &e.tenants) {
                (Some(t), None) => {
                    validate_tenant(t).map_err(|m| format!("{at}: tenant: {m}"))?;
                    TenantScope::One(t.clone())
                }
                (None, Some(TenantsField::All(s))) if s == "*" => TenantScope::Any,
                (None, Some(TenantsField::All(s))) => {
                    return Err(format!("{at}: tenants must be \"*\" or a list of tenant ids, not {s:?}"));
                }
                (None, Some(TenantsField::List(l))) if !l.is_empty() => {
                    for t in l {
                        validate_tenant(t).map_err(|m| format!("{at}: tenants: {m}"))?;
                    }
                    TenantScope::Some(l.iter().cloned().collect())
                }
                (None, Some(TenantsField::List(_))) => return Err(format!("{at}: tenants must not be empty")),
                (Some(_), Some(_)) => return Err(format!("{at}: give tenant or tenants, not both")),
                (None, None) => return Err(format!("{at}: give tenant (one id) or tenants (a list or \"*\")")),
            };
            let roles: BTreeSet<Role> = e.roles.iter().copied().collect();
            match (&e.user, &e.token_sha256) {
                (Some(u), None) => {
                    let Some((_, id)) = users.get_mut(u) else {
                        return Err(format!("{at}: user {u:?} is not in basic_auth_users"));
                    };
                    if !given.insert(u.clone()) {
                        return Err(format!("{at}: user {u:?} has a second entry"));
                    }
                    *id = Identity { name: u.clone(), roles, tenants };
                }
                (None, Some(h)) => {
                    let digest = parse_hex32(h)
                        .ok_or_else(|| format!("{at}: token_sha256 must be 64 hex digits (sha256sum of the token)"))?;
                    let name = format!("token:{}", &h.trim()[..8]);
                    if tokens.insert(digest, Identity { name, roles, tenants }).is_some() {
                        return Err(format!("{at}: this token has a second entry"));
                    }
                }
                _ => return Err(format!("{at}: give exactly one of user or token_sha256")),
            }
        }
        Ok(WebConfig { users, tokens, tls: file.tls_server_config })
    }

    /// Whether any credential is configured (otherwise requests are not
    /// authenticated).
    pub fn enabled(&self) -> bool {
        !self.users.is_empty() || !self.tokens.is_empty()
    }

    /// What it holds, for `strata check-web-config`.
    pub fn summary(&self) -> String {
        let tls = match &self.tls {
            None => "no TLS".to_string(),
            Some(t) if t.requires_client_certificates() => "TLS, client certificates required".to_string(),
            Some(_) => "TLS".to_string(),
        };
        format!("{} basic-auth users, {} bearer tokens, {tls}", self.users.len(), self.tokens.len())
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// 401: no or unknown credentials (the `WWW-Authenticate` scheme).
    Unauthenticated(&'static str, String),
    /// 403.
    Forbidden(String),
    /// 400.
    BadRequest(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated(scheme, msg) => {
                let mut r = (StatusCode::UNAUTHORIZED, format!("{msg}\n")).into_response();
                let challenge = if scheme == "Bearer" { "Bearer realm=\"strata\"" } else { "Basic realm=\"strata\"" };
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
                r
            }
            Refusal::Forbidden(msg) => (StatusCode::FORBIDDEN, format!("{msg}\n")).into_response(),
            Refusal::BadRequest(msg) => (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response(),
        }
    }
}

/// The tenant a request acts for: the credential's, or the one it names
/// in `X-Scope-OrgID` when it may act for several.
fn resolve_tenant(id: Option<&Identity>, header: Option<&str>) -> Result<Option<String>, Refusal> {
    if let Some(h) = header {
        validate_tenant(h).map_err(|m| Refusal::BadRequest(format!("invalid {TENANT_HEADER}: {m}")))?;
    }
    let Some(id) = id else { return Ok(None) };
    match (&id.tenants, header) {
        (TenantScope::One(t), None) => Ok(Some(t.clone())),
        (TenantScope::One(t), Some(h)) if h == t => Ok(Some(t.clone())),
        (TenantScope::One(t), Some(h)) => Err(Refusal::Forbidden(format!(
            "{} acts for tenant {t:?} and may not act for tenant {h:?} ({TENANT_HEADER})",
            id.name
        ))),
        (TenantScope::Some(set), Some(h)) if set.contains(h) => Ok(Some(h.to_string())),
        (TenantScope::Some(set), Some(h)) => Err(Refusal::Forbidden(format!(
            "{} may not act for tenant {h:?}; allowed: {}",
            id.name,
            set.iter().cloned().collect::<Vec<_>>().join(", ")
        ))),
        (TenantScope::Some(set), None) => Err(Refusal::BadRequest(format!(
            "{} may act for several tenants: name one with {TENANT_HEADER} ({})",
            id.name,
            set.iter().cloned().collect::<Vec<_>>().join(", ")
        ))),
        (TenantScope::Any, h) => Ok(Some(h.unwrap_or(strata_model::DEFAULT_TENANT).to_string())),
    }
}

/// The credential a request carries.
enum Credential {
    Basic { user: String, password: String },
    Bearer(String),
}

fn credential(headers: &HeaderMap) -> Result<Option<Credential>, Refusal> {
    let Some(v) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let bad = |scheme: &'static str, m: &str| {
        Refusal::Unauthenticated(scheme, format!("malformed Authorization header: {m}"))
    };
    let v = v.to_str().map_err(|_| bad("Basic", "not ASCII"))?;
    // Headers are bounded by the server; tokens and passwords longer than
    // this are not credentials anyone configured.
    if v.len() > 8192 {
        return Err(bad("Basic", "longer than 8192 bytes"));
    }
    let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| bad("Basic", "basic credentials are not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| bad("Basic", "basic credentials are not UTF-8"))?;
        let (user, password) = text.split_once(':').ok_or_else(|| bad("Basic", "basic credentials lack ':'"))?;
        Ok(Some(Credential::Basic { user: user.to_string(), password: password.to_string() }))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let t = rest.trim();
        if t.is_empty() {
            return Err(bad("Bearer", "empty bearer token"));
        }
        Ok(Some(Credential::Bearer(t.to_string())))
    } else {
        Err(bad("Basic", "use the Basic or Bearer scheme"))
    }
}

/// The live configuration and what is remembered between requests.
pub struct Authenticator {
    path: Option<PathBuf>,
    config: RwLock<Arc<WebConfig>>,
    /// SHA-256 of (user, password) pairs bcrypt has accepted under the
    /// current configuration.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// One bcrypt at a time.
    bcrypt_slot: tokio::sync::Semaphore,
    access: RouteAccess,
}

const VERIFIED_CACHE_MAX: usize = 4096;

impl Authenticator {
    /// From `path` (`None`: no authentication, tenant headers still validated).
    pub fn new(path: Option<&Path>, access: RouteAccess) -> Result<Authenticator, WebConfigError> {
        let config = match path {
            Some(p) => WebConfig::load(p)?,
            None => WebConfig::default(),
        };
        Ok(Authenticator {
            path: path.map(Path::to_path_buf),
            config: RwLock::new(Arc::new(config)),
            verified: Mutex::new(HashSet::new()),
            bcrypt_slot: tokio::sync::Semaphore::new(1),
            access,
        })
    }

    /// Whether requests are authenticated.
    pub fn enabled(&self) -> bool {
        self.current().enabled()
    }

    fn current(&self) -> Arc<WebConfig> {
        self.config.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Re-reads the file; on an error the previous configuration stays.
    pub fn reload(&self) -> Result<(), WebConfigError> {
        let Some(path) = &self.path else { return Ok(()) };
        let fresh = WebConfig::load(path)?;
        if let Ok(mut g) = self.config.write() {
            *g = Arc::new(fresh);
        }
        if let Ok(mut v) = self.verified.lock() {
            v.clear();
        }
        Ok(())
    }

    /// Reloads on SIGHUP and when the file's content changes (checked every
    /// `every`), while the authenticator is in use.
    pub fn watch(self: &Arc<Self>, every: std::time::Duration) {
        let Some(path) = self.path.clone() else { return };
        let me = Arc::downgrade(self);
        crate::reload::watch_file(path.clone(), every, move || {
            let Some(me) = me.upgrade() else { return false };
            match me.reload() {
                Ok(()) => tracing::info!(file = %path.display(), "web config reloaded"),
                Err(e) => tracing::error!(error = %e, "web config not reloaded; the previous one stays"),
            }
            true
        });
    }

    /// Who sent `headers`, or why not.
    async fn authenticate(&self, cfg: &WebConfig, headers: &HeaderMap) -> Result<Identity, Refusal> {
        let none = || {
            Refusal::Unauthenticated(
                "Basic",
                "authentication required: send basic-auth credentials or a bearer token".to_string(),
            )
        };
        match credential(headers)?.ok_or_else(none)? {
            Credential::Bearer(t) => cfg
                .tokens
                .get(&token_digest(&t))
                .cloned()
                .ok_or_else(|| Refusal::Unauthenticated("Bearer", "invalid bearer token".into())),
            Credential::Basic { user, password } => {
                let invalid = || Refusal::Unauthenticated("Basic", "invalid user name or password".into());
                let (hash, id) = cfg.users.get(&user).ok_or_else(invalid)?;
                let key = sha256(&[user.as_bytes(), password.as_bytes(), hash.as_bytes()]);
                if self.verified.lock().map(|v| v.contains(&key)).unwrap_or(false) {
                    return Ok(id.clone());
                }
                let _slot = self.bcrypt_slot.acquire().await.map_err(|_| invalid())?;
                let hash = hash.clone();
                let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                    .await
                    .unwrap_or(false);
                if !ok {
                    return Err(invalid());
                }
                if let Ok(mut v) = self.verified.lock() {
                    if v.len() >= VERIFIED_CACHE_MAX {
                        v.clear();
                    }
                    v.insert(key);
                }
                Ok(id.clone())
            }
        }
    }

    /// Checks one request: credentials, role, tenant. On success the
    /// request carries the resolved `X-Scope-OrgID` and its [`Identity`].
    async fn admit(&self, req: &mut Request) -> Result<(), Refusal> {
        let need = (self.access)(req.method(), req.uri().path());
        let cfg = self.current();
        let header = match req.headers().get(TENANT_HEADER) {
            Some(v) => Some(
                v.to_str().map_err(|_| Refusal::BadRequest(format!("invalid {TENANT_HEADER}: not ASCII")))?.to_string(),
            ),
            None => None,
        };
        if !cfg.enabled() || need == Access::Open {
            resolve_tenant(None, header.as_deref())?;
            return Ok(());
        }
        let id = self.authenticate(&cfg, req.headers()).await?;
        if let Access::Role(role) = need
            && !id.roles.contains(&role)
        {
            let role = format!("{role:?}").to_lowercase();
            return Err(Refusal::Forbidden(format!(
                "{} lacks the {role} role needed for {} {}",
                id.name,
                req.method(),
                req.uri().path()
            )));
        }
        if let Some(t) = resolve_tenant(Some(&id), header.as_deref())? {
            let v = HeaderValue::from_str(&t).map_err(|_| Refusal::BadRequest("invalid tenant".into()))?;
            req.headers_mut().insert(TENANT_HEADER, v);
        }
        req.extensions_mut().insert(id);
        Ok(())
    }
}

/// The middleware: refuses or passes the request on.
pub(crate) async fn authenticate(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    match auth.admit(&mut req).await {
        Ok(()) => next.run(req).await,
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // bcrypt of "secret" at cost 4 (tests only; production hashes use >= 10).
    fn hash(pw: &str) -> String {
        bcrypt::hash(pw, 4).unwrap()
    }

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn access(_: &Method, path: &str) -> Access {
        match path {
            "/-/ready" => Access::Open,
            "/api/v1/write" => Access::Role(Role::Write),
            "/api/v1/query" => Access::Role(Role::Read),
            _ => Access::Role(Role::Admin),
        }
    }

    fn config() -> String {
        format!(
            "basic_auth_users:\n  reader: '{}'\n  gateway: '{}'\n  root: '{}'\n\
             tenants:\n  - {{ user: reader, tenant: team-a, roles: [read] }}\n\
             \x20 - {{ token_sha256: {}, tenant: team-b, roles: [write, read] }}\n\
             \x20 - {{ user: gateway, tenants: [team-a, team-b], roles: [read, write] }}\n",
            hash("r-pass"),
            hash("g-pass"),
            hash("root-pass"),
            hex(token_digest("tok-b"))
        )
    }

    fn auth() -> Authenticator {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, config()).unwrap();
        Authenticator::new(Some(&p), access).unwrap()
    }

    fn req(method: Method, path: &str, authz: Option<String>, tenant: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().method(method).uri(path);
        if let Some(a) = authz {
            b = b.header(header::AUTHORIZATION, a);
        }
        if let Some(t) = tenant {
            b = b.header(TENANT_HEADER, t);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    fn basic(u: &str, p: &str) -> Option<String> {
        Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))))
    }

    async fn status(a: &Authenticator, mut r: Request) -> (u16, Option<String>) {
        match a.admit(&mut r).await {
            Ok(()) => (200, r.headers().get(TENANT_HEADER).map(|v| v.to_str().unwrap().to_string())),
            Err(refusal) => (refusal.into_response().status().as_u16(), None),
        }
    }

    #[tokio::test]
    async fn credentials_roles_and_tenants_decide_each_request() {
        let a = auth();
        let get = Method::GET;
        let post = Method::POST;
        // No credential, wrong password, unknown token, malformed header: 401.
        assert_eq!(status(&a, req(get.clone(), "/api/v1/query", None, None)).await.0, 401);
        assert_eq!(status(&a, req(get.clone(), "/api/v1/query", basic("reader", "nope"), None)).await.0, 401);
        assert_eq!(status(&a, req(get.clone(), "/api/v1/query", basic("nobody", "r-pass"), None)).await.0, 401);
        assert_eq!(status(&a, req(get.clone(), "/api/v1/query", Some("Bearer tok-x".into()), None)).await.0, 401);
        for bad in ["Basic !!!", "Basic Zm9v", "Digest abc", "Bearer ", &"Bearer x".repeat(2000)] {
            assert_eq!(status(&a, req(get.clone(), "/api/v1/query", Some(bad.into()), None)).await.0, 401, "{bad}");
        }
        // Open routes need nothing.
        assert_eq!(status(&a, req(get.clone(), "/-/ready", None, None)).await.0, 200);
        // The tenant comes from the credential, twice (the second from the cache).
        for _ in 0..2 {
            assert_eq!(
                status(&a, req(get.clone(), "/api/v1/query", basic("reader", "r-pass"), None)).await,
                (200, Some("team-a".into()))
            );
        }
        // A read credential cannot write; another tenant is refused.
        assert_eq!(status(&a, req(post.clone(), "/api/v1/write", basic("reader", "r-pass"), None)).await.0, 403);
        assert_eq!(
            status(&a, req(get.clone(), "/api/v1/query", basic("reader", "r-pass"), Some("team-b"))).await.0,
            403
        );
        // The token writes for team-b only; nothing unlisted (admin) for it.
        assert_eq!(
            status(&a, req(post.clone(), "/api/v1/write", Some("Bearer tok-b".into()), None)).await,
            (200, Some("team-b".into()))
        );
        assert_eq!(
            status(&a, req(post.clone(), "/api/v1/admin/flush", Some("Bearer tok-b".into()), None)).await.0,
            403
        );
        // The gateway names one of its tenants; others and none are refused.
        assert_eq!(
            status(&a, req(get.clone(), "/api/v1/query", basic("gateway", "g-pass"), Some("team-b"))).await,
            (200, Some("team-b".into()))
        );
        assert_eq!(
            status(&a, req(get.clone(), "/api/v1/query", basic("gateway", "g-pass"), Some("team-c"))).await.0,
            403
        );
        assert_eq!(status(&a, req(get.clone(), "/api/v1/query", basic("gateway", "g-pass"), None)).await.0, 400);
        // A Prometheus-style user without a tenants entry: full access, any tenant.
        assert_eq!(
            status(&a, req(post.clone(), "/api/v1/admin/flush", basic("root", "root-pass"), Some("x"))).await,
            (200, Some("x".into()))
        );
        assert_eq!(
            status(&a, req(get.clone(), "/api/v1/query", basic("root", "root-pass"), None)).await,
            (200, Some(strata_model::DEFAULT_TENANT.into()))
        );
        // An invalid tenant id is refused before anything else.
        assert_eq!(status(&a, req(get.clone(), "/api/v1/query", basic("root", "root-pass"), Some("a/b"))).await.0, 400);
    }

    /// A seeded corpus of malformed and hostile `Authorization` headers
    /// (random bytes, broken base64, no colon, invalid UTF-8, passwords
    /// past bcrypt's 72 bytes, megabyte tokens, repeated headers): each is
    /// a clear 401 (or 400), never a panic or an admission.
    #[tokio::test]
    async fn malformed_and_hostile_credentials_are_refused_without_a_crash() {
        use base64::Engine;
        let a = auth();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut x: u64 = 0x5EED_0A17;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut corpus: Vec<Vec<u8>> = vec![
            b"Basic".to_vec(),
            format!("Basic {}", b64(b"reader:r-pass")).replace('=', "").into_bytes(),
            format!("Basic {}", b64(b"reader")).into_bytes(),
            format!("Basic {}", b64(b":r-pass")).into_bytes(),
            format!("Basic {}", b64(b"reader:r-pass\xff\xfe")).into_bytes(),
            format!("Basic {}", b64(&[0xff, 0xfe, b':', 0xfd])).into_bytes(),
            format!("Basic {}", b64(format!("reader:{}", "r".repeat(100_000)).as_bytes())).into_bytes(),
            format!("Basic {}", b64(format!("reader:r-pass{}", "x".repeat(80)).as_bytes())).into_bytes(),
            format!("Bearer {}", "t".repeat(1 << 20)).into_bytes(),
            b"Bearer tok-b tok-b".to_vec(),
            b"Bearer\ttok-b".to_vec(),
            b"BEARER".to_vec(),
            vec![0x80; 64],
        ];
        for _ in 0..500 {
            let len = (next() % 300) as usize;
            // Header-value bytes (visible ASCII, space, obs-text), some
            // invalid UTF-8; control bytes only now and then.
            let mut v: Vec<u8> = (0..len)
                .map(|_| match (0x20 + next() % 0xe0) as u8 {
                    0x7f if next() % 2 == 0 => 0x07,
                    b => b,
                })
                .collect();
            match next() % 4 {
                0 => v.splice(0..0, b"Basic ".iter().copied()).for_each(drop),
                1 => v = format!("Basic {}", b64(&v)).into_bytes(),
                2 => v.splice(0..0, b"Bearer ".iter().copied()).for_each(drop),
                _ => {}
            }
            corpus.push(v);
        }
        let mut tried = 0;
        for v in &corpus {
            // Only what HTTP can carry in a header value.
            let Ok(value) = axum::http::HeaderValue::from_bytes(v) else { continue };
            tried += 1;
            let mut r = req(Method::GET, "/api/v1/query", None, None);
            r.headers_mut().insert(header::AUTHORIZATION, value.clone());
            let (code, _) = status(&a, r).await;
            assert!(code == 401 || code == 400, "{:?}: {code}", String::from_utf8_lossy(&v[..v.len().min(60)]));
            // The same header twice, one of them valid: never admitted on the bad one.
            let mut r = req(Method::POST, "/api/v1/write", None, None);
            r.headers_mut().append(header::AUTHORIZATION, value);
            r.headers_mut().append(header::AUTHORIZATION, HeaderValue::from_static("Bearer tok-b"));
            let (code, _) = status(&a, r).await;
            assert!(code == 401 || code == 400, "two Authorization headers: {code}");
        }
        assert!(tried > 300, "the corpus must mostly be valid header values: {tried}");
        // Schemes are case-insensitive (RFC 9110): not malformed.
        let ok = req(Method::GET, "/api/v1/query", Some(format!("basic {}", b64(b"reader:r-pass"))), None);
        assert_eq!(status(&a, ok).await.0, 200);
    }

    #[tokio::test]
    async fn the_helpers_make_hashes_a_web_config_accepts() {
        let yaml = format!(
            "basic_auth_users:\n  u: '{}'\ntenants:\n  - {{ token_sha256: {}, tenant: t, roles: [read] }}\n",
            hash_password("pw", 4).unwrap(),
            token_sha256_hex("tok")
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, yaml).unwrap();
        let a = Authenticator::new(Some(&p), access).unwrap();
        assert_eq!(status(&a, req(Method::GET, "/api/v1/query", basic("u", "pw"), None)).await.0, 200);
        assert_eq!(status(&a, req(Method::GET, "/api/v1/query", Some("Bearer tok".into()), None)).await.0, 200);
        assert!(hash_password("pw", 3).is_err(), "cost below bcrypt's minimum");
    }

    #[tokio::test]
    async fn without_a_file_requests_pass_and_tenant_headers_are_validated() {
        let a = Authenticator::new(None, access).unwrap();
        assert!(!a.enabled());
        assert_eq!(status(&a, req(Method::POST, "/api/v1/admin/flush", None, None)).await.0, 200);
        assert_eq!(status(&a, req(Method::GET, "/api/v1/query", None, Some("team-a"))).await.0, 200);
        assert_eq!(status(&a, req(Method::GET, "/api/v1/query", None, Some(""))).await.0, 400);
        assert_eq!(status(&a, req(Method::GET, "/api/v1/query", None, Some(&"x".repeat(151)))).await.0, 400);
    }

    #[test]
    fn bad_files_are_refused_naming_the_entry() {
        let h = hash("x");
        let cases = [
            ("basic_auth_users: {a: 'plain'}", "basic_auth_users: a: not a bcrypt hash"),
            ("tenants: [{user: ghost, tenant: t, roles: [read]}]", "tenants[0]: user \"ghost\" is not in"),
            ("tenants: [{token_sha256: abc, tenant: t, roles: [read]}]", "tenants[0]: token_sha256 must be 64"),
            (&format!("basic_auth_users: {{a: '{h}'}}\ntenants: [{{user: a, roles: [read]}}]"), "give tenant"),
            (&format!("basic_auth_users: {{a: '{h}'}}\ntenants: [{{user: a, tenant: t, roles: []}}]"), "roles must"),
            (
                &format!("basic_auth_users: {{a: '{h}'}}\ntenants: [{{user: a, tenant: 'a b', roles: [read]}}]"),
                "tenant:",
            ),
            (&format!("basic_auth_users: {{a: '{h}'}}\ntenants: [{{user: a, tenants: all, roles: [read]}}]"), "\"*\""),
            (&format!("basic_auth_users: {{a: '{h}'}}\ntenants: [{{user: a, tenant: t, roles: [sudo]}}]"), "sudo"),
            ("tls_server_config: {cert_file: a}", "missing field `key_file`"),
            ("tls_server_config: {cert_file: a, key_file: b, cipher_suites: []}", "unknown field `cipher_suites`"),
            ("basic_auth_user: {}", "unknown field"),
        ];
        for (text, want) in cases {
            let err = WebConfig::parse(text).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(err.contains(want), "{text}: {err}");
        }
        assert!(!WebConfig::parse("").unwrap().enabled());
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, config()).unwrap();
        let a = Arc::new(Authenticator::new(Some(&p), access).unwrap());
        a.watch(std::time::Duration::from_millis(20));
        let write_b = || req(Method::POST, "/api/v1/write", Some("Bearer tok-b".into()), None);
        assert_eq!(status(&a, write_b()).await.0, 200);
        std::fs::write(&p, "tenants: [{ broken").unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(status(&a, write_b()).await.0, 200, "a broken file must not drop the configuration");
        let only_read = format!(
            "tenants:\n  - {{ token_sha256: {}, tenant: team-b, roles: [read] }}\n",
            hex(token_digest("tok-b"))
        );
        std::fs::write(&p, only_read).unwrap();
        let mut code = 0;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            code = status(&a, write_b()).await.0;
            if code == 403 {
                break;
            }
        }
        assert_eq!(code, 403, "the token lost its write role");
    }
}
