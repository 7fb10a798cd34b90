//! A rule group at run time: Prometheus' schedule (an offset from a hash
//! of the file and group name, evaluation timestamps aligned to the
//! interval, missed iterations skipped and counted), the rules evaluated in
//! order through the query service, results written back through remote
//! write, staleness markers for series that went away, alerts sent.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::alerting::{self, AlertingRule, LabelSet, Output};
use crate::rule_file::{Group, Rule};
use crate::template::QuerySample;
use crate::{RulerOptions, Services};

/// Prometheus' group hash: xxhash64 of the labels `{file=…, name=…}`.
pub fn group_hash(file: &str, name: &str) -> u64 {
    let mut b = Vec::with_capacity(file.len() + name.len() + 12);
    for (k, v) in [("file", file), ("name", name)] {
        b.extend_from_slice(k.as_bytes());
        b.push(0xff);
        b.extend_from_slice(v.as_bytes());
        b.push(0xff);
    }
    twox_hash::XxHash64::oneshot(0, &b)
}

/// Prometheus' `EvalTimestamp`: the latest evaluation time at or before
/// `now_ns` on the group's grid (nanoseconds).
pub fn eval_timestamp(file: &str, name: &str, interval: Duration, now_ns: i64) -> i64 {
    let iv = interval.as_nanos().max(1) as i64;
    let offset = (group_hash(file, name) % iv as u64) as i64;
    let adj = now_ns - offset;
    let base = adj - adj.rem_euclid(iv);
    base + offset
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

#[derive(Debug, Clone)]
pub enum RuleKind {
    Recording { name: String, labels: LabelSet },
    Alerting(AlertingRule),
}

/// One rule's state, as `/api/v1/rules` reports it.
#[derive(Debug, Clone)]
pub struct RuleState {
    pub expr: String,
    pub kind: RuleKind,
    pub health: Health,
    pub last_error: Option<String>,
    /// Wall-clock ms of the last evaluation.
    pub last_eval: Option<i64>,
    pub eval_seconds: f64,
    /// Series written at the previous evaluation (for staleness markers).
    pub previous: HashSet<Vec<(String, String)>>,
}

impl RuleState {
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Recording { name, .. } => name,
            RuleKind::Alerting(a) => &a.spec.name,
        }
    }
}

/// A group's state.
#[derive(Debug, Clone, Default)]
pub struct GroupState {
    pub rules: Vec<RuleState>,
    pub last_eval: Option<i64>,
    pub eval_seconds: f64,
}

/// A loaded group of one tenant.
pub struct GroupRuntime {
    pub tenant: String,
    pub group: Group,
    pub state: Mutex<GroupState>,
}

impl GroupRuntime {
    pub fn new(tenant: &str, group: Group) -> Arc<GroupRuntime> {
        let rules = group
            .rules
            .iter()
            .map(|r| RuleState {
                expr: r.expr().to_string(),
                kind: match r {
                    Rule::Recording { name, labels, .. } => {
                        RuleKind::Recording { name: name.clone(), labels: labels.clone() }
                    }
                    Rule::Alerting(spec) => RuleKind::Alerting(AlertingRule::new(spec.clone())),
                },
                health: Health::Unknown,
                last_error: None,
                last_eval: None,
                eval_seconds: 0.0,
                previous: HashSet::new(),
            })
            .collect();
        Arc::new(GroupRuntime {
            tenant: tenant.to_string(),
            group,
            state: Mutex::new(GroupState { rules, ..Default::default() }),
        })
    }

    /// Takes over the state of the same rules (by name and expression) of
    /// `old` (Prometheus' `CopyState` on reload): active alerts, restore
    /// flag, series for staleness, health.
    pub fn copy_state(&self, old: &GroupRuntime) {
        let (Ok(old), Ok(mut new)) = (old.state.lock(), self.state.lock()) else { return };
        for r in new.rules.iter_mut() {
            if let Some(o) = old.rules.iter().find(|o| o.name() == r.name() && o.expr == r.expr) {
                r.previous = o.previous.clone();
                r.health = o.health;
                r.last_error = o.last_error.clone();
                r.last_eval = o.last_eval;
                r.eval_seconds = o.eval_seconds;
                if let (RuleKind::Alerting(n), RuleKind::Alerting(o)) = (&mut r.kind, &o.kind) {
                    n.active = o.active.clone();
                    n.restored = o.restored;
                }
            }
        }
    }

    fn key_label(&self) -> String {
        format!("{};{}", self.group.file, self.group.name)
    }
}

