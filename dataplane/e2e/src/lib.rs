//! Helpers for multi-process tests: locate the workspace's binaries, pick
//! loopback ports, run processes with their logs in a temp dir, stop them
//! by PID, start Debian's Prometheus, and query its HTTP API.
//!
//! External programs are required when `CI=true` (a missing one fails the
//! test); elsewhere a missing program skips the test with a message.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use strata_revision::tree::TreeRevision;

/// Path of a binary built from this workspace (same profile as the test),
/// checked to have been built from the sources under test: its `--version`
/// must name the working tree's revision (see strata-revision), so a
/// binary left over from another revision is never run.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built; run `make test-build` (`make test` builds the binaries before the tests)",
        p.display()
    );
    if let Some(tree) = working_tree() {
        static CHECKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
        let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
        if !checked.contains(&p) {
            if let Err(e) = check_revision(&p, &tree.tree) {
                panic!("{e}");
            }
            checked.push(p.clone());
        }
    }
    p
}

/// The revision of the working tree the tests were built from, computed
/// once per test process; None (with a warning) outside a git checkout,
/// where binaries cannot be checked.
fn working_tree() -> Option<&'static TreeRevision> {
    static TREE: OnceLock<Option<TreeRevision>> = OnceLock::new();
    TREE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        match TreeRevision::of_worktree(root) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("WARNING: not checking which revision the binaries were built from: {e}");
                None
            }
        }
    })
    .as_ref()
}

/// Ok if `program --version` names the tree `tree`; otherwise an error
/// saying which sources it was built from and the command that rebuilds it.
pub fn check_revision(program: &Path, tree: &str) -> Result<(), String> {
    let out = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fix = "run `make test-build` (`make test` builds the binaries before running the tests)";
    match TreeRevision::parse_tree(&text) {
        Some(built) if built == tree => Ok(()),
        Some(_) => Err(format!(
            "{} was built from other sources ({}) than the working tree (tree {tree}): {fix}",
            program.display(),
            text.trim()
        )),
        None => Err(format!(
            "{} does not report the revision it was built from (--version printed {:?}): {fix}",
            program.display(),
            text.trim()
        )),
    }
}

/// A free TCP port on 127.0.0.1 for a process the test starts, below the
/// kernel's ephemeral range (32768–60999 by default). A port `bind(0)`
/// hands out comes from the range outgoing connections use too, and any
/// of the tests' many connections could take it between this call and the
/// process's own bind: a node that then cannot listen never joins its
/// cluster ("timed out … waiting for an agreed Raft leader", seen once in
/// a full run). Each test process walks its own sequence of ports (from
/// its pid), taking the next one that binds.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(97) % SPAN;
    for _ in 0..SPAN {
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (LOW + (start + k) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {LOW}–{}", LOW + SPAN - 1)
}

/// True if `program` is on PATH. Under `CI=true` a missing program panics,
/// so CI can never pass by skipping.
pub fn require(program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    required(program, found)
}

/// `found`, or else: under `CI=true` a panic naming `what`, elsewhere a
/// SKIPPED message (the caller then returns early).
pub fn required(what: &str, found: bool) -> bool {
    if !found {
        if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
            panic!("{what} is required in CI but not installed (.ci/run installs it)");
        }
        eprintln!("SKIPPED: {what} is not installed (run .ci/run to install it)");
    }
    found
}

