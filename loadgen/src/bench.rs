//! `strata-loadgen bench`: remote-write ingest and PromQL query benchmarks
//! usable against any Prometheus-compatible backend (Strata, Prometheus,
//! VictoriaMetrics), so figures can be compared side by side.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_proto::prometheus::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest, metric_metadata};
use strata_proto::remote_write as rw;

use crate::stats::{ms, quantile_us};

/// Settings of `bench write`.
#[derive(Debug, Clone)]
pub struct WriteBench {
    pub url: String,
    pub series: usize,
    pub history: Duration,
    pub interval: Duration,
    pub senders: usize,
    /// Samples per request.
    pub batch: usize,
    /// Consecutive samples of each series in one request (1 = live
    /// scraping shape; larger = backfill shape, fewer labels per sample).
    pub samples_per_series: usize,
    pub v2: bool,
    /// Processes whose CPU time is reported per sample (the server under test).
    pub pids: Vec<u32>,
    pub headers: Vec<(String, String)>,
    /// Requests slower than this are printed to stderr with their start time.
    pub slow_log: Option<Duration>,
    /// CA certificates (PEM) that verify an https URL.
    pub ca_file: Option<std::path::PathBuf>,
    /// End of the data (ms; default now).
    pub end_ms: Option<i64>,
    /// Generate requests while sending (bounded memory, senders in lockstep
    /// rounds) instead of pre-encoding all of them.
    pub stream: bool,
}

