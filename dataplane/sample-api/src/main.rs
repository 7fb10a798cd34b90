use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sample_api::breaker::CircuitBreaker;
use sample_api::faults::Faults;
use sample_api::telemetry::{self, ShopMetrics};

/// Sample shop API instrumented with OpenTelemetry.
///
/// OTLP export is configured by the standard OTEL_* variables; faults by
/// ERROR_RATE, LATENCY_MULTIPLIER and PAYMENT_FAILURE_RATE, and at runtime
/// by POST /admin/faults.
#[derive(Parser, Debug)]
#[command(name = "sample-api", version = strata_revision::version!())]
struct Cli {
    /// The shop API and /admin/faults.
    #[arg(long = "web.listen-address", env = "SAMPLE_API_LISTEN_ADDRESS", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Log filter, e.g. info.
    #[arg(long = "log.level", env = "SAMPLE_API_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(flatten)]
    http: strata_server::HttpServerArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log_level).context("invalid --log.level")?)
        .init();
    let http = strata_server::HttpServerConfig::from(cli.http.clone());
    http.validate().map_err(|e| anyhow::anyhow!("invalid --{e}"))?;
    let faults = Faults::from_env().map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let provider = telemetry::init(&cli.listen.to_string())?;
        let breaker = Arc::new(CircuitBreaker::new(5, Duration::from_secs(10)));
        let metrics = ShopMetrics::new(&telemetry::meter(&provider), breaker.clone());
        let state = sample_api::AppState::new(faults, metrics, breaker);
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?;
        tracing::info!(address = %cli.listen, ?faults, "sample-api listening");
        strata_server::serve(listener, sample_api::app(state), &http, None, read_access, shutdown_signal()).await?;
        // Flush the last metrics before exiting.
        let p = provider.clone();
        let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        anyhow::Ok(())
    })
}

/// With `--web.config.file`: `/admin/*` (fault injection) needs `admin`,
/// the shop API `read`.
fn read_access(_: &axum::http::Method, path: &str) -> strata_server::Access {
    use strata_server::{Access, Role};
    if path.starts_with("/admin/") { Access::Role(Role::Admin) } else { Access::Role(Role::Read) }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
