//! HTTP traffic against the sample APIs: the weighted endpoint mix, rate
//! presets and incident scenarios (driven through `/admin/faults`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;

use crate::stats::{Recorder, ms};

/// Named traffic patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Constant rate.
    Steady,
    /// Rate wanders between 25% and 100% of the target, in bursts.
    Bursty,
    /// 10% of requests fail (error_rate 0.1 on the target while running).
    Errors,
    /// Latency ×5 on the target for a while (the incident window: by default
    /// the middle third of the run; see `Plan::incident_after_seconds`).
    ProdLatency,
    /// error_rate 0.5 on the target during the incident window.
    QaErrorSpike,
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "steady" => Scenario::Steady,
            "bursty" => Scenario::Bursty,
            "errors" => Scenario::Errors,
            "prod-latency" => Scenario::ProdLatency,
            "qa-error-spike" => Scenario::QaErrorSpike,
            _ => return Err(format!("unknown scenario {s:?}: steady, bursty, errors, prod-latency, qa-error-spike")),
        })
    }
}

/// One target's traffic plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub target: String,
    #[serde(default = "default_env")]
    pub environment: String,
    pub rate: f64,
    #[serde(default = "default_scenario")]
    pub scenario: Scenario,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Incident scenarios: when the incident starts (default: a third into the run).
    #[serde(default)]
    pub incident_after_seconds: Option<f64>,
    /// Incident scenarios: how long it lasts (default: a third of the run).
    #[serde(default)]
    pub incident_seconds: Option<f64>,
}

impl Plan {
    /// (start offset, length) of the incident in a run of `duration`.
    pub fn incident_window(&self, duration: Duration) -> Result<(Duration, Duration), String> {
        let secs = |v: Option<f64>, what: &str| match v {
            None => Ok(duration / 3),
            Some(s) => Duration::try_from_secs_f64(s).map_err(|_| format!("{what} must be ≥ 0 seconds, got {s}")),
        };
        Ok((
            secs(self.incident_after_seconds, "incident_after_seconds")?,
            secs(self.incident_seconds, "incident_seconds")?,
        ))
    }
}

fn default_env() -> String {
    "default".into()
}
fn default_scenario() -> Scenario {
    Scenario::Steady
}
fn default_concurrency() -> usize {
    32
}

/// A scenario file: several targets run at once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub targets: Vec<Plan>,
}

/// The endpoint mix: (weight, method, path).
const MIX: [(u32, &str, &str); 6] = [
    (35, "GET", "/health"),
    (30, "GET", "/api/products"),
    (15, "POST", "/api/orders"),
    (10, "GET", "/api/reports"),
    (5, "POST", "/api/payments"),
    (5, "GET", "/api/search"),
];

fn pick() -> (&'static str, &'static str) {
    let total: u32 = MIX.iter().map(|m| m.0).sum();
    let mut r = rand::rng().random_range(0..total);
    for (w, method, path) in MIX {
        if r < w {
            return (method, path);
        }
        r -= w;
    }
    ("GET", "/health")
}

async fn one_request(client: &reqwest::Client, base: &str) -> (String, Duration) {
    let (method, path) = pick();
    let url = format!("{base}{path}");
    let start = Instant::now();
    let mut rng_vals = {
        let mut r = rand::rng();
        (
            r.random_range(1..=3i64),
            r.random_range(1..=5i64),
            r.random_range(1..=10_000i64),
            r.random_range(5.0..500.0f64),
        )
    };
    let req = match (method, path) {
        ("POST", "/api/orders") => {
            client.post(&url).json(&serde_json::json!({"product_id": rng_vals.0, "quantity": rng_vals.1}))
        }
        ("POST", _) => {
            rng_vals.3 = (rng_vals.3 * 100.0).round() / 100.0;
            client.post(&url).json(&serde_json::json!({"order_id": rng_vals.2, "amount": rng_vals.3}))
        }
        (_, "/api/search") => client.get(&url).query(&[("q", "keyboard")]),
        _ => client.get(&url),
    };
    let status = match req.send().await {
        Ok(r) => {
            let s = r.status().as_u16().to_string();
            let _ = r.bytes().await;
            s
        }
        Err(e) if e.is_timeout() => "timeout".to_string(),
        Err(_) => "connection_error".to_string(),
    };
    (status, start.elapsed())
}

