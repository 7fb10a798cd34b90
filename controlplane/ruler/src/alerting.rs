//! An alerting rule's state: Prometheus' lifecycle (inactive → pending →
//! firing → resolved), `for`, `keep_firing_for`, templated labels and
//! annotations, the `ALERTS`/`ALERTS_FOR_STATE` series, when to notify,
//! and the `for` state restored after a restart.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::rule_file::AlertingSpec;
use crate::template::{self, AlertData, QueryFn};

/// Resolved alerts are kept (and re-sent) this long (Prometheus: 15m).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

pub type LabelSet = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of a rule (times in ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub state: AlertState,
    pub value: f64,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    pub valid_until: i64,
    pub keep_firing_since: Option<i64>,
}

impl Alert {
    /// Prometheus' `needsSending`.
    fn needs_sending(&self, ts: i64, resend_delay: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        match (self.resolved_at, self.last_sent_at) {
            (Some(r), Some(s)) if r > s => true,
            (Some(_), None) => true,
            (_, None) => true,
            (_, Some(s)) => s + resend_delay < ts,
        }
    }
}

/// An alert as sent to Alertmanager.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// Evaluation context the alert's templates see.
pub struct Context<'a> {
    pub external_labels: &'a LabelSet,
    pub external_url: &'a str,
    pub query: QueryFn<'a>,
}

/// An alerting rule with its active alerts.
#[derive(Debug, Clone)]
pub struct AlertingRule {
    pub spec: AlertingSpec,
    pub active: HashMap<Vec<(String, String)>, Alert>,
    /// `ALERTS` series are written once the `for` state was restored (or
    /// there was nothing to restore), as Prometheus does.
    pub restored: bool,
}

/// The series an evaluation writes: labels (with `__name__`) and value.
pub type Output = Vec<(LabelSet, f64)>;

impl AlertingRule {
    pub fn new(spec: AlertingSpec) -> Self {
        AlertingRule { spec, active: HashMap::new(), restored: false }
    }

