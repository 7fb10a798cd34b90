//! `strata-agent`: the data-plane collector.
//!
//! Shaped like the OpenTelemetry Collector, built like Vector internally:
//!
//! ```text
//! receivers (OTLP gRPC :4317, OTLP HTTP :4318)
//!   → processors (translate OTLP → Prometheus, set labels, batch)
//!   → durable disk queue (acknowledge OTLP here)
//!   → exporters (Prometheus remote write 1.0/2.0, one cursor per endpoint)
//!   (+ optional Prometheus exposition of the latest values, :8889)
//! scrape receiver (Prometheus scrape_configs) → same labels, same queue
//! Pushgateway-compatible push API (:9091, optional) → pushed groups,
//!   persisted, forwarded into the same queue every push interval
//! ```

pub mod config;
pub mod exporter;
pub mod exposition;
pub mod pipeline;
pub mod push;
pub mod queue;
pub mod receiver;
pub mod relabel;
pub mod scrape;
pub mod self_monitoring;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::AgentConfig;
use crate::pipeline::Pipeline;
use crate::queue::{DiskQueue, FsyncPolicy, QueueOptions};
use crate::telemetry::AgentMetrics;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot open the disk queue at {path}: {source}")]
    Queue { path: String, source: queue::QueueError },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("{what} server failed: {message}")]
    Serve { what: &'static str, message: String },
    #[error(transparent)]
    Tls(#[from] strata_server::tls::TlsError),
    #[error(transparent)]
    Push(push::PushError),
    #[error("scrape configuration: {0}")]
    Scrape(String),
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr).await.map_err(|source| AgentError::Bind { what, addr, source })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs the agent until `shutdown` resolves, then stops its servers and
/// senders (everything acknowledged is already in the queue).
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    cfg.validate()?;
    let consumers: Vec<String> = (0..cfg.remote_write.endpoints.len()).map(|i| format!("endpoint-{i}")).collect();
    let queue = DiskQueue::open(
        &cfg.queue.path,
        QueueOptions { max_bytes: cfg.queue.max_bytes, segment_bytes: cfg.queue.segment_bytes, fsync: cfg.queue.fsync },
        &consumers,
    )
    .map_err(|source| AgentError::Queue { path: cfg.queue.path.display().to_string(), source })?;
    let metrics = Arc::new(AgentMetrics::new());

    // Bind everything first so a busy port is a clear startup error.
    let grpc_listener = bind("OTLP gRPC", cfg.otlp.grpc_address).await?;
    let http_listener = bind("OTLP HTTP", cfg.otlp.http_address).await?;
    let web_listener = bind("web", cfg.web.listen_address).await?;
    let exposition_listener = match cfg.prometheus_exporter.listen_address {
        Some(addr) => Some(bind("Prometheus exposition", addr).await?),
        None => None,
    };
    let scrape_jobs = match &cfg.scrape.config_file {
        Some(p) => scrape::load(p).map_err(AgentError::Scrape)?,
        None => Vec::new(),
    };
    let push_listener = match cfg.push.listen_address {
        Some(addr) => Some(bind("push", addr).await?),
        None => None,
    };
    let push_store = match &push_listener {
        Some(_) => Some(Arc::new(
            push::PushStore::open(cfg.push.persistence_file.clone(), cfg.push.max_series).map_err(AgentError::Push)?,
        )),
        None => None,
    };
    let exposition =
        exposition_listener.as_ref().map(|_| Arc::new(exposition::Exposition::new(cfg.prometheus_exporter.expiration)));

    let (stop_tx, stop_rx) = watch::channel(false);
    let pipeline = Pipeline::start(&cfg, queue.clone(), metrics.clone(), exposition.clone());

    if cfg.queue.fsync == FsyncPolicy::Interval {
        let q = queue.clone();
        let every = cfg.queue.fsync_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let q = q.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || q.sync()).await {
                    tracing::error!(error = %e, "queue fsync failed");
                }
            }
        });
    }

    let mut delivered = Vec::new();
    for (i, ep) in cfg.remote_write.endpoints.iter().enumerate() {
        let last = Arc::new(AtomicU64::new(0));
        delivered.push(last.clone());
        tokio::spawn(exporter::run_endpoint(
            queue.clone(),
            queue.reader(i),
            ep.clone(),
            cfg.remote_write.clone(),
            metrics.clone(),
            last,
            stop_rx.clone(),
        ));
    }

    // Own metrics (rendered with fresh queue gauges) and health.
    let render = {
        let metrics = metrics.clone();
        let queue = queue.clone();
        move || {
            let s = queue.stats();
            metrics.queue_pending_bytes.set(s.pending_bytes);
            metrics.queue_disk_bytes.set(s.disk_bytes);
            metrics.queue_corrupt_records.set(s.corrupt_records);
            let age = if s.pending_bytes == 0 {
                0.0
            } else {
                let oldest = delivered.iter().map(|d| d.load(Ordering::Relaxed)).min().unwrap_or(0);
                if oldest == 0 { 0.0 } else { now_ms().saturating_sub(oldest) as f64 / 1000.0 }
            };
            metrics.queue_oldest_age_seconds.set(age);
            metrics.render()
        }
    };
    if !cfg.self_monitoring.interval.is_zero() {
        let mut extra: Vec<(String, String)> =
            vec![("job".into(), "strata-agent".into()), ("instance".into(), cfg.web.listen_address.to_string())];
        extra.extend(cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let (p, r, every) = (pipeline.clone(), render.clone(), cfg.self_monitoring.interval);
        tokio::spawn(self_monitoring::run(p, r, extra, every, stop_rx.clone()));
    }
    if cfg.scrape.config_file.is_some() {
        // The agent's labels are added where a scraped series has none of
        // that name (as Prometheus' external labels).
        let extra: Vec<(String, String)> = cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let file = cfg.scrape.config_file.clone();
        tokio::spawn(scrape::run(file, scrape_jobs, pipeline.clone(), extra, stop_rx.clone()));
    }
    if let Some(store) = &push_store {
        // honor_labels: the pushed labels win; the agent's labels fill in.
        let extra: Vec<(String, String)> = cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        tokio::spawn(push::run_forwarder(store.clone(), pipeline.clone(), extra, cfg.push.interval, stop_rx.clone()));
    }
    let web = {
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    let render = render.clone();
                    async move { ([("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], render()) }
                }),
            )
            .route("/-/healthy", get(|| async { "OK\n" }))
            .route("/-/ready", get(|| async { "Ready\n" }))
    };

    let http_metrics = metrics.http.clone();
    let mut stop = stop_rx.clone();
    let grpc_tls = match &cfg.otlp.grpc_tls_config {
        Some(t) => {
            Some(strata_server::tls::ServerTls::new(t.clone(), strata_server::tls::ALPN_H2, "otlp.grpc_tls_config")?)
        }
        None => None,
    };
    let grpc = tonic::transport::Server::builder()
        .layer(strata_server::GrpcMetricsLayer)
        .add_service(receiver::GrpcReceiver::service(pipeline.clone(), cfg.otlp.max_request_bytes))
        .serve_with_incoming_shutdown(strata_server::grpc::incoming(grpc_listener, grpc_tls), async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    let mut stop = stop_rx.clone();
    let http = strata_server::serve(
        http_listener,
        receiver::http_router(pipeline.clone(), cfg.otlp.max_request_bytes),
        &cfg.http_server,
        Some(&http_metrics),
        receiver::http_access,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    );
    let mut stop = stop_rx.clone();
    let web = strata_server::serve(
        web_listener,
        web,
        &cfg.http_server,
        Some(&http_metrics),
        strata_server::auth::status_access,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    );
    let mut stop = stop_rx.clone();
    let http_server = cfg.http_server.clone();
    let exposition_server = async move {
        let (Some(listener), Some(exposition)) = (exposition_listener, exposition) else { return Ok(()) };
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let e = exposition.clone();
                async move { ([("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], e.render()) }
            }),
        );
        strata_server::serve(listener, app, &http_server, None, strata_server::auth::status_access, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
    };
    let mut stop = stop_rx.clone();
    let http_server = cfg.http_server.clone();
    let (push_pipeline, push_max) = (pipeline.clone(), cfg.push.max_request_bytes);
    let push_metrics = http_metrics.clone();
    let push_server = async move {
        let (Some(listener), Some(store)) = (push_listener, push_store) else { return Ok(()) };
        strata_server::serve(
            listener,
            push::router(store, push_pipeline, push_max),
            &http_server,
            Some(&push_metrics),
            push::access,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await
    };
    tracing::info!(
        push = ?cfg.push.listen_address,
        grpc = %cfg.otlp.grpc_address,
        http = %cfg.otlp.http_address,
        web = %cfg.web.listen_address,
        prometheus_exporter = ?cfg.prometheus_exporter.listen_address,
        endpoints = ?cfg.remote_write.endpoints.iter().map(|e| e.url.as_str()).collect::<Vec<_>>(),
        queue = %cfg.queue.path.display(),
        "strata-agent started"
    );
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (g, h, w, x, p) = tokio::join!(grpc, http, web, exposition_server, push_server);
    g.map_err(|e| AgentError::Serve { what: "OTLP gRPC", message: e.to_string() })?;
    h.map_err(|e| AgentError::Serve { what: "OTLP HTTP", message: e.to_string() })?;
    w.map_err(|e| AgentError::Serve { what: "web", message: e.to_string() })?;
    x.map_err(|e| AgentError::Serve { what: "Prometheus exposition", message: e.to_string() })?;
    p.map_err(|e| AgentError::Serve { what: "push", message: e.to_string() })?;
    // Give in-flight sends a moment; anything unsent stays in the queue.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