/// A child process whose output goes to a log file; killed by PID on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(name: &str, program: &Path, args: &[String], envs: &[(&str, String)], log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(program);
        cmd.args(args).stdout(out).stderr(err).stdin(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Proc { name: name.to_string(), child: Some(child), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL by PID and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM by PID and wait up to 10 s (then SIGKILL).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGINT by PID (what Ctrl-C sends) and wait up to `timeout`; the exit
    /// status, or None if it had to be killed.
    pub fn interrupt(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-INT").arg(c.id().to_string()).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// The exit status if the process has exited (it is then reaped), else None.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Resident set size in bytes (Linux).
    pub fn rss_bytes(&self) -> Option<u64> {
        self.status_bytes("VmRSS:")
    }

    /// The most resident memory the process ever had (`VmHWM`): a bound
    /// that no sampling interval can miss.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.status_bytes("VmHWM:")
    }

    fn status_bytes(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// The last lines of the process log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` every 250 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `url` answers 200.
pub async fn wait_ready(url: &str, timeout: Duration) {
    let client = reqwest::Client::new();
    wait_for(timeout, url, || {
        let c = client.clone();
        async move { c.get(url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await
}

/// Debian's Prometheus with the remote write receiver enabled, no scrape targets.
pub struct Prometheus {
    pub proc: Proc,
    pub port: u16,
    pub data: PathBuf,
}

impl Prometheus {
    pub async fn start(dir: &Path, port: u16) -> Prometheus {
        Prometheus::start_with_config(dir, port, "global:\n  scrape_interval: 15s\n").await
    }

    /// [`Prometheus::start`] with `config` as its prometheus.yml (rule files, alerting, …).
    pub async fn start_with_config(dir: &Path, port: u16, config: &str) -> Prometheus {
        let data = dir.join("prometheus-data");
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, config).expect("write prometheus.yml");
        let args = vec![
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".to_string(),
            "--enable-feature=exemplar-storage".to_string(),
            "--log.level=warn".to_string(),
        ];
        let proc = Proc::start(&format!("prometheus-{port}"), Path::new("prometheus"), &args, &[], dir);
        wait_ready(&format!("http://127.0.0.1:{port}/-/ready"), Duration::from_secs(30)).await;
        Prometheus { proc, port, data }
    }

    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Runs an instant query against a Prometheus-compatible API; returns the `data.result` array.
pub async fn query(base: &str, q: &str) -> Vec<serde_json::Value> {
    let client = reqwest::Client::new();
    let resp = client.get(format!("{base}/api/v1/query")).query(&[("query", q)]).send().await;
    let Ok(resp) = resp else { return Vec::new() };
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The single scalar value of an instant vector query, if exactly one series matched.
pub async fn query_value(base: &str, q: &str) -> Option<f64> {
    let r = query(base, q).await;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

/// Reads one sample value from a Prometheus text exposition.
pub async fn scrape_value(url: &str, series: &str) -> Option<f64> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A running `strata-agent`.
pub struct Agent {
    pub proc: Proc,
    pub grpc_port: u16,
    pub http_port: u16,
    pub web_port: u16,
    pub queue: PathBuf,
}

impl Agent {
    /// Starts an agent labelled `environment=<env>`, `data_plane_id=<dp>`.
    pub async fn start(dir: &Path, name: &str, remote_write_url: &str, env: &str, dp: &str, extra: &[&str]) -> Agent {
        let queue = dir.join(format!("{name}-queue"));
        Self::start_with_queue(dir, name, remote_write_url, env, dp, &queue, extra).await
    }

    pub async fn start_with_queue(
        dir: &Path,
        name: &str,
        remote_write_url: &str,
        env: &str,
        dp: &str,
        queue: &Path,
        extra: &[&str],
    ) -> Agent {
        let (grpc_port, http_port, web_port) = (free_port(), free_port(), free_port());
        let mut args: Vec<String> = vec![
            "--otlp.grpc-address".into(),
            format!("127.0.0.1:{grpc_port}"),
            "--otlp.http-address".into(),
            format!("127.0.0.1:{http_port}"),
            "--web.listen-address".into(),
            format!("127.0.0.1:{web_port}"),
            "--remote-write.url".into(),
            remote_write_url.into(),
            "--label".into(),
            format!("environment={env}"),
            "--label".into(),
            format!("data_plane_id={dp}"),
            "--queue.path".into(),
            queue.display().to_string(),
            "--batch.timeout".into(),
            "50ms".into(),
        ];
        if !extra.iter().any(|a| a.starts_with("--self-monitoring")) {
            // Tests count exactly what reaches the receiver; the agent's own
            // metrics are shipped only where a test asks for them.
            args.push("--self-monitoring.interval=0s".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::start(name, &bin("strata-agent"), &args, &[], dir);
        wait_ready(&format!("http://127.0.0.1:{web_port}/-/ready"), Duration::from_secs(30)).await;
        Agent { proc, grpc_port, http_port, web_port, queue: queue.to_path_buf() }
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.web_port)
    }

    pub async fn metric(&self, series: &str) -> f64 {
        scrape_value(&self.metrics_url(), series).await.unwrap_or(0.0)
    }
}

/// A running `sample-api` exporting OTLP to an agent.
pub struct SampleApi {
    pub proc: Proc,
    pub port: u16,
}

impl SampleApi {
    /// `protocol` is `grpc`, `http/protobuf` or `http/json`.
    pub async fn start(
        dir: &Path,
        name: &str,
        agent: &Agent,
        protocol: &str,
        service: &str,
        extra_env: &[(&str, String)],
    ) -> SampleApi {
        let port = free_port();
        let endpoint = if protocol == "grpc" {
            format!("http://127.0.0.1:{}", agent.grpc_port)
        } else {
            format!("http://127.0.0.1:{}", agent.http_port)
        };
        let mut env: Vec<(&str, String)> = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_string()),
            ("OTEL_SERVICE_NAME", service.to_string()),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test".to_string()),
        ];
        env.extend(extra_env.iter().cloned());
        let args = vec!["--web.listen-address".to_string(), format!("127.0.0.1:{port}")];
        let proc = Proc::start(name, &bin("sample-api"), &args, &env, dir);
        wait_ready(&format!("http://127.0.0.1:{port}/health"), Duration::from_secs(30)).await;
        SampleApi { proc, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A temp dir for a test's data and process logs. Set
/// `STRATA_KEEP_TEST_DIRS=1` to keep it (its path is printed).
pub fn test_dir() -> tempfile::TempDir {
    let keep = std::env::var("STRATA_KEEP_TEST_DIRS").map(|v| v == "1").unwrap_or(false);
    let mut b = tempfile::Builder::new();
    b.prefix("strata-e2e-");
    if keep {
        b.disable_cleanup(true);
    }
    let d = b.tempdir().expect("temp dir");
    eprintln!("test dir: {}", d.path().display());
    d
}
