//! Per-tenant usage on `/metrics`, so an operator can bill and alert per
//! tenant: samples received at this entry point, written, rejected by
//! reason, and each tenant's series and samples in the head.
//!
//! The `tenant` label is bounded: past [`MAX_TENANT_LABELS`] distinct
//! tenants, further ones are counted under `tenant="__other__"` (an
//! unauthenticated ingester takes any `X-Scope-OrgID`, and a label per
//! value would grow without bound).

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Distinct tenant label values kept.
pub const MAX_TENANT_LABELS: usize = 10_000;
/// The label value of tenants past the bound.
pub const OTHER_TENANTS: &str = "__other__";

/// Why samples were not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Invalid series (labels, limits) or a request over the size limits.
    Invalid,
    /// Native histograms (not stored yet).
    NativeHistogram,
    /// Over the tenant's ingestion rate (429).
    RateLimited,
    /// Too many cut blocks wait for upload (503).
    Throttled,
    /// Not committed through Raft (503: no leader, Raft error).
    NotCommitted,
    /// A new series past the tenant's `max_series` or
    /// `max_series_per_metric` (--limits.overrides-file).
    SeriesLimit,
    /// Refused by the head when applied (out of bounds, out of order,
    /// duplicate, series limit).
    Head,
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Rejection::Invalid => "invalid",
            Rejection::NativeHistogram => "native_histogram",
            Rejection::RateLimited => "rate_limited",
            Rejection::Throttled => "throttled",
            Rejection::NotCommitted => "not_committed",
            Rejection::SeriesLimit => "series_limit",
            Rejection::Head => "head",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantReason {
    tenant: String,
    reason: &'static str,
}

#[derive(Default)]
pub struct TenantUsage {
    received: Family<TenantLabel, Counter>,
    written: Family<TenantLabel, Counter>,
    rejected: Family<TenantReason, Counter>,
    requests_rate_limited: Family<TenantLabel, Counter>,
    head_series: Family<TenantLabel, Gauge>,
    head_samples: Family<TenantLabel, Gauge>,
    seen: Mutex<HashSet<String>>,
}

impl TenantUsage {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "tenant_samples_received",
            "Samples received by tenant at this node's write endpoints (before any check)",
            self.received.clone(),
        );
        r.register(
            "tenant_samples_written",
            "Samples written by tenant through this node's write endpoints",
            self.written.clone(),
        );
        r.register(
            "tenant_samples_rejected",
            "Samples not written by tenant and reason (invalid, native_histogram, rate_limited, throttled, \
             not_committed, series_limit, head)",
            self.rejected.clone(),
        );
        r.register(
            "tenant_requests_rate_limited",
            "Write requests refused by tenant because its ingestion bucket was empty, before they were decoded \
             (their samples are in no other counter)",
            self.requests_rate_limited.clone(),
        );
        r.register("tenant_head_series", "Series in the head by tenant", self.head_series.clone());
        r.register("tenant_head_samples", "Samples in the head by tenant", self.head_samples.clone());
    }

    /// The label value for `tenant` (bounded).
    fn label(&self, tenant: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(tenant) {
            return tenant.to_string();
        }
        if seen.len() < MAX_TENANT_LABELS {
            seen.insert(tenant.to_string());
            return tenant.to_string();
        }
        OTHER_TENANTS.to_string()
    }

    pub fn received(&self, tenant: &str, n: u64) {
        if n > 0 {
            self.received.get_or_create(&TenantLabel { tenant: self.label(tenant) }).inc_by(n);
        }
    }

    pub fn written(&self, tenant: &str, n: u64) {
        if n > 0 {
            self.written.get_or_create(&TenantLabel { tenant: self.label(tenant) }).inc_by(n);
        }
    }

    pub fn rejected(&self, tenant: &str, why: Rejection, n: u64) {
        if n > 0 {
            self.rejected.get_or_create(&TenantReason { tenant: self.label(tenant), reason: why.label() }).inc_by(n);
        }
    }

    /// A request refused before decoding (the tenant's bucket was empty).
    pub fn request_rate_limited(&self, tenant: &str) {
        self.requests_rate_limited.get_or_create(&TenantLabel { tenant: self.label(tenant) }).inc();
    }

    /// Sets the head gauges to `stats` (tenant, series, samples); tenants
    /// no longer in the head disappear.
    pub fn set_head(&self, stats: &[(String, usize, usize)]) {
        self.head_series.clear();
        self.head_samples.clear();
        for (tenant, series, samples) in stats {
            let l = TenantLabel { tenant: self.label(tenant) };
            self.head_series.get_or_create(&l).inc_by(*series as i64);
            self.head_samples.get_or_create(&l).inc_by(*samples as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(u: &TenantUsage) -> String {
        let mut r = Registry::default();
        u.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn usage_is_counted_by_tenant_and_reason_with_a_bounded_label() {
        let u = TenantUsage::default();
        u.received("team-a", 10);
        u.written("team-a", 7);
        u.rejected("team-a", Rejection::Head, 2);
        u.rejected("team-a", Rejection::RateLimited, 1);
        u.set_head(&[("team-a".into(), 3, 30)]);
        let text = render(&u);
        for line in [
            "tenant_samples_received_total{tenant=\"team-a\"} 10",
            "tenant_samples_written_total{tenant=\"team-a\"} 7",
            "tenant_samples_rejected_total{tenant=\"team-a\",reason=\"head\"} 2",
            "tenant_samples_rejected_total{tenant=\"team-a\",reason=\"rate_limited\"} 1",
            "tenant_head_series{tenant=\"team-a\"} 3",
            "tenant_head_samples{tenant=\"team-a\"} 30",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Gauges follow the head: a tenant gone from it disappears.
        u.set_head(&[("team-b".into(), 1, 1)]);
        let text = render(&u);
        assert!(
            !text.contains("tenant_head_series{tenant=\"team-a\"}")
                && text.contains("tenant_head_series{tenant=\"team-b\"} 1")
        );
        // Past the bound, new tenants share one label value.
        for i in 0..MAX_TENANT_LABELS - 2 {
            u.received(&format!("t{i}"), 1);
        }
        u.received("one-too-many", 5);
        u.received("and-another", 5);
        assert!(render(&u).contains("tenant_samples_received_total{tenant=\"__other__\"} 10"));
    }
}
