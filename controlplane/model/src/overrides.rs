//! Per-tenant limits that change at run time (Mimir's runtime overrides):
//! a YAML file with `defaults:` and per-tenant `tenants:` entries, read by
//! `--limits.overrides-file` and reloaded when it changes, and the
//! ingestion rate limiter they drive.
//!
//! ```yaml
//! defaults:
//!   ingestion_rate: 100000      # samples/s per tenant at this entry point
//!   ingestion_burst: 200000     # samples at once (default: the rate)
//! tenants:
//!   team-a: { ingestion_rate: 500000, ingestion_burst: 1000000 }
//!   batch-jobs: { ingestion_rate: 1000 }
//! ```
//!
//! A key a tenant does not set comes from `defaults`; a key neither sets
//! is unlimited.
//!
//! Ingesters read `ingestion_rate`, `ingestion_burst`, `max_series` and
//! `max_series_per_metric` (series in the head; new series past them are
//! refused at the node that received the write) and the label limits
//! `max_labels_per_series`, `max_label_name_length`,
//! `max_label_value_length` (in place of the `--limits.*` flags); queriers read
//! `max_samples_per_query` (within `--query.max-samples`),
//! `max_query_length` (the longest range a query may read, e.g. `31d`)
//! and `max_concurrent_queries` (evaluations of the tenant at once, within
//! `--query.max-concurrency`); rulers read `ruler_max_rule_groups_per_tenant`,
//! `ruler_max_rules_per_rule_group` and `ruler_min_evaluation_interval`
//! (checked when a group is uploaded through the ruler API). One file can
//! serve every component.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// One tenant's (or the defaults') settings; `None`: not set here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverrides {
    /// Samples (and exemplars) per second accepted from the tenant.
    pub ingestion_rate: Option<f64>,
    /// Samples accepted at once above the rate (the bucket's size).
    pub ingestion_burst: Option<f64>,
    /// Samples one query may load (queriers).
    pub max_samples_per_query: Option<u64>,
    /// The longest time range one query may read (queriers).
    #[serde(default, deserialize_with = "max_query_length_text")]
    pub max_query_length: Option<std::time::Duration>,
    /// PromQL evaluations of the tenant running at once (queriers).
    pub max_concurrent_queries: Option<u32>,
    /// Series the tenant may have in an ingester's head (ingesters).
    pub max_series: Option<u64>,
    /// Series per metric name the tenant may have in the head (ingesters).
    pub max_series_per_metric: Option<u64>,
    /// Labels per series, name included (ingesters; replaces
    /// `--limits.max-labels-per-series` for the tenant).
    pub max_labels_per_series: Option<usize>,
    /// Bytes in a label name (ingesters; replaces `--limits.max-label-name-length`).
    pub max_label_name_length: Option<usize>,
    /// Bytes in a label value (ingesters; replaces `--limits.max-label-value-length`).
    pub max_label_value_length: Option<usize>,
    /// Rule groups the tenant may upload through the ruler API (rulers).
    pub ruler_max_rule_groups_per_tenant: Option<usize>,
    /// Rules in one uploaded group (rulers).
    pub ruler_max_rules_per_rule_group: Option<usize>,
    /// The shortest `interval` an uploaded group may have (rulers).
    #[serde(default, deserialize_with = "ruler_min_interval_text")]
    pub ruler_min_evaluation_interval: Option<std::time::Duration>,
}

/// A tenant's limits on groups uploaded to the ruler; `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RulerLimits {
    pub max_rule_groups: Option<usize>,
    pub max_rules_per_group: Option<usize>,
    pub min_interval: Option<std::time::Duration>,
}

/// A tenant's series limits at the write path; `None`: not limited by the
/// overrides (the global `--limits.max-series` still applies).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeriesLimits {
    pub max_series: Option<u64>,
    pub max_series_per_metric: Option<u64>,
}

impl SeriesLimits {
    pub fn any(&self) -> bool {
        self.max_series.is_some() || self.max_series_per_metric.is_some()
    }
}

fn duration_text(key: &str, s: &str) -> Result<Option<std::time::Duration>, String> {
    humantime::parse_duration(s).map(Some).map_err(|e| format!("{key}: {s:?} is not a duration: {e}"))
}