/// The benchmark's HTTP client: HTTPS verified with `ca_file` (or the
/// system's CA certificates) when the URL asks for it.
fn http_client(timeout: Duration, ca_file: Option<&std::path::Path>) -> anyhow::Result<reqwest_rustls::Client> {
    use anyhow::Context;
    let mut b = reqwest_rustls::Client::builder().timeout(timeout);
    if let Some(p) = ca_file {
        let pem = std::fs::read(p).with_context(|| format!("--ca-file {}", p.display()))?;
        for c in
            reqwest_rustls::Certificate::from_pem_bundle(&pem).with_context(|| format!("--ca-file {}", p.display()))?
        {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b.build()?)
}

const BUCKETS: [&str; 11] = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"];

/// One synthetic series: labels plus a value generator.
struct SynthSeries {
    labels: Vec<Label>,
    kind: Kind,
    seed: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    /// Histogram bucket with cumulative share (0..1] of the count.
    Bucket(f64),
    HistSum,
    HistCount,
}

fn labels(pairs: &[(&str, String)]) -> Vec<Label> {
    let mut l: Vec<Label> = pairs.iter().map(|(k, v)| Label { name: k.to_string(), value: v.clone() }).collect();
    l.sort_by(|a, b| a.name.cmp(&b.name));
    l
}

fn hash(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Builds `n` series shaped like a fleet of services: per instance 10
/// request counters, 5 gauges and 2 classic histograms (13 series each).
fn synth_series(n: usize) -> Vec<SynthSeries> {
    let mut out = Vec::with_capacity(n);
    let envs = ["prod", "dev", "qa"];
    let mut inst = 0usize;
    'outer: loop {
        let base = |name: &str| {
            vec![
                ("__name__", name.to_string()),
                ("job", "bench".to_string()),
                ("instance", format!("host-{inst}:9100")),
                ("environment", envs[inst % 3].to_string()),
            ]
        };
        let mut push = |mut l: Vec<(&str, String)>, extra: &[(&'static str, String)], kind: Kind| {
            l.extend(extra.iter().cloned());
            let seed = hash(out.len() as u64);
            out.push(SynthSeries { labels: labels(&l), kind, seed });
            out.len() >= n
        };
        for r in 0..10 {
            let code = if r == 9 { "500" } else { "200" };
            if push(base("http_requests_total"), &[("route", format!("/r{r}")), ("code", code.into())], Kind::Counter) {
                break 'outer;
            }
        }
        for g in 0..5 {
            if push(base("process_memory_bytes"), &[("kind", format!("k{g}"))], Kind::Gauge) {
                break 'outer;
            }
        }
        for r in 0..2 {
            for (j, le) in BUCKETS.iter().enumerate() {
                let share = ((j + 1) as f64 / BUCKETS.len() as f64).powf(0.5);
                if push(
                    base("http_request_duration_seconds_bucket"),
                    &[("route", format!("/r{r}")), ("le", le.to_string())],
                    Kind::Bucket(share),
                ) {
                    break 'outer;
                }
            }
            if push(base("http_request_duration_seconds_sum"), &[("route", format!("/r{r}"))], Kind::HistSum) {
                break 'outer;
            }
            if push(base("http_request_duration_seconds_count"), &[("route", format!("/r{r}"))], Kind::HistCount) {
                break 'outer;
            }
        }
        inst += 1;
    }
    out
}

impl SynthSeries {
    /// Value at step `k` (monotonic for counters and histogram parts).
    fn value(&self, k: u64) -> f64 {
        let rate = (self.seed % 20 + 1) as f64;
        let count = (k as f64 * rate + (hash(self.seed ^ k) % 1000) as f64 / 1000.0).floor();
        match self.kind {
            Kind::Counter => count,
            Kind::Gauge => 1e8 + ((self.seed % 1000) as f64) * 1e5 + ((k as f64) / 7.0).sin() * 1e6,
            Kind::Bucket(share) => (k as f64 * rate * share).floor(),
            Kind::HistSum => k as f64 * rate * 0.137,
            Kind::HistCount => k as f64 * rate,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after ')' start at index 2 (state); utime=14, stime=15 in 1-based numbering.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Generates the data, then sends it in time order from `senders`
/// concurrent senders and reports throughput.
pub async fn write(b: WriteBench) -> anyhow::Result<()> {
    let series = synth_series(b.series);
    let steps = (b.history.as_millis() / b.interval.as_millis().max(1)) as u64;
    let start_ts = b.end_ms.unwrap_or_else(now_ms) - b.history.as_millis() as i64;
    let interval_ms = b.interval.as_millis() as i64;
    let metadata = vec![
        MetricMetadata {
            r#type: metric_metadata::MetricType::Counter as i32,
            metric_family_name: "http_requests_total".into(),
            help: "Requests.".into(),
            unit: String::new(),
        },
        MetricMetadata {
            r#type: metric_metadata::MetricType::Gauge as i32,
            metric_family_name: "process_memory_bytes".into(),
            help: "Memory.".into(),
            unit: "bytes".into(),
        },
        MetricMetadata {
            r#type: metric_metadata::MetricType::Histogram as i32,
            metric_family_name: "http_request_duration_seconds".into(),
            help: "Latency.".into(),
            unit: "seconds".into(),
        },
    ];
    eprintln!(
        "generating {} series × {} steps = {} samples ({} senders, {} samples/request, remote write {})",
        series.len(),
        steps,
        series.len() as u64 * steps,
        b.senders,
        b.batch,
        if b.v2 { "2.0" } else { "1.0" }
    );
    let per = b.samples_per_series.max(1) as u64;
    let rounds = Rounds {
        series: std::sync::Arc::new(series),
        senders: b.senders,
        per,
        series_per_request: (b.batch / per as usize).max(1),
        steps,
        start_ts,
        interval_ms,
        metadata: std::sync::Arc::new(metadata),
        v2: b.v2,
    };
    let n_series = rounds.series.len();
    let n_rounds = steps.div_ceil(per);
    // Pre-encoded (default): every request is built before the clock starts,
    // so the timed phase measures the receiver. Streamed: each sender's
    // requests are built round by round on a thread of their own while it
    // sends (memory bounded by two rounds per sender, whatever the history).
    let mut sources: Vec<tokio::sync::mpsc::Receiver<Round>> = Vec::new();
    if b.stream {
        eprintln!("streaming: requests are generated while sending, senders advance in lockstep rounds");
        for s in 0..b.senders {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let r = rounds.clone();
            std::thread::spawn(move || {
                for k in 0..n_rounds {
                    if tx.blocking_send(r.encode(s, k)).is_err() {
                        return;
                    }
                }
            });
            sources.push(rx);
        }
    } else {
        let gen_start = Instant::now();
        let (mut requests, mut bytes) = (0usize, 0usize);
        for s in 0..b.senders {
            let (tx, rx) = tokio::sync::mpsc::channel(n_rounds as usize + 1);
            for k in 0..n_rounds {
                let round = rounds.encode(s, k);
                requests += round.len();
                bytes += round.iter().map(|(b, _)| b.len()).sum::<usize>();
                tx.try_send(round)?;
            }
            sources.push(rx);
        }
        eprintln!(
            "generated {requests} requests ({} MiB compressed) in {:.1}s; sending",
            bytes >> 20,
            gen_start.elapsed().as_secs_f64()
        );
    }

    let cpu_before: Vec<Option<f64>> = b.pids.iter().map(|p| cpu_seconds(*p)).collect();
    let client = http_client(Duration::from_secs(60), b.ca_file.as_deref())?;
    // Streamed senders wait for each other after every round, so they stay
    // within one round of each other (a backfill far longer than the
    // receiver's appendable window is not refused for a lagging sender).
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(b.senders));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut source in sources {
        let sender = Sender {
            client: client.clone(),
            url: b.url.clone(),
            v2: b.v2,
            headers: b.headers.clone(),
            slow_log: b.slow_log,
        };
        let (lockstep, barrier) = (b.stream, barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while let Some(round) = source.recv().await {
                for (body, n) in round {
                    sender.send(body, n, &mut tally).await;
                }
                if lockstep {
                    barrier.wait().await;
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await?;
        all.ok += t.ok;
        all.rejected += t.rejected;
        all.lat.extend(t.lat);
        all.errors.extend(t.errors);
    }
    let Tally { ok, rejected, lat, errors } = all;
    let secs = start.elapsed().as_secs_f64();
    let cpu: Option<f64> = if b.pids.is_empty() {
        None
    } else {
        b.pids.iter().zip(cpu_before).map(|(p, before)| Some(cpu_seconds(*p)? - before?)).sum::<Option<f64>>()
    };
    println!(
        "bench write: {} samples acknowledged, {} rejected in {:.2}s = {:.0} samples/s; request latency p50 {} p99 {} p99.9 {} max {}{}",
        ok,
        rejected,
        secs,
        ok as f64 / secs,
        ms(quantile_us(&lat, 0.5)),
        ms(quantile_us(&lat, 0.99)),
        ms(quantile_us(&lat, 0.999)),
        ms(quantile_us(&lat, 1.0)),
        cpu.map(|c| format!("; server CPU {:.2}s = {:.3} µs/sample", c, c * 1e6 / ok.max(1) as f64))
            .unwrap_or_default()
    );
    println!(
        "{}",
        serde_json::json!({"bench": "write", "url": b.url, "series": n_series, "samples_ok": ok, "samples_rejected": rejected, "seconds": secs, "samples_per_second": ok as f64 / secs, "p50_ms": quantile_us(&lat, 0.5).as_secs_f64() * 1e3, "p99_ms": quantile_us(&lat, 0.99).as_secs_f64() * 1e3, "p999_ms": quantile_us(&lat, 0.999).as_secs_f64() * 1e3, "max_ms": quantile_us(&lat, 1.0).as_secs_f64() * 1e3, "server_cpu_seconds": cpu})
    );
    for e in errors.iter().take(5) {
        eprintln!("  error: {e}");
    }
    Ok(())
}

/// The encoded requests of one round of one sender, with their sample counts.
type Round = Vec<(Vec<u8>, usize)>;

/// The requests of one `bench write`, cut in rounds: round `k` of sender
/// `s` carries samples `k·per .. (k+1)·per` of the series `i` with
/// `i % senders == s`.
#[derive(Clone)]
struct Rounds {
    series: std::sync::Arc<Vec<SynthSeries>>,
    senders: usize,
    per: u64,
    series_per_request: usize,
    steps: u64,
    start_ts: i64,
    interval_ms: i64,
    metadata: std::sync::Arc<Vec<MetricMetadata>>,
    v2: bool,
}

impl Rounds {
    /// The encoded requests of round `k` of sender `s`, with their sample counts.
    fn encode(&self, s: usize, k: u64) -> Round {
        let mine: Vec<&SynthSeries> = self.series.iter().skip(s).step_by(self.senders.max(1)).collect();
        let k0 = k * self.per;
        let ks = k0..(k0 + self.per).min(self.steps);
        mine.chunks(self.series_per_request)
            .map(|chunk| {
                let req = WriteRequest {
                    timeseries: chunk
                        .iter()
                        .map(|x| TimeSeries {
                            labels: x.labels.clone(),
                            samples: ks
                                .clone()
                                .map(|k| Sample {
                                    value: x.value(k),
                                    timestamp: self.start_ts + k as i64 * self.interval_ms,
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    metadata: if k0 == 0 { self.metadata.to_vec() } else { Vec::new() },
                };
                let body = if self.v2 { rw::encode_v2(&rw::v1_to_v2(&req)) } else { rw::encode_v1(&req) };
                (body, chunk.len() * ks.clone().count())
            })
            .collect()
    }
}

/// What one sender saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    rejected: u64,
    lat: Vec<u64>,
    errors: Vec<String>,
}

/// One remote-write sender.
struct Sender {
    client: reqwest_rustls::Client,
    url: String,
    v2: bool,
    headers: Vec<(String, String)>,
    slow_log: Option<Duration>,
}

impl Sender {
    /// Sends one request, retrying 5xx, 429 and connection errors like a
    /// real sender; any other 4xx counts its samples as rejected.
    async fn send(&self, body: Vec<u8>, n: usize, tally: &mut Tally) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut rb = self
                .client
                .post(&self.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", if self.v2 { rw::CONTENT_TYPE_V2 } else { rw::CONTENT_TYPE_V1 })
                .header(rw::VERSION_HEADER, if self.v2 { rw::VERSION_2 } else { rw::VERSION_1 })
                .body(body.clone());
            for (k, v) in &self.headers {
                rb = rb.header(k, v);
            }
            let (t, wall) = (Instant::now(), SystemTime::now());
            let r = rb.send().await;
            let took = t.elapsed();
            tally.lat.push(took.as_micros() as u64);
            if self.slow_log.is_some_and(|s| took >= s) {
                let at = wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
                eprintln!("slow request: started {at} ms (Unix), took {} ms", took.as_millis());
            }
            match r {
                Ok(r) if r.status().is_success() => {
                    tally.ok += n as u64;
                    return;
                }
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                    tally.rejected += n as u64;
                    if tally.errors.len() < 3 {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        tally.errors.push(format!("{status}: {}", text.chars().take(200).collect::<String>()));
                    }
                    return;
                }
                _ if attempt < 10 => tokio::time::sleep(Duration::from_millis(100 * attempt)).await,
                Ok(r) => {
                    tally.rejected += n as u64;
                    tally.errors.push(format!("gave up: {}", r.status()));
                    return;
                }
                Err(e) => {
                    tally.rejected += n as u64;
                    tally.errors.push(format!("gave up: {e}"));
                    return;
                }
            }
        }
    }
}

/// Settings of `bench query`.
#[derive(Debug, Clone)]
pub struct QueryBench {
    pub url: String,
    pub queries: Vec<(String, String)>,
    pub range: Duration,
    pub step: Duration,
    pub runs: usize,
    /// One untimed run first.
    pub warmup: bool,
    pub end: Option<f64>,
    /// Sent with every query (e.g. Authorization).
    pub headers: Vec<(String, String)>,
    /// CA certificates (PEM) that verify an https URL.
    pub ca_file: Option<std::path::PathBuf>,
    /// Extra `query_range` parameters.
    pub params: Vec<(String, String)>,
}

/// Parses a query file: one query per line, optionally `name: query`; `#` comments.
pub fn parse_query_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, l)| match l.split_once(": ") {
            Some((name, q)) if !name.contains(['(', '{', ' ']) => (name.to_string(), q.to_string()),
            _ => (format!("q{}", i + 1), l.to_string()),
        })
        .collect()
}

/// Times `query_range` for each query `runs` times (after one untimed
/// warm-up unless `warmup` is false).
pub async fn query(b: QueryBench) -> anyhow::Result<()> {
    let client = http_client(Duration::from_secs(600), b.ca_file.as_deref())?;
    let end = b.end.unwrap_or_else(|| now_ms() as f64 / 1000.0);
    let start = end - b.range.as_secs_f64();
    let base = b.url.trim_end_matches('/');
    println!("{:<28} {:>10} {:>10} {:>10} {:>8}", "query", "median", "p90", "min", "series");
    for (name, q) in &b.queries {
        let mut lat = Vec::new();
        let mut series = 0usize;
        let mut error = None;
        let first_timed = usize::from(b.warmup);
        for run in 0..b.runs + first_timed {
            let t = Instant::now();
            let (start_s, end_s) = (start.to_string(), end.to_string());
            // `series <selector>` and `label_values <name>` time the metadata endpoints.
            let req = if let Some(sel) = q.strip_prefix("series ") {
                client.get(format!("{base}/api/v1/series")).query(&[
                    ("match[]", sel),
                    ("start", start_s.as_str()),
                    ("end", end_s.as_str()),
                ])
            } else if let Some(name) = q.strip_prefix("label_values ") {
                client
                    .get(format!("{base}/api/v1/label/{}/values", name.trim()))
                    .query(&[("start", start_s.as_str()), ("end", end_s.as_str())])
            } else {
                let step_s = b.step.as_secs_f64().to_string();
                let mut form: Vec<(&str, &str)> = vec![
                    ("query", q.as_str()),
                    ("start", start_s.as_str()),
                    ("end", end_s.as_str()),
                    ("step", step_s.as_str()),
                ];
                form.extend(b.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                client.post(format!("{base}/api/v1/query_range")).form(&form)
            };
            let mut req = req;
            for (k, v) in &b.headers {
                req = req.header(k, v);
            }
            let resp = req.send().await;
            let elapsed = t.elapsed();
            match resp {
                Ok(r) => {
                    let status = r.status();
                    let v: serde_json::Value =
                        serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default();
                    if !status.is_success() || v["status"] != "success" {
                        error = Some(format!("{status}: {}", v["error"]));
                        break;
                    }
                    series = v["data"]["result"].as_array().or_else(|| v["data"].as_array()).map(Vec::len).unwrap_or(0);
                }
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
            if run >= first_timed {
                lat.push(elapsed.as_micros() as u64);
            }
        }
        match error {
            Some(e) => println!("{name:<28} error: {e}"),
            None => println!(
                "{:<28} {:>10} {:>10} {:>10} {:>8}",
                name,
                ms(quantile_us(&lat, 0.5)),
                ms(quantile_us(&lat, 0.9)),
                ms(quantile_us(&lat, 0.0)),
                series
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_series_are_unique_sorted_and_monotonic() {
        let s = synth_series(1000);
        assert_eq!(s.len(), 1000);
        let mut keys: Vec<String> = s
            .iter()
            .map(|x| x.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>().join(","))
            .collect();
        for x in &s {
            assert!(x.labels.windows(2).all(|w| w[0].name < w[1].name));
        }
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 1000);
        for x in s.iter().filter(|x| !matches!(x.kind, Kind::Gauge)) {
            assert!((0..50).all(|k| x.value(k) <= x.value(k + 1)));
        }
    }

    #[test]
    fn query_files_parse() {
        let q = parse_query_file("# c\nrate: sum(rate(x[5m]))\n\nup\n");
        assert_eq!(q, vec![("rate".to_string(), "sum(rate(x[5m]))".to_string()), ("q2".to_string(), "up".to_string())]);
    }
}
