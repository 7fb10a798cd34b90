//! The ruler's `/metrics`: Prometheus' rule-manager and notifier metrics
//! under `strata_ruler_`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    pub rule_group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertmanagerLabel {
    pub alertmanager: String,
}

pub struct RulerMetrics {
    pub registry: Registry,
    evaluations: Family<GroupLabel, Counter>,
    failures: Family<GroupLabel, Counter>,
    iterations: Family<GroupLabel, Counter>,
    missed: Family<GroupLabel, Counter>,
    last_duration: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    last_evaluation: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    interval: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    pub group_rules: Family<GroupLabel, Gauge>,
    rule_duration: Histogram,
    sent: Family<AlertmanagerLabel, Counter>,
    errors: Family<AlertmanagerLabel, Counter>,
    pub notifications_dropped: Counter,
    pub notification_queue: Gauge,
    pub written_samples: Counter,
    pub write_failures: Counter,
    pub config_reload_success: Gauge,
    pub config_reloads_failed: Counter,
    pub rule_storage_sync_failures: Counter,
    pub api_changes: Counter,
}

impl Default for RulerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RulerMetrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("strata_ruler");
        let m = RulerMetrics {
            evaluations: Family::default(),
            failures: Family::default(),
            iterations: Family::default(),
            missed: Family::default(),
            last_duration: Family::default(),
            last_evaluation: Family::default(),
            interval: Family::default(),
            group_rules: Family::default(),
            rule_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            sent: Family::default(),
            errors: Family::default(),
            notifications_dropped: Counter::default(),
            notification_queue: Gauge::default(),
            written_samples: Counter::default(),
            write_failures: Counter::default(),
            config_reload_success: Gauge::default(),
            config_reloads_failed: Counter::default(),
            rule_storage_sync_failures: Counter::default(),
            api_changes: Counter::default(),
            registry: Registry::default(),
        };
        r.register("rule_evaluations", "Rule evaluations", m.evaluations.clone());
        r.register(
            "rule_evaluation_failures",
            "Rule evaluations that failed (query, template or write)",
            m.failures.clone(),
        );
        r.register("rule_group_iterations", "Scheduled group evaluations, missed ones included", m.iterations.clone());
        r.register(
            "rule_group_iterations_missed",
            "Group evaluations skipped because the previous one ran late",
            m.missed.clone(),
        );
        r.register(
            "rule_group_last_duration_seconds",
            "Duration of the group's last evaluation",
            m.last_duration.clone(),
        );
        r.register(
            "rule_group_last_evaluation_timestamp_seconds",
            "Evaluation timestamp of the group's last evaluation",
            m.last_evaluation.clone(),
        );
        r.register("rule_group_interval_seconds", "The group's evaluation interval", m.interval.clone());
        r.register("rule_group_rules", "Rules in the group", m.group_rules.clone());
        r.register("rule_evaluation_duration_seconds", "Duration of one rule's evaluation", m.rule_duration.clone());
        r.register("notifications_sent", "Alerts sent, by Alertmanager", m.sent.clone());
        r.register("notifications_errors", "Alerts whose sending failed, by Alertmanager", m.errors.clone());
        r.register("notifications_dropped", "Alerts dropped from the full queue", m.notifications_dropped.clone());
        r.register("notifications_queue_length", "Alerts waiting to be sent", m.notification_queue.clone());
        r.register(
            "remote_write_samples",
            "Samples of rule results written (staleness markers included)",
            m.written_samples.clone(),
        );
        r.register(
            "remote_write_failures",
            "Rule result writes that failed after their retries",
            m.write_failures.clone(),
        );
        r.register(
            "config_last_reload_successful",
            "1 when the last load of the rule files succeeded",
            m.config_reload_success.clone(),
        );
        r.register(
            "config_reloads_failed",
            "Rule reloads that failed (the previous rules stayed)",
            m.config_reloads_failed.clone(),
        );
        r.register(
            "rule_storage_sync_failures",
            "Reads of the uploaded rule groups that failed, and uploaded groups left out because they no longer check",
            m.rule_storage_sync_failures.clone(),
        );
        r.register(
            "config_api_changes",
            "Rule groups stored or deleted through the ruler configuration API",
            m.api_changes.clone(),
        );
        RulerMetrics { registry: r, ..m }
    }

    fn g(group: &str) -> GroupLabel {
        GroupLabel { rule_group: group.to_string() }
    }

    pub fn evaluated(&self, group: &str) {
        self.evaluations.get_or_create(&Self::g(group)).inc();
    }

    pub fn failed(&self, group: &str) {
        self.failures.get_or_create(&Self::g(group)).inc();
    }

    pub fn missed(&self, group: &str, n: u64) {
        self.missed.get_or_create(&Self::g(group)).inc_by(n);
        self.iterations.get_or_create(&Self::g(group)).inc_by(n);
    }

    pub fn rule_duration(&self, seconds: f64) {
        self.rule_duration.observe(seconds);
    }

    pub fn group_done(&self, group: &str, seconds: f64, ts_ms: i64, interval: Duration) {
        let l = Self::g(group);
        self.iterations.get_or_create(&l).inc();
        self.last_duration.get_or_create(&l).set(seconds);
        self.last_evaluation.get_or_create(&l).set(ts_ms as f64 / 1000.0);
        self.interval.get_or_create(&l).set(interval.as_secs_f64());
    }

    pub fn forget_group(&self, group: &str) {
        let l = Self::g(group);
        self.last_duration.remove(&l);
        self.last_evaluation.remove(&l);
        self.interval.remove(&l);
        self.group_rules.remove(&l);
    }

    pub fn notification_sent(&self, url: &str, n: u64) {
        self.sent.get_or_create(&AlertmanagerLabel { alertmanager: url.to_string() }).inc_by(n);
    }

    pub fn notification_error(&self, url: &str, n: u64) {
        let l = AlertmanagerLabel { alertmanager: url.to_string() };
        self.errors.get_or_create(&l).inc_by(n);
        self.sent.get_or_create(&l).inc_by(n);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