/// Sets the target's faults, retrying for up to a minute while it is not
/// up yet (the demo starts the load generator and the APIs together: one
/// attempt that came too early left qa without its injected errors).
async fn set_faults(client: &reqwest::Client, base: &str, body: serde_json::Value) {
    for attempt in 1..=120 {
        match client.post(format!("{base}/admin/faults")).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                eprintln!("[{base}] faults set: {body}");
                return;
            }
            // An answer other than success will not change by retrying.
            Ok(r) => {
                eprintln!("[{base}] /admin/faults answered {}", r.status());
                return;
            }
            Err(e) if attempt == 120 => eprintln!("[{base}] cannot set faults: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Target rate at `t` into the run.
fn rate_at(plan: &Plan, t: Duration) -> f64 {
    match plan.scenario {
        Scenario::Bursty => {
            // Slow sine between 25% and 100% plus random spikes.
            let s = (t.as_secs_f64() / 20.0 * std::f64::consts::TAU).sin() * 0.5 + 0.5;
            plan.rate * (0.25 + 0.75 * s)
        }
        _ => plan.rate,
    }
}

/// Runs one plan for `duration`; returns its recorder.
pub async fn run_plan(plan: Plan, duration: Duration, progress: Arc<Mutex<Recorder>>) -> Recorder {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
    let base = plan.target.trim_end_matches('/').to_string();
    match plan.scenario {
        Scenario::Errors => {
            set_faults(
                &client,
                &base,
                serde_json::json!({"error_rate": 0.1, "duration_seconds": duration.as_secs_f64()}),
            )
            .await
        }
        Scenario::ProdLatency | Scenario::QaErrorSpike => {
            // Validated when the plan was read (main.rs).
            let (after, length) = plan.incident_window(duration).unwrap_or((duration / 3, duration / 3));
            let (c, b) = (client.clone(), base.clone());
            let body = if plan.scenario == Scenario::ProdLatency {
                serde_json::json!({"latency_multiplier": 5.0, "duration_seconds": length.as_secs_f64()})
            } else {
                serde_json::json!({"error_rate": 0.5, "duration_seconds": length.as_secs_f64()})
            };
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                eprintln!("[{b}] incident starts for {}s", length.as_secs());
                set_faults(&c, &b, body).await;
            });
        }
        _ => {}
    }
    let start = Instant::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(plan.concurrency));
    let local = Arc::new(Mutex::new(Recorder::default()));
    let mut next = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    while start.elapsed() < duration {
        let rate = rate_at(&plan, start.elapsed()).max(0.1);
        next += Duration::from_secs_f64(1.0 / rate);
        tokio::time::sleep_until(next.into()).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            local.lock().unwrap_or_else(|p| p.into_inner()).record("skipped_concurrency_limit", Duration::ZERO);
            continue;
        };
        let (c, b, l, p) = (client.clone(), base.clone(), local.clone(), progress.clone());
        tasks.spawn(async move {
            let (status, latency) = one_request(&c, &b).await;
            l.lock().unwrap_or_else(|p| p.into_inner()).record(&status, latency);
            p.lock().unwrap_or_else(|p| p.into_inner()).record(&status, latency);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}

    local.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Runs all plans concurrently with a live progress line and prints a summary per target.
pub async fn run_all(plans: Vec<Plan>, duration: Duration) -> anyhow::Result<()> {
    let progress = Arc::new(Mutex::new(Recorder::default()));
    let start = Instant::now();
    let ticker = {
        let p = progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let r = p.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let el = start.elapsed().as_secs_f64();
                eprint!(
                    "\r{:>5.0}s  requests {:>7}  rate {:>6.1}/s  errors {:>5}  p95 {:>8}   ",
                    el,
                    r.count(),
                    r.count() as f64 / el.max(0.001),
                    r.errors(),
                    ms(r.quantile(0.95))
                );
            }
        })
    };
    let mut handles = Vec::new();
    for plan in plans {
        let p = progress.clone();
        let label = format!("{} ({}, {:?}, {} rps)", plan.target, plan.environment, plan.scenario, plan.rate);
        handles.push((label, tokio::spawn(run_plan(plan, duration, p))));
    }
    let mut total = Recorder::default();
    let mut summaries = Vec::new();
    for (label, h) in handles {
        let r = h.await?;
        total.merge(&r);
        summaries.push((label, r));
    }
    ticker.abort();
    eprintln!();
    let secs = start.elapsed().as_secs_f64();
    for (label, r) in summaries.iter().chain(std::iter::once(&("total".to_string(), total.clone()))) {
        println!(
            "{label}\n  requests {}  achieved {:.1}/s  p50 {}  p95 {}  p99 {}\n  status {}",
            r.count(),
            r.count() as f64 / secs,
            ms(r.quantile(0.5)),
            ms(r.quantile(0.95)),
            ms(r.quantile(0.99)),
            r.statuses.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}

/// The preset for an environment name when `--rate` is not given.
pub fn default_rate(scenario: Scenario) -> f64 {
    match scenario {
        Scenario::Steady | Scenario::ProdLatency => 50.0,
        Scenario::Bursty => 20.0,
        Scenario::Errors | Scenario::QaErrorSpike => 10.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target that comes up after the load generator still gets its faults.
    #[tokio::test]
    async fn faults_are_set_on_a_target_that_starts_late() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let setter =
            tokio::spawn(async move { set_faults(&client, &base, serde_json::json!({"error_rate": 0.1})).await });
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let app = axum::Router::new().route(
            "/admin/faults",
            axum::routing::post(move |body: String| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(body);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the port again");
        tokio::spawn(async move { axum::serve(listener, app).await });
        tokio::time::timeout(Duration::from_secs(10), setter).await.expect("set_faults returns").expect("task");
        let got = rx.try_recv().expect("the faults reached the target");
        assert!(got.contains("error_rate"), "{got}");
    }

    #[test]
    fn mix_has_the_documented_weights() {
        let total: u32 = MIX.iter().map(|m| m.0).sum();
        assert_eq!(total, 100);
        let mut n = std::collections::HashMap::new();
        for _ in 0..20_000 {
            *n.entry(pick().1).or_insert(0u32) += 1;
        }
        let share = |p: &str| n[p] as f64 / 20_000.0;
        assert!((share("/api/products") - 0.30).abs() < 0.02);
        assert!((share("/api/payments") - 0.05).abs() < 0.01);
    }

    #[test]
    fn incident_window_defaults_to_the_middle_third_and_rejects_negative_times() {
        let mut plan: Plan =
            serde_yaml::from_str("{target: 'http://x', rate: 5, scenario: prod-latency}").expect("plan");
        let run = Duration::from_secs(90);
        assert_eq!(plan.incident_window(run), Ok((Duration::from_secs(30), Duration::from_secs(30))));
        plan = serde_yaml::from_str(
            "{target: 'http://x', rate: 5, scenario: prod-latency, incident_after_seconds: 60, incident_seconds: 600}",
        )
        .expect("plan");
        assert_eq!(plan.incident_window(run), Ok((Duration::from_secs(60), Duration::from_secs(600))));
        plan.incident_after_seconds = Some(-1.0);
        assert!(plan.incident_window(run).unwrap_err().contains("incident_after_seconds"));
    }

    #[test]
    fn bursty_stays_between_quarter_and_full_rate() {
        let plan = Plan {
            target: "http://x".into(),
            environment: "dev".into(),
            rate: 20.0,
            scenario: Scenario::Bursty,
            concurrency: 4,
            incident_after_seconds: None,
            incident_seconds: None,
        };
        for s in 0..60 {
            let r = rate_at(&plan, Duration::from_secs(s));
            assert!((5.0..=20.0).contains(&r), "{r}");
        }
    }
}
