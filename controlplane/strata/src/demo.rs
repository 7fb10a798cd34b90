//! `strata demo`: the whole stack on one machine, as child processes of
//! this one. Three data planes (prod/dev/qa: sample API + strata-agent), a
//! 3-node Raft cluster of ingesters cutting short blocks into a local
//! directory, a store gateway, the compactor, the querier with the dashboard on :9090,
//! the ruler (Strata's own alerts and the data planes' RED rules, shipped in
//! `helm/strata/alerts/`), Debian's `prometheus-alertmanager` when installed,
//! and the load generator. Logs go to `<data-dir>/logs/`; the data survives a
//! restart; Ctrl-C (or SIGTERM) stops the children in reverse start order
//! and waits for them. If one dies, the demo says which, points at its log
//! and stops the rest.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoScenario {
    /// Normal traffic (qa runs with a 10% error rate, dev is bursty).
    Steady,
    /// Latency ×5 on prod during the incident window.
    ProdLatency,
    /// 50% errors on qa during the incident window.
    QaErrorSpike,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where ingesters, agents' queues, blocks (`objstore/`) and logs live.
    #[arg(long = "data-dir", default_value = "./data")]
    data_dir: PathBuf,
    #[arg(long = "scenario", value_enum, default_value = "steady")]
    scenario: DemoScenario,
    /// When the incident of --scenario starts, after the load generator.
    #[arg(long = "incident.after", default_value = "1m", value_parser = humantime::parse_duration)]
    incident_after: Duration,
    /// How long the incident lasts.
    #[arg(long = "incident.duration", default_value = "10m", value_parser = humantime::parse_duration)]
    incident_duration: Duration,
    /// Block range of the ingesters (short, so blocks appear while you watch).
    #[arg(long = "block.duration", default_value = "5m", value_parser = humantime::parse_duration)]
    block_duration: Duration,
    /// The compactor merges the short blocks into windows of this length.
    #[arg(long = "compaction.range", default_value = "1h", value_parser = humantime::parse_duration)]
    compaction_range: Duration,
    /// The compactor deletes data older than this (0s: keep everything).
    #[arg(long = "retention", default_value = "7d", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// Added to every port (querier 9090+N, APIs 8081+N, …): run a second
    /// demo next to the first, or in tests.
    #[arg(long = "port-offset", default_value_t = 0)]
    port_offset: u16,
    /// Directory with strata-agent, sample-api and strata-loadgen (default:
    /// the directory of this binary, where cargo puts them).
    #[arg(long = "bin-dir")]
    bin_dir: Option<PathBuf>,
}

/// The demo's ports before `--port-offset` (DESIGN.md §ports).
struct Ports(u16);

impl Ports {
    fn at(&self, base: u16) -> u16 {
        base + self.0
    }
    fn querier(&self) -> u16 {
        self.at(9090)
    }
    /// Ingester `i` (0-based): (web, gRPC).
    fn ingester(&self, i: u16) -> (u16, u16) {
        (self.at(9009 + 100 * i), self.at(9095 + 100 * i))
    }
    fn compactor(&self) -> u16 {
        self.at(9098)
    }
    fn ruler(&self) -> u16 {
        self.at(9099)
    }
    fn alertmanager(&self) -> u16 {
        self.at(9093)
    }
    /// Store gateway: (gRPC, web).
    fn store(&self) -> (u16, u16) {
        (self.at(9096), self.at(9097))
    }
    /// Data plane `i`: (sample API, agent OTLP gRPC, agent OTLP HTTP, agent web).
    fn data_plane(&self, i: u16) -> (u16, u16, u16, u16) {
        (self.at(8081 + i), self.at(4317 + 10 * i), self.at(4318 + 10 * i), self.at(8888 + 10 * i))
    }
}

const ENVIRONMENTS: [&str; 3] = ["prod", "dev", "qa"];

/// The rule files the ruler evaluates: Strata's own alerts and the data
/// planes' RED rules (the Helm chart ships the same files).
const RULE_FILES: [(&str, &str); 2] = [
    ("strata.rules.yml", include_str!("../../../helm/strata/alerts/strata.rules.yml")),
    ("red.rules.yml", include_str!("../../../helm/strata/alerts/red.rules.yml")),
];

/// Alertmanager's configuration in the demo: every alert to one receiver
/// without integrations (its UI and API show them).
const ALERTMANAGER_CONFIG: &str = "route:\n  receiver: demo\n  group_by: [alertname, environment]\n  group_wait: 10s\n  group_interval: 1m\nreceivers:\n  - name: demo\n";

