//! `strata ruler`: evaluates Prometheus recording and alerting rules
//! through the querier's query service, writes the results (and `ALERTS`,
//! `ALERTS_FOR_STATE`) back through remote write, sends alerts to
//! Alertmanager and serves Prometheus' `/api/v1/rules` and `/api/v1/alerts`.

pub mod alerting;
pub mod api;
pub mod config_api;
pub mod gofmt;
pub mod group;
pub mod metrics;
pub mod notifier;
pub mod query;
pub mod remote_write;
pub mod rule_file;
pub mod rule_store;
pub mod template;
pub mod unit_test;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alerting::LabelSet;
use group::GroupRuntime;

/// The ruler's User-Agent.
pub const USER_AGENT: &str = concat!("strata-ruler/", env!("CARGO_PKG_VERSION"));

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// How rules are evaluated and alerts sent (Prometheus' `--rules.*` flags).
#[derive(Debug, Clone)]
pub struct RulerOptions {
    pub external_labels: LabelSet,
    pub external_url: String,
    pub resend_delay: Duration,
    pub for_outage_tolerance: Duration,
    pub for_grace_period: Duration,
}

/// Settings of `strata ruler`.
#[derive(Debug, Clone)]
pub struct RulerConfig {
    pub web_listen: SocketAddr,
    /// Globs of rule files for the default tenant.
    pub rule_files: Vec<String>,
    /// A directory with one subdirectory of rule files per tenant.
    pub tenants_dir: Option<PathBuf>,
    pub evaluation_interval: Duration,
    pub remote_write_urls: Vec<String>,
    pub remote_write_bearer_token_file: Option<PathBuf>,
    pub alertmanager_urls: Vec<String>,
    pub notification_queue_capacity: usize,
    /// TLS of the remote-write and Alertmanager clients (`--http-client.tls-*`).
    pub http_client_tls: Option<strata_server::tls::TlsClientConfig>,
    pub options: RulerOptions,
    /// Where groups uploaded through the ruler configuration API are kept
    /// (`--objstore.*`); `None`: the API answers 501.
    pub rule_storage: Option<strata_blocks::BucketConfig>,
    /// How often every replica reads the uploaded groups again.
    pub rule_storage_poll_interval: Duration,
    /// The query service (endpoints, timeouts, limits) as the querier's.
    pub query: strata_querier::QuerierConfig,
    pub http: strata_server::HttpServerConfig,
}

/// What every group uses.
pub struct Services {
    pub query: query::RuleQuerier,
    pub writer: remote_write::RemoteWriter,
    pub notifier: Arc<notifier::Notifier>,
    pub metrics: Arc<metrics::RulerMetrics>,
    pub options: RulerOptions,
}

/// (tenant, file, group name)
pub type GroupKey = (String, String, String);

struct Running {
    rt: Arc<GroupRuntime>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// The loaded groups of every tenant.
pub struct Manager {
    cfg: RulerConfig,
    svc: Arc<Services>,
    groups: Mutex<BTreeMap<GroupKey, Running>>,
    loaded: std::sync::atomic::AtomicBool,
    store: Option<rule_store::RuleStore>,
    /// The checked groups last read from `store`, by tenant.
    stored: Mutex<Vec<(String, rule_file::Group)>>,
    /// One sync of `stored` at a time.
    sync_lock: tokio::sync::Mutex<()>,
}

/// Every rule file of the configuration by tenant, in a stable order.
fn rule_file_paths(cfg: &RulerConfig) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out = Vec::new();
    for pattern in &cfg.rule_files {
        let paths = glob::glob(pattern).map_err(|e| format!("invalid --rule.files pattern {pattern:?}: {e}"))?;
        let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
        found.sort();
        out.extend(found.into_iter().map(|p| (strata_model::DEFAULT_TENANT.to_string(), p)));
    }
    if let Some(dir) = &cfg.tenants_dir {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("--rule.tenants-dir {}: {e}", dir.display()))?;
        let mut tenants: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        tenants.sort();
        for (tenant, path) in tenants {
            strata_model::tenant::validate_tenant(&tenant)
                .map_err(|e| format!("--rule.tenants-dir: directory {tenant:?} is not a valid tenant: {e}"))?;
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
                .collect();
            files.sort();
            out.extend(files.into_iter().map(|p| (tenant.clone(), p)));
        }
    }
    Ok(out)
}

