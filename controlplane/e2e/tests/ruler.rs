//! `strata ruler` against the real thing: the same rule file and the same
//! remote-written data in Debian's Prometheus (rule evaluation on) and in
//! Strata (two ruler replicas writing back into the ingesters), recording
//! series, `ALERTS` and `/api/v1/alerts` compared; Debian's Alertmanager
//! with a webhook receiver run by the test; the `for` state across a ruler
//! restart; `strata ruler test` against `promtool test rules`; the
//! Cortex/Mimir rule configuration API with two replicas and two tenants.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controlplane_e2e::*;
use serde_json::Value;

const INTERVAL: Duration = Duration::from_secs(2);

fn rules_yaml() -> String {
    r#"groups:
- name: red
  interval: 2s
  rules:
  - record: env:http_requests:rate30s
    expr: sum by (env) (rate(http_requests_total[30s]))
  - record: env:http_errors:ratio30s
    expr: sum by (env) (rate(http_requests_total{code="500"}[30s])) / sum by (env) (rate(http_requests_total[30s]))
  - record: env:latency_seconds:p95
    expr: histogram_quantile(0.95, sum by (env, le) (rate(http_request_duration_seconds_bucket[30s])))
  - record: env:http_errors:increase30s
    expr: increase(http_requests_total{code="500"}[30s])
    labels:
      source: rules
- name: alerts
  interval: 2s
  rules:
  - alert: HighTemperature
    expr: temperature > 50
    for: 6s
    keep_firing_for: 4s
    labels:
      severity: page
      where: 'room {{ $labels.room }}'
    annotations:
      summary: 'Room {{ $labels.room }} is at {{ $value }} degrees'
      description: '{{ $value | humanize }} > 50 ({{ printf "%.1f" $value }}, {{ $labels.room | toUpper }})'
  - alert: ErrorRatio
    expr: env:http_errors:ratio30s > 0.05
    labels:
      severity: ticket
    annotations:
      summary: 'error ratio {{ $value | humanizePercentage }} in {{ $labels.env }}'
"#
    .to_string()
}

/// One second apart at `frac` ms past each second, from `start` (ms) for
/// `secs` seconds: counters with a reset, classic histogram buckets, and a
/// temperature above 50 in room a from +630 s to +670 s.
fn data(start: i64, secs: i64, reset_at: i64, hot: (i64, i64)) -> SeriesData {
    let mut out: SeriesData = Vec::new();
    let ts: Vec<i64> = (0..secs).map(|k| start + k * 1000).collect();
    let counter = |per_s: f64, reset: bool| -> Vec<(i64, f64)> {
        ts.iter()
            .enumerate()
            .map(|(k, t)| {
                let since = if reset && *t >= reset_at { (t - reset_at) / 1000 } else { k as i64 };
                (*t, per_s * since as f64)
            })
            .collect()
    };
    out.push((labels(&[("__name__", "http_requests_total"), ("env", "prod"), ("code", "200")]), counter(10.0, true)));
    out.push((labels(&[("__name__", "http_requests_total"), ("env", "prod"), ("code", "500")]), counter(1.0, false)));
    out.push((labels(&[("__name__", "http_requests_total"), ("env", "dev"), ("code", "200")]), counter(3.0, false)));
    for (le, per_s) in [("0.1", 5.0), ("0.5", 8.0), ("1", 9.5), ("+Inf", 10.0)] {
        out.push((
            labels(&[("__name__", "http_request_duration_seconds_bucket"), ("env", "prod"), ("le", le)]),
            counter(per_s, false),
        ));
    }
    let temp = |room: &str, hot_range: Option<(i64, i64)>| -> Vec<(i64, f64)> {
        let _ = room;
        ts.iter().map(|t| (*t, if hot_range.is_some_and(|(a, b)| *t >= a && *t < b) { 80.0 } else { 20.0 })).collect()
    };
    out.push((labels(&[("__name__", "temperature"), ("room", "a")]), temp("a", Some(hot))));
    out.push((labels(&[("__name__", "temperature"), ("room", "b")]), temp("b", None)));
    out
}