/// Debian's Alertmanager binary, if installed.
fn find_alertmanager() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("prometheus-alertmanager")).find(|p| p.is_file())
}

struct Running {
    name: String,
    child: Child,
    log: PathBuf,
    /// The load generator ends by itself after its duration; that is not a failure.
    may_finish: bool,
}

struct Supervisor {
    logs: PathBuf,
    children: Vec<Running>,
}

impl Supervisor {
    fn spawn(&mut self, name: &str, program: &Path, args: &[String], envs: &[(&str, String)]) -> anyhow::Result<()> {
        let log = self.logs.join(format!("{name}.log"));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args).envs(envs.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).stdout(out).stderr(err);
        // Own process group: a terminal's Ctrl-C reaches only the demo, which
        // then stops the children in order.
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Die with the demo even if it is killed with SIGKILL.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("cannot start {}", program.display()))?;
        tracing::debug!(name, pid = child.id(), "started");
        self.children.push(Running { name: name.to_string(), child, log, may_finish: name == "loadgen" });
        Ok(())
    }

    /// The first child that exited when it should not have.
    fn failed(&mut self) -> Option<(String, ExitStatus, PathBuf)> {
        for r in &mut self.children {
            if let Ok(Some(status)) = r.child.try_wait()
                && !(r.may_finish && status.success())
            {
                return Some((r.name.clone(), status, r.log.clone()));
            }
        }
        None
    }

    /// SIGTERM in reverse start order (traffic first, ingesters last), each
    /// given 15 s to exit before SIGKILL.
    fn stop_all(&mut self) {
        while let Some(mut r) = self.children.pop() {
            if let Ok(Some(_)) = r.child.try_wait() {
                continue;
            }
            if let Ok(pid) = i32::try_from(r.child.id()) {
                // SAFETY: plain kill(2) on a PID we spawned and have not reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match r.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("{} did not stop within 15 s: killed", r.name);
                        let _ = r.child.kill();
                        let _ = r.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn sibling(bin_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = bin_dir.join(name);
    if !p.exists() {
        bail!(
            "{} not found: build the data plane too (`cargo build --release -p strata -p strata-agent -p sample-api \
             -p strata-loadgen`, or `make demo`), or point --bin-dir at the binaries",
            p.display()
        );
    }
    Ok(p)
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

/// Ctrl-C and SIGTERM, listened to from the start (before the first child
/// is spawned), so a stop during startup also stops the children.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn listen() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
    }
}

/// Runs the demo until Ctrl-C/SIGTERM or a child fails.
pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    let mut stop = StopSignals::listen()?;
    anyhow::ensure!(a.port_offset <= 65535 - 9295, "--port-offset {} pushes ports past 65535", a.port_offset);
    let strata = std::env::current_exe().context("cannot find the strata binary")?;
    let bin_dir = match a.bin_dir {
        Some(d) => d,
        None => strata.parent().context("strata binary has no directory")?.to_path_buf(),
    };
    let (agent, api, loadgen) =
        (sibling(&bin_dir, "strata-agent")?, sibling(&bin_dir, "sample-api")?, sibling(&bin_dir, "strata-loadgen")?);
    let data = a.data_dir;
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let objstore = s(data.join("objstore").display());
    let ports = Ports(a.port_offset);
    let mut sup = Supervisor { logs: logs.clone(), children: Vec::new() };

    let peers: Vec<String> = (0..3).map(|i| format!("{}=127.0.0.1:{}", i + 1, ports.ingester(i).1)).collect();
    for i in 0..3u16 {
        let (web, grpc) = ports.ingester(i);
        let args = [
            s("ingester"),
            format!("--raft.node-id={}", i + 1),
            format!("--raft.peers={}", peers.join(",")),
            format!("--grpc.listen-address=127.0.0.1:{grpc}"),
            format!("--web.listen-address=127.0.0.1:{web}"),
            format!("--storage.path={}", data.join(format!("ingester-{}", i + 1)).display()),
            format!("--objstore.path={objstore}"),
            format!("--block.duration={}", humantime::format_duration(a.block_duration)),
        ];
        sup.spawn(&format!("ingester-{}", i + 1), &strata, &args, &[])?;
    }
    let (store_grpc, store_web) = ports.store();
    sup.spawn(
        "store",
        &strata,
        &[
            s("store"),
            format!("--grpc.listen-address=127.0.0.1:{store_grpc}"),
            format!("--web.listen-address=127.0.0.1:{store_web}"),
            format!("--objstore.path={objstore}"),
            s("--store.sync-interval=10s"),
        ],
        &[],
    )?;
    sup.spawn(
        "compactor",
        &strata,
        &[
            s("compact"),
            format!("--web.listen-address=127.0.0.1:{}", ports.compactor()),
            format!("--objstore.path={objstore}"),
            format!("--compaction.range={}", humantime::format_duration(a.compaction_range)),
            format!("--compaction.delay={}", humantime::format_duration(a.block_duration)),
            s("--compaction.interval=1m"),
            s("--compaction.delete-delay=1m"),
            format!("--retention={}", humantime::format_duration(a.retention)),
        ],
        &[],
    )?;
    let mut querier_args = vec![
        s("querier"),
        format!("--web.listen-address=127.0.0.1:{}", ports.querier()),
        s("--sql.enabled=true"),
        format!("--objstore.path={objstore}"),
    ];
    querier_args.extend((0..3).map(|i| format!("--endpoint=127.0.0.1:{}", ports.ingester(i).1)));
    querier_args.push(format!("--endpoint=127.0.0.1:{store_grpc}"));
    querier_args.push(format!("--ruler.url=http://127.0.0.1:{}", ports.ruler()));
    sup.spawn("querier", &strata, &querier_args, &[])?;

    // Alertmanager (when installed) and the ruler.
    let alertmanager = find_alertmanager();
    if let Some(am) = &alertmanager {
        let am_dir = data.join("alertmanager");
        std::fs::create_dir_all(&am_dir).with_context(|| format!("cannot create {}", am_dir.display()))?;
        let am_config = am_dir.join("alertmanager.yml");
        std::fs::write(&am_config, ALERTMANAGER_CONFIG)
            .with_context(|| format!("cannot write {}", am_config.display()))?;
        sup.spawn(
            "alertmanager",
            am,
            &[
                format!("--config.file={}", am_config.display()),
                format!("--storage.path={}", am_dir.display()),
                format!("--web.listen-address=127.0.0.1:{}", ports.alertmanager()),
                s("--cluster.listen-address="),
            ],
            &[],
        )?;
    }
    let rules_dir = data.join("rules");
    std::fs::create_dir_all(&rules_dir).with_context(|| format!("cannot create {}", rules_dir.display()))?;
    for (name, text) in RULE_FILES {
        let path = rules_dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut ruler_args = vec![
        s("ruler"),
        format!("--rule.files={}", rules_dir.join("*.yml").display()),
        format!("--web.listen-address=127.0.0.1:{}", ports.ruler()),
        s("--evaluation-interval=15s"),
        format!("--objstore.path={objstore}"),
        format!("--web.external-url=http://127.0.0.1:{}", ports.querier()),
    ];
    ruler_args.extend((0..3).map(|i| format!("--endpoint=127.0.0.1:{}", ports.ingester(i).1)));
    ruler_args.push(format!("--endpoint=127.0.0.1:{store_grpc}"));
    ruler_args
        .extend((0..3).map(|i| format!("--remote-write.url=http://127.0.0.1:{}/api/v1/write", ports.ingester(i).0)));
    if alertmanager.is_some() {
        ruler_args.push(format!("--alertmanager.url=http://127.0.0.1:{}", ports.alertmanager()));
    }
    sup.spawn("ruler", &strata, &ruler_args, &[])?;

    let mut targets = String::from("targets:\n");
    for (i, env) in ENVIRONMENTS.iter().enumerate() {
        let (api_port, grpc, http, web) = ports.data_plane(i as u16);
        let dp = format!("dp-{env}-01");
        sup.spawn(
            &format!("agent-{env}"),
            &agent,
            &[
                format!("--otlp.grpc-address=127.0.0.1:{grpc}"),
                format!("--otlp.http-address=127.0.0.1:{http}"),
                format!("--web.listen-address=127.0.0.1:{web}"),
                format!("--remote-write.url=http://127.0.0.1:{}/api/v1/write", ports.ingester(i as u16).0),
                format!("--label=environment={env}"),
                format!("--label=data_plane_id={dp}"),
                format!("--queue.path={}", data.join(format!("agent-{env}")).display()),
            ],
            &[],
        )?;
        sup.spawn(
            &format!("api-{env}"),
            &api,
            &[format!("--web.listen-address=127.0.0.1:{api_port}")],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{grpc}")),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", s("grpc")),
                ("OTEL_METRIC_EXPORT_INTERVAL", s("5000")),
                ("OTEL_SERVICE_NAME", s("shop-api")),
                ("OTEL_RESOURCE_ATTRIBUTES", format!("deployment.environment.name={env},data_plane_id={dp}")),
            ],
        )?;
        let (rate, scenario) = match (*env, a.scenario) {
            ("prod", DemoScenario::ProdLatency) => (50, "prod-latency"),
            ("prod", _) => (50, "steady"),
            ("dev", _) => (20, "bursty"),
            (_, DemoScenario::QaErrorSpike) => (10, "qa-error-spike"),
            _ => (10, "errors"),
        };
        targets.push_str(&format!(
            "  - {{ target: \"http://127.0.0.1:{api_port}\", environment: {env}, rate: {rate}, scenario: {scenario}, \
             incident_after_seconds: {}, incident_seconds: {} }}\n",
            a.incident_after.as_secs_f64(),
            a.incident_duration.as_secs_f64()
        ));
    }
    // Strata observes itself: one more agent scrapes every control-plane
    // component's /metrics into environment "strata" (the data planes'
    // agents ship their own metrics already).
    let (_, grpc, http, web) = ports.data_plane(3);
    let mut scrape = String::from("global:\n  scrape_interval: 15s\nscrape_configs:\n");
    let mut job = |name: &str, targets: Vec<u16>| {
        let list: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        scrape
            .push_str(&format!("  - job_name: {name}\n    static_configs:\n      - targets: [{}]\n", list.join(", ")));
    };
    job("strata-ingester", (0..3).map(|i| ports.ingester(i).0).collect());
    job("strata-store", vec![ports.store().1]);
    job("strata-compactor", vec![ports.compactor()]);
    job("strata-querier", vec![ports.querier()]);
    job("strata-ruler", vec![ports.ruler()]);
    let scrape_file = data.join("scrape-strata.yml");
    std::fs::write(&scrape_file, scrape).with_context(|| format!("cannot write {}", scrape_file.display()))?;
    sup.spawn(
        "agent-strata",
        &agent,
        &[
            format!("--otlp.grpc-address=127.0.0.1:{grpc}"),
            format!("--otlp.http-address=127.0.0.1:{http}"),
            format!("--web.listen-address=127.0.0.1:{web}"),
            format!("--remote-write.url=http://127.0.0.1:{}/api/v1/write", ports.ingester(0).0),
            "--label=environment=strata".to_string(),
            format!("--queue.path={}", data.join("agent-strata").display()),
            format!("--scrape.config-file={}", scrape_file.display()),
            "--self-monitoring.interval=0s".to_string(),
        ],
        &[],
    )?;
    let scenario_file = data.join("scenario.yml");
    std::fs::write(&scenario_file, targets).with_context(|| format!("cannot write {}", scenario_file.display()))?;

    let base = format!("http://127.0.0.1:{}", ports.querier());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let ready_url = format!("{base}/-/ready");
    let up = tokio::select! {
        up = wait_ready(&client, &ready_url, &mut sup) => up?,
        _ = stop.recv() => {
            eprintln!("\nstopped during startup");
            return Ok(());
        }
    };
    sup.spawn(
        "loadgen",
        &loadgen,
        &[s("run"), format!("--scenario-file={}", scenario_file.display()), s("--duration=8760h")],
        &[],
    )?;
    print_banner(&ports, &data, a.scenario, a.incident_after, a.incident_duration, alertmanager.is_some());

    let first_data = first_data(client, base, up);
    tokio::pin!(first_data);
    let mut first_data_done = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.recv() => break,
            _ = &mut first_data, if !first_data_done => first_data_done = true,
            _ = tick.tick() => {
                if let Some((name, status, log)) = sup.failed() {
                    eprintln!("\n{name} exited ({status}); its log: {}\n{}", log.display(), tail(&log, 15));
                    eprintln!("stopping the demo");
                    sup.stop_all();
                    bail!("{name} exited ({status})");
                }
            }
        }
    }
    eprintln!("\nstopping the demo (traffic, data planes, ruler, querier, store, ingesters)");
    sup.stop_all();
    eprintln!("stopped; data kept in {}", data.display());
    Ok(())
}