fn max_query_length_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<std::time::Duration>, D::Error> {
    duration_text("max_query_length", &String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn ruler_min_interval_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<std::time::Duration>, D::Error> {
    duration_text("ruler_min_evaluation_interval", &String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// A tenant's query limits; `None`: not limited by the overrides.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueryLimits {
    pub max_samples: Option<u64>,
    pub max_length: Option<std::time::Duration>,
    pub max_concurrent: Option<u32>,
}

/// The overrides file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default)]
    pub defaults: TenantOverrides,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantOverrides>,
}

/// A tenant's ingestion limit: `rate` samples/s, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub rate: f64,
    pub burst: f64,
}

impl Overrides {
    /// Parses and checks an overrides file; the message names the entry.
    pub fn parse(text: &str) -> Result<Overrides, String> {
        if text.trim().is_empty() {
            return Ok(Overrides::default());
        }
        let o: Overrides = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let check = |at: &str, t: &TenantOverrides| -> Result<(), String> {
            for (key, v) in [("ingestion_rate", t.ingestion_rate), ("ingestion_burst", t.ingestion_burst)] {
                if let Some(v) = v
                    && !(v.is_finite() && v > 0.0)
                {
                    return Err(format!("{at}: {key} must be a positive number of samples, not {v}"));
                }
            }
            if t.max_samples_per_query == Some(0) {
                return Err(format!("{at}: max_samples_per_query must be at least 1"));
            }
            for (key, v) in [("max_series", t.max_series), ("max_series_per_metric", t.max_series_per_metric)] {
                if v == Some(0) {
                    return Err(format!("{at}: {key} must be at least 1"));
                }
            }
            for (key, v) in [
                ("max_labels_per_series", t.max_labels_per_series),
                ("max_label_name_length", t.max_label_name_length),
                ("max_label_value_length", t.max_label_value_length),
            ] {
                if v == Some(0) {
                    return Err(format!("{at}: {key} must be at least 1"));
                }
            }
            if t.max_concurrent_queries == Some(0) {
                return Err(format!("{at}: max_concurrent_queries must be at least 1"));
            }
            if t.max_query_length.is_some_and(|d| d.is_zero()) {
                return Err(format!("{at}: max_query_length must be longer than 0"));
            }
            Ok(())
        };
        check("defaults", &o.defaults)?;
        for (tenant, t) in &o.tenants {
            crate::tenant::validate_tenant(tenant).map_err(|m| format!("tenants: {tenant:?}: {m}"))?;
            check(&format!("tenants: {tenant}"), t)?;
        }
        Ok(o)
    }

    /// `tenant`'s ingestion limit, `None` when unlimited.
    pub fn ingestion(&self, tenant: &str) -> Option<RateLimit> {
        let own = self.tenants.get(tenant).copied().unwrap_or_default();
        let rate = own.ingestion_rate.or(self.defaults.ingestion_rate)?;
        let burst = own.ingestion_burst.or(self.defaults.ingestion_burst).unwrap_or(rate).max(1.0);
        Some(RateLimit { rate, burst })
    }
}

impl Overrides {
    /// `tenant`'s series limits.
    pub fn series(&self, tenant: &str) -> SeriesLimits {
        let own = self.tenants.get(tenant).copied().unwrap_or_default();
        SeriesLimits {
            max_series: own.max_series.or(self.defaults.max_series),
            max_series_per_metric: own.max_series_per_metric.or(self.defaults.max_series_per_metric),
        }
    }

    /// The series validation limits for `tenant`: `base` (the
    /// `--limits.*` flags) with the label limits the tenant (or the
    /// defaults) set replacing the flags' values, looser or stricter.
    pub fn write_limits(&self, tenant: &str, base: &crate::Limits) -> crate::Limits {
        let own = self.tenants.get(tenant).copied().unwrap_or_default();
        let d = &self.defaults;
        crate::Limits {
            max_labels_per_series: own
                .max_labels_per_series
                .or(d.max_labels_per_series)
                .unwrap_or(base.max_labels_per_series),
            max_label_name_length: own
                .max_label_name_length
                .or(d.max_label_name_length)
                .unwrap_or(base.max_label_name_length),
            max_label_value_length: own
                .max_label_value_length
                .or(d.max_label_value_length)
                .unwrap_or(base.max_label_value_length),
            ..base.clone()
        }
    }

    /// `tenant`'s ruler limits.
    pub fn ruler(&self, tenant: &str) -> RulerLimits {
        let own = self.tenants.get(tenant).copied().unwrap_or_default();
        let d = &self.defaults;
        RulerLimits {
            max_rule_groups: own.ruler_max_rule_groups_per_tenant.or(d.ruler_max_rule_groups_per_tenant),
            max_rules_per_group: own.ruler_max_rules_per_rule_group.or(d.ruler_max_rules_per_rule_group),
            min_interval: own.ruler_min_evaluation_interval.or(d.ruler_min_evaluation_interval),
        }
    }

    /// `tenant`'s query limits.
    pub fn query(&self, tenant: &str) -> QueryLimits {
        let own = self.tenants.get(tenant).copied().unwrap_or_default();
        QueryLimits {
            max_samples: own.max_samples_per_query.or(self.defaults.max_samples_per_query),
            max_length: own.max_query_length.or(self.defaults.max_query_length),
            max_concurrent: own.max_concurrent_queries.or(self.defaults.max_concurrent_queries),
        }
    }
}

/// Token buckets per tenant: a request of `n` samples passes if the
/// tenant's bucket holds `n` tokens (refilled at its rate up to its burst).
#[derive(Debug, Default)]
pub struct IngestionLimiter {
    /// Tenant → (tokens, time of the last refill in ms).
    buckets: HashMap<String, (f64, i64)>,
}

/// Buckets kept before full ones are forgotten (a full bucket is the
/// same as no bucket).
const MAX_BUCKETS: usize = 10_000;

impl IngestionLimiter {
    /// Whether `tenant`'s bucket is empty at `now_ms` (under one token):
    /// then any request with a sample is refused, and the caller can say so
    /// before decoding it. The whole seconds until a token is back.
    pub fn empty(&mut self, tenant: &str, limit: RateLimit, now_ms: i64) -> Option<u64> {
        let (tokens, last) = self.buckets.get_mut(tenant)?;
        let elapsed = (now_ms - *last).max(0) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * limit.rate).min(limit.burst);
        *last = now_ms;
        (*tokens < 1.0).then(|| ((1.0 - *tokens) / limit.rate).ceil().max(1.0) as u64)
    }

    /// Takes `n` tokens from `tenant`'s bucket at `now_ms`, or says how many
    /// whole seconds to wait until they could be there (at least 1). A
    /// request larger than the burst can never pass: `Err(None)`.
    pub fn admit(&mut self, tenant: &str, limit: RateLimit, n: u64, now_ms: i64) -> Result<(), Option<u64>> {
        let n = n as f64;
        if n > limit.burst {
            return Err(None);
        }
        if !self.buckets.contains_key(tenant) && self.buckets.len() >= MAX_BUCKETS {
            self.buckets.retain(|_, (tokens, _)| *tokens < limit.burst);
        }
        let (tokens, last) = self.buckets.entry(tenant.to_string()).or_insert((limit.burst, now_ms));
        let elapsed = (now_ms - *last).max(0) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * limit.rate).min(limit.burst);
        *last = now_ms;
        if *tokens >= n {
            *tokens -= n;
            Ok(())
        } else {
            Err(Some(((n - *tokens) / limit.rate).ceil().max(1.0) as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_inherit_the_defaults_and_bad_files_name_the_entry() {
        let o = Overrides::parse(
            "defaults: {ingestion_rate: 100}\ntenants:\n  a: {ingestion_rate: 10, ingestion_burst: 50}\n  b: {ingestion_burst: 500}\n",
        )
        .unwrap();
        assert_eq!(o.ingestion("a"), Some(RateLimit { rate: 10.0, burst: 50.0 }));
        assert_eq!(o.ingestion("b"), Some(RateLimit { rate: 100.0, burst: 500.0 }));
        assert_eq!(o.ingestion("c"), Some(RateLimit { rate: 100.0, burst: 100.0 }));
        assert_eq!(Overrides::parse("tenants: {a: {ingestion_burst: 5}}").unwrap().ingestion("a"), None);
        assert_eq!(Overrides::parse("").unwrap().ingestion("a"), None);
        for (text, want) in [
            ("defaults: {ingestion_rate: -1}", "defaults: ingestion_rate must be a positive"),
            ("tenants: {a: {ingestion_burst: 0}}", "tenants: a: ingestion_burst"),
            ("tenants: {'a/b': {ingestion_rate: 1}}", "tenants: \"a/b\""),
            ("defaults: {ingestion_rates: 1}", "unknown field `ingestion_rates`"),
            ("limits: {}", "unknown field `limits`"),
        ] {
            let err = Overrides::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn query_limits_come_from_the_tenant_then_the_defaults() {
        let o = Overrides::parse(
            "defaults: {max_samples_per_query: 1000000, max_query_length: 31d}\ntenants:\n  a: {max_samples_per_query: 5000, max_concurrent_queries: 2}\n  b: {max_query_length: 1h}\n",
        )
        .unwrap();
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(
            o.query("a"),
            QueryLimits { max_samples: Some(5000), max_length: Some(31 * day), max_concurrent: Some(2) }
        );
        assert_eq!(o.query("b").max_length, Some(std::time::Duration::from_secs(3600)));
        assert_eq!(o.query("c").max_samples, Some(1_000_000));
        assert_eq!(Overrides::parse("").unwrap().query("a"), QueryLimits::default());
        let s = Overrides::parse("defaults: {max_series: 100}\ntenants: {a: {max_series_per_metric: 10}}").unwrap();
        assert_eq!(s.series("a"), SeriesLimits { max_series: Some(100), max_series_per_metric: Some(10) });
        assert!(!Overrides::parse("").unwrap().series("a").any());
        let r = Overrides::parse(
            "defaults: {ruler_max_rule_groups_per_tenant: 10, ruler_min_evaluation_interval: 30s}\ntenants: {a: {ruler_max_rules_per_rule_group: 5}}",
        )
        .unwrap();
        assert_eq!(
            r.ruler("a"),
            RulerLimits {
                max_rule_groups: Some(10),
                max_rules_per_group: Some(5),
                min_interval: Some(std::time::Duration::from_secs(30))
            }
        );
        assert_eq!(r.ruler("b").max_rules_per_group, None);
        for (text, want) in [
            ("defaults: {max_query_length: forever}", "max_query_length"),
            ("tenants: {a: {max_concurrent_queries: 0}}", "max_concurrent_queries must be at least 1"),
            ("tenants: {a: {max_samples_per_query: 0}}", "max_samples_per_query must be at least 1"),
            ("defaults: {max_series: 0}", "max_series must be at least 1"),
            ("defaults: {ruler_min_evaluation_interval: often}", "ruler_min_evaluation_interval"),
        ] {
            let err = Overrides::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn label_limits_replace_the_flags_per_tenant() {
        let base = crate::Limits::default();
        let o = Overrides::parse(
            "defaults: {max_label_value_length: 100}\ntenants:\n  wide: {max_labels_per_series: 60, max_label_value_length: 8192}\n  narrow: {max_label_name_length: 16}\n",
        )
        .unwrap();
        let wide = o.write_limits("wide", &base);
        assert_eq!((wide.max_labels_per_series, wide.max_label_value_length), (60, 8192));
        let narrow = o.write_limits("narrow", &base);
        assert_eq!(
            (narrow.max_labels_per_series, narrow.max_label_name_length, narrow.max_label_value_length),
            (base.max_labels_per_series, 16, 100)
        );
        assert_eq!(narrow.max_samples_per_request, base.max_samples_per_request);
        assert_eq!(Overrides::parse("").unwrap().write_limits("x", &base), base);
        let labels = |n: usize| -> Vec<crate::Label> {
            (0..n).map(|i| crate::Label { name: format!("l{i:02}"), value: "v".into() }).collect()
        };
        let mut many = labels(40);
        many.insert(0, crate::Label { name: "__name__".into(), value: "m".into() });
        assert!(crate::validate_series(&many, &wide).is_ok());
        assert!(crate::validate_series(&many, &narrow).unwrap_err().contains("max_labels_per_series"));
        let err = Overrides::parse("tenants: {a: {max_label_name_length: 0}}").unwrap_err();
        assert!(err.contains("tenants: a: max_label_name_length must be at least 1"), "{err}");
    }

    #[test]
    fn the_bucket_refills_at_the_rate_up_to_the_burst() {
        let mut l = IngestionLimiter::default();
        let lim = RateLimit { rate: 100.0, burst: 300.0 };
        assert_eq!(l.admit("a", lim, 300, 0), Ok(()));
        // Empty: 150 samples need 1.5 s of refill, said as 2 s.
        assert_eq!(l.admit("a", lim, 150, 0), Err(Some(2)));
        // Another tenant has its own bucket.
        assert_eq!(l.admit("b", lim, 300, 0), Ok(()));
        // After 1 s, 100 tokens; after 10 s, capped at the burst.
        assert_eq!(l.admit("a", lim, 100, 1000), Ok(()));
        assert_eq!(l.admit("a", lim, 1, 1000), Err(Some(1)));
        assert_eq!(l.admit("a", lim, 300, 11_000), Ok(()));
        assert_eq!(l.admit("a", lim, 301, 100_000), Err(None), "larger than the burst");
        // Empty: known before decoding; a token is back after 1/rate s.
        assert_eq!(l.empty("c", lim, 0), None, "no bucket yet: full");
        assert_eq!(l.admit("a", lim, 300, 100_000), Ok(()));
        assert_eq!(l.empty("a", lim, 100_000), Some(1));
        assert_eq!(l.empty("a", lim, 100_010), None, "10 ms at 100/s: one token");
    }
}