fn key(l: &LabelSet) -> Vec<(String, String)> {
    l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Runs `g` until `stop` says so.
pub async fn run(g: Arc<GroupRuntime>, svc: Arc<Services>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let iv = g.group.interval.as_nanos() as i64;
    let mut ts = eval_timestamp(&g.group.file, &g.group.name, g.group.interval, now_ns()) + iv;
    let mut iteration = 0u64;
    loop {
        let wait = Duration::from_nanos((ts - now_ns()).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let missed = (now_ns() - ts) / iv;
        if missed > 0 {
            svc.metrics.missed(&g.key_label(), missed as u64);
            ts += missed * iv;
        }
        evaluate(&g, &svc, ts / 1_000_000).await;
        iteration += 1;
        // As Prometheus: `for` state is restored after the second
        // evaluation, once recording rules have fresh values.
        if iteration == 2 {
            restore(&g, &svc, ts / 1_000_000).await;
        }
        ts += iv;
    }
}

/// One evaluation of every rule of `g` at `ts` (ms).
pub async fn evaluate(g: &GroupRuntime, svc: &Services, ts: i64) {
    let started = Instant::now();
    let group_key = g.key_label();
    let offset = g.group.query_offset.as_millis() as i64;
    let at = ts - offset;
    let n = g.group.rules.len();
    for i in 0..n {
        let rule_started = Instant::now();
        let expr = g.group.rules[i].expr().to_string();
        let result = svc.query.instant(&g.tenant, &expr, at).await;
        svc.metrics.evaluated(&group_key);
        let mut notifications = Vec::new();
        let (output, stale) = {
            let Ok(mut st) = g.state.lock() else { return };
            let r = &mut st.rules[i];
            let applied = result.and_then(|samples| apply(g, svc, r, at, samples, &mut notifications));
            r.last_eval = Some(crate::now_ms());
            match applied {
                Ok(output) => {
                    r.health = Health::Ok;
                    r.last_error = None;
                    let now: HashSet<_> = output.iter().map(|(l, _)| key(l)).collect();
                    let stale: Vec<LabelSet> =
                        r.previous.difference(&now).map(|k| k.iter().cloned().collect()).collect();
                    r.previous = now;
                    (output, stale)
                }
                Err(e) => {
                    svc.metrics.failed(&group_key);
                    tracing::warn!(tenant = %g.tenant, group = %g.group.name, rule = %r.name(), error = %e, "rule evaluation failed");
                    r.health = Health::Err;
                    r.last_error = Some(e);
                    (Vec::new(), Vec::new())
                }
            }
        };
        let mut series: Vec<(LabelSet, f64)> = output;
        series.extend(stale.into_iter().map(|l| (l, f64::from_bits(strata_promql::STALE_NAN_BITS))));
        if !series.is_empty()
            && let Err(e) = svc.writer.write(&g.tenant, at, series).await
        {
            svc.metrics.failed(&group_key);
            tracing::warn!(tenant = %g.tenant, group = %g.group.name, error = %e, "writing rule results failed");
            if let Ok(mut st) = g.state.lock() {
                st.rules[i].health = Health::Err;
                st.rules[i].last_error = Some(format!("remote write: {e}"));
            }
        }
        if !notifications.is_empty() {
            svc.notifier.send(notifications);
        }
        let took = rule_started.elapsed().as_secs_f64();
        svc.metrics.rule_duration(took);
        if let Ok(mut st) = g.state.lock() {
            st.rules[i].eval_seconds = took;
        }
    }
    let took = started.elapsed().as_secs_f64();
    if let Ok(mut st) = g.state.lock() {
        st.last_eval = Some(crate::now_ms());
        st.eval_seconds = took;
    }
    svc.metrics.group_done(&group_key, took, ts, g.group.interval);
}

/// Applies one rule's query result; returns the series to write.
fn apply(
    g: &GroupRuntime,
    svc: &Services,
    r: &mut RuleState,
    at: i64,
    samples: Vec<(LabelSet, f64)>,
    notifications: &mut Vec<alerting::Notification>,
) -> Result<Output, String> {
    let limit = g.group.limit;
    match &mut r.kind {
        RuleKind::Recording { name, labels } => {
            let mut out = Vec::with_capacity(samples.len());
            let mut seen = HashSet::new();
            for (mut l, v) in samples {
                l.insert("__name__".into(), name.clone());
                for (k, v) in labels.iter() {
                    l.insert(k.clone(), v.clone());
                }
                if !seen.insert(key(&l)) {
                    return Err("vector contains metrics with the same labelset after applying rule labels".into());
                }
                out.push((l, v));
            }
            if limit > 0 && out.len() as u64 > limit {
                return Err(format!("exceeded limit of {limit} with {} series", out.len()));
            }
            Ok(out)
        }
        RuleKind::Alerting(rule) => {
            let opts: &RulerOptions = &svc.options;
            let tenant = g.tenant.clone();
            let query = |q: &str| -> Result<Vec<QuerySample>, String> {
                let handle = tokio::runtime::Handle::current();
                let rows = tokio::task::block_in_place(|| handle.block_on(svc.query.instant(&tenant, q, at)))?;
                Ok(rows.into_iter().map(|(labels, value)| QuerySample { labels, value }).collect())
            };
            let ctx = alerting::Context {
                external_labels: &opts.external_labels,
                external_url: &opts.external_url,
                query: &query,
            };
            let out = rule.eval(at, samples, limit, &ctx)?;
            let url = generator_url(&opts.external_url, &rule.spec.expr);
            notifications.extend(rule.due(at, opts.resend_delay, g.group.interval, &url));
            Ok(out)
        }
    }
}

/// Prometheus' link to the expression's table view.
fn generator_url(external_url: &str, expr: &str) -> String {
    let mut enc = String::new();
    for b in expr.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => enc.push(b as char),
            b' ' => enc.push('+'),
            _ => enc.push_str(&format!("%{b:02X}")),
        }
    }
    format!("{}/graph?g0.expr={enc}&g0.tab=1", external_url.trim_end_matches('/'))
}