/// Waits for the querier to answer `/-/ready`; fails if a child dies meanwhile.
async fn wait_ready(client: &reqwest::Client, url: &str, sup: &mut Supervisor) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((name, status, log)) = sup.failed() {
            bail!("{name} exited ({status}) during startup; its log: {}\n{}", log.display(), tail(&log, 15));
        }
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the querier did not become ready within 60 s; logs in {}", sup.logs.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints how long after the querier came up every environment had data
/// (the dashboard's overview query answering for all three).
async fn first_data(client: reqwest::Client, base: String, up: Instant) {
    let q = "count by (environment) (http_server_request_duration_seconds_count)";
    while up.elapsed() < Duration::from_secs(300) {
        let answer = client.get(format!("{base}/api/v1/query")).query(&[("query", q)]).send().await;
        if let Ok(r) = answer
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["data"]["result"].as_array().is_some_and(|a| a.len() >= ENVIRONMENTS.len())
        {
            println!("first data for all 3 environments {} ms after the querier was up", up.elapsed().as_millis());
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("no data for all 3 environments 5 minutes after the querier was up: see the logs");
}

fn print_banner(p: &Ports, data: &Path, scenario: DemoScenario, after: Duration, length: Duration, am: bool) {
    let q = p.querier();
    let (w1, w2, w3) = (p.ingester(0).0, p.ingester(1).0, p.ingester(2).0);
    let (sg, sw) = p.store();
    let apis: Vec<u16> = (0..3).map(|i| p.data_plane(i).0).collect();
    let agents: Vec<u16> = (0..3).map(|i| p.data_plane(i).3).collect();
    let d = data.display();
    println!(
        "\nStrata demo is running (data in {d}, logs in {d}/logs):
  dashboard + Prometheus API     http://127.0.0.1:{q}   (Grafana: Prometheus data source at this URL)
  ingesters (remote write, OTLP) http://127.0.0.1:{w1}  :{w2}  :{w3}   (Raft status: /api/v1/status/raft)
  store gateway                  127.0.0.1:{sg} (gRPC), http://127.0.0.1:{sw}/metrics; blocks in {d}/objstore
  compactor                      http://127.0.0.1:{}/metrics
  sample APIs                    http://127.0.0.1:{} (prod)  :{} (dev)  :{} (qa)
  agent metrics                  http://127.0.0.1:{}/metrics (prod)  :{} (dev)  :{} (qa)
  Strata's own metrics           scraped by the agent on :{} into environment=\"strata\" (e.g. up{{environment=\"strata\"}})",
        p.compactor(),
        apis[0],
        apis[1],
        apis[2],
        agents[0],
        agents[1],
        agents[2],
        p.data_plane(3).3
    );
    println!(
        "  ruler (alerts, recording rules) http://127.0.0.1:{}/api/v1/alerts   (dashboard: #/alerts; rules in {d}/rules)",
        p.ruler()
    );
    if am {
        println!("  Alertmanager                   http://127.0.0.1:{}", p.alertmanager());
    } else {
        println!(
            "  Alertmanager                   not installed (apt-get install prometheus-alertmanager): alerts show in the dashboard only"
        );
    }
    let incident = match scenario {
        DemoScenario::Steady => None,
        DemoScenario::ProdLatency => Some("prod latency ×5"),
        DemoScenario::QaErrorSpike => Some("50% errors on qa"),
    };
    if let Some(what) = incident {
        println!(
            "  incident                       {what} from {} after start, for {}",
            humantime::format_duration(after),
            humantime::format_duration(length)
        );
    }
    println!(
        "Try:  curl -s 'http://127.0.0.1:{q}/api/v1/query' --data-urlencode \\
        'query=sum by (environment) (rate(http_server_request_duration_seconds_count[1m]))'
      SQL over the blocks (the first appears after one block range):
      curl -s http://127.0.0.1:{q}/api/v1/sql --data-binary \\
        'SELECT l_environment, count(*) FROM series GROUP BY 1'
Press Ctrl-C to stop.\n"
    );
}

fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_design_md_and_shift_together() {
        let p = Ports(0);
        assert_eq!(p.querier(), 9090);
        assert_eq!(p.ingester(2), (9209, 9295));
        assert_eq!((p.store(), p.compactor()), ((9096, 9097), 9098));
        assert_eq!((p.ruler(), p.alertmanager()), (9099, 9093));
        assert_eq!(p.data_plane(0), (8081, 4317, 4318, 8888));
        assert_eq!(p.data_plane(2), (8083, 4337, 4338, 8908));
        let q = Ports(1000);
        assert_eq!((q.querier(), q.data_plane(1).0), (10090, 9082));
    }

    #[test]
    fn missing_data_plane_binaries_are_named() {
        let dir = std::env::temp_dir();
        let e = sibling(&dir, "no-such-strata-binary").unwrap_err().to_string();
        assert!(e.contains("no-such-strata-binary not found") && e.contains("make demo"), "{e}");
    }
}