/// Raw samples of every series `selector` matches over the last `range`:
/// series (labels as text) → (time ms, value).
async fn raw(base: &str, selector: &str, range: &str, tenant: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let client = reqwest::Client::new();
    let now = now_ms() as f64 / 1000.0;
    let r: Value = client
        .get(format!("{base}/api/v1/query"))
        .header("X-Scope-OrgID", tenant)
        .query(&[("query", format!("{selector}[{range}]")), ("time", format!("{now}"))])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    let mut out = BTreeMap::new();
    for s in r["data"]["result"].as_array().cloned().unwrap_or_default() {
        let mut m: Vec<(String, String)> = s["metric"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        m.sort();
        let key = format!("{m:?}");
        let vals = s["values"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64,
                            p[1].as_str().unwrap_or("").parse::<f64>().unwrap_or(f64::NAN),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(key, vals);
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Every series in both with at least `min_common` shared timestamps, equal
/// values there, and no timestamp of one inside the other's span that the
/// other lacks (the same evaluation grid).
fn assert_same_series(
    what: &str,
    strata: &BTreeMap<String, Vec<(i64, f64)>>,
    prom: &BTreeMap<String, Vec<(i64, f64)>>,
    min_common: usize,
) {
    assert_eq!(strata.keys().collect::<Vec<_>>(), prom.keys().collect::<Vec<_>>(), "{what}: the same series");
    for (k, s) in strata {
        let p = &prom[k];
        let pm: BTreeMap<i64, f64> = p.iter().cloned().collect();
        let sm: BTreeMap<i64, f64> = s.iter().cloned().collect();
        let common: Vec<i64> = sm.keys().filter(|t| pm.contains_key(t)).cloned().collect();
        assert!(
            common.len() >= min_common,
            "{what} {k}: {} common timestamps\nstrata {s:?}\nprometheus {p:?}",
            common.len()
        );
        for t in &common {
            assert!(close(sm[t], pm[t]), "{what} {k} at {t}: strata {} prometheus {}", sm[t], pm[t]);
        }
        let (lo, hi) = (*common.first().unwrap_or(&0), *common.last().unwrap_or(&0));
        let off_grid: Vec<i64> = sm
            .keys()
            .chain(pm.keys())
            .filter(|t| **t >= lo && **t <= hi && !(sm.contains_key(t) && pm.contains_key(t)))
            .cloned()
            .collect();
        assert!(off_grid.is_empty(), "{what} {k}: timestamps of only one system inside the common span: {off_grid:?}");
    }
}

/// `/api/v1/alerts`, comparable: labels, annotations, state, activeAt to
/// the millisecond (Prometheus prints nanoseconds), value.
async fn alerts(base: &str) -> Vec<(String, String, String, String, f64)> {
    let r: Value = reqwest::get(format!("{base}/api/v1/alerts")).await.expect("alerts").json().await.expect("json");
    let mut out: Vec<_> = r["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let at = a["activeAt"].as_str().unwrap_or_default().trim_end_matches('Z').to_string();
            let (sec, frac) = at.split_once('.').unwrap_or((&at, ""));
            let ms = format!("{sec}.{:0<3}", &frac[..frac.len().min(3)]);
            (
                a["labels"].to_string(),
                a["annotations"].to_string(),
                a["state"].as_str().unwrap_or_default().to_string(),
                ms,
                a["value"].as_str().unwrap_or("NaN").parse::<f64>().unwrap_or(f64::NAN),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A webhook receiver for Alertmanager: every POSTed JSON body.
async fn webhook() -> (u16, Arc<Mutex<Vec<Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf[end + 4..end + 4 + len]) {
                        sink.lock().unwrap().push(v);
                    }
                    let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                    buf.drain(..end + 4 + len);
                }
            });
        }
    });
    (port, got)
}