/// Restores the `for` state of every alerting rule of `g` from
/// `ALERTS_FOR_STATE` within the outage tolerance.
pub async fn restore(g: &GroupRuntime, svc: &Services, ts: i64) {
    let names: Vec<(usize, String)> = match g.state.lock() {
        Ok(st) => st
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match &r.kind {
                RuleKind::Alerting(a) if !a.restored && !a.active.is_empty() => Some((i, a.spec.name.clone())),
                _ => None,
            })
            .collect(),
        Err(_) => return,
    };
    let tolerance = svc.options.for_outage_tolerance;
    type LastSamples = Vec<(LabelSet, i64, f64)>;
    let mut found: Vec<(usize, LastSamples)> = Vec::new();
    for (i, name) in names {
        let q = format!(
            "ALERTS_FOR_STATE{{alertname=\"{}\"}}[{}ms]",
            name.replace('\\', "\\\\").replace('"', "\\\""),
            tolerance.as_millis()
        );
        match svc.query.last_samples(&g.tenant, &q, ts).await {
            Ok(rows) => found.push((i, rows)),
            Err(e) => tracing::warn!(tenant = %g.tenant, rule = %name, error = %e, "restoring the for state failed"),
        }
    }
    let external = &svc.options.external_labels;
    let Ok(mut st) = g.state.lock() else { return };
    for (i, rows) in &found {
        if let RuleKind::Alerting(a) = &mut st.rules[*i].kind {
            let n = a.restore(ts, svc.options.for_grace_period, |labels| {
                rows.iter()
                    .find(|(l, _, _)| {
                        let mut l = l.clone();
                        l.remove("__name__");
                        l.retain(|k, v| labels.get(k) == Some(v) || external.get(k) != Some(v));
                        &l == labels
                    })
                    .map(|(_, t, v)| (*t, *v))
            });
            tracing::info!(tenant = %g.tenant, rule = %a.spec.name, restored = n, "for state restored");
        }
    }
    for r in st.rules.iter_mut() {
        if let RuleKind::Alerting(a) = &mut r.kind {
            a.restored = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_times_follow_prometheus_grid() {
        let iv = Duration::from_secs(15);
        let t = eval_timestamp("/rules/a.yml", "g", iv, 1_700_000_000_123_456_789);
        assert!(t <= 1_700_000_000_123_456_789 && 1_700_000_000_123_456_789 - t < 15_000_000_000);
        let offset = (group_hash("/rules/a.yml", "g") % 15_000_000_000) as i64;
        assert_eq!(t.rem_euclid(15_000_000_000), offset);
        // Another group name gets another offset; the grid is stable.
        assert_eq!(eval_timestamp("/rules/a.yml", "g", iv, t + 14_999_999_999), t);
        assert_eq!(eval_timestamp("/rules/a.yml", "g", iv, t + 15_000_000_000), t + 15_000_000_000);
    }

    #[test]
    fn group_hash_is_xxhash_of_prometheus_label_encoding() {
        // xxhash64("file\xffF\xffname\xffN\xff") computed independently.
        let mut b = b"file\xffF\xffname\xffN\xff".to_vec();
        assert_eq!(group_hash("F", "N"), twox_hash::XxHash64::oneshot(0, &b));
        b[5] = b'G';
        assert_ne!(group_hash("F", "N"), twox_hash::XxHash64::oneshot(0, &b));
    }

    #[test]
    fn generator_urls_link_the_expression() {
        assert_eq!(generator_url("http://r:9099/", "up == 0"), "http://r:9099/graph?g0.expr=up+%3D%3D+0&g0.tab=1");
    }
}
