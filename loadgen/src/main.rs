mod bench;
mod bench_otlp;
mod sink;
mod stats;
mod traffic;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// strata-loadgen: traffic for the sample APIs, and ingest/query benchmarks
/// for any Prometheus-compatible backend. It only ever sends to the
/// addresses given on the command line.
#[derive(Parser)]
#[command(name = "strata-loadgen", version = strata_revision::version!())]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drive a sample API (or several, with --scenario-file).
    Run {
        /// Base URL of a sample API, e.g. http://127.0.0.1:8081.
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value = "default")]
        environment: String,
        /// Requests per second (default from the scenario).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Maximum requests in flight per target.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// steady | bursty | errors | prod-latency | qa-error-spike
        #[arg(long, default_value = "steady")]
        scenario: traffic::Scenario,
        /// YAML file with `targets: [{target, environment, rate, scenario}]`.
        #[arg(long = "scenario-file")]
        scenario_file: Option<PathBuf>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        kind: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Remote-write ingest benchmark.
    Write {
        /// Remote write URL, e.g. http://127.0.0.1:9090/api/v1/write.
        #[arg(long)]
        url: String,
        /// Distinct series written.
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// Time span of the data, ending now.
        #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
        history: Duration,
        /// Time between two samples of one series.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Concurrent senders.
        #[arg(long, default_value_t = 4)]
        senders: usize,
        /// Samples per request.
        #[arg(long, default_value_t = 2000)]
        batch: usize,
        /// Remote write protocol: v1 or v2.
        #[arg(long, default_value = "v1")]
        protocol: String,
        /// Consecutive samples per series in one request (1 = live shape).
        #[arg(long = "samples-per-series", default_value_t = 1)]
        samples_per_series: usize,
        /// PID of a server process whose CPU time to report per sample (repeatable).
        #[arg(long)]
        pid: Vec<u32>,
        /// Extra header, name=value (e.g. X-Scope-OrgID=bench).
        #[arg(long)]
        header: Vec<String>,
        /// Print every request slower than this (its start as Unix time in
        /// ms and its latency) to stderr, to line stalls up with a server log.
        #[arg(long = "slow-log", value_parser = humantime::parse_duration)]
        slow_log: Option<Duration>,
        /// CA certificates (PEM) that verify an https --url (default: the system's).
        #[arg(long = "ca-file")]
        ca_file: Option<PathBuf>,
        /// End of the data as Unix seconds (default: now), so that several
        /// systems loaded one after the other hold identical samples.
        #[arg(long)]
        end: Option<f64>,
        /// Generate requests while sending instead of all before (memory
        /// bounded whatever --history; the generator's CPU is in the timed
        /// phase). Senders advance in lockstep rounds of
        /// --samples-per-series samples, so a long backfill stays within a
        /// receiver's appendable window.
        #[arg(long)]
        stream: bool,
    },
    /// OTLP/HTTP load for a collector: data points/s accepted and, with
    /// --agent-metrics, delivered end to end through remote write.
    Otlp {
        /// OTLP/HTTP metrics URL, e.g. http://127.0.0.1:4318/v1/metrics.
        #[arg(long)]
        url: String,
        /// Distinct series (gauges) sent.
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// Data points per series.
        #[arg(long, default_value_t = 60)]
        steps: usize,
        /// Data points in one OTLP request.
        #[arg(long = "points-per-request", default_value_t = 1000)]
        points_per_request: usize,
        /// Concurrent senders.
        #[arg(long, default_value_t = 4)]
        senders: usize,
        /// strata-agent /metrics URL; waits until all points are remote-written.
        #[arg(long = "agent-metrics")]
        agent_metrics: Option<String>,
    },
    /// A remote write 1.0 receiver that decodes and counts, for measuring
    /// a sender (e.g. strata-agent) without a co-located database.
    Sink {
        /// Listen address (loopback unless you mean otherwise).
        #[arg(long, default_value = "127.0.0.1:19291")]
        listen: std::net::SocketAddr,
    },
    /// Time PromQL range queries against a Prometheus-compatible HTTP API.
    Query {
        /// Base URL, e.g. http://127.0.0.1:9090.
        #[arg(long)]
        url: String,
        /// File with one query per line (`name: query` allowed).
        #[arg(long)]
        queries: PathBuf,
        #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
        range: Duration,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        step: Duration,
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Run each query once untimed before the timed runs (false: every
        /// run is timed, e.g. to time a cold cache).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        warmup: bool,
        /// End of the range as Unix seconds (default: now).
        #[arg(long)]
        end: Option<f64>,
        /// Extra header, name=value (e.g. Authorization=Basic ...).
        #[arg(long)]
        header: Vec<String>,
        /// CA certificates (PEM) that verify an https --url (default: the system's).
        #[arg(long = "ca-file")]
        ca_file: Option<PathBuf>,
        /// Extra query_range parameter, name=value (e.g. max_source_resolution=0s).
        #[arg(long)]
        param: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run { target, environment, rate, duration, concurrency, scenario, scenario_file } => {
                let plans = match (scenario_file, target) {
                    (Some(path), _) => {
                        let text = std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?;
                        let f: traffic::ScenarioFile = serde_yaml::from_str(&text)
                            .with_context(|| format!("invalid scenario file {}", path.display()))?;
                        f.targets
                    }
                    (None, Some(target)) => {
                        vec![traffic::Plan {
                            target,
                            environment,
                            rate: rate.unwrap_or(traffic::default_rate(scenario)),
                            scenario,
                            concurrency,
                            incident_after_seconds: None,
                            incident_seconds: None,
                        }]
                    }
                    (None, None) => anyhow::bail!("give --target URL or --scenario-file FILE"),
                };
                for p in &plans {
                    reqwest::Url::parse(&p.target).with_context(|| format!("invalid target URL {:?}", p.target))?;
                    p.incident_window(duration).map_err(|e| anyhow::anyhow!("target {}: {e}", p.target))?;
                }
                traffic::run_all(plans, duration).await
            }
            Cmd::Bench {
                kind:
                    BenchCmd::Write {
                        url,
                        series,
                        history,
                        interval,
                        senders,
                        batch,
                        protocol,
                        samples_per_series,
                        pid,
                        header,
                        slow_log,
                        ca_file,
                        end,
                        stream,
                    },
            } => {
                let v2 = match protocol.as_str() {
                    "v1" | "1.0" => false,
                    "v2" | "2.0" => true,
                    p => anyhow::bail!("--protocol {p:?}: use v1 or v2"),
                };
                let headers = parse_headers(&header)?;
                anyhow::ensure!(
                    senders > 0 && series > 0 && batch > 0,
                    "--senders, --series and --batch must be positive"
                );
                bench::write(bench::WriteBench {
                    url,
                    series,
                    history,
                    interval,
                    senders,
                    batch,
                    samples_per_series,
                    v2,
                    pids: pid,
                    headers,
                    slow_log,
                    ca_file,
                    end_ms: end.map(|s| (s * 1000.0) as i64),
                    stream,
                })
                .await
            }
            Cmd::Bench { kind: BenchCmd::Otlp { url, series, steps, points_per_request, senders, agent_metrics } } => {
                anyhow::ensure!(senders > 0 && series > 0 && points_per_request > 0, "counts must be positive");
                bench_otlp::run(bench_otlp::OtlpBench {
                    url,
                    series,
                    steps,
                    points_per_request,
                    senders,
                    agent_metrics,
                })
                .await
            }
            Cmd::Bench { kind: BenchCmd::Sink { listen } } => sink::run(listen).await,
            Cmd::Bench {
                kind: BenchCmd::Query { url, queries, range, step, runs, warmup, end, header, ca_file, param },
            } => {
                let text =
                    std::fs::read_to_string(&queries).with_context(|| format!("cannot read {}", queries.display()))?;
                let queries = bench::parse_query_file(&text);
                anyhow::ensure!(!queries.is_empty(), "no queries in the file");
                let headers = parse_headers(&header)?;
                let params = parse_headers(&param)?;
                let b = bench::QueryBench { url, queries, range, step, runs, warmup, end, headers, ca_file, params };
                bench::query(b).await
            }
        }
    })
}

/// `--header` and `--param` flags: name=value.
fn parse_headers(flags: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    flags
        .iter()
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{h:?}: use name=value"))
        })
        .collect()
}