/// Reads and checks every rule file; all problems, or the groups.
pub fn load_rules(cfg: &RulerConfig) -> Result<Vec<(String, rule_file::Group)>, Vec<String>> {
    let paths = rule_file_paths(cfg).map_err(|e| vec![e])?;
    let mut groups = Vec::new();
    let mut errs = Vec::new();
    for (tenant, path) in paths {
        match rule_file::load(&path, cfg.evaluation_interval) {
            Ok(gs) => groups.extend(gs.into_iter().map(|g| (tenant.clone(), g))),
            Err(e) => errs.extend(e),
        }
    }
    if errs.is_empty() { Ok(groups) } else { Err(errs) }
}

fn same_group(a: &rule_file::Group, b: &rule_file::Group) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

impl Manager {
    pub fn new(cfg: RulerConfig) -> Result<Arc<Manager>, String> {
        let metrics = Arc::new(metrics::RulerMetrics::new());
        let state = strata_querier::QuerierState::new(&cfg.query).map_err(|e| e.to_string())?;
        let svc = Arc::new(Services {
            query: query::RuleQuerier::new(state, cfg.query.timeout),
            writer: remote_write::RemoteWriter::new(
                cfg.remote_write_urls.clone(),
                Duration::from_secs(30),
                cfg.http_client_tls.clone(),
                cfg.options.external_labels.clone(),
                cfg.remote_write_bearer_token_file.clone(),
                metrics.clone(),
            )?,
            notifier: notifier::Notifier::new(
                cfg.alertmanager_urls.clone(),
                cfg.notification_queue_capacity,
                Duration::from_secs(10),
                cfg.http_client_tls.clone(),
                cfg.options.external_labels.clone(),
                metrics.clone(),
            )?,
            metrics,
            options: cfg.options.clone(),
        });
        let store = match &cfg.rule_storage {
            Some(b) => Some(rule_store::RuleStore::new(b.open().map_err(|e| e.to_string())?)),
            None => None,
        };
        Ok(Arc::new(Manager {
            cfg,
            svc,
            groups: Mutex::new(BTreeMap::new()),
            loaded: std::sync::atomic::AtomicBool::new(false),
            store,
            stored: Mutex::new(Vec::new()),
            sync_lock: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.svc
    }

    pub fn config(&self) -> &RulerConfig {
        &self.cfg
    }

    pub fn rule_store(&self) -> Option<&rule_store::RuleStore> {
        self.store.as_ref()
    }

    /// Reads the uploaded groups again and applies them (with the rule
    /// files). A group that no longer checks is logged, counted and left
    /// out; the others run. An unreachable bucket keeps the groups read last.
    pub async fn sync_store(&self) -> Result<usize, String> {
        let Some(store) = &self.store else { return self.reload().map_err(|e| e.join("\n")) };
        let _one = self.sync_lock.lock().await;
        let listed = match store.list(None, None).await {
            Ok(l) => l,
            Err(e) => {
                self.svc.metrics.rule_storage_sync_failures.inc();
                tracing::error!(error = %e, "reading uploaded rule groups failed; the ones read last stay");
                return Err(e.to_string());
            }
        };
        let mut groups = Vec::new();
        for item in listed {
            let g = match item {
                Ok(g) => g,
                Err(e) => {
                    self.svc.metrics.rule_storage_sync_failures.inc();
                    tracing::error!(error = %e, "an uploaded rule group is left out");
                    continue;
                }
            };
            let file = rule_file::RuleFile { groups: vec![g.spec] };
            match rule_file::check(&g.namespace, &file, self.cfg.evaluation_interval) {
                Ok(checked) => groups.extend(checked.into_iter().map(|c| (g.tenant.clone(), c))),
                Err(errs) => {
                    self.svc.metrics.rule_storage_sync_failures.inc();
                    tracing::error!(tenant = %g.tenant, namespace = %g.namespace, errors = ?errs, "an uploaded rule group does not check; left out");
                }
            }
        }
        if let Ok(mut s) = self.stored.lock() {
            *s = groups;
        }
        self.reload().map_err(|e| e.join("\n"))
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// (Re)loads the rule files: unchanged groups keep running, changed
    /// ones restart with their rules' state, removed ones stop. A file
    /// that does not load keeps every current group and returns why.
    pub fn reload(&self) -> Result<usize, Vec<String>> {
        let loaded = match load_rules(&self.cfg) {
            Ok(mut g) => {
                if let Ok(stored) = self.stored.lock() {
                    g.extend(stored.iter().cloned());
                }
                g
            }
            Err(errs) => {
                self.svc.metrics.config_reload_success.set(0);
                self.svc.metrics.config_reloads_failed.inc();
                for e in &errs {
                    tracing::error!(error = %e, "loading rules failed; the previous rules stay");
                }
                return Err(errs);
            }
        };
        let mut groups = match self.groups.lock() {
            Ok(g) => g,
            Err(_) => return Err(vec!["rule manager lock poisoned".into()]),
        };
        let mut next = BTreeMap::new();
        for (tenant, g) in loaded {
            let key: GroupKey = (tenant.clone(), g.file.clone(), g.name.clone());
            if next.contains_key(&key) {
                continue;
            }
            match groups.remove(&key) {
                Some(old) if same_group(&old.rt.group, &g) => {
                    next.insert(key, old);
                }
                old => {
                    let rt = GroupRuntime::new(&tenant, g);
                    if let Some(old) = old {
                        rt.copy_state(&old.rt);
                        let _ = old.stop.send(true);
                    }
                    let (stop, rx) = tokio::sync::watch::channel(false);
                    self.svc
                        .metrics
                        .group_rules
                        .get_or_create(&metrics::GroupLabel {
                            rule_group: format!("{};{}", rt.group.file, rt.group.name),
                        })
                        .set(rt.group.rules.len() as i64);
                    tokio::spawn(group::run(rt.clone(), self.svc.clone(), rx));
                    next.insert(key, Running { rt, stop });
                }
            }
        }
        for (_, old) in std::mem::take(&mut *groups) {
            let _ = old.stop.send(true);
            self.svc.metrics.forget_group(&format!("{};{}", old.rt.group.file, old.rt.group.name));
        }
        let n = next.len();
        *groups = next;
        self.svc.metrics.config_reload_success.set(1);
        self.loaded.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(groups = n, "rules loaded");
        Ok(n)
    }

    /// The running groups of `tenant`, in file and name order.
    pub fn groups_of(&self, tenant: &str) -> Vec<Arc<GroupRuntime>> {
        match self.groups.lock() {
            Ok(g) => g.iter().filter(|(k, _)| k.0 == tenant).map(|(_, r)| r.rt.clone()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Runs the ruler until `shutdown` resolves.
pub async fn run(
    cfg: RulerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let web_listen = cfg.web_listen;
    let http = cfg.http.clone();
    let refresh = cfg.query.store_refresh;
    let files = cfg.rule_files.clone();
    let poll = cfg.rule_storage_poll_interval;
    let manager = Manager::new(cfg).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if let Err(errs) = manager.reload() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, errs.join("\n")));
    }
    if manager.store.is_some() {
        // Uploaded groups: read now (an unreachable bucket is retried on
        // the next poll; the rule files run meanwhile) and every `poll`.
        let m = manager.clone();
        tokio::spawn(async move {
            loop {
                let _ = m.sync_store().await;
                tokio::time::sleep(poll).await;
            }
        });
    }
    tokio::spawn(strata_querier::refresh_loop(manager.svc.query.state().clone(), refresh));
    tokio::spawn(manager.svc.notifier.clone().run());
    {
        // SIGHUP reloads, as Prometheus.
        let m = manager.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                let _ = m.reload();
            }
        });
    }
    let http_metrics = strata_server::HttpMetrics::global();
    let app = api::router(manager.clone());
    let listener = tokio::net::TcpListener::bind(web_listen).await?;
    tracing::info!(addr = %web_listen, rule_files = ?files, "ruler listening");
    strata_server::serve(listener, app, &http, Some(&http_metrics), api::http_access, shutdown).await
}