struct Alertmanager {
    _proc: Proc,
    port: u16,
}

async fn start_alertmanager(dir: &Path, hook_port: u16) -> Alertmanager {
    let port = free_port();
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(
        &cfg,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n- name: hook\n  webhook_configs:\n  - url: http://127.0.0.1:{hook_port}/hook\n    send_resolved: true\n"
        ),
    )
    .expect("alertmanager.yml");
    let args = vec![
        format!("--config.file={}", cfg.display()),
        format!("--storage.path={}", dir.join("am-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    let proc = Proc::start("alertmanager", Path::new("prometheus-alertmanager"), &args, &[], dir);
    wait_ready(&format!("http://127.0.0.1:{port}/-/ready"), Duration::from_secs(30)).await;
    Alertmanager { _proc: proc, port }
}

fn start_ruler(dir: &Path, name: &str, rules: &Path, node: &Node, extra: &[String]) -> (Proc, u16) {
    start_ruler_at(dir, name, rules, node, extra, free_port())
}

fn start_ruler_at(dir: &Path, name: &str, rules: &Path, node: &Node, extra: &[String], port: u16) -> (Proc, u16) {
    let mut args = vec![
        "ruler".to_string(),
        format!("--rule.files={}", rules.display()),
        format!("--endpoint={}", node.grpc_addr()),
        format!("--remote-write.url={}", node.write_url()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--evaluation-interval=2s".to_string(),
        format!("--objstore.path={}", dir.join("rules-bucket").display()),
    ];
    args.extend(extra.iter().cloned());
    (Proc::start(name, &bin("strata"), &args, &[], dir), port)
}

/// Data timestamps at a millisecond past the second that no group's
/// evaluation time has, so Prometheus 2's closed range windows and
/// Strata's (Prometheus 3's) left-open ones select the same samples.
fn data_fraction(rules: &Path) -> i64 {
    let file = rules.display().to_string();
    let fracs: Vec<i64> = ["red", "alerts"]
        .iter()
        .map(|g| strata_ruler::group::eval_timestamp(&file, g, INTERVAL, 0).rem_euclid(1_000_000_000) / 1_000_000)
        .collect();
    [100, 350, 600, 850].into_iter().find(|f: &i64| fracs.iter().all(|g| (g - f).abs() > 20)).unwrap_or(475)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_agree_with_prometheus_and_alertmanager_hears_each_alert_once() {
    if !require("prometheus") || !require("prometheus-alertmanager") {
        return;
    }
    let dir = test_dir();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, rules_yaml()).unwrap();
    let rules = rules.canonicalize().unwrap();

    let mut cluster = Cluster::start(dir.path(), 1, &[]).await;
    cluster.wait_leader(None, Duration::from_secs(30)).await;
    let node = cluster.node(1);
    let prom_port = free_port();
    let prom = dataplane_e2e::Prometheus::start_with_config(
        dir.path(),
        prom_port,
        &format!("global:\n  evaluation_interval: 2s\nrule_files:\n  - {}\n", rules.display()),
    )
    .await;

    // Ten minutes of history and two and a half of future, written up
    // front into both, so each evaluation reads identical data.
    let frac = data_fraction(&rules);
    let s = (now_ms() / 1000) * 1000 + frac;
    let start = s - 600_000;
    let series = data(start, 750, s + 10_000, (s + 30_000, s + 70_000));
    let client = reqwest::Client::new();
    write_series(&client, &node.write_url(), &series).await;
    write_series(&client, &prom.write_url(), &series).await;

    let (hook_port, hooks) = webhook().await;
    let am = start_alertmanager(dir.path(), hook_port).await;
    let am_url = format!("--alertmanager.url=http://127.0.0.1:{}", am.port);
    let (_r1, p1) = start_ruler(dir.path(), "ruler-1", &rules, node, std::slice::from_ref(&am_url));
    let (mut r2, p2) = start_ruler(dir.path(), "ruler-2", &rules, node, std::slice::from_ref(&am_url));
    for p in [p1, p2] {
        wait_ready(&format!("http://127.0.0.1:{p}/-/ready"), Duration::from_secs(30)).await;
    }
    let querier = Querier::start(
        dir.path(),
        &[node.grpc_addr()],
        &[&format!("--ruler.url=http://127.0.0.1:{p1}"), &format!("--ruler.url=http://127.0.0.1:{p2}")],
    )
    .await;

    // While HighTemperature fires (steady from +40 s to +70 s), both
    // systems report the same alerts.
    let at = s + 50_000 - now_ms();
    tokio::time::sleep(Duration::from_millis(at.max(0) as u64)).await;
    let ruler_base = format!("http://127.0.0.1:{p1}");
    let mut same = false;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        ours = alerts(&ruler_base).await;
        theirs = alerts(&prom.base()).await;
        same = ours.len() == theirs.len()
            && ours
                .iter()
                .zip(&theirs)
                // ErrorRatio is active from the start: its activeAt is when each
                // system first evaluated it. HighTemperature became active
                // after both had started.
                .all(|(a, b)| {
                    let same_since = a.3 == b.3 || !a.0.contains("HighTemperature");
                    a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && same_since && close(a.4, b.4)
                });
        if same {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(same, "/api/v1/alerts differ:\nstrata     {ours:#?}\nprometheus {theirs:#?}");
    assert!(ours.iter().any(|a| a.0.contains("HighTemperature") && a.2 == "firing"), "{ours:?}");
    assert!(ours.iter().any(|a| a.0.contains("ErrorRatio") && a.2 == "firing"), "{ours:?}");

    // A replica restarts while both alerts fire: it restores HighTemperature's
    // `for` state from ALERTS_FOR_STATE, fires it again and re-sends both
    // alerts. Alertmanager has them already: the webhook hears nothing new
    // (checked below with the notification counts).
    r2.kill9();
    let restarted_flags = [am_url.clone(), "--rules.alert.for-grace-period=1s".to_string()];
    let (_r2, _) = start_ruler_at(dir.path(), "ruler-2-restarted", &rules, node, &restarted_flags, p2);
    wait_ready(&format!("http://127.0.0.1:{p2}/-/ready"), Duration::from_secs(30)).await;
    let restarted_base = format!("http://127.0.0.1:{p2}");
    wait_for(Duration::from_secs(15), "the restarted replica firing and re-sending HighTemperature", || async {
        let firing = alerts(&restarted_base).await.iter().any(|a| a.0.contains("HighTemperature") && a.2 == "firing");
        let metrics = reqwest::get(format!("{restarted_base}/metrics")).await.ok()?.text().await.ok()?;
        let sent: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("strata_ruler_notifications_sent_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (firing && sent >= 2.0).then_some(())
    })
    .await;

    // Past the resolution (+70 s, kept firing 4 s more) and its notification.
    let at = s + 90_000 - now_ms();
    tokio::time::sleep(Duration::from_millis(at.max(0) as u64)).await;

    let recorded_strata = raw(&querier.base(), "{__name__=~\"env:.+\"}", "3m", "anonymous").await;
    let recorded_prom = raw(&prom.base(), "{__name__=~\"env:.+\"}", "3m", "anonymous").await;
    assert_eq!(recorded_strata.len(), 5, "{recorded_strata:?}");
    assert_same_series("recording rules", &recorded_strata, &recorded_prom, 20);
    // ALERTS_FOR_STATE holds activeAt: compared for the alert that became
    // active after both systems started.
    for name in ["ALERTS", "ALERTS_FOR_STATE{alertname=\"HighTemperature\"}"] {
        let ours = raw(&querier.base(), name, "3m", "anonymous").await;
        let theirs = raw(&prom.base(), name, "3m", "anonymous").await;
        assert!(ours.keys().any(|k| k.contains("HighTemperature")), "{name}: {ours:?}");
        assert_same_series(name, &ours, &theirs, 3);
    }

    // Both replicas evaluated every rule and wrote the same samples, the
    // second copy taken as the duplicate it is.
    for p in [p1, p2] {
        let r: Value = reqwest::get(format!("http://127.0.0.1:{p}/api/v1/rules")).await.unwrap().json().await.unwrap();
        for g in r["data"]["groups"].as_array().unwrap() {
            for rule in g["rules"].as_array().unwrap() {
                assert_eq!(rule["health"], "ok", "ruler :{p} {rule}");
            }
        }
    }
    // The querier serves the rules of both rulers.
    let r: Value =
        reqwest::get(format!("{}/api/v1/rules?type=alert", querier.base())).await.unwrap().json().await.unwrap();
    assert_eq!(r["data"]["groups"].as_array().map(Vec::len), Some(2), "{r}");
    let r: Value =
        reqwest::get(format!("{}/api/v1/rules?type=nonsense", querier.base())).await.unwrap().json().await.unwrap();
    assert_eq!(r["errorType"], "bad_data", "{r}");

    // Alertmanager told the webhook once that HighTemperature fires and
    // once that it resolved (with endsAt), although two rulers sent it
    // every evaluation and one of them restarted and sent it again.
    let hooks = hooks.lock().unwrap().clone();
    let high: Vec<&Value> = hooks.iter().filter(|h| h["groupLabels"]["alertname"] == "HighTemperature").collect();
    let firing: Vec<_> = high.iter().filter(|h| h["status"] == "firing").collect();
    let resolved: Vec<_> = high.iter().filter(|h| h["status"] == "resolved").collect();
    assert_eq!((firing.len(), resolved.len()), (1, 1), "webhook calls: {high:#?}");
    let a = &firing[0]["alerts"][0];
    assert_eq!(firing[0]["alerts"].as_array().map(Vec::len), Some(1));
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["labels"]["where"], "room a");
    assert_eq!(a["annotations"]["summary"], "Room a is at 80 degrees");
    assert_eq!(a["annotations"]["description"], "80 > 50 (80.0, A)");
    let r = &resolved[0]["alerts"][0];
    assert_eq!(r["status"], "resolved");
    assert!(!r["endsAt"].as_str().unwrap_or("0001").starts_with("0001"), "{r}");
    assert!(hooks.iter().any(|h| h["groupLabels"]["alertname"] == "ErrorRatio"), "{hooks:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_for_state_survives_a_ruler_restart() {
    let dir = test_dir();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: slow\n  interval: 1s\n  rules:\n  - alert: Hot\n    expr: temperature > 50\n    for: 20s\n",
    )
    .unwrap();
    let mut cluster = Cluster::start(dir.path(), 1, &[]).await;
    cluster.wait_leader(None, Duration::from_secs(30)).await;
    let node = cluster.node(1);
    let s = (now_ms() / 1000) * 1000 + 500;
    let hot = |t: i64| if t >= s + 4_000 { 80.0 } else { 20.0 };
    let series: SeriesData = vec![(
        labels(&[("__name__", "temperature"), ("room", "a")]),
        (-300..120).map(|k| (s + k * 1000, hot(s + k * 1000))).collect(),
    )];
    write_series(&reqwest::Client::new(), &node.write_url(), &series).await;
    let flags = ["--rules.alert.for-grace-period=1s".to_string()];
    let (mut r1, p1) = start_ruler(dir.path(), "ruler-a", &rules, node, &flags);
    let state = |p: u16| async move {
        let r: Value = reqwest::get(format!("http://127.0.0.1:{p}/api/v1/alerts")).await.ok()?.json().await.ok()?;
        r["data"]["alerts"].as_array()?.first().map(|a| a["state"].as_str().unwrap_or_default().to_string())
    };
    // Pending for about 12 of its 20 seconds, then the ruler is killed.
    let pending =
        wait_for(Duration::from_secs(30), "the alert pending", || async { state(p1).await.filter(|s| s == "pending") })
            .await;
    assert_eq!(pending, "pending");
    tokio::time::sleep(Duration::from_millis((s + 16_000 - now_ms()).max(0) as u64)).await;
    r1.kill9();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarted = now_ms();
    let (_r2, p2) = start_ruler(dir.path(), "ruler-b", &rules, node, &flags);
    wait_for(Duration::from_secs(60), "the alert firing after the restart", || async {
        state(p2).await.filter(|s| s == "firing")
    })
    .await;
    let took = now_ms() - restarted;
    // Without the restore it would fire 20 s (plus the first evaluations)
    // after the restart; with it, the ~8 s it still had to wait.
    assert!(took < 16_000, "fired {took} ms after the restart: the pending time before it was lost");
    assert!(took >= 6_000, "fired {took} ms after the restart: sooner than the remaining pending time");
}

#[test]
fn strata_ruler_test_agrees_with_promtool() {
    if !require("promtool") {
        return;
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rule-tests");
    for case in ["pass.test.yml", "fail.test.yml", "bad-rules.test.yml"] {
        let run = |program: &Path, args: &[&str]| {
            let out =
                std::process::Command::new(program).args(args).arg(case).current_dir(&here).output().expect("run");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ours_code, ours, ours_err) = run(&bin("strata"), &["ruler", "test"]);
        let (theirs_code, theirs, theirs_err) = run(Path::new("promtool"), &["test", "rules"]);
        assert_eq!(
            ours_code, theirs_code,
            "{case}: exit codes\nstrata:\n{ours}{ours_err}\npromtool:\n{theirs}{theirs_err}"
        );
        assert_eq!(ours, theirs, "{case}: standard output");
        if case == "bad-rules.test.yml" {
            // promtool adds the line and column, which Strata's YAML reader does not give.
            for s in [&ours_err, &theirs_err] {
                assert!(s.contains("group \"broken\", rule 1, \"job:bad\": could not parse expression"), "{s}");
            }
        } else {
            assert_eq!(ours_err, theirs_err, "{case}: standard error");
        }
    }
}

/// Sends one request to a ruler's configuration API as `tenant`.
async fn rules_api(method: reqwest::Method, url: &str, tenant: &str, body: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().request(method, url).header("X-Scope-OrgID", tenant);
    if let Some(b) = body {
        req = req.header("Content-Type", "application/yaml").body(b.to_string());
    }
    let r = req.send().await.expect("ruler API");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// The group names `/api/v1/rules` (Prometheus' JSON) reports for `tenant`.
async fn running_groups(port: u16, tenant: &str) -> Vec<(String, String)> {
    let r: Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/rules"))
        .header("X-Scope-OrgID", tenant)
        .send()
        .await
        .expect("rules")
        .json()
        .await
        .expect("rules JSON");
    r["data"]["groups"]
        .as_array()
        .map(|gs| {
            gs.iter()
                .map(|g| (g["file"].as_str().unwrap_or("").to_string(), g["name"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_groups_uploaded_through_the_api_run_per_tenant_on_every_replica() {
    let dir = test_dir();
    let limits = dir.path().join("limits.yml");
    std::fs::write(
        &limits,
        "tenants:\n  team-a: {ruler_max_rule_groups_per_tenant: 1, ruler_max_rules_per_rule_group: 2, ruler_min_evaluation_interval: 1s}\n",
    )
    .unwrap();
    let mut cluster = Cluster::start(dir.path(), 1, &[]).await;
    cluster.wait_leader(None, Duration::from_secs(30)).await;
    let node = cluster.node(1);
    let client = reqwest::Client::new();
    let s = now_ms();
    let series: SeriesData = vec![(
        labels(&[("__name__", "temperature"), ("room", "a")]),
        (-60..120).map(|k| (s + k * 1000, 21.0)).collect(),
    )];
    for tenant in ["team-a", "team-b"] {
        assert!(matches!(remote_write(&client, &node.write_url(), tenant, &series).await.0, 200 | 204));
    }
    let no_files = dir.path().join("none-*.yml");
    let flags = |poll: &str| {
        vec![format!("--limits.overrides-file={}", limits.display()), format!("--rule.storage.poll-interval={poll}")]
    };
    let (_a, pa) = start_ruler(dir.path(), "ruler-a", &no_files, node, &flags("1h"));
    let (_b, pb) = start_ruler(dir.path(), "ruler-b", &no_files, node, &flags("1s"));
    for p in [pa, pb] {
        wait_ready(&format!("http://127.0.0.1:{p}/-/ready"), Duration::from_secs(30)).await;
    }
    let a = |path: &str| format!("http://127.0.0.1:{pa}{path}");
    use reqwest::Method;

    // Bad uploads: 400 with the reason.
    let (st, body) = rules_api(Method::POST, &a("/api/v1/rules/ns1"), "team-a", Some("name: [oops")).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("not a rule group"), "{body}");
    let bad_expr = "name: g\nrules:\n- record: x\n  expr: sum(\n";
    let (st, body) = rules_api(Method::POST, &a("/api/v1/rules/ns1"), "team-a", Some(bad_expr)).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("ns1") && body.contains("x"), "names the namespace and rule: {body}");
    let too_often = "name: g\ninterval: 500ms\nrules:\n- record: x\n  expr: up\n";
    let (st, body) = rules_api(Method::POST, &a("/api/v1/rules/ns1"), "team-a", Some(too_often)).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("ruler_min_evaluation_interval"), "{body}");
    let too_many = "name: g\nrules:\n- record: x\n  expr: up\n- record: y\n  expr: up\n- record: z\n  expr: up\n";
    let (st, body) = rules_api(Method::POST, &a("/api/v1/rules/ns1"), "team-a", Some(too_many)).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("ruler_max_rules_per_rule_group"), "{body}");

    // A good group for team-a, through Mimir's route, in a namespace with a slash.
    let group = "name: doubled\ninterval: 1s\nrules:\n- record: temperature:doubled\n  expr: temperature * 2\n";
    let (st, body) = rules_api(Method::POST, &a("/prometheus/config/v1/rules/team%2Fa"), "team-a", Some(group)).await;
    assert_eq!(st, 202, "{body}");
    let second = "name: other\nrules:\n- record: other\n  expr: up\n";
    let (st, body) = rules_api(Method::POST, &a("/api/v1/rules/ns2"), "team-a", Some(second)).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("ruler_max_rule_groups_per_tenant"), "{body}");
    // Replacing the one group is not a second one.
    let (st, body) = rules_api(Method::POST, &a("/api/v1/rules/team%2Fa"), "team-a", Some(group)).await;
    assert_eq!(st, 202, "{body}");

    // Listing: the group for team-a, nothing for team-b.
    let (st, body) = rules_api(Method::GET, &a("/api/v1/rules/team%2Fa"), "team-a", None).await;
    assert_eq!(st, 200, "{body}");
    let listed: BTreeMap<String, Vec<Value>> = serde_yaml::from_str(&body).expect("YAML namespace");
    assert_eq!(listed["team/a"][0]["name"], "doubled", "{body}");
    assert_eq!(listed["team/a"][0]["rules"][0]["expr"], "temperature * 2", "{body}");
    let (st, body) = rules_api(Method::GET, &a("/api/v1/rules/team%2Fa/doubled"), "team-a", None).await;
    assert_eq!(st, 200, "{body}");
    let g: Value = serde_yaml::from_str(&body).expect("YAML group");
    assert_eq!(g["interval"], "1s", "{body}");
    let (st, body) = rules_api(Method::GET, &a("/prometheus/config/v1/rules"), "team-a", None).await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("team/a") && body.contains("doubled"), "{body}");
    assert_eq!(rules_api(Method::GET, &a("/api/v1/rules/team%2Fa"), "team-b", None).await.0, 404);
    assert_eq!(rules_api(Method::GET, &a("/api/v1/rules/team%2Fa/doubled"), "team-b", None).await.0, 404);
    let (st, body) = rules_api(Method::GET, &a("/prometheus/config/v1/rules"), "team-b", None).await;
    assert_eq!((st, body.trim()), (200, "{}"));
    assert_eq!(rules_api(Method::DELETE, &a("/api/v1/rules/team%2Fa/doubled"), "team-b", None).await.0, 404);

    // Both replicas run it for team-a only: replica A at once, B at its poll.
    let want = vec![("team/a".to_string(), "doubled".to_string())];
    assert_eq!(running_groups(pa, "team-a").await, want);
    wait_for(Duration::from_secs(20), "replica B running the uploaded group", || async {
        (running_groups(pb, "team-a").await == want).then_some(())
    })
    .await;
    assert!(running_groups(pa, "team-b").await.is_empty());
    assert!(running_groups(pb, "team-b").await.is_empty());
    let recorded = wait_for(Duration::from_secs(30), "temperature:doubled written for team-a", || async {
        let got = read_series(&node.grpc_addr(), "team-a", "temperature:doubled").await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert!(recorded.values().flatten().all(|(_, v)| *v == 42.0), "{recorded:?}");
    assert!(read_series(&node.grpc_addr(), "team-b", "temperature:doubled").await.is_empty());

    // Deleting stops it on both replicas.
    let (st, body) = rules_api(Method::DELETE, &a("/api/v1/rules/team%2Fa/doubled"), "team-a", None).await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(rules_api(Method::GET, &a("/api/v1/rules/team%2Fa/doubled"), "team-a", None).await.0, 404);
    assert!(running_groups(pa, "team-a").await.is_empty());
    wait_for(Duration::from_secs(20), "replica B dropping the deleted group", || async {
        running_groups(pb, "team-a").await.is_empty().then_some(())
    })
    .await;
    // Now a group in another namespace fits the limit; deleting the namespace removes it.
    assert_eq!(rules_api(Method::POST, &a("/api/v1/rules/ns2"), "team-a", Some(second)).await.0, 202);
    assert_eq!(rules_api(Method::DELETE, &a("/api/v1/rules/ns2"), "team-a", None).await.0, 202);
    assert_eq!(rules_api(Method::GET, &a("/api/v1/rules/ns2"), "team-a", None).await.0, 404);

    // Through the querier (--ruler.url), as Grafana and mimirtool use it.
    let ruler_url = format!("--ruler.url=http://127.0.0.1:{pa}");
    let querier = Querier::start(dir.path(), &[node.grpc_addr()], &[ruler_url.as_str()]).await;
    let q = |path: &str| format!("{}{path}", querier.base());
    let (st, body) = rules_api(Method::POST, &q("/prometheus/config/v1/rules/web"), "team-b", Some(second)).await;
    assert_eq!(st, 202, "{body}");
    let (st, body) = rules_api(Method::GET, &q("/prometheus/config/v1/rules/web/other"), "team-b", None).await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("record: other"), "{body}");
    assert_eq!(rules_api(Method::GET, &q("/api/v1/rules/web/other"), "team-a", None).await.0, 404);
    let (st, body) = rules_api(Method::POST, &q("/api/v1/rules/web"), "team-b", Some("rules: 3")).await;
    assert_eq!(st, 400, "{body}");
    let groups: Value = reqwest::Client::new()
        .get(q("/api/v1/rules"))
        .header("X-Scope-OrgID", "team-b")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(groups["data"]["groups"][0]["file"], "web", "{groups}");
    assert_eq!(rules_api(Method::DELETE, &q("/api/v1/rules/web"), "team-b", None).await.0, 202);
}