    /// Applies one evaluation's result (`samples`: labels with `__name__`
    /// where the expression kept it, value) at `ts`; returns the
    /// `ALERTS`/`ALERTS_FOR_STATE` samples to write (none until restored).
    pub fn eval(
        &mut self,
        ts: i64,
        samples: Vec<(LabelSet, f64)>,
        limit: u64,
        ctx: &Context,
    ) -> Result<Output, String> {
        let mut results: HashMap<Vec<(String, String)>, Alert> = HashMap::new();
        let name = format!("__alert_{}", self.spec.name);
        for (metric, value) in samples {
            let data = AlertData {
                labels: metric.clone(),
                external_labels: ctx.external_labels.clone(),
                external_url: ctx.external_url.to_string(),
                value,
            };
            let expand = |text: &str| match template::expand(&name, text, &data, ctx.query) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(alert = %self.spec.name, error = %e, "expanding alert template failed");
                    format!("<error expanding template: {e}>")
                }
            };
            let mut labels = metric.clone();
            labels.remove("__name__");
            for (k, v) in &self.spec.labels {
                labels.insert(k.clone(), expand(v));
            }
            labels.insert("alertname".into(), self.spec.name.clone());
            let annotations: LabelSet = self.spec.annotations.iter().map(|(k, v)| (k.clone(), expand(v))).collect();
            let key: Vec<(String, String)> = labels.clone().into_iter().collect();
            if results.contains_key(&key) {
                return Err("vector contains metrics with the same labelset after applying alert labels".into());
            }
            results.insert(
                key,
                Alert {
                    labels,
                    annotations,
                    state: AlertState::Pending,
                    value,
                    active_at: ts,
                    fired_at: None,
                    resolved_at: None,
                    last_sent_at: None,
                    valid_until: 0,
                    keep_firing_since: None,
                },
            );
        }
        let present: std::collections::HashSet<Vec<(String, String)>> = results.keys().cloned().collect();
        for (key, a) in results {
            match self.active.get_mut(&key) {
                Some(old) if old.state != AlertState::Inactive => {
                    old.value = a.value;
                    old.annotations = a.annotations;
                }
                _ => {
                    self.active.insert(key, a);
                }
            }
        }
        let hold = self.spec.hold.as_millis() as i64;
        let keep_for = self.spec.keep_firing_for.as_millis() as i64;
        let mut out = Vec::new();
        let mut active_pending = 0u64;
        let mut gone = Vec::new();
        for (key, a) in self.active.iter_mut() {
            if !present.contains(key) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep_for > 0 {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    if ts - since < keep_for {
                        keep_firing = true;
                    }
                }
                if a.state == AlertState::Pending || a.resolved_at.is_some_and(|r| ts - r > RESOLVED_RETENTION_MS) {
                    gone.push(key.clone());
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at = Some(ts);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since = None;
            }
            active_pending += 1;
            if a.state == AlertState::Pending && ts - a.active_at >= hold {
                a.state = AlertState::Firing;
                a.fired_at = Some(ts);
            }
            if self.restored {
                let mut l = a.labels.clone();
                l.insert("__name__".into(), "ALERTS".into());
                l.insert("alertstate".into(), a.state.as_str().into());
                out.push((l, 1.0));
                let mut l = a.labels.clone();
                l.insert("__name__".into(), "ALERTS_FOR_STATE".into());
                out.push((l, (a.active_at / 1000) as f64));
            }
        }
        for k in gone {
            self.active.remove(&k);
        }
        if limit > 0 && active_pending > limit {
            self.active.clear();
            return Err(format!("exceeded limit of {limit} with {active_pending} alerts"));
        }
        Ok(out)
    }

    /// Prometheus' `sendAlerts`: the alerts due (firing, resolved not yet
    /// sent, or last sent more than `resend_delay` ago), marked as sent.
    pub fn due(
        &mut self,
        ts: i64,
        resend_delay: Duration,
        interval: Duration,
        generator_url: &str,
    ) -> Vec<Notification> {
        let resend = resend_delay.as_millis() as i64;
        let delta = resend.max(interval.as_millis() as i64);
        let mut out = Vec::new();
        for a in self.active.values_mut() {
            if !a.needs_sending(ts, resend) {
                continue;
            }
            a.last_sent_at = Some(ts);
            a.valid_until = ts + 4 * delta;
            let ends = a.resolved_at.unwrap_or(a.valid_until);
            out.push(Notification {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: crate::gofmt::rfc3339_nano(a.fired_at.unwrap_or(a.active_at)),
                ends_at: crate::gofmt::rfc3339_nano(ends),
                generator_url: generator_url.to_string(),
            });
        }
        out
    }

    /// Prometheus' `RestoreForState` for this rule at `ts`: `last` gives,
    /// for an alert's labels, the newest `ALERTS_FOR_STATE` sample within
    /// the outage tolerance (its time in ms and value, the `activeAt` in
    /// seconds).
    ///
    /// Unlike Prometheus, alerts without `for` get their `activeAt` back
    /// too (it was active throughout): replicas writing into one store
    /// must write the same `ALERTS_FOR_STATE` value at a timestamp, so a
    /// restarted replica takes the other's instead of starting anew.
    pub fn restore(&mut self, ts: i64, grace: Duration, last: impl Fn(&LabelSet) -> Option<(i64, f64)>) -> usize {
        let hold = self.spec.hold.as_millis() as i64;
        let grace = grace.as_millis() as i64;
        let mut restored = 0;
        {
            for a in self.active.values_mut() {
                let Some((down_at, v)) = last(&a.labels) else { continue };
                let down_at = down_at.div_euclid(1000) * 1000;
                let mut active_at = (v as i64) * 1000;
                let spent = down_at - active_at;
                let remaining = hold - spent;
                if remaining <= 0 {
                    // It was firing: keep its activeAt.
                } else if remaining < grace {
                    active_at = ts - hold + grace;
                } else {
                    active_at += ts - down_at;
                }
                a.active_at = active_at;
                restored += 1;
            }
        }
        self.restored = true;
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(hold: u64, keep: u64) -> AlertingRule {
        AlertingRule::new(AlertingSpec {
            name: "High".into(),
            expr: "x > 1".into(),
            hold: Duration::from_secs(hold),
            keep_firing_for: Duration::from_secs(keep),
            labels: [("severity".to_string(), "page".to_string()), ("inst".into(), "{{ $labels.i }}".into())]
                .into_iter()
                .collect(),
            annotations: [("summary".to_string(), "{{ $labels.i }} at {{ $value }}".to_string())].into_iter().collect(),
        })
    }

    fn sample(v: f64) -> Vec<(LabelSet, f64)> {
        vec![([("__name__".to_string(), "x".to_string()), ("i".into(), "a".into())].into_iter().collect(), v)]
    }

    fn no_query(_: &str) -> Result<Vec<template::QuerySample>, String> {
        Err("none".into())
    }

    fn ctx() -> Context<'static> {
        static EXT: std::sync::LazyLock<LabelSet> = std::sync::LazyLock::new(LabelSet::new);
        Context { external_labels: &EXT, external_url: "http://r", query: &no_query }
    }

    fn state(r: &AlertingRule) -> Option<AlertState> {
        r.active.values().next().map(|a| a.state)
    }

    #[test]
    fn pending_then_firing_then_resolved_with_templates() {
        let mut r = rule(60, 0);
        r.restored = true;
        let out = r.eval(0, sample(5.0), 0, &ctx()).unwrap();
        assert_eq!(state(&r), Some(AlertState::Pending));
        let a = r.active.values().next().unwrap();
        assert_eq!(a.labels.get("inst").map(String::as_str), Some("a"));
        assert_eq!(a.annotations.get("summary").map(String::as_str), Some("a at 5"));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0.get("alertstate").map(String::as_str), Some("pending"));
        assert!(r.due(0, Duration::from_secs(60), Duration::from_secs(15), "").is_empty(), "pending is not sent");
        r.eval(30_000, sample(6.0), 0, &ctx()).unwrap();
        assert_eq!(state(&r), Some(AlertState::Pending));
        let out = r.eval(60_000, sample(7.0), 0, &ctx()).unwrap();
        assert_eq!(state(&r), Some(AlertState::Firing));
        assert_eq!(out[0].0.get("alertstate").map(String::as_str), Some("firing"));
        assert_eq!(out[1].1, 0.0, "ALERTS_FOR_STATE holds activeAt in seconds");
        let sent = r.due(60_000, Duration::from_secs(60), Duration::from_secs(15), "");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].starts_at, "1970-01-01T00:01:00Z");
        assert_eq!(sent[0].ends_at, "1970-01-01T00:05:00Z", "valid for 4 resend delays");
        assert!(r.due(75_000, Duration::from_secs(60), Duration::from_secs(15), "").is_empty(), "not re-sent yet");
        let out = r.eval(90_000, vec![], 0, &ctx()).unwrap();
        assert!(out.is_empty());
        assert_eq!(state(&r), Some(AlertState::Inactive));
        let sent = r.due(90_000, Duration::from_secs(60), Duration::from_secs(15), "");
        assert_eq!(sent[0].ends_at, "1970-01-01T00:01:30Z", "resolved alerts carry endsAt");
        // Kept for the resolved retention, then dropped.
        r.eval(90_000 + RESOLVED_RETENTION_MS + 1, vec![], 0, &ctx()).unwrap();
        assert!(r.active.is_empty());
    }

    #[test]
    fn a_pending_alert_that_goes_away_is_dropped_and_keep_firing_for_holds() {
        let mut r = rule(60, 0);
        r.eval(0, sample(5.0), 0, &ctx()).unwrap();
        r.eval(15_000, vec![], 0, &ctx()).unwrap();
        assert!(r.active.is_empty());
        let mut r = rule(0, 30);
        r.restored = true;
        r.eval(0, sample(5.0), 0, &ctx()).unwrap();
        assert_eq!(state(&r), Some(AlertState::Firing), "no for: fires at once");
        let out = r.eval(15_000, vec![], 0, &ctx()).unwrap();
        assert_eq!(state(&r), Some(AlertState::Firing), "kept firing");
        assert_eq!(out.len(), 2);
        r.eval(30_000, vec![], 0, &ctx()).unwrap();
        assert_eq!(state(&r), Some(AlertState::Firing));
        r.eval(45_000, vec![], 0, &ctx()).unwrap();
        assert_eq!(state(&r), Some(AlertState::Inactive), "30s after it stopped");
    }

    #[test]
    fn limits_and_duplicates_are_errors() {
        let mut r = rule(0, 0);
        let two = vec![
            ([("i".to_string(), "a".to_string())].into_iter().collect(), 1.0),
            ([("i".to_string(), "b".to_string())].into_iter().collect(), 1.0),
        ];
        assert_eq!(r.eval(0, two.clone(), 1, &ctx()).unwrap_err(), "exceeded limit of 1 with 2 alerts");
        let mut dup = two;
        dup[1].0.insert("i".into(), "a".into());
        dup[0].0.insert("__name__".into(), "m".into());
        assert!(r.eval(0, dup, 0, &ctx()).unwrap_err().contains("same labelset"));
    }

    #[test]
    fn for_state_is_restored_like_prometheus() {
        // Pending since t=0 with for=10m; down at t=8m; restored at t=20m.
        let mut r = rule(600, 0);
        r.eval(1_200_000, sample(5.0), 0, &ctx()).unwrap();
        let n = r.restore(1_200_000, Duration::from_secs(60), |_| Some((480_000, 0.0)));
        assert_eq!(n, 1);
        // 8 of 10 minutes were spent: 2 remain after the restart.
        assert_eq!(r.active.values().next().unwrap().active_at, 1_200_000 - 480_000);
        r.eval(1_200_000 + 60_000, sample(5.0), 0, &ctx()).unwrap();
        assert_eq!(state(&r), Some(AlertState::Pending));
        r.eval(1_200_000 + 120_000, sample(5.0), 0, &ctx()).unwrap();
        assert_eq!(state(&r), Some(AlertState::Firing));
        // Within the grace period: fires grace after the restore.
        let mut r = rule(600, 0);
        r.eval(1_200_000, sample(5.0), 0, &ctx()).unwrap();
        r.restore(1_200_000, Duration::from_secs(300), |_| Some((480_000, 0.0)));
        assert_eq!(r.active.values().next().unwrap().active_at, 1_200_000 - 600_000 + 300_000);
    }

    #[test]
    fn alerts_without_for_take_the_stored_active_at() {
        // A replica restarted at t=20m finds the alert active since 5m: it
        // writes the same ALERTS_FOR_STATE value as the replica that ran on.
        let mut r = rule(0, 0);
        r.eval(1_200_000, sample(5.0), 0, &ctx()).unwrap();
        assert_eq!(r.restore(1_200_000, Duration::from_secs(600), |_| Some((1_190_000, 300.0))), 1);
        let out = r.eval(1_202_000, sample(5.0), 0, &ctx()).unwrap();
        assert_eq!(state(&r), Some(AlertState::Firing));
        assert_eq!(out[1].1, 300.0, "ALERTS_FOR_STATE: {out:?}");
    }
}
